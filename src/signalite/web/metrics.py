"""`/metrics` in the Prometheus text format (prometheus-client).

Signaling figures are read from the hub's counters at scrape time, so the relay's hot path pays
nothing for them. REST requests are counted and timed as they are answered, in plain numbers that
become Prometheus families at scrape time too: prometheus-client's Counter.inc and Histogram.observe
take locks and validate on every call (~3 µs a request), where a dict and a list update take a
fraction of that. Every series carries a `node` label so that a cluster's nodes can be told apart
after aggregation.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

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
        self._bounds = (*_LATENCY_BUCKETS, float("inf"))
        # (operation, status) -> requests answered, in the order first seen.
        self._counts: dict[tuple[str, int], float] = {}
        # operation -> a count per latency bucket (not cumulative; +Inf last), then the sum of seconds.
        self._latency: dict[str, list[float]] = {}
        self.registry.register(_RequestCollector(self))
        self.auth_failures = PromCounter(
            "signalite_auth_failures",
            "Requests and handshakes refused by authentication or authorization, by error code",
            ["node", "kind"],
            registry=self.registry,
        )
        self.registry.register(_HubCollector(node, hub, handshake_refusals))

    def observe_request(self, operation: str, status: int, seconds: float, error_code: str | None) -> None:
        counts = self._counts
        key = (operation, status)
        counts[key] = counts.get(key, 0.0) + 1.0
        histogram = self._latency.get(operation)
        if histogram is None:
            histogram = self._latency[operation] = [0.0] * (len(self._bounds) + 1)
        # The first bucket whose bound is >= seconds, as Histogram.observe picks it.
        histogram[bisect_left(self._bounds, seconds)] += 1.0
        histogram[-1] += seconds
        if error_code in AUTH_ERRORS:
            self.auth_failures.labels(self.node, error_code).inc()

    def observe_refusal(self, error_code: str) -> None:
        """A WebSocket handshake was refused with this error code."""
        if error_code in AUTH_ERRORS:
            self.auth_failures.labels(self.node, error_code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RequestCollector:
    """`signalite_requests_total` and `signalite_request_duration_seconds` from Metrics' plain numbers.

    The families come out exactly as a prometheus-client Counter ["node", "operation", "status"]
    and Histogram ["node", "operation"] print them: same names, help, label order, series order
    (first seen first), float values and bucket bounds.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.les = tuple(floatToGoString(b) for b in metrics._bounds)  # type: ignore[no-untyped-call]

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "signalite_requests",
            "REST requests answered, by operation and HTTP status",
            labels=["node", "operation", "status"],
        )
        for (operation, status), n in list(m._counts.items()):
            requests.add_metric([m.node, operation, str(status)], n)
        yield requests
        latency = HistogramMetricFamily(
            "signalite_request_duration_seconds",
            "Time to answer a REST request, by operation",
            labels=["node", "operation"],
        )
        for operation, histogram in list(m._latency.items()):
            buckets, acc = [], 0.0
            for le, n in zip(self.les, histogram, strict=False):  # the sum, last, has no bucket
                acc += n
                buckets.append((le, acc))
            latency.add_metric([m.node, operation], buckets, histogram[-1])
        yield latency


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
