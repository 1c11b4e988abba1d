"""A token bucket: `rate` tokens per second refill a bucket holding at most `burst` tokens.

Sans-I/O like the rest of the core: the caller passes `now` (seconds, any monotonic origin). The
bucket starts full, so the first `burst` calls pass even at a single instant; after that calls pass
at `rate` per second on average. Time that appears to run backwards refills nothing (and is not
remembered), so a clock hiccup can never mint tokens.
"""

from __future__ import annotations

import math


class TokenBucket:
    """`rate` tokens/s, capacity `burst` (>= 1 so one call can ever pass); starts full."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1, got {rate!r}, {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = self.burst
        self._stamp = -math.inf  # the first refill computes inf tokens, capped to burst

    def _refill(self, now: float) -> float:
        elapsed = now - self._stamp
        if elapsed > 0:
            tokens = self._tokens + elapsed * self.rate
            self._tokens = tokens if tokens < self.burst else self.burst
            self._stamp = now
        return self._tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if available at `now`; False (and nothing spent) otherwise."""
        if self._refill(now) >= cost:
            self._tokens -= cost
            return True
        return False

    def peek(self, now: float) -> float:
        """Tokens available at `now`, without spending any."""
        return self._refill(now)

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds from `now` until `take(cost)` would pass (0.0 if it would pass now)."""
        missing = cost - self._refill(now)
        return missing / self.rate if missing > 0 else 0.0

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst}, tokens={self._tokens:.3f})"
