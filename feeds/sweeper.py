"""The sweeper, every minute (feeds.tasks.resume_stalled): work that a dead worker or a lost task left behind is
queued again, stranded runs end, replays start, and what is kept only for a while is forgotten."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from feeds import alerts, webhooks
from feeds.models import Delivery, InboxPush, Sender, SentKey, SyncRun
from feeds.queueing import enqueue_run, reopen_run
from feeds.sync import conclude_if_done


def forget_old_push_keys(now: datetime | None = None) -> int:
    """Idempotency-Keys of pushes older than MPFEED_IDEMPOTENCY_HOURS: a retry that late is a new push."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.MPFEED_IDEMPOTENCY_HOURS)
    deleted, _ = InboxPush.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def prune_sent(now: datetime | None = None) -> tuple[int, int, int]:
    """What was sent, past its retention: bodies of answered deliveries older than MPFEED_BODY_RETENTION_DAYS,
    the search keys of batches older than MPFEED_SEARCH_RETENTION_DAYS, and webhook messages sent or given up on
    more than MPFEED_WEBHOOK_RETENTION_DAYS ago. The results (state, answers, record refs, ids) stay. Returns
    (bodies dropped, keys deleted, messages deleted). Hourly (feeds.tasks), and the prune_sent command."""
    return Delivery.objects.release_old_bodies(now), SentKey.objects.prune(now), webhooks.prune(now)


def resume_stalled(now: datetime | None = None) -> list[int]:
    """Queue the reading of runs that a worker should pick up: queued runs whose task was lost, runs whose reader
    died (its lease ran out) or whose reading was never queued again, and finished runs that were given deliveries
    to replay. (Sending needs no queueing: senders take up every run with deliveries to send, waits included.)"""
    now = now or timezone.now()
    stale_queue = now - timedelta(seconds=settings.MPFEED_REQUEUE_AFTER)
    not_queued = Q(queued_at__isnull=True) | Q(queued_at__lt=stale_queue)
    runs = list(
        SyncRun.objects.filter(
            Q(status=SyncRun.Status.QUEUED, queued_at__lt=stale_queue)
            | Q(status=SyncRun.Status.QUEUED, queued_at__isnull=True, created_at__lt=stale_queue)
            | Q(status__in=SyncRun.STARTED_STATUSES, read_done=False, lease_until__lt=now)
            | Q(
                not_queued,
                status__in=SyncRun.STARTED_STATUSES,
                read_done=False,
                lease_until__isnull=True,
            )
        ).only("pk")
    )
    # Fully read and sent, but not ended (its sender was stopped or died between the last answer and the end).
    stranded = SyncRun.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now),
        Q(send_lease_until__isnull=True) | Q(send_lease_until__lt=now),
        status__in=SyncRun.STARTED_STATUSES,
        read_done=True,
    ).exclude(deliveries__state=Delivery.State.PENDING)
    for run in stranded.select_related("job", "workspace"):
        conclude_if_done(run)
    reopened = SyncRun.objects.filter(
        status__in=SyncRun.FINISHED_STATUSES, deliveries__state=Delivery.State.PENDING
    ).distinct()
    for run in reopened:
        if reopen_run(run):
            runs.append(run)
    for run in runs:
        enqueue_run(run)
    Sender.objects.filter(heartbeat_at__lt=now - timedelta(days=1)).delete()
    alerts.evaluate_all(now)  # deliveries failing for over an hour, recoveries between runs (never raises)
    return [run.pk for run in runs]
