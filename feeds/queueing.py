"""Handing runs to workers. The engine's one door to a task queue, which it is given (feeds.tasks gives
django-q2's when the app is ready): the engine names no task system and never imports the task module."""

from __future__ import annotations

from typing import Protocol

from django.db import IntegrityError, transaction
from django.db.models import Case, F, When
from django.utils import timezone

from feeds.models import SyncRun


class TaskQueue(Protocol):
    """What the engine asks of a task queue. The engine names no task system: feeds.tasks (django-q2's) is
    handed to it when the app is ready (`use_queue`), so that the engine never imports the task module."""

    def queue_run(self, run_id: int) -> str:
        """Queue the task that works on the run (it reads the run; sends it too where no sender runs). Returns
        the task's id."""
        ...


_queue: TaskQueue | None = None


def use_queue(queue: TaskQueue) -> None:
    """The task queue that runs are handed to from now on (feeds.apps, at start-up)."""
    global _queue
    _queue = queue


def enqueue_run(run: SyncRun) -> str:
    """Hand the run to a worker (see `use_queue`). Only the primary key goes into the task."""
    if _queue is None:
        raise RuntimeError("no task queue to hand the run to: feeds.tasks gives it when the app is ready")
    SyncRun.objects.filter(pk=run.pk).update(queued_at=timezone.now())
    return _queue.queue_run(run.pk)


def reopen_run(run: SyncRun) -> bool:
    """Put a finished or blocked run back in the queue (for replays and new credentials). False when the
    job already has another unfinished run; the sweeper tries again once that one is over."""
    try:
        with transaction.atomic():
            changed = (
                SyncRun.objects.filter(pk=run.pk)
                .exclude(status__in=(*SyncRun.WORKING_STATUSES, SyncRun.Status.CANCELLED))  # cancelled: for good
                .update(
                    status=SyncRun.Status.QUEUED,
                    reopened_from=F("status"),  # a failed run stays one for the alerts until it finishes again
                    # ...and keeps the record that it failed, when and why, after it recovers.
                    failed_before_at=Case(
                        When(status=SyncRun.Status.FAILED, then=F("finished_at")), default=F("failed_before_at")
                    ),
                    failed_before_error=Case(
                        When(status=SyncRun.Status.FAILED, then=F("error")), default=F("failed_before_error")
                    ),
                    finished_at=None,
                    error="",
                    resume_at=None,
                    send_lease_until=None,
                    sender=None,
                )
            )
    except IntegrityError:
        return False
    return changed == 1
