"""The console's server side: static files, the info endpoint, and the live-view feed (content and auth).

In-process servers (`SignaliteServer`): an open-mode one, and a strict-mode one with four keys (full access;
a policy that allows DescribeSignalingChannel on `allowed-*` channels only; a key of another account; a key
with a session token). The pages' own sigv4.js (run by node) signs requests the strict server must accept. The
feed is read as server-sent events with aiohttp while real signaling WebSockets move through a channel, and
everything it sends is checked to never contain a message payload.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import boto3
import botocore.config
import pytest

from signalite.auth.sigv4 import Credential, presign_url
from signalite.testing import SignaliteServer

REGION = "us-west-2"
OPEN_KEY = Credential("AKIDCONSOLEOPEN", "open-mode-anything", "000000000000")
ADMIN = Credential("AKIDCONSOLEADMIN", "console-admin-secret-0123", "123456789012")
LIMITED = Credential("AKIDCONSOLELIMITED", "console-limited-secret-4567", "123456789012")
STRANGER = Credential("AKIDCONSOLEOTHER", "console-other-secret-89ab", "210987654321")
TOKEN = Credential(
    "AKIDCONSOLETOKEN", "console-token-secret-cdef", "123456789012", "IQoJb3JpZ2luX2VjE/+token=value/with+chars=="
)
BOTO = botocore.config.Config(retries={"max_attempts": 1})
STATIC_DIR = Path(__file__).resolve().parents[2] / "src" / "signalite" / "console"

# A feed snapshot has exactly these keys; connections and buffered entries too.
SNAPSHOT_KEYS = {"time", "channelARN", "channel", "node", "clustered", "master", "viewers", "buffered", "events"}
CONNECTION_KEYS = {"role", "clientId", "node", "connectedSince", "connectedSeconds", "messagesIn", "messagesOut"}
BUFFERED_KEYS = {"recipient", "sender", "messageType", "secondsLeft"}
EVENT_KEYS = {"time", "kind", "role", "client_id", "code", "close_code", "reason", "error_type"}


def unique(prefix: str = "console") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def kv_client(server: SignaliteServer, cred: Credential) -> Any:
    return boto3.client(
        "kinesisvideo", endpoint_url=server.endpoint_url, region_name=REGION, config=BOTO,
        aws_access_key_id=cred.access_key_id, aws_secret_access_key=cred.secret_access_key,
    )  # fmt: skip


def live_url(server: SignaliteServer, arn: str) -> str:
    return f"{server.endpoint_url}/console/api/live?channel={quote(arn, safe='')}"


def signed_live_url(server: SignaliteServer, arn: str, cred: Credential, **kwargs: Any) -> str:
    now = kwargs.pop("now", server.clock.time())
    return presign_url(live_url(server, arn), cred, REGION, now, **kwargs)


def ws_url(server: SignaliteServer, arn: str, cred: Credential, client_id: str | None = None) -> str:
    url = f"ws://127.0.0.1:{server.port}/?X-Amz-ChannelARN={quote(arn, safe='')}"
    if client_id is not None:
        url += f"&X-Amz-ClientId={client_id}"
    return presign_url(url, cred, REGION, server.clock.time())


def payload(marker: str) -> str:
    """A base64 messagePayload that carries `marker` (never to be seen in the feed, raw or base64)."""
    return base64.b64encode(json.dumps({"type": "offer", "sdp": f"v=0\r\ns={marker}\r\n"}).encode()).decode()


def frame(action: str, body: str, recipient: str | None = None, correlation: str | None = None) -> str:
    obj: dict[str, Any] = {"action": action, "messagePayload": body}
    if recipient is not None:
        obj["recipientClientId"] = recipient
    if correlation is not None:
        obj["correlationId"] = correlation
    return json.dumps(obj)


def raw_get(server: SignaliteServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """Send `path` exactly as written (no client-side normalisation) and read the whole answer."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


class Feed:
    """An open live-view stream: every byte it sent is kept; snapshots are parsed as they come."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.raw = b""
        self._buffer = b""
        self.snapshots: list[dict[str, Any]] = []

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            while True:
                end = self._buffer.find(b"\n\n")
                if end >= 0:
                    block, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
                    lines = block.decode().split("\n")
                    if "event: snapshot" in lines:
                        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
                        snapshot: dict[str, Any] = json.loads(data)
                        self.snapshots.append(snapshot)
                        return snapshot
                    continue
                chunk = await self.response.content.readany()
                if not chunk:
                    raise EOFError("the feed ended")
                self.raw += chunk
                self._buffer += chunk

        return await asyncio.wait_for(read(), timeout)

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            snapshot = await self.next(max(0.1, deadline - time.monotonic()))
            if predicate(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                raise AssertionError(f"no snapshot matched; last: {json.dumps(snapshot, indent=1)}")


async def open_feed(session: aiohttp.ClientSession, url: str) -> Feed:
    response = await session.get(url)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream"), response.headers
    return Feed(response)


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    msg = await ws.receive(timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


def fast_feed(server: SignaliteServer) -> None:
    """Snapshots every 0.1 s instead of every second, so the tests don't sleep."""

    async def set_interval() -> None:
        server.server.console.interval = 0.1

    server.call(set_interval)


# -- servers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_server() -> Iterator[SignaliteServer]:
    with SignaliteServer(settings={"node_id": "console-node-a", "limits": "off"}) as server:
        fast_feed(server)
        yield server


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignaliteServer]:
    path = tmp_path_factory.mktemp("console-strict") / "credentials.json"
    limited_policy = {
        "Statement": [
            {"Effect": "Allow", "Action": "kinesisvideo:DescribeSignalingChannel",
             "Resource": "arn:aws:kinesisvideo:*:123456789012:channel/allowed-*"},
        ]
    }  # fmt: skip
    entries = [
        {"access_key_id": ADMIN.access_key_id, "secret_access_key": ADMIN.secret_access_key,
         "account_id": ADMIN.account_id},
        {"access_key_id": LIMITED.access_key_id, "secret_access_key": LIMITED.secret_access_key,
         "account_id": LIMITED.account_id, "policy": limited_policy},
        {"access_key_id": STRANGER.access_key_id, "secret_access_key": STRANGER.secret_access_key,
         "account_id": STRANGER.account_id},
        {"access_key_id": TOKEN.access_key_id, "secret_access_key": TOKEN.secret_access_key,
         "account_id": TOKEN.account_id, "session_token": TOKEN.session_token},
    ]  # fmt: skip
    path.write_text(json.dumps({"credentials": entries}))
    with SignaliteServer(settings={"credentials": str(path), "limits": "off", "node_id": "console-strict"}) as server:
        fast_feed(server)
        yield server


@pytest.fixture
async def web_client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- static files ------------------------------------------------------------------------------------

PAGES = {
    "/console/": "text/html",
    "/console/index.html": "text/html",
    "/console/test.html": "text/html",
    "/console/console.js": "text/javascript",
    "/console/test.js": "text/javascript",
    "/console/api.js": "text/javascript",
    "/console/sigv4.js": "text/javascript",
    "/console/console.css": "text/css",
    "/console/favicon.svg": "image/svg+xml",
}


@pytest.mark.parametrize("path", list(PAGES))
def test_static_files_are_served_with_their_content_type(open_server: SignaliteServer, path: str) -> None:
    status, headers, body = raw_get(open_server, path)
    assert status == 200, body[:300]
    assert headers["content-type"].split(";")[0] == PAGES[path], headers
    assert headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in headers["content-security-policy"], headers
    assert "script-src 'self'" in headers["content-security-policy"], headers
    name = "index.html" if path.endswith("/") else path.rsplit("/", 1)[1]
    assert body == (STATIC_DIR / name).read_bytes()
    head_status, head_headers, head_body = raw_get(open_server, path, method="HEAD")
    assert head_status == 200 and head_body == b"", head_body[:100]
    assert head_headers["content-type"] == headers["content-type"]


def test_console_without_slash_redirects(open_server: SignaliteServer) -> None:
    status, headers, _ = raw_get(open_server, "/console")
    assert status in (301, 308), status
    assert headers["location"] == "/console/"


def test_unknown_console_files_and_methods(open_server: SignaliteServer) -> None:
    for path in ("/console/nope.html", "/console/console", "/console/.hidden", "/console/api/nope"):
        status, _, body = raw_get(open_server, path)
        assert status == 404, (path, status, body[:200])
    status, headers, _ = raw_get(open_server, "/console/index.html", method="PUT")
    assert status == 405 and "GET" in headers["allow"], (status, headers)


def test_pages_load_nothing_from_elsewhere(open_server: SignaliteServer) -> None:
    """Everything the pages load is served by signalite: no CDN, no absolute URL, and every reference resolves."""
    for page in ("/console/", "/console/test.html"):
        _, _, body = raw_get(open_server, page)
        html = body.decode()
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs, html[:500]
        for ref in refs:
            assert not re.match(r"^(?:[a-z]+:)?//", ref), f"{page} loads {ref} from elsewhere"
            target = ref if ref.startswith("/") else f"/console/{ref}"
            status, _, _ = raw_get(open_server, target)
            assert status == 200, f"{page} references {ref}, which answers {status}"
    for script in sorted(STATIC_DIR.glob("*.js")):
        text = script.read_text()
        imports = re.findall(r"""from\s+['"]([^'"]+)['"]""", text)
        assert all(i.startswith("./") for i in imports), (script.name, imports)
        for module in imports:
            assert raw_get(open_server, f"/console/{module[2:]}")[0] == 200, (script.name, module)
        # Credentials live in page memory only: no web storage, no cookies.
        assert not re.search(r"\b(?:localStorage|sessionStorage|indexedDB)\s*[.\[]|document\.cookie", text), script
    css = (STATIC_DIR / "console.css").read_text()
    assert "url(" not in css and "@import" not in css


TRAVERSALS = [
    "/console/../pyproject.toml",
    "/console/../../pyproject.toml",
    "/console/%2e%2e/pyproject.toml",
    "/console/%2E%2E/%2E%2E/pyproject.toml",
    "/console/..%2fpyproject.toml",
    "/console/..%2F..%2Fpyproject.toml",
    "/console/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/console/.%2e/web/console.py",
    "/console/..\\..\\pyproject.toml",
    "/console/..%5c..%5cpyproject.toml",
    "/console/%252e%252e/pyproject.toml",
    "/console/../web/console.py",
    "/console/../__init__.py",
    "/console//etc/passwd",
    "/console/%2fetc%2fpasswd",
    "/console/../../../../../../etc/passwd",
    "/console/index.html%00.py",
    "/console/api/../../pyproject.toml",
    "/console/./../pyproject.toml",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_refused(open_server: SignaliteServer, path: str) -> None:
    status, _, body = raw_get(open_server, path)
    assert status in (400, 404), (status, body[:200])
    for leaked in (b"[project]", b"import ", b"root:", b"def "):
        assert leaked not in body, (path, body[:200])


# -- info ----------------------------------------------------------------------------------------------


def test_info_tells_the_pages_how_to_sign(open_server: SignaliteServer, strict_server: SignaliteServer) -> None:
    for server, mode in ((open_server, "open"), (strict_server, "strict")):
        status, headers, body = raw_get(server, "/console/api/info")
        assert status == 200 and headers["content-type"] == "application/json", body
        info = json.loads(body)
        assert info["authMode"] == mode and info["region"] == "us-east-1", info
        assert abs(info["serverTime"] - server.clock.time()) < 5, info
        assert info["endpoint"] == server.endpoint_url and info["turnConfigured"] is False, info
        for secret in (ADMIN.secret_access_key, LIMITED.secret_access_key, STRANGER.secret_access_key):
            assert secret.encode() not in body


def test_strict_mode_still_serves_the_pages(strict_server: SignaliteServer) -> None:
    # The page has to load to ask for credentials; only the feed and the AWS APIs need a signature.
    for path in ("/console/", "/console/test.html", "/console/sigv4.js"):
        assert raw_get(strict_server, path)[0] == 200, path


# -- live feed: content ----------------------------------------------------------------------------------


async def test_live_feed_follows_a_channel_and_never_carries_payloads(
    open_server: SignaliteServer, web_client: aiohttp.ClientSession
) -> None:
    server = open_server
    kv = kv_client(server, OPEN_KEY)
    name = unique()
    created = kv.create_signaling_channel(ChannelName=name, SingleMasterConfiguration={"MessageTtlSeconds": 20})
    arn = created["ChannelARN"]
    markers = [f"MARKER{n}{uuid.uuid4().hex[:8]}" for n in range(5)]
    sent_payloads = [payload(m) for m in markers]
    viewer_id = "live-viewer-1"

    feed = await open_feed(web_client, live_url(server, arn))
    first = await feed.next()
    assert set(first) == SNAPSHOT_KEYS, first
    assert first["channelARN"] == arn and first["node"] == "console-node-a" and first["clustered"] is False, first
    assert first["channel"] == {
        "name": name, "status": "ACTIVE", "version": first["channel"]["version"], "messageTtlSeconds": 20,
        "creationTime": first["channel"]["creationTime"],
    }  # fmt: skip
    assert first["master"] is None and first["viewers"] == [] and first["buffered"] == [], first

    # A viewer alone: its offer and candidate wait for the master, and the feed lists them (not their payloads).
    viewer = await web_client.ws_connect(ws_url(server, arn, OPEN_KEY, viewer_id))
    await viewer.send_str(frame("SDP_OFFER", sent_payloads[0]))
    await viewer.send_str(frame("ICE_CANDIDATE", sent_payloads[1]))
    snap = await feed.until(lambda s: len(s["buffered"]) == 2)
    assert snap["master"] is None and len(snap["viewers"]) == 1, snap
    v = snap["viewers"][0]
    assert set(v) == CONNECTION_KEYS, v
    assert (v["role"], v["clientId"], v["node"], v["messagesIn"], v["messagesOut"]) == (
        "VIEWER", viewer_id, "console-node-a", 2, 0
    ), v  # fmt: skip
    assert abs(v["connectedSince"] - server.clock.time()) < 5, v
    for b in snap["buffered"]:
        assert set(b) == BUFFERED_KEYS, b
        assert b["recipient"] is None and b["sender"] == viewer_id, b
        assert 15 < b["secondsLeft"] <= 20, b
    assert [b["messageType"] for b in snap["buffered"]] == ["SDP_OFFER", "ICE_CANDIDATE"], snap

    # The master connects: the buffered messages are delivered and the buffer empties.
    master = await web_client.ws_connect(ws_url(server, arn, OPEN_KEY))
    assert (await receive(master))["messagePayload"] == sent_payloads[0]
    assert (await receive(master))["messagePayload"] == sent_payloads[1]
    snap = await feed.until(lambda s: s["master"] is not None and not s["buffered"])
    assert snap["master"]["clientId"] is None and snap["master"]["role"] == "MASTER", snap
    assert snap["master"]["messagesOut"] == 2 and snap["master"]["messagesIn"] == 0, snap

    # Master -> viewer (delivered), master -> an absent viewer (buffered), a bad frame (STATUS_RESPONSE).
    await master.send_str(frame("SDP_ANSWER", sent_payloads[2], recipient=viewer_id))
    assert (await receive(viewer))["messagePayload"] == sent_payloads[2]
    await master.send_str(frame("SDP_OFFER", sent_payloads[3], recipient="absent-viewer"))
    await master.send_str(frame("SDP_ANSWER", sent_payloads[4], correlation="no-recipient-1"))
    status = await receive(master)
    assert status["messageType"] == "STATUS_RESPONSE", status
    snap = await feed.until(lambda s: any(e["kind"] == "status_response" for e in s["events"]) and s["buffered"])
    assert snap["buffered"] == [
        {"recipient": "absent-viewer", "sender": None, "messageType": "SDP_OFFER",
         "secondsLeft": snap["buffered"][0]["secondsLeft"]}
    ], snap  # fmt: skip
    assert snap["master"]["messagesIn"] == 3 and snap["viewers"][0]["messagesOut"] == 1, snap
    status_events = [e for e in snap["events"] if e["kind"] == "status_response"]
    assert status_events == [
        {"time": status_events[0]["time"], "kind": "status_response", "role": "MASTER",
         "error_type": "InvalidArgumentException"}
    ], snap["events"]  # fmt: skip

    # The TTL runs out: the buffered message is dropped and disappears from the feed.
    server.advance(21)
    snap = await feed.until(lambda s: not s["buffered"])
    assert snap["master"] is not None and len(snap["viewers"]) == 1, snap

    # Delete the channel: GO_AWAY to both, the record is gone, the feed keeps the events.
    kv.delete_signaling_channel(ChannelARN=arn)
    assert (await receive(master))["messageType"] == "GO_AWAY"
    assert (await receive(viewer))["messageType"] == "GO_AWAY"
    snap = await feed.until(
        lambda s: s["channel"] is None and sum(e["kind"] == "disconnected" for e in s["events"]) == 2
    )
    assert snap["master"] is None and snap["viewers"] == [] and snap["buffered"] == [], snap
    kinds = [(e["kind"], e.get("role"), e.get("client_id")) for e in snap["events"]]
    for expected in [
        ("connected", "VIEWER", viewer_id),
        ("connected", "MASTER", None),
        ("go_away", "MASTER", None),
        ("go_away", "VIEWER", viewer_id),
        ("closed", "MASTER", None),
        ("closed", "VIEWER", viewer_id),
    ]:
        assert expected in kinds, (expected, kinds)
    assert kinds.index(("connected", "VIEWER", viewer_id)) < kinds.index(("go_away", "VIEWER", viewer_id))
    for e in snap["events"]:
        assert set(e) <= EVENT_KEYS, e
    assert {e["reason"] for e in snap["events"] if e["kind"] == "closed"} == {"channel deleted"}
    await master.close()
    await viewer.close()
    feed.response.close()

    # Never a payload: neither the markers nor their base64 appear anywhere in what the feed sent.
    assert len(feed.snapshots) >= 6
    for marker, sent in zip(markers, sent_payloads, strict=True):
        assert marker.encode() not in feed.raw and sent.encode() not in feed.raw, marker
    assert b"messagePayload" not in feed.raw and b"v=0" not in feed.raw


async def test_live_feed_only_shows_its_own_channel(
    open_server: SignaliteServer, web_client: aiohttp.ClientSession
) -> None:
    kv = kv_client(open_server, OPEN_KEY)
    watched = kv.create_signaling_channel(ChannelName=unique())["ChannelARN"]
    other = kv.create_signaling_channel(ChannelName=unique())["ChannelARN"]
    feed = await open_feed(web_client, live_url(open_server, watched))
    ws = await web_client.ws_connect(ws_url(open_server, other, OPEN_KEY, "elsewhere"))
    # Wait until the other channel's connect is recorded, then check that the watched feed ignores it.
    for _ in range(50):
        if any(e.get("channel") == other for e in open_server.server.sockets.recent_events):
            break
        await asyncio.sleep(0.05)
    snap = await feed.next()
    snap = await feed.next()
    assert snap["viewers"] == [] and snap["events"] == [], snap
    await ws.close()
    feed.response.close()


async def test_live_feed_of_an_unknown_channel_is_empty(
    open_server: SignaliteServer, web_client: aiohttp.ClientSession
) -> None:
    arn = f"arn:aws:kinesisvideo:{REGION}:000000000000:channel/never-made/1700000000000"
    feed = await open_feed(web_client, live_url(open_server, arn))
    snap = await feed.next()
    assert snap["channel"] is None and snap["master"] is None and snap["events"] == [], snap
    feed.response.close()


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?channel=",
        "?channel=not-an-arn",
        "?channel=" + quote("arn:aws:kinesisvideo:us-west-2:000000000000:stream/s/1700000000000", safe=""),
    ],
)
def test_live_feed_needs_a_channel_arn(open_server: SignaliteServer, query: str) -> None:
    status, headers, body = raw_get(open_server, "/console/api/live" + query)
    assert status == 400 and headers["x-amzn-errortype"] == "InvalidArgumentException", (status, body)


# -- live feed: strict-mode auth ---------------------------------------------------------------------------------


def auth_failures(server: SignaliteServer, kind: str) -> float:
    text = raw_get(server, "/metrics")[2].decode()
    pattern = rf'^signalite_auth_failures_total\{{[^}}]*kind="{kind}"[^}}]*\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def refused(server: SignaliteServer, url: str, code: str, status: int = 403) -> None:
    before = auth_failures(server, code)
    got, headers, body = raw_get(server, url[len(server.endpoint_url) :])
    assert got == status, (got, body)
    assert headers["x-amzn-errortype"] == code, (headers, body)
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["__type"] == code and error["message"], error
    assert headers["x-amzn-requestid"] != "-", headers
    assert auth_failures(server, code) == before + 1, code


@pytest.fixture(scope="module")
def strict_channels(strict_server: SignaliteServer) -> dict[str, str]:
    kv = kv_client(strict_server, ADMIN)
    return {
        "allowed": kv.create_signaling_channel(ChannelName=unique("allowed"))["ChannelARN"],
        "private": kv.create_signaling_channel(ChannelName=unique("private"))["ChannelARN"],
    }


async def test_strict_feed_accepts_a_presigned_url(
    strict_server: SignaliteServer, strict_channels: dict[str, str], web_client: aiohttp.ClientSession
) -> None:
    for cred, arn in ((ADMIN, strict_channels["private"]), (LIMITED, strict_channels["allowed"])):
        feed = await open_feed(web_client, signed_live_url(strict_server, arn, cred))
        snap = await feed.next()
        assert snap["channelARN"] == arn and snap["channel"]["status"] == "ACTIVE", snap
        feed.response.close()


def js_sign(tmp_path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Sign with the console's own sigv4.js, run by node: {"presign": url} or {"method", "url", "body"}."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: run ./scripts/test, which installs nodejs")
    (tmp_path / "sigv4.mjs").write_text((STATIC_DIR / "sigv4.js").read_text())
    script = tmp_path / "sign.mjs"
    script.write_text(
        "import { presignUrl, signRequest } from './sigv4.mjs';\n"
        "const r = JSON.parse(process.argv[2]);\n"
        "const opts = { credentials: r.credentials, region: r.region };\n"
        "const out = r.presign ? { url: await presignUrl(r.presign, opts) }\n"
        "  : { headers: await signRequest({ ...opts, method: r.method, url: r.url, body: r.body }) };\n"
        "console.log(JSON.stringify(out));\n"
    )
    out = subprocess.run([node, str(script), json.dumps(request)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def js_credentials(cred: Credential) -> dict[str, str]:
    js = {"accessKeyId": cred.access_key_id, "secretAccessKey": cred.secret_access_key}
    if cred.session_token:
        js["sessionToken"] = cred.session_token
    return js


@pytest.mark.parametrize("cred", [ADMIN, TOKEN], ids=["key", "key+session-token"])
async def test_strict_mode_accepts_the_pages_own_signatures(
    strict_server: SignaliteServer,
    strict_channels: dict[str, str],
    web_client: aiohttp.ClientSession,
    tmp_path: Path,
    cred: Credential,
) -> None:
    """The console's sigv4.js presigns a live-feed URL and header-signs a control-plane call the server accepts."""
    arn = strict_channels["private"]
    signed = js_sign(tmp_path, {"presign": live_url(strict_server, arn), "credentials": js_credentials(cred),
                                "region": REGION})  # fmt: skip
    url = signed["url"]
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=299" in url, url
    assert ("X-Amz-Security-Token=" in url) == (cred.session_token is not None), url
    feed = await open_feed(web_client, url)
    assert (await feed.next())["channelARN"] == arn
    feed.response.close()

    body = json.dumps({"ChannelARN": arn})
    endpoint = f"{strict_server.endpoint_url}/describeSignalingChannel"
    signed = js_sign(tmp_path, {"method": "POST", "url": endpoint, "body": body, "credentials": js_credentials(cred),
                                "region": REGION})  # fmt: skip
    headers = {"Content-Type": "application/json", **signed["headers"]}
    async with web_client.post(endpoint, data=body.encode(), headers=headers) as response:
        answer = await response.json()
        assert response.status == 200, answer
    assert answer["ChannelInfo"]["ChannelARN"] == arn
    # The same signature does not cover another body.
    other = json.dumps({"ChannelARN": strict_channels["allowed"]}).encode()
    async with web_client.post(endpoint, data=other, headers=headers) as response:
        assert response.status == 403 and response.headers["x-amzn-ErrorType"] == "InvalidSignatureException"


def test_strict_feed_refuses_missing_and_bad_signatures(
    strict_server: SignaliteServer, strict_channels: dict[str, str]
) -> None:
    server = strict_server
    arn = strict_channels["private"]
    refused(server, live_url(server, arn), "MissingAuthenticationTokenException")
    good = signed_live_url(server, arn, ADMIN)
    # The channel is signed with the rest: pointing a signed URL at another channel breaks the signature.
    other = quote(strict_channels["allowed"], safe="")
    refused(server, good.replace(quote(arn, safe=""), other), "InvalidSignatureException")
    tampered = re.sub(r"X-Amz-Signature=([0-9a-f])", lambda m: "X-Amz-Signature=" + "0123456789abcdef"[
        (int(m.group(1), 16) + 1) % 16], good)  # fmt: skip
    refused(server, tampered, "InvalidSignatureException")
    wrong_secret = Credential(ADMIN.access_key_id, "not-the-secret", ADMIN.account_id)
    refused(server, signed_live_url(server, arn, wrong_secret), "InvalidSignatureException")
    unknown = Credential("AKIDNOBODYKNOWS", "whatever", ADMIN.account_id)
    refused(server, signed_live_url(server, arn, unknown), "UnrecognizedClientException")
    stale = signed_live_url(server, arn, ADMIN, now=server.clock.time() - 400, expires=60)
    refused(server, stale, "AccessDeniedException")
    wrong_service = signed_live_url(server, arn, ADMIN, service="s3")
    refused(server, wrong_service, "InvalidSignatureException")


def test_strict_feed_enforces_policy_and_account(
    strict_server: SignaliteServer, strict_channels: dict[str, str]
) -> None:
    server = strict_server
    # LIMITED may DescribeSignalingChannel on allowed-* only.
    refused(server, signed_live_url(server, strict_channels["private"], LIMITED), "AccessDeniedException")
    # A key of another account sees nothing of this account's channels.
    refused(server, signed_live_url(server, strict_channels["private"], STRANGER), "AccessDeniedException")
    refused(server, signed_live_url(server, strict_channels["allowed"], STRANGER), "AccessDeniedException")


def test_strict_feed_refusals_never_echo_secrets(
    strict_server: SignaliteServer, strict_channels: dict[str, str]
) -> None:
    url = signed_live_url(strict_server, strict_channels["private"], Credential(ADMIN.access_key_id, "bad", "1" * 12))
    signature = url.rsplit("X-Amz-Signature=", 1)[1]
    _, _, body = raw_get(strict_server, url[len(strict_server.endpoint_url) :])
    for secret in (ADMIN.secret_access_key, LIMITED.secret_access_key, signature):
        assert secret.encode() not in body, body


async def test_live_feeds_are_capped_per_node(open_server: SignaliteServer, web_client: aiohttp.ClientSession) -> None:
    console = open_server.server.console
    arn = f"arn:aws:kinesisvideo:{REGION}:000000000000:channel/capped/1700000000000"

    async def set_cap(value: int) -> None:
        console.max_feeds = value

    baseline = console.live_feeds  # feeds other tests may still have open
    open_server.call(lambda: set_cap(baseline + 1))
    try:
        feed = await open_feed(web_client, live_url(open_server, arn))
        await feed.next()
        status, headers, _ = raw_get(open_server, live_url(open_server, arn)[len(open_server.endpoint_url) :])
        assert status == 503 and headers["x-amzn-errortype"] == "ServiceUnavailableException", (status, headers)
        feed.response.close()
        for _ in range(100):  # the server notices the closed stream at its next write
            if console.live_feeds == baseline:
                break
            await asyncio.sleep(0.05)
        assert console.live_feeds == baseline
        again = await open_feed(web_client, live_url(open_server, arn))  # a slot is free again
        again.response.close()
    finally:
        open_server.call(lambda: set_cap(200))
