"""The Redis bus: a signalite cluster's shared presence, delivery and undelivered-message buffer.

Theory of operation
-------------------
Every key and pub/sub channel starts with the cluster name (`--cluster-name`, default
`signalite`), so several clusters can share one Redis (pub/sub channels ignore database numbers,
hence the prefix rather than a database per cluster). With `P` that prefix:

* `P:nodes` (hash node -> last heartbeat ms) and `P:alive:<node>` (expires after 5 s): the node
  registry. Each node refreshes both every 2 s; a node whose alive key has expired is dead.
* `P:presence:<arn>` (hash): field `m` (the master) or `v:<ClientId>` -> `<node>\\x1f<connection>`
  (the *holder*). `P:held:<node>` (set of `<arn>\\x1f<field>`) lists what a node holds, so its
  entries can be removed when it leaves or dies.
* `P:buf:<arn>:<field>` (list): messages for an absent recipient, each
  `<expires-ms>\\x1f<type>\\x1f<sender>\\x1f<frame>`, expiring with the newest message's TTL.
* `P:to:<node>` (pub/sub): frames and "close this connection" for one node; `P:c:<holder>`: frames
  for one connection, subscribed by its node from its claim to its release; `P:events`: channel
  deleted / TTL changed / reload, for every node.

Each step that reads and writes is one Lua script, so it is atomic without locks: *claim* (viewer
cap and connect rate checked, presence taken, an older holder on another node told to close, the
recipient's buffer handed over), *route* (publish to the connection holding the recipient if its
node is alive, else buffer — with a newer SDP offer/answer from the same sender replacing the older
one), *release*, and *sweep* (any node removes a dead node's presence). A message in flight to a
node that dies at that instant is lost, as it would be in a socket's send buffer; buffered messages
are not.

The route cache: a route script that delivered answers with the holder, and the sender remembers
it; later messages to that recipient are a plain PUBLISH to `P:c:<holder>` (no Lua: a few
microseconds of Redis instead of ~10). That is safe without any invalidation message because the
connection channel has a subscriber exactly while the holder's node holds that connection (and is
connected to Redis): PUBLISH answers 0 once the connection is gone or its node died, and the sender
then runs the route script for that message — what it would have done without the cache. A message
that does reach the node after the connection left (its UNSUBSCRIBE not yet processed) is routed
again by that node, skipping that stale holder: to where the recipient is now, or to the buffer.
Per-sender order holds: commands go out on one connection in order, and once a cached route has
answered 0, newer messages to that recipient wait until the older ones have been re-routed. Routes
to nodes that left the registry are dropped at the next heartbeat (a stalled node still subscribed).

The data path (forwards, re-routes, the subscription) runs on two connections of `bus.resp`'s
minimal client; claims, releases, heartbeats and events use redis-py.

If Redis goes away, the node keeps serving its own clients (local routing does not touch Redis),
refuses nothing it can still do, logs, and reconnects with back-off; on reconnection it registers
again, subscribes again and re-claims every local connection, because a restarted Redis may have
lost everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from signalite.bus.base import BusHandler
from signalite.bus.resp import Link, ProtocolError, ReplyError, command, open_link, publish_command
from signalite.log import event
from signalite.signaling.hub import ConnectionId, ConnectRefused, Forward, Role
from signalite.signaling.protocol import MessageType

SEP = "\x1f"  # never appears in JSON text, ARNs or client ids
HEARTBEAT_SECONDS = 2.0
DEAD_AFTER_MS = 5000
BUFFER_CAP = 200
REPLY_TIMEOUT = 2.0  # a data-path command unanswered this long: the connection is dropped and redone
ROUTE_CACHE_SIZE = 32768  # routes (~250 bytes each); a route not cached only costs a script run

_CLAIM = """
local presence, held, buf, ratekey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local field, holder, is_viewer, max_viewers, rate = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local prefix, my_node, arn = ARGV[6], ARGV[7], ARGV[8]
local old = redis.call('HGET', presence, field)
if is_viewer == '1' and not old and max_viewers >= 0 then
  local n = redis.call('HLEN', presence)
  if redis.call('HEXISTS', presence, 'm') == 1 then n = n - 1 end
  if n >= max_viewers then return {'refused', 'viewers'} end
end
if rate >= 0 then
  local c = redis.call('INCR', ratekey)
  if c == 1 then redis.call('PEXPIRE', ratekey, 2000) end
  if c > rate then return {'refused', 'rate'} end
end
redis.call('HSET', presence, field, holder)
redis.call('SADD', held, arn .. '\\31' .. field)
if old and old ~= holder then
  local sep = string.find(old, '\\31', 1, true)
  local old_node, old_conn = string.sub(old, 1, sep - 1), string.sub(old, sep + 1)
  if old_node ~= my_node then
    redis.call('SREM', prefix .. ':held:' .. old_node, arn .. '\\31' .. field)
    redis.call('PUBLISH', prefix .. ':to:' .. old_node, 'x\\31' .. old_conn)
  end
end
local items = redis.call('LRANGE', buf, 0, -1)
if #items > 0 then redis.call('DEL', buf) end
return {'ok', items}
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[3] .. '\\31' .. ARGV[1])
end
return 0
"""

_ROUTE = """
local presence, buf = KEYS[1], KEYS[2]
local field, prefix, message, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local mtype, sender, cap, ttl_ms, lookup = ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local stale = ARGV[10]
if lookup == '1' then
  local holder = redis.call('HGET', presence, field)
  -- `stale`: the holder a node re-routes for because that connection is gone from it.
  if holder and holder ~= stale then
    local node = string.sub(holder, 1, string.find(holder, '\\31', 1, true) - 1)
    if redis.call('EXISTS', prefix .. ':alive:' .. node) == 1 then
      -- The connection's own channel: answering with the holder lets the sender publish there directly.
      if redis.call('PUBLISH', prefix .. ':c:' .. holder, message) > 0 then return holder end
      -- Not subscribed (yet): the node delivers to whichever connection holds the recipient there.
      -- No subscriber at all: the node died a moment ago (its alive key outlives it); keep the message.
      if redis.call('PUBLISH', prefix .. ':to:' .. node, message) > 0 then return 1 end
    end
  end
end
if mtype == 'SDP_OFFER' or mtype == 'SDP_ANSWER' then
  local items = redis.call('LRANGE', buf, 0, -1)
  local want = '\\31' .. mtype .. '\\31' .. sender .. '\\31'
  for _, item in ipairs(items) do
    local first = string.find(item, '\\31', 1, true)
    if string.sub(item, first, first + #want - 1) == want then
      redis.call('LREM', buf, 1, item)
      break
    end
  end
end
redis.call('RPUSH', buf, entry)
redis.call('LTRIM', buf, -cap, -1)
if redis.call('PTTL', buf) < ttl_ms then redis.call('PEXPIRE', buf, ttl_ms) end
return 0
"""
_ROUTE_BYTES = _ROUTE.encode()
_ROUTE_SHA = hashlib.sha1(_ROUTE_BYTES).hexdigest().encode()

_SWEEP = """
local nodes, prefix, now, dead_after, only = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local gone = {}
local all = redis.call('HGETALL', nodes)
for i = 1, #all, 2 do
  local node, seen = all[i], tonumber(all[i + 1])
  local dead = (only ~= '' and node == only)
    or (only == '' and now - seen > dead_after and redis.call('EXISTS', prefix .. ':alive:' .. node) == 0)
  if dead then
    local held = prefix .. ':held:' .. node
    for _, member in ipairs(redis.call('SMEMBERS', held)) do
      local sep = string.find(member, '\\31', 1, true)
      local key = prefix .. ':presence:' .. string.sub(member, 1, sep - 1)
      local field = string.sub(member, sep + 1)
      local holder = redis.call('HGET', key, field)
      if holder and string.sub(holder, 1, #node + 1) == node .. '\\31' then redis.call('HDEL', key, field) end
    end
    redis.call('DEL', held, prefix .. ':alive:' .. node)
    redis.call('HDEL', nodes, node)
    table.insert(gone, node)
  end
end
return gone
"""


_TYPES = {m.value: m for m in MessageType}


def _field(client_id: str | None) -> str:
    return "m" if client_id is None else "v:" + client_id


class _Route:
    """Where a recipient was last delivered to: its connection's channel (see the module's docstring)."""

    __slots__ = ("channel", "dead", "held", "inflight", "key", "node")

    def __init__(self, key: tuple[str, str | None], channel: bytes, node: str) -> None:
        self.key = key
        self.channel = channel
        self.node = node
        self.inflight = 0  # PUBLISHes to `channel` not answered yet
        self.dead = False  # one answered 0: the rest are re-routed as their answers come, then `held`
        self.held: list[Forward] = []


class RedisBus:
    """`Bus` over one Redis server."""

    clustered = True

    def __init__(
        self, url: str, node_id: str, cluster: str = "signalite", *, route_cache: bool = True, use_hiredis: bool = True
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.prefix = cluster
        # Off: every forward runs the route script (the reference the cache is tested against).
        self.route_cache = route_cache
        self.use_hiredis = use_hiredis
        # No client-side retries: a failed call falls back at once (local routing, re-claim later),
        # and the listener's own back-off decides when to try Redis again. A blocking pool makes a
        # burst of connects wait for a connection instead of failing past the pool's size.
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": 2.0,
            "socket_connect_timeout": 2.0,
            "health_check_interval": 0,
            "retry": Retry(NoBackoff(), 0),
        }
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=5, **options)
        self.redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        # Heartbeats and sweeps on their own connection, so a busy data path can never delay them
        # past the liveness window (the node would be declared dead while serving).
        self._control: aioredis.Redis = aioredis.Redis.from_url(url, **options)
        self._claim = self.redis.register_script(_CLAIM)
        self._release = self.redis.register_script(_RELEASE)
        self._sweep = self._control.register_script(_SWEEP)
        p = cluster.encode()
        self._node_channel = p + b":to:" + node_id.encode()
        self._events_channel = p + b":events"
        self._conn_prefix = p + b":c:"
        self._prefix_bytes = p
        # The data path: commands (forwards, re-routes) and the subscription, each one connection.
        self._cmd: Link | None = None
        self._sub: Link | None = None
        self._routes: dict[tuple[str, str | None], _Route] = {}
        self._inbox: deque[tuple[bytes, bytes]] = deque()
        self._backlog: deque[Forward] = deque()  # forward_nowait() calls waiting for Redis to keep up
        self._inbox_ready = asyncio.Event()
        self._pongs: deque[asyncio.Future[None]] = deque()
        self._dispatching = False
        self._stopping = False
        self._ping: tuple[Link, asyncio.Future[None]] | None = None
        self._live: set[str] = set()
        self._unlogged_losses = 0
        self._handler: BusHandler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.connected = False
        self.live_nodes: list[str] = []
        self.lost_messages = 0
        # Cached routes found stale by their sender (PUBLISH answered 0), and messages that reached
        # this node for a connection already gone from it (routed again).
        self.route_misses = 0
        self.rerouted = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, handler: BusHandler) -> None:
        self._handler = handler
        ready = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._listen(ready), name="bus-listen"),
            asyncio.create_task(self._heartbeat(), name="bus-heartbeat"),
            asyncio.create_task(self._dispatch(), name="bus-dispatch"),
        ]
        # Wait briefly for the first subscription so early cross-node messages are not missed;
        # if Redis is down at start the node still starts and keeps retrying.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ready), 1)

    async def stop(self) -> None:
        # Forwards already written are answered (and re-routed if need be) before the connections close.
        await self.drain(1.0)
        # The flag as well as cancel(): redis-py can swallow a cancellation that arrives while it
        # reads a reply, and the heartbeat would then go on for ever.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._drop_links()
        with contextlib.suppress(RedisError, OSError):
            await self._sweep(
                keys=[f"{self.prefix}:nodes"], args=[self.prefix, self._now_ms(), DEAD_AFTER_MS, self.node_id]
            )
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self._control.aclose()
        self._handler = None

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    async def _register(self) -> bool:
        """Refresh this node's registry entry; False if it had been removed (we were taken for dead)."""
        p = self.prefix
        async with self._control.pipeline(transaction=False) as pipe:
            pipe.hexists(f"{p}:nodes", self.node_id)
            pipe.set(f"{p}:alive:{self.node_id}", "1", px=DEAD_AFTER_MS)
            pipe.hset(f"{p}:nodes", self.node_id, self._now_ms())
            known, *_ = await pipe.execute()
        return bool(known)

    async def _heartbeat(self) -> None:
        while not self._stopping:
            try:
                if not await self._register() and self.connected:
                    # Another node swept us (a stall longer than the liveness window): our presence
                    # is gone from Redis although our clients are still here, so claim it again.
                    event(logging.WARNING, "bus.reregistered", node=self.node_id)
                    await self._resync()
                gone = await self._sweep(
                    keys=[f"{self.prefix}:nodes"], args=[self.prefix, self._now_ms(), DEAD_AFTER_MS, ""]
                )
                if gone:
                    event(logging.WARNING, "bus.nodes_dead", nodes=",".join(gone))
                self.live_nodes = sorted(str(n) for n in await self._control.hkeys(f"{self.prefix}:nodes"))
                live = set(self.live_nodes)
                if self._live - live:
                    self._forget_routes_to_dead_nodes(live)
                self._live = live
            except (RedisError, OSError) as e:
                level = logging.WARNING if self.connected else logging.DEBUG
                event(level, "bus.heartbeat_failed", error=type(e).__name__)
            if self._stopping:
                return
            self._check_links()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def _check_links(self) -> None:
        """Drop a data-path connection that stopped answering (the listener then connects again).

        The subscription is pinged once a heartbeat; a ping still unanswered at the next one means
        Redis stopped talking to us. Nothing here waits, so it cannot delay the heartbeat.
        """
        cmd, sub = self._cmd, self._sub
        if cmd is not None and not cmd.closed and cmd.stalled(REPLY_TIMEOUT):
            event(logging.WARNING, "bus.disconnected", error="TimeoutError", link="commands")
            cmd.abort()
        if sub is not None and not sub.closed:
            ping = self._ping
            if ping is not None and ping[0] is sub and not ping[1].done():
                event(logging.WARNING, "bus.disconnected", error="TimeoutError", link="subscription")
                sub.abort()
                return
            self._ping = (sub, self._sub_barrier(sub))
            self._ping[1].add_done_callback(_consume)

    def _sub_barrier(self, sub: Link) -> asyncio.Future[None]:
        """Resolved once Redis has processed every (un)subscription sent on `sub` before it."""
        pong: asyncio.Future[None] = sub.loop.create_future()
        self._pongs.append(pong)
        sub.send(command(b"PING"))
        return pong

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        delay = 0.1
        while not self._stopping:
            try:
                sub = await open_link(self.url, on_push=self._on_push, use_hiredis=self.use_hiredis)
                sub.subscribed = True
                self._sub = sub
                cmd = await open_link(self.url, use_hiredis=self.use_hiredis)
                loaded = await cmd.call(b"SCRIPT", b"LOAD", _ROUTE_BYTES)
                if loaded != _ROUTE_SHA:
                    raise ProtocolError("SCRIPT LOAD answered an unexpected digest")
                self._cmd = cmd
                self._subscribe_all(sub)
                await asyncio.wait_for(self._sub_barrier(sub), REPLY_TIMEOUT)
                await self._register()
                await self._resync()
                was_connected = self.connected
                self.connected = True
                if not was_connected:
                    event(logging.INFO, "bus.connected", url=_redact(self.url), node=self.node_id)
                    if self._handler is not None and ready.done():
                        # Back after an outage: events published meanwhile (a channel deleted on
                        # another node) were lost, so let the node check what it holds.
                        await self._handler.on_bus_reconnected()
                delay = 0.1
                if not ready.done():
                    ready.set_result(None)
                await asyncio.wait([sub.lost, cmd.lost], return_when=asyncio.FIRST_COMPLETED)
                if self._stopping:
                    return
                raise ConnectionError("connection to Redis lost")
            except asyncio.CancelledError:
                self._drop_links()
                raise
            except (RedisError, OSError, ReplyError, ProtocolError, TimeoutError) as e:
                if self.connected:
                    event(logging.WARNING, "bus.disconnected", error=type(e).__name__, retry_in=delay)
                self.connected = False
                self._drop_links()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception:
                logging.getLogger("signalite").exception("bus.listener_failed")
                self.connected = False
                self._drop_links()
                await asyncio.sleep(delay)

    def _drop_links(self) -> None:
        """Close the data-path connections; forwards they had not answered yet count as lost."""
        cmd, sub, self._cmd, self._sub = self._cmd, self._sub, None, None
        lost = 0
        if cmd is not None:
            lost += sum(1 for _, a, _ in cmd.waiters if isinstance(a, Forward))
            cmd.waiters.clear()
            cmd.abort()
        for route in self._routes.values():
            lost += len(route.held)
        self._routes.clear()
        if sub is not None:
            sub.abort()
        for pong in self._pongs:
            if not pong.done():
                pong.set_exception(ConnectionError("connection to Redis lost"))
        self._pongs.clear()
        if lost:
            self._lost(lost, "ConnectionError")

    def _subscribe_all(self, sub: Link) -> None:
        channels = [self._node_channel, self._events_channel]
        if self._handler is not None:
            channels.extend(self._conn_channel(conn) for conn, *_ in self._handler.local_presence())
        for i in range(0, len(channels), 1000):
            sub.send(command(b"SUBSCRIBE", *channels[i : i + 1000]))

    def _conn_channel(self, connection: ConnectionId) -> bytes:
        return self._conn_prefix + f"{self.node_id}{SEP}{connection}".encode()

    async def _resync(self) -> None:
        """Re-claim every local connection: a restarted Redis has forgotten them."""
        if self._handler is None:
            return
        p = self.prefix
        async with self.redis.pipeline(transaction=False) as pipe:
            for conn, arn, _role, client_id in self._handler.local_presence():
                field = _field(client_id)
                pipe.hset(f"{p}:presence:{arn}", field, f"{self.node_id}{SEP}{conn}")
                pipe.sadd(f"{p}:held:{self.node_id}", f"{arn}{SEP}{field}")
            await pipe.execute()

    # -- receiving -------------------------------------------------------------------------------

    def _on_push(self, reply: Any) -> None:
        """A pushed pub/sub reply (called from the subscription's data_received)."""
        if type(reply) is list and reply:
            kind = reply[0]
            if kind == b"message":
                self._inbox.append((reply[1], reply[2]))
                self._inbox_ready.set()
                return
            if kind != b"pong":
                return  # subscribe / unsubscribe confirmations: nothing to do
        elif reply != b"PONG":  # (a PING before the first SUBSCRIBE is answered +PONG)
            return  # an error reply: nothing was asked that could fail
        if self._pongs:
            pong = self._pongs.popleft()
            if not pong.done():
                pong.set_result(None)

    async def _dispatch(self) -> None:
        """Hand received messages to the node, one at a time and in the order Redis sent them."""
        inbox = self._inbox
        while True:
            await self._inbox_ready.wait()
            self._inbox_ready.clear()
            self._dispatching = True
            handled = 0
            while inbox:
                channel, data = inbox.popleft()
                try:
                    await self._on_message(channel, data)
                except Exception:
                    logging.getLogger("signalite").exception("bus.message_failed")
                handled += 1
                if handled % 256 == 0:
                    await asyncio.sleep(0)  # a long backlog must not keep the node's sockets waiting
            self._dispatching = False

    async def drain(self, timeout: float = 1.0) -> bool:
        """Wait until what was sent so far is answered and what was received is handed to the node.

        True when everything settled within `timeout` (False also when Redis is not connected). For
        shutdown and tests: the data path never waits on it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            cmd, sub = self._cmd, self._sub
            if cmd is None or sub is None or cmd.closed or sub.closed:
                return False
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await asyncio.gather(cmd.call(b"PING"), self._sub_barrier(sub))
                    while self._inbox or self._dispatching:
                        await asyncio.sleep(0.001)
            except (TimeoutError, ConnectionError, ReplyError):
                return False
            if not cmd.waiters and not self._inbox and not any(r.held for r in self._routes.values()):
                return True

    async def _on_message(self, channel: bytes, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if channel.startswith(self._conn_prefix):
            # A frame for one of this node's connections (its channel's subscriber is this node).
            _, arn, recipient, mtype, sender, ttl, frame = data.decode().split(SEP, 6)
            message_type = _TYPES[mtype]
            if not await handler.deliver(arn, recipient or None, message_type, frame):
                # That connection is gone from here: route again, past the stale holder. Its release
                # unsubscribes too, but stop the senders' cached routes now in case that was lost.
                stale = channel[len(self._conn_prefix) :]
                self.rerouted += 1
                self._route(Forward(arn, recipient or None, message_type, sender or None, frame, int(ttl)), b"1", stale)
                sub = self._sub
                if sub is not None and not sub.closed:
                    sub.send(command(b"UNSUBSCRIBE", channel))
            return
        if channel == self._events_channel:
            await handler.on_bus_event(orjson.loads(data))
            return
        kind, _, rest = data.decode().partition(SEP)
        if kind == "x":
            await handler.displace(int(rest))
        elif kind == "d":
            arn, recipient, mtype, sender, ttl, frame = rest.split(SEP, 5)
            message_type = _TYPES[mtype]
            if not await handler.deliver(arn, recipient or None, message_type, frame):
                # The recipient left between the lookup and now: keep it for the TTL instead.
                self._route(Forward(arn, recipient or None, message_type, sender or None, frame, int(ttl)), b"0")

    # -- presence ------------------------------------------------------------------------------------

    async def claim(
        self,
        arn: str,
        role: Role,
        client_id: str | None,
        connection: ConnectionId,
        *,
        max_viewers: int | None,
        connects_per_second: float | None,
    ) -> list[tuple[MessageType, str]]:
        p = self.prefix
        field = _field(client_id)
        window = int(time.time())
        sub = self._sub
        if sub is not None and not sub.closed:
            # Before the claim: no route script can answer with this holder before it is claimed, and
            # until Redis has processed the subscription the script falls back to the node channel.
            sub.send(command(b"SUBSCRIBE", self._conn_channel(connection)))
        try:
            status, detail = await self._claim(
                keys=[
                    f"{p}:presence:{arn}",
                    f"{p}:held:{self.node_id}",
                    f"{p}:buf:{arn}:{field}",
                    f"{p}:rate:{arn}:{role.value}:{window}",
                ],
                args=[
                    field,
                    f"{self.node_id}{SEP}{connection}",
                    "1" if role is Role.VIEWER else "0",
                    -1 if max_viewers is None else max_viewers,
                    -1 if connects_per_second is None else connects_per_second,
                    p,
                    self.node_id,
                    arn,
                ],
            )
        except (RedisError, OSError) as e:
            # Keep serving: the connection works locally and is re-claimed when Redis is back.
            event(logging.WARNING, "bus.claim_failed", error=type(e).__name__)
            return []
        except BaseException:
            self._unsubscribe(connection)  # cancelled (the client left mid-handshake): nothing releases it
            raise
        if status == "refused":
            self._unsubscribe(connection)
            if detail == "viewers":
                raise ConnectRefused("ClientLimitExceededException", 400, "the channel's viewer limit is reached")
            raise ConnectRefused("ClientLimitExceededException", 400, f"too many {role.value} connections per second")
        return _unpack_buffer(detail)

    def _unsubscribe(self, connection: ConnectionId) -> None:
        sub = self._sub
        if sub is not None and not sub.closed:
            sub.send(command(b"UNSUBSCRIBE", self._conn_channel(connection)))

    async def release(self, arn: str, role: Role, client_id: str | None, connection: ConnectionId) -> None:
        p = self.prefix
        # First: from here on, senders with a cached route to it hear "no subscriber" and route again.
        self._unsubscribe(connection)
        with contextlib.suppress(RedisError, OSError):
            await self._release(
                keys=[f"{p}:presence:{arn}", f"{p}:held:{self.node_id}"],
                args=[_field(client_id), f"{self.node_id}{SEP}{connection}", arn],
            )

    async def master_present(self, arn: str) -> bool:
        try:
            return bool(await self.redis.hexists(f"{self.prefix}:presence:{arn}", "m"))
        except (RedisError, OSError):
            return False

    # -- delivery --------------------------------------------------------------------------------

    async def forward(self, forward: Forward) -> None:
        # Written at the end of this loop iteration with every other forward, on one connection, so a
        # connection's messages reach Redis in the order it sent them. Nothing to wait for unless
        # Redis is not keeping up (then the writer waits for the connection's buffer to drain).
        cmd = self._cmd
        if cmd is not None and cmd.paused is not None and not cmd.closed:
            await asyncio.shield(cmd.paused)
        self._forward(forward)

    def forward_nowait(self, forward: Forward) -> None:
        # While Redis is not keeping up, forwards wait here in their order; a later one never
        # overtakes them (a connection's messages keep their order).
        backlog = self._backlog
        cmd = self._cmd
        if backlog or (cmd is not None and cmd.paused is not None and not cmd.closed):
            backlog.append(forward)
            if len(backlog) == 1:
                self._spawn(self._drain_backlog())
            return
        self._forward(forward)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drain_backlog(self) -> None:
        backlog = self._backlog
        while backlog:
            cmd = self._cmd
            if cmd is not None and cmd.paused is not None and not cmd.closed:
                await asyncio.shield(cmd.paused)
                continue
            self._forward(backlog.popleft())

    def _forward(self, forward: Forward) -> None:
        cmd = self._cmd
        if cmd is None or cmd.closed:
            self._lost(1, "ConnectionError")
            return
        route = self._routes.get((forward.channel_arn, forward.recipient)) if self.route_cache else None
        if route is None:
            self._route(forward, b"1")
        elif route.dead:
            route.held.append(forward)  # after the in-flight ones have been routed again
        else:
            route.inflight += 1
            cmd.send(publish_command(route.channel, _message(forward)), self._published, forward, route)

    def _published(self, reply: Any, forward: Forward, route: _Route) -> None:
        """The answer to a PUBLISH on a cached route: the number of nodes that received it (0 or 1)."""
        route.inflight -= 1
        if reply == 0:
            # Nobody holds that connection any more: route this one, and every later one, the slow way.
            route.dead = True
            self.route_misses += 1
            self._route(forward, b"1")
        elif isinstance(reply, ReplyError):
            self._lost(1, "ReplyError")
        if route.dead and route.inflight == 0:
            key = route.key
            if self._routes.get(key) is route:
                del self._routes[key]
            held, route.held = route.held, []
            for f in held:
                self._route(f, b"1")

    def _route(self, f: Forward, lookup: bytes, stale: bytes = b"", *, load: bool = False) -> None:
        """Run the route script for `f` (lookup b"0": straight to the buffer; `load`: EVAL, not EVALSHA)."""
        cmd = self._cmd
        if cmd is None or cmd.closed:
            self._lost(1, "ConnectionError")
            return
        p = self.prefix
        field = _field(f.recipient)
        ttl_ms = f.ttl_seconds * 1000
        sender = f.sender or ""
        entry = SEP.join((str(self._now_ms() + ttl_ms), f.message_type, sender, f.frame))
        cmd.send(
            command(
                b"EVAL" if load else b"EVALSHA", _ROUTE_BYTES if load else _ROUTE_SHA, b"2",
                f"{p}:presence:{f.channel_arn}".encode(), f"{p}:buf:{f.channel_arn}:{field}".encode(),
                field.encode(), self._prefix_bytes, _message(f), entry.encode(),
                f.message_type.encode(), sender.encode(), b"%d" % BUFFER_CAP, b"%d" % ttl_ms, lookup, stale,
            ),
            self._routed,
            f,
            (lookup, stale, load),
        )  # fmt: skip

    def _routed(self, reply: Any, f: Forward, how: tuple[bytes, bytes, bool]) -> None:
        """The route script's answer: the holder it published to (cache it), 1 (its node) or 0 (buffered)."""
        if type(reply) is bytes and self.route_cache:
            key = (f.channel_arn, f.recipient)
            routes = self._routes
            if key not in routes:  # (a dead one still has answers to wait for: see _published)
                node = reply.split(SEP.encode(), 1)[0].decode()
                routes[key] = _Route(key, self._conn_prefix + reply, node)
                if len(routes) > ROUTE_CACHE_SIZE:
                    self._evict()
        elif isinstance(reply, ReplyError):
            lookup, stale, loaded = how
            if str(reply).startswith("NOSCRIPT") and not loaded:
                # Redis lost its script cache (SCRIPT FLUSH): EVAL loads it again.
                self._route(f, lookup, stale, load=True)
            else:
                self._lost(1, "ReplyError")

    def _evict(self) -> None:
        """Forget the oldest idle routes (the cache is a bound on memory, not on correctness)."""
        routes = self._routes
        for key in list(routes)[: ROUTE_CACHE_SIZE // 8]:
            route = routes[key]
            if route.inflight == 0 and not route.dead:
                del routes[key]

    def _forget_routes_to_dead_nodes(self, live: set[str]) -> None:
        for key, route in list(self._routes.items()):
            if route.node not in live and not route.dead:
                if route.inflight == 0:
                    del self._routes[key]
                else:
                    route.dead = True  # the in-flight ones are answered first, then the held ones

    def _lost(self, count: int, error: str) -> None:
        """Messages that could not be handed to Redis: counted, and logged once per loop iteration."""
        self.lost_messages += count
        if not self._unlogged_losses:
            asyncio.get_running_loop().call_soon(self._log_losses, error)
        self._unlogged_losses += count

    def _log_losses(self, error: str) -> None:
        count, self._unlogged_losses = self._unlogged_losses, 0
        event(logging.WARNING, "bus.forward_failed", error=error, messages=count)

    async def publish_event(self, event_: Mapping[str, Any]) -> None:
        try:
            await self.redis.publish(f"{self.prefix}:events", orjson.dumps(dict(event_)))
        except (RedisError, OSError) as e:
            # Still apply it here: this node's clients must not miss it because Redis is down.
            event(logging.WARNING, "bus.publish_failed", error=type(e).__name__)
            if self._handler is not None:
                await self._handler.on_bus_event(event_)

    def status(self) -> Mapping[str, Any]:
        return {
            "kind": "redis",
            "node": self.node_id,
            "cluster": self.prefix,
            "connected": self.connected,
            "nodes": self.live_nodes,
        }


def _message(f: Forward) -> bytes:
    """The delivery message a node receives: d, arn, recipient, type, sender, TTL, frame."""
    # (MessageType is a StrEnum: joined as its value.)
    return SEP.join(
        ("d", f.channel_arn, f.recipient or "", f.message_type, f.sender or "", str(f.ttl_seconds), f.frame)
    ).encode()


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieve a ping's outcome (a lost connection's pings fail; nobody else looks)."""
    if not future.cancelled():
        future.exception()


def _unpack_buffer(items: list[str]) -> list[tuple[MessageType, str]]:
    now_ms = int(time.time() * 1000)
    frames = []
    for item in items:
        expires, mtype, _sender, frame = item.split(SEP, 3)
        if int(expires) > now_ms:
            frames.append((MessageType(mtype), frame))
    return frames


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
