"""The Redis bus: a signalite cluster's shared presence, delivery and undelivered-message buffer.

Theory of operation
-------------------
Every key and pub/sub channel starts with the cluster name (`--cluster-name`, default
`signalite`), so several clusters can share one Redis (pub/sub channels ignore database numbers,
hence the prefix rather than a database per cluster). With `P` that prefix:

* `P:nodes` (hash node -> last heartbeat ms) and `P:alive:<node>` (expires after 5 s): the node
  registry. Each node refreshes both every 2 s; a node whose alive key has expired is dead.
* `P:presence:<arn>` (hash): field `m` (the master) or `v:<ClientId>` -> `<node>\\x1f<connection>`.
  `P:held:<node>` (set of `<arn>\\x1f<field>`) lists what a node holds, so its entries can be
  removed when it leaves or dies.
* `P:buf:<arn>:<field>` (list): messages for an absent recipient, each
  `<expires-ms>\\x1f<type>\\x1f<sender>\\x1f<frame>`, expiring with the newest message's TTL.
* `P:to:<node>` (pub/sub): frames and "close this connection" for one node; `P:events`: channel
  deleted / TTL changed / reload, for every node.

Each step that reads and writes is one Lua script, so it is atomic without locks: *claim* (viewer
cap and connect rate checked, presence taken, an older holder on another node told to close, the
recipient's buffer handed over), *route* (publish to the node holding the recipient if it is
alive, else buffer — with a newer SDP offer/answer from the same sender replacing the older one),
*release*, and *sweep* (any node removes a dead node's presence). A message in flight to a node
that dies at that instant is lost, as it would be in a socket's send buffer; buffered messages are
not.

If Redis goes away, the node keeps serving its own clients (local routing does not touch Redis),
refuses nothing it can still do, logs, and reconnects with back-off; on reconnection it registers
again and re-claims every local connection, because a restarted Redis may have lost everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from signalite.bus.base import BusHandler
from signalite.log import event
from signalite.signaling.hub import ConnectionId, ConnectRefused, Forward, Role
from signalite.signaling.protocol import MessageType

SEP = "\x1f"  # never appears in JSON text, ARNs or client ids
HEARTBEAT_SECONDS = 2.0
DEAD_AFTER_MS = 5000
BUFFER_CAP = 200

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
if lookup == '1' then
  local holder = redis.call('HGET', presence, field)
  if holder then
    local node = string.sub(holder, 1, string.find(holder, '\\31', 1, true) - 1)
    if redis.call('EXISTS', prefix .. ':alive:' .. node) == 1 then
      -- No subscriber: the node died a moment ago (its alive key outlives it); keep the message.
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


def _field(client_id: str | None) -> str:
    return "m" if client_id is None else "v:" + client_id


class RedisBus:
    """`Bus` over one Redis server."""

    clustered = True

    def __init__(self, url: str, node_id: str, cluster: str = "signalite") -> None:
        self.url = url
        self.node_id = node_id
        self.prefix = cluster
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
        self._route = self.redis.register_script(_ROUTE)
        self._sweep = self._control.register_script(_SWEEP)
        # Forwards are queued and written by one task, many per round trip (pipelined), in order.
        self._outbox: list[tuple[Forward, asyncio.Future[None]]] = []
        self._outbox_ready = asyncio.Event()
        self._handler: BusHandler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = False
        self.live_nodes: list[str] = []
        self.lost_messages = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, handler: BusHandler) -> None:
        self._handler = handler
        ready = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._listen(ready), name="bus-listen"),
            asyncio.create_task(self._heartbeat(), name="bus-heartbeat"),
            asyncio.create_task(self._write_forwards(), name="bus-forward"),
        ]
        # Wait briefly for the first subscription so early cross-node messages are not missed;
        # if Redis is down at start the node still starts and keeps retrying.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ready), 1)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for _, done in self._outbox:  # nobody will write these any more
            if not done.done():
                done.set_result(None)
        self._outbox.clear()
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
        while True:
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
            except (RedisError, OSError) as e:
                level = logging.WARNING if self.connected else logging.DEBUG
                event(level, "bus.heartbeat_failed", error=type(e).__name__)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        delay = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(f"{self.prefix}:to:{self.node_id}", f"{self.prefix}:events")
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
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        await self._on_message(message["channel"], message["data"])
                raise ConnectionError("subscription ended")
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            except (RedisError, OSError) as e:
                if self.connected:
                    event(logging.WARNING, "bus.disconnected", error=type(e).__name__, retry_in=delay)
                self.connected = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception:
                logging.getLogger("signalite").exception("bus.listener_failed")
                await asyncio.sleep(delay)

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

    async def _on_message(self, channel: str, data: str) -> None:
        handler = self._handler
        if handler is None:
            return
        if channel.endswith(":events"):
            await handler.on_bus_event(orjson.loads(data))
            return
        kind, _, rest = data.partition(SEP)
        if kind == "x":
            await handler.displace(int(rest))
        elif kind == "d":
            arn, recipient, mtype, sender, ttl, frame = rest.split(SEP, 5)
            message_type = MessageType(mtype)
            if not await handler.deliver(arn, recipient or None, message_type, frame):
                # The recipient left between the lookup and now: keep it for the TTL instead.
                forward = Forward(arn, recipient or None, message_type, sender or None, frame, int(ttl))
                await self._run_route(forward, lookup=False)

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
        if status == "refused":
            if detail == "viewers":
                raise ConnectRefused("ClientLimitExceededException", 400, "the channel's viewer limit is reached")
            raise ConnectRefused("ClientLimitExceededException", 400, f"too many {role.value} connections per second")
        return _unpack_buffer(detail)

    async def release(self, arn: str, role: Role, client_id: str | None, connection: ConnectionId) -> None:
        p = self.prefix
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
        # Wait until the batch holding this message is written: a connection's messages then reach
        # Redis in the order it sent them, before its next frame is read (and the queue is bounded
        # by the number of connections). Many connections share each round trip.
        done = asyncio.get_running_loop().create_future()
        self._outbox.append((forward, done))
        self._outbox_ready.set()
        await done

    async def _write_forwards(self) -> None:
        """Send queued forwards, everything queued so far in one pipelined round trip, in order."""
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            if not batch:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for forward, _ in batch:
                        await self._run_route(forward, lookup=True, client=pipe)
                    await pipe.execute()
            except (RedisError, OSError) as e:
                self.lost_messages += len(batch)
                event(logging.WARNING, "bus.forward_failed", error=type(e).__name__, messages=len(batch))
            except Exception:
                # Never let this task die: every later forward would wait for it forever.
                self.lost_messages += len(batch)
                logging.getLogger("signalite").exception("bus.forward_crashed")
            finally:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _run_route(self, f: Forward, *, lookup: bool, client: Any = None) -> None:
        p = self.prefix
        field = _field(f.recipient)
        recipient = f.recipient or ""
        sender = f.sender or ""
        ttl_ms = f.ttl_seconds * 1000
        message = SEP.join(("d", f.channel_arn, recipient, f.message_type.value, sender, str(f.ttl_seconds), f.frame))
        entry = SEP.join((str(self._now_ms() + ttl_ms), f.message_type.value, sender, f.frame))
        await self._route(
            keys=[f"{p}:presence:{f.channel_arn}", f"{p}:buf:{f.channel_arn}:{field}"],
            args=[field, p, message, entry, f.message_type.value, sender, BUFFER_CAP, ttl_ms, "1" if lookup else "0"],
            client=client,
        )

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
