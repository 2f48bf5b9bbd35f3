"""A simulation of senders pacing themselves against an Events API limit, in simulated time.

It drives `feeds.mparticle.pace` exactly as the engine does (reserve before a request, learn from each answer,
wait out every 429) against a model of the server's limiter, so the pace's behaviour — how close to a limit it
gets, how many 429s it costs, how fast it follows a limit that changes — can be tested in milliseconds and the
same scenarios measured for real by bench/pacing.py. No Django.

Two models of the server's limit, because mParticle does not document which it uses:
- `TokenBucket`: a bucket of one second of the limit, as the sandbox has (a request larger than the bucket
  passes when it is full, leaving it in debt);
- `SlidingWindow`: at most `limit` batches in any second.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from feeds.mparticle import pace

# The pace's clock at the simulation's time 0: an epoch clock is never near 0.
T0 = 1_000_000.0

# What a server answers a request: (accepted, Retry-After, percentage used).
_Answer = tuple[bool, float | None, int | None]


class TokenBucket:
    def __init__(self, limit: Callable[[float], float]):
        self.limit = limit
        self.tokens: float | None = None
        self.updated = 0.0

    def take(self, batches: int, now: float) -> _Answer:
        """(accepted, Retry-After, percentage used)"""
        rate = self.limit(now)
        if self.tokens is None:
            self.tokens = rate
        self.tokens = min(rate, self.tokens + (now - self.updated) * rate)
        self.updated = now
        needed = min(float(batches), rate)
        if self.tokens + 1e-9 < needed:
            return False, max(1, math.ceil((needed - self.tokens) / rate - 1e-9)), None
        self.tokens -= batches
        return True, None, min(100, max(0, round(100 * (rate - self.tokens) / rate)))


class SlidingWindow:
    def __init__(self, limit: Callable[[float], float]):
        self.limit = limit
        self.recent: deque[tuple[float, int]] = deque()
        self.total = 0

    def take(self, batches: int, now: float) -> _Answer:
        rate = self.limit(now)
        while self.recent and self.recent[0][0] <= now - 1.0:
            self.total -= self.recent.popleft()[1]
        if self.total + batches > max(rate, batches):
            return False, 1, None
        self.recent.append((now, batches))
        self.total += batches
        return True, None, min(100, round(100 * self.total / rate))


@dataclass
class Result:
    accepted: int = 0
    requests: int = 0
    throttled: int = 0
    capacity: float = 0.0  # batches the true limit allowed over the time
    seconds: float = 0.0
    rates: list[tuple[float, float, float]] = field(default_factory=list)  # (time, pace, learned limit)

    @property
    def share(self) -> float:
        return self.accepted / self.capacity if self.capacity else 0.0

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0


def simulate(
    *,
    budget: float,
    limit: Callable[[float], float],
    seconds: float,
    batches: int = 100,
    senders: int = 2,
    latency: float = 0.08,
    server: str = "bucket",
    state: pace.PaceState | None = None,
    target: float = 0.98,
    seed: int = 1,
    header: bool = True,
    random_throttles: float = 0.0,
) -> tuple[Result, pace.PaceState]:
    """`senders` lanes, each with endless requests of `batches`, sharing one pace, for `seconds`; a share
    `random_throttles` of the requests is answered 429 whatever the pace (as the chaos test's sandbox does)."""
    rand = random.Random(seed)
    ceiling = budget * target
    state = state or pace.initial(ceiling)
    limiter = TokenBucket(limit) if server == "bucket" else SlidingWindow(limit)
    result = Result()
    # Simulated time starts at T0 for the pace (an epoch clock is never near 0); `limit` and the results count
    # from 0. A request reaches the server half its latency after it is sent, and its answer is back after all.
    events: list[tuple[float, int, int, str, _Answer | None]] = []
    order = 0
    reservations: dict[int, pace.Reservation] = {}

    def push(at: float, lane: int, what: str, data: _Answer | None = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (at, order, lane, what, data))

    for lane in range(senders):
        push(0.0, lane, "reserve")
    step = 0.05
    result.capacity = sum(limit(t * step) * step for t in range(int(seconds / step)))
    result.seconds = seconds
    while events:
        now, _, lane, what, data = heapq.heappop(events)
        if now >= seconds:
            break
        if what == "reserve":
            reservation = pace.reserve(state, batches, T0 + now)
            reservations[lane] = reservation
            push(now + reservation.wait + latency / 2, lane, "arrive")
        elif what == "arrive":
            if rand.random() < random_throttles:  # a 429 that has nothing to do with the limit (a hiccup)
                push(now + latency / 2, lane, "answer", (False, 1, None))
            else:
                push(now + latency / 2, lane, "answer", limiter.take(batches, now))
        else:
            assert data is not None  # only "answer" events carry one, and every one does
            ok, retry_after, used = data
            result.requests += 1
            if ok:
                result.accepted += batches
                used = used if header else None
                pace.accepted(state, batches, used, T0 + now, ceiling, quiet=reservations[lane].quiet)
                push(now, lane, "reserve")
            else:
                result.throttled += 1
                wait = (retry_after or 1) + rand.uniform(0, min(1.0, (retry_after or 1) * 0.1))
                reservation = reservations[lane]
                pace.throttled(state, "workspace", wait, T0 + now, ceiling, batches=batches, reservation=reservation)
                push(now + wait, lane, "reserve")
            result.rates.append((now, state.rate, state.limit))
    return result, state
