"""The sync engine: start a run, read it into deliveries, send them, end it — and the credentials' test.

A run is read (feeds.reading: read → map → group per user → pack → persist, chunk by chunk, each chunk's
deliveries and checkpoint in one transaction before anything of it is sent) and sent (feeds.sending: one
request at a time, in order, every answer acted upon). In a cluster, reading is a django-q2 task (`read_run`)
and sending is done by senders in every worker process, each sending for many runs at once (feeds.dispatch);
`process_run` does both in the calling thread (the command line's --inline, django-q2's sync mode, tests).
Whoever sees a run fully read and fully sent ends it (`conclude_if_done`), once.

Beside it: feeds.pipeline (what records become), feeds.queueing (handing runs to workers), feeds.replays,
feeds.sweeper (what the every-minute task does). What faces call of queueing and replays is here too.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from feeds import alerts, events
from feeds.mapping import MappingError, compile_mapping
from feeds.models import SyncJob, SyncRun, Workspace
from feeds.mparticle import schema
from feeds.mparticle.client import CREDENTIALS, Answer, Outcome
from feeds.pacing import Pacing, target_rate
from feeds.queueing import TaskQueue, enqueue_run, reopen_run, use_queue  # noqa: F401 (entry points)
from feeds.reading import Reader, ReadingLost
from feeds.replays import replay, replay_run, replay_workspace  # noqa: F401 (entry points)
from feeds.sending import Again, Lane, Park, Stop
from feeds.sources import SourceError
from feeds.sources.build import build_source, drop_forwarded, is_incremental

log = logging.getLogger(__name__)

PAUSED = "The workspace was paused; the run resumes when it is resumed."
# However small a learned limit, requests hold at least this many batches (a limit read too low comes back up;
# a request larger than a server's bucket is split after repeated 429s).
MIN_BATCHES_PER_REQUEST = 10


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
    refusal = workspace.endpoint_refusal()
    if refusal:
        raise SyncError(f"{workspace}'s endpoint may not be sent to: {refusal}")
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


# ------------------------------------------------------------------------------------------- credentials


def test_connection(workspace: Workspace) -> Answer:
    """Send one batch without events in the development environment: mParticle checks the credentials
    without recording any data."""
    try:
        client = workspace.client()
    except ValueError as e:  # e.g. an endpoint this deployment may not send to: nothing was sent
        return Answer(Outcome.NETWORK_ERROR, None, 0.0, error=str(e))
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
            events.credentials_verified(workspace, events.VIA_TEST)
    elif answer.outcome in CREDENTIALS:
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


class Reading(enum.Enum):
    DONE = "read"  # everything is read (or reading failed, and the run ends failed once the rest is sent)
    MORE = "more"  # the time slice ended: queue the reading again
    AHEAD = "ahead"  # far enough ahead of the senders: reading goes on when they ask for more
    STOPPED = "stopped"  # not this worker's (another reads it), or the run stopped (blocked, ended)


def max_batches_for(workspace: Workspace) -> int:
    """Batches per request: up to 100, but no more than the workspace's learned limit takes in about a second
    (a limiter whose bucket is smaller than a request would refuse it)."""
    limit = target_rate(workspace)
    pace = getattr(workspace, "pace", None) if workspace.pk else None
    if pace is not None and settings.MPFEED_PACING:
        limit = min(limit, pace.limit)
    return max(MIN_BATCHES_PER_REQUEST, min(schema.MAX_BATCHES_PER_REQUEST, int(limit * 0.9)))


def _reader(run: SyncRun) -> Reader | None:
    """The run's reader, or None when its mapping cannot be compiled (the run then ends failed)."""
    try:
        converter = compile_mapping(run.mapping_rules, id_salt=str(run.workspace.pk), data_plan=run.workspace.data_plan)
    except MappingError as e:
        _reading_failed(run, f"The mapping is not valid: {e}")
        return None
    return Reader(run, converter, max_batches=max_batches_for(run.workspace))


def _reading_failed(run: SyncRun, message: str) -> None:
    """Reading cannot go on: what was read — what was set aside too, once built — is still sent, then the run
    ends failed with `message`."""
    pending = run.set_aside.exists()
    SyncRun.objects.filter(pk=run.pk).update(
        source_done=True, building=pending, read_done=not pending, read_error=message
    )
    run.source_done, run.building, run.read_done, run.read_error = True, pending, not pending, message


def read_run(run_id: int, *, time_slice: float | None = None) -> Reading:
    """Read a run into deliveries for up to a time slice, while senders send them (a django-q2 task)."""
    run = SyncRun.objects.select_related("workspace", "job").filter(pk=run_id).first()
    if run is None:
        log.info("run %s no longer exists", run_id)
        return Reading.STOPPED
    if not run.claim_reading(lease()):
        log.info("run %s: reading not claimable (status %s)", run.pk, run.status)
        return Reading.STOPPED
    SyncRun.objects.filter(pk=run.pk).update(queued_at=None)
    deadline = time.monotonic() + (time_slice or settings.MPFEED_TASK_SLICE)
    outcome = Reading.DONE
    lost = False
    try:
        if not run.workspace.can_send:
            run.finish(SyncRun.Status.BLOCKED, f"The workspace is {run.workspace.get_status_display().lower()}.")
            return Reading.STOPPED
        if not run.read_done:
            reader = _reader(run)
            if reader is not None:
                outcome = _read(run, reader, deadline)
    except ReadingLost as e:
        log.warning("%s; this reader stops", e)
        lost, outcome = True, Reading.STOPPED
    except Exception:
        log.exception("run %s: reading failed unexpectedly", run.pk)
        _reading_failed(run, "Internal error while reading; see the worker log. Deliveries are kept.")
        raise
    finally:
        if not lost:  # (the lease is the other reader's now)
            run.release_reading()
        if outcome is Reading.DONE:
            conclude_if_done(run)
    return outcome


def _read(run: SyncRun, reader: Reader, deadline: float) -> Reading:
    lease_seconds = settings.MPFEED_LEASE_SECONDS
    try:
        for _ in reader.steps(lease_seconds):
            if run.read_done:
                return Reading.DONE
            status = SyncRun.objects.filter(pk=run.pk).values_list("status", flat=True).first()
            if status not in SyncRun.WORKING_STATUSES:
                return Reading.STOPPED  # blocked or ended meanwhile: reading stops at the checkpoint
            if run.deliveries.pending().count() >= settings.MPFEED_OUTBOX_AHEAD:
                return Reading.AHEAD  # the run's sender asks for more when it has sent half of them
            if time.monotonic() >= deadline:
                return Reading.MORE
    except SourceError as e:
        _reading_failed(run, str(e))
    return Reading.DONE


def request_reading(run_id: int) -> bool:
    """A sender ran out of deliveries of a run that is not fully read: True when a reading should be queued (no
    one reads it, and no reading was asked for in the last half minute)."""
    now = timezone.now()
    return bool(
        SyncRun.objects.filter(pk=run_id, read_done=False, status__in=SyncRun.STARTED_STATUSES)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=now - timedelta(seconds=30)))
        .update(queued_at=now)
    )


def conclude_if_done(run: SyncRun) -> bool:
    """End a run that is fully read and has nothing left to send (called by whoever may have done the last of
    it: the reader, a sender). Only one caller ends it; True for that one."""
    try:
        run.refresh_from_db()
    except SyncRun.DoesNotExist:
        return False  # another caller ended it as nothing new (folded into its job's count)
    if run.status not in SyncRun.STARTED_STATUSES or not run.read_done:
        return False
    if run.deliveries.pending().exists():
        return False
    failed = run.deliveries.failed().count()
    if run.read_error:
        status, error = SyncRun.Status.FAILED, run.read_error
        if failed:
            error += f" {failed} request(s) could not be delivered and are kept as failed."
    elif failed:
        status = SyncRun.Status.FAILED
        error = (
            f"{failed} request(s) could not be delivered and are kept as failed; replay them once the cause is fixed."
        )
    else:
        if _found_nothing_new(run):
            return _fold_nothing_new(run)
        advance_job_cursor(run)
        status = SyncRun.Status.SUCCEEDED_WITH_REJECTS if run.records_rejected else SyncRun.Status.SUCCEEDED
        error = ""
    if not run.finish(status, error):
        return False
    if run.records_read:  # the job's count of checks that found nothing new is since the last run that did
        SyncJob.objects.filter(pk=run.job_id, nothing_new_checks__gt=0).update(nothing_new_checks=0)
    log.info("run %s finished: %s", run.pk, run.status)
    events.run_ended(run)  # the webhook hears of it (never raises)
    return True


def _found_nothing_new(run: SyncRun) -> bool:
    """A scheduled run of an incremental source that read nothing, moved nothing and sent nothing: not worth a
    line among the job's runs (a staff or command-line run is always kept: someone asked for it)."""
    return (
        run.trigger == SyncRun.Trigger.SCHEDULE
        and not run.reopened_from
        and run.records_read == 0
        and run.records_rejected == 0
        and run.cursor == run.cursor_before
        and is_incremental(run.source_kind, run.source_config)
        and not run.deliveries.exists()
        and not run.rejects.exists()
    )


def _fold_nothing_new(run: SyncRun) -> bool:
    """End a run that found nothing new by counting it on its job ("checked N times, nothing new, last at T")
    instead of keeping it: in one transaction, and only by the one caller that still finds it being worked on."""
    now = timezone.now()
    with transaction.atomic():
        deleted, _ = SyncRun.objects.filter(pk=run.pk, status__in=SyncRun.STARTED_STATUSES).delete()
        if not deleted:
            return False
        run.job.count_nothing_new(now)
    run.status, run.finished_at = SyncRun.Status.SUCCEEDED, now  # (in memory: what the caller reports)
    log.info("run %s of job %s found nothing new: counted on the job, not kept", run.pk, run.job_id)
    return True


def process_run(run_id: int, *, pacing: Pacing | None = None, time_slice: float | None = None) -> SyncRun | None:
    """Read and send a run in this thread for up to `time_slice` seconds, sleeping its waits. Returns the run:
    QUEUED means "call again", WAITING "call again at run.resume_at"."""
    run = SyncRun.objects.select_related("workspace", "job").filter(pk=run_id).first()
    if run is None:
        log.info("run %s no longer exists", run_id)
        return run
    if not run.claim(lease()):
        log.info("run %s not claimable (status %s)", run.pk, run.status)
        return run
    inline = _Inline(run, pacing or Pacing(), time_slice or settings.MPFEED_TASK_SLICE)
    try:
        inline.work()
    except Exception:
        log.exception("run %s failed unexpectedly", run.pk)
        run.refresh_from_db()
        if run.finish(SyncRun.Status.FAILED, "Internal error while syncing; see the worker log. Deliveries are kept."):
            events.run_ended(run)
        _let_go(run)
        raise
    finally:
        inline.lane.close()
        gone = not SyncRun.objects.filter(pk=run.pk).exists()  # it found nothing new (_fold_nothing_new)
        if not gone:
            run.refresh_from_db()
        # Finished, failed, blocked or waiting: alert on a change of the workspace's health (never raises).
        alerts.evaluate_safely(run.workspace)
    if gone:
        return None
    _let_go(run)
    return run


def run_inline(run_id: int, pacing: Pacing | None = None) -> SyncRun | None:
    """Work on a run in this thread, slice after slice and wait after wait, until it stops (the command line's
    --inline, tests). Its waits are slept here, by `pacing`'s sleep, instead of by a sender taking the run up
    again: once slept, the wait is over for the database too (whatever clock `pacing` keeps). None when the run
    does not exist (any more)."""
    pacing = pacing or Pacing()
    while True:
        run = process_run(run_id, pacing=pacing)
        if run is None:
            return None
        if run.status == SyncRun.Status.QUEUED:
            continue
        if run.status == SyncRun.Status.WAITING and run.resume_at:
            pacing.sleep(max(0.0, (run.resume_at - timezone.now()).total_seconds()))
            SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.WAITING, resume_at=run.resume_at).update(
                resume_at=timezone.now()
            )
            continue
        return run


def _let_go(run: SyncRun) -> None:
    """process_run is done with the run (its status says what comes next): its leases go. (Not when the process
    dies — then they run out.)"""
    SyncRun.objects.filter(pk=run.pk, sender__isnull=True).update(lease_until=None, send_lease_until=None)
    run.lease_until = run.send_lease_until = None


class _Inline:
    """One run, read and sent in turn by one thread: each chunk's deliveries are sent before the next is read."""

    def __init__(self, run: SyncRun, pacing: Pacing, time_slice: float):
        self.run = run
        self.pacing = pacing
        self.deadline = time.monotonic() + time_slice
        self.lane = Lane(run, pacing, lease())
        self.renew_at = self.check_at = 0.0

    def work(self) -> None:
        run = self.run
        if not run.workspace.can_send:
            run.finish(SyncRun.Status.BLOCKED, f"The workspace is {run.workspace.get_status_display().lower()}.")
            return
        if not self.send():
            return
        if not run.read_done:
            reader = _reader(run)
            if reader is None:
                conclude_if_done(run)
                return
            try:
                for _ in reader.steps(settings.MPFEED_LEASE_SECONDS):
                    if not self.send():
                        return
                    if run.read_done:
                        break
                    if self.out_of_time():
                        return
            except SourceError as e:
                _reading_failed(run, str(e))
            except ReadingLost as e:
                log.warning("%s; this worker stops", e)
                return
        conclude_if_done(run)

    def out_of_time(self) -> bool:
        """At the end of a time slice, give the worker back and queue the run again."""
        if time.monotonic() < self.deadline:
            return False
        self.run.requeue()
        return True

    def send(self) -> bool:
        """Send the run's pending deliveries in order. False when the run must stop (blocked, waiting, time)."""
        while True:
            step = self.lane.step()
            if step is Stop.IDLE:
                return True
            if step is Stop.BLOCKED:
                return False
            if isinstance(step, Park):
                self.run.wait_until(step.until, step.reason, reading=True)
                return False
            assert isinstance(step, Again)
            pause = step.at - self.pacing.clock()
            if pause > 0:
                self.pacing.sleep(pause)
            moment = time.monotonic()
            if moment >= self.renew_at:  # the leases, a third of their length before they run out
                self.run.extend_lease(lease(), sending=True)
                self.renew_at = moment + lease().total_seconds() / 3
            if moment >= self.check_at:  # staff may pause the workspace or cancel the run: looked at once a second
                self.check_at = moment + 1.0
                if self.cancelled() or self.paused():
                    return False
            if self.out_of_time():
                return False

    def cancelled(self) -> bool:
        """Staff cancelled the run (or it stopped otherwise) while it was sending: stop after the current request."""
        status = SyncRun.objects.filter(pk=self.run.pk).values_list("status", flat=True).first()
        if status in SyncRun.WORKING_STATUSES:
            return False
        self.lane.give_up_reservation()
        return True

    def paused(self) -> bool:
        """Staff paused the workspace while the run was sending: stop after the current request."""
        if not Workspace.objects.filter(pk=self.run.workspace_id, status=Workspace.Status.PAUSED).exists():
            return False
        self.run.finish(SyncRun.Status.BLOCKED, PAUSED)
        return True


def advance_job_cursor(run: SyncRun) -> None:
    """Hand a finished run's reading position to its job, so that the next run reads only what is new.
    Only from the position the run started at: a replayed older run never moves the job backwards.
    What the source holds up to that position is in the outbox now and is deleted (the inbox's records)."""
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
        drop_forwarded(job.source_kind, job.pk, run.cursor)  # the inbox's forwarded records
