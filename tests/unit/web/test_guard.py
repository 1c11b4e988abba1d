"""web.guard._body_length: the substring fast path decides exactly as the framing regex does."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signalite.web.guard import _FRAMING, _body_length


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
