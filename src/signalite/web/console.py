"""The operator console at /console/ (static pages shipped in the package) and its live-view feed."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class Console:
    """Serves /console/... for one Server."""

    def __init__(self, server: Any) -> None:
        self.server = server

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()
