"""The single-node bus: the hub keeps presence and the buffer itself, so there is nothing to share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from signalite.bus.base import BusHandler
from signalite.signaling.hub import ConnectionId, Forward, Hub, Role
from signalite.signaling.protocol import MessageType


class LocalBus:
    """Bus for one process: events go straight back to the node."""

    clustered = False

    def __init__(self, node_id: str, hub: Hub) -> None:
        self.node_id = node_id
        self.hub = hub
        self._handler: BusHandler | None = None

    async def start(self, handler: BusHandler) -> None:
        self._handler = handler

    async def stop(self) -> None:
        self._handler = None

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
        return []  # the hub enforced the limits and handed over its own buffer

    async def release(self, arn: str, role: Role, client_id: str | None, connection: ConnectionId) -> None:
        return None

    async def forward(self, forward: Forward) -> None:  # pragma: no cover - unclustered hubs never forward
        raise RuntimeError("a single-node hub does not forward")

    def forward_nowait(self, forward: Forward) -> None:  # pragma: no cover - unclustered hubs never forward
        raise RuntimeError("a single-node hub does not forward")

    async def master_present(self, arn: str) -> bool:
        return self.hub.has_master(arn)

    async def publish_event(self, event: Mapping[str, Any]) -> None:
        if self._handler is not None:
            await self._handler.on_bus_event(event)

    def status(self) -> Mapping[str, Any]:
        return {"kind": "local", "node": self.node_id}
