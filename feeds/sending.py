"""Sending one delivery until it is settled, and what each answer does (the table in docs/design.md).

| answer           | action                                                                        |
|------------------|-------------------------------------------------------------------------------|
| 202              | accepted; the stored body is released                                         |
| 202 with errors  | the named batches become RejectedRecords with the server's message            |
| 400, 413         | split in halves until the refused batch is isolated, the others delivered     |
| 401, 403         | workspace → credentials rejected, run → blocked; the delivery stays pending   |
| 429              | wait ≥ Retry-After (else backoff with full jitter); no attempt limit          |
| 5xx, network     | capped backoff with jitter; after MPFEED_RETRY_HORIZON kept as failed          |

Every attempt is recorded. Waits longer than MPFEED_MAX_INLINE_WAIT give the worker back (`Wait`).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from feeds.models import Delivery, DeliveryAttempt, RejectedRecord, SyncRun
from feeds.mparticle.batch import join, serialize
from feeds.mparticle.client import Answer, EventsClient, Outcome
from feeds.pacing import Pacer, Pacing

log = logging.getLogger(__name__)
EXCERPT = 500


class Settled(enum.Enum):
    DONE = "done"  # accepted, rejected, split or parked as failed: go on with the next delivery
    BLOCKED = "blocked"  # credentials refused: the run stops


@dataclass(frozen=True)
class Wait:
    """The delivery must wait longer than a worker should hold on: resume the run at `until`."""

    until: datetime
    reason: str


class Sender:
    def __init__(self, run: SyncRun, client: EventsClient, pacing: Pacing, lease: timedelta):
        self.run = run
        self.workspace = run.workspace
        self.client = client
        self.pacing = pacing
        self.pacer = Pacer(self.workspace, pacing)
        self.lease = lease
        self.max_inline_wait = settings.MPFEED_MAX_INLINE_WAIT

    def _later(self, seconds: float) -> datetime:
        return timezone.now() + timedelta(seconds=seconds)

    def deliver(self, delivery: Delivery) -> Settled | Wait:
        """Send one delivery until it is settled, or until it has to wait longer than a worker holds on."""
        body = delivery.body()
        throttle_streak = failure_streak = 0
        while True:
            pause = self.pacer.reserve(delivery.batch_count)
            if pause > self.max_inline_wait:
                self.pacer.release(delivery.batch_count)
                return Wait(self._later(pause), "Pacing: waiting for this workspace's rate budget")
            if pause:
                self.pacing.sleep(pause)

            answer = self.client.post(delivery.path, body)
            now = timezone.now()
            if delivery.attempts:
                self.run.add(retries=1)
            delivery.attempts += 1
            delivery.sent_at = now
            delivery.last_status = answer.status
            delivery.last_error = "" if answer.delivered else answer.describe()
            delivery.response_excerpt = answer.excerpt[:EXCERPT]
            outcome = answer.outcome

            wait = 0.0
            if outcome is Outcome.THROTTLED:
                throttle_streak += 1
                wait = self.pacing.after_throttle(answer, throttle_streak)
                delivery.throttled_count += 1
            elif outcome in (Outcome.SERVER_ERROR, Outcome.NETWORK_ERROR):
                failure_streak += 1
                wait = self.pacing.backoff(failure_streak)
                delivery.first_failure_at = delivery.first_failure_at or now
            attempt = self._record_attempt(delivery, answer, wait)
            self.pacer.observe(answer, wait)

            if outcome is Outcome.ACCEPTED:
                with transaction.atomic():
                    self._settle(delivery, Delivery.State.ACCEPTED)
                    self.run.add(events_accepted=delivery.event_count)
                return Settled.DONE
            if outcome is Outcome.PARTIAL:
                self._partial(delivery, answer, attempt)
                return Settled.DONE
            if outcome in (Outcome.BAD_REQUEST, Outcome.TOO_LARGE):
                self._split_or_reject(delivery, answer)
                return Settled.DONE
            if outcome in (Outcome.UNAUTHORIZED, Outcome.FORBIDDEN):
                self._blocked(delivery, answer)
                return Settled.BLOCKED
            if outcome is Outcome.THROTTLED:
                self._note_wait(delivery, wait, throttled=True)
                if wait > self.max_inline_wait:
                    return Wait(self._later(wait), "Waiting for rate limit")
                self.pacing.sleep(wait)
                continue
            if outcome in (Outcome.SERVER_ERROR, Outcome.NETWORK_ERROR):
                failing_for = (now - delivery.first_failure_at).total_seconds()
                if failing_for > settings.MPFEED_RETRY_HORIZON:
                    self._settle(delivery, Delivery.State.FAILED, keep_payload=True)
                    log.warning("delivery %s parked as failed after %.0f s of failures", delivery.pk, failing_for)
                    return Settled.DONE
                self._note_wait(delivery, wait, throttled=False)
                if wait > self.max_inline_wait:
                    return Wait(self._later(wait), f"Retrying after {answer.describe()}")
                self.pacing.sleep(wait)
                continue
            # Any other answer is not something retrying fixes: keep it for a person, replayable.
            self._settle(delivery, Delivery.State.FAILED, keep_payload=True)
            return Settled.DONE

    # ------------------------------------------------------------------------------------------ records

    def _record_attempt(self, delivery: Delivery, answer: Answer, wait: float) -> DeliveryAttempt:
        return DeliveryAttempt.objects.create(
            delivery=delivery,
            at=delivery.sent_at,
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
        self.run.add(throttled=1 if throttled else 0, seconds_waited=seconds)
        self.run.extend_lease(self.lease + timedelta(seconds=min(seconds, self.max_inline_wait)))

    def _settle(self, delivery: Delivery, state: str, *, keep_payload: bool = False) -> None:
        delivery.state = state
        delivery.finished_at = timezone.now()
        if not keep_payload:
            delivery.payload = None
        delivery.save()
        self.run.extend_lease(self.lease)

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
        with transaction.atomic():
            records = self._reject_batches(delivery, named)
            all_refused = len(named) == delivery.batch_count
            self._settle(delivery, Delivery.State.REJECTED if all_refused else Delivery.State.PARTIAL)
            accepted = sum(n for i, n in enumerate(delivery.batch_events) if i not in named)
            DeliveryAttempt.objects.filter(pk=attempt.pk).update(events_accepted=accepted)
            self.run.add(events_accepted=accepted, batches_rejected=len(named), records_rejected=records)

    def _split_or_reject(self, delivery: Delivery, answer: Answer) -> None:
        if delivery.batch_count > 1:
            self._split(delivery)
            return
        if answer.outcome is Outcome.TOO_LARGE:
            message = f"the batch is too large for mParticle ({delivery.payload_bytes} bytes)"
        else:
            message = "; ".join(e.message for e in answer.errors) or answer.describe()
        with transaction.atomic():
            records = self._reject_batches(delivery, {0: message})
            self._settle(delivery, Delivery.State.REJECTED)
            self.run.add(batches_rejected=1, records_rejected=records)

    def _split(self, delivery: Delivery) -> None:
        """Replace a delivery by two holding its halves: the same batches, byte for byte, with the same ids."""
        batches = orjson.loads(delivery.body())
        half = len(batches) // 2
        sequence = (self.run.deliveries.aggregate(m=Max("sequence"))["m"] or 0) + 1
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
        with transaction.atomic():
            Delivery.objects.bulk_create(parts)
            self._settle(delivery, Delivery.State.SPLIT)
            self.run.add(requests=len(parts))

    def _blocked(self, delivery: Delivery, answer: Answer) -> None:
        if answer.outcome is Outcome.FORBIDDEN:
            message = "mParticle refused the API key and secret (HTTP 403)."
        else:
            message = "mParticle answered that no credentials were sent (HTTP 401)."
        delivery.save(update_fields=["attempts", "sent_at", "last_status", "last_error", "response_excerpt"])
        self.workspace.mark_credentials_rejected(message + " Enter new credentials to resume.")
        self.run.finish(SyncRun.Status.BLOCKED, message + " Deliveries are kept and resume with new credentials.")
