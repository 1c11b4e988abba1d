"""Wiring: Settings -> store, hub, adapters -> one aiohttp application on one port.

`Server` owns the lifecycle (start, serve, drain, stop) so that the CLI, `signalite.testing` and
benchmarks all run exactly the same thing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from signalite import __version__
from signalite.config import Settings
from signalite.controlplane.operations import Endpoints, NoEvents, Quotas
from signalite.log import event
from signalite.model.errors import UnknownOperationException
from signalite.store.base import ChannelStore
from signalite.store.sqlite import SqliteStore
from signalite.web.controlplane import ControlPlane
from signalite.web.rest import Caller, RestApi, error_response

# The credential scope `<AKID>/<yyyymmdd>/<region>/<service>/aws4_request`, as found in an
# Authorization header or an X-Amz-Credential query parameter.
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/")

CORS_ALLOWED_HEADERS = (
    "authorization, content-type, x-amz-date, x-amz-security-token, x-amz-user-agent, "
    "x-amz-content-sha256, amz-sdk-invocation-id, amz-sdk-request, x-amz-target"
)
CORS_EXPOSED_HEADERS = "x-amzn-RequestId, x-amzn-ErrorType, x-amz-apigw-id, Date"


class Server:
    """One signalite node: HTTP(S) + WebSocket on one port."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.store: ChannelStore | None = None
        self.started_at = 0.0
        self._runner: web.AppRunner | None = None
        self._socket: socket.socket | None = None
        self.port = settings.port

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, bind the port, and start serving."""
        self._socket = _bind(self.settings.host, self.settings.port)
        self.port = self._socket.getsockname()[1]
        if self.settings.port == 0:
            self.settings = replace(self.settings, port=self.port)
        self.store = SqliteStore(self.settings.database_path)
        self.started_at = self.clock()
        app = self._build_app()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.SockSite(self._runner, self._socket, ssl_context=self._ssl_context())
        await site.start()

    async def stop(self) -> None:
        """Stop serving and close the store."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.store is not None:
            await self.store.close()
            self.store = None

    @property
    def url(self) -> str:
        return self.settings.base_url

    def _ssl_context(self) -> ssl.SSLContext | None:
        return None

    # -- the application -----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        assert self.store is not None
        s = self.settings
        endpoints = Endpoints(wss=s.wss_url, https=s.base_url, webrtc=s.base_url)
        control_plane = ControlPlane(
            self.store, endpoints, Quotas(max_channels=s.max_channels), self._events(), self.clock
        )
        self.rest = RestApi({"kinesisvideo": control_plane}, self._authenticate)
        app = web.Application(client_max_size=s.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def _events(self) -> NoEvents:
        return NoEvents()

    async def _authenticate(self, request: web.Request, body: bytes) -> Caller:
        # Open mode: any credentials are accepted; the region comes from the SigV4 scope.
        auth = request.headers.get("Authorization") or request.query.get("X-Amz-Credential", "")
        if auth and not auth.startswith("AWS4"):
            auth = "Credential=" + auth
        m = _SCOPE.search(auth)
        return self.settings.account_id, m.group(1) if m else self.settings.region

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        method = request.method
        if method == "POST":
            response = await self.rest.handle(request)
        elif method == "OPTIONS":
            response = _preflight(request)
        elif method in ("GET", "HEAD") and request.path == "/health":
            response = await self._health()
        else:
            response = error_response(
                UnknownOperationException(f"Unknown operation: {method} {request.path}"), "-"
            )
        if "Origin" in request.headers:
            _add_cors(request, response)
        return response

    async def _health(self) -> web.Response:
        assert self.store is not None
        status, code = "ok", 200
        try:
            await self.store.ping()
        except Exception:
            status, code = "degraded", 503
        body: dict[str, Any] = {
            "status": status,
            "version": __version__,
            "auth_mode": "open",
            "store": "sqlite",
            "uptime_seconds": round(self.clock() - self.started_at, 3),
            "url": self.settings.base_url,
        }
        return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _preflight(request: web.Request) -> web.Response:
    headers = {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": request.headers.get(
            "Access-Control-Request-Headers", CORS_ALLOWED_HEADERS
        ),
        "Access-Control-Max-Age": "86400",
    }
    return web.Response(status=200, headers=headers)


def _add_cors(request: web.Request, response: web.StreamResponse) -> None:
    if response.prepared:  # a WebSocket: the upgrade has been sent already
        return
    response.headers["Access-Control-Allow-Origin"] = request.headers["Origin"]
    response.headers["Vary"] = "Origin"
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS


async def serve_forever(server: Server, stop: asyncio.Event) -> None:
    """Run `server` until `stop` is set."""
    await server.start()
    event(logging.INFO, "server.started", url=server.url)
    try:
        await stop.wait()
    finally:
        await server.stop()
