"""How fast and how long to wait: backoff with jitter, and a per-workspace pace shared by every sender.

The pace itself — a virtual schedule (GCRA) and a limit learned from the answers — is plain arithmetic in
feeds.mparticle.pace. Here it is kept in one database row per workspace (WorkspacePace): each request reserves
its slot in one short transaction on that row and each answer updates it in the transaction that records the
answer, so every process sending to the workspace paces itself by the same schedule and learns from every
answer, and what was learned is kept across runs. Workspaces have rows of their own and never slow each other.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from feeds import db
from feeds.models import Workspace, WorkspacePace
from feeds.mparticle import pace
from feeds.mparticle.client import Answer, Outcome
from feeds.mparticle.pace import BURST_SECONDS, HIGH_USE_PERCENT, PaceState, Reservation  # noqa: F401 (re-exported)

STATE_FIELDS = tuple(f.name for f in dataclasses.fields(PaceState))
# The workspace's configured budget is read again at most this often.
BUDGET_FRESH_SECONDS = 5.0


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
            # At least what the server asked (within reason: a proxy's Retry-After of a day is not waited out in
            # one go), plus a little so that senders do not all come back at once.
            asked = min(answer.retry_after, settings.MPFEED_MAX_RETRY_AFTER)
            return asked + self.rand.uniform(0, min(1.0, asked * 0.1))
        return max(self.backoff(streak), 0.05)


def target_rate(workspace: Workspace) -> float:
    """The most the pace ever aims for: a little under the configured budget, so that clock drift costs no 429s."""
    return max(pace.MIN_RATE, workspace.rate_limit * settings.MPFEED_PACE_TARGET)


def state_of(row: WorkspacePace) -> PaceState:
    return PaceState(**{name: getattr(row, name) for name in STATE_FIELDS})


def _store(row: WorkspacePace, state: PaceState, *counters: str) -> None:
    """Save what changed of the state (and the named counters) into its row."""
    changed = [name for name in STATE_FIELDS if getattr(row, name) != getattr(state, name)]
    for name in changed:
        setattr(row, name, getattr(state, name))
    row.save(update_fields=[*changed, *counters, "updated_at"])


class Pacer:
    """A workspace's shared pace. `reserve()` before each request, `observe()` after each answer (inside the
    transaction that records it)."""

    def __init__(self, workspace: Workspace, pacing: Pacing):
        self.workspace = workspace
        self.pacing = pacing
        self.enabled = settings.MPFEED_PACING
        self.limit = target_rate(workspace)  # the learned limit, as of the last reserve or observe
        self._budget = workspace.rate_limit
        self._budget_read = -BUDGET_FRESH_SECONDS

    def _row(self) -> WorkspacePace:
        try:
            return WorkspacePace.objects.select_for_update().get(workspace_id=self.workspace.pk)
        except WorkspacePace.DoesNotExist:
            row = None
        if row is None:
            state = pace.initial(target_rate(self.workspace))
            row, _ = WorkspacePace.objects.get_or_create(
                workspace_id=self.workspace.pk, defaults={name: getattr(state, name) for name in STATE_FIELDS}
            )
            row = WorkspacePace.objects.select_for_update().get(pk=row.pk)
        return row

    def _ceiling(self) -> float:
        # Read again every few seconds: staff may change the budget while a run sends.
        now = time.monotonic()
        if now - self._budget_read >= BUDGET_FRESH_SECONDS:
            rate_limit = Workspace.objects.filter(pk=self.workspace.pk).values_list("rate_limit", flat=True).first()
            self._budget = rate_limit or self.workspace.rate_limit
            self._budget_read = now
        return max(pace.MIN_RATE, self._budget * settings.MPFEED_PACE_TARGET)

    def reserve(self, batches: int) -> Reservation:
        """Reserve the budget for a request of `batches`: how long to wait before sending it."""
        if not self.enabled:
            return Reservation(self.pacing.clock(), self.limit, 0.0, False)
        with db.atomic():
            row = self._row()
            # The time once the row is ours (another process may have held it): a reservation made for an
            # earlier moment would let this request go out right behind the last one.
            now = self.pacing.clock()
            state = state_of(row)
            pace.clamp(state, self._ceiling(), now)
            reservation = pace.reserve(state, batches, now)
            _store(row, state)
        self.limit = state.limit
        return reservation

    def release(self, batches: int) -> None:
        """Give back a reservation whose request is not sent now (its run waits and reserves again then); left
        in place, it would stand in the way of that very request."""
        if not self.enabled:
            return
        with db.atomic():
            row = self._row()
            state = state_of(row)
            pace.release(state, batches, self.pacing.clock())
            _store(row, state)

    def observe(
        self,
        answer: Answer,
        *,
        batches: int,
        wait: float = 0.0,
        reservation: Reservation | None = None,
        reserve: int | None = None,
        late: float = 0.0,
    ) -> Reservation | None:
        """Learn from an answer; after a 429, nobody sends to this workspace before `wait` is over. With `reserve`,
        also reserve the next request's place (of that many batches) in the same transaction, and return it.
        `late`: the request went out that much after its slot (the schedule slips as much). Counts every answer
        (and the 429s) for the metrics."""
        if not self.enabled:
            return Reservation(self.pacing.clock(), self.limit, 0.0, False) if reserve else None
        throttled = answer.outcome is Outcome.THROTTLED
        delivered = answer.delivered
        with db.atomic():
            row = self._row()
            state = state_of(row)
            now = self.pacing.clock()
            ceiling = self._ceiling()
            pace.clamp(state, ceiling, now)
            if late > 0:
                pace.slipped(state, late, batches, now)
            if throttled:
                pace.throttled(
                    state, answer.rate_limit_scope, wait, now, ceiling, batches=batches, reservation=reservation
                )
            elif delivered:
                quiet = reservation is not None and reservation.quiet
                pace.accepted(state, batches, answer.rate_limit_used, now, ceiling, quiet=quiet)
            following = pace.reserve(state, reserve, now) if reserve else None
            row.requests_total += 1
            if throttled:
                row.throttled_total += 1
            _store(row, state, "requests_total", "throttled_total")
        self.limit = state.limit
        return following
