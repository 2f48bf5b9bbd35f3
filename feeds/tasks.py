"""django-q2 entry points: thin, primary keys only, safe to run twice."""

from __future__ import annotations

import time

from django.utils import timezone

from feeds import sync
from feeds.models import SyncRun


def process_run(run_id: int) -> str:
    run = sync.process_run(run_id)
    if run is not None and run.status == SyncRun.Status.QUEUED:
        # The time slice ended with work left: continue in a fresh task.
        sync.enqueue_run(run)
    return run.status if run is not None else "missing"


def run_scheduled_job(job_id: int) -> str:
    from feeds.scheduling import run_scheduled_job as run

    return run(job_id)


def resume_stalled() -> str:
    """Every minute: resume waits that are over and runs whose worker died."""
    resumed = sync.resume_stalled()
    return f"resumed {len(resumed)} run(s)"


def run_inline(run_id: int, pacing: sync.Pacing | None = None) -> SyncRun:
    """The same task code in this process, slice after slice and wait after wait, until the run stops
    (CLI --inline, tests). Waits are slept here instead of by a scheduled continuation."""
    pacing = pacing or sync.Pacing()
    while True:
        run = sync.process_run(run_id, pacing=pacing)
        if run.status == SyncRun.Status.QUEUED:
            continue
        if run.status == SyncRun.Status.WAITING and run.resume_at:
            pacing.sleep(max(0.0, (run.resume_at - timezone.now()).total_seconds()))
            if pacing.sleep is not time.sleep:
                # A test's fake sleep spends no real time: make the wait over in the database too.
                SyncRun.objects.filter(pk=run.pk).update(resume_at=timezone.now())
            continue
        return run
