"""TLS (issue 3, item 6) and CORS for browsers (item 5).

`--tls self-signed` creates a CA at `<data-dir>/tls/ca.pem`; clients that trust it reach HTTPS and WSS on
the one port, and GetSignalingChannelEndpoint hands out `https://` and `wss://`. `--tls-cert/--tls-key`
do the same with a given certificate. The REST surfaces answer CORS preflights for the headers the AWS
SDKs send and expose the AWS response headers, on errors too.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import botocore.exceptions
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wsutil import (
    BOTO_CONFIG,
    CREDENTIALS,
    REGION,
    Harness,
    barrier,
    connect,
    frame,
    in_process,
    left_in_cycles,
    missing_arn,
    recv_json,
    running,
    sdp_payload,
    subprocess_server,
    wait_connections,
)

ORIGIN = "http://app.example.test:8080"
SDK_HEADERS = [
    "authorization",
    "content-type",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-user-agent",
    "x-amz-content-sha256",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def tls() -> Iterator[Harness]:
    server = in_process({"tls": "self-signed"})
    try:
        ca = server.data_dir / "tls" / "ca.pem"
        assert ca.is_file(), f"--tls self-signed wrote no CA at {ca}"
        yield Harness(server, verify=str(ca))
    finally:
        server.stop()


def ca_context(h: Harness) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(h.verify))


# -- TLS ------------------------------------------------------------------------------------------------------


def test_self_signed_endpoints_are_https_and_wss(tls: Harness) -> None:
    assert tls.server.endpoint_url.startswith("https://")
    arn = tls.create_channel()  # the control plane over HTTPS, verified with the CA
    for role in ("MASTER", "VIEWER"):
        endpoints = tls.endpoints(arn, role)
        assert endpoints["WSS"].startswith("wss://"), endpoints
        assert endpoints["HTTPS"].startswith("https://"), endpoints
        assert "?" not in endpoints["WSS"]  # the JS SDK refuses endpoints with a query


def test_https_needs_the_ca(tls: Harness) -> None:
    arn = tls.create_channel()
    # Verified with the CA: the signaling API on the HTTPS endpoint works.
    assert tls.signaling(arn).get_ice_server_config(ChannelARN=arn)["IceServerList"] == []
    # Python's ssl with the CA file, on both names the certificate carries.
    for host in ("127.0.0.1", "localhost"):
        conn = http.client.HTTPSConnection(host, tls.port, context=ca_context(tls), timeout=10)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["status"] == "ok"
        finally:
            conn.close()
    # Not trusting the CA, the handshake fails: this is real TLS with a certificate from that CA.
    untrusting = boto3.client(
        "kinesisvideo", endpoint_url=tls.server.endpoint_url, region_name=REGION, config=BOTO_CONFIG, **CREDENTIALS
    )
    with pytest.raises(botocore.exceptions.SSLError):
        untrusting.list_signaling_channels()


async def test_wss_connects_with_the_ca(tls: Harness, session: aiohttp.ClientSession) -> None:
    arn = tls.create_channel()
    context = ca_context(tls)
    master = await connect(session, tls.ws_url(arn, base=tls.endpoints(arn, "MASTER")["WSS"]), ssl=context)
    viewer = await connect(session, tls.ws_url(arn, "v1", base=tls.endpoints(arn, "VIEWER")["WSS"]), ssl=context)
    offer = sdp_payload()
    await viewer.send_str(frame("SDP_OFFER", offer))
    assert await recv_json(master) == {"senderClientId": "v1", "messageType": "SDP_OFFER", "messagePayload": offer}
    answer = sdp_payload("answer")
    await master.send_str(frame("SDP_ANSWER", answer, recipient="v1"))
    assert (await recv_json(viewer))["messagePayload"] == answer
    await barrier(master)

    async def stacks() -> list[str]:
        return [type(c.ws).__name__ for c in tls.server.server.sockets.connections.values()]

    assert tls.server.call(stacks) == ["FastSocket", "FastSocket"]  # picows over TLS (web/fastws.py)
    # Without the CA the WSS handshake is refused by the client.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await connect(session, tls.ws_url(arn, "v2"))
    # WSS refusals still carry the AWS error.
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await connect(session, tls.ws_url(missing_arn("gone"), "v3"), ssl=context)
    assert info.value.status == 404


async def test_finished_wss_sessions_leave_nothing_to_the_cycle_collector() -> None:
    # The SSL layer keeps bound methods of picows's protocol, and picows's transport those of the
    # SSL transport: unless web/fastws.py breaks that loop when a socket ends, every TLS session's
    # objects (ours included) wait for the cycle collector. (This loop is asyncio's; the server's
    # uvloop has the same SSL layer and the same loop.)
    server = in_process({"tls": "self-signed", "limits": "off"})
    try:
        h = Harness(server, verify=str(server.data_dir / "tls" / "ca.pem"))
        arn = h.create_channel()
        context = ca_context(h)
        viewer_base = h.endpoints(arn, "VIEWER")["WSS"]
        async with aiohttp.ClientSession() as session:
            master = await connect(session, h.ws_url(arn, base=h.endpoints(arn, "MASTER")["WSS"]), ssl=context)

            async def one_session(cid: str) -> None:
                viewer = await connect(session, h.ws_url(arn, cid, base=viewer_base), ssl=context)
                await viewer.send_str(frame("SDP_OFFER", sdp_payload()))
                await recv_json(master)
                await viewer.close()

            await one_session("warm")
            with left_in_cycles(("signalite", "picows")) as left:
                for i in range(3):
                    await one_session(f"v{i}")
                await barrier(master)
                await wait_connections(h, 1)
            assert left == []
            await master.close()
    finally:
        server.stop()


async def test_tls_cert_and_key_flags(tls: Harness, session: aiohttp.ClientSession) -> None:
    """--tls-cert/--tls-key with a certificate of our own (here: the one the self-signed mode made)."""
    folder = tls.server.data_dir / "tls"
    server = in_process({"tls_cert": str(folder / "server.pem"), "tls_key": str(folder / "server.key")})
    try:
        h = Harness(server, verify=tls.verify)
        assert server.endpoint_url.startswith("https://")
        assert not (server.data_dir / "tls" / "ca.pem").exists()  # nothing generated
        arn = h.create_channel()
        endpoints = h.endpoints(arn)
        assert endpoints["WSS"].startswith("wss://") and endpoints["HTTPS"].startswith("https://"), endpoints
        master = await connect(session, h.ws_url(arn, base=endpoints["WSS"]), ssl=ca_context(h))
        await barrier(master)
        await master.close()
    finally:
        server.stop()


def test_serve_prints_the_ca_path(tmp_path: Path) -> None:
    server, log = subprocess_server(["--tls", "self-signed"], data_dir=tmp_path / "data")
    try:
        ca = tmp_path / "data" / "tls" / "ca.pem"
        log.wait_for("listening on https://")
        line = log.lines[log.wait_for(str(ca.name))]
        assert str(ca) in line or str(ca.resolve()) in line, log.text()
        assert ca.is_file()
        h = Harness(server, verify=str(ca))
        arn = h.create_channel()
        assert h.endpoints(arn)["WSS"].startswith("wss://")
    finally:
        server.stop()


# -- CORS -------------------------------------------------------------------------------------------------------


@pytest.fixture
def h() -> Iterator[Harness]:
    with running() as harness:
        yield harness


def request(
    h: Harness, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",") if item.strip()}


@pytest.mark.parametrize(
    "path",
    ["/createSignalingChannel", "/describeSignalingChannel", "/getSignalingChannelEndpoint",
     "/v1/get-ice-server-config", "/v1/send-alexa-offer-to-master"],
)  # fmt: skip
def test_cors_preflight_allows_the_aws_sdk_headers(h: Harness, path: str) -> None:
    status, headers, _ = request(
        h,
        "OPTIONS",
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": ",".join(SDK_HEADERS),
        },
    )
    assert status == 200, (status, headers)
    assert headers.get("access-control-allow-origin") in (ORIGIN, "*"), headers
    assert "POST" in {m.upper() for m in listed(headers.get("access-control-allow-methods", ""))}, headers
    allowed = listed(headers.get("access-control-allow-headers", ""))
    missing = [name for name in SDK_HEADERS if name not in allowed]
    assert not missing, f"preflight does not allow {missing}: {headers}"


def test_cors_preflight_without_requested_headers_still_allows_the_sdk_headers(h: Harness) -> None:
    status, headers, _ = request(
        h, "OPTIONS", "/listSignalingChannels", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert status == 200
    assert headers.get("access-control-allow-origin") in (ORIGIN, "*")
    allowed = listed(headers.get("access-control-allow-headers", ""))
    assert not [name for name in SDK_HEADERS if name not in allowed], headers


def assert_cors(headers: dict[str, str]) -> None:
    assert headers.get("access-control-allow-origin") in (ORIGIN, "*"), headers
    exposed = listed(headers.get("access-control-expose-headers", ""))
    assert {"x-amzn-requestid", "x-amzn-errortype"} <= exposed, headers


def test_cors_headers_on_success(h: Harness) -> None:
    status, headers, body = request(
        h,
        "POST",
        "/createSignalingChannel",
        {"ChannelName": "cors-channel"},
        {"Origin": ORIGIN, "Content-Type": "application/json"},
    )
    assert status == 200, body
    assert_cors(headers)
    assert headers.get("x-amzn-requestid")
    arn = json.loads(body)["ChannelARN"]
    status, headers, body = request(
        h,
        "POST",
        "/v1/get-ice-server-config",
        {"ChannelARN": arn},
        {"Origin": ORIGIN, "Content-Type": "application/json"},
    )
    assert status == 200, body
    assert_cors(headers)


@pytest.mark.parametrize(
    ("path", "body", "status", "error_type"),
    [
        ("/describeSignalingChannel", {"ChannelName": "no-such-channel"}, 404, "ResourceNotFoundException"),
        ("/createSignalingChannel", {"ChannelName": "bad name!"}, 400, "InvalidArgumentException"),
        ("/v1/get-ice-server-config", {"ChannelARN": missing_arn()}, 404, "ResourceNotFoundException"),
        ("/noSuchOperation", {}, 404, None),
    ],
)
def test_cors_headers_on_errors(h: Harness, path: str, body: Any, status: int, error_type: str | None) -> None:
    got, headers, data = request(h, "POST", path, body, {"Origin": ORIGIN, "Content-Type": "application/json"})
    if error_type is not None:
        assert got == status, (got, data)
        assert headers.get("x-amzn-errortype", "").split(":")[0] == error_type, headers
    else:
        assert got >= 400 and headers.get("x-amzn-errortype"), (got, headers)
    assert_cors(headers)
