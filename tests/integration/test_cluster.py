"""A signalite cluster: several `signalite serve` processes sharing PostgreSQL (channels) and Redis (the bus).

Every node here is a real subprocess (`SignaliteServer(subprocess=True)`) on its own port, started with
`--redis` to a *private* redis-server (tests/redis_server.py, so a test may restart it), `--database` to
a fresh PostgreSQL database (tests/pg.py), a `--cluster-name` unique to the test module and `--limits
relaxed` (AWS's timers and sizes; ten times its connect rates, so reconnect bursts are not refused).

What is checked, cluster-wide: a master on node A and viewers on nodes B and C exchange offers,
answers and candidates; the undelivered-message TTL buffer lives in Redis (a message sent on one node
reaches a recipient that connects on another, in order; after MessageTtlSeconds it is gone); the newest
connection wins across nodes (the displaced socket on the other node is closed with 1000); a channel
deleted through one node sends GO_AWAY on every node; a new MessageTtlSeconds set through one node is
used by the others; SendAlexaOfferToMaster through one node reaches a master on another; two clusters
sharing one Redis (and even one database) do not see each other; `kill -9` of a node mid-session (its
clients reconnect elsewhere and get what was sent meanwhile; its presence disappears within the
liveness window); a Redis restart (local routing carries on, nodes reconnect and re-claim presence);
drain on SIGTERM (GO_AWAY, no new connections, leaves the registry, exits); and `--workers 2`.

Cross-node deliveries travel through Redis pub/sub, so "nothing arrived" is checked by waiting a short
while (`silent`) — far longer than a delivery takes on loopback — and then a `barrier` on the socket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import botocore.exceptions
import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsutil import Harness, OutputDrain, barrier, connect, expect_close, recv, recv_json, sdp_payload

import pg
import redis_server
from signalite.testing import SignaliteServer

WS = aiohttp.ClientWebSocketResponse
SEP = "\x1f"
LIVENESS_WINDOW = 5.0  # a node is dead 5 s after its last heartbeat
HEARTBEAT = 2.0  # ... and the other nodes notice at their next heartbeat

pytestmark = pytest.mark.slow


# -- payloads and frames ------------------------------------------------------------------------------------


def ice(tag: str) -> str:
    """A base64 ICE candidate payload carrying `tag` (so every message in a test is distinguishable)."""
    candidate = {"candidate": f"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host tag {tag}", "sdpMid": "0"}
    return base64.b64encode(json.dumps(candidate).encode()).decode()


def out(action: str, payload: str, recipient: str | None = None) -> str:
    obj: dict[str, Any] = {"action": action, "messagePayload": payload}
    if recipient is not None:
        obj["recipientClientId"] = recipient
    return json.dumps(obj)


def from_viewer(cid: str, message_type: str, payload: str) -> dict[str, str]:
    """The exact frame a master receives from viewer `cid`."""
    return {"senderClientId": cid, "messageType": message_type, "messagePayload": payload}


def from_master(message_type: str, payload: str) -> dict[str, str]:
    """The exact frame a viewer receives from the master (signalite sends no senderClientId to viewers)."""
    return {"messageType": message_type, "messagePayload": payload}


async def silent(ws: WS, seconds: float = 0.5) -> None:
    """Nothing reaches `ws` for `seconds` (cross-node traffic takes ~1 ms), then a barrier proves it is alive."""
    try:
        msg = await asyncio.wait_for(ws.receive(), seconds)
    except TimeoutError:
        await barrier(ws)
        return
    raise AssertionError(f"expected nothing, got {msg.type!r} {msg.data!r}")


async def roundtrip(master: WS, viewer: WS, cid: str, tag: str) -> None:
    """One ICE candidate each way between a master and viewer `cid` (wherever they are connected)."""
    up, down = ice(f"{tag}-up"), ice(f"{tag}-down")
    await viewer.send_str(out("ICE_CANDIDATE", up))
    assert await recv_json(master) == from_viewer(cid, "ICE_CANDIDATE", up)
    await master.send_str(out("ICE_CANDIDATE", down, recipient=cid))
    assert await recv_json(viewer) == from_master("ICE_CANDIDATE", down)


async def dropped(ws: WS, timeout: float = 5.0) -> None:
    """The connection ended without a close frame (the server process died)."""
    msg = await recv(ws, timeout)
    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR), (
        f"expected the connection to drop, got {msg.type!r} {msg.data!r}"
    )


async def until(predicate: Any, what: str, timeout: float, interval: float = 0.05) -> float:
    """Poll `predicate()` (sync) until true; returns how long it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


# -- nodes ---------------------------------------------------------------------------------------------------


class Node:
    """One `signalite serve` subprocess of a cluster, with boto3 clients (Harness) and its log."""

    def __init__(self, name: str, args: list[str], data_dir: Path) -> None:
        self.name = name
        self.server = SignaliteServer(subprocess=True, data_dir=data_dir, extra_args=[*args, "--node-id", name])
        self.h: Harness
        self.log: OutputDrain

    def start(self) -> Node:
        self.server.start()
        self.h = Harness(self.server)
        self.log = OutputDrain(self.server)
        return self

    @property
    def url(self) -> str:
        return self.server.endpoint_url

    def ws(self, arn: str, client_id: str | None = None) -> str:
        return self.h.ws_url(arn, client_id)

    def health(self) -> dict[str, Any]:
        return self.h.health()

    def kill(self) -> None:
        """kill -9."""
        self.server.process.kill()
        self.server.process.wait(10)

    def stop(self) -> None:
        if self.server.process is not None and self.server.process.poll() is not None:
            self.server.process = None  # already gone (killed or drained)
        self.server.stop()


def node_args(redis_url: str, database: str, cluster: str, *extra: str) -> list[str]:
    return [
        "--redis", redis_url, "--database", database, "--cluster-name", cluster,
        "--limits", "relaxed", "--shutdown-grace", "3", *extra,
    ]  # fmt: skip


def start_nodes(names: list[str], args: list[str], data_dir: Path) -> list[Node]:
    """Start nodes in parallel (each takes about a second to come up)."""
    nodes = [Node(name, args, data_dir) for name in names]
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(Node.start, nodes))
    return nodes


def stop_nodes(*nodes: Node) -> None:
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(Node.stop, nodes))


class Cluster:
    def __init__(self, name: str, redis_url: str, database: str, data_dir: Path, nodes: list[Node]) -> None:
        self.name = name
        self.redis_url = redis_url
        self.database = database
        self.data_dir = data_dir
        self.a, self.b, self.c = nodes
        self.nodes = nodes
        self.r = redis.Redis.from_url(redis_url, decode_responses=True)

    def args(self, *extra: str) -> list[str]:
        return node_args(self.redis_url, self.database, self.name, *extra)

    def holder(self, arn: str, client_id: str | None = None) -> str | None:
        """The node holding the master (or viewer `client_id`) in Redis, or None."""
        value = self.r.hget(f"{self.name}:presence:{arn}", "m" if client_id is None else f"v:{client_id}")
        return None if value is None else value.split(SEP)[0]

    def registry(self) -> set[str]:
        return set(self.r.hkeys(f"{self.name}:nodes"))


def unique_cluster(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def redis_url() -> str:
    return redis_server.redis_url()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    url = pg.create_database("signalite_cluster")
    yield url
    pg.drop_database(url)


@pytest.fixture(scope="module")
def cluster(redis_url: str, database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    name = unique_cluster("cl")
    data_dir = tmp_path_factory.mktemp("cluster")
    args = node_args(redis_url, database, name)
    # Node C serves its WebSockets with aiohttp, A and B with picows (web/fastws.py): every cross-node
    # test with a client on C covers both paths of a cluster node.
    nodes = [Node("node-a", args, data_dir), Node("node-b", args, data_dir),
             Node("node-c", [*args, "--websocket-stack", "aiohttp"], data_dir)]  # fmt: skip
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(Node.start, nodes))
    c = Cluster(name, redis_url, database, data_dir, nodes)
    try:
        yield c
    finally:
        stop_nodes(*nodes)
        c.r.close()


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


# -- the cluster is one service ------------------------------------------------------------------------------


def test_every_node_registers_and_serves_the_same_channels(cluster: Cluster) -> None:
    names = {"node-a", "node-b", "node-c"}
    assert cluster.registry() == names
    for node in cluster.nodes:
        health = node.health()
        assert health["status"] == "ok" and health["store"] == "postgresql", health
        bus = health["bus"]
        assert bus["kind"] == "redis" and bus["node"] == node.name and bus["cluster"] == cluster.name, bus
        assert bus["connected"] is True, bus
        assert cluster.r.exists(f"{cluster.name}:alive:{node.name}") == 1
    # A channel created through one node is described by the others (one database) ...
    arn = cluster.a.h.create_channel()
    for node in (cluster.b, cluster.c):
        info = node.h.kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]
        assert info["ChannelARN"] == arn and info["ChannelStatus"] == "ACTIVE"
    # ... and each node hands out its own endpoints, so clients stay on the node they asked.
    for node in cluster.nodes:
        assert node.h.endpoints(arn, "VIEWER") == {"WSS": node.url.replace("http", "ws", 1), "HTTPS": node.url}


async def test_master_on_a_viewers_on_b_and_c_exchange_offers_answers_and_candidates(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    arn = cluster.a.h.create_channel()
    master = await connect(session, cluster.a.ws(arn))
    v1 = await connect(session, cluster.b.ws(arn, "v1"))
    v2 = await connect(session, cluster.c.ws(arn, "v2"))
    assert (cluster.holder(arn), cluster.holder(arn, "v1"), cluster.holder(arn, "v2")) == ("node-a", "node-b", "node-c")

    # Each viewer: an offer and three candidates, in order, stamped with its ClientId.
    sent: dict[str, list[tuple[str, str]]] = {}
    for cid, ws in (("v1", v1), ("v2", v2)):
        sent[cid] = [("SDP_OFFER", sdp_payload("offer", cid))] + [
            ("ICE_CANDIDATE", ice(f"{cid}-{i}")) for i in range(3)
        ]
        for action, payload in sent[cid]:
            await ws.send_str(out(action, payload))
    got = [await recv_json(master) for _ in range(8)]
    for cid in ("v1", "v2"):
        assert [g for g in got if g["senderClientId"] == cid] == [from_viewer(cid, a, p) for a, p in sent[cid]]

    # The master answers each viewer (on its own node) and trickles candidates; each gets only its own.
    replies = {
        cid: [("SDP_ANSWER", sdp_payload("answer", cid))] + [("ICE_CANDIDATE", ice(f"m-{cid}-{i}")) for i in range(3)]
        for cid in ("v1", "v2")
    }
    for i in range(4):
        for cid in ("v1", "v2"):
            action, payload = replies[cid][i]
            await master.send_str(out(action, payload, recipient=cid))
    for cid, ws in (("v1", v1), ("v2", v2)):
        assert [await recv_json(ws) for _ in range(4)] == [from_master(a, p) for a, p in replies[cid]]
    # Viewers cannot reach each other: a viewer naming another viewer still only reaches the master.
    await v1.send_str(out("ICE_CANDIDATE", ice("to-v2"), recipient="v2"))
    assert await recv_json(master) == from_viewer("v1", "ICE_CANDIDATE", ice("to-v2"))
    await silent(v2, 0.3)
    await barrier(master)
    for ws in (master, v1, v2):
        await ws.close()


async def buffered(cluster: Cluster, key: str, count: int, timeout: float = 2.0) -> None:
    """Until Redis holds `count` buffered messages under `key` (or `timeout` passes).

    A barrier's answer comes back before the node's write to Redis (bus/resp.py writes one loop
    iteration later), so what the frames before it buffered may still be on its way.
    """
    deadline = time.monotonic() + timeout
    while cluster.r.llen(key) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def test_ttl_buffer_is_shared_by_the_nodes(cluster: Cluster, session: aiohttp.ClientSession) -> None:
    """Messages for an absent recipient wait in Redis for MessageTtlSeconds, for whichever node it joins."""
    expiring = cluster.a.h.create_channel(ttl=5)
    kept = cluster.a.h.create_channel(ttl=5)

    # Sent first so that the TTL runs while the rest of the test does: a viewer on B talks to no master.
    early = await connect(session, cluster.b.ws(expiring, "early"))
    await early.send_str(out("SDP_OFFER", sdp_payload("offer", "early")))
    await early.send_str(out("ICE_CANDIDATE", ice("early-0")))
    await barrier(early)
    sent_at = time.monotonic()
    buffer_key = f"{cluster.name}:buf:{expiring}:m"
    await buffered(cluster, buffer_key, 2)
    assert cluster.r.llen(buffer_key) == 2
    assert 0 < cluster.r.pttl(buffer_key) <= 5000
    await early.close()

    # Within the TTL: viewer on B sends while no master is connected anywhere ...
    viewer = await connect(session, cluster.b.ws(kept, "vb"))
    first_offer, offer = sdp_payload("offer", "first"), sdp_payload("offer", "second")
    candidates = [ice(f"vb-{i}") for i in range(3)]
    await viewer.send_str(out("SDP_OFFER", first_offer))
    for c in candidates[:2]:
        await viewer.send_str(out("ICE_CANDIDATE", c))
    await viewer.send_str(out("SDP_OFFER", offer))  # replaces the pending offer, in the newest place
    await viewer.send_str(out("ICE_CANDIDATE", candidates[2]))
    await barrier(viewer)
    # ... then the master connects on A and gets it all, in order, before anything newer.
    master = await connect(session, cluster.a.ws(kept))
    await viewer.send_str(out("ICE_CANDIDATE", ice("vb-live")))
    expected = [
        from_viewer("vb", "ICE_CANDIDATE", candidates[0]),
        from_viewer("vb", "ICE_CANDIDATE", candidates[1]),
        from_viewer("vb", "SDP_OFFER", offer),
        from_viewer("vb", "ICE_CANDIDATE", candidates[2]),
        from_viewer("vb", "ICE_CANDIDATE", ice("vb-live")),
    ]
    assert [await recv_json(master) for _ in expected] == expected
    await silent(master, 0.2)
    assert cluster.r.exists(f"{cluster.name}:buf:{kept}:m") == 0

    # The other way: the master on A writes to a viewer that is not connected; it joins on C.
    answer = sdp_payload("answer", "late")
    await master.send_str(out("SDP_ANSWER", answer, recipient="late"))
    await master.send_str(out("ICE_CANDIDATE", ice("m-late"), recipient="late"))
    await barrier(master)
    late = await connect(session, cluster.c.ws(kept, "late"))
    assert await recv_json(late) == from_master("SDP_ANSWER", answer)
    assert await recv_json(late) == from_master("ICE_CANDIDATE", ice("m-late"))
    await silent(late, 0.2)

    # After the TTL the early messages are gone: a master joining on C gets nothing.
    await asyncio.sleep(max(0.0, 5.0 + 1.0 - (time.monotonic() - sent_at)))
    assert cluster.r.exists(buffer_key) == 0, "the Redis buffer outlived MessageTtlSeconds"
    late_master = await connect(session, cluster.c.ws(expiring))
    await silent(late_master, 0.3)
    for ws in (viewer, master, late, late_master):
        await ws.close()


async def test_a_new_ttl_set_through_one_node_applies_on_the_others(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    arn = cluster.a.h.create_channel(ttl=60)
    viewer = await connect(session, cluster.b.ws(arn, "v"))  # node B knows the channel with TTL 60
    key = f"{cluster.name}:buf:{arn}:m"
    await viewer.send_str(out("ICE_CANDIDATE", ice("before")))
    await barrier(viewer)
    await buffered(cluster, key, 1)
    assert 55_000 < cluster.r.pttl(key) <= 60_000
    cluster.r.delete(key)

    version = cluster.a.h.kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["Version"]
    cluster.a.h.kv.update_signaling_channel(
        ChannelARN=arn, CurrentVersion=version, SingleMasterConfiguration={"MessageTtlSeconds": 5}
    )
    # The update is an event on the bus; messages node B buffers from then on carry the new TTL.
    deadline = time.monotonic() + 3
    while True:
        await viewer.send_str(out("ICE_CANDIDATE", ice("after")))
        await barrier(viewer)
        await buffered(cluster, key, 1)
        ttl = cluster.r.pttl(key)
        if 0 < ttl <= 5000 or time.monotonic() > deadline:
            break
        cluster.r.delete(key)
        await asyncio.sleep(0.1)
    assert 0 < ttl <= 5000, f"node B still buffers with the old MessageTtlSeconds (PTTL {ttl} ms)"
    await viewer.close()


async def test_newest_connection_wins_across_nodes(cluster: Cluster, session: aiohttp.ClientSession) -> None:
    arn = cluster.a.h.create_channel()
    old_master = await connect(session, cluster.a.ws(arn))
    old_viewer = await connect(session, cluster.b.ws(arn, "v"))
    await roundtrip(old_master, old_viewer, "v", "before")

    # A second master on B: the one on A is closed with 1000, and B's now gets the viewer's messages.
    new_master = await connect(session, cluster.b.ws(arn))
    assert await expect_close(old_master) == 1000
    assert cluster.holder(arn) == "node-b"
    await roundtrip(new_master, old_viewer, "v", "new-master")

    # The same ClientId on C: the viewer on B is closed with 1000; the master's messages go to C.
    new_viewer = await connect(session, cluster.c.ws(arn, "v"))
    assert await expect_close(old_viewer) == 1000
    assert cluster.holder(arn, "v") == "node-c"
    await roundtrip(new_master, new_viewer, "v", "new-viewer")
    await silent(new_master, 0.2)

    # And back on A (the node that lost the master first): the displaced one on B is closed.
    third = await connect(session, cluster.a.ws(arn))
    assert await expect_close(new_master) == 1000
    await roundtrip(third, new_viewer, "v", "third")
    # Every node forgot its displaced sockets: two connections are left in the cluster.
    await until(lambda: sum(n.health()["connections"] for n in cluster.nodes) == 2, "displaced sockets to go", 3)
    for ws in (third, new_viewer):
        await ws.close()


async def test_deleting_a_channel_on_one_node_sends_go_away_on_every_node(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    arn = cluster.a.h.create_channel()
    other = cluster.a.h.create_channel()
    master = await connect(session, cluster.a.ws(arn))
    v1 = await connect(session, cluster.b.ws(arn, "v1"))
    v2 = await connect(session, cluster.c.ws(arn, "v2"))
    bystander = await connect(session, cluster.c.ws(other, "v1"))  # same ClientId, another channel
    await roundtrip(master, v2, "v2", "before")

    cluster.a.h.delete_channel(arn)
    for ws in (master, v1, v2):
        assert await recv_json(ws) == {"messageType": "GO_AWAY"}
        assert await expect_close(ws) == 1000
    await silent(bystander, 0.3)
    # No node admits the deleted channel any more.
    for node in cluster.nodes:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await connect(session, node.ws(arn, "v3"))
        assert refused.value.status == 404
    await bystander.close()


async def test_send_alexa_offer_to_master_through_another_node(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    arn = cluster.a.h.create_channel()
    master = await connect(session, cluster.a.ws(arn))
    viewer = await connect(session, cluster.c.ws(arn, "v"))
    signaling_b = cluster.b.h.signaling(arn)
    assert signaling_b.meta.endpoint_url == cluster.b.url  # B's own HTTPS endpoint
    offer, answer = sdp_payload("offer", "alexa"), sdp_payload("answer", "alexa")

    call = asyncio.create_task(
        asyncio.to_thread(
            signaling_b.send_alexa_offer_to_master, ChannelARN=arn, SenderClientId="alexa-1", MessagePayload=offer
        )
    )
    got = await recv_json(master, timeout=10)
    assert got == from_viewer("alexa-1", "SDP_OFFER", offer)
    await master.send_str(out("SDP_ANSWER", answer, recipient="alexa-1"))
    response = await asyncio.wait_for(call, 10)
    assert response["Answer"] == answer
    await silent(viewer, 0.2)  # the real viewer heard nothing of it
    assert cluster.holder(arn, "alexa-1") is None  # the virtual viewer left the shared presence

    await master.close()
    await until(lambda: cluster.holder(arn) is None, "the master to leave the presence", 3)
    started = time.monotonic()
    with pytest.raises(botocore.exceptions.ClientError) as error:
        await asyncio.to_thread(
            signaling_b.send_alexa_offer_to_master, ChannelARN=arn, SenderClientId="alexa-2", MessagePayload=offer
        )
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert time.monotonic() - started < 3, "refused only after the answer timeout"
    await viewer.close()


async def test_two_clusters_on_one_redis_do_not_see_each_other(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    """Another cluster on the same Redis *and the same database*: the same channel ARN, separate traffic."""
    other_name = unique_cluster("other")
    (x,) = start_nodes(["node-x"], node_args(cluster.redis_url, cluster.database, other_name), cluster.data_dir)
    try:
        assert x.health()["bus"]["nodes"] == ["node-x"]
        assert "node-x" not in cluster.registry()
        arn = cluster.a.h.create_channel()
        master = await connect(session, cluster.a.ws(arn))
        viewer = await connect(session, cluster.b.ws(arn, "v"))
        # In the other cluster, a viewer with the same ClientId and a master on the same channel:
        # nobody in the first cluster is displaced, and neither cluster hears the other.
        x_viewer = await connect(session, x.ws(arn, "v"))
        await x_viewer.send_str(out("ICE_CANDIDATE", ice("x-early")))  # no master in its cluster: buffered
        await barrier(x_viewer)
        x_master = await connect(session, x.ws(arn))
        assert await recv_json(x_master) == from_viewer("v", "ICE_CANDIDATE", ice("x-early"))
        await roundtrip(master, viewer, "v", "first-cluster")
        await roundtrip(x_master, x_viewer, "v", "other-cluster")
        await silent(master, 0.3)
        await silent(viewer, 0.1)
        await silent(x_master, 0.1)
        assert (cluster.holder(arn), cluster.holder(arn, "v")) == ("node-a", "node-b")
        assert cluster.r.hget(f"{other_name}:presence:{arn}", "m").split(SEP)[0] == "node-x"
        # Every key and pub/sub channel of the other cluster carries its name.
        # (node-x's own channel, the events channel, and one channel per connection it holds)
        assert set(cluster.r.pubsub_channels(f"{other_name}:*")) == {
            f"{other_name}:to:node-x", f"{other_name}:events", *(f"{other_name}:c:node-x{SEP}{i}" for i in (1, 2))
        }  # fmt: skip
        assert not [c for c in cluster.r.pubsub_channels() if other_name not in c and "node-x" in c]
        assert {k.split(":")[0] for k in cluster.r.scan_iter(f"{other_name}*")} == {other_name}
        for ws in (master, viewer, x_master, x_viewer):
            await ws.close()
    finally:
        x.stop()
    assert cluster.r.hlen(f"{other_name}:nodes") == 0  # it left its own registry


async def stream(ws: WS, stop: asyncio.Event) -> int:
    """Send numbered ICE candidates as fast as the socket takes them until `stop`; returns how many."""
    sent = 0
    while not stop.is_set():
        await ws.send_str(out("ICE_CANDIDATE", ice(str(sent))))
        sent += 1
        if sent % 2 == 0:
            await asyncio.sleep(0.001)
    return sent


async def test_a_master_joining_while_a_viewer_on_another_node_streams_gets_every_message_in_order(
    database: str, session: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The hand-over from the shared buffer to live delivery loses nothing and reorders nothing.

    A viewer on B streams candidates (no rate limits) while the master connects on A: what was sent
    before the master's claim comes from the Redis buffer, what was sent after is routed to A, and the
    master must see one gap-free, ordered sequence (only its head may be cut by the 200-message buffer cap).
    """
    a, b = start_nodes(
        ["node-s1", "node-s2"],
        node_args(redis_server.redis_url(), database, unique_cluster("st"), "--limits", "off"),
        tmp_path_factory.mktemp("st"),
    )
    try:
        for trial in range(20):
            arn = a.h.create_channel()
            viewer = await connect(session, b.ws(arn, "v"))
            stop = asyncio.Event()
            task = asyncio.create_task(stream(viewer, stop))
            await asyncio.sleep(0.02)
            master = await connect(session, a.ws(arn))
            await asyncio.sleep(0.03)
            stop.set()
            sent = await task
            await barrier(viewer)  # node B has routed everything
            got: list[int] = []
            while not got or got[-1] < sent - 1:
                try:
                    obj = await recv_json(master, timeout=2)
                except AssertionError:
                    break
                candidate = json.loads(base64.b64decode(obj["messagePayload"]))["candidate"]
                got.append(int(candidate.rsplit("tag ", 1)[1]))
            first = got[0] if got else sent
            expected = list(range(first, sent))
            if got != expected:
                missing = sorted(set(expected) - set(got))
                raise AssertionError(
                    f"trial {trial}: {sent} sent, {len(got)} received from #{first}; missing {missing[:20]} "
                    f"({len(missing)}), in order: {got == sorted(got)}"
                )
            assert first <= max(0, sent - len(got)) and (first == 0 or len(got) >= 200), (trial, first, len(got))
            await master.close()
            await viewer.close()
    finally:
        stop_nodes(a, b)


# -- failures ------------------------------------------------------------------------------------------------


async def test_kill_9_of_a_node_mid_session(cluster: Cluster, session: aiohttp.ClientSession) -> None:
    """Node K dies: its clients reconnect elsewhere and get what was sent to them meanwhile."""
    (k,) = start_nodes(["node-k"], cluster.args(), cluster.data_dir)
    try:
        await until(lambda: "node-k" in cluster.a.health()["bus"]["nodes"], "node A to see node K", 5)
        arn = cluster.a.h.create_channel(ttl=30)
        master = await connect(session, k.ws(arn))  # on K
        vk = await connect(session, k.ws(arn, "vk"))  # on K
        ghost = await connect(session, k.ws(arn, "ghost"))  # on K; never comes back
        va = await connect(session, cluster.a.ws(arn, "va"))  # on A
        await roundtrip(master, va, "va", "before")
        await roundtrip(master, vk, "vk", "before")
        presence = f"{cluster.name}:presence:{arn}"
        assert cluster.r.hget(presence, "v:ghost").startswith("node-k" + SEP)

        k.kill()
        killed_at = time.monotonic()
        for ws in (master, vk, ghost):
            await dropped(ws)

        # While the master is away, the viewer on A keeps sending ...
        sent_while_away = [ice(f"away-{i}") for i in range(3)]
        for payload in sent_while_away:
            await va.send_str(out("ICE_CANDIDATE", payload))
        await barrier(va)
        # ... the master reconnects on B and gets it, in order, then talks live.
        master = await connect(session, cluster.b.ws(arn))
        got = [await recv_json(master) for _ in sent_while_away]
        assert got == [from_viewer("va", "ICE_CANDIDATE", p) for p in sent_while_away], (
            "messages sent to a client of the dead node were lost"
        )
        await roundtrip(master, va, "va", "after")
        # The master writes to vk, which has not reconnected yet; vk comes back on C and gets it.
        offer = sdp_payload("offer", "restart-ice")
        await master.send_str(out("SDP_OFFER", offer, recipient="vk"))
        await barrier(master)
        vk = await connect(session, cluster.c.ws(arn, "vk"))
        assert await recv_json(vk) == from_master("SDP_OFFER", offer), "a message buffered for vk was lost"
        await roundtrip(master, vk, "vk", "after")
        assert time.monotonic() - killed_at < 30  # all of it within the channel's MessageTtlSeconds

        # The dead node's presence and registry entries go within the liveness window (+ one heartbeat).
        await until(lambda: cluster.r.hexists(presence, "v:ghost") == 0, "ghost's presence to go", 10)
        took = time.monotonic() - killed_at
        assert took <= LIVENESS_WINDOW + HEARTBEAT + 1, f"the dead node's presence lingered {took:.1f} s"
        assert "node-k" not in cluster.registry()
        assert cluster.r.exists(f"{cluster.name}:held:node-k", f"{cluster.name}:alive:node-k") == 0
        assert cluster.holder(arn) == "node-b" and cluster.holder(arn, "vk") == "node-c"
        await until(lambda: "node-k" not in cluster.a.health()["bus"]["nodes"], "A to forget K", 3)
        for ws in (master, vk, va):
            await ws.close()
    finally:
        k.stop()


async def test_redis_restart(
    database: str, session: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Redis goes away and comes back empty on the same port: nodes carry on locally, then recover."""
    with redis_server.private() as rs:
        name = unique_cluster("rr")
        p, q = start_nodes(["node-p", "node-q"], node_args(rs.url, database, name), tmp_path_factory.mktemp("rr"))
        try:
            arn = p.h.create_channel()
            master = await connect(session, p.ws(arn))
            remote = await connect(session, q.ws(arn, "remote"))
            local = await connect(session, p.ws(arn, "local"))
            await roundtrip(master, remote, "remote", "before")

            rs.stop()
            for node in (p, q):
                node.log.wait_for("bus.disconnected", timeout=10)
                assert node.health()["bus"]["connected"] is False
                assert node.health()["status"] == "ok"  # the node keeps serving
            # Meanwhile: local routing on P works, and a new client may still join (locally).
            await roundtrip(master, local, "local", "outage")
            joined = await connect(session, q.ws(arn, "joined-in-outage"))
            await roundtrip(master, local, "local", "outage-2")

            outage_started = time.monotonic()
            await asyncio.sleep(1.0)
            rs.start()  # same port, nothing in it
            restarted = time.monotonic()
            for node in (p, q):
                await until(lambda n=node: n.health()["bus"]["connected"] is True, f"{node.name} to reconnect", 10)
            took = time.monotonic() - restarted
            assert took < 10, f"reconnecting took {took:.1f} s after Redis was back"
            for node in (p, q):
                lines = node.log.lines
                assert sum("bus.connected" in line for line in lines) >= 2, node.log.text()
            # They registered again and re-claimed every connection: cross-node routing works again.
            r = redis.Redis.from_url(rs.url, decode_responses=True)
            try:
                assert set(r.hkeys(f"{name}:nodes")) == {"node-p", "node-q"}
                fields = set(r.hkeys(f"{name}:presence:{arn}"))
                assert fields == {"m", "v:remote", "v:local", "v:joined-in-outage"}, fields
            finally:
                r.close()
            await roundtrip(master, remote, "remote", "after")
            await roundtrip(master, joined, "joined-in-outage", "after")
            await roundtrip(master, local, "local", "after")
            assert time.monotonic() - outage_started < 15
            for ws in (master, remote, local, joined):
                await ws.close()
        finally:
            stop_nodes(p, q)


def _refuses_connections(port: int) -> bool:
    """The listening socket is closed (connection refused), or what it accepts is answered 503."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            data = s.recv(64)
            return data == b"" or data.startswith(b"HTTP/1.1 503")
    except (ConnectionRefusedError, ConnectionResetError):
        return True


async def test_drain_on_sigterm(cluster: Cluster, session: aiohttp.ClientSession) -> None:
    (d,) = start_nodes(["node-d"], cluster.args(), cluster.data_dir)
    try:
        await until(lambda: "node-d" in cluster.a.health()["bus"]["nodes"], "node A to see node D", 5)
        arn = cluster.a.h.create_channel()
        master = await connect(session, d.ws(arn))  # leaves on GO_AWAY and reconnects elsewhere
        stayer = await connect(session, d.ws(arn, "stayer"))  # ignores GO_AWAY
        viewer = await connect(session, cluster.b.ws(arn, "v"))
        await roundtrip(master, viewer, "v", "before")
        assert cluster.holder(arn) == "node-d"

        d.server.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert await recv_json(master) == {"messageType": "GO_AWAY"}
        assert await recv_json(stayer) == {"messageType": "GO_AWAY"}
        assert _refuses_connections(d.server.port), "a draining node still accepts connections"
        await master.close()
        master = await connect(session, cluster.a.ws(arn))
        await roundtrip(master, viewer, "v", "after")
        # The client that stayed is closed when the grace (--shutdown-grace 3) runs out; then D exits.
        msg = await recv(stayer, 10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data in (1000, 1001), (msg.type, msg.data, msg.extra)
        assert d.server.process.wait(10) == 0, d.log.text()
        assert time.monotonic() - started < 8
        assert "node-d" not in cluster.registry()
        assert cluster.r.exists(f"{cluster.name}:alive:node-d", f"{cluster.name}:held:node-d") == 0
        assert cluster.holder(arn, "stayer") is None
        assert cluster.holder(arn) == "node-a"
        for ws in (master, viewer):
            await ws.close()
    finally:
        d.stop()


# -- --workers -----------------------------------------------------------------------------------------------


def _health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:  # a new connection each time
        return dict(json.loads(response.read()))


@pytest.mark.parametrize("node_id", [None, "wk"], ids=["default-node-id", "with-node-id"])
async def test_workers_share_one_port_and_the_bus(
    redis_url: str,
    database: str,
    session: aiohttp.ClientSession,
    tmp_path_factory: pytest.TempPathFactory,
    node_id: str | None,
) -> None:
    name = unique_cluster("wk")
    args = [*node_args(redis_url, database, name), "--workers", "2"]
    if node_id is not None:
        args += ["--node-id", node_id]
    server = SignaliteServer(subprocess=True, data_dir=tmp_path_factory.mktemp("wk"), extra_args=args).start()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    stopped = False
    try:
        # Both workers answer on the one port, under distinct node ids, in one registry.
        seen: set[str] = set()
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(_health(server.endpoint_url)["bus"]["node"])
        assert len(seen) == 2, (
            f"/health on port {server.port} only ever named {seen}; is it one process, or do "
            f"the workers share a node id?\n{''.join(server.output().splitlines(True)[-6:])}"
        )
        await until(lambda: set(r.hkeys(f"{name}:nodes")) == seen, "both workers to register", 5)

        h = Harness(server)
        arn = h.create_channel()
        master = await connect(session, h.ws_url(arn))
        master_node = r.hget(f"{name}:presence:{arn}", "m").split(SEP)[0]
        # Viewers until one lands on the other worker (the kernel spreads connections).
        viewers: list[WS] = []
        other: tuple[str, WS] | None = None
        for i in range(40):
            ws = await connect(session, h.ws_url(arn, f"v{i}"))
            viewers.append(ws)
            if r.hget(f"{name}:presence:{arn}", f"v:v{i}").split(SEP)[0] != master_node:
                other = (f"v{i}", ws)
                break
        assert other is not None, "40 connections all landed on the master's worker"
        cid, viewer = other
        await roundtrip(master, viewer, cid, "cross-worker")
        await viewer.send_str(out("SDP_OFFER", sdp_payload("offer", cid)))
        assert (await recv_json(master))["messageType"] == "SDP_OFFER"
        for ws in (master, *viewers):
            await ws.close()
        server.stop()  # SIGTERM to the supervisor, which forwards it to every worker
        stopped = True
        assert r.hlen(f"{name}:nodes") == 0, "the workers did not leave the registry on SIGTERM"
    finally:
        if not stopped:
            server.stop()
        r.close()
