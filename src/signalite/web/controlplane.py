"""The kinesisvideo control-plane handler: builds a RequestContext and runs the operation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from signalite.controlplane.operations import OPERATIONS, ChannelEvents, Endpoints, Quotas, RequestContext
from signalite.model.errors import NotImplementedException
from signalite.model.service import Operation
from signalite.store.base import ChannelStore
from signalite.web.auth import Caller


class ControlPlane:
    """Runs kinesisvideo operations against the store."""

    def __init__(
        self,
        store: ChannelStore,
        endpoints: Endpoints,
        quotas: Quotas,
        events: ChannelEvents,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.endpoints = endpoints
        self.quotas = quotas
        self.events = events
        self.clock = clock

    async def __call__(
        self, request: web.BaseRequest, op: Operation, caller: Caller, params: dict[str, Any]
    ) -> Mapping[str, Any]:
        fn = OPERATIONS.get(op.name)
        if fn is None:
            raise NotImplementedException(f"{op.name} is not implemented by signalite.")
        # Positional: RequestContext(account, region, now, store, endpoints, quotas, events).
        ctx = RequestContext(
            caller.account, caller.region, self.clock(), self.store, self.endpoints, self.quotas, self.events
        )
        return await fn(ctx, params)
