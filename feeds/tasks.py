"""django-q2 entry points: thin, primary keys only, safe to run twice — and the sender of every worker process.

In a cluster, a run's task reads it into deliveries (`process_run` → `sync.read_run`); the sending is done by a
sender in every worker process (feeds.dispatch), started when django-q2 spawns the process, each sending for many
runs at once. Under django-q2's sync mode (tasks run in the caller, there is no cluster and so no sender) a run's
task reads and sends it itself.
"""

from __future__ import annotations

import time

from django.dispatch import receiver
from django.utils import timezone
from django_q.conf import Conf
from django_q.signals import post_spawn

from feeds import dispatch, sync
from feeds.models import SyncRun


def process_run(run_id: int) -> str:
    if Conf.SYNC:
        run = sync.process_run(run_id)
        if run is not None and run.status == SyncRun.Status.QUEUED:
            # The time slice ended with work left: continue in a fresh task.
            sync.enqueue_run(run)
        return run.status if run is not None else "missing"
    reading = sync.read_run(run_id)
    if reading is sync.Reading.MORE:
        queue_reading(run_id)
    return reading.value


def queue_reading(run_id: int) -> None:
    """Queue the reading of a run (a sender ran out of its deliveries, or a time slice ended)."""
    run = SyncRun.objects.filter(pk=run_id).first()
    if run is not None:
        sync.enqueue_run(run)


def run_scheduled_job(job_id: int) -> str:
    from feeds.scheduling import run_scheduled_job as run

    return run(job_id)


def resume_stalled() -> str:
    """Every minute: queue again the reading that a dead worker or a lost task left behind, and replays; forget
    the Idempotency-Keys of old pushes."""
    resumed = sync.resume_stalled()
    forgotten = sync.forget_old_push_keys()
    return f"resumed {len(resumed)} run(s), forgot {forgotten} push key(s)"


@receiver(post_spawn, dispatch_uid="mpfeed-sender")
def start_sender(sender, proc_name: str, **kwargs) -> None:
    """Each django-q2 worker process sends, in the background, for as many runs as it can (MPFEED_SEND_THREADS
    requests in flight at most; 0 turns sending off in this cluster). Not in sync mode: django-q2 then runs its
    worker function in the caller for each task, and the task sends itself."""
    if not Conf.SYNC:
        dispatch.start_background(queue_reading)


def run_inline(run_id: int, pacing: sync.Pacing | None = None) -> SyncRun:
    """The same task code in this process, slice after slice and wait after wait, until the run stops
    (CLI --inline, tests). Waits are slept here instead of by a sender taking the run up again."""
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
