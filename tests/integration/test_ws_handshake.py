"""ConnectAsMaster / ConnectAsViewer handshakes: what is accepted, and every refusal of kvs-protocol.md §5.3
with its HTTP status, AWS error JSON and x-amzn-ErrorType header; the viewer cap and the connect rate,
driven by the server's shifted clock instead of sleeping.
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wsutil import (
    CREDENTIALS,
    REGION,
    Harness,
    assert_refused,
    connect,
    expect_close,
    frame,
    handshake,
    missing_arn,
    raw_upgrade,
    recv_json,
    running,
    sdp_payload,
    wait_connections,
)


@pytest.fixture(params=["auto", "aiohttp"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    # Every test runs on both WebSocket paths: picows (ordinary upgrades) and aiohttp (web/fastws.py).
    with running({"limits": "aws", "websocket_stack": request.param}) as harness:
        yield harness


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# -- accepted ---------------------------------------------------------------------------------------


async def test_master_and_viewer_connect_on_the_endpoints_handed_out(
    h: Harness, session: aiohttp.ClientSession
) -> None:
    arn = h.create_channel()
    master_ep = h.endpoints(arn, "MASTER")
    viewer_ep = h.endpoints(arn, "VIEWER")
    assert master_ep["WSS"].startswith("ws://") and viewer_ep["WSS"].startswith("ws://")
    master = await connect(session, h.ws_url(arn, base=master_ep["WSS"]))
    viewer = await connect(session, h.ws_url(arn, "viewer-1", base=viewer_ep["WSS"]))
    payload = sdp_payload()
    await viewer.send_str(frame("SDP_OFFER", payload))
    got = await recv_json(master)
    assert got == {"senderClientId": "viewer-1", "messageType": "SDP_OFFER", "messagePayload": payload}


async def test_sigv4_presigned_query_is_accepted(h: Harness, session: aiohttp.ClientSession) -> None:
    """The URL a KVS SDK builds: X-Amz-ChannelARN/ClientId plus the SigV4 presign parameters."""
    arn = h.create_channel()
    creds = botocore.credentials.Credentials(
        CREDENTIALS["aws_access_key_id"], CREDENTIALS["aws_secret_access_key"], "session-token-x"
    )

    def presign(client_id: str | None) -> str:
        request = botocore.awsrequest.AWSRequest(method="GET", url=h.ws_url(arn, client_id))
        botocore.auth.SigV4QueryAuth(creds, "kinesisvideo", REGION, expires=299).add_auth(request)
        url = str(request.url)
        for name in ("X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "X-Amz-Expires"):
            assert name in url, url
        return url

    master = await connect(session, presign(None))
    viewer = await connect(session, presign("presigned-viewer"))
    payload = sdp_payload()
    await viewer.send_str(frame("SDP_OFFER", payload))
    assert (await recv_json(master))["senderClientId"] == "presigned-viewer"


@pytest.mark.parametrize("client_id", ["a" * 256, "AWSx", "x_AWS_", "A-b.c_9", "aws", "AWS-x"])
def test_valid_client_ids_are_accepted(h: Harness, client_id: str) -> None:
    arn = h.create_channel()
    status, headers, _ = handshake(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": client_id})
    assert status == 101, (status, headers)


# -- refused: bad parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arn",
    [
        "not-an-arn",
        "",
        "arn:aws:kinesisvideo:us-west-2:000000000000:channel/demo",  # no creation time
        "arn:aws:kinesisvideo:us-west-2:000000000000:channel/de mo/1700000000000",
        "arn:aws:kinesisvideo:us-west-2:0000x0000000:channel/demo/1700000000000",
    ],
)
@pytest.mark.parametrize("client_id", [None, "viewer-1"])
def test_bad_channel_arn_is_invalid_argument(h: Harness, arn: str, client_id: str | None) -> None:
    query = {"X-Amz-ChannelARN": arn}
    if client_id is not None:
        query["X-Amz-ClientId"] = client_id
    assert_refused(handshake(h.port, query), 400, "InvalidArgumentException")


@pytest.mark.parametrize("query", [{}, {"X-Amz-ClientId": "viewer-1"}])
def test_missing_channel_arn_is_invalid_argument(h: Harness, query: dict[str, str]) -> None:
    h.create_channel()
    assert_refused(handshake(h.port, query), 400, "InvalidArgumentException")


@pytest.mark.parametrize(
    "client_id",
    [
        "",  # 1..256 characters
        "a" * 257,
        "bad id",
        "bad/id",
        "bad%id",
        "émile",
        "AWS_viewer",  # the AWS_ prefix is reserved, in any letter case
        "aws_viewer",
        "Aws_viewer",
        "AWS_",
    ],
)
def test_bad_client_id_is_invalid_argument(h: Harness, client_id: str) -> None:
    arn = h.create_channel()
    body = assert_refused(
        handshake(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": client_id}), 400, "InvalidArgumentException"
    )
    assert "clientid" in (body.get("message") or body.get("Message", "")).lower(), body


async def test_aiohttp_client_sees_the_refusal_status(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await connect(session, h.ws_url(arn, "AWS_nope"))
    assert info.value.status == 400
    assert info.value.headers is not None
    assert info.value.headers.get("x-amzn-ErrorType", "").startswith("InvalidArgumentException")


# -- refused: no such channel ---------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", [None, "viewer-1"])
def test_unknown_channel_is_not_found(h: Harness, client_id: str | None) -> None:
    h.create_channel()
    query = {"X-Amz-ChannelARN": missing_arn("never-created")}
    if client_id is not None:
        query["X-Amz-ClientId"] = client_id
    assert_refused(handshake(h.port, query), 404, "ResourceNotFoundException")


def test_channel_arn_with_wrong_creation_time_is_not_found(h: Harness) -> None:
    arn = h.create_channel("same-name")
    prefix, created = arn.rsplit("/", 1)
    other = f"{prefix}/{int(created) + 1}"
    assert_refused(handshake(h.port, {"X-Amz-ChannelARN": other}), 404, "ResourceNotFoundException")


@pytest.mark.parametrize("client_id", [None, "viewer-1"])
def test_deleted_channel_is_not_found(h: Harness, client_id: str | None) -> None:
    arn = h.create_channel()
    query = {"X-Amz-ChannelARN": arn}
    if client_id is not None:
        query["X-Amz-ClientId"] = client_id
    assert handshake(h.port, query)[0] == 101
    h.delete_channel(arn)
    assert_refused(handshake(h.port, query), 404, "ResourceNotFoundException")


# -- refused: limits -------------------------------------------------------------------------------------


async def test_eleventh_viewer_is_refused(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn))
    viewers = {}
    for i in range(10):
        if i and i % 3 == 0:
            h.advance(1.0)  # stay under the 3 connects/s rate; only the cap is under test
        viewers[f"v{i}"] = await connect(session, h.ws_url(arn, f"v{i}"))
    h.advance(1.0)
    body = assert_refused(
        handshake(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": "v10"}), 400, "ClientLimitExceededException"
    )
    assert body
    # The ten are untouched, and the master still hears each of them.
    for cid, ws in viewers.items():
        payload = sdp_payload(tag=cid)
        await ws.send_str(frame("SDP_OFFER", payload))
        got = await recv_json(master)
        assert got == {"senderClientId": cid, "messageType": "SDP_OFFER", "messagePayload": payload}

    # A viewer that reconnects with a ClientId in use takes its place even when the channel is full.
    replacement = await connect(session, h.ws_url(arn, "v3"))
    assert await expect_close(viewers["v3"]) is not None
    payload = sdp_payload(tag="replacement")
    await replacement.send_str(frame("SDP_OFFER", payload))
    assert (await recv_json(master))["messagePayload"] == payload

    # Once one leaves there is room again.
    h.advance(1.0)
    await viewers["v0"].close()
    await wait_connections(h, 10)  # master + 9 viewers
    assert handshake(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": "v10"})[0] == 101


async def test_fourth_viewer_connect_within_a_second_is_refused(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel()
    for i in range(3):
        assert handshake(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": f"v{i}"})[0] == 101
    assert_refused(
        handshake(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": "v3"}), 400, "ClientLimitExceededException"
    )
    h.advance(1.0)
    assert handshake(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": "v3"})[0] == 101


async def test_fourth_master_connect_within_a_second_is_refused(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel()
    for _ in range(3):
        assert handshake(h.port, {"X-Amz-ChannelARN": arn})[0] == 101
    assert_refused(handshake(h.port, {"X-Amz-ChannelARN": arn}), 400, "ClientLimitExceededException")
    # ConnectAsViewer is another API with its own per-channel rate.
    assert handshake(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": "v1"})[0] == 101
    h.advance(1.0)
    assert handshake(h.port, {"X-Amz-ChannelARN": arn})[0] == 101


async def test_connect_rate_is_per_channel(h: Harness) -> None:
    first, second = h.create_channel(), h.create_channel()
    for i in range(3):
        assert handshake(h.port, {"X-Amz-ChannelARN": first, "X-Amz-ClientId": f"v{i}"})[0] == 101
    assert handshake(h.port, {"X-Amz-ChannelARN": first, "X-Amz-ClientId": "v3"})[0] == 400
    assert handshake(h.port, {"X-Amz-ChannelARN": second, "X-Amz-ClientId": "v3"})[0] == 101


def test_limits_off_lifts_viewer_cap_and_connect_rate() -> None:
    with running({"limits": "off"}) as h:
        arn = h.create_channel()
        for _ in range(5):
            assert handshake(h.port, {"X-Amz-ChannelARN": arn})[0] == 101
        for i in range(15):
            assert handshake(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": f"v{i}"})[0] == 101


def test_limits_relaxed_raises_the_viewer_cap() -> None:
    with running({"limits": "relaxed"}) as h:
        arn = h.create_channel()
        for i in range(12):
            assert handshake(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": f"v{i}"})[0] == 101


# -- which stack serves a socket (web/fastws.py) ------------------------------------------------------


def _stacks(h: Harness) -> list[str]:
    async def kinds() -> list[str]:
        return [type(c.ws).__name__ for c in h.server.server.sockets.connections.values()]

    return sorted(h.server.call(kinds))


async def test_an_upgrade_after_other_requests_on_the_connection_is_served_by_aiohttp(h: Harness) -> None:
    # Only a connection's first request can skip aiohttp; a later upgrade on a kept-alive connection
    # is aiohttp's, and works the same.
    arn = h.create_channel()
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{h.port}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        match = re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", head)
        assert match is not None, head
        length = int(match.group(1))
        while len(body) < length:
            body += sock.recv(4096)
        raw_upgrade(sock, h.port, {"X-Amz-ChannelARN": arn})
        await wait_connections(h, 1)
        assert _stacks(h) == ["_SignalingWebSocket"]
        async with aiohttp.ClientSession() as session:
            viewer = await session.ws_connect(h.ws_url(arn, "v1"))
            await wait_connections(h, 2)
            expected = "FastSocket" if h.server.server.settings.websocket_stack == "auto" else "_SignalingWebSocket"
            assert _stacks(h) == sorted(["_SignalingWebSocket", expected])
            await viewer.close()
