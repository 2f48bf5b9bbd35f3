"""Job schedules: when a job runs by itself, and what a scheduled run does. The schedule is described here;
feeds.tasks keeps the task queue's schedules in step with it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from feeds import sync
from feeds.models import SyncJob, SyncRun
from feeds.sources.build import has_new

log = logging.getLogger(__name__)
SCHEDULE_NAME = "mpfeed-job-{}"


@dataclass(frozen=True)
class JobSchedule:
    """A job's schedule: every `minutes`, or by a `cron` expression (UTC). `next_run` is the queue's, once kept."""

    name: str
    cron: str | None = None
    minutes: int | None = None
    next_run: datetime | None = None


def schedule_name(job_id: int) -> str:
    return SCHEDULE_NAME.format(job_id)


def schedule_of(job: SyncJob) -> JobSchedule | None:
    """The schedule the job should have; None when it runs on demand only (or is disabled)."""
    if not (job.enabled and job.is_scheduled):
        return None
    if job.schedule_cron:
        return JobSchedule(schedule_name(job.pk), cron=job.schedule_cron)
    return JobSchedule(schedule_name(job.pk), minutes=job.schedule_minutes)


def start_scheduled_run(job_id: int) -> SyncRun | str:
    """What a schedule does: start a run unless one is unfinished or there is nothing new. Returns the run to work
    on, or why none was started."""
    job = SyncJob.objects.select_related("workspace", "mapping").filter(pk=job_id).first()
    if job is None or not job.enabled:
        return "job missing or disabled"
    if not has_new(job.source_kind, job.pk, job.cursor):
        # Only kinds that hold records can tell before reading (the inbox); the others' runs that read nothing
        # are counted the same way when they end (feeds.sync).
        job.count_nothing_new()
        return "nothing new in the inbox"
    try:
        return sync.start_run(job, trigger=SyncRun.Trigger.SCHEDULE)
    except sync.SyncError as e:
        log.info("scheduled run of job %s not started: %s", job.pk, e)
        return f"not started: {e}"
