"""The `Bus` interface: what a node needs from its peers to behave as one signaling service.

On one node the hub holds presence and the undelivered-message buffer itself and the `LocalBus`
does nothing. In a cluster (`RedisBus`) the hub is told it is clustered: presence (who is master,
which viewers, on which node) and the buffer live in the bus, and the hub turns "recipient not
here" into a `Forward` action that the bus either delivers to the node holding the recipient or
keeps for the message's TTL. The bus calls back into the node (`BusHandler`) to deliver frames,
close displaced connections and apply cluster-wide events (channel deleted, TTL changed, reload).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from signalite.signaling.hub import ConnectionId, Forward, Role
from signalite.signaling.protocol import MessageType


class BusUnavailable(Exception):
    """The shared bus cannot be reached; the node keeps serving what it can locally."""


class BusHandler(Protocol):
    """What a node does when the bus speaks to it."""

    async def deliver(self, arn: str, recipient: str | None, message_type: MessageType, frame: str) -> bool:
        """Deliver to a local recipient; False when it is not connected here (any more)."""

    async def displace(self, connection: ConnectionId) -> None:
        """A newer connection for the same role/ClientId joined elsewhere: close this one."""

    async def on_bus_event(self, event: Mapping[str, Any]) -> None:
        """A cluster-wide event: {"type": "channel_deleted"|"channel_updated"|"reload", ...}."""

    async def on_bus_reconnected(self) -> None:
        """The bus was unreachable for a while: cluster-wide events may have been missed."""

    def local_presence(self) -> Sequence[tuple[ConnectionId, str, Role, str | None]]:
        """Every local connection, to re-register after the bus lost its state."""


class Bus(Protocol):
    """Cross-node presence, delivery and buffering."""

    node_id: str
    clustered: bool

    async def start(self, handler: BusHandler) -> None: ...

    async def stop(self) -> None:
        """Leave the cluster: forget this node's presence and its registry entry."""

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
        """Register a new connection as the holder of its role/ClientId, cluster-wide.

        Raises ConnectRefused when the channel's viewer cap or connect rate is exceeded. Displaces
        an older holder on another node. Returns the frames buffered for this recipient, in order.
        """

    async def release(self, arn: str, role: Role, client_id: str | None, connection: ConnectionId) -> None:
        """The connection is gone (only clears presence it still holds)."""

    async def forward(self, forward: Forward) -> None:
        """Deliver to the node holding the recipient, or buffer for the TTL."""

    def forward_nowait(self, forward: Forward) -> None:
        """`forward` from a callback that cannot wait: in the order of the calls, like awaited forwards."""

    async def master_present(self, arn: str) -> bool: ...

    async def publish_event(self, event: Mapping[str, Any]) -> None:
        """Tell every node (this one included) about a cluster-wide event."""

    def status(self) -> Mapping[str, Any]:
        """For /health: kind, node id, connected or not, known live nodes."""
