"""Hostile input: oversized and endless requests are cut off, and nobody else notices.

An in-process strict-mode server with small bounds (`max_body_bytes` 64 KiB, `header_timeout` 1 s) takes
oversized bodies (413), header lines over 8 KiB (4xx), slowloris connections (closed after the header
deadline, on a fresh connection and on a kept-alive one), clients that vanish mid-body, deeply nested JSON,
non-HTTP bytes and WebSocket frames over 64 KiB (that socket closed with 1009). Connection caps
(`max_connections`, `max_connections_per_address`) get servers of their own; clients of a second address
come from 127.0.0.2. After every attack a well-behaved, signed client must still be served, and during the
slow ones it is served *throughout*.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import http.client
import json
import logging
import os
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from signalite.auth.sigv4 import Credential, RequestParts, presign_url, sign_request
from signalite.testing import SignaliteServer, free_port

REGION = "us-west-2"
KEY = Credential("AKIDHOSTILE", "hostile-secret/+=", "111111111111")
MAX_BODY = 64 * 1024
HEADER_TIMEOUT = 1.0
FIRST_REQUEST_TIMEOUT = 2.5  # longer than the header deadline, as by default (60 s vs 10 s)
# How long after the deadline a slow connection may still linger (scheduling on a busy CI machine).
SLACK = 2.0


def start_server(tmp_path: Path, **settings: Any) -> SignaliteServer:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"credentials": [{"access_key_id": KEY.access_key_id,
                                                 "secret_access_key": KEY.secret_access_key,
                                                 "account_id": KEY.account_id}]}))  # fmt: skip
    for _ in range(5):
        server = SignaliteServer(settings={"port": free_port(), "credentials": str(path), **settings})
        try:
            return server.start()
        except OSError as e:  # the free port was taken meanwhile: pick another
            shutil.rmtree(server.data_dir, ignore_errors=True)
            if e.errno != errno.EADDRINUSE:
                raise
    raise AssertionError("no free port for the server after 5 attempts")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignaliteServer]:
    running = start_server(
        tmp_path_factory.mktemp("hostile"),
        max_body_bytes=MAX_BODY,
        header_timeout=HEADER_TIMEOUT,
        first_request_timeout=FIRST_REQUEST_TIMEOUT,
        limits="off",
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def channel(server: SignaliteServer) -> str:
    status, body = signed_call(server, "/createSignalingChannel", {"ChannelName": "hostile"})
    assert status == 200, body
    return str(body["ChannelARN"])


# ----------------------------------------------------------------------------- helpers


def signed_call(
    server: SignaliteServer,
    path: str,
    params: dict[str, Any] | bytes,
    conn: http.client.HTTPConnection | None = None,
    source: str | None = None,
) -> tuple[int, Any]:
    body = params if isinstance(params, bytes) else json.dumps(params).encode()
    headers = {"host": f"127.0.0.1:{server.port}", "content-type": "application/json"}
    headers |= sign_request(RequestParts("POST", path, "", headers, body), KEY, REGION, server.clock.time())
    own = conn is None
    if conn is None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                          source_address=(source, 0) if source else None)  # fmt: skip
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        if own:
            conn.close()


def assert_serves(server: SignaliteServer, source: str | None = None) -> None:
    """A well-behaved client (signed request on a fresh connection) gets its answer."""
    status, body = signed_call(server, "/listSignalingChannels", {}, source=source)
    assert status == 200, body
    assert "ChannelInfoList" in body


def raw_socket(server: SignaliteServer, source: str | None = None, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP response (status 0: the server closed without answering)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if b"\r\n\r\n" not in data:
        return 0, {}, data
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes (EOF or reset) within `within` seconds; any bytes before that are read."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


class SteadyClient(threading.Thread):
    """A well-behaved client making a signed request every `interval` s on its own keep-alive connection."""

    def __init__(self, server: SignaliteServer, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.interval = interval
        self.stop_event = threading.Event()
        self.results: list[tuple[int, float]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                status, _ = signed_call(self.server, "/listSignalingChannels", {}, conn=conn)
                self.results.append((status, time.monotonic() - started))
            except Exception as e:  # recorded, and the test fails on it
                self.errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
            self.stop_event.wait(self.interval)
        conn.close()

    def finish(self) -> None:
        self.stop_event.set()
        self.join(10)
        assert not self.errors, self.errors
        assert len(self.results) >= 10, self.results
        assert all(status == 200 for status, _ in self.results), self.results
        worst = max(latency for _, latency in self.results)
        assert worst < 1.0, f"a well-behaved request waited {worst:.2f} s"


# ============================================================================= bodies


def test_oversized_body_is_413(server: SignaliteServer) -> None:
    sock = raw_socket(server)
    body = b"{" + b" " * MAX_BODY + b"}"
    sock.sendall(
        f"POST /listSignalingChannels HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    status, headers, data = read_response(sock)
    sock.close()
    assert status == 413, (status, data[:300])
    assert headers.get("x-amzn-errortype") == "RequestEntityTooLargeException"
    assert json.loads(data)["__type"] == "RequestEntityTooLargeException"
    assert_serves(server)


def test_oversized_chunked_body_is_413(server: SignaliteServer) -> None:
    sock = raw_socket(server)
    sock.sendall(b"POST /listSignalingChannels HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 16384
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        for _ in range(8):  # 128 KiB in 16 KiB chunks, never finished
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    status, headers, _ = read_response(sock)
    sock.close()
    assert status == 413, status
    assert headers.get("x-amzn-errortype") == "RequestEntityTooLargeException"
    assert_serves(server)


def test_declared_huge_body_is_refused_without_reading_it(server: SignaliteServer) -> None:
    sock = raw_socket(server)
    sock.sendall(b"POST /listSignalingChannels HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000000\r\n\r\n")
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        sock.sendall(b"{" * (MAX_BODY + 1024))
    status, _, _ = read_response(sock)
    sock.close()
    assert status == 413, status
    assert_serves(server)


def test_body_at_the_limit_is_accepted(server: SignaliteServer) -> None:
    body = b'{"MaxResults": 1' + b" " * (MAX_BODY - 17) + b"}"
    assert len(body) == MAX_BODY
    status, answer = signed_call(server, "/listSignalingChannels", body)
    assert status == 200, answer


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 60000,
        b'{"a":' * 9000 + b"1" + b"}" * 9000,
        b'{"ChannelName": "' + b"\\u0000" * 8000 + b'"}',
        b'{"MaxResults": 1e999999}',
        b'{"MaxResults": ' + b"9" * 5000 + b"}",
        json.dumps({f"k{i}": i for i in range(3000)}).encode(),
        b"\xff\xfe\xfd" * 1000,
        b'{"ChannelName": "\xed\xa0\x80"}',  # a lone surrogate in UTF-8
    ],
    ids=["deep-array", "deep-object", "nul-escapes", "huge-float", "huge-int", "many-keys", "binary", "surrogate"],
)
def test_pathological_json_is_a_4xx(server: SignaliteServer, body: bytes) -> None:
    for path in ("/createSignalingChannel", "/listSignalingChannels", "/describeSignalingChannel"):
        status, answer = signed_call(server, path, body)
        assert 400 <= status < 500 or status == 200, (path, status, answer)
        if status != 200:
            assert answer["__type"] in ("SerializationException", "InvalidArgumentException",
                                        "ValidationException"), answer  # fmt: skip
    assert_serves(server)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_client_vanishing_mid_body_is_not_a_crash(server: SignaliteServer) -> None:
    # A handler on signalite's own logger (the in-process server logs there), whatever propagation is set to.
    records = _Records()
    logger = logging.getLogger("signalite")
    logger.addHandler(records)
    try:
        for _ in range(3):
            sock = raw_socket(server)
            sock.sendall(b"POST /listSignalingChannels HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{")
            time.sleep(0.05)
            sock.close()
        time.sleep(0.5)
        assert_serves(server)
    finally:
        logger.removeHandler(records)
    crashes = [f"{r.levelname} {r.getMessage()} {r.exc_info and r.exc_info[1]!r}" for r in records.records]
    assert not crashes, f"a client hanging up mid-body was logged as a server error: {crashes}"


# ============================================================================= headers


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"POST /listSignalingChannels HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential="
        + b"A" * 9000
        + b"\r\n\r\n",
        b"GET /health?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Folded: a\r\n" + b" b\r\n" * 3000 + b"\r\n",
    ],
    ids=["long-header", "long-authorization", "long-request-line", "many-headers", "folded-header"],
)
def test_oversized_headers_are_a_4xx(server: SignaliteServer, request_bytes: bytes) -> None:
    sock = raw_socket(server)
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        sock.sendall(request_bytes)
    status, _, _ = read_response(sock)
    sock.close()
    assert 400 <= status < 500 or status == 0, status
    assert_serves(server)


_AUTH = (
    b"AWS4-HMAC-SHA256 Credential=AKIDHOSTILE/20240101/us-west-2/kinesisvideo/aws4_request, "
    b"SignedHeaders=host;x-amz-date, Signature=" + b"0" * 64
)


@pytest.mark.parametrize(
    "extra_headers",
    [
        [(b"Authorization", b"\x80")],
        [(b"Authorization", b"AWS4-HMAC-SHA256\xff Credential=a/b/c/d/e, SignedHeaders=host, Signature=0")],
        [(b"Authorization", _AUTH.replace(b"aws4_request", b"aws4_\xe9request"))],
        [(b"Authorization", _AUTH.replace(b"20240101", b"2024\xff101"))],
        [(b"Authorization", _AUTH), (b"X-Amz-Date", b"2024\xff0101T000000Z")],
        [(b"Authorization", _AUTH), (b"X-Amz-Date", b"20240101T000000Z"), (b"X-Amz-Content-Sha256", b"\xfe\xff")],
        [(b"Authorization", _AUTH), (b"Date", b"Mon, 01 Jan 2024 \xff")],
    ],
    ids=["auth-byte", "algorithm", "terminator", "scope-date", "amz-date", "content-sha", "date-header"],
)
def test_non_utf8_auth_header_bytes_are_a_4xx(
    server: SignaliteServer, extra_headers: list[tuple[bytes, bytes]]
) -> None:
    # aiohttp hands undecodable header bytes over as surrogate escapes; an error message that quotes them
    # must still be encodable (a 500 here means the JSON error body could not be written).
    sock = raw_socket(server)
    head = b"".join(name + b": " + value + b"\r\n" for name, value in extra_headers)
    sock.sendall(b"POST /listSignalingChannels HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n" + head + b"\r\n{}")
    status, headers, data = read_response(sock)
    sock.close()
    assert 400 <= status < 500, (status, data[:300])
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, data[:200])
    error = json.loads(data)
    assert error["__type"] in ("IncompleteSignatureException", "InvalidSignatureException"), error
    assert_serves(server)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),  # a TLS ClientHello on a plain port
        b"HELLO\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"POST /listSignalingChannels HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /listSignalingChannels HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /listSignalingChannels HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x00" * 4096,
        b"GET /%%%% HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /?X-Amz-ChannelARN=%ff%fe HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ],
    ids=[
        "tls",
        "hello",
        "http09",
        "http99",
        "negative-length",
        "double-length",
        "bad-chunk",
        "nul",
        "bad-escape",
        "bad-ws-key",
    ],
)
def test_non_http_bytes_are_refused(server: SignaliteServer, garbage: bytes) -> None:
    sock = raw_socket(server)
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        sock.sendall(garbage)
    status, _, _ = read_response(sock, timeout=HEADER_TIMEOUT + SLACK + 1)
    sock.close()
    assert status == 0 or 400 <= status < 500, status
    assert_serves(server)


# ============================================================================= slowloris


def test_silent_connection_is_closed_after_the_first_request_deadline(server: SignaliteServer) -> None:
    sock = raw_socket(server)
    started = time.monotonic()
    assert closed_by_server(sock, FIRST_REQUEST_TIMEOUT + SLACK), "a silent connection outlived its deadline"
    assert time.monotonic() - started >= FIRST_REQUEST_TIMEOUT * 0.8
    sock.close()


def test_silent_connection_outlives_the_header_deadline_and_is_then_served(server: SignaliteServer) -> None:
    # What a browser does with a preconnected socket: nothing for a while, then a request. The header
    # deadline counts from the request's first byte, so the socket must still work.
    sock = raw_socket(server)
    time.sleep(HEADER_TIMEOUT + 0.5)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, _, _ = read_response(sock)
    sock.close()
    assert status == 200


def test_headers_started_late_still_get_the_whole_header_deadline(server: SignaliteServer) -> None:
    # Silent for a while, then a request that drips: cut off one header deadline after its first byte.
    sock = raw_socket(server)
    time.sleep(HEADER_TIMEOUT * 0.7)
    stop = threading.Event()
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: a\r\n" * 200
    dripper = threading.Thread(target=drip, args=(sock, request, stop), daemon=True)
    first_byte = time.monotonic()
    dripper.start()
    try:
        assert closed_by_server(sock, HEADER_TIMEOUT + SLACK + 1), "a dripping request was never cut off"
        assert time.monotonic() - first_byte >= HEADER_TIMEOUT * 0.8, "cut off before its own header deadline"
    finally:
        stop.set()
        sock.close()


def drip(sock: socket.socket, data: bytes, stop: threading.Event, every: float = 0.15) -> None:
    """Send `data` a few bytes at a time until it is sent, `stop` is set or the server hangs up."""
    for i in range(0, len(data), 4):
        if stop.is_set():
            return
        try:
            sock.sendall(data[i : i + 4])
        except OSError:
            return
        stop.wait(every)


def test_slowloris_connections_are_cut_off_while_others_are_served(server: SignaliteServer) -> None:
    steady = SteadyClient(server)
    steady.start()
    stop = threading.Event()
    request = b"POST /listSignalingChannels HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: aaaaaaaa\r\n" * 50
    socks = [raw_socket(server) for _ in range(30)]
    drippers = [threading.Thread(target=drip, args=(s, request, stop), daemon=True) for s in socks]
    for t in drippers:
        t.start()
    started = time.monotonic()
    try:
        for sock in socks:
            left = HEADER_TIMEOUT + SLACK - (time.monotonic() - started)
            assert closed_by_server(sock, max(left, 0.01)), "a slowloris connection outlived the header deadline"
    finally:
        stop.set()
        for sock in socks:
            sock.close()
        steady.finish()
    assert_serves(server)


def test_slowloris_on_a_kept_alive_connection_is_cut_off(server: SignaliteServer) -> None:
    # One quick request first, then the *next* request's headers dripped: the deadline must apply again.
    sock = raw_socket(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, _, _ = read_response(sock)
    assert status == 200
    stop = threading.Event()
    dripper = threading.Thread(
        target=drip,
        args=(sock, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: a\r\n" * 200, stop),
        daemon=True,
    )
    dripper.start()
    try:
        assert closed_by_server(sock, HEADER_TIMEOUT + SLACK + 1), (
            "a kept-alive connection dripping its second request's headers was never cut off"
        )
    finally:
        stop.set()
        sock.close()
    assert_serves(server)


# ============================================================================= connection caps


def test_connections_per_address_are_capped(tmp_path: Path) -> None:
    server = start_server(tmp_path, max_connections_per_address=5, header_timeout=30.0)
    held: list[socket.socket] = []
    try:
        held = [raw_socket(server, source="127.0.0.2") for _ in range(5)]
        time.sleep(0.2)  # the server has accepted them
        extra = raw_socket(server, source="127.0.0.2")
        assert closed_by_server(extra, 3.0), "a sixth connection from one address was admitted"
        extra.close()
        assert_serves(server)  # another address (127.0.0.1) is not affected
        held.pop().close()
        time.sleep(0.2)  # the server has seen the close
        assert_serves(server, source="127.0.0.2")  # a freed slot can be used again
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_websockets_count_against_the_per_address_cap_and_free_their_slots(tmp_path: Path) -> None:
    # Plain WebSockets leave the connection guard's protocol for picows (web/fastws.py); their slots
    # must still count while they are open and come back when they close, round after round.
    server = start_server(tmp_path, max_connections_per_address=3, header_timeout=30.0, limits="relaxed")
    try:
        status, body = signed_call(server, "/createSignalingChannel", {"ChannelName": "capped"})
        assert status == 200, body
        arn = str(body["ChannelARN"])
        for round_ in range(3):
            held = [raw_ws(server, ws_url(server, arn, f"v{round_}x{i}"), source="127.0.0.2") for i in range(3)]
            extra = raw_socket(server, source="127.0.0.2")
            assert closed_by_server(extra, 3.0), f"round {round_}: a fourth connection from one address was admitted"
            extra.close()
            for sock in held:
                sock.close()
            time.sleep(0.3)  # the server has seen the closes
        assert_serves(server, source="127.0.0.2")
    finally:
        server.stop()


def test_total_connections_are_capped(tmp_path: Path) -> None:
    server = start_server(tmp_path, max_connections=6, header_timeout=30.0)
    held: list[socket.socket] = []
    try:
        held = [raw_socket(server, source=f"127.0.0.{2 + i % 3}") for i in range(6)]
        time.sleep(0.2)
        extra = raw_socket(server, source="127.0.0.9")
        assert closed_by_server(extra, 3.0), "a connection beyond max_connections was admitted"
        extra.close()
        for sock in held[:2]:
            sock.close()
        time.sleep(0.2)
        assert_serves(server)
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_limits_off_lifts_the_connection_caps(tmp_path: Path) -> None:
    server = start_server(tmp_path, max_connections_per_address=2, max_connections=3, header_timeout=30.0,
                          limits="off")  # fmt: skip
    held: list[socket.socket] = []
    try:
        held = [raw_socket(server) for _ in range(5)]
        time.sleep(0.2)
        assert_serves(server)
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock)[0] == 200
    finally:
        for sock in held:
            sock.close()
        server.stop()


# ============================================================================= WebSocket frames


def ws_url(server: SignaliteServer, arn: str, client_id: str | None = None) -> str:
    url = f"ws://127.0.0.1:{server.port}/?X-Amz-ChannelARN={quote(arn, safe='')}"
    if client_id:
        url += f"&X-Amz-ClientId={client_id}"
    return presign_url(url, KEY, REGION, server.clock.time())


def masked(opcode: int, payload: bytes, *, fin: bool = True, declared: int | None = None) -> bytes:
    n = len(payload) if declared is None else declared
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_ws(server: SignaliteServer, url: str, source: str | None = None) -> socket.socket:
    sock = raw_socket(server, source=source)
    target = url.split(f"127.0.0.1:{server.port}", 1)[1]
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 101"), data
    return sock


def close_code(sock: socket.socket, within: float = 5.0) -> int | None:
    """Read server frames until a close frame (its code) or EOF (None)."""
    deadline = time.monotonic() + within
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return None
        if not chunk:
            return None
        data += chunk
        while len(data) >= 2:
            opcode, n = data[0] & 0x0F, data[1] & 0x7F
            offset = 2
            if n == 126:
                n, offset = struct.unpack("!H", data[2:4])[0], 4
            elif n == 127:
                n, offset = struct.unpack("!Q", data[2:10])[0], 10
            if len(data) < offset + n:
                break
            payload, data = data[offset : offset + n], data[offset + n :]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    raise AssertionError("the server did not close the socket")


async def exchange_works(session: aiohttp.ClientSession, server: SignaliteServer, arn: str, viewer_id: str) -> None:
    """A fresh master and viewer on `arn` can still talk."""
    master = await session.ws_connect(ws_url(server, arn))
    viewer = await session.ws_connect(ws_url(server, arn, viewer_id))
    payload = base64.b64encode(b'{"type":"offer","sdp":"v=0"}').decode()
    await viewer.send_str(json.dumps({"action": "SDP_OFFER", "messagePayload": payload}))
    got = json.loads(await asyncio.wait_for(master.receive_str(), 5))
    assert got == {"senderClientId": viewer_id, "messageType": "SDP_OFFER", "messagePayload": payload}
    await viewer.close()
    await master.close()


@pytest.mark.parametrize(
    "frames",
    [
        [masked(0x1, b'{"action":"SDP_OFFER","messagePayload":"' + b"A" * 70000 + b'"}')],
        [masked(0x2, os.urandom(70000))],
        [masked(0x1, b"a" * 40000, fin=False), masked(0x0, b"b" * 40000)],  # fragments adding up past 64 KiB
        [masked(0x1, b"", declared=2**62)],  # a length nobody will ever send
    ],
    ids=["text-70k", "binary-70k", "fragmented-80k", "declared-2^62"],
)
async def test_oversized_websocket_frame_closes_only_that_socket(
    server: SignaliteServer, channel: str, frames: list[bytes]
) -> None:
    async with aiohttp.ClientSession() as session:
        master = await session.ws_connect(ws_url(server, channel))
        bystander = await session.ws_connect(ws_url(server, channel, "bystander"))
        attacker = raw_ws(server, ws_url(server, channel, "attacker"))
        try:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                for frame in frames:
                    attacker.sendall(frame)
            code = await asyncio.to_thread(close_code, attacker)
            assert code in (1009, None), code  # 1009: message too big (or the connection simply dropped)
            if frames[0][1] & 0x7F != 127 or len(frames) > 1:
                assert code == 1009, code
        finally:
            attacker.close()
        # The others on the same channel carry on.
        payload = base64.b64encode(b'{"type":"offer"}').decode()
        await bystander.send_str(json.dumps({"action": "SDP_OFFER", "messagePayload": payload}))
        got = json.loads(await asyncio.wait_for(master.receive_str(), 5))
        assert got["senderClientId"] == "bystander"
        await master.send_str(json.dumps({"action": "SDP_ANSWER", "messagePayload": payload,
                                          "recipientClientId": "bystander"}))  # fmt: skip
        got = json.loads(await asyncio.wait_for(bystander.receive_str(), 5))
        assert got["messageType"] == "SDP_ANSWER"
        await bystander.close()
        await master.close()
        await exchange_works(session, server, channel, "after-attack")


@pytest.mark.parametrize(
    ("attack", "expected"),
    [
        (masked(0x1, b"\xff\xfe{not utf-8}"), 1007),  # invalid UTF-8 in a text frame
        (masked(0x9, b"p" * 200), 1002),  # a ping with more than 125 bytes
        (masked(0x3, b"reserved opcode"), 1002),
        (bytes([0xC1]) + masked(0x1, b"hi")[1:], 1002),  # RSV1 set without an extension
        (masked(0x0, b"continuation of nothing"), 1002),
        (masked(0x9, b"x", fin=False), 1002),  # a fragmented control frame
        (masked(0x8, b"\x00\x01"), 1002),  # a close with an invalid code
    ],
    ids=["bad-utf8", "big-ping", "opcode-3", "rsv1", "stray-continuation", "fragmented-ping", "bad-close-code"],
)
async def test_protocol_errors_close_only_that_socket(
    server: SignaliteServer, channel: str, attack: bytes, expected: int
) -> None:
    attacker = raw_ws(server, ws_url(server, channel, "odd"))
    try:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            attacker.sendall(attack)
        assert await asyncio.to_thread(close_code, attacker) == expected
    finally:
        attacker.close()
    async with aiohttp.ClientSession() as session:
        await exchange_works(session, server, channel, "after-odd")
