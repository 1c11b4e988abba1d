"""The AWS service models signalite serves, loaded from botocore's shipped JSON.

botocore carries the authoritative request/response shapes of `kinesisvideo` (control plane),
`kinesis-video-signaling` (the HTTPS signaling API) and `kinesis-video-webrtc-storage`. We read them
once at start-up and derive from them: the route table (path -> operation), each operation's input
shape for validation (see `validate.py`) and the HTTP status of every modeled error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from botocore.loaders import Loader

SERVICES = ("kinesisvideo", "kinesis-video-signaling", "kinesis-video-webrtc-storage")

Shapes = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One modeled operation: where it lives on the wire and what it takes."""

    service: str
    name: str
    method: str
    path: str
    input_shape: str | None
    shapes: Shapes
    errors: frozenset[str]


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """A loaded service model."""

    name: str
    shapes: Shapes
    operations: Mapping[str, Operation]
    error_status: Mapping[str, int]


@cache
def load_service(name: str) -> ServiceModel:
    """Load one service model from botocore's data directory."""
    data = Loader().load_service_model(name, "service-2")
    shapes: Shapes = data["shapes"]
    operations: dict[str, Operation] = {}
    for op_name, op in data["operations"].items():
        operations[op_name] = Operation(
            service=name,
            name=op_name,
            method=op["http"]["method"],
            path=op["http"]["requestUri"],
            input_shape=op.get("input", {}).get("shape"),
            shapes=shapes,
            errors=frozenset(e["shape"] for e in op.get("errors", ())),
        )
    error_status = {
        shape_name: int(shape.get("error", {}).get("httpStatusCode", 400))
        for shape_name, shape in shapes.items()
        if shape.get("exception")
    }
    return ServiceModel(name, shapes, operations, error_status)


@cache
def route_table() -> Mapping[str, Operation]:
    """Every modeled path of the three services -> its operation (paths do not collide)."""
    table: dict[str, Operation] = {}
    for service in SERVICES:
        for op in load_service(service).operations.values():
            if op.path in table:  # pragma: no cover - a botocore update that breaks our assumption
                raise RuntimeError(f"two operations share {op.path}")
            table[op.path] = op
    return table
