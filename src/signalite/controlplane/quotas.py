"""Request-rate quotas of the REST APIs, with AWS's values (kvs-protocol.md §5.7).

Each operation may have an account-wide rate and a per-channel rate (transactions per second); a
request takes one token from each bucket that applies, and is refused with
ClientLimitExceededException when either is empty. `--limits relaxed` multiplies every rate by 10,
`--limits off` removes them. Pure: `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from signalite.model.errors import ClientLimitExceededException
from signalite.signaling.ratelimit import TokenBucket

# operation -> (per-account TPS, per-channel TPS); None = no such quota.
AWS_RATES: Mapping[str, tuple[float | None, float | None]] = {
    "CreateSignalingChannel": (50, None),
    "DeleteSignalingChannel": (50, 5),
    "DescribeMediaStorageConfiguration": (50, 5),
    "DescribeSignalingChannel": (300, 5),
    "GetSignalingChannelEndpoint": (300, None),
    "ListSignalingChannels": (50, None),
    "ListTagsForResource": (50, 5),
    "TagResource": (50, 5),
    "UntagResource": (50, 5),
    "UpdateMediaStorageConfiguration": (10, 5),
    "UpdateSignalingChannel": (50, 5),
    "SendAlexaOfferToMaster": (100, 5),
}

# Past this many buckets the older half is dropped, bounding memory.
_MAX_BUCKETS = 50_000


@dataclass(frozen=True, slots=True)
class RateTable:
    """The rates in force."""

    rates: Mapping[str, tuple[float | None, float | None]]

    @classmethod
    def for_mode(cls, mode: str) -> RateTable:
        if mode == "off":
            return cls({})
        factor = 10.0 if mode == "relaxed" else 1.0
        return cls(
            {
                op: (None if a is None else a * factor, None if c is None else c * factor)
                for op, (a, c) in AWS_RATES.items()
            }
        )


class RequestQuotas:
    """Token buckets per (account, operation) and per (channel, operation)."""

    def __init__(self, table: RateTable) -> None:
        self.table = table
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}

    def has_channel_rate(self, operation: str) -> bool:
        """Does this operation have a per-channel quota (so the adapter must resolve the channel)?"""
        rates = self.table.rates.get(operation)
        return rates is not None and rates[1] is not None

    def check(self, operation: str, account: str, channel: str | None, now: float) -> None:
        """Take a token for this request or raise ClientLimitExceededException."""
        rates = self.table.rates.get(operation)
        if rates is None:
            return
        account_rate, channel_rate = rates
        buckets = []
        if account_rate is not None:
            buckets.append(self._bucket(("account", account, operation), account_rate))
        if channel_rate is not None and channel is not None:
            buckets.append(self._bucket(("channel", channel, operation), channel_rate))
        if all(b.peek(now) >= 1 for b in buckets):
            for b in buckets:
                b.take(now)
            return
        raise ClientLimitExceededException(
            f"Rate exceeded for {operation}: the request was throttled; retry with back-off."
        )

    def _bucket(self, key: tuple[str, str, str], rate: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._prune()
            bucket = self._buckets[key] = TokenBucket(rate, max(rate, 1.0))
        return bucket

    def _prune(self) -> None:
        # Drop the older half (dicts keep insertion order). A dropped bucket that was still in use
        # comes back full: a moment of leniency, never a wrongful refusal.
        for key in list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]
