"""The signaling WebSocket adapter: handshake checks, the read loop, and performing hub actions.

Everything about *what* to send *where* is decided by the sans-I/O `Hub`; this module only reads
frames, hands them to the hub with the current time, and carries out the `Send`/`Close` actions it
returns. A recipient that stops reading is cut off once its transport's write buffer passes
`max_send_buffer` bytes, before the transport would pause — so a send here never waits for a slow
peer and one stuck client can never slow the others down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import orjson
from aiohttp import WSMsgType, web

from signalite.bus.base import Bus
from signalite.bus.local import LocalBus
from signalite.controlplane.operations import active_channel, known_active_channel
from signalite.log import event
from signalite.model.errors import (
    ServiceError,
    ServiceUnavailableException,
)
from signalite.signaling.hub import (
    Action,
    ChannelRef,
    Close,
    ConnectRefused,
    Forward,
    Hub,
    Role,
    Send,
    connect_role,
)
from signalite.signaling.protocol import MessageType
from signalite.store.base import Channel, ChannelStore, StoreUnavailable
from signalite.web.fastws import MAX_FRAME_BYTES, FastSocket, Upgrade, refusal_response
from signalite.web.rest import error_response

# Server-originated frames the console's event log records (deliveries start otherwise).
_CONTROL_FRAMES = (
    '{"messageType":"STATUS_RESPONSE"',
    '{"messageType":"GO_AWAY"',
    '{"messageType":"RECONNECT_ICE_SERVER"',
)

CLOSE_GOING_AWAY = 1001


_WANTED = ("X-Amz-ChannelARN", "X-Amz-ClientId")

# Every viewer of a channel sends the same encoded ARN; decoding it costs more than a dict lookup.
# (Values with nothing to decode, such as most ClientIds, skip it and stay out of the cache.)
_unquote = functools.lru_cache(maxsize=4096)(unquote_plus)


def _query(request: web.BaseRequest | Upgrade) -> dict[str, str]:
    """The two handshake parameters signalite reads (first value of each).

    Read from the raw request target rather than `request.query`, which caches a yarl URL and a
    MultiDict on the request for the whole life of the socket (~1 KiB per idle connection), and
    without decoding the seven SigV4 parameters only the signature check needs.
    """
    target = request.raw_path
    mark = target.find("?")
    params: dict[str, str] = {}
    if mark < 0:
        return params
    for pair in target[mark + 1 :].split("&"):
        key, _, value = pair.partition("=")
        if key in _WANTED and key not in params:
            params[key] = _unquote(value) if "%" in value or "+" in value else value
    return params


# -- direct dispatch of text frames --------------------------------------------------------------
#
# aiohttp hands each parsed frame to a queue that wakes the handler's `await ws.receive()`: a future,
# a task step and receive()'s own bookkeeping per message, which is about a third of what relaying
# one unbatched message costs. `_DirectQueue` instead passes a text frame straight to the hub from
# the parser's callback when nothing is waiting in the queue before it (so order is kept); other
# frames (ping, close, errors) still go through the queue and the read loop. It depends on how
# aiohttp wires its reader, so it is used only with the aiohttp series it was written against; any
# other version gets the plain read loop (tests assert which one runs).

try:
    from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
    from aiohttp.helpers import DEFAULT_CHUNK_SIZE

    _DIRECT_SUPPORTED = aiohttp.__version__.startswith("3.14.") and hasattr(web.WebSocketResponse, "_post_start")
except ImportError:  # pragma: no cover - other aiohttp versions
    _DIRECT_SUPPORTED = False

if _DIRECT_SUPPORTED:

    class _DirectQueue(WebSocketDataQueue):
        """aiohttp's frame queue, except that text frames go to `on_text(conn, text)` while it is empty."""

        __slots__ = ("conn", "on_text")  # no __dict__: this object lives as long as its socket

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.on_text: Callable[[Connection, str], None] | None = None
            self.conn: Connection | None = None

        def feed_data(self, data: Any, size: int) -> None:
            on_text, conn = self.on_text, self.conn
            if on_text is not None and conn is not None and data.type is WSMsgType.TEXT and not self._buffer:
                on_text(conn, data.data)
            else:
                super().feed_data(data, size)

    class _SignalingWebSocket(web.WebSocketResponse):
        """A WebSocketResponse whose reader feeds a `_DirectQueue` (aiohttp 3.14's `_post_start`)."""

        direct: _DirectQueue | None = None

        def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
            self._ws_protocol = protocol
            self._writer = writer
            self._reset_heartbeat()
            loop = self._loop
            assert loop is not None  # set by prepare() before _post_start
            queue = _DirectQueue(request._protocol, DEFAULT_CHUNK_SIZE, loop=loop)
            self.direct = queue
            self._reader = queue
            self._parser = WebSocketReader(
                queue, self._max_msg_size, compress=bool(self._compress), decode_text=self._decode_text
            )
            callback = None if self._heartbeat is None else self._on_data_received
            request.protocol.set_parser(self._parser, data_received_cb=callback)
            request.protocol.keep_alive(False)
            # Not done, though it would save ~1.5 KiB per idle socket: dropping aiohttp's HTTP parser
            # here (`request.protocol._parser = None`) cost ~25% of offer sessions/s in bench/relay.py
            # for a reason not yet found.

    _WebSocket: type[web.WebSocketResponse] = _SignalingWebSocket
else:  # pragma: no cover - other aiohttp versions
    _WebSocket = web.WebSocketResponse


@dataclass(slots=True)
class Connection:
    """One live WebSocket (or a virtual peer, such as a SendAlexaOfferToMaster call)."""

    id: int
    role: Role
    client_id: str | None
    channel_arn: str
    ws: web.WebSocketResponse | FastSocket | None = None
    transport: asyncio.BaseTransport | None = None
    # For virtual peers: frames addressed to this connection go here instead of a socket.
    sink: Callable[[str], None] | None = None
    # A close started by the server (displaced, idle, GO_AWAY...), finished by the handler's task.
    closing: asyncio.Task[None] | None = None
    # Frames that arrive (from other nodes) while the connection is joining, before its socket is
    # ready and its buffered frames are sent; None once they have been flushed.
    early: list[Action] | None = None
    # Encoded frames waiting for this loop iteration's write (see SignalingSockets._queue).
    outgoing: list[bytes] | None = None


# (an aiohttp request or an Upgrade, ARN, role) -> the caller's account, or a ServiceError. It waits for
# nothing, so a connect can be admitted without a task (SignalingSockets.admit_upgrade_now).
Authorize = Callable[[Any, str, Role], str]


class SignalingSockets:
    """Accepts signaling WebSockets and performs what the hub decides."""

    def __init__(
        self,
        hub: Hub,
        store: ChannelStore,
        monotonic: Callable[[], float],
        authorize: Authorize,
        *,
        bus: Bus | None = None,
        max_send_buffer: int = 256 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.bus: Bus = bus if bus is not None else LocalBus("local", hub)
        # What the node does with cluster-wide events (set by the app).
        self.on_event: Callable[[Mapping[str, Any]], Awaitable[None]] | None = None
        # Told the error code of every refused handshake (metrics count the auth failures).
        self.on_refusal: Callable[[str], None] | None = None
        self.store = store
        self.monotonic = monotonic
        self.authorize = authorize
        self.max_send_buffer = max_send_buffer
        self.connections: dict[int, Connection] = {}
        self.accepting = True
        self._ids = itertools.count(1)
        self.refusals: Counter[str] = Counter()  # handshake refusals by error code, for metrics
        self.clock = clock
        # Recent signaling events for the console's live view (never payloads).
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=2000)
        self._closing: set[asyncio.Task[None]] = set()
        # Connections with frames queued in this loop iteration, in the order they were first queued.
        self._unflushed: list[Connection] = []
        # The loop that serves the sockets, kept: on Python 3.11 asyncio.get_running_loop() makes a
        # getpid() system call, which at low rates (a loop iteration per message) is one per message.
        self._loop: asyncio.AbstractEventLoop | None = None

    def new_id(self) -> int:
        return next(self._ids)

    # -- handshake -------------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one ConnectAsMaster / ConnectAsViewer request (the aiohttp path; see web/fastws.py)."""
        try:
            conn, actions = await self._admit_and_join(request)
        except (StoreUnavailable, ConnectRefused, ServiceError) as e:
            return error_response(self._refusal(e, request))
        ws = _WebSocket(
            autoping=False,  # pings count as activity for the idle timeout, so we answer them ourselves
            compress=False,  # no permessage-deflate: tiny frames, and zlib state costs ~100 KB a socket
            max_msg_size=MAX_FRAME_BYTES,
        )
        conn.ws = ws
        conn.transport = request.transport
        if conn.transport is not None:
            # Let the transport buffer past our own cut-off, so it never pauses (which would make
            # send() wait for this one slow reader); we disconnect it at max_send_buffer instead.
            conn.transport.set_write_buffer_limits(high=self.max_send_buffer * 4)
        try:
            await ws.prepare(request)
        except BaseException:
            self._forget(conn)
            raise
        # Per-connection lines are debug-level: at thousands of connects a second they would be most
        # of the log (the console's event log and /metrics count them anyway).
        event(logging.DEBUG, "ws.connected", channel=conn.channel_arn, role=conn.role, client_id=conn.client_id)
        self.record("connected", conn.channel_arn, role=conn.role.value, client_id=conn.client_id)
        try:
            await self.perform(actions, flushing=True)  # the buffered frames first, in order
            early, conn.early = conn.early, None
            await self.perform(early or ())
            await self._read_loop(conn, ws)
            if conn.closing is not None:
                # The close frame is written only after our receive() returns; wait for it, or
                # returning here would drop the TCP connection first (the client would see 1006).
                await asyncio.wait([conn.closing], timeout=5)
        finally:
            self._forget(conn)
            self.record("disconnected", conn.channel_arn, role=conn.role.value, client_id=conn.client_id,
                        close_code=ws.close_code)  # fmt: skip
            event(logging.DEBUG, "ws.disconnected", channel=conn.channel_arn, role=conn.role,
                  client_id=conn.client_id, close_code=ws.close_code)  # fmt: skip
        return ws

    async def _admit_and_join(self, request: Any) -> tuple[Connection, list[Action]]:
        conn, channel = await self._admit(request)
        # Known before the cluster-wide claim: other nodes may route to it the moment it is
        # claimed; such frames wait in `early` until the buffered ones have gone out.
        conn.early = []
        self.connections[conn.id] = conn
        try:
            actions = await self.join(conn, channel)
        except BaseException:
            self.connections.pop(conn.id, None)
            raise
        return conn, actions

    def _refusal(self, error: Exception, request: Any) -> ServiceError:
        """The error a refused handshake answers with (counted and recorded for metrics and the console)."""
        if isinstance(error, StoreUnavailable):
            self.refusals["ServiceUnavailableException"] += 1
            return ServiceUnavailableException("The database is unavailable; retry shortly.")
        query = _query(request)
        if isinstance(error, ConnectRefused):
            self.refusals[error.error_type] += 1
            self.record("refused", query.get("X-Amz-ChannelARN"), code=error.error_type,
                        client_id=query.get("X-Amz-ClientId"))  # fmt: skip
            return ServiceError(error.message, code=error.error_type, status=error.status_code)
        assert isinstance(error, ServiceError)
        self.refusals[error.code] += 1
        if self.on_refusal is not None:
            self.on_refusal(error.code)
        self.record("refused", query.get("X-Amz-ChannelARN"), code=error.code,
                    client_id=query.get("X-Amz-ClientId"))  # fmt: skip
        event(logging.DEBUG, "ws.refused", code=error.code, reason=error.message)
        return error

    # -- the picows path (web/fastws.py) -----------------------------------------------------------

    async def admit_upgrade(self, upgrade: Upgrade) -> FastSocket | bytes:
        """Admit an upgrade the guard took off aiohttp: the socket to serve it, or the refusal to send."""
        try:
            conn, actions = await self._admit_and_join(upgrade)
        except (StoreUnavailable, ConnectRefused, ServiceError) as e:
            return self._refusal_bytes(e, upgrade)
        return self._fast_socket(conn, actions)

    def admit_upgrade_now(self, upgrade: Upgrade) -> FastSocket | bytes | None:
        """`admit_upgrade`'s answer when no step of it has to wait: on a node outside a cluster whose
        store knows the channel from memory (the usual connect). None: run `admit_upgrade` instead.

        The same steps in the same order, without a task and the loop iteration it takes.
        """
        if self.bus.clustered:
            return None
        try:
            client_id, role, arn, account = self._check_admission(upgrade)
            channel = known_active_channel(self.store, arn, account=account)
            if channel is None:
                return None
            conn, ref = self._new_connection(client_id, role, channel)
            conn.early = []
            self.connections[conn.id] = conn
            try:
                actions = self.hub.connect(conn.id, ref, role, client_id, self.monotonic())
            except BaseException:
                self.connections.pop(conn.id, None)
                raise
        except (StoreUnavailable, ConnectRefused, ServiceError) as e:
            return self._refusal_bytes(e, upgrade)
        return self._fast_socket(conn, actions)

    def _refusal_bytes(self, error: Exception, upgrade: Upgrade) -> bytes:
        response = error_response(self._refusal(error, upgrade))
        assert isinstance(response.body, bytes)
        return refusal_response(response.status, dict(response.headers), response.body, self.clock())

    def _fast_socket(self, conn: Connection, actions: list[Action]) -> FastSocket:
        socket = FastSocket(self, (conn, actions))
        conn.ws = socket
        return socket

    def abandon(self, socket: FastSocket) -> None:
        """An admitted socket whose client left before the hand-off (or that picows refused)."""
        conn, _ = socket.key
        self._forget(conn)

    def fast_connected(self, socket: FastSocket) -> None:
        conn, actions = socket.key
        socket.key = (conn, None)
        transport = socket.transport.underlying_transport
        conn.transport = transport
        # As in handle(): the transport never pauses; _queue cuts a slow reader off instead.
        transport.set_write_buffer_limits(high=self.max_send_buffer * 4)
        event(logging.DEBUG, "ws.connected", channel=conn.channel_arn, role=conn.role, client_id=conn.client_id)
        self.record("connected", conn.channel_arn, role=conn.role.value, client_id=conn.client_id)
        for action in actions:  # the buffered frames first, in order
            self._perform_now(action, flushing=True)
        early, conn.early = conn.early, None
        for action in early or ():
            self._perform_now(action, flushing=False)

    def fast_text(self, socket: FastSocket, text: str) -> None:
        self._on_text(socket.key[0], text)

    def fast_activity(self, socket: FastSocket) -> None:
        self.hub.touch(socket.key[0].id, self.monotonic())

    def fast_disconnected(self, socket: FastSocket) -> None:
        conn = socket.key[0]
        self._forget(conn)
        # Break the socket <-> connection cycle: freed now, not at the next full collection.
        conn.ws = conn.transport = None
        self._fast_gone(socket, conn)

    def _fast_gone(self, socket: FastSocket, conn: Connection) -> None:
        """Record a departure once: when the server closes (as on aiohttp, whose read loop ends then,
        before the peer answers the close frame) or when the peer leaves, whichever comes first."""
        if socket.reported:
            return
        socket.reported = True
        self.record("disconnected", conn.channel_arn, role=conn.role.value, client_id=conn.client_id,
                    close_code=socket.close_code)  # fmt: skip
        event(logging.DEBUG, "ws.disconnected", channel=conn.channel_arn, role=conn.role,
              client_id=conn.client_id, close_code=socket.close_code)  # fmt: skip

    async def join(self, conn: Connection, channel: ChannelRef) -> list[Action]:
        """Admit `conn` to the hub (and, in a cluster, to the shared presence); its first actions."""
        actions = self.hub.connect(conn.id, channel, conn.role, conn.client_id, self.monotonic())
        if self.bus.clustered:
            limits = self.hub.limits
            try:
                buffered = await self.bus.claim(
                    channel.arn, conn.role, conn.client_id, conn.id,
                    max_viewers=limits.max_viewers_per_channel,
                    connects_per_second=limits.connects_per_second_per_channel,
                )  # fmt: skip
            except ConnectRefused:
                self.hub.disconnect(conn.id, self.monotonic())
                raise
            actions.extend(self.hub.deliver_buffered(conn.id, buffered))
        return actions

    def _check_admission(self, request: web.BaseRequest | Upgrade) -> tuple[str | None, Role, str, str]:
        """What a connect asks for, if it may: (ClientId, role, channel ARN, the caller's account)."""
        if not self.accepting:
            raise ServiceUnavailableException("The server is shutting down; connect to another node.")
        query = _query(request)
        client_id = query.get("X-Amz-ClientId")
        role = connect_role(query.get("X-Amz-ChannelARN"), client_id)
        arn = query["X-Amz-ChannelARN"]
        return client_id, role, arn, self.authorize(request, arn, role)

    async def _admit(self, request: web.BaseRequest | Upgrade) -> tuple[Connection, ChannelRef]:
        client_id, role, arn, account = self._check_admission(request)
        return self._new_connection(client_id, role, await active_channel(self.store, arn, account=account))

    def _new_connection(self, client_id: str | None, role: Role, channel: Channel) -> tuple[Connection, ChannelRef]:
        conn = Connection(self.new_id(), role, client_id, channel.arn)
        return conn, ChannelRef(channel.arn, channel.message_ttl_seconds)

    # -- frames ------------------------------------------------------------------------------------

    async def _read_loop(self, conn: Connection, ws: web.WebSocketResponse) -> None:
        hub = self.hub
        direct: Any = getattr(ws, "direct", None)
        if direct is not None and not self.bus.clustered:
            # Forwards to other nodes are awaited in order, so a cluster node keeps the read loop.
            direct.conn = conn
            direct.on_text = self._on_text
        try:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is WSMsgType.TEXT:
                    actions = hub.receive(conn.id, msg.data, self.monotonic())
                    if actions:
                        await self.perform(actions)
                elif kind is WSMsgType.PING:
                    hub.touch(conn.id, self.monotonic())
                    await ws.pong(msg.data)
                elif kind is WSMsgType.PONG:
                    hub.touch(conn.id, self.monotonic())
                elif kind is WSMsgType.BINARY:
                    # The protocol is JSON text only; a binary frame carries no correlationId to answer.
                    hub.touch(conn.id, self.monotonic())
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    return
        finally:
            if direct is not None:
                direct.on_text = direct.conn = None

    def _on_text(self, conn: Connection, text: str) -> None:
        """A text frame from the parser's callback (direct dispatch, and the picows path)."""
        try:
            for action in self.hub.receive(conn.id, text, self.monotonic()):
                if type(action) is Forward:  # (`_perform_now`, inlined: this runs once per message)
                    self.bus.forward_nowait(action)
                else:
                    self._perform_local(action, flushing=False)
        except Exception:  # a bug here must cost this connection, never the parser or the server
            logging.getLogger("signalite").exception("ws.dispatch_failed")
            self._close(conn, 1011, "internal error")

    async def perform(self, actions: Iterable[Action], *, flushing: bool = False) -> None:
        """Carry out the hub's decisions (`flushing`: a joining connection's first frames)."""
        for action in actions:
            if isinstance(action, Forward):
                await self.bus.forward(action)
            else:
                self._perform_local(action, flushing=flushing)

    def _perform_now(self, action: Action, *, flushing: bool) -> None:
        """`perform` for one action, from a callback that cannot wait (forwards keep their order)."""
        if type(action) is Forward:
            self.bus.forward_nowait(action)
        else:
            self._perform_local(action, flushing=flushing)

    def _perform_local(self, action: Action, *, flushing: bool) -> None:
        """A Send or Close for a connection of this node."""
        if type(action) is Send:  # the usual action first
            conn = self.connections.get(action.connection)
            if conn is None:
                return
            if conn.early is not None and not flushing:
                conn.early.append(action)
                return
            if conn.sink is not None:
                conn.sink(action.frame)
                return
            if action.frame.startswith(_CONTROL_FRAMES):
                self._record_control(conn, action.frame)
            self._queue(conn, action.frame)
        elif type(action) is Close:
            conn = self.connections.get(action.connection)
            if conn is None:
                return
            self.record("closed", conn.channel_arn, role=conn.role.value, client_id=conn.client_id,
                        reason=action.reason)  # fmt: skip
            self._close(conn, action.code, action.reason)
        else:  # only Bus.forward handles these
            raise TypeError("a Forward action needs the bus")

    def _queue(self, conn: Connection, frame: str) -> None:
        """Queue a text frame for `conn`; all frames queued in one loop iteration leave in one write.

        aiohttp's send_str() makes one send() system call per frame, which on loopback costs more
        than everything else the relay does. Frames are built here instead (server frames are
        unmasked, and no extension is negotiated) and written together from a call_soon, so a busy
        connection gets one system call per batch. Anything aiohttp itself writes (pong, close)
        comes between whole frames: `_close` flushes what is queued before the close frame.
        """
        ws = conn.ws
        transport = conn.transport
        if ws is None or ws.closed or transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.max_send_buffer:  # type: ignore[attr-defined]
            self.record("slow_consumer", conn.channel_arn, role=conn.role.value, client_id=conn.client_id)
            event(logging.WARNING, "ws.slow_consumer", channel=conn.channel_arn, client_id=conn.client_id)
            self._close(conn, 1008, "send queue full")
            return
        data = frame.encode()
        n = len(data)
        if n < 126:
            header = bytes((0x81, n))
        elif n < 65536:
            header = b"\x81\x7e" + n.to_bytes(2, "big")
        else:
            header = b"\x81\x7f" + n.to_bytes(8, "big")
        queued = conn.outgoing
        if queued is None:
            conn.outgoing = [header, data]
            unflushed = self._unflushed
            if not unflushed:
                # One callback per loop iteration, not one per message: the first frame of the
                # iteration schedules the write of all of them.
                loop = self._loop
                if loop is None:
                    loop = self._loop = asyncio.get_running_loop()
                loop.call_soon(self._flush_all)
            unflushed.append(conn)
        else:
            queued.append(header)
            queued.append(data)

    def _flush_all(self) -> None:
        unflushed, self._unflushed = self._unflushed, []
        for conn in unflushed:
            try:
                self._flush(conn)
            except Exception:  # one connection's failed write must not hold back the others' frames
                # (_flush has already emptied its queue, so that connection's later frames still go.)
                logging.getLogger("signalite").exception("ws.write_failed")

    @staticmethod
    def _flush(conn: Connection) -> None:
        queued, conn.outgoing = conn.outgoing, None
        transport = conn.transport
        if queued and transport is not None and not transport.is_closing():
            transport.write(b"".join(queued))  # type: ignore[attr-defined]

    def record(self, kind: str, channel: str | None, **fields: Any) -> None:
        """Remember a signaling event for the console (kind: connected, disconnected, refused, ...)."""
        self.recent_events.append({"time": self.clock(), "kind": kind, "channel": channel, **fields})

    def _record_control(self, conn: Connection, frame: str) -> None:
        # Server-originated frames (GO_AWAY, RECONNECT_ICE_SERVER, STATUS_RESPONSE) start with
        # messageType; deliveries start with senderClientId or carry a payload after it.
        if frame.startswith('{"messageType":"STATUS_RESPONSE"'):
            error = orjson.loads(frame)["statusResponse"].get("errorType")
            self.record("status_response", conn.channel_arn, role=conn.role.value, client_id=conn.client_id,
                        error_type=error)  # fmt: skip
        elif frame.startswith('{"messageType":"GO_AWAY"'):
            self.record("go_away", conn.channel_arn, role=conn.role.value, client_id=conn.client_id)
        elif frame.startswith('{"messageType":"RECONNECT_ICE_SERVER"'):
            self.record("reconnect_ice_server", conn.channel_arn, role=conn.role.value, client_id=conn.client_id)

    def _close(self, conn: Connection, code: int, reason: str) -> None:
        self._flush(conn)  # frames queued before the close go out before it
        self._forget(conn)
        ws = conn.ws
        if ws is None or ws.closed:
            return
        if isinstance(ws, FastSocket):
            ws.close(code, reason)
            self._fast_gone(ws, conn)
            return
        task = asyncio.ensure_future(self._close_ws(ws, code, reason))
        conn.closing = task
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_ws(ws: web.WebSocketResponse, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=code, message=reason.encode()[:120]), 5)

    def forget(self, conn: Connection) -> None:
        """`conn` is gone: drop it from the hub (and the shared presence)."""
        self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is not None:
            self.hub.disconnect(conn.id, self.monotonic())
            if self.bus.clustered:
                task = asyncio.ensure_future(self.bus.release(conn.channel_arn, conn.role, conn.client_id, conn.id))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    # -- BusHandler: what other nodes ask of this one ------------------------------------------------

    async def deliver(self, arn: str, recipient: str | None, message_type: MessageType, frame: str) -> bool:
        actions = self.hub.deliver_local(arn, recipient, message_type, frame)
        if not actions:
            return False
        await self.perform(actions)
        return True

    async def displace(self, connection: int) -> None:
        await self.perform(self.hub.displace(connection))

    async def on_bus_event(self, event_: Mapping[str, Any]) -> None:
        if self.on_event is not None:
            await self.on_event(event_)

    async def on_bus_reconnected(self) -> None:
        # Close the clients of channels deleted elsewhere while the bus was down.
        for arn in {arn for _, arn, _, _ in self.hub.presence()}:
            try:
                channel = await self.store.get_channel(arn)
            except StoreUnavailable:
                return
            if channel is None:
                await self.close_channel(arn)

    def local_presence(self) -> list[tuple[int, str, Role, str | None]]:
        return self.hub.presence()

    # -- housekeeping and fan-out ----------------------------------------------------------------

    async def tick(self) -> None:
        await self.perform(self.hub.tick(self.monotonic()))

    async def run_ticks(self, interval: float = 1.0) -> None:
        """Drive the hub's timers (TTL drops, idle timeout, GO_AWAY before the 1 h limit)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:
                logging.getLogger("signalite").exception("hub.tick_failed")

    async def close_channel(self, arn: str) -> None:
        await self.perform(self.hub.close_channel(arn))

    async def go_away_all(self) -> None:
        await self.perform(self.hub.go_away_all())

    async def reconnect_ice_all(self) -> None:
        await self.perform(self.hub.reconnect_ice_all())

    async def close_all(self) -> None:
        for conn in list(self.connections.values()):
            self._close(conn, CLOSE_GOING_AWAY, "server shutting down")
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=5)
