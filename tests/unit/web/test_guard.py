"""web.guard: `_body_length`'s fast path decides exactly as the framing regex does; the silence
deadline of new connections is kept by one sweep, and forgets every connection that speaks or leaves."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signalite.web.guard import _FRAMING, ConnectionGuard, GuardLimits, _body_length, _GuardedProtocol


def by_regex(block: bytes) -> int | None:
    length = 0
    for match in _FRAMING.finditer(block):
        if match.group("length") is None:
            return None
        length = int(match.group("length"))
    return length


REQUEST_LINE = b"POST /describeSignalingChannel HTTP/1.1"
HEADERS = [
    b"Host: 127.0.0.1:4567",
    b"Content-Type: application/json",
    b"Content-Length: 42",
    b"content-length:7",
    b"CONTENT-LENGTH:\t 1234",
    b"Content-Length: 12abc",
    b"Content-Length: abc",
    b"Content-Length: 1234567890123",
    b"Content-Length:",
    b"Transfer-Encoding: chunked",
    b"transfer-encoding: gzip, chunked",
    b"Transfer-Encoding: gzip",
    b"Upgrade: websocket",
    b"upgrade:   WebSocket",
    b"Upgrade: h2c",
    b"Connection: Upgrade",
    b"X-Note: content-length: 99",
    b"X-Amz-Date: 20261126T120000Z",
]


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_every_small_combination_of_headers(count: int) -> None:
    for combo in itertools.permutations(HEADERS, count):
        block = b"\r\n".join((REQUEST_LINE, *combo))
        assert _body_length(block, len(block)) == by_regex(block), block


@given(st.lists(st.sampled_from(HEADERS) | st.binary(max_size=40).filter(lambda b: b"\r\n" not in b), max_size=6))
def test_random_header_blocks(headers: list[bytes]) -> None:
    block = b"\r\n".join((REQUEST_LINE, *headers))
    assert _body_length(block, len(block)) == by_regex(block)
    # The same block inside a longer buffer: only data[:end] counts.
    tail = b"\r\n\r\nContent-Length: 5\r\nUpgrade: websocket"
    assert _body_length(block + tail, len(block)) == by_regex(block)


def test_the_usual_request_is_read_without_the_regex() -> None:
    block = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 321\r\nX-Amz-Date: 1"
    assert _body_length(block, len(block)) == 321
    health = b"GET /health HTTP/1.1\r\nHost: a"
    assert _body_length(health, len(health)) == 0
    upgrade = b"GET /?X HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade"
    assert _body_length(upgrade, len(upgrade)) is None


# -- the silence deadline: one sweep for every new connection -------------------------------------


class _Transport:
    """The part of a transport the guard touches before any protocol takes over."""

    def __init__(self) -> None:
        self.aborted = False

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def abort(self) -> None:
        self.aborted = True


class _Inner:
    """Stands in for aiohttp's protocol (whose own behaviour is not what these tests are about)."""

    def __init__(self) -> None:
        self.received = b""

    def connection_made(self, transport: object) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: object) -> None:
        pass


def _connect(guard: ConnectionGuard) -> tuple[_GuardedProtocol, _Transport]:
    protocol = _GuardedProtocol(_Inner, guard)
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def test_a_silent_connection_is_closed_by_the_sweep_and_forgotten() -> None:
    async def run() -> None:
        guard = ConnectionGuard(GuardLimits(header_timeout=5.0, first_request_timeout=0.08))
        _, silent = _connect(guard)
        await asyncio.sleep(0.04)
        assert not silent.aborted  # not before its deadline
        await asyncio.sleep(0.12)  # the deadline, plus a sweep step (a quarter of the timeout)
        assert silent.aborted
        assert not guard._silent and guard._sweeper is None  # nothing left to watch: no timer either

    asyncio.run(run())


def test_a_connection_that_speaks_or_leaves_is_no_longer_watched() -> None:
    async def run() -> None:
        guard = ConnectionGuard(GuardLimits(header_timeout=5.0, first_request_timeout=0.05))
        talker, talker_transport = _connect(guard)
        leaver, leaver_transport = _connect(guard)
        _, silent = _connect(guard)
        assert len(guard._silent) == 3
        talker.data_received(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        leaver.connection_lost(None)
        assert len(guard._silent) == 1
        await asyncio.sleep(0.15)
        assert silent.aborted
        assert not talker_transport.aborted and not leaver_transport.aborted
        assert not guard._silent

    asyncio.run(run())


def test_many_connections_share_one_sweep_timer() -> None:
    async def run() -> None:
        guard = ConnectionGuard(GuardLimits(header_timeout=5.0, first_request_timeout=60.0))
        protocols = [_connect(guard)[0] for _ in range(100)]
        sweeper = guard._sweeper
        assert sweeper is not None and len(guard._silent) == 100
        for protocol in protocols:
            protocol.data_received(b"GET / HTTP/1.1\r\n\r\n")
        assert not guard._silent
        assert guard._sweeper is sweeper  # (it stops at its next run, finding nothing to watch)

    asyncio.run(run())
