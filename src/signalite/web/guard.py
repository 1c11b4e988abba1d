"""Connection-level guards in front of aiohttp: connection caps and a header-read deadline.

aiohttp bounds header sizes and body sizes itself, but it will wait forever for the end of a
request's headers, and it accepts as many connections as the kernel hands over. `GuardedSite`
wraps each accepted connection's protocol:

* refuses (closes at once) a connection beyond `max_connections` in total or beyond
  `max_per_address` from one client address;
* closes a connection whose first request headers are not complete within `header_timeout`
  seconds (slowloris), without touching anyone else.

The wrapper forwards every protocol callback unchanged, so aiohttp (and the WebSockets it
upgrades) behave exactly as without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from signalite.log import event


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """None disables a limit."""

    max_connections: int | None = 20_000
    max_per_address: int | None = 1_000
    header_timeout: float | None = 10.0


class ConnectionGuard:
    """Counts open connections; shared by every wrapped protocol of one site."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_address: Counter[str] = Counter()
        self.refused = 0

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


class _GuardedProtocol(asyncio.Protocol):
    __slots__ = ("_address", "_admitted", "_guard", "_inner", "_tail", "_timer", "_transport")
    _transport: asyncio.Transport | None

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._address = ""
        self._admitted = False
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self._transport = transport  # type: ignore[assignment]  # uvloop transports are not asyncio subclasses
        if not self._guard.admit(self._address):
            self._guard.refused += 1
            event(logging.WARNING, "connection.refused", address=self._address, reason="connection limit")
            transport.abort()  # type: ignore[attr-defined]
            return
        self._admitted = True
        timeout = self._guard.limits.header_timeout
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._header_deadline)
        self._inner.connection_made(transport)

    def _header_deadline(self) -> None:
        self._timer = None
        event(logging.WARNING, "connection.closed", address=self._address, reason="request headers too slow")
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            # Look for the blank line that ends the headers, across chunk boundaries.
            if b"\r\n\r\n" in self._tail + data:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = (self._tail + data)[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._admitted:
            self._admitted = False
            self._guard.release(self._address)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
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
        self._server = await loop.create_server(
            lambda: _GuardedProtocol(factory(), guard),
            sock=self._sock,
            ssl=self._ssl_context,
            backlog=self._backlog,
        )
