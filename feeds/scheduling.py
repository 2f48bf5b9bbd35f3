"""Job schedules: django-q2 Schedule rows kept in step with SyncJob, and what a scheduled run does."""

from __future__ import annotations

import logging

from django.utils import timezone

from feeds import sync
from feeds.models import InboxRecord, SyncJob, SyncRun

log = logging.getLogger(__name__)
SCHEDULE_NAME = "mpfeed-job-{}"


def sync_schedule(job: SyncJob) -> None:
    """Create, update or delete the job's schedule so that it matches the job (idempotent)."""
    from django_q.models import Schedule

    name = SCHEDULE_NAME.format(job.pk)
    if not (job.enabled and job.is_scheduled):
        Schedule.objects.filter(name=name).delete()
        return
    if job.schedule_cron:
        fields = {"schedule_type": Schedule.CRON, "cron": job.schedule_cron, "minutes": None}
    else:
        fields = {"schedule_type": Schedule.MINUTES, "minutes": job.schedule_minutes, "cron": None}
    existing = Schedule.objects.filter(name=name).first()
    if existing and all(getattr(existing, k) == v for k, v in fields.items()):
        return  # unchanged: keep its next_run
    Schedule.objects.update_or_create(
        name=name,
        defaults={
            "func": "feeds.tasks.run_scheduled_job",
            "args": f"({job.pk},)",
            "repeats": -1,
            "next_run": timezone.now(),
            **fields,
        },
    )


def run_scheduled_job(job_id: int) -> str:
    """What a schedule does: start a run unless one is unfinished or there is nothing new, then work on it."""
    job = SyncJob.objects.select_related("workspace", "mapping").filter(pk=job_id).first()
    if job is None or not job.enabled:
        return "job missing or disabled"
    if job.source_kind == SyncJob.SourceKind.INBOX:
        after = (job.cursor or {}).get("id", 0)
        if not InboxRecord.objects.filter(job=job, pk__gt=after).exists():
            return "nothing new in the inbox"
    try:
        run = sync.start_run(job, trigger=SyncRun.Trigger.SCHEDULE)
    except sync.SyncError as e:
        log.info("scheduled run of job %s not started: %s", job.pk, e)
        return f"not started: {e}"
    # This task already holds a worker: work on the run here rather than queueing another task.
    from feeds import tasks

    return tasks.process_run(run.pk)
