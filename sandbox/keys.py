"""The sandbox's limits and counts per API key: each key's token bucket of batches per second (the sandbox's
default limit, or one set for that key, changeable while it runs), and what each key sent and got kept.

A fleet of workspaces is a fleet of keys, each limited on its own by mParticle; benchmarks and tests read per key
how much was kept and when. No Django imports.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

UNSET: Any = object()


class _Bucket:
    """Token bucket of batches; starts full."""

    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


@dataclass
class KeyStats:
    requests: int = 0  # answered requests to the API paths
    throttled: int = 0  # of them, 429 (from the bucket or injected)
    batches: int = 0  # batches kept
    events: int = 0  # events in the kept batches
    duplicates: int = 0  # batches answered as duplicates of kept ones (same source_request_id)
    first_kept: float | None = None  # the sandbox clock when the first batch was kept
    last_kept: float | None = None


class KeyLimits:
    """Token buckets, one per key. Thread-safe."""

    def __init__(
        self,
        rate_limit: float | None,
        burst: float | None,
        key_limits: dict[str, float] | None,
        clock: Callable[[], float],
    ) -> None:
        self._lock = threading.Lock()
        self._rate_limit = rate_limit
        self._burst = burst
        self._key_limits: dict[str, float] = dict(key_limits or {})
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def rate_limit(self) -> float | None:
        return self._rate_limit

    @property
    def burst(self) -> float | None:
        return self._burst

    @property
    def key_limits(self) -> dict[str, float]:
        with self._lock:
            return dict(self._key_limits)

    def configure(
        self, *, rate_limit: Any = UNSET, burst: Any = UNSET, key_limits: dict[str, float | None] | Any = UNSET
    ) -> None:
        """A new default limit or burst refills every bucket. A key's own limit (None removes it) takes effect on its
        next request, keeping the tokens it has (as a limit lowered or raised while clients send)."""
        with self._lock:
            if rate_limit is not UNSET or burst is not UNSET:
                if rate_limit is not UNSET:
                    self._rate_limit = rate_limit
                if burst is not UNSET:
                    self._burst = burst
                self._buckets.clear()
            if key_limits is not UNSET:
                for key, limit in key_limits.items():
                    if limit:
                        self._key_limits[key] = float(limit)
                    else:
                        self._key_limits.pop(key, None)

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def limit_for(self, api_key: str) -> float | None:
        with self._lock:
            return self._key_limits.get(api_key, self._rate_limit)

    def take(self, api_key: str, cost: int) -> tuple[int | None, int]:
        """Spend `cost` tokens. Return (None, percent used) when allowed, else (seconds to wait, 0).

        A request costing more than the whole bucket is let through when the bucket is full and leaves it in
        debt; otherwise it could never pass and a client would retry it forever (the real API documents no
        such case). A throttled request spends nothing.
        """
        with self._lock:
            rate = self._key_limits.get(api_key, self._rate_limit)
            if not rate:
                return None, 0
            # A key with a limit of its own has a bucket of one second of it; the default has `burst`.
            capacity = float(rate if api_key in self._key_limits else (self._burst or rate))
            now = self._clock()
            bucket = self._buckets.get(api_key)
            if bucket is None:
                bucket = self._buckets[api_key] = _Bucket(capacity, now)
            bucket.tokens = min(capacity, bucket.tokens + max(0.0, now - bucket.updated) * rate)
            bucket.updated = now
            needed = min(float(cost), capacity)
            if bucket.tokens + 1e-9 < needed:
                return max(1, math.ceil((needed - bucket.tokens) / rate - 1e-9)), 0
            bucket.tokens -= cost
            used = round(100 * (capacity - bucket.tokens) / capacity)
            return None, min(100, max(0, used))


class KeyCounts:
    """What each key sent and got kept. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, KeyStats] = {}

    def _of(self, api_key: str) -> KeyStats:
        stats = self._stats.get(api_key)
        if stats is None:
            stats = self._stats[api_key] = KeyStats()
        return stats

    def answered(self, api_key: str | None, status: int) -> None:
        if api_key is None:
            return
        with self._lock:
            stats = self._of(api_key)
            stats.requests += 1
            stats.throttled += status == 429

    def kept(self, api_key: str, events: int, at: float) -> None:
        with self._lock:
            stats = self._of(api_key)
            stats.batches += 1
            stats.events += events
            if stats.first_kept is None:
                stats.first_kept = at
            stats.last_kept = at

    def duplicate(self, api_key: str) -> None:
        with self._lock:
            self._of(api_key).duplicates += 1

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {key: asdict(stats) for key, stats in sorted(self._stats.items())}
