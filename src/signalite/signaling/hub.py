"""The signaling hub: who is connected to which channel, and where each message goes.

Theory of operation
-------------------
The hub is sans-I/O. The WebSocket adapter owns sockets and the clock; it tells the hub what
happened (`connect`, `receive`, `touch`, `disconnect`, and `tick` about once a second) and gets
back a list of actions to perform: `Send(connection, frame)` a text frame, or `Close(connection,
code, reason)` a socket. Connections are opaque integers chosen by the adapter. The hub never
waits, so the same rules run unchanged under tests with explicit `now` values.

Presence. A channel has at most one master and up to `max_viewers_per_channel` viewers, each keyed
by ClientId. The newest connection wins: a second master, or a viewer reconnecting with a ClientId
already in use, displaces the old connection, which gets a `Close` and is forgotten on the spot
(later frames or a `disconnect` for it are ignored). Every connection the hub closes is forgotten
the same way, so messages for a client whose socket is closing are buffered, not lost.

Routing. A viewer's message always goes to the channel's master, stamped with the viewer's
ClientId as `senderClientId` (any recipient the viewer named is ignored: viewers cannot reach each
other). A master's message must name `recipientClientId` and goes to that viewer. When the
recipient is not connected the prepared delivery frame is buffered under (channel, recipient) for
the channel's MessageTtlSeconds (as known when the message is sent) and handed over, in order, when
the recipient connects. A newer pending SDP_OFFER/SDP_ANSWER from the same sender replaces the
older one of the same type; ICE candidates are all kept; each recipient's buffer is capped.

Errors. A bad frame, a master message without recipient, or a rate-limited message is dropped and
answered with a STATUS_RESPONSE only when the frame carried a valid correlationId, exactly as AWS
does. Errors only ever produce frames for the sender; nothing a client sends affects others.

Limits (`SignalingLimits`, AWS quotas by default): connects per second per channel and role, viewers
per channel, SDP and ICE messages per second per connection (token buckets), payload size, idle
timeout, maximum connection duration with a GO_AWAY `go_away_before_close` seconds before the close.

Close codes. The hub closes with 1000 (normal closure) and a reason saying why. Which code AWS uses
is not documented (open question 1); the SDKs do not distinguish codes (the C SDK reconnects after
any server close, the JS SDK example reopens on any close), and 1000 is the one every WebSocket
stack treats as an orderly close rather than an error to log loudly.

Cost. `receive` does one dict lookup for the sender, one parse, one token-bucket step and at most
one dict lookup for the recipient. `tick` walks all connections once (a handful of float
comparisons each, no allocation unless something is due), which stays in the low milliseconds at
10k+ connections; buffers are only visited for channels that have any.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple, TypeAlias

from signalite.signaling.protocol import (
    FrameError,
    MessageType,
    delivery_frame,
    go_away_frame,
    is_valid_id,
    parse_fields,
    reconnect_ice_server_frame,
    status_response_frame,
)
from signalite.signaling.ratelimit import TokenBucket

__all__ = [
    "CLOSE_NORMAL",
    "Action",
    "BufferedInfo",
    "ChannelRef",
    "ChannelSnapshot",
    "Close",
    "ConnectRefused",
    "ConnectionId",
    "ConnectionInfo",
    "Forward",
    "Hub",
    "Role",
    "Send",
    "SignalingLimits",
    "connect_role",
]

ConnectionId: TypeAlias = int

CLOSE_NORMAL: Final = 1000
REASON_REPLACED: Final = "replaced by a newer connection"
REASON_IDLE: Final = "idle timeout"
REASON_MAX_DURATION: Final = "maximum connection duration reached"
REASON_CHANNEL_DELETED: Final = "channel deleted"

CLIENT_LIMIT: Final = "ClientLimitExceededException"
INVALID_ARGUMENT: Final = "InvalidArgumentException"


class Role(StrEnum):
    MASTER = "MASTER"
    VIEWER = "VIEWER"


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """What the hub needs to know about a channel: its ARN and its MessageTtlSeconds."""

    arn: str
    message_ttl_seconds: int


@dataclass(frozen=True, slots=True)
class SignalingLimits:
    """Data-plane limits; the defaults are AWS's quotas. None disables a limit.

    Rates are per second; each token bucket's burst equals its rate (at least 1), so e.g. three
    connects may arrive at once, then three per second. SDP offers and answers share one bucket.
    `max_buffered_per_recipient` is not an AWS quota but protects the server's memory.
    """

    max_viewers_per_channel: int | None = 10
    connects_per_second_per_channel: float | None = 3.0
    sdp_messages_per_second: float | None = 5.0
    ice_messages_per_second: float | None = 20.0
    max_payload_chars: int = 10240
    idle_timeout: float | None = 600.0
    max_connection_duration: float | None = 3600.0
    go_away_before_close: float | None = 60.0
    max_buffered_per_recipient: int | None = 200

    @classmethod
    def aws(cls) -> SignalingLimits:
        """AWS's published quotas."""
        return cls()

    @classmethod
    def relaxed(cls) -> SignalingLimits:
        """Ten times AWS's rates and viewer count (for busy test rigs); timers and sizes as AWS."""
        return cls(
            max_viewers_per_channel=100,
            connects_per_second_per_channel=30.0,
            sdp_messages_per_second=50.0,
            ice_messages_per_second=200.0,
        )

    @classmethod
    def off(cls) -> SignalingLimits:
        """No rate, count or lifetime limits (benchmarks, debugging sessions that sit idle).

        Two bounds stay: the payload size, because clients' receive buffers are sized for it (the
        C SDK's is about 10 KiB), so a bigger payload would only fail at the recipient; and the
        per-recipient buffer cap, which only guards memory and is never reached by sane clients.
        """
        return cls(
            max_viewers_per_channel=None,
            connects_per_second_per_channel=None,
            sdp_messages_per_second=None,
            ice_messages_per_second=None,
            idle_timeout=None,
            max_connection_duration=None,
            go_away_before_close=None,
        )


# The actions are immutable named tuples rather than frozen dataclasses: one is made per relayed
# message, and a frozen dataclass's __init__ (object.__setattr__ per field) costs about 1.5x more.
class Send(NamedTuple):
    """Send `frame` as a text frame on `connection`."""

    connection: ConnectionId
    frame: str


class Close(NamedTuple):
    """Close `connection` with WebSocket close `code` and `reason`; the hub has forgotten it."""

    connection: ConnectionId
    code: int
    reason: str


class Forward(NamedTuple):
    """Clustered hubs only: the recipient is not connected to this node.

    The bus delivers `frame` to the node that holds the recipient, or keeps it in the shared buffer
    for `ttl_seconds` (newer SDP from the same `sender` replacing older, as the local buffer does).
    `recipient` None is the channel's master.
    """

    channel_arn: str
    recipient: str | None
    message_type: MessageType
    sender: str | None
    frame: str
    ttl_seconds: int


Action: TypeAlias = Send | Close | Forward


# The data plane fixes the partition to `aws` (kinesis-video-signaling model, WebSocket docs).
_CHANNEL_ARN: Final = re.compile(r"arn:aws:kinesisvideo:[a-z0-9-]+:[0-9]+:channel/[a-zA-Z0-9_.-]+/[0-9]+")


def connect_role(channel_arn: str | None, client_id: str | None) -> Role:
    """The role a ConnectAsMaster/ConnectAsViewer handshake asks for, or ConnectRefused (400).

    The role is implied by `X-Amz-ClientId`: a viewer names itself, a master does not. ClientIds
    follow the WebSocket docs: 1-256 of `[a-zA-Z0-9_.-]`, never starting with `AWS_` (any case).
    """
    if channel_arn is None or _CHANNEL_ARN.fullmatch(channel_arn) is None:
        raise ConnectRefused(INVALID_ARGUMENT, 400, "X-Amz-ChannelARN is missing or is not a signaling channel ARN.")
    if client_id is None:
        return Role.MASTER
    if not is_valid_id(client_id):
        raise ConnectRefused(INVALID_ARGUMENT, 400, "X-Amz-ClientId must be 1-256 characters of [a-zA-Z0-9_.-].")
    if client_id[:4].upper() == "AWS_":
        raise ConnectRefused(INVALID_ARGUMENT, 400, "X-Amz-ClientId must not start with AWS_.")
    return Role.VIEWER


class ConnectRefused(Exception):
    """A connection the hub will not accept; the adapter fails the handshake with this error."""

    def __init__(self, error_type: str, status_code: int, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status_code = status_code
        self.message = message

    def __repr__(self) -> str:
        return f"ConnectRefused({self.error_type}, {self.status_code}, {self.message!r})"


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One connection in a snapshot. `messages_in` counts frames received from it (valid or not),
    `messages_out` frames sent to it (deliveries, STATUS_RESPONSE, GO_AWAY, ...)."""

    client_id: str | None
    connected_since: float
    messages_in: int
    messages_out: int


@dataclass(frozen=True, slots=True)
class BufferedInfo:
    """One undelivered message in a snapshot (never its payload). `recipient` None is the master."""

    recipient: str | None
    sender: str | None
    message_type: MessageType
    seconds_left: float


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    arn: str
    master: ConnectionInfo | None
    viewers: tuple[ConnectionInfo, ...]
    buffered: tuple[BufferedInfo, ...]


# --- internal state -------------------------------------------------------------------------


class _Conn:
    __slots__ = (
        "channel",
        "client_id",
        "close_at",
        "connected_since",
        "go_away_at",
        "ice_bucket",
        "id",
        "last_active",
        "messages_in",
        "messages_out",
        "role",
        "sdp_bucket",
    )

    def __init__(self, cid: ConnectionId, channel: _Channel, role: Role, client_id: str | None, now: float) -> None:
        self.id = cid
        self.channel = channel
        self.role = role
        self.client_id = client_id  # None for the master; also its key in the channel's buffers
        self.connected_since = now
        self.last_active = now
        self.go_away_at = math.inf  # set by Hub; inf once GO_AWAY was sent (or never due)
        self.close_at = math.inf
        self.messages_in = 0
        self.messages_out = 0
        self.sdp_bucket: TokenBucket | None = None
        self.ice_bucket: TokenBucket | None = None


class _Pending:
    __slots__ = ("expires", "frame", "message_type", "sender")

    def __init__(self, expires: float, message_type: MessageType, sender: str | None, frame: str) -> None:
        self.expires = expires
        self.message_type = message_type
        self.sender = sender
        self.frame = frame  # the ready-to-send delivery frame


class _Channel:
    __slots__ = ("master", "master_connects", "pending", "ref", "viewer_connects", "viewers")

    def __init__(self, ref: ChannelRef) -> None:
        self.ref = ref
        self.master: _Conn | None = None
        self.viewers: dict[str, _Conn] = {}
        self.pending: dict[str | None, list[_Pending]] = {}  # recipient (None = master) -> FIFO
        # ConnectAsMaster and ConnectAsViewer are separate APIs with separate per-channel quotas.
        self.master_connects: TokenBucket | None = None
        self.viewer_connects: TokenBucket | None = None


def _bucket(rate: float | None) -> TokenBucket | None:
    return None if rate is None else TokenBucket(rate, max(1.0, rate))


_RELAYED_KEY: Final = {
    t: f"relayed.{t.value}" for t in (MessageType.SDP_OFFER, MessageType.SDP_ANSWER, MessageType.ICE_CANDIDATE)
}
_SDP_REPLACES: Final = frozenset({MessageType.SDP_OFFER, MessageType.SDP_ANSWER})


class Hub:
    """Presence, routing, the TTL buffer, limits and connection lifetimes of all channels."""

    def __init__(self, limits: SignalingLimits | None = None, *, clustered: bool = False) -> None:
        self.limits = limits if limits is not None else SignalingLimits()
        # Clustered: presence and the undelivered-message buffer are shared through the bus, so a
        # message for a recipient this node doesn't hold becomes a `Forward` instead of a local
        # buffer entry. The routing rules themselves are the same.
        self.clustered = clustered
        self._conns: dict[ConnectionId, _Conn] = {}
        self._channels: dict[str, _Channel] = {}
        self._with_pending: set[str] = set()  # arns whose channel has buffered messages
        self._maybe_empty: set[str] = set()  # arns to check for garbage collection at tick
        #: Monotonic counters for metrics: relayed.<TYPE>, buffered, buffer_replaced,
        #: buffer_overflow, ttl_dropped, rejected, status_responses.<ErrorType>, go_aways,
        #: reconnect_ice_servers, connects, connects_refused, displaced, closed_idle,
        #: closed_max_duration.
        self.stats: dict[str, int] = dict.fromkeys(
            [
                *_RELAYED_KEY.values(),
                "buffered",
                "buffer_replaced",
                "buffer_overflow",
                "ttl_dropped",
                "rejected",
                "go_aways",
                "reconnect_ice_servers",
                "connects",
                "connects_refused",
                "displaced",
                "closed_idle",
                "closed_max_duration",
            ],
            0,
        )

    # --- connections ----------------------------------------------------------------------------

    def connect(
        self,
        connection: ConnectionId,
        channel: ChannelRef,
        role: Role,
        client_id: str | None,
        now: float,
    ) -> list[Action]:
        """Admit a connection (already authenticated and authorized by the adapter).

        Raises `ConnectRefused` when the channel's connect rate or viewer cap is exceeded.
        Returns a `Close` for a displaced connection, then the buffered messages for this client.
        """
        if connection in self._conns:
            raise ValueError(f"connection {connection} is already connected")
        if role is Role.MASTER:
            if client_id is not None:
                raise ValueError("a master connects without a ClientId")
        elif client_id is None or not is_valid_id(client_id):
            raise ValueError(f"a viewer needs a valid ClientId, got {client_id!r}")

        limits = self.limits
        ch = self._channels.get(channel.arn)
        if ch is None:
            ch = self._channels[channel.arn] = _Channel(channel)
            self._maybe_empty.add(channel.arn)  # collected at tick if this connect is refused
        else:
            ch.ref = channel  # the newest MessageTtlSeconds applies to messages sent from now on

        old = ch.master if client_id is None else ch.viewers.get(client_id)
        cap = limits.max_viewers_per_channel
        if role is Role.VIEWER and old is None and cap is not None and len(ch.viewers) >= cap:
            self.stats["connects_refused"] += 1
            raise ConnectRefused(CLIENT_LIMIT, 400, f"the channel already has {cap} viewers connected")
        if role is Role.MASTER:
            if ch.master_connects is None:
                ch.master_connects = _bucket(limits.connects_per_second_per_channel)
            bucket = ch.master_connects
        else:
            if ch.viewer_connects is None:
                ch.viewer_connects = _bucket(limits.connects_per_second_per_channel)
            bucket = ch.viewer_connects
        if bucket is not None and not bucket.take(now):
            self.stats["connects_refused"] += 1
            raise ConnectRefused(CLIENT_LIMIT, 400, f"too many {role.value} connections per second")

        actions: list[Action] = []
        if old is not None:
            self.stats["displaced"] += 1
            self._forget(old)
            actions.append(Close(old.id, CLOSE_NORMAL, REASON_REPLACED))

        conn = _Conn(connection, ch, role, client_id, now)
        conn.sdp_bucket = _bucket(limits.sdp_messages_per_second)
        conn.ice_bucket = _bucket(limits.ice_messages_per_second)
        if limits.max_connection_duration is not None:
            conn.close_at = now + limits.max_connection_duration
            if limits.go_away_before_close is not None:
                conn.go_away_at = conn.close_at - limits.go_away_before_close
        self._conns[connection] = conn
        if client_id is None:
            ch.master = conn
        else:
            ch.viewers[client_id] = conn
        self.stats["connects"] += 1

        pending = ch.pending.pop(client_id, None)
        if pending is not None:
            if not ch.pending:
                self._with_pending.discard(ch.ref.arn)
            stats = self.stats
            for p in pending:
                if p.expires > now:
                    actions.append(Send(connection, p.frame))
                    stats[_RELAYED_KEY[p.message_type]] += 1
                    conn.messages_out += 1
                else:
                    stats["ttl_dropped"] += 1
        return actions

    def disconnect(self, connection: ConnectionId, now: float) -> None:
        """The socket is gone. Unknown (already closed or displaced) connections are ignored."""
        conn = self._conns.get(connection)
        if conn is not None:
            self._forget(conn)

    def touch(self, connection: ConnectionId, now: float) -> None:
        """Activity without a frame (ping/pong): postpones the idle timeout."""
        conn = self._conns.get(connection)
        if conn is not None:
            conn.last_active = now

    def update_channel(self, channel: ChannelRef) -> None:
        """A channel's MessageTtlSeconds changed: applies to messages sent from now on."""
        ch = self._channels.get(channel.arn)
        if ch is not None:
            ch.ref = channel

    def _forget(self, conn: _Conn) -> None:
        """Drop a connection from the hub; presence only if it still holds its role/ClientId."""
        del self._conns[conn.id]
        ch = conn.channel
        if conn.client_id is None:
            if ch.master is conn:
                ch.master = None
        elif ch.viewers.get(conn.client_id) is conn:
            del ch.viewers[conn.client_id]
        if ch.master is None and not ch.viewers:
            self._maybe_empty.add(ch.ref.arn)

    # --- messages -------------------------------------------------------------------------------

    def receive(self, connection: ConnectionId, text: str, now: float) -> list[Action]:
        """One text frame from a client: the deliveries or the STATUS_RESPONSE it causes."""
        conn = self._conns.get(connection)
        if conn is None:
            return []  # closed or displaced by the hub; the socket's last words don't count
        conn.last_active = now
        conn.messages_in += 1
        try:
            action, payload, recipient, correlation = parse_fields(text, self.limits.max_payload_chars)
        except FrameError as e:
            return self._reject(conn, e.correlation_id, e.error_type, e.status_code, e.description)

        bucket = conn.ice_bucket if action is MessageType.ICE_CANDIDATE else conn.sdp_bucket
        if bucket is not None and not bucket.take(now):
            return self._reject(conn, correlation, CLIENT_LIMIT, 400, f"{action.value} rate exceeded")

        ch = conn.channel
        if conn.client_id is None:  # from the master: to the named viewer
            if recipient is None:
                return self._reject(
                    conn, correlation, INVALID_ARGUMENT, 400, "recipientClientId is required for a master"
                )
            # No senderClientId towards viewers (open question 2): a viewer only ever hears from
            # the master, and both SDKs accept the field's absence.
            frame = delivery_frame(action, payload, None)
            target = ch.viewers.get(recipient)
        else:  # from a viewer: always to the master, whatever recipient it named
            recipient = None
            frame = delivery_frame(action, payload, conn.client_id)
            target = ch.master

        if target is None:
            if self.clustered:
                return [Forward(ch.ref.arn, recipient, action, conn.client_id, frame, ch.ref.message_ttl_seconds)]
            self._buffer(ch, recipient, action, conn.client_id, frame, now)
            return []
        target.messages_out += 1
        self.stats[_RELAYED_KEY[action]] += 1
        return [Send(target.id, frame)]

    def _reject(
        self, conn: _Conn, correlation: str | None, error_type: str, status: int, description: str
    ) -> list[Action]:
        stats = self.stats
        stats["rejected"] += 1
        if correlation is None:
            return []  # AWS answers errors only to frames carrying a correlationId
        key = "status_responses." + error_type
        stats[key] = stats.get(key, 0) + 1
        conn.messages_out += 1
        return [Send(conn.id, status_response_frame(correlation, error_type, status, description))]

    def _buffer(
        self,
        ch: _Channel,
        recipient: str | None,
        message_type: MessageType,
        sender: str | None,
        frame: str,
        now: float,
    ) -> None:
        cap = self.limits.max_buffered_per_recipient
        if cap is not None and cap <= 0:
            self.stats["buffer_overflow"] += 1
            return
        stats = self.stats
        queue = ch.pending.get(recipient)
        if queue is None:
            queue = ch.pending[recipient] = []
            self._with_pending.add(ch.ref.arn)
        elif message_type in _SDP_REPLACES:
            # A newer offer (answer) supersedes a pending one from the same sender; it takes the
            # newest place so the recipient sees messages in the order they were sent.
            for i, p in enumerate(queue):
                if p.message_type is message_type and p.sender == sender:
                    del queue[i]
                    stats["buffer_replaced"] += 1
                    break
        queue.append(_Pending(now + ch.ref.message_ttl_seconds, message_type, sender, frame))
        stats["buffered"] += 1
        if cap is not None and len(queue) > cap:
            del queue[0]
            stats["buffer_overflow"] += 1

    # --- housekeeping ---------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Expire buffered messages; GO_AWAY, then close, connections that are idle or too old."""
        if self._with_pending:
            self._expire(now)
        actions: list[Action] = []
        idle = self.limits.idle_timeout
        idle_cut = now - idle if idle is not None else -math.inf
        due: list[tuple[_Conn, str]] | None = None
        for conn in self._conns.values():
            if conn.last_active <= idle_cut:
                if due is None:
                    due = []
                due.append((conn, REASON_IDLE))
            elif now >= conn.go_away_at:
                conn.go_away_at = math.inf
                self._go_away(conn, actions)
                if now >= conn.close_at:
                    if due is None:
                        due = []
                    due.append((conn, REASON_MAX_DURATION))
            elif now >= conn.close_at:
                if due is None:
                    due = []
                due.append((conn, REASON_MAX_DURATION))
        if due is not None:
            stats = self.stats
            for conn, reason in due:
                stats["closed_idle" if reason == REASON_IDLE else "closed_max_duration"] += 1
                self._forget(conn)
                actions.append(Close(conn.id, CLOSE_NORMAL, reason))
        if self._maybe_empty:
            self._collect(now)
        return actions

    def _go_away(self, conn: _Conn, actions: list[Action]) -> None:
        conn.messages_out += 1
        self.stats["go_aways"] += 1
        actions.append(Send(conn.id, go_away_frame()))

    def _expire(self, now: float) -> None:
        stats = self.stats
        for arn in list(self._with_pending):
            ch = self._channels[arn]
            for recipient, queue in list(ch.pending.items()):
                # TTLs can differ (MessageTtlSeconds changed), so filter rather than pop a prefix.
                kept = [p for p in queue if p.expires > now]
                if len(kept) != len(queue):
                    stats["ttl_dropped"] += len(queue) - len(kept)
                    if kept:
                        ch.pending[recipient] = kept
                    else:
                        del ch.pending[recipient]
            if not ch.pending:
                self._with_pending.discard(arn)
                self._maybe_empty.add(arn)

    def _collect(self, now: float) -> None:
        """Drop channels with nobody connected and nothing buffered, once their connect buckets
        are full again (dropping earlier would hand a reconnect storm a fresh bucket)."""
        for arn in list(self._maybe_empty):
            ch = self._channels.get(arn)
            if ch is None:
                self._maybe_empty.discard(arn)
            elif ch.master is not None or ch.viewers or ch.pending:
                self._maybe_empty.discard(arn)  # in use again; re-added when it empties
            elif all(b is None or b.peek(now) >= b.burst for b in (ch.master_connects, ch.viewer_connects)):
                del self._channels[arn]
                self._maybe_empty.discard(arn)

    # --- the cluster --------------------------------------------------------------------------------

    def deliver_local(self, arn: str, recipient: str | None, message_type: MessageType, frame: str) -> list[Action]:
        """A message another node routed here; [] when the recipient is not (or no longer) here."""
        ch = self._channels.get(arn)
        if ch is None:
            return []
        target = ch.master if recipient is None else ch.viewers.get(recipient)
        if target is None:
            return []
        target.messages_out += 1
        key = _RELAYED_KEY.get(message_type)
        if key is not None:
            self.stats[key] += 1
        return [Send(target.id, frame)]

    def deliver_buffered(self, connection: ConnectionId, frames: Iterable[tuple[MessageType, str]]) -> list[Action]:
        """Frames the shared buffer held for a connection that just joined (clustered hubs)."""
        conn = self._conns.get(connection)
        if conn is None:
            return []
        actions: list[Action] = []
        for message_type, frame in frames:
            conn.messages_out += 1
            key = _RELAYED_KEY.get(message_type)
            if key is not None:
                self.stats[key] += 1
            actions.append(Send(connection, frame))
        return actions

    def displace(self, connection: ConnectionId) -> list[Action]:
        """A newer connection for the same role/ClientId joined on another node: close this one."""
        conn = self._conns.get(connection)
        if conn is None:
            return []
        self.stats["displaced"] += 1
        self._forget(conn)
        return [Close(conn.id, CLOSE_NORMAL, REASON_REPLACED)]

    def presence(self) -> list[tuple[ConnectionId, str, Role, str | None]]:
        """(connection, channel arn, role, client id) of every local connection (to re-register after a bus outage)."""
        return [(c.id, c.channel.ref.arn, c.role, c.client_id) for c in self._conns.values()]

    # --- operator actions -----------------------------------------------------------------------

    def close_channel(self, arn: str) -> list[Action]:
        """The channel was deleted: GO_AWAY and close every connection, drop its buffer."""
        ch = self._channels.pop(arn, None)
        self._with_pending.discard(arn)
        self._maybe_empty.discard(arn)
        if ch is None:
            return []
        actions: list[Action] = []
        conns = [ch.master] if ch.master is not None else []
        conns.extend(ch.viewers.values())
        for conn in conns:
            self._go_away(conn, actions)
            del self._conns[conn.id]
            actions.append(Close(conn.id, CLOSE_NORMAL, REASON_CHANNEL_DELETED))
        return actions

    def go_away_all(self) -> list[Action]:
        """Shutdown is coming: GO_AWAY to every connection (the adapter closes them later)."""
        actions: list[Action] = []
        for conn in self._conns.values():
            conn.go_away_at = math.inf  # don't repeat it at max duration
            self._go_away(conn, actions)
        return actions

    def reconnect_ice_all(self) -> list[Action]:
        """ICE (TURN) configuration changed: RECONNECT_ICE_SERVER to every connection."""
        frame = reconnect_ice_server_frame()
        self.stats["reconnect_ice_servers"] += len(self._conns)
        actions: list[Action] = []
        for conn in self._conns.values():
            conn.messages_out += 1
            actions.append(Send(conn.id, frame))
        return actions

    # --- introspection --------------------------------------------------------------------------

    def connection_count(self) -> int:
        return len(self._conns)

    def connections_by_role(self) -> dict[Role, int]:
        """How many masters and viewers are connected (for metrics)."""
        counts = dict.fromkeys(Role, 0)
        for conn in self._conns.values():
            counts[conn.role] += 1
        return counts

    def buffered_count(self) -> int:
        """Messages waiting for an absent recipient right now (expired ones included until the next tick)."""
        channels = (self._channels.get(arn) for arn in self._with_pending)
        return sum(len(q) for ch in channels if ch is not None for q in ch.pending.values())

    def has_master(self, arn: str) -> bool:
        """Is a master connected to this channel (on this node)?"""
        channel = self._channels.get(arn)
        return channel is not None and channel.master is not None

    def channel_count(self) -> int:
        """Channels the hub holds state for (connections, buffered messages or rate state)."""
        return len(self._channels)

    def channel_snapshot(self, arn: str, now: float) -> ChannelSnapshot:
        """Who is on a channel and what waits for whom; empty for a channel the hub doesn't know."""
        ch = self._channels.get(arn)
        if ch is None:
            return ChannelSnapshot(arn, None, (), ())
        buffered = [
            BufferedInfo(recipient, p.sender, p.message_type, p.expires - now)
            for recipient, queue in ch.pending.items()
            for p in queue
            if p.expires > now
        ]
        return ChannelSnapshot(
            arn,
            _info(ch.master) if ch.master is not None else None,
            tuple(_info(c) for c in _by_age(ch.viewers.values())),
            tuple(buffered),
        )


def _info(conn: _Conn) -> ConnectionInfo:
    return ConnectionInfo(conn.client_id, conn.connected_since, conn.messages_in, conn.messages_out)


def _by_age(conns: Iterable[_Conn]) -> list[_Conn]:
    return sorted(conns, key=lambda c: (c.connected_since, c.id))
