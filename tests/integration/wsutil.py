"""Shared helpers for the signaling WebSocket / HTTPS integration tests (test_ws_*, test_signaling_http,
test_tls_cors).

Test files import this module after putting their own directory on `sys.path` (no package, no conftest
of their own). Everything here talks to 127.0.0.1 only.

Synchronisation without sleeping: `barrier(ws, tag)` sends a frame the server always refuses (unknown
action) with correlationId `tag` and asserts that the very next frame on that socket is the matching
STATUS_RESPONSE. Because a connection's frames are handled in order, and each frame's sends are written
before the next frame is read, a barrier proves two things at once: the server has processed everything
this client sent before, and no other frame reached this client in between. Barriers on the sender and
then on the recipient prove that a message was *not* delivered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import secrets
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import boto3
import botocore.config

from signalite.testing import SignaliteServer

REGION = "us-west-2"
CREDENTIALS = {"aws_access_key_id": "AKIDSIGNALITEWS", "aws_secret_access_key": "signalite-ws-secret"}
ACCOUNT = "000000000000"

# Outbound key sets of kvs-protocol.md §5.5 (what the C SDK's exact-key parser expects).
DELIVERY_KEYS = {"senderClientId", "messageType", "messagePayload"}
STATUS_KEYS = {"correlationId", "errorType", "statusCode", "description"}

BOTO_CONFIG = botocore.config.Config(retries={"max_attempts": 1}, read_timeout=30, connect_timeout=5)


def b64(data: bytes | str) -> str:
    """Standard base64 text of `data` (a realistic messagePayload)."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def sdp_payload(kind: str = "offer", tag: str = "") -> str:
    """A base64 SDP message as the JS SDK sends it: btoa(JSON.stringify({type, sdp}))."""
    sdp = f"v=0\r\no=- {secrets.randbelow(10**12)} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=tag:{tag}\r\n"
    return b64(json.dumps({"type": kind, "sdp": sdp}))


def ice_payload(n: int = 0) -> str:
    candidate = f"candidate:{n} 1 udp 2122260223 127.0.0.1 {50000 + n} typ host generation 0"
    return b64(json.dumps({"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}))


def frame(action: str, payload: str, *, recipient: str | None = None, correlation: str | None = None) -> str:
    """A JS-SDK-style (camelCase) client frame."""
    obj: dict[str, Any] = {"action": action, "messagePayload": payload}
    if recipient is not None:
        obj["recipientClientId"] = recipient
    if correlation is not None:
        obj["correlationId"] = correlation
    return json.dumps(obj)


def missing_arn(name: str = "nope") -> str:
    return f"arn:aws:kinesisvideo:{REGION}:{ACCOUNT}:channel/{name}/1700000000000"


def unique(prefix: str = "ch") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- servers ----------------------------------------------------------------------------------------


def in_process(settings: Mapping[str, Any] | None = None) -> SignaliteServer:
    """A started in-process server (own thread and loop, a free port) with a shifted clock for `advance()`."""
    return SignaliteServer(settings=dict(settings or {})).start()


class OutputDrain:
    """The combined output of a subprocess server, as a growing list of lines.

    `SignaliteServer` may drain the child's pipe itself (and offer `output()`); then its text is read.
    Otherwise a thread here reads the pipe, so that it never fills and blocks the server.
    """

    def __init__(self, server: SignaliteServer) -> None:
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._server_output = getattr(server, "output", None)
        if not callable(self._server_output):
            self._server_output = None
            threading.Thread(target=self._run, args=(server.process.stdout,), daemon=True).start()

    def _run(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            with self._cond:
                self._lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        if self._server_output is not None:
            return str(self._server_output()).splitlines()
        with self._cond:
            return list(self._lines)

    def wait_for(self, needle: str, start: int = 0, timeout: float = 10.0) -> int:
        """Index of the first line at or after `start` that contains `needle` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines
            for i in range(start, len(lines)):
                if needle in lines[i]:
                    return i
            if time.monotonic() > deadline:
                raise AssertionError(f"server never logged {needle!r}; output:\n{self.text()}")
            if self._server_output is not None:
                time.sleep(0.02)
            else:
                with self._cond:
                    self._cond.wait(0.1)

    def text(self, last: int = 80) -> str:
        return "\n".join(self.lines[-last:])


def subprocess_server(extra_args: list[str], data_dir: Path | None = None) -> tuple[SignaliteServer, OutputDrain]:
    server = SignaliteServer(subprocess=True, extra_args=extra_args, data_dir=data_dir).start()
    return server, OutputDrain(server)


@contextlib.contextmanager
def running(settings: Mapping[str, Any] | None = None) -> Iterator[Harness]:
    server = in_process(settings)
    try:
        yield Harness(server)
    finally:
        server.stop()


class Harness:
    """A server plus boto3 clients and the URLs of its channels."""

    def __init__(self, server: SignaliteServer, verify: str | bool | None = None) -> None:
        self.server = server
        self.verify = verify
        self.kv = boto3.client(
            "kinesisvideo",
            endpoint_url=server.endpoint_url,
            region_name=REGION,
            config=BOTO_CONFIG,
            verify=verify,
            **CREDENTIALS,
        )
        self._endpoints: dict[tuple[str, str], dict[str, str]] = {}

    @property
    def port(self) -> int:
        return self.server.port

    def advance(self, seconds: float) -> None:
        self.server.advance(seconds)

    def create_channel(self, name: str | None = None, ttl: int | None = None) -> str:
        kwargs: dict[str, Any] = {"ChannelName": name or unique()}
        if ttl is not None:
            kwargs["SingleMasterConfiguration"] = {"MessageTtlSeconds": ttl}
        return str(self.kv.create_signaling_channel(**kwargs)["ChannelARN"])

    def delete_channel(self, arn: str) -> None:
        self.kv.delete_signaling_channel(ChannelARN=arn)

    def endpoints(self, arn: str, role: str = "MASTER") -> dict[str, str]:
        key = (arn, role)
        if key not in self._endpoints:
            response = self.kv.get_signaling_channel_endpoint(
                ChannelARN=arn,
                SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS", "HTTPS"], "Role": role},
            )
            self._endpoints[key] = {e["Protocol"]: e["ResourceEndpoint"] for e in response["ResourceEndpointList"]}
        return self._endpoints[key]

    def ws_base(self) -> str:
        scheme = "wss" if self.server.scheme == "https" else "ws"
        return f"{scheme}://127.0.0.1:{self.port}"

    def ws_url(self, arn: str | None, client_id: str | None = None, *, base: str | None = None) -> str:
        """ConnectAsMaster (no client id) / ConnectAsViewer URL, built like the C SDK (endpoint + '?' + query)."""
        query: dict[str, str] = {}
        if arn is not None:
            query["X-Amz-ChannelARN"] = arn
        if client_id is not None:
            query["X-Amz-ClientId"] = client_id
        return f"{base or self.ws_base()}?{urlencode(query)}"

    def signaling(self, arn: str) -> Any:
        """A kinesis-video-signaling client on the channel's HTTPS endpoint (as the SDK examples do)."""
        return boto3.client(
            "kinesis-video-signaling",
            endpoint_url=self.endpoints(arn)["HTTPS"],
            region_name=REGION,
            config=BOTO_CONFIG,
            verify=self.verify,
            **CREDENTIALS,
        )

    def health(self) -> dict[str, Any]:
        import ssl
        import urllib.request

        context = ssl._create_unverified_context()  # only a counter is read here; TLS is tested elsewhere
        with urllib.request.urlopen(f"{self.server.endpoint_url}/health", timeout=5, context=context) as r:
            return dict(json.loads(r.read()))


# -- WebSocket clients ------------------------------------------------------------------------------


async def connect(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
    kwargs.setdefault("timeout", aiohttp.ClientWSTimeout(ws_close=5))
    return await session.ws_connect(url, **kwargs)


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> aiohttp.WSMessage:
    try:
        return await asyncio.wait_for(ws.receive(), timeout)
    except TimeoutError:
        raise AssertionError(f"no frame within {timeout} s") from None


async def recv_text(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> str:
    msg = await recv(ws, timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type!r} {msg.data!r} {msg.extra!r}"
    return str(msg.data)


async def recv_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    obj = json.loads(await recv_text(ws, timeout))
    assert isinstance(obj, dict), obj
    return obj


async def expect_close(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> int | None:
    """The next frame is the server's close frame; returns the code it carried.

    (The code is read from the frame, not from `ws.close_code`: the server may drop the TCP connection
    right after its close frame, and aiohttp then records 1006 for the failed close reply.)
    """
    msg = await recv(ws, timeout)
    assert msg.type is aiohttp.WSMsgType.CLOSE, f"expected a close frame, got {msg.type!r} {msg.data!r}"
    return int(msg.data)


@contextlib.contextmanager
def left_in_cycles(modules: tuple[str, ...]) -> Iterator[list[str]]:
    """Collect nothing until the block ends, then list what was left in reference cycles.

    The yielded list is filled on exit with the type names, from `modules` (client modules excepted),
    of the objects that only the cycle collector would have freed.
    """
    left: list[str] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield left
        gc.collect()
        left.extend(sorted(
            {f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
             if type(o).__module__.startswith(modules) and "client" not in type(o).__module__}
        ))  # fmt: skip
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def wait_connections(h: Harness, count: int) -> None:
    """Wait (bounded) until /health counts `count` open WebSockets: the server handles a client's close
    asynchronously, so a test that needs the departure to be complete waits for it here."""
    for _ in range(500):
        if h.health()["connections"] == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} connections, /health says {h.health()['connections']}")


def assert_status(obj: Mapping[str, Any], correlation: str, error_type: str, status: str = "400") -> None:
    assert set(obj) == {"messageType", "statusResponse"}, obj
    assert obj["messageType"] == "STATUS_RESPONSE", obj
    status_response = obj["statusResponse"]
    assert set(status_response) <= STATUS_KEYS and {"correlationId", "errorType", "statusCode"} <= set(
        status_response
    ), status_response
    assert status_response["correlationId"] == correlation, status_response
    assert status_response["errorType"] == error_type, status_response
    assert status_response["statusCode"] == status, status_response  # a string, as AWS documents
    assert len(status_response.get("description", "")) <= 1024


_barrier_count = 0


async def barrier(ws: aiohttp.ClientWebSocketResponse, tag: str | None = None) -> None:
    """Assert that nothing reaches `ws` before the answer to a frame sent now (see module doc)."""
    global _barrier_count
    _barrier_count += 1
    tag = tag or f"barrier-{_barrier_count}"
    await ws.send_str(json.dumps({"action": "BARRIER_NOT_AN_ACTION", "messagePayload": "QQ==", "correlationId": tag}))
    obj = await recv_json(ws)
    assert obj.get("messageType") == "STATUS_RESPONSE" and obj["statusResponse"]["correlationId"] == tag, (
        f"expected only the barrier's STATUS_RESPONSE {tag!r}, got {obj}"
    )
    assert obj["statusResponse"]["errorType"] == "InvalidArgumentException", obj


async def ping_pong(ws: aiohttp.ClientWebSocketResponse, data: bytes = b"") -> None:
    """Ping and read the pong (the socket must be opened with autoping=False)."""
    await ws.ping(data)
    msg = await recv(ws)
    assert msg.type is aiohttp.WSMsgType.PONG, f"expected a PONG, got {msg.type!r} {msg.data!r}"
    assert msg.data == data


def handshake(
    port: int, query: Mapping[str, str] | str, *, host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    """A raw WebSocket upgrade request; returns (status, lower-case headers, body) of the answer."""
    qs = query if isinstance(query, str) else urlencode(query)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /?{qs} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        return status, headers, body


def assert_refused(result: tuple[int, dict[str, str], bytes], status: int, error_type: str) -> dict[str, Any]:
    """A handshake answered with `status` and an AWS rest-json error of `error_type`."""
    got_status, headers, body = result
    assert got_status == status, (got_status, headers, body)
    assert headers.get("x-amzn-errortype", "").split(":")[0] == error_type, headers
    assert headers.get("content-type", "").startswith("application/json"), headers
    obj = json.loads(body)
    assert obj.get("__type", "").split("#")[-1] == error_type, obj
    assert obj.get("message") or obj.get("Message"), obj
    return dict(obj)


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (for raw-socket clients)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split unmasked server frames out of `data`: ([(opcode, payload)], rest)."""
    frames: list[tuple[int, bytes]] = []
    i = 0
    while True:
        if len(data) - i < 2:
            break
        opcode = data[i] & 0x0F
        n = data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            if len(data) - j < 2:
                break
            n = int.from_bytes(data[j : j + 2], "big")
            j += 2
        elif n == 127:
            if len(data) - j < 8:
                break
            n = int.from_bytes(data[j : j + 8], "big")
            j += 8
        if len(data) - j < n:
            break
        frames.append((opcode, data[j : j + n]))
        i = j + n
    return frames, data[i:]


def raw_ws_connect(port: int, query: Mapping[str, str], *, rcvbuf: int | None = None) -> socket.socket:
    """A raw-socket WebSocket client (blocking); optionally with a small receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    raw_upgrade(sock, port, query)
    return sock


def raw_upgrade(sock: socket.socket, port: int, query: Mapping[str, str]) -> None:
    """Send a WebSocket upgrade on `sock` and read the 101 (and nothing after it)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /?{urlencode(query)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)  # byte by byte: nothing after the headers is consumed
        if not chunk:
            raise AssertionError(f"handshake failed: {data!r}")
        data += chunk
    status = int(data.split(b" ", 2)[1])
    assert status == 101, data


def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
