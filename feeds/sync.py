"""The sync engine: read → map → group per user → pack → persist → deliver → checkpoint.

Deliveries (the exact request bodies, with deterministic batch and event ids) are written together with the
chunk's checkpoint in one transaction before the first send, so a crash at any point resumes from the
checkpoint and resends stored bodies byte for byte: nothing is lost and nothing is sent under a new id.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from feeds import alerts
from feeds.mapping import Converter, MappingError, RecordError, compile_mapping
from feeds.models import Delivery, InboxRecord, RejectedRecord, SyncJob, SyncRun, Workspace
from feeds.mparticle import schema
from feeds.mparticle.batch import Grouper, UserRecord, batch_ids, join, pack, serialize_batches
from feeds.mparticle.client import Answer, EventsClient, Outcome
from feeds.pacing import Pacing
from feeds.sending import Sender, Settled, Wait
from feeds.sources import Item, SourceError
from feeds.sources.build import build_source, is_incremental

log = logging.getLogger(__name__)

EXCERPT = 500
CONTINUATION = "mpfeed-resume-run-{}"
SWEEPER = "mpfeed: resume stalled runs"


def lease() -> timedelta:
    return timedelta(seconds=settings.MPFEED_LEASE_SECONDS)


class SyncError(Exception):
    """A sync that cannot start; the message is for people."""


class AlreadyRunning(SyncError):
    pass


# ------------------------------------------------------------------------------------------------ starting


def start_run(
    job: SyncJob, *, trigger: str = SyncRun.Trigger.MANUAL, source_config: dict | None = None, user=None
) -> SyncRun:
    """Create a queued run of `job` (at most one unfinished run per job, enforced by the database).
    `source_config` replaces the job's source settings for this run only (e.g. `run_sync --file`)."""
    job.refresh_from_db(fields=["cursor"])  # another process may have moved it since `job` was read
    workspace = job.workspace
    if not workspace.has_credentials:
        raise SyncError(f"{workspace} has no credentials yet.")
    if workspace.status == Workspace.Status.PAUSED:
        raise SyncError(f"{workspace} is paused.")
    if workspace.status == Workspace.Status.CREDENTIALS_REJECTED:
        raise SyncError(f"{workspace}'s credentials were rejected: {workspace.status_message}")
    config = job.source_config if source_config is None else source_config
    try:
        build_source(job.source_kind, config, secret=job.source_secret, job_id=job.pk)
    except SourceError as e:
        raise SyncError(f"The source settings are not valid: {e}") from None
    cursor = job.cursor if source_config is None and is_incremental(job.source_kind, config) else None
    mapping = job.mapping
    try:
        with transaction.atomic():
            return SyncRun.objects.create(
                job=job,
                workspace=workspace,
                trigger=trigger,
                source_kind=job.source_kind,
                source_config=config,
                cursor_before=cursor,
                cursor=cursor,
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

    SyncRun.objects.filter(pk=run.pk).update(queued_at=timezone.now())
    return async_task("feeds.tasks.process_run", run.pk, task_name=f"sync-run-{run.pk}", group="sync")


def schedule_continuation(run: SyncRun) -> None:
    """A django-q2 schedule that resumes a waiting run when its wait is over (idempotent per run)."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name=CONTINUATION.format(run.pk),
        defaults={
            "func": "feeds.tasks.process_run",
            "args": f"({run.pk},)",
            "schedule_type": Schedule.ONCE,
            "repeats": -1,
            "next_run": run.resume_at,
        },
    )


def ensure_schedules() -> None:
    """The periodic sweeper that resumes stalled runs; created idempotently after every migrate."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name=SWEEPER,
        defaults={"func": "feeds.tasks.resume_stalled", "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )


def resume_stalled(now: datetime | None = None) -> list[int]:
    """Queue runs a worker should pick up: waits that are over, runs whose worker died (lease expired),
    queued runs whose task was lost, and finished runs that were given deliveries to replay."""
    now = now or timezone.now()
    stale_queue = now - timedelta(seconds=settings.MPFEED_REQUEUE_AFTER)
    runs = list(
        SyncRun.objects.filter(
            Q(status=SyncRun.Status.WAITING, resume_at__lte=now)
            | Q(status=SyncRun.Status.RUNNING, lease_until__lt=now)
            | Q(status=SyncRun.Status.QUEUED, queued_at__lt=stale_queue)
            | Q(status=SyncRun.Status.QUEUED, queued_at__isnull=True, created_at__lt=stale_queue)
        ).only("pk")
    )
    reopened = SyncRun.objects.filter(
        status__in=SyncRun.FINISHED_STATUSES, deliveries__state=Delivery.State.PENDING
    ).distinct()
    for run in reopened:
        if reopen_run(run):
            runs.append(run)
    for run in runs:
        enqueue_run(run)
    alerts.evaluate_all(now)  # deliveries failing for over an hour, recoveries between runs (never raises)
    return [run.pk for run in runs]


def reopen_run(run: SyncRun) -> bool:
    """Put a finished or blocked run back in the queue (for replays and new credentials). False when the
    job already has another unfinished run; the sweeper tries again once that one is over."""
    try:
        with transaction.atomic():
            changed = (
                SyncRun.objects.filter(pk=run.pk)
                .exclude(status__in=[SyncRun.Status.QUEUED, SyncRun.Status.RUNNING, SyncRun.Status.WAITING])
                .update(
                    status=SyncRun.Status.QUEUED,
                    reopened_from=F("status"),  # a failed run stays one for the alerts until it finishes again
                    finished_at=None,
                    error="",
                    lease_until=None,
                    resume_at=None,
                )
            )
    except IntegrityError:
        return False
    return changed == 1


# ------------------------------------------------------------------------------------------------- replays


def replay(deliveries) -> tuple[int, list[int]]:
    """Send failed deliveries again — their stored bodies, byte for byte, so a replay cannot duplicate.
    Returns (deliveries replayed, runs queued)."""
    ids = list(deliveries.filter(state=Delivery.State.FAILED, payload__isnull=False).values_list("pk", flat=True))
    if not ids:
        return 0, []
    with transaction.atomic():
        Delivery.objects.filter(pk__in=ids).update(
            state=Delivery.State.PENDING, first_failure_at=None, finished_at=None
        )
    queued = []
    for run in SyncRun.objects.filter(deliveries__pk__in=ids).distinct():
        if run.is_active and run.status != SyncRun.Status.BLOCKED:
            continue  # a working run sends pending deliveries anyway
        if reopen_run(run):
            enqueue_run(run)
            queued.append(run.pk)
    return len(ids), queued


def replay_run(run: SyncRun) -> tuple[int, list[int]]:
    return replay(run.deliveries.all())


def replay_workspace(workspace: Workspace, since: datetime) -> tuple[int, list[int]]:
    return replay(workspace.deliveries.filter(created_at__gte=since))


# ------------------------------------------------------------------------------------------- credentials


def test_connection(workspace: Workspace) -> Answer:
    """Send one batch without events in the development environment: mParticle checks the credentials
    without recording any data."""
    client = workspace.client()
    try:
        return client.upload({"environment": "development", "source_request_id": str(uuid.uuid4())})
    finally:
        client.close()


@dataclass(frozen=True)
class Verification:
    answer: Answer
    resumed: list[int]  # blocked runs queued again


def verify_and_resume(workspace: Workspace) -> Verification:
    """Test the workspace's credentials; when they pass, the workspace is active again and its blocked
    runs resume where they stopped (unless staff paused the workspace)."""
    tested = workspace.credentials_updated_at
    answer = test_connection(workspace)
    resumed = []
    if answer.delivered:
        # Only the credentials that were tested: ones stored meanwhile wait for their own test.
        if workspace.mark_credentials_verified(tested):
            resumed = resume_blocked_runs(workspace)
    elif answer.outcome in (Outcome.UNAUTHORIZED, Outcome.FORBIDDEN):
        workspace.mark_credentials_rejected(f"The connection test was refused ({answer.describe()}).")
    return Verification(answer, resumed)


def resume_blocked_runs(workspace: Workspace) -> list[int]:
    """After credentials passed a test: the runs blocked by refused credentials go on where they stopped (not
    while staff keep the workspace paused). Returns the resumed runs' ids."""
    resumed = []
    if workspace.status == Workspace.Status.ACTIVE:
        for run in workspace.runs.filter(status=SyncRun.Status.BLOCKED):
            if reopen_run(run):
                enqueue_run(run)
                resumed.append(run.pk)
    return resumed


# ---------------------------------------------------------------------------------------------- processing


def process_run(run_id: int, *, pacing: Pacing | None = None, time_slice: float | None = None) -> SyncRun:
    """Work on a run for up to `time_slice` seconds. Returns the run: QUEUED means "call again", WAITING
    means "call again at run.resume_at" (a continuation is scheduled)."""
    run = SyncRun.objects.select_related("workspace", "job").filter(pk=run_id).first()
    if run is None:
        log.info("run %s no longer exists", run_id)
        return run
    if not run.claim(lease()):
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
    finally:
        # Finished, failed, blocked or waiting: alert on a change of the workspace's health (never raises).
        alerts.evaluate_safely(run.workspace)
    return run


class _Engine:
    def __init__(self, run: SyncRun, pacing: Pacing, time_slice: float):
        self.run = run
        self.workspace = run.workspace
        self.pacing = pacing
        self.deadline = time.monotonic() + time_slice
        self.client: EventsClient | None = None
        self.sender: Sender | None = None

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
        self.sender = Sender(run, self.client, self.pacing, lease())
        try:
            if not self.send_pending():
                return
            if not run.read_done:
                try:
                    source = build_source(
                        run.source_kind, run.source_config, secret=run.job.source_secret, job_id=run.job_id
                    )
                    items = source.read(run.cursor)
                except SourceError as e:
                    run.finish(SyncRun.Status.FAILED, str(e))
                    return
                while True:
                    try:
                        # Sources read lazily: connection and paging failures surface while iterating.
                        chunk = list(islice(items, settings.MPFEED_CHUNK_SIZE))
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
        self.run.requeue()
        return True

    # -------------------------------------------------------------------------------- chunk → deliveries

    def persist_chunk(self, chunk: list[Item], converter: Converter) -> None:
        names_before, values_before = converter.stats.names_truncated, converter.stats.values_truncated
        run = self.run
        rejects: list[RejectedRecord] = []
        # Records are grouped per user as they are converted, one grouper per endpoint.
        by_path: dict[str, Grouper] = {}
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
                    grouper = by_path.get(path)
                    if grouper is None:
                        grouper = by_path[path] = Grouper()
                    grouper.add(part)
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
        for path, grouper in by_path.items():
            batches = grouper.batches
            for record, reason in grouper.refused:
                rejects.append(
                    RejectedRecord(run=run, stage=RejectedRecord.Stage.MAPPING, ref=record.ref[:300], reason=reason)
                )
            srids = batch_ids(len(batches), self.workspace.pk, run.pk, chunk_no, path)
            bodies = serialize_batches(batches, run.environment, srids)
            for group in pack([len(b) for b in bodies]):
                parts = bodies[group.start : group.stop]
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
                        event_count=sum(batches[i].event_count for i in group),
                        source_request_ids=[srids[i] for i in group],
                        record_refs=[batches[i].refs for i in group],
                        batch_events=[batches[i].event_count for i in group],
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
            if chunk:
                run.cursor = chunk[-1].position
                # A position of None marks the last item of a complete, non-incremental read.
                if run.cursor is None:
                    run.read_done = True
            run.records_read += len(chunk)
            run.records_rejected += rejected_records
            run.batches += batch_total
            run.requests += len(deliveries)
            run.events += event_total
            run.names_truncated += converter.stats.names_truncated - names_before
            run.values_truncated += converter.stats.values_truncated - values_before
            run.lease_until = timezone.now() + lease()
            run.save(
                update_fields=[
                    "checkpoint",
                    "cursor",
                    "chunks",
                    "read_done",
                    "records_read",
                    "records_rejected",
                    "batches",
                    "requests",
                    "events",
                    "names_truncated",
                    "values_truncated",
                    "lease_until",
                ]
            )

    # ------------------------------------------------------------------------------------------- sending

    def send_pending(self) -> bool:
        """Send the run's pending deliveries in order. False when the run must stop (blocked, waiting, time)."""
        while True:
            delivery = self.run.deliveries.pending().order_by("sequence").first()
            if delivery is None:
                return True
            result = self.sender.deliver(delivery)
            if result is Settled.BLOCKED:
                return False
            if isinstance(result, Wait):
                self.run.wait_until(result.until, result.reason)
                schedule_continuation(self.run)
                return False
            if self.paused():
                return False
            if self.out_of_time():
                return False

    def paused(self) -> bool:
        """Staff paused the workspace while the run was sending: stop after the current request."""
        if not Workspace.objects.filter(pk=self.workspace.pk, status=Workspace.Status.PAUSED).exists():
            return False
        self.run.finish(SyncRun.Status.BLOCKED, "The workspace was paused; the run resumes when it is resumed.")
        return True

    # ------------------------------------------------------------------------------------------ the end

    def conclude(self) -> None:
        run = self.run
        run.refresh_from_db()
        advance_job_cursor(run)
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


def advance_job_cursor(run: SyncRun) -> None:
    """Hand a finished run's reading position to its job, so that the next run reads only what is new.
    Only from the position the run started at: a replayed older run never moves the job backwards.
    Inbox records up to that position are in the outbox now and are removed from the inbox."""
    if run.cursor is None or run.cursor == run.cursor_before:
        return
    if not is_incremental(run.source_kind, run.source_config) or run.source_config != run.job.source_config:
        return
    with transaction.atomic():
        job = SyncJob.objects.select_for_update().get(pk=run.job_id)
        if job.cursor != run.cursor_before:
            return
        job.cursor = run.cursor
        job.save(update_fields=["cursor"])
        if job.source_kind == SyncJob.SourceKind.INBOX:
            InboxRecord.objects.filter(job=job, pk__lte=run.cursor["id"]).delete()


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
