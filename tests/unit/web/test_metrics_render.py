"""`Metrics` keeps REST figures as plain numbers; its /metrics text must be what prometheus-client prints.

The reference is the straightforward implementation: a prometheus-client Counter and Histogram
with the same names, help, labels and buckets, fed the same observations.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter

from signalite.web.metrics import _LATENCY_BUCKETS, AUTH_ERRORS, Metrics, _HubCollector


class FakeHub:
    stats: Counter[str] = Counter({"connects": 3, "relayed.SDP_OFFER": 2})

    def connections_by_role(self) -> dict[Any, int]:
        return {}

    def buffered_count(self) -> int:
        return 0


class Reference:
    """What Metrics printed when it used prometheus-client's own Counter and Histogram."""

    def __init__(self, node: str, refusals: Counter[str]) -> None:
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
        self.registry.register(_HubCollector(node, lambda: FakeHub(), refusals))  # type: ignore[arg-type,return-value]

    def observe_request(self, operation: str, status: int, seconds: float, error_code: str | None) -> None:
        self.requests.labels(self.node, operation, str(status)).inc()
        self.latency.labels(self.node, operation).observe(seconds)
        if error_code in AUTH_ERRORS:
            self.auth_failures.labels(self.node, error_code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def pair() -> tuple[Metrics, Reference]:
    refusals: Counter[str] = Counter({"ResourceNotFoundException": 1})
    return Metrics("node-1", lambda: FakeHub(), refusals), Reference("node-1", refusals)  # type: ignore[arg-type,return-value]


def test_empty_scrape_is_identical() -> None:
    metrics, reference = pair()
    assert metrics.render() == reference.render()


@pytest.mark.parametrize("seed", range(5))
def test_scrapes_are_identical_after_the_same_requests(seed: int) -> None:
    metrics, reference = pair()
    rnd = random.Random(seed)
    operations = ["DescribeSignalingChannel", "GetSignalingChannelEndpoint", "unknown", "TagResource"]
    # Exactly on each bound, just either side of it, far beyond the last, zero and negative.
    edges = [b + d for b in _LATENCY_BUCKETS for d in (-1e-9, 0.0, 1e-9)] + [0.0, 100.0, -0.001]
    for i in range(3000):
        seconds = rnd.choice(edges) if i % 3 == 0 else rnd.random() * rnd.choice((0.001, 0.05, 3.0))
        args = (
            rnd.choice(operations),
            rnd.choice((200, 400, 401, 404, 500)),
            seconds,
            rnd.choice((None, None, "AccessDeniedException", "ResourceNotFoundException")),
        )
        metrics.observe_request(*args)
        reference.observe_request(*args)
        if i % 500 == 0:
            assert metrics.render() == reference.render()
    assert metrics.render() == reference.render()


def test_series_appear_in_the_order_first_seen() -> None:
    metrics, _ = pair()
    metrics.observe_request("TagResource", 400, 0.01, None)
    metrics.observe_request("DescribeSignalingChannel", 200, 0.01, None)
    metrics.observe_request("TagResource", 200, 0.01, None)
    text = metrics.render().decode()
    order = [line.split("{", 1)[1] for line in text.splitlines() if line.startswith("signalite_requests_total{")]
    assert order == [
        'node="node-1",operation="TagResource",status="400"} 1.0',
        'node="node-1",operation="DescribeSignalingChannel",status="200"} 1.0',
        'node="node-1",operation="TagResource",status="200"} 1.0',
    ]
