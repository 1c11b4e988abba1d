"""The Redis bus in-process: several `RedisBus` nodes on one private redis-server, with fake nodes.

What is checked here is the route cache (a sender remembers which connection channel a recipient was
delivered to and PUBLISHes there directly) against the cases where a cached route goes stale: the
recipient moved to another node (before and after the old node released it), disconnected (its
messages must go to the TTL buffer, in order, SDP replacement included), its node died, or its node
stopped heartbeating while still subscribed; per-sender order when a cached route dies mid-burst; and,
on random sequences of connects, disconnects, moves and sends, the exact same deliveries and buffers
with the cache as without it (every message through the route script, as before the cache).

The fake node does what web/websocket.py does around the bus: a connection is registered locally
before its claim, a frame for a recipient connected locally is delivered without the bus, and a
displaced or closed connection is forgotten locally first and released on the bus afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis_server
from signalite.bus.redis import SEP, RedisBus
from signalite.bus.resp import command, open_link
from signalite.signaling.hub import Forward, Role
from signalite.signaling.protocol import MessageType

ARN = "arn:aws:kinesisvideo:us-east-1:000000000000:channel/bus/1"
ARN2 = "arn:aws:kinesisvideo:us-east-1:000000000000:channel/bus/2"
ICE = MessageType.ICE_CANDIDATE
OFFER = MessageType.SDP_OFFER

_ids = itertools.count(1)


class FakeNode:
    """A node's side of the bus (BusHandler), keeping what each of its connections received."""

    def __init__(self, name: str, url: str, cluster: str, *, release: bool = True, **options: Any) -> None:
        self.name = name
        self.bus = RedisBus(url, name, cluster, **options)
        self.conns: dict[tuple[str, str | None], int] = {}  # (arn, client id) -> connection
        self.received: list[tuple[str, str | None, int, str]] = []  # (arn, client id, connection, frame)
        self.release_on_displace = release
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FakeNode:
        await self.bus.start(self)
        assert self.bus.connected
        return self

    async def connect(self, arn: str, client_id: str | None) -> int:
        old = self.conns.get((arn, client_id))
        if old is not None:  # the hub replaces a local connection itself
            await self.disconnect(arn, client_id)
        conn = next(_ids)
        self.conns[(arn, client_id)] = conn
        role = Role.MASTER if client_id is None else Role.VIEWER
        for _type, frame in await self.bus.claim(
            arn, role, client_id, conn, max_viewers=None, connects_per_second=None
        ):
            self.received.append((arn, client_id, conn, frame))
        return conn

    def forget(self, arn: str, client_id: str | None) -> int:
        """The connection is gone here; its release has not run yet."""
        return self.conns.pop((arn, client_id))

    async def release(self, arn: str, client_id: str | None, conn: int) -> None:
        role = Role.MASTER if client_id is None else Role.VIEWER
        await self.bus.release(arn, role, client_id, conn)

    async def disconnect(self, arn: str, client_id: str | None) -> None:
        await self.release(arn, client_id, self.forget(arn, client_id))

    async def send(
        self, arn: str, recipient: str | None, message_type: MessageType, sender: str | None, frame: str
    ) -> None:
        if (arn, recipient) in self.conns:  # local: the hub delivers it without the bus
            await self.deliver(arn, recipient, message_type, frame)
            return
        await self.bus.forward(Forward(arn, recipient, message_type, sender, frame, 60))

    # -- BusHandler ---------------------------------------------------------------------------------

    async def deliver(self, arn: str, recipient: str | None, message_type: MessageType, frame: str) -> bool:
        conn = self.conns.get((arn, recipient))
        if conn is None:
            return False
        self.received.append((arn, recipient, conn, frame))
        return True

    async def displace(self, connection: int) -> None:
        for key, conn in list(self.conns.items()):
            if conn == connection:
                del self.conns[key]
                if self.release_on_displace:
                    task = asyncio.ensure_future(self.release(key[0], key[1], conn))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def on_bus_event(self, event: Any) -> None:
        return None

    async def on_bus_reconnected(self) -> None:
        return None

    def local_presence(self) -> list[tuple[int, str, Role, str | None]]:
        return [(c, arn, Role.MASTER if cid is None else Role.VIEWER, cid) for (arn, cid), c in self.conns.items()]

    def frames(self, arn: str = ARN, client_id: str | None = None) -> list[str]:
        return [f for a, c, _, f in self.received if a == arn and c == client_id]

    def kill(self) -> None:
        """As kill -9: the connections to Redis drop, nothing is cleaned up."""
        for task in self.bus._tasks:
            task.cancel()
        self.bus._drop_links()


async def settle(*nodes: FakeNode) -> None:
    """Until every node has had everything it sent answered and everything it received handled.

    A pass drains the nodes one after the other; a message re-routed by a later node to an earlier one
    is handled in the next pass (a re-route chain is at most two hops long).
    """
    for _ in range(3):
        for n in nodes:
            if n.bus.connected:
                assert await n.bus.drain(5.0)
            if n._tasks:
                await asyncio.gather(*n._tasks)


@pytest.fixture(scope="module")
def server() -> Iterator[redis_server.RedisServer]:
    with redis_server.private() as s:
        yield s


@pytest.fixture
def r(server: redis_server.RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def cluster(server: redis_server.RedisServer) -> AsyncIterator[Any]:
    """A factory of nodes in one fresh cluster; all are stopped at the end."""
    name = f"bt-{uuid.uuid4().hex[:8]}"
    nodes: list[FakeNode] = []

    async def make(node: str, **options: Any) -> FakeNode:
        n = await FakeNode(node, server.url, name, **options).start()
        nodes.append(n)
        return n

    make.name = name  # type: ignore[attr-defined]
    yield make
    for n in nodes:
        await n.bus.stop()


def buffered(r: redis.Redis, cluster: str, arn: str = ARN, client_id: str | None = None) -> list[tuple[str, str, str]]:
    """The TTL buffer of a recipient: (type, sender, frame) in order."""
    field = "m" if client_id is None else f"v:{client_id}"
    items = r.lrange(f"{cluster}:buf:{arn}:{field}", 0, -1)
    return [tuple(item.split(SEP, 3)[1:]) for item in items]  # type: ignore[misc]


def evalsha_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


async def cached_route(a: FakeNode, b: FakeNode, arn: str = ARN) -> None:
    """Master of `arn` on `b`; `a` has sent it a message, so a's route to it is cached."""
    await b.connect(arn, None)
    await a.send(arn, None, ICE, "v", "warm-up")
    await settle(a, b)
    assert b.frames(arn)[-1] == "warm-up"
    assert (arn, None) in a.bus._routes


# -- the fast path ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_hiredis", [True, False])
async def test_a_learnt_route_is_a_plain_publish(cluster: Any, r: redis.Redis, use_hiredis: bool) -> None:
    a, b = await cluster("A", use_hiredis=use_hiredis), await cluster("B", use_hiredis=use_hiredis)
    await cached_route(a, b)
    before = evalsha_calls(r)
    for i in range(50):
        await a.send(ARN, None, ICE, "v", f"m{i}")
    await settle(a, b)
    assert b.frames()[1:] == [f"m{i}" for i in range(50)]
    assert evalsha_calls(r) == before  # no route script ran
    assert a.bus.lost_messages == b.bus.lost_messages == 0


async def test_without_the_cache_every_message_runs_the_route_script(cluster: Any, r: redis.Redis) -> None:
    a, b = await cluster("A", route_cache=False), await cluster("B")
    await b.connect(ARN, None)
    before = evalsha_calls(r)
    for i in range(20):
        await a.send(ARN, None, ICE, "v", f"m{i}")
    await settle(a, b)
    assert b.frames() == [f"m{i}" for i in range(20)]
    assert evalsha_calls(r) == before + 20


# -- stale routes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("old_node_released", [True, False])
async def test_recipient_moved_to_another_node(cluster: Any, r: redis.Redis, old_node_released: bool) -> None:
    """Messages after the move reach the new node once each; none go to the buffer or the old node.

    Not released: the old node still subscribes to the old connection's channel, so the cached
    PUBLISH reaches it; it must route the message on to the new holder.
    """
    a, b = await cluster("A"), await cluster("B", release=old_node_released)
    c = await cluster("C")
    await cached_route(a, b)
    await c.connect(ARN, None)  # displaces B's master
    await settle(a, b, c)
    assert (ARN, None) not in b.conns
    for i in range(30):
        await a.send(ARN, None, ICE, "v", f"m{i}")
    await settle(a, b, c)
    # Not released, B unsubscribed from the gone connection's channel when a message reached it there.
    await a.send(ARN, None, ICE, "v", "m30")
    await settle(a, b, c)
    assert c.frames() == [f"m{i}" for i in range(31)]
    assert b.frames() == ["warm-up"]
    assert buffered(r, cluster.name) == []
    # Afterwards the route leads to the new connection.
    assert a.bus._routes[(ARN, None)].channel.endswith(f"C{SEP}{c.conns[(ARN, None)]}".encode())


@pytest.mark.parametrize("released", [True, False])
async def test_disconnected_recipient_messages_go_to_the_ttl_buffer(
    cluster: Any, r: redis.Redis, released: bool
) -> None:
    """Not released: presence still names the gone connection, whose node must buffer what reaches it."""
    a, b, c = await cluster("A"), await cluster("B"), await cluster("C")
    await cached_route(a, b)
    conn = b.forget(ARN, None)
    if released:
        await b.release(ARN, None, conn)
    await a.send(ARN, None, OFFER, "v", "offer-1")
    await a.send(ARN, None, ICE, "v", "ice-1")
    await a.send(ARN, None, OFFER, "v", "offer-2")  # replaces offer-1, as the local buffer does
    await a.send(ARN, None, ICE, "v", "ice-2")
    await settle(a, b, c)
    assert buffered(r, cluster.name) == [
        ("ICE_CANDIDATE", "v", "ice-1"),
        ("SDP_OFFER", "v", "offer-2"),
        ("ICE_CANDIDATE", "v", "ice-2"),
    ]
    assert b.frames() == ["warm-up"]
    # Not released: each message reached B on the gone connection's channel and was routed again by
    # B once, past that stale holder, straight to the buffer.
    assert b.bus.rerouted == (0 if released else 4)
    if not released:
        await b.release(ARN, None, conn)
    await c.connect(ARN, None)
    assert c.frames() == ["ice-1", "offer-2", "ice-2"]
    assert (a.bus.lost_messages, b.bus.lost_messages) == (0, 0)


async def test_recipient_node_killed(cluster: Any, r: redis.Redis) -> None:
    """Its connection channels vanish with it: cached PUBLISHes find nobody and the messages are buffered."""
    a, b, c = await cluster("A"), await cluster("B"), await cluster("C")
    await cached_route(a, b)
    b.kill()
    await asyncio.sleep(0.1)  # Redis notices the closed connections
    assert r.exists(f"{cluster.name}:alive:B")  # not yet known to be dead
    for i in range(5):
        await a.send(ARN, None, ICE, "v", f"m{i}")
    await settle(a, c)
    assert [f for _, _, f in buffered(r, cluster.name)] == [f"m{i}" for i in range(5)]
    await c.connect(ARN, None)  # the client reconnects elsewhere
    assert c.frames() == [f"m{i}" for i in range(5)]
    assert a.bus.lost_messages == 0


async def test_routes_to_a_node_declared_dead_are_forgotten(cluster: Any, r: redis.Redis) -> None:
    """A stalled node keeps its subscriptions; once swept, its recipients' messages go to the buffer."""
    a, b = await cluster("A"), await cluster("B")
    await cached_route(a, b)
    # What another node's sweep does to a node whose heartbeats stopped (B's own heartbeat would
    # register it again, so stop that first).
    b.bus._tasks[1].cancel()
    r.delete(f"{cluster.name}:alive:B")
    r.hdel(f"{cluster.name}:nodes", "B")
    r.hdel(f"{cluster.name}:presence:{ARN}", "m")
    a.bus._forget_routes_to_dead_nodes({"A"})  # A's next heartbeat
    await a.send(ARN, None, ICE, "v", "after")
    await settle(a, b)
    assert b.frames() == ["warm-up"]
    assert [f for _, _, f in buffered(r, cluster.name)] == ["after"]


async def test_order_is_kept_when_a_cached_route_dies_mid_burst(cluster: Any, r: redis.Redis) -> None:
    """One message per loop iteration: the answers on the dead route come in while newer ones are sent."""
    a, b, c = await cluster("A"), await cluster("B"), await cluster("C")
    await cached_route(a, b)
    await b.disconnect(ARN, None)
    await settle(a, b)
    sent = []
    for i in range(150):
        sent.append(f"m{i}")
        await a.send(ARN, None, ICE, "v", sent[-1])
        await asyncio.sleep(0)
    await settle(a, b, c)
    assert [f for _, _, f in buffered(r, cluster.name)] == sent
    await c.connect(ARN, None)
    assert c.frames() == sent


async def test_order_is_kept_while_the_route_is_learnt(cluster: Any) -> None:
    """The first messages go through the script, the later ones PUBLISH: one order at the recipient."""
    a, b = await cluster("A"), await cluster("B")
    await b.connect(ARN, None)
    await settle(a, b)
    sent = []
    for i in range(200):
        sent.append(f"m{i}")
        await a.send(ARN, None, ICE, "v", sent[-1])
        if i % 5 == 0:
            await asyncio.sleep(0)
    await settle(a, b)
    assert b.frames() == sent


async def test_forwards_that_cannot_wait_keep_their_order_while_redis_is_behind(cluster: Any) -> None:
    """forward_nowait (the picows path's callbacks): while the command connection is paused (its write
    buffer full), forwards queue in order, mixed with awaited ones, and all go out once it resumes."""
    a, b = await cluster("A"), await cluster("B")
    await b.connect(ARN, None)
    await settle(a, b)
    cmd = a.bus._cmd
    assert cmd is not None
    cmd.pause_writing()  # what the transport says when Redis does not read fast enough
    sent = [f"m{i}" for i in range(50)]
    for frame in sent[:30]:
        a.bus.forward_nowait(Forward(ARN, None, ICE, "v", frame, 60))
    awaited = asyncio.ensure_future(a.bus.forward(Forward(ARN, None, ICE, "w", "other", 60)))
    await asyncio.sleep(0.2)
    assert b.frames() == [] and not awaited.done()  # nothing overtook the pause
    cmd.resume_writing()
    for frame in sent[30:]:  # behind the backlog, if it has not drained yet
        a.bus.forward_nowait(Forward(ARN, None, ICE, "v", frame, 60))
    await awaited
    await settle(a, b)
    assert [f for f in b.frames() if f != "other"] == sent
    assert "other" in b.frames()


async def test_a_route_is_learnt_only_once_its_connection_channel_is_subscribed(cluster: Any) -> None:
    """Until the node's SUBSCRIBE is processed the route script delivers through the node's channel, and
    must not hand out the connection's channel: a PUBLISH there could overtake a re-routed message."""
    a, b = await cluster("A"), await cluster("B")
    sub, b.bus._sub = b.bus._sub, None  # the claim's SUBSCRIBE is not sent
    conn = await b.connect(ARN, None)
    b.bus._sub = sub
    await a.send(ARN, None, ICE, "v", "m0")
    await settle(a, b)
    assert b.frames() == ["m0"]
    assert (ARN, None) not in a.bus._routes
    assert sub is not None
    sub.send(command(b"SUBSCRIBE", b.bus._conn_channel(conn)))
    await settle(a, b)
    await a.send(ARN, None, ICE, "v", "m1")
    await settle(a, b)
    assert b.frames() == ["m0", "m1"]
    assert (ARN, None) in a.bus._routes


async def test_a_flushed_script_cache_is_reloaded(cluster: Any, r: redis.Redis) -> None:
    a, b = await cluster("A"), await cluster("B")
    await b.connect(ARN, None)
    r.script_flush()
    await a.send(ARN, None, ICE, "v", "m0")
    await settle(a, b)
    assert b.frames() == ["m0"]
    assert a.bus.lost_messages == 0


async def test_connection_channels_follow_claims_and_releases(cluster: Any, r: redis.Redis) -> None:
    a = await cluster("A")
    conn = await a.connect(ARN, "v1")
    await settle(a)
    channel = f"{cluster.name}:c:A{SEP}{conn}"
    assert channel in r.pubsub_channels(f"{cluster.name}:c:*")
    await a.disconnect(ARN, "v1")
    await settle(a)
    assert channel not in r.pubsub_channels(f"{cluster.name}:c:*")


async def test_a_ping_before_the_first_subscription_is_answered(cluster: Any) -> None:
    """Redis answers +PONG, not a pub/sub pong, until the connection has subscribed to something."""
    a = await cluster("A")
    link = await open_link(a.bus.url, on_push=a.bus._on_push)
    link.subscribed = True
    try:
        await asyncio.wait_for(a.bus._sub_barrier(link), 2)
    finally:
        link.abort()


async def test_redis_restart_resubscribes_and_relearns_routes() -> None:
    """After an outage the nodes subscribe their connections' channels again and routes are learnt anew."""
    with redis_server.private() as server:
        name = f"bt-{uuid.uuid4().hex[:8]}"
        a, b = await FakeNode("A", server.url, name).start(), await FakeNode("B", server.url, name).start()
        try:
            await cached_route(a, b)
            server.stop()

            async def until(connected: bool) -> None:
                for _ in range(100):
                    if a.bus.connected is b.bus.connected is connected:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"the nodes are not {'connected' if connected else 'disconnected'}")

            await until(False)
            await a.send(ARN, None, ICE, "v", "lost")  # Redis is down: counted, not delivered
            server.start()
            await until(True)
            await settle(a, b)
            assert a.bus.lost_messages >= 1
            assert (ARN, None) not in a.bus._routes  # forgotten with the connection to Redis
            for i in range(3):
                await a.send(ARN, None, ICE, "v", f"after-{i}")
                await settle(a, b)
            assert b.frames() == ["warm-up", "after-0", "after-1", "after-2"]
            assert (ARN, None) in a.bus._routes  # the re-claimed connection's channel is subscribed again
        finally:
            await a.bus.stop()
            await b.bus.stop()


async def test_redis_with_a_password_and_a_database_number(server: redis_server.RedisServer) -> None:
    admin = redis.Redis.from_url(server.url)
    admin.config_set("requirepass", "s3cret")
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        name = f"bt-{uuid.uuid4().hex[:8]}"
        a, b = await FakeNode("A", url, name).start(), await FakeNode("B", url, name).start()
        try:
            await cached_route(a, b)
            await a.send(ARN, None, ICE, "v", "again")
            await settle(a, b)
            await b.disconnect(ARN, None)
            await a.send(ARN, None, ICE, "v", "buffered")
            await settle(a, b)
            assert b.frames() == ["warm-up", "again"]
            db3 = redis.Redis.from_url(url, decode_responses=True)
            assert [f for _, _, f in buffered(db3, name)] == ["buffered"]
            db3.close()
        finally:
            await a.bus.stop()
            await b.bus.stop()
    finally:
        redis.Redis.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/0").config_set("requirepass", "")
        admin.close()


# -- the cache changes nothing but the cost ---------------------------------------------------------------


async def _run_script(url: str, steps: list[tuple[Any, ...]], route_cache: bool) -> tuple[Any, ...]:
    """Run `steps` on a fresh cluster of nodes A, B, C.

    Returns what each received, the buffers, messages lost, stale cached routes, messages routed again.
    """
    name = f"bt-{uuid.uuid4().hex[:8]}"
    nodes = {n: await FakeNode(n, url, name, route_cache=route_cache).start() for n in ("A", "B", "C")}
    pending: dict[tuple[str, str, str | None], int] = {}  # forgotten, not yet released
    for step in steps:
        op, node = step[0], nodes[step[1]]
        if op == "connect":
            await node.connect(step[2], step[3])
        elif op == "disconnect" and (step[2], step[3]) in node.conns:
            await node.disconnect(step[2], step[3])
        elif op == "forget" and (step[2], step[3]) in node.conns:
            pending[(step[1], step[2], step[3])] = node.forget(step[2], step[3])
        elif op == "release" and (step[1], step[2], step[3]) in pending:
            await node.release(step[2], step[3], pending.pop((step[1], step[2], step[3])))
        elif op == "send":
            await node.send(*step[2:])
        await settle(*nodes.values())
    r = redis.Redis.from_url(url, decode_responses=True)
    buffers = {key.removeprefix(name): r.lrange(key, 0, -1) for key in r.scan_iter(f"{name}:buf:*")}
    r.close()
    buffers = {k: [item.split(SEP, 1)[1] for item in v] for k, v in buffers.items()}  # without the expiry
    received = {n.name: [(a, c, f) for a, c, _, f in n.received] for n in nodes.values()}
    lost = sum(n.bus.lost_messages for n in nodes.values())
    misses = sum(n.bus.route_misses for n in nodes.values())
    rerouted = sum(n.bus.rerouted for n in nodes.values())
    for n in nodes.values():
        await n.bus.stop()
    return received, buffers, lost, misses, rerouted


def _random_steps(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    steps: list[tuple[Any, ...]] = []
    recipients = [None, "v1", "v2"]
    for i in range(count):
        node = rng.choice("ABC")
        arn = rng.choice([ARN, ARN2])
        who = rng.choice(recipients)
        roll = rng.random()
        if roll < 0.2:
            steps.append(("connect", node, arn, who))
        elif roll < 0.3:
            steps.append(("disconnect", node, arn, who))
        elif roll < 0.37:
            steps.append(("forget", node, arn, who))
        elif roll < 0.45:
            steps.append(("release", node, arn, who))
        else:
            sender = "v1" if who is None else None
            message_type = rng.choice([ICE, ICE, OFFER])
            for j in range(rng.choice([1, 1, 3])):
                steps.append(("send", node, arn, who, message_type, sender, f"{i}.{j}"))
    return steps


async def test_same_deliveries_and_buffers_with_and_without_the_cache(server: redis_server.RedisServer) -> None:
    misses = rerouted = 0
    for seed in range(6):
        steps = _random_steps(random.Random(seed), 60)
        with_cache = await _run_script(server.url, steps, route_cache=True)
        without = await _run_script(server.url, steps, route_cache=False)
        assert with_cache[:3] == without[:3], f"seed {seed}"
        assert with_cache[2] == 0
        misses += with_cache[3]
        rerouted += with_cache[4]
    # The scripts did reach the cases where a cached route is stale.
    assert misses > 0 and rerouted > 0
