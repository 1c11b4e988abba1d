"""A minimal Redis client for the bus's hot path: RESP2 over an asyncio protocol, pipelined, no pool.

redis-py costs tens of microseconds per command in asyncio (connection-pool checkout, a future and a
task switch per call, response parsing in Python); the bus sends one or two commands per relayed
message, so the data path (forwards and the pub/sub subscription) talks to Redis through `Link`
instead: commands are written together once per event-loop iteration, replies are matched to
callbacks in order as they arrive, and pushed pub/sub messages go to a plain function. Rare control
calls (claims, heartbeats) stay on redis-py.

Replies are parsed by hiredis when it is installed, else by `PyReader`; both give the same values:
bytes for bulk and simple strings, int, None for nil, lists for arrays and a `ReplyError` instance
(returned, not raised) for error replies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

try:  # pragma: no cover - depends on the environment
    import hiredis
except ImportError:  # pragma: no cover
    hiredis = None  # type: ignore[assignment]


class ReplyError(Exception):
    """An error reply from Redis (`-ERR ...`, `-NOSCRIPT ...`)."""


class ProtocolError(Exception):
    """Bytes that are not RESP2: the connection cannot be trusted any more."""


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One reply starting at `pos`: (value, position after it); raises _Incomplete if it is cut short."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if stop + 2 > len(buf):
            raise _INCOMPLETE
        return buf[end + 2 : stop], stop + 2
    if kind == 58:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 42:  # * array
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        pos = end + 2
        items = []
        for _ in range(n):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 43:  # + simple string
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # - error
        return ReplyError(buf[pos + 1 : end].decode(errors="replace")), end + 2
    raise ProtocolError(f"unexpected RESP type byte {kind!r}")


class PyReader:
    """RESP2 reply parser (the hiredis.Reader interface: feed() bytes, gets() a reply or False)."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos < len(self._buf):
            self._buf = self._buf[self._pos :] + data
        else:
            self._buf = data
        self._pos = 0

    def gets(self) -> Any:
        try:
            value, self._pos = _parse(self._buf, self._pos)
        except _Incomplete:
            return False
        except (ValueError, IndexError) as e:
            raise ProtocolError(str(e)) from None
        return value


def make_reader(use_hiredis: bool = True) -> Any:
    if use_hiredis and hiredis is not None:
        return hiredis.Reader(protocolError=ProtocolError, replyError=ReplyError)
    return PyReader()


def command(*parts: bytes) -> bytes:
    """A command in RESP2."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def publish_command(channel: bytes, message: bytes) -> bytes:
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(channel), channel, len(message), message)


# A reply callback: fn(reply, a, b) with two arguments of the caller's (no closure per command).
Callback = Callable[[Any, Any, Any], None]


def _resolve(reply: Any, future: asyncio.Future[Any], _: Any) -> None:
    if not future.done():
        if isinstance(reply, ReplyError):
            future.set_exception(reply)
        else:
            future.set_result(reply)


class Link(asyncio.Protocol):
    """One connection to Redis.

    Commands: `send(data, fn, a, b)` queues `data` for this loop iteration's single write and calls
    `fn(reply, a, b)` when its reply arrives (replies come back in order). In subscribed mode, once
    `subscribed` is set, every reply is a push and goes to `on_push` instead.
    """

    def __init__(self, on_push: Callable[[Any], None] | None = None, *, use_hiredis: bool = True) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.reader = make_reader(use_hiredis)
        self.waiters: deque[tuple[Callback, Any, Any]] = deque()
        self.on_push = on_push
        self.subscribed = False
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.closed = False
        # Set while the transport's buffer is over its high-water mark: writers wait on it.
        self.paused: asyncio.Future[None] | None = None
        # When the oldest unanswered command was sent (monotonic), for the stall watchdog.
        self.waiting_since = 0.0
        self._out: list[bytes] = []

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=4 * 1024 * 1024)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        try:
            reader.feed(data)
            if self.subscribed:
                push = self.on_push
                assert push is not None
                while (reply := reader.gets()) is not False:
                    push(reply)
                return
            waiters = self.waiters
            while (reply := reader.gets()) is not False:
                fn, a, b = waiters.popleft()
                fn(reply, a, b)
            if waiters:
                self.waiting_since = time.monotonic()
        except (ProtocolError, IndexError) as e:  # garbage, or a reply nobody asked for
            self.abort(e)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        paused, self.paused = self.paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)
        # Handshake calls waiting for a reply fail; the owner accounts for the rest (see `pending`).
        for fn, a, _ in self.waiters:
            if fn is _resolve and not a.done():
                a.set_exception(ConnectionError("connection to Redis lost"))

    def pause_writing(self) -> None:
        if self.paused is None:
            self.paused = self.loop.create_future()

    def resume_writing(self) -> None:
        paused, self.paused = self.paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    # -- use -------------------------------------------------------------------------------------------

    def send(self, data: bytes, fn: Callback | None = None, a: Any = None, b: Any = None) -> None:
        """Queue a command (written one loop iteration later, with the others)."""
        if fn is not None:
            if not self.waiters:
                self.waiting_since = time.monotonic()
            self.waiters.append((fn, a, b))
        out = self._out
        if not out:
            self.loop.call_soon(self._flush_next)
        out.append(data)

    def _flush_next(self) -> None:
        # One more loop iteration before the write: what the sockets that are ready by then bring
        # joins the same write. Each write wakes Redis, and on a shared core every wake-up is a
        # context switch for the node; at 30k msgs/s across two nodes this cut the one-way p50 from
        # 0.56-0.70 to 0.39-0.44 ms (bench/cluster.py --low-rate 30000), at low load it costs nothing
        # measurable (an iteration with nothing else to do is a few microseconds).
        self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        transport = self.transport
        if out and transport is not None and not self.closed:
            transport.write(b"".join(out))

    def call(self, *parts: bytes) -> asyncio.Future[Any]:
        """A command whose reply is awaited (handshakes and rare calls); error replies raise ReplyError."""
        future: asyncio.Future[Any] = self.loop.create_future()
        self.send(command(*parts), _resolve, future)
        return future

    def stalled(self, seconds: float) -> bool:
        """A command has waited more than `seconds` for its reply."""
        return bool(self.waiters) and time.monotonic() - self.waiting_since > seconds

    def abort(self, error: Exception | None = None) -> None:
        if self.transport is not None:
            self.transport.abort()
        else:
            self.connection_lost(error)


async def open_link(
    url: str,
    *,
    on_push: Callable[[Any], None] | None = None,
    timeout: float = 2.0,
    use_hiredis: bool = True,
) -> Link:
    """Connect to the Redis at `url` (redis://, rediss://, unix://), authenticate and select its database.

    A subscriber link (`on_push` given) skips SELECT: pub/sub ignores database numbers.
    """
    params = parse_url(url)
    link = Link(on_push, use_hiredis=use_hiredis)
    loop = link.loop
    cls = params.pop("connection_class", None)

    async def connect() -> None:
        if cls is not None and issubclass(cls, UnixDomainSocketConnection):
            await loop.create_unix_connection(lambda: link, params["path"])
        else:
            host, port = params.get("host", "localhost"), int(params.get("port", 6379))
            context: ssl.SSLContext | None = None
            if cls is not None and issubclass(cls, SSLConnection):
                # The same TLS settings (and URL query options) as redis-py's own connections.
                ssl_options: dict[str, Any] = {k: v for k, v in params.items() if k.startswith("ssl_")}
                context = SSLConnection(host=host, port=port, **ssl_options).ssl_context.get()
            await loop.create_connection(lambda: link, host, port, ssl=context)
        password, username = params.get("password"), params.get("username")
        if password is not None:
            auth = (username.encode(),) if username else ()
            await link.call(b"AUTH", *auth, password.encode())
        db = int(params.get("db", 0) or 0)
        if db and on_push is None:
            await link.call(b"SELECT", str(db).encode())

    try:
        await asyncio.wait_for(connect(), timeout)
    except BaseException:
        link.abort()
        raise
    return link
