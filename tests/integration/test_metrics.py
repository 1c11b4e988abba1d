"""`/metrics` moves with what happens: scraped before and after each step of real REST calls and WebSocket sessions.

In-process servers (`SignaliteServer`): an open-mode one with AWS's limits (so the SDP rate limit answers with
STATUS_RESPONSE ClientLimitExceededException) and a strict-mode one for authentication failures. Each check
compares two scrapes, so the tests don't depend on what ran before them on the same server.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import boto3
import botocore.config
import botocore.exceptions
import pytest

from signalite.auth.sigv4 import Credential, presign_url
from signalite.testing import SignaliteServer

REGION = "us-west-2"
KEY = Credential("AKIDMETRICSTEST", "metrics-test-secret-0123", "000000000000")
STRICT = Credential("AKIDMETRICSSTRICT", "metrics-strict-secret-4567", "123456789012")
READONLY = Credential("AKIDMETRICSREAD", "metrics-readonly-secret-89ab", "123456789012")
BOTO = botocore.config.Config(retries={"max_attempts": 1})
NODE = "metrics-node-1"

_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Scrape:
    """One parsed /metrics answer: `scrape.value("name", label=value, ...)` sums the matching series."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.series: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SERIES.match(line)
            assert m is not None, f"not Prometheus text format: {line!r}"
            self.series.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))

    def value(self, name: str, **labels: str) -> float:
        return sum(v for n, lab, v in self.series if n == name and all(lab.get(k) == x for k, x in labels.items()))

    def has(self, name: str, **labels: str) -> bool:
        return any(n == name and all(lab.get(k) == x for k, x in labels.items()) for n, lab, _ in self.series)


def scrape(server: SignaliteServer) -> Scrape:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200, body
        assert response.getheader("Content-Type", "").startswith("text/plain; version="), response.getheaders()
        return Scrape(body)
    finally:
        conn.close()


class Delta:
    """The change of every series between two scrapes: `delta("name", label=...)`."""

    def __init__(self, before: Scrape, after: Scrape) -> None:
        self.before = before
        self.after = after

    def __call__(self, name: str, **labels: str) -> float:
        return self.after.value(name, **labels) - self.before.value(name, **labels)


def kv_client(server: SignaliteServer, cred: Credential) -> Any:
    return boto3.client(
        "kinesisvideo", endpoint_url=server.endpoint_url, region_name=REGION, config=BOTO,
        aws_access_key_id=cred.access_key_id, aws_secret_access_key=cred.secret_access_key,
    )  # fmt: skip


def ws_url(server: SignaliteServer, arn: str, cred: Credential, client_id: str | None = None) -> str:
    url = f"ws://127.0.0.1:{server.port}/?X-Amz-ChannelARN={quote(arn, safe='')}"
    if client_id is not None:
        url += f"&X-Amz-ClientId={client_id}"
    return presign_url(url, cred, REGION, server.clock.time())


def payload(n: int) -> str:
    return base64.b64encode(json.dumps({"type": "offer", "sdp": f"v=0\r\ns=m{n}\r\n"}).encode()).decode()


def frame(action: str, n: int, recipient: str | None = None, correlation: str | None = None) -> str:
    obj: dict[str, Any] = {"action": action, "messagePayload": payload(n)}
    if recipient is not None:
        obj["recipientClientId"] = recipient
    if correlation is not None:
        obj["correlationId"] = correlation
    return json.dumps(obj)


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    msg = await ws.receive(timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def barrier(ws: aiohttp.ClientWebSocketResponse, tag: str) -> list[dict[str, Any]]:
    """Send a frame the server always refuses (with a correlationId) and return every frame up to its answer.

    A connection's frames are handled in order, so once the answer arrives everything sent before it has
    been processed (and counted)."""
    await ws.send_str(json.dumps({"action": "NOT_AN_ACTION", "messagePayload": "eA==", "correlationId": tag}))
    seen = []
    while True:
        message = await receive(ws)
        if message.get("messageType") == "STATUS_RESPONSE" and message["statusResponse"]["correlationId"] == tag:
            return seen
        seen.append(message)


@pytest.fixture(scope="module")
def server() -> Iterator[SignaliteServer]:
    with SignaliteServer(settings={"node_id": NODE}) as running:  # --limits aws: SDP rate 5/s per connection
        yield running


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignaliteServer]:
    path: Path = tmp_path_factory.mktemp("metrics-strict") / "credentials.json"
    readonly_policy = {"Statement": [{"Effect": "Allow", "Action": ["kinesisvideo:Describe*", "kinesisvideo:List*"]}]}
    path.write_text(
        json.dumps(
            {
                "credentials": [
                    {"access_key_id": STRICT.access_key_id, "secret_access_key": STRICT.secret_access_key,
                     "account_id": STRICT.account_id},
                    {"access_key_id": READONLY.access_key_id, "secret_access_key": READONLY.secret_access_key,
                     "account_id": READONLY.account_id, "policy": readonly_policy},
                ]
            }
        )
    )  # fmt: skip
    with SignaliteServer(settings={"credentials": str(path), "node_id": "metrics-strict", "limits": "off"}) as running:
        yield running


@pytest.fixture
async def web_client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def test_every_series_carries_the_node_label(server: SignaliteServer) -> None:
    kv_client(server, KEY).list_signaling_channels()
    metrics = scrape(server)
    names = {name for name, _, _ in metrics.series}
    for expected in (
        "signalite_connections", "signalite_connects_total", "signalite_messages_relayed_total",
        "signalite_buffered_messages", "signalite_messages_buffered_total", "signalite_ttl_drops_total",
        "signalite_go_aways_total", "signalite_requests_total", "signalite_request_duration_seconds_bucket",
        "signalite_request_duration_seconds_count",
    ):  # fmt: skip
        assert expected in names, (expected, sorted(names))
    for name, labels, _ in metrics.series:
        if name.startswith("signalite_"):
            assert labels.get("node") == NODE, (name, labels)


def test_control_plane_requests_by_operation_and_status(server: SignaliteServer) -> None:
    kv = kv_client(server, KEY)
    before = scrape(server)
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    arn = kv.create_signaling_channel(ChannelName=name)["ChannelARN"]
    kv.describe_signaling_channel(ChannelARN=arn)
    kv.describe_signaling_channel(ChannelARN=arn)
    with pytest.raises(botocore.exceptions.ClientError):
        kv.describe_signaling_channel(ChannelName=f"{name}-missing")
    with pytest.raises(botocore.exceptions.ClientError):
        kv.create_signaling_channel(ChannelName=name)  # ResourceInUseException, 400
    kv.delete_signaling_channel(ChannelARN=arn)
    d = Delta(before, scrape(server))
    assert d("signalite_requests_total", operation="CreateSignalingChannel", status="200") == 1
    assert d("signalite_requests_total", operation="CreateSignalingChannel", status="400") == 1
    assert d("signalite_requests_total", operation="DescribeSignalingChannel", status="200") == 2
    assert d("signalite_requests_total", operation="DescribeSignalingChannel", status="404") == 1
    assert d("signalite_requests_total", operation="DeleteSignalingChannel", status="200") == 1
    # The latency histogram counts every answer of an operation, whatever its status.
    assert d("signalite_request_duration_seconds_count", operation="DescribeSignalingChannel") == 3
    assert d("signalite_request_duration_seconds_count", operation="CreateSignalingChannel") == 2
    assert d("signalite_request_duration_seconds_bucket", operation="DescribeSignalingChannel", le="+Inf") == 3
    after = d.after
    buckets = sorted(
        (float(lab["le"]), v) for n, lab, v in after.series
        if n == "signalite_request_duration_seconds_bucket" and lab.get("operation") == "DescribeSignalingChannel"
    )  # fmt: skip
    assert [v for _, v in buckets] == sorted(v for _, v in buckets), buckets  # cumulative
    assert after.value("signalite_request_duration_seconds_sum", operation="DescribeSignalingChannel") > 0
    # Open mode: nothing was refused for authentication.
    assert d("signalite_auth_failures_total") == 0


async def test_a_signaling_session_moves_the_counters(
    server: SignaliteServer, web_client: aiohttp.ClientSession
) -> None:
    kv = kv_client(server, KEY)
    arn = kv.create_signaling_channel(
        ChannelName=f"metrics-{uuid.uuid4().hex[:8]}", SingleMasterConfiguration={"MessageTtlSeconds": 10}
    )["ChannelARN"]
    base = scrape(server)

    # Connections by role.
    master = await web_client.ws_connect(ws_url(server, arn, KEY))
    viewer = await web_client.ws_connect(ws_url(server, arn, KEY, "metrics-viewer"))
    await barrier(master, "b0")
    await barrier(viewer, "b1")
    step = scrape(server)
    d = Delta(base, step)
    assert d("signalite_connects_total") == 2
    assert d("signalite_connections", role="master") == 1 and d("signalite_connections", role="viewer") == 1

    # Messages relayed by type: one offer, one answer, three candidates each way.
    await viewer.send_str(frame("SDP_OFFER", 1))
    assert (await receive(master))["messageType"] == "SDP_OFFER"
    await master.send_str(frame("SDP_ANSWER", 2, recipient="metrics-viewer"))
    assert (await receive(viewer))["messageType"] == "SDP_ANSWER"
    for n in range(3):
        await viewer.send_str(frame("ICE_CANDIDATE", 10 + n))
        await master.send_str(frame("ICE_CANDIDATE", 20 + n, recipient="metrics-viewer"))
    for _ in range(3):
        assert (await receive(master))["messageType"] == "ICE_CANDIDATE"
        assert (await receive(viewer))["messageType"] == "ICE_CANDIDATE"
    previous, step = step, scrape(server)
    d = Delta(previous, step)
    assert d("signalite_messages_relayed_total", type="SDP_OFFER") == 1
    assert d("signalite_messages_relayed_total", type="SDP_ANSWER") == 1
    assert d("signalite_messages_relayed_total", type="ICE_CANDIDATE") == 6
    assert d("signalite_messages_buffered_total") == 0

    # Buffered for an absent viewer, then dropped when the TTL runs out.
    await master.send_str(frame("SDP_OFFER", 3, recipient="metrics-absent"))
    await master.send_str(frame("ICE_CANDIDATE", 4, recipient="metrics-absent"))
    await barrier(master, "b2")
    previous, step = step, scrape(server)
    d = Delta(previous, step)
    assert d("signalite_messages_buffered_total") == 2
    assert d("signalite_buffered_messages") == 2 and d("signalite_ttl_drops_total") == 0
    server.advance(11)
    previous, step = step, scrape(server)
    d = Delta(previous, step)
    assert d("signalite_ttl_drops_total") == 2 and d("signalite_buffered_messages") == -2

    # STATUS_RESPONSE by error type: a master frame without recipient, then over the SDP rate (5/s, AWS's).
    await master.send_str(frame("SDP_OFFER", 5, correlation="no-recipient"))
    status = await receive(master)
    assert status["statusResponse"]["errorType"] == "InvalidArgumentException", status
    for n in range(12):
        await viewer.send_str(frame("SDP_OFFER", 100 + n, correlation=f"burst-{n}"))
    answers = await barrier(viewer, "b3")
    limited = [m for m in answers if m["statusResponse"]["errorType"] == "ClientLimitExceededException"]
    assert limited and len(limited) == len(answers), answers
    delivered = [m for m in await barrier(master, "b4") if m.get("messageType") == "SDP_OFFER"]
    assert len(delivered) + len(limited) == 12, (len(delivered), len(limited))
    previous, step = step, scrape(server)
    d = Delta(previous, step)
    assert d("signalite_status_responses_total", error_type="InvalidArgumentException") == 1 + 2  # + 2 barriers
    assert d("signalite_status_responses_total", error_type="ClientLimitExceededException") == len(limited)
    assert d("signalite_messages_relayed_total", type="SDP_OFFER") == len(delivered)
    assert d("signalite_frames_rejected_total") == 1 + len(limited) + 2

    # Handshake refusals by reason.
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await web_client.ws_connect(ws_url(server, arn, KEY, "AWS_reserved"))
    assert caught.value.status == 400
    missing = arn.rsplit("/", 2)[0] + "/metrics-missing/1700000000000"
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await web_client.ws_connect(ws_url(server, missing, KEY, "someone"))
    previous, step = step, scrape(server)
    d = Delta(previous, step)
    assert d("signalite_connect_refusals_total", reason="InvalidArgumentException") == 1
    assert d("signalite_connect_refusals_total", reason="ResourceNotFoundException") == 1
    assert d("signalite_connects_total") == 0

    # Delete the channel: a GO_AWAY to each client, then the connections are gone.
    kv.delete_signaling_channel(ChannelARN=arn)
    assert (await receive(master))["messageType"] == "GO_AWAY"
    assert (await receive(viewer))["messageType"] == "GO_AWAY"
    assert (await master.receive(5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert (await viewer.receive(5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await master.close()
    await viewer.close()
    previous, step = step, scrape(server)
    d = Delta(previous, step)
    assert d("signalite_go_aways_total") == 2
    assert d("signalite_connections", role="master") == -1 and d("signalite_connections", role="viewer") == -1
    assert d("signalite_requests_total", operation="DeleteSignalingChannel", status="200") == 1
    total = Delta(base, step)
    assert total("signalite_connections") == 0 and total("signalite_connects_total") == 2


def test_strict_mode_rest_auth_failures_by_kind(strict_server: SignaliteServer) -> None:
    server = strict_server
    before = scrape(server)
    good = kv_client(server, STRICT)
    good.list_signaling_channels()
    for cred, code in (
        (Credential(STRICT.access_key_id, "wrong-secret", STRICT.account_id), "InvalidSignatureException"),
        (Credential("AKIDNOBODYATALL", "whatever", STRICT.account_id), "UnrecognizedClientException"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            kv_client(server, cred).list_signaling_channels()
        assert caught.value.response["Error"]["Code"] == code
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        kv_client(server, READONLY).create_signaling_channel(ChannelName="metrics-denied")
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/listSignalingChannels", body=b"{}", headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 403  # no signature at all
    conn.close()
    d = Delta(before, scrape(server))
    assert d("signalite_auth_failures_total", kind="InvalidSignatureException") == 1
    assert d("signalite_auth_failures_total", kind="UnrecognizedClientException") == 1
    assert d("signalite_auth_failures_total", kind="AccessDeniedException") == 1
    assert d("signalite_auth_failures_total", kind="MissingAuthenticationTokenException") == 1
    assert d("signalite_requests_total", operation="ListSignalingChannels", status="200") == 1
    assert d("signalite_requests_total", operation="ListSignalingChannels", status="403") == 3
    assert d("signalite_requests_total", operation="CreateSignalingChannel", status="200") == 0
    assert d("signalite_auth_failures_total") == 4
    for name, labels, _ in d.after.series:
        if name == "signalite_auth_failures_total":
            assert labels["node"] == "metrics-strict", labels


async def test_strict_mode_handshake_auth_failures(
    strict_server: SignaliteServer, web_client: aiohttp.ClientSession
) -> None:
    """A WebSocket handshake refused for its signature is an auth failure too (the metric's own help text:
    "Requests and handshakes refused by authentication or authorization"), and a connect refusal by reason."""
    server = strict_server
    kv = kv_client(server, STRICT)
    arn = kv.create_signaling_channel(ChannelName=f"metrics-{uuid.uuid4().hex[:8]}")["ChannelARN"]
    before = scrape(server)
    wrong = Credential(STRICT.access_key_id, "wrong-secret", STRICT.account_id)
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await web_client.ws_connect(ws_url(server, arn, wrong, "metrics-viewer"))
    assert caught.value.status == 403
    ok = await web_client.ws_connect(ws_url(server, arn, STRICT, "metrics-viewer"))
    await ok.close()
    d = Delta(before, scrape(server))
    assert d("signalite_connect_refusals_total", reason="InvalidSignatureException") == 1
    assert d("signalite_connects_total") == 1
    assert d("signalite_auth_failures_total", kind="InvalidSignatureException") == 1, d.after.text
