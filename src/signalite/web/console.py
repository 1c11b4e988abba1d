"""The operator console at /console/ (static pages shipped in the package) and its live-view feed.

Routes (everything under /console/ is GET or HEAD):

* ``/console`` -> redirect to ``/console/``; ``/console/`` -> ``index.html`` (channels and live view);
  ``/console/<file>`` -> one of the files in ``signalite/console/``. The set of servable files is read
  once at start-up; a request names a file of that set exactly or gets a 404, so no path, however
  encoded (``..``, ``%2e%2e``, ``%2f``, backslashes), can reach anything else.
* ``/console/api/info`` -> JSON: auth mode, default region, server time (the pages correct their
  SigV4 clock with it), version, node, whether TURN is configured. Nothing secret.
* ``/console/api/live?channel=<arn>`` -> a server-sent-events stream of one channel, one ``snapshot``
  event a second: the master and the viewers connected to this node (client id, node, connected
  since, messages in/out), messages buffered for absent recipients with their remaining TTL, and the
  channel's recent signaling events (in a cluster: what this node sees). Never a message payload:
  the hub's snapshot does not hold them and events are copied field by field from a fixed list.
  In strict mode the URL must be SigV4-presigned (as the KVS SDKs presign the signaling WebSocket:
  service ``kinesisvideo``, only ``host`` signed, the ``channel`` parameter signed with it) by a key
  whose policy allows ``kinesisvideo:DescribeSignalingChannel`` on that channel of its own account.
  The signature is checked when the stream opens; the pages re-sign when they reconnect. At most
  `MAX_LIVE_FEEDS` streams are open per node.

The pages talk to signalite's own AWS APIs (same origin, SigV4-signed with WebCrypto): nothing here
duplicates the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from signalite import __version__
from signalite.auth.policy import action_name, evaluate
from signalite.auth.sigv4 import Credential, verify_presigned
from signalite.log import event
from signalite.model.arn import parse_arn
from signalite.model.errors import (
    AccessDeniedException,
    InvalidArgumentException,
    ServiceError,
    ServiceUnavailableException,
    UnknownOperationException,
)
from signalite.signaling.hub import ConnectionInfo
from signalite.web.auth import request_parts
from signalite.web.rest import error_response

STATIC_DIR = Path(__file__).resolve().parent.parent / "console"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}

# Everything the pages load comes from this server; media and data URLs only for video and canvas.
# connect-src also allows other http(s)/ws(s) origins: GetSignalingChannelEndpoint may name the
# server's public URL, which can differ from the address the console was opened with.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self' http: https: ws: wss:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

# The fields of a recorded signaling event the live view may show (see SignalingSockets.record).
EVENT_FIELDS = ("time", "kind", "role", "client_id", "code", "close_code", "reason", "error_type")
MAX_EVENTS = 60
# Open live-view streams per node; each costs a store read and a scan of the recent events a second.
MAX_LIVE_FEEDS = 200

DESCRIBE = action_name("DescribeSignalingChannel")


@dataclass(frozen=True, slots=True)
class StaticFile:
    path: Path
    content_type: str


def scan_static(root: Path) -> dict[str, StaticFile]:
    """Relative URL path -> file, for every servable file under `root` (no dotfiles, known types only)."""
    files: dict[str, StaticFile] = {}
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith((".", "_")) for part in rel.parts):
            continue
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is not None:
            files[rel.as_posix()] = StaticFile(path, content_type)
    return files


class Console:
    """Serves /console/... for one Server."""

    def __init__(
        self, server: Any, *, static_dir: Path = STATIC_DIR, interval: float = 1.0, max_feeds: int = MAX_LIVE_FEEDS
    ) -> None:
        self.server = server
        self.interval = interval
        self.max_feeds = max_feeds
        self.files = scan_static(static_dir)
        self.live_feeds = 0  # open live-view streams

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="method not allowed\n", headers={"Allow": "GET, HEAD"})
        if path == "/console":
            raise web.HTTPPermanentRedirect("/console/")
        rel = path[len("/console/") :]
        if rel == "api/live":
            return await self.live(request)
        if rel == "api/info":
            return self.info()
        if rel.startswith("api/"):
            return error_response(UnknownOperationException(f"Unknown console API: {path}"), "-")
        return self.static(rel or "index.html", request)

    # -- static files ----------------------------------------------------------------------------

    def static(self, rel: str, request: web.BaseRequest) -> web.StreamResponse:
        # Only an exact name from the scanned set is served: "..", "%2e%2e", "a/../b", "\\" never match.
        found = self.files.get(rel)
        if found is None or "\\" in rel or "\x00" in rel:
            return web.Response(status=404, text="not found\n", headers={"X-Content-Type-Options": "nosniff"})
        try:
            body = found.path.read_bytes()
        except OSError:
            return web.Response(status=404, text="not found\n")
        return web.Response(body=body, headers={"Content-Type": found.content_type, **SECURITY_HEADERS})

    # -- info ------------------------------------------------------------------------------------

    def info(self) -> web.Response:
        s = self.server
        settings = s.settings
        body = {
            "authMode": s.gatekeeper.mode,
            "region": settings.region,
            "serverTime": s.clock(),
            "version": __version__,
            "node": s.metrics.node,
            "limits": settings.limits,
            "turnConfigured": bool(settings.turn_uri and settings.turn_secret),
            "endpoint": settings.base_url,
        }
        return web.Response(
            body=orjson.dumps(body), headers={"Content-Type": "application/json", "Cache-Control": "no-store"}
        )

    # -- live view -------------------------------------------------------------------------------

    async def live(self, request: web.BaseRequest) -> web.StreamResponse:
        arn = request.query.get("channel", "")
        parsed = parse_arn(arn)
        request_id = str(uuid.uuid4())
        if parsed is None or parsed.kind != "channel":
            return error_response(InvalidArgumentException("channel must be a signaling channel ARN."), request_id)
        try:
            self.authorize_live(request, arn)
        except ServiceError as e:
            self.server.metrics.auth_failures.labels(self.server.metrics.node, e.code).inc()
            event(logging.INFO, "console.live_refused", request_id=request_id, channel=arn, code=e.code)
            return error_response(e, request_id)
        if self.live_feeds >= self.max_feeds:
            busy = ServiceUnavailableException(f"Too many live views are open on this node ({self.max_feeds}).")
            return error_response(busy, request_id)

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # reverse proxies: don't hold the stream back
                "X-Content-Type-Options": "nosniff",
            }
        )
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        self.live_feeds += 1
        event(logging.DEBUG, "console.live_opened", channel=arn)
        try:
            await response.write(b"retry: 2000\n\n")
            while True:
                snapshot = await self.snapshot(arn)
                await response.write(b"event: snapshot\ndata: " + orjson.dumps(snapshot) + b"\n\n")
                if self.server.draining:
                    break
                await asyncio.sleep(self.interval)
        except (ConnectionError, RuntimeError):
            pass  # the browser went away (closed tab, navigated, re-signed the feed)
        finally:
            self.live_feeds -= 1
            event(logging.DEBUG, "console.live_closed", channel=arn)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    def authorize_live(self, request: web.BaseRequest, arn: str) -> None:
        """Strict mode: a valid presigned URL whose key may DescribeSignalingChannel on `arn`."""
        gatekeeper = self.server.gatekeeper
        identities = gatekeeper.identities
        if identities is None:
            return

        def lookup(access_key_id: str) -> Credential | None:
            identity = identities.get(access_key_id)
            return None if identity is None else identity.credential

        verified = verify_presigned(request_parts(request, b""), lookup, self.server.clock())
        credential = verified.credential
        identity = identities[credential.access_key_id]
        parsed = parse_arn(arn)
        if parsed is None or parsed.account != credential.account_id or not evaluate(identity.policy, DESCRIBE, [arn]):
            raise AccessDeniedException(
                f"User {credential.access_key_id} is not authorized to perform {DESCRIBE} on {arn}", status=403
            )

    async def snapshot(self, arn: str) -> dict[str, Any]:
        """What the live view shows of one channel right now (never a payload)."""
        s = self.server
        now = s.clock()
        mono = s.sockets.monotonic()
        node = s.metrics.node
        hub_view = s.hub.channel_snapshot(arn, mono)

        def connection(info: ConnectionInfo, role: str) -> dict[str, Any]:
            since = now - (mono - info.connected_since)  # the hub keeps monotonic time
            return {
                "role": role,
                "clientId": info.client_id,
                "node": node,
                "connectedSince": round(since, 3),
                "connectedSeconds": round(max(0.0, mono - info.connected_since), 1),
                "messagesIn": info.messages_in,
                "messagesOut": info.messages_out,
            }

        channel: dict[str, Any] | None
        try:
            record = await s.store.get_channel(arn)
        except Exception:
            channel = {"error": "the store is unavailable"}
        else:
            channel = None
            if record is not None:
                channel = {
                    "name": record.name,
                    "status": record.status,
                    "version": record.version,
                    "messageTtlSeconds": record.message_ttl_seconds,
                    "creationTime": record.creation_time,
                }
        events = []
        for recorded in list(s.sockets.recent_events):
            if recorded.get("channel") == arn:
                events.append({k: recorded[k] for k in EVENT_FIELDS if recorded.get(k) is not None})
        return {
            "time": round(now, 3),
            "channelARN": arn,
            "channel": channel,
            "node": node,
            # In a cluster this node's hub knows its own connections only; buffers live in the bus.
            "clustered": bool(getattr(s.sockets.bus, "clustered", False)),
            "master": None if hub_view.master is None else connection(hub_view.master, "MASTER"),
            "viewers": [connection(v, "VIEWER") for v in hub_view.viewers],
            "buffered": [
                {
                    "recipient": b.recipient,
                    "sender": b.sender,
                    "messageType": b.message_type.value,
                    "secondsLeft": round(b.seconds_left, 1),
                }
                for b in hub_view.buffered
            ],
            "events": events[-MAX_EVENTS:],
        }
