"""Per-API-key request rate limits: one token bucket per key, in memory (each API process counts its own)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from autoft_service.api.errors_http import RateLimited

#: Above this many buckets, the full (idle) ones are dropped: they are the same as a fresh bucket.
MAX_IDLE_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key: ``burst`` requests at once, refilled at ``rate`` per second.

    ``rate == 0`` turns limiting off. ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def wait_s(self, key: str) -> float:
        """Take one token for ``key``: 0 when the request may go ahead, else the seconds until it may."""
        if not self.enabled:
            return 0.0
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_IDLE_BUCKETS:
                    self._drop_full(now)
                bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), at=now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def check(self, key: str) -> None:
        """``RateLimited`` (429, with the seconds to wait) when ``key`` has no token left."""
        wait = self.wait_s(key)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(
                f"too many requests for this API key (limit {self.rate:g}/s, burst {self.burst}); "
                f"retry after {retry_after} s",
                details={"retry_after_s": retry_after, "rate_per_s": self.rate, "burst": self.burst},
            )

    def _drop_full(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]:
            del self._buckets[key]
