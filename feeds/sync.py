"""The sync engine: read → map → group per user → pack → persist → deliver → checkpoint.

Deliveries (the exact request bodies, with deterministic batch and event ids) are written together with the
chunk's checkpoint in one transaction before the first send, so a crash at any point resumes from the
checkpoint and resends stored bodies byte for byte: nothing is lost and nothing is sent under a new id.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from itertools import islice

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from feeds.mapping import Converter, MappingError, RecordError, compile_mapping
from feeds.models import Delivery, RejectedRecord, SyncJob, SyncRun, Workspace
from feeds.mparticle import schema
from feeds.mparticle.batch import UserRecord, deterministic_id, group_by_user, join, pack, serialize
from feeds.mparticle.client import Answer, EventsClient, Outcome
from feeds.sources import Item, SourceError
from feeds.sources.files import open_source

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
EXCERPT = 500


class SyncError(Exception):
    """A sync that cannot start; the message is for people."""


class AlreadyRunning(SyncError):
    pass


# ------------------------------------------------------------------------------------------------ starting


def start_run(
    job: SyncJob, *, trigger: str = SyncRun.Trigger.MANUAL, source_path: str | None = None, user=None
) -> SyncRun:
    """Create a queued run of `job` (at most one unfinished run per job, enforced by the database)."""
    workspace = job.workspace
    if not workspace.has_credentials:
        raise SyncError(f"{workspace} has no credentials yet.")
    if workspace.status == Workspace.Status.PAUSED:
        raise SyncError(f"{workspace} is paused.")
    if workspace.status == Workspace.Status.CREDENTIALS_REJECTED:
        raise SyncError(f"{workspace}'s credentials were rejected: {workspace.status_message}")
    mapping = job.mapping
    try:
        with transaction.atomic():
            return SyncRun.objects.create(
                job=job,
                workspace=workspace,
                trigger=trigger,
                source_kind=job.source_kind,
                source_path=source_path or job.source_path,
                endpoint_mode=job.endpoint_mode,
                environment=workspace.environment,
                mapping_version=mapping.version,
                mapping_rules=mapping.rules,
                created_by=user if user is not None and user.is_authenticated else None,
            )
    except IntegrityError:
        active = job.runs.active().first()
        raise AlreadyRunning(f"{job} already has an unfinished run (#{active.pk if active else '?'}).") from None


def enqueue_run(run: SyncRun) -> str:
    """Hand the run to a django-q2 worker. Only the primary key goes into the task."""
    from django_q.tasks import async_task

    return async_task("feeds.tasks.process_run", run.pk, task_name=f"sync-run-{run.pk}", group="sync")


# ---------------------------------------------------------------------------------------------- processing


@dataclass
class Pacing:
    """How the engine waits; tests replace `sleep` to observe waits without spending them."""

    sleep: Callable[[float], None] = time.sleep
    rand: random.Random = random.Random()

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter (attempt counts from 1)."""
        ceiling = min(settings.MPFEED_BACKOFF_CAP, settings.MPFEED_BACKOFF_BASE * 2 ** min(attempt - 1, 30))
        return self.rand.uniform(0, ceiling)

    def after_throttle(self, answer: Answer, streak: int) -> float:
        if answer.retry_after is not None and answer.retry_after > 0:
            # At least what the server asked, plus a little so workers do not all come back at once.
            return answer.retry_after + self.rand.uniform(0, min(1.0, answer.retry_after * 0.1))
        return max(self.backoff(streak), 0.05)


def process_run(run_id: int, *, pacing: Pacing | None = None, time_slice: float | None = None) -> SyncRun:
    """Work on a run for up to `time_slice` seconds. Returns the run; status QUEUED means "call again"."""
    run = SyncRun.objects.select_related("workspace", "job").get(pk=run_id)
    if not run.claim(LEASE):
        log.info("run %s not claimable (status %s)", run.pk, run.status)
        return run
    engine = _Engine(run, pacing or Pacing(), time_slice or settings.MPFEED_TASK_SLICE)
    try:
        engine.work()
    except Exception:
        log.exception("run %s failed unexpectedly", run.pk)
        run.refresh_from_db()
        run.finish(SyncRun.Status.FAILED, "Internal error while syncing; see the worker log. Deliveries are kept.")
        raise
    return run


class _Engine:
    def __init__(self, run: SyncRun, pacing: Pacing, time_slice: float):
        self.run = run
        self.workspace = run.workspace
        self.pacing = pacing
        self.deadline = time.monotonic() + time_slice
        self.client: EventsClient | None = None

    def work(self) -> None:
        run = self.run
        if not self.workspace.can_send:
            run.finish(SyncRun.Status.BLOCKED, f"The workspace is {self.workspace.get_status_display().lower()}.")
            return
        try:
            converter = compile_mapping(run.mapping_rules, id_salt=str(self.workspace.pk))
        except MappingError as e:
            run.finish(SyncRun.Status.FAILED, f"The mapping is not valid: {e}")
            return
        self.client = self.workspace.client()
        try:
            if not self.send_pending():
                return
            if not run.read_done:
                try:
                    items = open_source(run.source_kind, run.source_path, start=run.checkpoint)
                except SourceError as e:
                    run.finish(SyncRun.Status.FAILED, str(e))
                    return
                while True:
                    chunk = list(islice(items, settings.MPFEED_CHUNK_SIZE))
                    try:
                        self.persist_chunk(chunk, converter)
                    except SourceError as e:
                        run.finish(SyncRun.Status.FAILED, str(e))
                        return
                    if not self.send_pending():
                        return
                    if run.read_done:
                        break
                    if self.out_of_time():
                        return
            self.conclude()
        finally:
            self.client.close()

    def out_of_time(self) -> bool:
        """At the end of a time slice, give the worker back and queue the run again."""
        if time.monotonic() < self.deadline:
            return False
        self.run.status = SyncRun.Status.QUEUED
        self.run.lease_until = None
        self.run.save(update_fields=["status", "lease_until"])
        return True

    # -------------------------------------------------------------------------------- chunk → deliveries

    def persist_chunk(self, chunk: list[Item], converter: Converter) -> None:
        run = self.run
        rejects: list[RejectedRecord] = []
        by_path: dict[str, list[UserRecord]] = {}
        now_ms = int(time.time() * 1000)
        for item in chunk:
            if item.record is None:
                rejects.append(
                    RejectedRecord(
                        run=run,
                        stage=RejectedRecord.Stage.SOURCE,
                        ref=item.ref[:300],
                        reason=item.error,
                        excerpt=item.excerpt,
                    )
                )
                continue
            try:
                record = converter.convert(item.record, item.ref)
                for path, part in route(record, run.endpoint_mode, now_ms):
                    by_path.setdefault(path, []).append(part)
            except RecordError as e:
                rejects.append(
                    RejectedRecord(
                        run=run,
                        stage=RejectedRecord.Stage.MAPPING,
                        ref=item.ref[:300],
                        reason=str(e),
                        excerpt=_excerpt(item.record),
                    )
                )

        chunk_no = run.chunks
        sequence = (run.deliveries.aggregate(m=Max("sequence"))["m"] or 0) + 1
        deliveries: list[Delivery] = []
        batch_total = event_total = 0
        for path, records in by_path.items():
            batches, refused = group_by_user(records)
            for record, reason in refused:
                rejects.append(
                    RejectedRecord(run=run, stage=RejectedRecord.Stage.MAPPING, ref=record.ref[:300], reason=reason)
                )
            bodies = []
            for i, batch in enumerate(batches):
                srid = deterministic_id(self.workspace.pk, run.pk, chunk_no, path, i)
                bodies.append(serialize(batch.to_dict(run.environment, srid)))
            for group in pack([len(b) for b in bodies]):
                parts = [bodies[i] for i in group]
                body = join(parts)
                deliveries.append(
                    Delivery(
                        run=run,
                        workspace=self.workspace,
                        sequence=sequence,
                        path=path,
                        payload=Delivery.compress(body),
                        payload_bytes=len(body),
                        batch_count=len(parts),
                        event_count=sum(len(batches[i].events) for i in group),
                        source_request_ids=[
                            deterministic_id(self.workspace.pk, run.pk, chunk_no, path, i) for i in group
                        ],
                        record_refs=[batches[i].refs for i in group],
                        batch_events=[len(batches[i].events) for i in group],
                    )
                )
                sequence += 1
                batch_total += len(parts)
                event_total += deliveries[-1].event_count

        rejected_records = len(rejects)
        with transaction.atomic():
            RejectedRecord.objects.bulk_create(rejects)
            Delivery.objects.bulk_create(deliveries)
            run.checkpoint += len(chunk)
            run.chunks += 1
            run.read_done = not chunk or len(chunk) < settings.MPFEED_CHUNK_SIZE
            run.records_read += len(chunk)
            run.records_rejected += rejected_records
            run.batches += batch_total
            run.requests += len(deliveries)
            run.events += event_total
            run.names_truncated = converter.stats.names_truncated
            run.lease_until = timezone.now() + LEASE
            run.save(
                update_fields=[
                    "checkpoint",
                    "chunks",
                    "read_done",
                    "records_read",
                    "records_rejected",
                    "batches",
                    "requests",
                    "events",
                    "names_truncated",
                    "lease_until",
                ]
            )

    # ------------------------------------------------------------------------------------------- sending

    def send_pending(self) -> bool:
        """Send the run's pending deliveries in order. False when the run must stop (blocked, out of time)."""
        while True:
            delivery = self.run.deliveries.pending().order_by("sequence").first()
            if delivery is None:
                return True
            if not self.deliver(delivery):
                return False
            if self.out_of_time():
                return False

    def deliver(self, delivery: Delivery) -> bool:
        """Send one delivery until it is settled; False if the run got blocked."""
        assert self.client is not None
        body = delivery.body()
        throttle_streak = failure_streak = 0
        while True:
            answer = self.client.post(delivery.path, body)
            now = timezone.now()
            retry = delivery.attempts > 0
            delivery.attempts += 1
            delivery.sent_at = now
            delivery.last_status = answer.status
            delivery.last_error = answer.describe() if not answer.delivered else ""
            delivery.response_excerpt = answer.excerpt[:EXCERPT]
            outcome = answer.outcome
            if retry:
                self.run.add(retries=1)

            if outcome is Outcome.ACCEPTED:
                self._settle(delivery, Delivery.State.ACCEPTED)
                self.run.add(events_accepted=delivery.event_count)
                return True
            if outcome is Outcome.PARTIAL:
                self._partial(delivery, answer)
                return True
            if outcome in (Outcome.BAD_REQUEST, Outcome.TOO_LARGE):
                self._split_or_reject(delivery, answer)
                return True
            if outcome in (Outcome.UNAUTHORIZED, Outcome.FORBIDDEN):
                return self._blocked(delivery, answer)
            if outcome is Outcome.THROTTLED:
                throttle_streak += 1
                wait = self.pacing.after_throttle(answer, throttle_streak)
                delivery.throttled_count += 1
                self._wait(delivery, wait, throttled=True)
                continue
            if outcome in (Outcome.SERVER_ERROR, Outcome.NETWORK_ERROR):
                failure_streak += 1
                if delivery.first_failure_at is None:
                    delivery.first_failure_at = now
                elif (now - delivery.first_failure_at).total_seconds() > settings.MPFEED_RETRY_HORIZON:
                    self._settle(delivery, Delivery.State.FAILED, keep_payload=True)
                    return True
                self._wait(delivery, self.pacing.backoff(failure_streak), throttled=False)
                continue
            # Any other answer is not something retrying will fix: keep it for a person and replay.
            self._settle(delivery, Delivery.State.FAILED, keep_payload=True)
            return True

    def _wait(self, delivery: Delivery, seconds: float, *, throttled: bool) -> None:
        delivery.seconds_waited += seconds
        delivery.save(
            update_fields=[
                "attempts",
                "sent_at",
                "last_status",
                "last_error",
                "response_excerpt",
                "throttled_count",
                "seconds_waited",
                "first_failure_at",
            ]
        )
        self.run.add(throttled=1 if throttled else 0, seconds_waited=seconds)
        self.run.extend_lease(LEASE + timedelta(seconds=seconds))
        self.pacing.sleep(seconds)

    def _settle(self, delivery: Delivery, state: str, *, keep_payload: bool = False) -> None:
        delivery.state = state
        delivery.finished_at = timezone.now()
        if not keep_payload:
            delivery.payload = None
        delivery.save()
        self.run.extend_lease(LEASE)

    def _reject_batches(self, delivery: Delivery, refused: dict[int, str]) -> int:
        """Write RejectedRecords for the refused batches; returns how many source records they carried."""
        rows = []
        for index, message in refused.items():
            srid = delivery.source_request_ids[index]
            for ref in delivery.record_refs[index]:
                rows.append(
                    RejectedRecord(
                        run=self.run,
                        delivery=delivery,
                        stage=RejectedRecord.Stage.SERVER,
                        ref=ref[:300],
                        reason=message,
                        source_request_id=srid,
                    )
                )
        RejectedRecord.objects.bulk_create(rows)
        return len(rows)

    def _partial(self, delivery: Delivery, answer: Answer) -> None:
        named = {
            e.index: e.message for e in answer.errors if e.index is not None and 0 <= e.index < delivery.batch_count
        }
        if not named:
            # The server refused something without saying which batch: resending halves isolates it, and
            # mParticle answers the already accepted batches as duplicates (same source_request_id).
            if delivery.batch_count > 1:
                self._split(delivery)
                return
            named = {0: "; ".join(e.message for e in answer.errors) or "refused without a reason"}
        with transaction.atomic():
            records = self._reject_batches(delivery, named)
            self._settle(
                delivery, Delivery.State.PARTIAL if len(named) < delivery.batch_count else Delivery.State.REJECTED
            )
            accepted = sum(n for i, n in enumerate(delivery.batch_events) if i not in named)
            self.run.add(events_accepted=accepted, batches_rejected=len(named), records_rejected=records)

    def _split_or_reject(self, delivery: Delivery, answer: Answer) -> None:
        if delivery.batch_count > 1:
            self._split(delivery)
            return
        message = "; ".join(e.message for e in answer.errors) or answer.describe()
        if answer.outcome is Outcome.TOO_LARGE:
            message = f"the batch is too large for mParticle ({delivery.payload_bytes} bytes)"
        with transaction.atomic():
            records = self._reject_batches(delivery, {0: message})
            self._settle(delivery, Delivery.State.REJECTED)
            self.run.add(batches_rejected=1, records_rejected=records)

    def _split(self, delivery: Delivery) -> None:
        """Replace a delivery by two holding its halves (same batches, same ids)."""
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

    def _blocked(self, delivery: Delivery, answer: Answer) -> bool:
        message = (
            "mParticle refused the API key and secret (HTTP 403)."
            if answer.outcome is Outcome.FORBIDDEN
            else "mParticle answered that no credentials were sent (HTTP 401)."
        )
        delivery.save(update_fields=["attempts", "sent_at", "last_status", "last_error", "response_excerpt"])
        self.workspace.mark_credentials_rejected(message + " Enter new credentials to resume.")
        self.run.finish(SyncRun.Status.BLOCKED, message + " Deliveries are kept and resume with new credentials.")
        return False

    # ------------------------------------------------------------------------------------------ the end

    def conclude(self) -> None:
        run = self.run
        run.refresh_from_db()
        failed = run.deliveries.failed().count()
        if failed:
            run.finish(
                SyncRun.Status.FAILED,
                f"{failed} request(s) could not be delivered and are kept as failed; replay them once the cause is fixed.",
            )
        elif run.records_rejected:
            run.finish(SyncRun.Status.SUCCEEDED_WITH_REJECTS)
        else:
            run.finish(SyncRun.Status.SUCCEEDED)
        log.info("run %s finished: %s", run.pk, run.status)


def route(record: UserRecord, mode: str, now_ms: int) -> Iterable[tuple[str, UserRecord]]:
    """Which endpoint a converted record goes to. Historical data must have events, all timestamped and at
    least 72 hours old; mParticle silently drops anything else, so it is refused here with the reason."""
    if mode == SyncJob.EndpointMode.REALTIME:
        return [(schema.BULK_PATH, record)]
    if mode == SyncJob.EndpointMode.HISTORICAL:
        _check_historical(record.events, now_ms)
        return [(schema.HISTORICAL_PATH, record)]
    # Auto: events older than 30 days go to the historical endpoint, the rest (and the profile) in real time.
    old = [
        e
        for e in record.events
        if (ts := e["data"].get("timestamp_unixtime_ms")) is not None and now_ms - ts > schema.REALTIME_MAX_AGE_MS
    ]
    if not old:
        return [(schema.BULK_PATH, record)]
    recent = [e for e in record.events if e not in old]
    out = [
        (schema.HISTORICAL_PATH, UserRecord(ref=record.ref, identities=record.identities, mpid=record.mpid, events=old))
    ]
    if recent or record.user_attributes or record.deleted_user_attributes:
        record.events = recent
        out.append((schema.BULK_PATH, record))
    return out


def _check_historical(events: list[dict], now_ms: int) -> None:
    if not events:
        raise RecordError("historical data needs at least one event; mParticle drops batches without events")
    for event in events:
        ts = event["data"].get("timestamp_unixtime_ms")
        if ts is None:
            raise RecordError("historical data needs a timestamp on every event (timestamp_unixtime_ms)")
        if now_ms - ts < schema.HISTORICAL_MIN_AGE_MS:
            raise RecordError("historical data must be at least 72 hours old; this event is newer")


def _excerpt(record: dict) -> str:
    try:
        text = orjson.dumps(record, default=str).decode()
    except TypeError:
        text = repr(record)
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"
