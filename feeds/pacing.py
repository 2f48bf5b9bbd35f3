"""How fast and how long to wait: backoff with jitter, and a per-workspace pace shared by every worker.

The pace is a token bucket kept in the database as a virtual schedule (GCRA): each request reserves
`batches / rate` seconds of the workspace's budget in one short transaction, and waits until its slot. Every
worker process sending to the workspace reserves from the same row, so together they stay under the budget;
other workspaces have rows of their own and are never slowed. The rate adapts (AIMD): halved on a 429, cut a
little when mParticle reports the budget nearly used, climbed back step by step on clean answers — more slowly
after `X-mp-rate-limit-exceeded: acceleration`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from feeds.models import Workspace, WorkspacePace
from feeds.mparticle.client import Answer, Outcome

# The burst the pace allows, in seconds of budget. mParticle's bucket (and the sandbox's) holds one second.
BURST_SECONDS = 0.9
MIN_RATE = 1.0
# The pace never falls below this share of the budget: a burst of 429s that were not caused by our pace
# (another feed sharing the organisation's limit, a server hiccup) must not collapse delivery.
FLOOR_SHARE = 0.5
# Reported use above which the pace slows before being throttled.
HIGH_USE_PERCENT = 95


@dataclass
class Pacing:
    """The clock, sleep and randomness the engine uses; tests replace them to observe waits for free."""

    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    rand: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter (attempt counts from 1)."""
        ceiling = min(settings.MPFEED_BACKOFF_CAP, settings.MPFEED_BACKOFF_BASE * 2 ** min(attempt - 1, 30))
        return self.rand.uniform(0, ceiling)

    def after_throttle(self, answer: Answer, streak: int) -> float:
        if answer.retry_after is not None and answer.retry_after > 0:
            # At least what the server asked, plus a little so that workers do not all come back at once.
            return answer.retry_after + self.rand.uniform(0, min(1.0, answer.retry_after * 0.1))
        return max(self.backoff(streak), 0.05)


def target_rate(workspace: Workspace) -> float:
    """The pace aimed for: a little under the budget, so that clock drift does not cost 429s."""
    return max(MIN_RATE, workspace.rate_limit * settings.MPFEED_PACE_TARGET)


class Pacer:
    """A workspace's shared pace. `reserve()` before each request, `observe()` after each answer."""

    def __init__(self, workspace: Workspace, pacing: Pacing):
        self.workspace = workspace
        self.pacing = pacing
        self.enabled = settings.MPFEED_PACING

    def _row(self) -> WorkspacePace:
        pace = WorkspacePace.objects.select_for_update().filter(workspace=self.workspace).first()
        if pace is None:
            pace, _ = WorkspacePace.objects.get_or_create(
                workspace=self.workspace, defaults={"rate": target_rate(self.workspace)}
            )
            pace = WorkspacePace.objects.select_for_update().get(pk=pace.pk)
        return pace

    def reserve(self, batches: int) -> float:
        """Reserve the budget for a request of `batches`; returns the seconds to wait before sending it."""
        if not self.enabled:
            return 0.0
        with transaction.atomic():
            pace = self._row()
            now = self.pacing.clock()
            cost = batches / pace.rate
            start = max(pace.next_at, now)
            pace.next_at = start + cost
            pace.save(update_fields=["next_at", "updated_at"])
        # The request may go once what it reserved fits into the burst allowance; one larger than the whole
        # allowance goes once everything before it is paid for (as a full bucket lets it through into debt),
        # else it would wait for its own cost and, past MPFEED_MAX_INLINE_WAIT, never be sent.
        return max(0.0, min(pace.next_at - BURST_SECONDS, start) - now)

    def release(self, batches: int) -> None:
        """Give back a reservation whose request is not sent now (its run waits for a continuation and
        reserves again then); left in place, it would stand in the way of that very request."""
        if not self.enabled:
            return
        with transaction.atomic():
            pace = self._row()
            pace.next_at = max(self.pacing.clock(), pace.next_at - batches / pace.rate)
            pace.save(update_fields=["next_at", "updated_at"])

    def observe(self, answer: Answer, wait: float = 0.0) -> None:
        """Adapt the pace to an answer; after a 429, nobody sends to this workspace before `wait` is over."""
        if not self.enabled or answer.outcome not in (Outcome.ACCEPTED, Outcome.PARTIAL, Outcome.THROTTLED):
            return
        ceiling = target_rate(self.workspace)
        with transaction.atomic():
            pace = self._row()
            now = self.pacing.clock()
            rate = min(pace.rate, ceiling)
            if answer.outcome is Outcome.THROTTLED:
                if answer.rate_limit_scope == "acceleration":
                    # Ramping too fast, not over the budget: ease off and climb back slowly.
                    rate *= 0.8
                    pace.gentle_until = now + 60
                else:
                    rate *= 0.5
                # The next request may go only once the wait is over (reserve() allows BURST_SECONDS early).
                pace.next_at = max(pace.next_at, now + wait + BURST_SECONDS)
            elif answer.rate_limit_used is not None and answer.rate_limit_used >= HIGH_USE_PERCENT:
                rate *= 0.95
            else:
                step = 0.02 if now < pace.gentle_until else 0.1
                rate += ceiling * step
            pace.rate = min(ceiling, max(MIN_RATE, ceiling * FLOOR_SHARE, rate))
            pace.save(update_fields=["rate", "next_at", "gentle_until", "updated_at"])
