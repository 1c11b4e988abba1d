"""Connection-level guards in front of aiohttp: connection caps and header-read deadlines.

aiohttp bounds header sizes and body sizes itself, but it will wait forever for the end of a
request's headers, and it accepts as many connections as the kernel hands over. `GuardedSite`
wraps each accepted connection's protocol:

* refuses (closes at once) a connection beyond `max_connections` in total or beyond
  `max_per_address` from one client address;
* closes a connection whose request headers are not complete within `header_timeout` seconds of
  their first byte (slowloris), without touching anyone else;
* closes a new connection that sends nothing at all within `first_request_timeout` seconds.

The two deadlines differ on purpose: browsers open connections ahead of need (Chromium keeps an
unused preconnected socket for up to 10 s) and a server that counts their silence against the header
deadline resets sockets the browser is about to use. nginx and Node give a new connection 60 s.

The wrapper forwards every protocol callback unchanged, so aiohttp (and the WebSockets it
upgrades) behave exactly as without it. aiohttp's protocol is created when a connection's first
bytes arrive: when those are an ordinary WebSocket upgrade and an `UpgradeTaker` is set, the connection
goes to it instead (web/fastws.py) and aiohttp never sees it.

Without TLS the listening socket is served by aiofastnet (aio-libs; what picows itself serves on)
rather than by uvloop's own transports. A uvloop transport hands picows a stand-in socket whose every
option call builds and drops a Python socket, with a getsockname() each: eight system calls per
connect that aiofastnet's transports, which keep the real socket, do not make. Side by side, a
connect-offer-answer-close session took about a fifth less CPU (bench/README.md). TLS stays on
uvloop's transports.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiofastnet
from aiohttp import web

from signalite.log import event
from signalite.web.fastws import FastSocket, Upgrade, hand_off, parse_upgrade


class UpgradeTaker(Protocol):
    """Admits ordinary WebSocket upgrades taken off aiohttp (SignalingSockets)."""

    async def admit_upgrade(self, upgrade: Upgrade) -> FastSocket | bytes: ...
    def admit_upgrade_now(self, upgrade: Upgrade) -> FastSocket | bytes | None: ...
    def abandon(self, socket: FastSocket) -> None: ...


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """None disables a limit."""

    max_connections: int | None = 20_000
    max_per_address: int | None = 1_000
    header_timeout: float | None = 10.0
    first_request_timeout: float | None = 60.0


class ConnectionGuard:
    """Counts open connections; shared by every wrapped protocol of one site."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_address: Counter[str] = Counter()
        self.refused = 0
        # Where ordinary WebSocket upgrades go instead of aiohttp (None: all go to aiohttp).
        self.upgrades: UpgradeTaker | None = None
        # New connections that have sent nothing yet -> their silence deadline (loop time), oldest
        # first. One sweep timer serves them all: a timer per connection cost a few us of every
        # connection's set-up, and a silence deadline (60 s by default) needs no finer grain.
        self._silent: dict[_GuardedProtocol, float] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def admit(self, address: str) -> bool:
        lim = self.limits
        if lim.max_connections is not None and self.total >= lim.max_connections:
            return False
        if lim.max_per_address is not None and self.per_address[address] >= lim.max_per_address:
            return False
        self.total += 1
        self.per_address[address] += 1
        return True

    def release(self, address: str) -> None:
        self.total -= 1
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]

    def watch_silence(self, protocol: _GuardedProtocol, timeout: float) -> None:
        """Close `protocol`'s connection if it is still silent `timeout` s from now (up to a sweep later)."""
        loop = asyncio.get_running_loop()
        self._silent[protocol] = loop.time() + timeout
        if self._sweeper is None:
            self._sweeper = loop.call_later(_sweep_step(timeout), self._sweep_silent, timeout)

    def unwatch_silence(self, protocol: _GuardedProtocol) -> None:
        self._silent.pop(protocol, None)

    def _sweep_silent(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = []
        # Deadlines grow in insertion order (one timeout for all; after a reload that shortens it,
        # newer connections wait at most the old timeout).
        for protocol, deadline in self._silent.items():
            if deadline > now:
                break
            expired.append(protocol)
        for protocol in expired:
            del self._silent[protocol]
            protocol.silence_expired()
        self._sweeper = loop.call_later(_sweep_step(timeout), self._sweep_silent, timeout) if self._silent else None


def _sweep_step(timeout: float) -> float:
    # A silent connection is closed between its deadline and a quarter of the timeout (at most 1 s) later.
    return min(1.0, timeout / 4)


# One pass over a header block finds what decides where the request ends.
_FRAMING = re.compile(
    rb"(?im)^(?:(?P<upgrade>upgrade:[ \t]*websocket)|(?P<chunked>transfer-encoding:[^\r\n]*chunked)"
    rb"|content-length:[ \t]*(?P<length>[0-9]{1,12}))"
)


# Cheap first pass: the header lines that can matter (a literal "\n" lets the engine skip ahead).
_FRAMING_HINT = re.compile(rb"\n(upgrade|transfer-encoding|content-length):", re.IGNORECASE)
_LENGTH_VALUE = re.compile(rb"[ \t]*([0-9]{1,12})")


def _body_length(data: bytes, end: int) -> int | None:
    """The Content-Length of the request header block `data[:end]`; None for a WebSocket upgrade or
    a chunked body.

    Runs once per request, so the usual block (nothing but at most one Content-Length) is decided
    by one scan; anything else takes `_FRAMING`, which has the last word. A missing or malformed
    Content-Length counts as 0 either way (aiohttp refuses such a request itself).
    """
    hint = _FRAMING_HINT.search(data, 0, end)
    if hint is None:
        return 0
    if len(hint.group(1)) == 14 and _FRAMING_HINT.search(data, hint.end(), end) is None:  # one content-length
        value = _LENGTH_VALUE.match(data, hint.end(), end)
        return int(value.group(1)) if value is not None else 0
    length = 0
    for match in _FRAMING.finditer(data, 0, end):
        if match.group("length") is None:
            return None
        length = int(match.group("length"))
    return length


_MAX_HEAD = 64 * 1024  # aiohttp refuses far smaller header blocks; we only need to find their end

# What the guard is waiting for on a connection.
_HEADERS, _BODY, _IDLE, _OFF = range(4)
# `_GuardedProtocol._pending` once an upgrade's admission has been decided (handed off or refused).
_DECIDED = object()


class _GuardedProtocol(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol, watching request boundaries for the header deadline.

    Each request's headers must be complete within `header_timeout` of its first byte, and the
    first request must start within `first_request_timeout` of the connection. The guard follows
    Content-Length bodies to find where the next request starts; after a WebSocket upgrade or a
    chunked body it stops watching that connection (aiohttp's keep-alive timeout still bounds idle
    time between requests).
    """

    __slots__ = (
        "_address", "_admitted", "_factory", "_guard", "_head", "_inner", "_lost", "_pending", "_remaining",
        "_silent", "_state", "_timer", "_transport",
    )  # fmt: skip
    _transport: asyncio.Transport | None

    def __init__(self, factory: Callable[[], Any], guard: ConnectionGuard) -> None:
        self._factory = factory
        self._inner: Any = None  # aiohttp's protocol, made when the first request is not taken elsewhere
        self._guard = guard
        self._address = ""
        self._admitted = False
        self._lost = False
        self._timer: asyncio.TimerHandle | None = None  # the header deadline of a request under way
        self._silent = False  # the guard is watching for a first byte (ConnectionGuard.watch_silence)
        self._head = bytearray()
        self._state = _IDLE
        self._remaining = 0
        self._transport = None
        # An upgrade being admitted: its admission task while that runs, then `_DECIDED`. While it is
        # not None, bytes that come before the hand-off are kept for the protocol that takes over.
        self._pending: asyncio.Future[FastSocket | bytes] | object | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self._transport = transport  # type: ignore[assignment]  # uvloop transports are not asyncio subclasses
        if not self._guard.admit(self._address):
            self._guard.refused += 1
            event(logging.WARNING, "connection.refused", address=self._address, reason="connection limit")
            # Aborted from a callback of its own: aiofastnet registers the socket for reading in a
            # call_soon after connection_made, so an abort from in here would leave that registration
            # behind on a closed descriptor, and the next connection given that descriptor would
            # never be read. (Until then data_received drops whatever arrives.)
            asyncio.get_running_loop().call_soon(transport.abort)  # type: ignore[attr-defined]
            return
        self._admitted = True
        limits = self._guard.limits
        if limits.header_timeout is None and limits.first_request_timeout is None:
            self._state = _OFF
        elif limits.first_request_timeout is not None:
            self._silent = True
            self._guard.watch_silence(self, limits.first_request_timeout)

    def _aiohttp(self) -> Any:
        inner = self._inner
        if inner is None:
            inner = self._inner = self._factory()
            inner.connection_made(self._transport)
        return inner

    def _arm(self) -> None:
        self._disarm()  # the first request's first byte replaces the silence deadline
        timeout = self._guard.limits.header_timeout
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._header_deadline)

    def _disarm(self) -> None:
        if self._silent:
            self._silent = False
            self._guard.unwatch_silence(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_deadline(self) -> None:
        self._close("request headers too slow")

    def silence_expired(self) -> None:
        """The guard's sweep: this connection sent nothing within `first_request_timeout`."""
        self._silent = False
        self._close("no request")

    def _close(self, reason: str) -> None:
        self._timer = None
        event(logging.WARNING, "connection.closed", address=self._address, reason=reason)
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:  # refused, the abort on its way (connection_made)
            return
        if self._inner is None:
            if self._pending is not None:  # frames sent before the 101 (clients wait for it; rare)
                self._head += data
                if len(self._head) > _MAX_HEAD and self._transport is not None:
                    self._transport.abort()
                return
            taker = self._guard.upgrades
            if taker is not None and data[:4] == b"GET " and self._take_upgrade(taker, data):
                return
        if self._state != _OFF:
            self._observe(data)
        self._aiohttp().data_received(data)

    # -- ordinary WebSocket upgrades, served without aiohttp (web/fastws.py) ----------------------------

    def _take_upgrade(self, taker: UpgradeTaker, data: bytes) -> bool:
        transport = self._transport
        if transport is None:
            return False
        upgrade = parse_upgrade(data)
        if upgrade is None:
            return False
        self._stop_watching()  # (and `_head`, empty now, keeps what arrives during the admission)
        loop = asyncio.get_running_loop()
        decided = taker.admit_upgrade_now(upgrade)
        if decided is not None:
            # Handed off from a callback of its own, as after an admission task: never from inside
            # the transport's delivery of these bytes.
            loop.call_soon(self._upgrade_decided, taker, data, decided)
            # (Not the handle: it holds a bound method of this protocol, a cycle only the collector
            # would break.)
            self._pending = _DECIDED
            return True
        self._pending = pending = loop.create_task(taker.admit_upgrade(upgrade))
        pending.add_done_callback(lambda task: self._upgrade_admitted(taker, data, task))
        return True

    def _upgrade_admitted(self, taker: UpgradeTaker, data: bytes, task: asyncio.Future[FastSocket | bytes]) -> None:
        transport = self._transport
        assert transport is not None
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                logging.getLogger("signalite").error("ws.admission_failed", exc_info=task.exception())
            transport.abort()
            return
        self._upgrade_decided(taker, data, task.result())

    def _upgrade_decided(self, taker: UpgradeTaker, data: bytes, result: FastSocket | bytes) -> None:
        self._pending = _DECIDED  # (drops the admission task, which holds `result`)
        transport = self._transport
        assert transport is not None
        if self._lost:  # the client left while it was being admitted
            if isinstance(result, FastSocket):
                taker.abandon(result)
            return
        if isinstance(result, bytes):  # refused: the AWS error response, then close
            transport.write(result)
            transport.close()
            return
        if self._head:
            data += self._head
            self._head.clear()
        if not hand_off(transport, data, result, self._handed_off_gone):
            taker.abandon(result)
            self._handed_off_gone()

    def _handed_off_gone(self) -> None:
        # The protocol that took this connection over tells us it has ended.
        if self._admitted:
            self._admitted = False
            self._guard.release(self._address)

    def _observe(self, data: bytes) -> None:
        if self._state == _IDLE and self._guard.limits.header_timeout is not None:
            # The usual case: a whole request (headers and body) in one read. It needs no timer
            # and no copies; anything else (partial, pipelined, framing to look at) goes below.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                length = _body_length(data, end)
                if length is not None and len(data) - end - 4 == length:
                    self._disarm()  # the silence deadline of a new connection
                    return
        view = memoryview(data)
        while view:
            if self._state == _IDLE:
                if self._guard.limits.header_timeout is None:
                    self._stop_watching()
                    return
                self._state = _HEADERS
                self._arm()
            if self._state == _HEADERS:
                if not self._head:
                    # The usual case: the whole header block arrives in one read; no copying.
                    chunk = bytes(view)
                    end = chunk.find(b"\r\n\r\n")
                    if end < 0:
                        self._head += chunk
                        return
                    block, rest = chunk[:end], chunk[end + 4 :]
                else:
                    start = max(0, len(self._head) - 3)
                    self._head += view
                    end = self._head.find(b"\r\n\r\n", start)
                    if end < 0:
                        if len(self._head) > _MAX_HEAD:
                            self._stop_watching()
                        return
                    block, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
                    self._head.clear()
                self._disarm()
                length = _body_length(block, len(block))
                if length is None:  # an upgrade or a chunked body: stop here
                    self._stop_watching()
                    return
                self._remaining = length
                self._state = _BODY
                view = memoryview(rest)
            if self._state == _BODY:
                used = min(self._remaining, len(view))
                self._remaining -= used
                view = view[used:]
                if self._remaining == 0:
                    self._state = _IDLE

    def _stop_watching(self) -> None:
        self._disarm()
        self._head.clear()
        self._state = _OFF

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return None  # close the connection
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._lost = True
        if self._admitted:
            self._admitted = False
            self._guard.release(self._address)
            if self._inner is not None:
                self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class GuardedSite(web.SockSite):
    """A SockSite whose connections pass through a ConnectionGuard."""

    def __init__(self, runner: web.BaseRunner, sock: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        factory = self._runner.server
        assert factory is not None
        guard = self.guard
        if self._ssl_context is None:
            self._server = await aiofastnet.create_server(
                loop,
                lambda: _GuardedProtocol(factory, guard),
                sock=self._sock,
                backlog=self._backlog,
            )
        else:
            self._server = await loop.create_server(
                lambda: _GuardedProtocol(factory, guard),
                sock=self._sock,
                ssl=self._ssl_context,
                backlog=self._backlog,
            )
