"""The bus's RESP2 client pieces: command encoding, and the pure-Python reply parser against hiredis.

The parser is fed random replies cut at random places (as TCP delivers them) and must give exactly what
hiredis gives (the bus uses hiredis when it is installed and `PyReader` otherwise, and treats their
values the same way).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalite.bus.resp import ProtocolError, PyReader, ReplyError, command, make_reader, publish_command


def encode(value: Any) -> bytes:
    """A reply as Redis would send it."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, ReplyError):
        return b"-" + str(value).encode() + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    return b"*%d\r\n" % len(value) + b"".join(encode(v) for v in value)


line = st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=20)
leaf = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.binary(max_size=300),  # bulk strings may hold CR LF and anything else
    line.map(lambda s: "OK " + s),
    line.map(lambda s: ReplyError("ERR " + s)),
)
reply = st.recursive(leaf, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


def comparable(value: Any) -> Any:
    if isinstance(value, Exception):
        return (type(value).__name__, str(value))
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, str):
        return value.encode()  # simple strings read as bytes, like bulk strings
    return value


def read_all(reader: Any, data: bytes, cuts: list[int]) -> list[Any]:
    out = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        reader.feed(data[start:cut])
        start = cut
        while (value := reader.gets()) is not False:
            out.append(comparable(value))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(reply, min_size=1, max_size=8), st.lists(st.integers(0, 10_000), max_size=6))
def test_pyreader_reads_what_redis_sends_however_it_is_cut(replies: list[Any], cuts: list[int]) -> None:
    data = b"".join(encode(r) for r in replies)
    cuts = [c % (len(data) + 1) for c in cuts]
    expected = [comparable(r) for r in replies]
    assert read_all(PyReader(), data, cuts) == expected
    hiredis_reader = make_reader(True)
    if not isinstance(hiredis_reader, PyReader):
        assert read_all(hiredis_reader, data, cuts) == expected


def test_byte_by_byte() -> None:
    data = encode([b"message", b"P:c:node\x1f1", b"d\x1fx" * 100]) + encode(0) + encode(b"node\x1f7")
    reader = PyReader()
    out = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        while (value := reader.gets()) is not False:
            out.append(value)
    assert out == [[b"message", b"P:c:node\x1f1", b"d\x1fx" * 100], 0, b"node\x1f7"]


@pytest.mark.parametrize("garbage", [b"?what\r\n", b":notanumber\r\n", b"$x\r\n"])
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    reader = PyReader()
    reader.feed(garbage)
    with pytest.raises(ProtocolError):
        reader.gets()


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert command(b"PING") == b"*1\r\n$4\r\nPING\r\n"
    assert command(b"SUBSCRIBE", b"a\r\nb", b"") == b"*3\r\n$9\r\nSUBSCRIBE\r\n$4\r\na\r\nb\r\n$0\r\n\r\n"
    rng = random.Random(1)
    for _ in range(50):
        channel, message = rng.randbytes(rng.randrange(40)), rng.randbytes(rng.randrange(600))
        assert publish_command(channel, message) == command(b"PUBLISH", channel, message)
        reader = PyReader()
        reader.feed(publish_command(channel, message))
        assert reader.gets() == [b"PUBLISH", channel, message]  # a command reads as an array reply
