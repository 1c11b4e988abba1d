"""Log scan: after a full strict-mode session logged at `--log-level debug`, no secret is in the logs.

A real `python -m signalite serve` process (strict mode, TURN configured) has its stdout and stderr captured
while clients do everything a deployment sees: boto3 with and without a session token, a C-SDK-style request
with an unsigned token, refusals of every kind (wrong secret, unknown key, wrong and missing token, expired),
GetIceServerConfig, presigned WebSocket connects (a session token in the URL), SDP/ICE relaying with
recognisable payloads, a buffered message, an invalid frame, a refused handshake, SendAlexaOfferToMaster
answered by the master. Then the server is stopped and the whole output is searched for the secret keys,
the session token (raw and URL-encoded), the TURN secret, the TURN password handed out, the wrong token a
client tried, and every message payload (base64 and decoded). The scan only counts if the debug log really
has the session in it (events from each surface are required).

A second test feeds the server malformed and abusive HTTP and checks that its log stays structured: no
tracebacks, no "crash" records, and no echo of header bytes the client sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from signalite.auth.sigv4 import Credential, RequestParts, presign_url, sign_request
from signalite.testing import free_port, wait_healthy

REGION = "us-west-2"
ACCOUNT = "111111111111"
KEY = Credential("AKIDLOGSCANPLAIN", f"ls/{secrets.token_urlsafe(24)}+=", ACCOUNT)
TOKEN_KEY = Credential("ASIALOGSCANTOKEN", f"lt/{secrets.token_urlsafe(24)}+=", ACCOUNT,
                       f"IQoJ/{secrets.token_urlsafe(48)}+tok==")  # fmt: skip
TURN_SECRET = f"turn-{secrets.token_urlsafe(24)}"
WRONG_TOKEN = f"IQoJ/{secrets.token_urlsafe(32)}+wrong=="
BOTO_CONFIG = botocore.config.Config(retries={"max_attempts": 1}, read_timeout=30, connect_timeout=5)


@dataclass
class Process:
    """A signalite subprocess with both output streams drained into lists by threads."""

    popen: subprocess.Popen[bytes]
    port: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drain(self) -> None:
        for stream, sink in ((self.popen.stdout, self.stdout), (self.popen.stderr, self.stderr)):
            thread = threading.Thread(target=_pump, args=(stream, sink), daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> str:
        """SIGTERM, wait, and return everything the process wrote."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        for thread in self.threads:
            thread.join(10)
        return self.text()

    def text(self) -> str:
        return "\n".join(self.stdout + self.stderr)


def _pump(stream: Any, sink: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        sink.append(raw.decode("utf-8", "backslashreplace").rstrip("\n"))


@contextlib.contextmanager
def signalite_process(*extra: str) -> Iterator[Process]:
    data_dir = Path(tempfile.mkdtemp(prefix="signalite-logscan-"))
    credentials = data_dir / "credentials.json"
    credentials.write_text(json.dumps({"credentials": [
        {"access_key_id": KEY.access_key_id, "secret_access_key": KEY.secret_access_key, "account_id": ACCOUNT},
        {"access_key_id": TOKEN_KEY.access_key_id, "secret_access_key": TOKEN_KEY.secret_access_key,
         "account_id": ACCOUNT, "session_token": TOKEN_KEY.session_token},
    ]}))  # fmt: skip
    process = None
    try:
        for _ in range(5):
            port = free_port()
            popen = subprocess.Popen(
                [sys.executable, "-m", "signalite", "serve", "--port", str(port), "--data-dir", str(data_dir / "d"),
                 "--credentials", str(credentials), "--log-level", "debug", "--turn-uri", "turn:127.0.0.1:3478",
                 "--turn-secret", TURN_SECRET, *extra],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            process = Process(popen, port)
            process.drain()
            if _wait_started(process):
                break
            output = process.stop()
            if "Address already in use" not in output:
                raise AssertionError(f"signalite did not start:\n{output}")
        else:
            raise AssertionError("no free port for the server after 5 attempts")
        yield process
    finally:
        if process is not None:
            process.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_started(process: Process, timeout: float = 30.0) -> bool:
    """True once /health answers; False if the process exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            return False
        try:
            wait_healthy(process.url, None, timeout=0.5)
            return True
        except TimeoutError:
            continue
    raise AssertionError(f"signalite did not become healthy:\n{process.text()}")


def kv_client(url: str, cred: Credential, service: str = "kinesisvideo", **overrides: Any) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=overrides.get("akid", cred.access_key_id),
        aws_secret_access_key=overrides.get("secret", cred.secret_access_key),
        aws_session_token=overrides.get("token", cred.session_token),
        config=BOTO_CONFIG,
    )


def raw_post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1]) if data else 0
    finally:
        sock.close()


def signed(port: int, path: str, body: bytes, cred: Credential, now: float, **extra: str) -> dict[str, str]:
    base = {"host": f"127.0.0.1:{port}", "content-type": "application/json"}
    return base | sign_request(RequestParts("POST", path, "", base, body), cred, REGION, now) | extra


def payload(marker: str) -> str:
    return base64.b64encode(json.dumps({"type": "offer", "sdp": f"v=0\r\na=marker:{marker}\r\n"}).encode()).decode()


def expect_refusal(fn: Any, code: str) -> None:
    with pytest.raises(ClientError) as info:
        fn()
    assert info.value.response["Error"]["Code"] == code


# ============================================================================= the full session


async def websocket_session(process: Process, arn: str, markers: dict[str, str]) -> None:
    base = f"ws://127.0.0.1:{process.port}/?X-Amz-ChannelARN={quote(arn, safe='')}"
    now = time.time()
    async with aiohttp.ClientSession() as session:
        master = await session.ws_connect(presign_url(base, KEY, REGION, now))
        viewer = await session.ws_connect(presign_url(f"{base}&X-Amz-ClientId=logscan-viewer", TOKEN_KEY, REGION, now))

        async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
            return dict(json.loads(await asyncio.wait_for(ws.receive_str(), 5)))

        await viewer.send_str(json.dumps({"action": "SDP_OFFER", "messagePayload": markers["offer"],
                                          "correlationId": "c1"}))  # fmt: skip
        assert (await receive(master))["messagePayload"] == markers["offer"]
        await master.send_str(json.dumps({"action": "SDP_ANSWER", "messagePayload": markers["answer"],
                                          "recipientClientId": "logscan-viewer"}))  # fmt: skip
        assert (await receive(viewer))["messagePayload"] == markers["answer"]
        await viewer.send_str(json.dumps({"action": "ICE_CANDIDATE", "messagePayload": markers["ice"]}))
        assert (await receive(master))["messagePayload"] == markers["ice"]
        # buffered for a viewer that is not there
        await master.send_str(json.dumps({"action": "ICE_CANDIDATE", "messagePayload": markers["buffered"],
                                          "recipientClientId": "ghost"}))  # fmt: skip
        # an invalid frame (payload not base64) answered with a STATUS_RESPONSE
        await viewer.send_str(json.dumps({"action": "SDP_OFFER", "messagePayload": markers["invalid"],
                                          "correlationId": "bad-1"}))  # fmt: skip
        status = await receive(viewer)
        assert status["messageType"] == "STATUS_RESPONSE"
        # a frame that is not JSON at all
        await viewer.send_str(f"not json {markers['junk']}")

        # SendAlexaOfferToMaster, answered by the master
        signaling = kv_client(process.url, TOKEN_KEY, "kinesis-video-signaling")
        call = asyncio.create_task(asyncio.to_thread(
            signaling.send_alexa_offer_to_master, ChannelARN=arn, SenderClientId="alexa-sender",
            MessagePayload=markers["alexa_offer"]))  # fmt: skip
        offer = await receive(master)
        assert offer["senderClientId"] == "alexa-sender" and offer["messagePayload"] == markers["alexa_offer"]
        await master.send_str(json.dumps({"action": "SDP_ANSWER", "messagePayload": markers["alexa_answer"],
                                          "recipientClientId": "alexa-sender"}))  # fmt: skip
        assert (await call)["Answer"] == markers["alexa_answer"]

        # handshakes refused: a tampered URL with the session token in it, and an expired one
        tampered = presign_url(f"{base}&X-Amz-ClientId=v2", TOKEN_KEY, REGION, now).replace(
            "ClientId=v2", "ClientId=v3"
        )
        expired = presign_url(f"{base}&X-Amz-ClientId=v4", TOKEN_KEY, REGION, now - 3600)
        wrong_token = presign_url(f"{base}&X-Amz-ClientId=v5", Credential(TOKEN_KEY.access_key_id,
                                  TOKEN_KEY.secret_access_key, ACCOUNT, WRONG_TOKEN), REGION, now)  # fmt: skip
        for url in (tampered, expired, wrong_token):
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(url)
        await viewer.close()
        await master.close()


def test_no_secret_or_payload_in_debug_logs() -> None:
    markers = {name: payload(f"{name}-{secrets.token_hex(8)}") for name in
               ("offer", "answer", "ice", "buffered", "alexa_offer", "alexa_answer")}  # fmt: skip
    markers["invalid"] = f"NOT-BASE64-{secrets.token_hex(8)}!!"
    markers["junk"] = f"junk-{secrets.token_hex(8)}"
    with signalite_process() as process:
        plain = kv_client(process.url, KEY)
        token = kv_client(process.url, TOKEN_KEY)
        arn = plain.create_signaling_channel(ChannelName="logscan")["ChannelARN"]
        token.describe_signaling_channel(ChannelName="logscan")
        token.list_signaling_channels()
        token.tag_resource(ResourceARN=arn, Tags=[{"Key": "k", "Value": "v"}])
        plain.get_signaling_channel_endpoint(ChannelARN=arn, SingleMasterChannelEndpointConfiguration={
            "Protocols": ["WSS", "HTTPS"], "Role": "MASTER"})  # fmt: skip
        ice = kv_client(process.url, TOKEN_KEY, "kinesis-video-signaling").get_ice_server_config(
            ChannelARN=arn, ClientId="logscan-viewer"
        )["IceServerList"]
        turn_password, turn_username = ice[0]["Password"], ice[0]["Username"]

        expect_refusal(lambda: kv_client(process.url, KEY, secret="wrong-" + KEY.secret_access_key)
                       .list_signaling_channels(), "InvalidSignatureException")  # fmt: skip
        expect_refusal(lambda: kv_client(process.url, KEY, akid="AKIDLOGSCANNOBODY").list_signaling_channels(),
                       "UnrecognizedClientException")  # fmt: skip
        expect_refusal(lambda: kv_client(process.url, TOKEN_KEY, token=WRONG_TOKEN).list_signaling_channels(),
                       "UnrecognizedClientException")  # fmt: skip
        expect_refusal(lambda: kv_client(process.url, TOKEN_KEY, token=None).list_signaling_channels(),
                       "UnrecognizedClientException")  # fmt: skip
        body = json.dumps({"ChannelARN": arn}).encode()
        expired = signed(process.port, "/describeSignalingChannel", body, KEY, time.time() - 900)
        assert raw_post(process.port, "/describeSignalingChannel", body, expired) == 403
        # C SDK style: the token as an unsigned header
        c_style = signed(process.port, "/describeSignalingChannel", body, Credential(
            TOKEN_KEY.access_key_id, TOKEN_KEY.secret_access_key, ACCOUNT), time.time(),
            **{"x-amz-security-token": TOKEN_KEY.session_token or ""})  # fmt: skip
        assert raw_post(process.port, "/describeSignalingChannel", body, c_style) == 200
        unsigned_wrong = signed(process.port, "/describeSignalingChannel", body, Credential(
            TOKEN_KEY.access_key_id, TOKEN_KEY.secret_access_key, ACCOUNT), time.time(),
            **{"x-amz-security-token": WRONG_TOKEN})  # fmt: skip
        assert raw_post(process.port, "/describeSignalingChannel", body, unsigned_wrong) == 403

        asyncio.run(websocket_session(process, arn, markers))
        plain.delete_signaling_channel(ChannelARN=arn)
        time.sleep(0.3)  # let the last log lines out
        output = process.stop()

    # The scan means something only if the debug log has the session in it.
    logs = "\n".join(process.stderr)
    for expected in ("request.refused", "ws.connected", "ws.disconnected", "ws.refused", "server.started"):
        assert expected in logs, f"the debug log has no {expected!r} event; log:\n{logs[-3000:]}"
    assert "strict" in "\n".join(process.stdout), "the start-up banner does not say strict mode"

    forbidden = {
        "secret access key (plain)": KEY.secret_access_key,
        "secret access key (token)": TOKEN_KEY.secret_access_key,
        "session token": TOKEN_KEY.session_token or "",
        "session token (URL-encoded)": quote(TOKEN_KEY.session_token or "", safe=""),
        "wrong session token": WRONG_TOKEN,
        "wrong session token (URL-encoded)": quote(WRONG_TOKEN, safe=""),
        "TURN secret": TURN_SECRET,
        "TURN password": turn_password,
    }
    for name, value in markers.items():
        forbidden[f"payload {name}"] = value
        with contextlib.suppress(ValueError):
            decoded = base64.b64decode(value, validate=True).decode()
            forbidden[f"payload {name} (decoded marker)"] = decoded.split("a=marker:")[1].split("\r")[0]
    leaks = [name for name, value in forbidden.items() if value and value in output]
    assert not leaks, f"found in the server's output: {leaks}"
    assert turn_username  # handed out, and a username is not a secret


# ============================================================================= hostile input, structured log


def test_hostile_requests_leave_a_structured_log() -> None:
    header_marker = f"hdr-{secrets.token_hex(8)}"
    with signalite_process("--max-body-bytes", "65536") as process:
        port = process.port

        def send(data: bytes, then_close: bool = False) -> None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                with contextlib.suppress(OSError):
                    sock.sendall(data)
                if not then_close:
                    with contextlib.suppress(OSError):
                        sock.recv(65536)
            finally:
                sock.close()

        # A too-long header whose value starts with something secret-looking.
        send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Amz-Security-Token: " + header_marker.encode() + b"a" * 9000
             + b"\r\n\r\n")  # fmt: skip
        send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Amz-Security-Token: " + header_marker.encode() + b"\x01\r\n\r\n")
        send(b"GET /" + header_marker.encode() + b"\x7f HTTP/1.1\r\nHost: x\r\n\r\n")
        send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64))
        send(b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(3000)) + b"\r\n")
        # A client that goes away in the middle of its body.
        send(b"POST /listSignalingChannels HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{", then_close=True)
        # Non-UTF-8 bytes in an auth header.
        send(b"POST /listSignalingChannels HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nAuthorization: \x80"
             + header_marker.encode() + b"\r\n\r\n{}")  # fmt: skip
        time.sleep(0.5)
        wait_healthy(process.url, None, timeout=10)
        process.stop()

    unstructured = [line for line in process.stderr if not line.startswith("ts=")]  # one `ts=... event=...` a line
    errors = [line for line in process.stderr if line.startswith("ts=") and ("level=error" in line or "crash" in line)]
    echoed = header_marker in "\n".join(process.stderr + process.stdout)
    assert not (unstructured or errors or echoed), (
        f"{len(unstructured)} unstructured log lines (tracebacks?), e.g. {[u[:120] for u in unstructured[:4]]}; "
        f"{len(errors)} error records: {[e[:200] for e in errors[:4]]}; "
        f"header bytes the client sent echoed into the log: {echoed}"
    )
