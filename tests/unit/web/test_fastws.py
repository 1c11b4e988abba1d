"""The upgrade check that decides which WebSockets skip aiohttp, and the raw refusal response."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from signalite.web.fastws import UpgradeHeaders, parse_upgrade, refusal_response

KEY = base64.b64encode(b"0123456789abcdef").decode()
TARGET = "/?X-Amz-ChannelARN=arn%3Aaws%3Akinesisvideo%3Aus-east-1%3A000000000000%3Achannel%2Fc%2F1&X-Amz-ClientId=v1"


def request(target: str = TARGET, *lines: str, base: tuple[str, ...] | None = None) -> bytes:
    headers = base if base is not None else (
        "Host: 127.0.0.1:4567", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13",
    )  # fmt: skip
    return ("\r\n".join((f"GET {target} HTTP/1.1", *headers, *lines)) + "\r\n\r\n").encode()


def test_a_plain_upgrade_is_taken_with_its_target_and_headers() -> None:
    upgrade = parse_upgrade(request(TARGET, "Origin: https://example.com", "User-Agent:  x y  "))
    assert upgrade is not None
    assert upgrade.method == "GET"
    assert upgrade.raw_path == TARGET
    assert upgrade.headers.getall("host") == ["127.0.0.1:4567"]
    assert upgrade.headers.getall("user-agent") == ["x y"]  # surrounding whitespace is not part of a value
    assert list(upgrade.headers)[:2] == ["Host", "Upgrade"]


@pytest.mark.parametrize(
    "data",
    [
        request().replace(b"GET ", b"POST "),
        request().replace(b"HTTP/1.1", b"HTTP/1.0"),
        request("http://example.com/"),  # absolute form
        request("/?a=\x01b"),  # a control character in the target
        request("/?a=\x7f"),
        request()[:-2],  # incomplete
        request() + b"GET / HTTP/1.1\r\n",  # pipelined bytes after it
        request() + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a whole second request after it
        request() + b"X-After: 1\r\n\r\n",  # "headers" after the blank line
        request().replace(b"Upgrade: websocket", b"Upgrade: h2c"),
        request().replace(b"Connection: Upgrade", b"Connection: keep-alive"),
        request().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"),
        request().replace(KEY.encode(), b"short"),
        request(TARGET, "Host: other"),  # two Hosts
        request(TARGET, "Content-Length: 5"),
        request(TARGET, "Transfer-Encoding: chunked"),
        request(TARGET, "Bad Name: x"),
        request(TARGET, "NoColon"),
        request(TARGET, " folded: x"),
        request(TARGET, "X-Ctl: a\x01b"),
        request(TARGET, "X-Utf8: \u00e9".encode().decode("latin-1")),
        request(TARGET, "X-Long: " + "a" * 9000),
        request(base=("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}",
                      "Sec-WebSocket-Version: 13")),
    ],
    ids=["post", "http10", "absolute", "target-ctl", "target-del", "incomplete", "pipelined", "pipelined-whole",
         "after-blank", "h2c", "keep-alive", "version", "key", "two-hosts",
         "body", "chunked", "bad-name", "no-colon", "folded", "control-char", "non-ascii", "too-long", "no-host"],
)  # fmt: skip
def test_anything_unusual_is_left_to_aiohttp(data: bytes) -> None:
    assert parse_upgrade(data) is None


def test_case_does_not_matter_but_a_connection_token_list_is_left_to_aiohttp() -> None:
    data = request().replace(b"Connection: Upgrade", b"connection: UPGRADE")
    assert parse_upgrade(data.replace(b"Upgrade: websocket", b"upgrade: WebSocket")) is not None
    # picows accepts exactly "upgrade"; Firefox sends "keep-alive, Upgrade", which aiohttp serves.
    assert parse_upgrade(request().replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade")) is None


@given(st.binary(max_size=600))
def test_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    parse_upgrade(data)
    parse_upgrade(b"GET / HTTP/1.1\r\n" + data + b"\r\n\r\n")


def test_refusal_response_is_a_closing_http_response_with_the_body() -> None:
    body = b'{"__type":"ResourceNotFoundException"}'
    raw = refusal_response(404, {"Content-Type": "application/json", "x-amzn-ErrorType": "X"}, body, 1_800_000_000)
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 404 Not Found"
    assert "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert "Connection: close" in lines
    assert "Date: Fri, 15 Jan 2027 08:00:00 GMT" in lines  # the clock it was given
    assert rest == body


_NAMES = st.sampled_from(["Host", "host", "HOST", "X-Amz-Date", "x-amz-date", "Origin", "X-Other"])


@given(st.lists(st.tuples(_NAMES, st.text(alphabet="abc ,=", max_size=5)), max_size=8), _NAMES)
def test_upgrade_headers_read_like_aiohttps_multidict(pairs: list[tuple[str, str]], name: str) -> None:
    # SigV4 verification reads the upgrade's headers as it reads aiohttp's: same answers.
    ours = UpgradeHeaders([(k.lower(), k, v) for k, v in pairs])
    theirs = CIMultiDict(pairs)
    assert ours.getall(name, None) == theirs.getall(name, None)
    assert (name in ours) == (name in theirs)
    assert list(ours) == list(theirs)
    if name not in theirs:
        with pytest.raises(KeyError):
            ours.getall(name)
