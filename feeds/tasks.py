"""django-q2, and nothing else: the only module that names it. Tasks (thin, primary keys only, safe to run twice),
the queue the engine hands runs to, the schedules kept in step with the jobs, and the sender of every worker.

In a cluster, a run's task reads it into deliveries (`process_run` → `sync.read_run`); the sending is done by a
sender in every worker process (feeds.dispatch), started when django-q2 spawns the process, each sending for many
runs at once. Under django-q2's sync mode (tasks run in the caller, there is no cluster and so no sender) a run's
task reads and sends it itself.
"""

from __future__ import annotations

from django.dispatch import receiver
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import Schedule
from django_q.signals import post_spawn
from django_q.status import Stat
from django_q.tasks import async_task

from feeds import dispatch, scheduling, sweeper, sync, webhooks
from feeds.models import SyncJob, SyncRun
from feeds.scheduling import JobSchedule

SWEEPER = "mpfeed: resume stalled runs"
PRUNER = "mpfeed: prune what was sent past its retention"
# The tasks by their dotted paths, as django-q2 stores them in its queue and schedules.
PROCESS_RUN = f"{__name__}.process_run"
RUN_SCHEDULED_JOB = f"{__name__}.run_scheduled_job"
RESUME_STALLED = f"{__name__}.resume_stalled"
PRUNE_SENT = f"{__name__}.prune_sent"


# ------------------------------------------------------------------------------------------------- tasks


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


def run_scheduled_job(job_id: int) -> str:
    started = scheduling.start_scheduled_run(job_id)
    if isinstance(started, str):
        return started
    # This task already holds a worker: work on the run here rather than queueing another task.
    return process_run(started.pk)


def resume_stalled() -> str:
    """Every minute: queue again the reading that a dead worker or a lost task left behind, and replays; forget
    the Idempotency-Keys of old pushes; try again the webhook messages that are due."""
    resumed = sweeper.resume_stalled()
    forgotten = sweeper.forget_old_push_keys()
    retried = webhooks.retry_due()
    return f"resumed {len(resumed)} run(s), forgot {forgotten} push key(s), tried {retried} webhook message(s) again"


def prune_sent() -> str:
    """Every hour: drop the request bodies and search keys past their retention period (the results stay), and
    the webhook messages sent or given up on past theirs."""
    bodies, keys, messages = sweeper.prune_sent()
    return f"dropped {bodies} body(ies), {keys} search key(s), {messages} webhook message(s)"


# ------------------------------------------------------------------------------------------------- queue


class Queue:
    """django-q2 as the engine's task queue (queueing.TaskQueue), handed to it when the app is ready."""

    def queue_run(self, run_id: int) -> str:
        return async_task(PROCESS_RUN, run_id, task_name=f"sync-run-{run_id}", group="sync")


def queue_reading(run_id: int) -> None:
    """Queue the reading of a run (a sender ran out of its deliveries, or a time slice ended)."""
    run = SyncRun.objects.filter(pk=run_id).first()
    if run is not None:
        sync.enqueue_run(run)


def broker_health() -> tuple[bool, str]:
    """Whether the task broker answers, and its kind (raises when it cannot be reached at all)."""
    broker = get_broker()
    kind = type(broker).__name__
    try:
        return bool(broker.ping()), kind
    except Exception as e:  # noqa: BLE001 (reported, not raised: this is for the health page)
        return False, f"{kind}: {type(e).__name__}"


def clusters_reporting() -> int:
    """The clusters that report their stats (the ORM broker keeps them in a per-process cache: none to see)."""
    return len(Stat.get_all(get_broker()))


# --------------------------------------------------------------------------------------------- schedules


def ensure_sweeper() -> None:
    """The periodic sweeper that resumes stalled runs, and the hourly pruning of what was sent past its
    retention; created idempotently after every migrate."""
    Schedule.objects.update_or_create(
        name=SWEEPER,
        defaults={"func": RESUME_STALLED, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )
    Schedule.objects.update_or_create(
        name=PRUNER, defaults={"func": PRUNE_SENT, "schedule_type": Schedule.HOURLY, "repeats": -1}
    )


def keep_schedule(job: SyncJob) -> None:
    """Create, update or delete the job's schedule so that it matches the job (idempotent)."""
    wanted = scheduling.schedule_of(job)
    if wanted is None:
        drop_schedule(job.pk)
        return
    if wanted.cron:
        fields = {"schedule_type": Schedule.CRON, "cron": wanted.cron, "minutes": None}
    else:
        fields = {"schedule_type": Schedule.MINUTES, "minutes": wanted.minutes, "cron": None}
    existing = Schedule.objects.filter(name=wanted.name).first()
    if existing and all(getattr(existing, k) == v for k, v in fields.items()):
        return  # unchanged: keep its next_run
    Schedule.objects.update_or_create(
        name=wanted.name,
        defaults={
            "func": RUN_SCHEDULED_JOB,
            "args": f"({job.pk},)",
            "repeats": -1,
            "next_run": timezone.now(),
            **fields,
        },
    )


def drop_schedule(job_id: int) -> None:
    Schedule.objects.filter(name=scheduling.schedule_name(job_id)).delete()


def kept_schedule(job: SyncJob) -> JobSchedule | None:
    """The job's schedule as the queue keeps it, with its next run (for the job's page)."""
    row = Schedule.objects.filter(name=scheduling.schedule_name(job.pk)).first()
    if row is None:
        return None
    cron = row.cron if row.schedule_type == Schedule.CRON else None
    return JobSchedule(row.name, cron=cron, minutes=row.minutes, next_run=row.next_run)


# -------------------------------------------------------------------------------------------- the sender


@receiver(post_spawn, dispatch_uid="mpfeed-sender")
def start_sender(sender, proc_name: str, **kwargs) -> None:
    """Each django-q2 worker process sends, in the background, for as many runs as it can (MPFEED_SEND_THREADS
    requests in flight at most; 0 turns sending off in this cluster). Not in sync mode: django-q2 then runs its
    worker function in the caller for each task, and the task sends itself."""
    if not Conf.SYNC:
        dispatch.start_background(queue_reading)
