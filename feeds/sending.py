"""Sending one run's deliveries, one request at a time and in order, and what each answer does.

| answer           | action                                                                        |
|------------------|-------------------------------------------------------------------------------|
| 202              | accepted; the stored body is kept MPFEED_BODY_RETENTION_DAYS, then released    |
| 202 with errors  | the named batches become RejectedRecords with the server's message            |
| 400, 413         | split in halves until the refused batch is isolated, the others delivered     |
| 401, 403         | workspace → credentials rejected, run → blocked; the delivery stays pending   |
| 429              | wait ≥ Retry-After (else backoff with full jitter); no attempt limit          |
| 5xx, network     | capped backoff with jitter; after MPFEED_RETRY_HORIZON kept as failed          |

A `Lane` is one run's sending state: its next delivery, that delivery's retry streaks and its reservation of
the workspace's pace. `Lane.step()` does one thing — reserve, or send one attempt and record its answer — and
says when to step again, so one thread can drive a lane inline (feeds.sync.process_run, sleeping the waits)
or a dispatcher can drive many lanes at once, none holding a thread while it waits (feeds.dispatch). Every
attempt is recorded. A wait longer than MPFEED_MAX_INLINE_WAIT parks the lane: the run waits, and a sender
takes it up again when the wait is over.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from feeds import db
from feeds.models import Delivery, DeliveryAttempt, RejectedRecord, SentKey, SyncRun, Workspace
from feeds.mparticle.batch import join, serialize
from feeds.mparticle.client import CREDENTIALS, SERVER_FAULTS, Answer, EventsClient, Outcome
from feeds.mparticle.pace import Reservation
from feeds.pacing import Pacer, Pacing

log = logging.getLogger(__name__)
EXCERPT = 500
# Pending deliveries looked up at once.
LOOKAHEAD = 20
SETTLED_FIELDS = [
    "state", "finished_at", "payload", "attempts", "sent_at", "last_status", "last_error", "response_excerpt",
    "throttled_count", "seconds_waited", "first_failure_at",
]  # fmt: skip
# A delivery throttled this many times in a row, holding more batches than the learned limit allows in a
# second, is split in halves (same batches, same ids): a server whose bucket is smaller than the request
# would refuse it forever.
SPLIT_AFTER_THROTTLES = 3


@dataclass(frozen=True)
class Again:
    """Step again at `at` (the pacing clock's seconds): now for the next delivery, later after a short wait."""

    at: float


@dataclass(frozen=True)
class Park:
    """The next attempt must wait longer than a sender holds on: the run waits until `until`."""

    until: datetime
    reason: str


class Stop(enum.Enum):
    IDLE = "idle"  # no pending delivery (the run may be done, or still reading)
    BLOCKED = "blocked"  # credentials refused: the run is blocked


Step = Again | Park | Stop


class Lane:
    """One run's deliveries, sent in order. Not thread-safe: one step at a time."""

    def __init__(self, run: SyncRun, pacing: Pacing, lease: timedelta, *, wants_reading=None):
        self.run = run
        self.workspace: Workspace = run.workspace
        self.pacing = pacing
        self.pacer = Pacer(self.workspace, pacing)
        self.lease = lease
        self.max_inline_wait = settings.MPFEED_MAX_INLINE_WAIT
        self.client: EventsClient | None = None
        self.queue: deque[Delivery] = deque()
        self.drained = False  # the last look-up found fewer than LOOKAHEAD pending deliveries
        self.delivery: Delivery | None = None
        self.body: bytes | None = None
        self.counts: dict[str, float] = {}
        self.reservation: Reservation | None = None
        self.throttle_streak = self.failure_streak = 0
        self.requests = 0
        self.credentials_at = self.workspace.credentials_updated_at  # the credentials this lane's client sends
        # Told the run's id when few of its deliveries are left to send while it is still being read.
        self.wants_reading = wants_reading

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def give_up_reservation(self) -> None:
        """The lane stops before sending what it reserved: give the workspace's pace its slot back."""
        if self.reservation is not None and self.delivery is not None:
            self.pacer.release(self.delivery.batch_count)
        self.reservation = None

    def _later(self, seconds: float) -> datetime:
        return timezone.now() + timedelta(seconds=seconds)

    def _next(self, after: Delivery | None = None) -> Delivery | None:
        """The run's next pending delivery, in order; `after`: the one being settled (still pending, not next).
        Deliveries are looked up LOOKAHEAD at a time (their stored bodies are small: compressed)."""
        skip = after.pk if after is not None else None
        while True:
            if not self.queue:
                pending = self.run.deliveries.pending().exclude(pk=skip).order_by("sequence")
                found = list(pending[:LOOKAHEAD])
                self.drained = len(found) < LOOKAHEAD
                if self.wants_reading is not None and self._running_low(pending, len(found)):
                    self.wants_reading(self.run.pk)
                if not found:
                    return None
                self.queue.extend(found)
            delivery = self.queue.popleft()
            if delivery.pk != skip:
                return delivery

    def _running_low(self, pending, found: int) -> bool:
        """Fewer than half the read-ahead left to send, and the run not fully read: time to read more."""
        if SyncRun.objects.filter(pk=self.run.pk, read_done=True).exists():
            return False
        return found < LOOKAHEAD or pending.count() < settings.MPFEED_OUTBOX_AHEAD // 2

    def step(self) -> Step:
        """Reserve the next delivery's place in the workspace's pace, or send it once and act on the answer."""
        if self.delivery is None:
            self._take_next()
            if self.delivery is None:
                return Stop.IDLE
        delivery = self.delivery
        reservation = self.reservation
        if reservation is None:
            reservation = self.pacer.reserve(delivery.batch_count)
            step = self._reserved(reservation, delivery.batch_count)
            if step is not None:
                return step
        if self.body is None:
            self.body = delivery.body()
        if self.client is None:
            self.client = self.workspace.client()
        late = self.pacing.clock() - (reservation.at + reservation.wait)
        answer = self.client.post(delivery.path, self.body)
        self.requests += 1
        self.reservation = None
        return self._answered(delivery, answer, reservation, max(0.0, late))

    def _take_next(self) -> None:
        self.delivery = self._next()
        self.body = None
        self.throttle_streak = self.failure_streak = 0

    def _reserved(self, reservation: Reservation, batches: int) -> Step | None:
        """Hold a reservation (of `batches`) for the current delivery: None to send now, else when to step again."""
        if reservation.wait > self.max_inline_wait:
            self.pacer.release(batches)
            return Park(self._later(reservation.wait), "Pacing: waiting for this workspace's rate budget")
        self.reservation = reservation
        if reservation.wait > 0:
            return Again(reservation.at + reservation.wait)
        return None

    # ---------------------------------------------------------------------------------------- answers

    def _answered(self, delivery: Delivery, answer: Answer, reservation: Reservation | None, late: float) -> Step:
        """Record the answer and act on it, and reserve the next attempt's place in the pace — one transaction.
        `late`: how much later than its slot the request went out (the pace's schedule slips as much)."""
        now = timezone.now()
        retry = delivery.attempts > 0
        delivery.attempts += 1
        delivery.sent_at = now
        delivery.last_status = answer.status
        delivery.last_error = "" if answer.delivered else answer.describe()
        delivery.response_excerpt = answer.excerpt[:EXCERPT]
        outcome = answer.outcome

        wait = 0.0
        if outcome is Outcome.THROTTLED:
            self.throttle_streak += 1
            wait = self.pacing.after_throttle(answer, self.throttle_streak)
            delivery.throttled_count += 1
        elif outcome in SERVER_FAULTS:
            self.failure_streak += 1
            wait = self.pacing.backoff(self.failure_streak)
            delivery.first_failure_at = delivery.first_failure_at or now

        self.counts = {"retries": 1} if retry else {}
        # The usual case, an accepted request, is followed by the next delivery: looked up before the transaction
        # (a read), so that the transaction is no longer than it must be.
        upcoming = self._next(after=delivery) if outcome is Outcome.ACCEPTED else None
        with db.atomic():
            if not Delivery.objects.select_for_update().filter(pk=delivery.pk, state=Delivery.State.PENDING).exists():
                # Settled meanwhile by another sender (this one lost its hold on the run while the request was out):
                # the answer changes nothing, and nothing is counted twice.
                log.info("delivery %s was settled meanwhile by another sender", delivery.pk)
                self.delivery, self.body = upcoming, None
                return Again(self.pacing.clock())
            attempt = self._record_attempt(delivery, answer, wait, now)
            step = self._act(delivery, answer, attempt, wait, now)
            # The next attempt's place in the pace, reserved in the same transaction: the next delivery's, or this
            # one's again after a 429 (whose wait the pace holds). After a server failure the backoff comes first.
            following = None
            if isinstance(step, Again) and outcome not in SERVER_FAULTS:
                if self.delivery is None and outcome is Outcome.ACCEPTED:
                    self.delivery, self.body, self.throttle_streak, self.failure_streak = upcoming, None, 0, 0
                elif self.delivery is None:  # settled (or split: its halves are next)
                    self._take_next()
                following = self.delivery.batch_count if self.delivery is not None else None
            ahead = self.pacer.observe(
                answer, batches=delivery.batch_count, wait=wait, reservation=reservation, reserve=following, late=late
            )
            self.run.add(**self.counts, refresh=False)
        # (A place ahead is reserved only for `following`, after a step to take again.)
        if ahead is not None and following is not None and isinstance(step, Again):
            held = self._reserved(ahead, following)
            if held is None:
                return Again(max(step.at, ahead.at))
            if isinstance(held, Again):
                return Again(max(step.at, held.at))
            return held
        if isinstance(step, Again) and self.delivery is None and outcome is not Outcome.SERVER_ERROR:
            return Stop.IDLE  # settled, and nothing pending after it: the run may be done (or still reading)
        return step

    def _act(self, delivery: Delivery, answer: Answer, attempt: DeliveryAttempt, wait: float, now) -> Step:
        outcome = answer.outcome
        if outcome is Outcome.ACCEPTED:
            self._settle(delivery, Delivery.State.ACCEPTED)
            self._count(events_accepted=delivery.event_count)
            return self._done()
        if outcome is Outcome.PARTIAL:
            self._partial(delivery, answer, attempt)
            return self._done()
        if outcome in (Outcome.BAD_REQUEST, Outcome.TOO_LARGE):
            self._split_or_reject(delivery, answer)
            return self._done()
        if outcome in CREDENTIALS:
            if self._blocked(delivery, answer):
                self.delivery = None
                return Stop.BLOCKED
            # New credentials were stored after this lane's (or staff paused the workspace): try with what is stored.
            self.close()
            self.workspace.refresh_from_db()
            self.credentials_at = self.workspace.credentials_updated_at
            return Again(self.pacing.clock())
        if outcome is Outcome.THROTTLED:
            self._note_wait(delivery, wait, throttled=True)
            if (
                self.throttle_streak >= SPLIT_AFTER_THROTTLES
                and delivery.batch_count > 1
                and delivery.batch_count > self.pacer.limit
            ):
                log.info("delivery %s split: %s batches are more than the learned limit allows", delivery.pk,
                         delivery.batch_count)  # fmt: skip
                self._split(delivery)
                self.delivery = None
            return self._wait(wait, "Waiting for rate limit")
        if outcome in SERVER_FAULTS:
            failing_for = (now - delivery.first_failure_at).total_seconds()
            if failing_for > settings.MPFEED_RETRY_HORIZON:
                self._settle(delivery, Delivery.State.FAILED, keep_payload=True)
                log.warning("delivery %s parked as failed after %.0f s of failures", delivery.pk, failing_for)
                return self._done()
            self._note_wait(delivery, wait, throttled=False)
            return self._wait(wait, f"Retrying after {answer.describe()}")
        # Any other answer is not something retrying fixes: keep it for a person, replayable.
        self._settle(delivery, Delivery.State.FAILED, keep_payload=True)
        return self._done()

    def _count(self, **counters: float) -> None:
        """Add to the run's counters, written once at the end of the answer's transaction."""
        for name, value in counters.items():
            self.counts[name] = self.counts.get(name, 0) + value

    def _done(self) -> Step:
        self.delivery = None
        return Again(self.pacing.clock())

    def _wait(self, seconds: float, reason: str) -> Step:
        if seconds > self.max_inline_wait:
            return Park(self._later(seconds), reason)
        return Again(self.pacing.clock() + seconds)

    # ------------------------------------------------------------------------------------------ records

    def _record_attempt(self, delivery: Delivery, answer: Answer, wait: float, at: datetime) -> DeliveryAttempt:
        return DeliveryAttempt.objects.create(
            delivery=delivery,
            at=at,
            outcome=answer.outcome.value,
            status=answer.status,
            latency_ms=int(answer.latency * 1000),
            retry_after=answer.retry_after,
            rate_limit_used=answer.rate_limit_used,
            rate_limit_scope=(answer.rate_limit_scope or "")[:40],
            waited=wait,
            events_accepted=delivery.event_count if answer.outcome is Outcome.ACCEPTED else 0,
            message="" if answer.outcome is Outcome.ACCEPTED else answer.describe()[:EXCERPT],
        )

    def _note_wait(self, delivery: Delivery, seconds: float, *, throttled: bool) -> None:
        delivery.seconds_waited += seconds
        delivery.save(
            update_fields=[
                "attempts", "sent_at", "last_status", "last_error", "response_excerpt", "throttled_count",
                "seconds_waited", "first_failure_at",
            ]
        )  # fmt: skip
        self._count(throttled=1 if throttled else 0, seconds_waited=seconds)

    def _settle(self, delivery: Delivery, state: str, *, keep_payload: bool = False) -> None:
        delivery.state = state
        delivery.finished_at = timezone.now()
        if not (keep_payload or delivery.keeps_body_after(state)):
            delivery.payload = None
        delivery.save(update_fields=SETTLED_FIELDS)

    def _reject_batches(self, delivery: Delivery, refused: dict[int, str]) -> int:
        """Write RejectedRecords for the refused batches; returns how many source records they carried."""
        rows = [
            RejectedRecord(
                run=self.run, delivery=delivery, stage=RejectedRecord.Stage.SERVER, ref=ref[:300], reason=message,
                source_request_id=delivery.source_request_ids[index],
            )
            for index, message in refused.items()
            for ref in delivery.record_refs[index]
        ]  # fmt: skip
        RejectedRecord.objects.bulk_create(rows)
        return len(rows)

    def _partial(self, delivery: Delivery, answer: Answer, attempt: DeliveryAttempt) -> None:
        named = {
            e.index: e.message for e in answer.errors if e.index is not None and 0 <= e.index < delivery.batch_count
        }
        if not named:
            # Refused without saying which batch: resending halves isolates it, and mParticle answers the
            # batches it already took as duplicates (same source_request_id), so nothing is counted twice.
            if delivery.batch_count > 1:
                self._split(delivery)
                return
            named = {0: "; ".join(e.message for e in answer.errors) or "refused without a reason"}
        records = self._reject_batches(delivery, named)
        all_refused = len(named) == delivery.batch_count
        self._settle(delivery, Delivery.State.REJECTED if all_refused else Delivery.State.PARTIAL)
        accepted = sum(n for i, n in enumerate(delivery.batch_events) if i not in named)
        DeliveryAttempt.objects.filter(pk=attempt.pk).update(events_accepted=accepted)
        self._count(events_accepted=accepted, batches_rejected=len(named), records_rejected=records)

    def _split_or_reject(self, delivery: Delivery, answer: Answer) -> None:
        if delivery.batch_count > 1:
            self._split(delivery)
            return
        if answer.outcome is Outcome.TOO_LARGE:
            message = f"the batch is too large for mParticle ({delivery.payload_bytes} bytes)"
        else:
            message = "; ".join(e.message for e in answer.errors) or answer.describe()
        records = self._reject_batches(delivery, {0: message})
        self._settle(delivery, Delivery.State.REJECTED)
        self._count(batches_rejected=1, records_rejected=records)

    def _split(self, delivery: Delivery) -> None:
        """Replace a delivery by two holding its halves: the same batches, byte for byte, with the same ids. They
        go next (their sequence numbers come after the run's last, and this lane looks them up first)."""
        batches = orjson.loads(self.body if self.body is not None else delivery.body())  # the body just sent
        half = len(batches) // 2
        sequence = self.run.allocate_sequences(2)
        parts = []
        for offset, (start, stop) in enumerate(((0, half), (half, len(batches)))):
            body = join([serialize(b) for b in batches[start:stop]])
            parts.append(
                Delivery(
                    run=self.run,
                    workspace=self.workspace,
                    parent=delivery,
                    sequence=sequence + offset,
                    path=delivery.path,
                    payload=Delivery.compress(body),
                    payload_bytes=len(body),
                    batch_count=stop - start,
                    event_count=sum(delivery.batch_events[start:stop]),
                    source_request_ids=delivery.source_request_ids[start:stop],
                    record_refs=delivery.record_refs[start:stop],
                    batch_events=delivery.batch_events[start:stop],
                )
            )
        parts = Delivery.objects.bulk_create(parts)
        if any(p.pk is None for p in parts):  # a database that does not return ids from bulk inserts
            parts = list(
                Delivery.objects.filter(run=self.run, sequence__in=[sequence, sequence + 1]).order_by("sequence")
            )
        # The batches are found in the halves now (the search shows where each was sent last).
        SentKey.objects.filter(delivery=delivery, batch__lt=half).update(delivery=parts[0])
        SentKey.objects.filter(delivery=delivery, batch__gte=half).update(delivery=parts[1], batch=F("batch") - half)
        self._settle(delivery, Delivery.State.SPLIT)
        self._count(requests=len(parts))
        self.queue.extendleft(reversed(parts))

    def _blocked(self, delivery: Delivery, answer: Answer) -> bool:
        """The credentials sent were refused: the workspace's are rejected and the run blocked — unless they are
        not the stored ones any more (replaced meanwhile; False then)."""
        if answer.outcome is Outcome.FORBIDDEN:
            message = "mParticle refused the API key and secret (HTTP 403)."
        else:
            message = "mParticle answered that no credentials were sent (HTTP 401)."
        delivery.save(update_fields=["attempts", "sent_at", "last_status", "last_error", "response_excerpt"])
        if not self.workspace.mark_credentials_rejected(message + " Enter new credentials to resume.",
                                                        tested=self.credentials_at):  # fmt: skip
            return False
        self.run.finish(SyncRun.Status.BLOCKED, message + " Deliveries are kept and resume with new credentials.")
        return True
