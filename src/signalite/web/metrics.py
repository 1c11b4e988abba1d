"""`/metrics` in the Prometheus text format (prometheus-client).

Signaling figures are read from the hub's counters at scrape time, so the relay's hot path pays
nothing for them; REST requests are counted and timed as they are answered. Every series carries a
`node` label so that a cluster's nodes can be told apart after aggregation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from signalite.signaling.hub import Hub

AUTH_ERRORS = frozenset(
    {
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "UnrecognizedClientException",
        "MissingAuthenticationTokenException",
        "AccessDeniedException",
        "NotAuthorizedException",
    }
)

# `*_created` series only double the scrape size here; nobody alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The registry of one server and the counters its adapters update."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, node: str, hub: Callable[[], Hub], handshake_refusals: Counter[str]) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = PromCounter(
            "signalite_requests",
            "REST requests answered, by operation and HTTP status",
            ["node", "operation", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "signalite_request_duration_seconds",
            "Time to answer a REST request, by operation",
            ["node", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auth_failures = PromCounter(
            "signalite_auth_failures",
            "Requests and handshakes refused by authentication or authorization, by error code",
            ["node", "kind"],
            registry=self.registry,
        )
        self.registry.register(_HubCollector(node, hub, handshake_refusals))
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe_request(self, operation: str, status: int, seconds: float, error_code: str | None) -> None:
        # `.labels()` costs microseconds per call (it hashes and validates the label values), so the
        # labelled children are looked up once per (operation, status) and kept.
        children = self._children.get((operation, status))
        if children is None:
            children = self._children[(operation, status)] = (
                self.requests.labels(self.node, operation, str(status)),
                self.latency.labels(self.node, operation),
            )
        children[0].inc()
        children[1].observe(seconds)
        if error_code in AUTH_ERRORS:
            self.auth_failures.labels(self.node, error_code).inc()

    def observe_refusal(self, error_code: str) -> None:
        """A WebSocket handshake was refused with this error code."""
        if error_code in AUTH_ERRORS:
            self.auth_failures.labels(self.node, error_code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _HubCollector:
    """Reads the hub's counters when Prometheus scrapes."""

    def __init__(self, node: str, hub: Callable[[], Hub], refusals: Counter[str]) -> None:
        self.node = node
        self.hub = hub
        self.refusals = refusals

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        hub = self.hub()
        stats = hub.stats
        node = self.node

        connections = GaugeMetricFamily(
            "signalite_connections", "Open signaling WebSocket connections, by role", labels=["node", "role"]
        )
        for role, n in hub.connections_by_role().items():
            connections.add_metric([node, role.value.lower()], n)
        yield connections

        connects = CounterMetricFamily("signalite_connects", "WebSocket connections admitted", labels=["node"])
        connects.add_metric([node], stats["connects"])
        yield connects

        refused = CounterMetricFamily(
            "signalite_connect_refusals", "WebSocket handshakes refused, by error code", labels=["node", "reason"]
        )
        for reason, n in sorted(self.refusals.items()):
            refused.add_metric([node, reason], n)
        yield refused

        relayed = CounterMetricFamily(
            "signalite_messages_relayed", "Signaling messages accepted for delivery, by type", labels=["node", "type"]
        )
        for key, n in sorted(stats.items()):
            if key.startswith("relayed."):
                relayed.add_metric([node, key.removeprefix("relayed.")], n)
        yield relayed

        buffered_now = GaugeMetricFamily(
            "signalite_buffered_messages", "Messages waiting for an absent recipient", labels=["node"]
        )
        buffered_now.add_metric([node], hub.buffered_count())
        yield buffered_now

        for name, key, text in (
            ("signalite_messages_buffered", "buffered", "Messages kept for a recipient that was not connected"),
            ("signalite_ttl_drops", "ttl_dropped", "Buffered messages dropped when their TTL ran out"),
            ("signalite_go_aways", "go_aways", "GO_AWAY messages sent"),
            ("signalite_reconnect_ice_servers", "reconnect_ice_servers", "RECONNECT_ICE_SERVER messages sent"),
            ("signalite_frames_rejected", "rejected", "Inbound frames refused (bad frame or over a rate)"),
        ):
            family = CounterMetricFamily(name, text, labels=["node"])
            family.add_metric([node], stats.get(key, 0))
            yield family

        status = CounterMetricFamily(
            "signalite_status_responses", "STATUS_RESPONSE frames sent, by error type", labels=["node", "error_type"]
        )
        for key, n in sorted(stats.items()):
            if key.startswith("status_responses."):
                status.add_metric([node, key.removeprefix("status_responses.")], n)
        yield status

        closes = CounterMetricFamily(
            "signalite_server_closes", "Connections closed by the server, by reason", labels=["node", "reason"]
        )
        for reason, key in (
            ("displaced", "displaced"),
            ("idle", "closed_idle"),
            ("max_duration", "closed_max_duration"),
        ):
            closes.add_metric([node, reason], stats.get(key, 0))
        yield closes
