"""django-q2 entry points: thin, primary keys only, safe to run twice."""

from __future__ import annotations

from feeds import sync
from feeds.models import SyncRun


def process_run(run_id: int) -> str:
    run = sync.process_run(run_id)
    if run.status == SyncRun.Status.QUEUED:
        # The time slice ended with work left: continue in a fresh task.
        sync.enqueue_run(run)
    return run.status


def run_inline(run_id: int) -> SyncRun:
    """The same task code in this process, slice after slice, until the run stops (CLI --inline, tests)."""
    while True:
        run = sync.process_run(run_id)
        if run.status != SyncRun.Status.QUEUED:
            return run
