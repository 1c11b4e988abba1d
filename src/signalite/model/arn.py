"""Amazon Resource Names for channels and streams.

`arn:aws:kinesisvideo:<region>:<account>:<kind>/<name>/<creation-time-in-ms>` (kvs-protocol.md §2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The data plane (WebSocket query, kinesis-video-signaling) fixes the partition to `aws`; the control
# plane model admits any partition. We only ever mint `aws` ARNs.
_ARN = re.compile(
    r"arn:(?P<partition>[a-z\d-]+):kinesisvideo:(?P<region>[a-z0-9-]+):(?P<account>[0-9]+):"
    r"(?P<kind>[a-z]+)/(?P<name>[a-zA-Z0-9_.-]+)/(?P<millis>[0-9]+)"
)


@dataclass(frozen=True, slots=True)
class Arn:
    """A parsed kinesisvideo ARN."""

    partition: str
    region: str
    account: str
    kind: str  # "channel" or "stream"
    name: str
    millis: int

    def __str__(self) -> str:
        return f"arn:{self.partition}:kinesisvideo:{self.region}:{self.account}:{self.kind}/{self.name}/{self.millis}"


def parse_arn(text: str) -> Arn | None:
    """Parse a kinesisvideo ARN; None when it does not have that shape."""
    m = _ARN.fullmatch(text)
    if m is None:
        return None
    return Arn(m["partition"], m["region"], m["account"], m["kind"], m["name"], int(m["millis"]))


def arn_owner(text: str) -> tuple[str, str, str] | None:
    """(kind, region, account) of a kinesisvideo ARN; None when parse_arn would refuse it.

    The per-request check of "is this ARN one of the caller's channels": the same match as
    parse_arn, without building an Arn (which costs twice the match itself).
    """
    m = _ARN.fullmatch(text)
    if m is None:
        return None
    kind, region, account = m.group("kind", "region", "account")
    return kind, region, account


def make_arn(kind: str, region: str, account: str, name: str, creation_time: float) -> str:
    """Mint the ARN of a new channel or stream created at `creation_time` (epoch seconds)."""
    return f"arn:aws:kinesisvideo:{region}:{account}:{kind}/{name}/{round(creation_time * 1000)}"
