"""Wiring: Settings -> store, hub, adapters -> one aiohttp application on one port.

`Server` owns the lifecycle (start, drain, stop, reload) so that the CLI, `signalite.testing` and the
benchmarks all run exactly the same thing. Two clocks are injected: `clock` (wall time, epoch
seconds: CreationTime, SigV4, TURN expiry) and `monotonic` (the hub's timers: TTLs, rates, idle
and 1-hour limits), so tests can move time without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from signalite import __version__
from signalite.auth.credentials import load_credentials
from signalite.bus.base import Bus
from signalite.bus.local import LocalBus
from signalite.bus.redis import RedisBus
from signalite.config import Settings, reload_settings
from signalite.controlplane.operations import Endpoints, Quotas
from signalite.controlplane.quotas import RateTable, RequestQuotas
from signalite.log import event
from signalite.model.errors import InvalidArgumentException, UnknownOperationException
from signalite.signaling.hub import ChannelRef, Hub, SignalingLimits
from signalite.store.base import Channel
from signalite.store.factory import open_store
from signalite.tls import ensure_self_signed, self_signed_paths, server_context
from signalite.web.auth import Gatekeeper
from signalite.web.console import Console
from signalite.web.controlplane import ControlPlane
from signalite.web.fastws import AVAILABLE as FAST_WEBSOCKETS
from signalite.web.guard import ConnectionGuard, GuardedSite, GuardLimits
from signalite.web.metrics import Metrics
from signalite.web.rest import RestApi, error_response
from signalite.web.signaling_http import SignalingApi
from signalite.web.websocket import SignalingSockets

CORS_ALLOWED_HEADERS = (
    "authorization, content-type, x-amz-date, x-amz-security-token, x-amz-user-agent, "
    "x-amz-content-sha256, amz-sdk-invocation-id, amz-sdk-request, x-amz-target"
)
CORS_EXPOSED_HEADERS = "x-amzn-RequestId, x-amzn-ErrorType, x-amz-apigw-id, Date"


def signaling_limits(mode: str) -> SignalingLimits:
    """The WebSocket limits for `--limits aws|relaxed|off`."""
    return {"aws": SignalingLimits.aws, "relaxed": SignalingLimits.relaxed, "off": SignalingLimits.off}[mode]()


class Server:
    """One signalite node: HTTP(S) + WebSocket on one port."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        tick_interval: float = 1.0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.tick_interval = tick_interval
        self.port = settings.port
        self.started_at = 0.0
        self.draining = False
        self.ca_path: str | None = None
        self._runner: web.ServerRunner | None = None
        self._site: GuardedSite | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._date_second = -1
        self._date_value = ""

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, bind the port, and start serving."""
        sock = _bind(self.settings.host, self.settings.port, reuse_port=self.settings.reuse_port)
        self.port = sock.getsockname()[1]
        if self.settings.port == 0:
            self.settings = replace(self.settings, port=self.port)
        ssl_context = self._ssl_context()
        self.store = await open_store(self.settings)
        self.node_id = self.settings.node_id or f"{socket.gethostname()}:{self.port}"
        redis_url = self.settings.redis
        self.hub = Hub(signaling_limits(self.settings.limits), clustered=redis_url is not None)
        self.bus: Bus = (
            RedisBus(redis_url, self.node_id, self.settings.cluster_name)
            if redis_url is not None
            else LocalBus(self.node_id, self.hub)
        )
        self.gatekeeper = Gatekeeper(
            identities=load_credentials(self.settings.credentials) if self.settings.credentials else None,
            default_account=self.settings.account_id,
            default_region=self.settings.region,
            store=self.store,
            quotas=RequestQuotas(RateTable.for_mode(self.settings.limits)),
            clock=self.clock,
        )
        self.sockets = SignalingSockets(
            self.hub, self.store, self.monotonic, self.gatekeeper.authorize_connect, bus=self.bus, clock=self.clock
        )
        self.sockets.on_event = self._on_cluster_event
        await self.bus.start(self.sockets)
        self.started_at = self.clock()
        self._build_app()
        self._loop = asyncio.get_running_loop()
        # aiohttp's low-level server: every request comes to _handle_request, with no router or
        # middleware in between (one dispatch on method and path is all signalite needs).
        server = web.Server(
            self._handle_request,
            request_factory=self._make_request,
            access_log=None,
            max_line_size=8190,  # request line and each header line
            max_field_size=8190,
        )
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        off = self.settings.limits == "off"
        self.guard = ConnectionGuard(
            GuardLimits(
                max_connections=None if off else self.settings.max_connections,
                max_per_address=None if off else self.settings.max_connections_per_address,
                header_timeout=self.settings.header_timeout,
                first_request_timeout=self.settings.first_request_timeout,
            )
        )
        if self.settings.websocket_stack == "auto" and FAST_WEBSOCKETS:
            self.guard.upgrades = self.sockets  # plain upgrades skip aiohttp (web/fastws.py)
        self._site = GuardedSite(self._runner, sock, self.guard, ssl_context=ssl_context)
        await self._site.start()
        self._ticker = asyncio.create_task(self.sockets.run_ticks(self.tick_interval))

    async def drain(self, grace: float | None = None) -> None:
        """Refuse new connections, send GO_AWAY to every client, and wait (bounded) for them to leave."""
        if self.draining:
            return
        self.draining = True
        self.sockets.accepting = False
        if self._site is not None:
            await self._site.stop()  # closes the listening socket; open connections carry on
            self._site = None
        await self.sockets.go_away_all()
        deadline = self.monotonic() + (self.settings.shutdown_grace if grace is None else grace)
        while self.sockets.connections and self.monotonic() < deadline:
            await asyncio.sleep(0.05)
        event(logging.INFO, "server.drained", remaining=len(self.sockets.connections))

    async def stop(self) -> None:
        """Drain (if not done yet), then close everything."""
        if self._runner is None:
            return
        await self.drain()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.sockets.close_all()
        await self._runner.cleanup()
        self._runner = None
        await self.bus.stop()  # leave the cluster's registry and presence
        await self.store.close()

    async def reload(self) -> None:
        """SIGHUP: re-read the config file; new TURN settings -> RECONNECT_ICE_SERVER to every client."""
        old = self.settings
        try:
            new = reload_settings(old)
        except (OSError, ValueError) as e:
            event(logging.ERROR, "settings.reload_failed", error=str(e))
            return
        self.settings = new
        turn_changed = (old.turn_uri, old.turn_secret) != (new.turn_uri, new.turn_secret)
        event(logging.INFO, "settings.reloaded", turn_changed=turn_changed)
        if turn_changed:
            await self.sockets.reconnect_ice_all()

    @property
    def url(self) -> str:
        return self.settings.base_url

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.tls == "self-signed":
            self.ca_path = str(ensure_self_signed(s.data_dir))
            _, cert, key = self_signed_paths(s.data_dir)
            return server_context(cert, key)
        if s.tls_cert is not None and s.tls_key is not None:
            return server_context(s.tls_cert, s.tls_key)
        return None

    # -- the application -----------------------------------------------------------------------

    def _make_request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol, writer, task, self._loop, client_max_size=self.settings.max_body_bytes
        )

    async def _handle_request(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "POST":
            # The REST APIs, straight (what _dispatch would do first, one coroutine less per call).
            response: web.StreamResponse = await self.rest.handle(request)
            if "Origin" in request.headers:
                _add_cors(request, response)
        else:
            response = await self._dispatch(request)
            if response.prepared:
                return response
        self._date_header(response)
        return response

    def _build_app(self) -> None:
        s = self.settings
        endpoints = Endpoints(wss=s.wss_url, https=s.base_url, webrtc=s.base_url)
        control_plane = ControlPlane(self.store, endpoints, Quotas(max_channels=s.max_channels), self, self.clock)
        signaling = SignalingApi(self.store, self.sockets, lambda: self.settings, self.clock)
        node = s.node_id or f"{socket.gethostname()}:{self.port}"
        self.metrics = Metrics(node, lambda: self.hub, self.sockets.refusals)
        self.sockets.on_refusal = self.metrics.observe_refusal
        self.rest = RestApi(
            {"kinesisvideo": control_plane, "kinesis-video-signaling": signaling},
            self.gatekeeper.authenticate,
            self.gatekeeper.authorize,
            self.metrics.observe_request,
        )
        self.console = Console(self)

    # ChannelEvents: the control plane tells the data plane about changes.
    # Cluster-wide: published on the bus, applied by every node (this one included) in _on_cluster_event.
    def channel_deleted(self, arn: str) -> None:
        self._spawn(self.bus.publish_event({"type": "channel_deleted", "arn": arn}))

    def channel_updated(self, channel: Channel) -> None:
        event_ = {"type": "channel_updated", "arn": channel.arn, "ttl": channel.message_ttl_seconds}
        self._spawn(self.bus.publish_event(event_))

    async def request_reload(self) -> None:
        """SIGHUP: every node re-reads its config file (each sends RECONNECT_ICE_SERVER if TURN changed)."""
        await self.bus.publish_event({"type": "reload"})

    async def _on_cluster_event(self, event_: Mapping[str, Any]) -> None:
        kind = event_.get("type")
        if kind == "channel_deleted":
            await self.sockets.close_channel(str(event_["arn"]))
        elif kind == "channel_updated":
            # A new MessageTtlSeconds applies to messages sent from now on (as AWS documents).
            self.hub.update_channel(ChannelRef(str(event_["arn"]), int(event_["ttl"])))
        elif kind == "reload":
            await self.reload()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        """Everything but POST (which _handle_request sends to the REST APIs itself)."""
        method = request.method
        response: web.StreamResponse
        if method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.sockets.handle(request)
        elif method in ("GET", "HEAD") and request.path == "/health":
            response = await self._health()
        elif request.path == "/console" or request.path.startswith("/console/"):
            return await self.console.handle(request)
        elif method == "GET" and request.path == "/metrics":
            response = web.Response(body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type})
        elif method == "OPTIONS":
            response = _preflight(request)
        elif method == "GET" and "X-Amz-ChannelARN" in request.query:
            response = error_response(
                InvalidArgumentException("ConnectAsMaster/ConnectAsViewer need a WebSocket upgrade."), "-"
            )
        else:
            response = error_response(UnknownOperationException(f"Unknown operation: {method} {request.path}"))
        if "Origin" in request.headers:
            _add_cors(request, response)
        return response

    def _date_header(self, response: web.StreamResponse) -> None:
        # Date from the injected clock (the same time SigV4 checks use), cached per second. The KVS
        # C SDK corrects its clock skew from this header.
        second = int(self.clock())
        if second != self._date_second:
            self._date_second = second
            self._date_value = email.utils.formatdate(second, usegmt=True)
        response.headers["Date"] = self._date_value

    async def _health(self) -> web.Response:
        status, code = ("draining", 503) if self.draining else ("ok", 200)
        try:
            await self.store.ping()
        except Exception:
            status, code = "degraded", 503
        body: dict[str, Any] = {
            "status": status,
            "version": __version__,
            "auth_mode": self.gatekeeper.mode,
            "store": "postgresql" if self.settings.database else "sqlite",
            "bus": dict(self.bus.status()),
            "limits": self.settings.limits,
            "connections": len(self.sockets.connections),
            "uptime_seconds": round(self.clock() - self.started_at, 3),
            "url": self.settings.base_url,
        }
        return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # --workers: several processes accept on one port; the kernel spreads new connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _preflight(request: web.BaseRequest) -> web.Response:
    headers = {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", CORS_ALLOWED_HEADERS),
        "Access-Control-Max-Age": "86400",
    }
    return web.Response(status=200, headers=headers)


def _add_cors(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers["Access-Control-Allow-Origin"] = request.headers["Origin"]
    response.headers["Vary"] = "Origin"
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
