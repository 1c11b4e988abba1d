"""Signaling WebSockets served by picows instead of aiohttp.

Theory of operation. A KVS client opens a fresh TCP connection for each signaling WebSocket and
sends one GET with `Upgrade: websocket` as its first bytes. The connection guard (web/guard.py)
sees those bytes before any HTTP server does. When they are one complete, unremarkable upgrade
request (`parse_upgrade`), the guard holds the connection's reading, and `SignalingSockets`
admits it (auth, channel, hub) exactly as for an aiohttp request. An admitted connection is handed,
bytes and all, to a picows protocol (`hand_off`), which answers the handshake and parses frames in
Cython; `FastSocket` carries its frames to the hub. A refusal is written as the same AWS error
response aiohttp would have sent. TLS makes no difference (the hand-off happens above it), nor does
a cluster (forwards to other nodes go out through `Bus.forward_nowait`, in order). Anything else --
an upgrade after other requests, any header the check does not recognise, or picows missing -- goes
to aiohttp untouched, whose WebSocket path stays complete.

Why: aiohttp keeps a request handler, a parsed request, a handler task and a response object alive
for each socket's whole life. Skipping them costs less per connection set up and per idle
connection held (bench/relay.py), and picows parses frames without a queue or a future per message.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import re
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any, Protocol

from multidict import CIMultiDict, CIMultiDictProxy

try:  # picows is optional at import time: without it every WebSocket takes the aiohttp path
    import picows
    from picows.picows import WSProtocol  # type: ignore[attr-defined]

    # hand_off() calls picows's protocol constructor, which is not public API: pinned in pyproject.
    AVAILABLE = str(getattr(picows, "__version__", "")).startswith("2.3.")
except ImportError:  # pragma: no cover - picows is a dependency
    AVAILABLE = False

# Inbound frames are small JSON objects (payload <= 10 KiB); anything far larger is hostile.
MAX_FRAME_BYTES = 64 * 1024
_MAX_HEAD = 8190  # aiohttp's own line limit; longer upgrade requests are left to it
_READ_BUFFER = 2048  # picows grows it as needed; most frames here are a few hundred bytes
_CLOSE_WAIT = 5.0  # seconds the peer has to answer our close frame

# Every header line after the request line: a token, a colon, a value without control characters
# (one pass over the block instead of one per line).
_TARGET = re.compile(r"/[!-~]*")  # origin form, visible ASCII only
_HEADER_LINES = re.compile(r"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*)+")


class Upgrade:
    """A WebSocket upgrade request as the admission code reads it (what it reads of aiohttp's request)."""

    __slots__ = ("headers", "method", "raw_path")

    def __init__(self, raw_path: str, headers: UpgradeHeaders) -> None:
        self.method = "GET"
        self.raw_path = raw_path
        self.headers = headers


_ABSENT: Any = object()


class UpgradeHeaders:
    """An upgrade's headers, read as SigV4 verification reads aiohttp's (`getall`, `in`, names): nothing else.

    A scan of a few pairs: cheaper than a multidict for the one or two headers a handshake reads.
    """

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[str, str, str]]) -> None:
        self._pairs = pairs  # (lower-case name, name, value), in arrival order

    def getall(self, name: str, default: Any = _ABSENT) -> Any:
        key = name.lower()
        values = [value for lower, _, value in self._pairs if lower == key]
        if values:
            return values
        if default is _ABSENT:
            raise KeyError(name)
        return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(lower == name.lower() for lower, _, _ in self._pairs)

    def __iter__(self) -> Iterator[str]:
        # Each name once, as first spelt (multidict 7 iterates the same way; len counts them all).
        first: dict[str, str] = {}
        for lower, name, _ in self._pairs:
            first.setdefault(lower, name)
        return iter(first.values())


def parse_upgrade(data: bytes) -> Upgrade | None:
    """The upgrade request that `data` holds exactly and whole, or None (for aiohttp to handle).

    Accepts only what is unremarkable: `GET <origin-form> HTTP/1.1`, well-formed ASCII header
    lines, one Host, `Upgrade: websocket`, `Connection: upgrade`, version 13, a
    key of 16 bytes, and no body. None is never an error; it only means "not this path".
    """
    # The blank line must come last and only there; an earlier one fails the header-line check
    # below (it is no `name:value`), so testing the end is enough.
    end = len(data) - 4
    if end > _MAX_HEAD or not data.endswith(b"\r\n\r\n"):
        return None
    try:
        head = data[:end].decode("ascii")
    except UnicodeDecodeError:
        return None
    line_end = head.find("\r\n")
    if line_end < 0 or _HEADER_LINES.fullmatch(head, line_end) is None:
        return None
    parts = head[:line_end].split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1" or _TARGET.fullmatch(parts[1]) is None:
        return None
    seen: dict[str, str] = {}
    pairs: list[tuple[str, str, str]] = []
    for line in head[line_end + 2 :].split("\r\n"):
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        key = name.lower()
        if key in seen and key in _SINGLE:
            return None
        seen[key] = value
        pairs.append((key, name, value))
    if (
        seen.get("upgrade", "").lower() != "websocket"
        # picows takes `Connection: Upgrade` only; a token list (Firefox: "keep-alive, Upgrade") is aiohttp's
        or seen.get("connection", "").lower() != "upgrade"
        or seen.get("sec-websocket-version") != "13"
        or not _valid_key(seen.get("sec-websocket-key", ""))
        or "host" not in seen
        or "transfer-encoding" in seen
        or seen.get("content-length", "0") != "0"
    ):
        return None
    return Upgrade(parts[1], UpgradeHeaders(pairs))


# Headers whose repetition makes a request ambiguous: such requests are left to aiohttp.
_SINGLE = frozenset(
    (
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "content-length",
        "transfer-encoding",
    )
)


def _valid_key(key: str) -> bool:
    if len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def refusal_response(status: int, headers: dict[str, str], body: bytes, now: float) -> bytes:
    """An HTTP/1.1 response that closes the connection (a refused handshake), as bytes.

    `now` is the server's (injectable) clock: the KVS C SDK corrects its clock from this Date.
    """
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [
        f"Content-Length: {len(body)}",
        f"Date: {email.utils.formatdate(now, usegmt=True)}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


class FastSocketOwner(Protocol):
    """What a FastSocket reports to (SignalingSockets)."""

    def fast_connected(self, socket: FastSocket) -> None: ...
    def fast_text(self, socket: FastSocket, text: str) -> None: ...
    def fast_activity(self, socket: FastSocket) -> None: ...
    def fast_disconnected(self, socket: FastSocket) -> None: ...


if AVAILABLE:
    _Listener: Any = picows.WSListener
    _TEXT, _BINARY, _CONTINUATION = picows.WSMsgType.TEXT, picows.WSMsgType.BINARY, picows.WSMsgType.CONTINUATION
    _PING, _PONG, _CLOSE = picows.WSMsgType.PING, picows.WSMsgType.PONG, picows.WSMsgType.CLOSE
    _CLOSE_CODES = {code.value: code for code in picows.WSCloseCode}
    _NORMAL, _NO_CODE = picows.WSCloseCode.OK, picows.WSCloseCode.NO_INFO
else:  # pragma: no cover
    _Listener = object


class FastSocket(_Listener):  # type: ignore[misc]
    """One admitted signaling WebSocket on picows; `key` is whatever the owner keeps for it."""

    __slots__ = (
        "_binary", "_closer", "_on_gone", "_partial", "close_code", "closing", "key", "owner", "reported", "transport",
    )  # fmt: skip

    def __init__(self, owner: FastSocketOwner, key: Any) -> None:
        super().__init__()
        self.owner = owner
        self.key = key
        self.transport: Any = None  # picows's WSTransport, once the handshake is answered
        self.close_code: int | None = None
        self.closing = False  # a close frame has gone out (or the socket is gone)
        self.reported = False  # the owner has recorded the departure
        self._partial: bytearray | None = None  # a fragmented text message being put together
        self._binary = False  # a fragmented binary message is coming (and being ignored)
        self._closer: asyncio.TimerHandle | None = None
        self._on_gone: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self.closing

    # -- picows callbacks ------------------------------------------------------------------------

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        _shed_handshake(transport)
        self.owner.fast_connected(self)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if frame.rsv1 or frame.rsv2 or frame.rsv3:  # no extension is ever negotiated
            self.close(1002, "reserved bits set")
            return
        if kind == _TEXT and frame.fin and self._partial is None and not self._binary:
            try:
                text = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                self.close(1007, "invalid UTF-8")
                return
            self.owner.fast_text(self, text)
        elif kind == _PING:
            # Answered here rather than by picows: a ping counts as activity for the idle timeout.
            self.owner.fast_activity(self)
            if not self.closing:
                transport.send_pong(frame.get_payload_as_bytes())
        elif kind == _CLOSE:
            self._peer_closed(transport, frame)
        elif kind == _PONG:
            self.owner.fast_activity(self)
        else:
            self._fragment(kind, frame)

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closing = True
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        self.owner.fast_disconnected(self)
        self.transport = None  # (picows's transport refers back to this listener)
        gone, self._on_gone = self._on_gone, None
        if gone is not None:
            gone()
        _release_tls(transport)

    # -- frames ------------------------------------------------------------------------------------

    def _fragment(self, kind: Any, frame: Any) -> None:
        """Binary frames and fragmented messages (rare: clients send whole text frames)."""
        self.owner.fast_activity(self)
        if kind != _CONTINUATION and (self._partial is not None or self._binary):
            self.close(1002, "a new message inside a fragmented one")
            return
        if kind == _BINARY:
            # The protocol is JSON text only; a binary frame carries no correlationId to answer.
            self._binary = not frame.fin
            return
        if kind == _TEXT:  # the first fragment of a text message
            partial = self._partial = bytearray(frame.get_payload_as_memoryview())
        elif self._partial is not None:  # (a continuation)
            partial = self._partial
            partial += frame.get_payload_as_memoryview()
        elif self._binary:
            self._binary = not frame.fin  # the rest of a binary message, ignored like its start
            return
        else:
            self.close(1002, "a continuation of nothing")
            return
        if len(partial) > MAX_FRAME_BYTES:
            self._partial = None
            self.close(1009, "message too big")
            return
        if frame.fin:
            self._partial = None
            try:
                text = partial.decode("utf-8")
            except UnicodeDecodeError:
                self.close(1007, "invalid UTF-8")
                return
            self.owner.fast_text(self, text)

    def _peer_closed(self, transport: Any, frame: Any) -> None:
        code = frame.get_close_code()
        if code == _NO_CODE:
            code = _NORMAL
        if self.close_code is None:
            self.close_code = code.value
        if not self.closing:
            self.closing = True
            transport.send_close(code)  # echo the peer's code, as RFC 6455 asks (1000 when it sent none)
        transport.disconnect()

    # -- closing -----------------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Send a close frame; the peer's answer (or `_CLOSE_WAIT` seconds) ends the connection."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.close_code = code
        self.transport.send_close(_close_code(code), reason.encode()[:120])
        self._closer = asyncio.get_running_loop().call_later(_CLOSE_WAIT, self.transport.disconnect)


_NO_HEADERS = CIMultiDictProxy(CIMultiDict[str]())


class _Released(asyncio.BufferedProtocol):
    """What a finished TLS connection's SSL layer is left holding instead of picows's protocol."""

    def get_buffer(self, sizehint: int) -> bytearray:
        return bytearray(1)

    def buffer_updated(self, nbytes: int) -> None:
        pass


_RELEASED = _Released()


def _release_tls(transport: Any) -> None:
    """Break the cycle a finished TLS connection would leave for the collector.

    The SSL layer (uvloop's or asyncio's SSLProtocol) keeps bound methods of picows's protocol,
    whose transport keeps bound methods of the SSL layer's transport, which keeps the SSL layer:
    the socket's objects, ours included, waited for a collection. Handing the SSL layer a stateless
    protocol of our own drops its references to picows's.
    """
    underlying = getattr(transport, "underlying_transport", None)
    if underlying is not None and underlying.get_extra_info("ssl_object") is not None:
        underlying.set_protocol(_RELEASED)


def _shed_handshake(transport: Any) -> None:
    """Empty the upgrade request and 101 response that picows keeps on the transport for the
    socket's whole life (their header multidicts and the presigned target: about 1.5 KiB an idle
    connection). Nothing reads them after the handshake, which is over when this is called."""
    request, response = transport.request, transport.response
    if request is not None:
        request.path = b"/"
        request.headers = _NO_HEADERS
    if response is not None:
        response.headers = _NO_HEADERS


def _close_code(code: int) -> Any:
    # (not one picows names: 1000; the hub only uses codes it does)
    return _CLOSE_CODES.get(code, _NORMAL)


class _PicowsLog:
    """A logger-like object for picows: drops its per-connection info lines, keeps its warnings.

    (Given a real Logger, picows builds a child Logger for every connection.)
    """

    __slots__ = ()
    _log = logging.getLogger("signalite.picows")

    def isEnabledFor(self, level: int) -> bool:  # the logging API's name
        return level >= logging.WARNING and self._log.isEnabledFor(level)

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    def info(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log(self, level: int, *args: Any, **kwargs: Any) -> None:
        if level >= logging.WARNING:
            self._log.log(level, *args, **kwargs)

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self._log.warning(*args, **kwargs)

    def error(self, *args: Any, **kwargs: Any) -> None:
        self._log.error(*args, **kwargs)

    def exception(self, *args: Any, **kwargs: Any) -> None:
        self._log.exception(*args, **kwargs)

    def critical(self, *args: Any, **kwargs: Any) -> None:
        self._log.critical(*args, **kwargs)


_LOG = _PicowsLog()


def hand_off(transport: asyncio.Transport, request: bytes, socket: FastSocket, on_gone: Callable[[], None]) -> bool:
    """Give `transport` (`request` already read from it) to a picows protocol serving `socket`.
    False if picows did not take it (then the connection has been closed).

    `on_gone` runs once when the connection ends (the guard's count of open connections).
    """

    def listener_for(upgrade: Any) -> FastSocket:
        return socket

    protocol = WSProtocol(
        None, None, False, listener_for, _LOG,
        True,  # disconnect_on_exception: a bug in a callback costs that connection only
        None,  # no handshake timeout: the request is already here
        False, 20.0, 20.0, picows.WSAutoPingStrategy.PING_WHEN_IDLE,  # no auto-ping
        False,  # no auto-pong (see FastSocket.on_ws_frame)
        MAX_FRAME_BYTES, None, _READ_BUFFER,
    )  # fmt: skip
    socket._on_gone = on_gone
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    view = memoryview(request)
    while view:
        buffer = protocol.get_buffer(len(view))
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        view = view[n:]
        protocol.buffer_updated(n)
    if socket.transport is None:  # picows refused the handshake after all (and closed the socket)
        socket._on_gone = None
        transport.abort()
        return False
    return True
