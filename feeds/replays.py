"""Replays: failed deliveries sent again, their stored bodies byte for byte, by their runs put back in the queue."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from feeds.models import Delivery, SyncRun, Workspace
from feeds.queueing import enqueue_run, reopen_run


def replay(deliveries) -> tuple[int, list[int]]:
    """Send failed deliveries again — their stored bodies, byte for byte, so a replay cannot duplicate.
    Returns (deliveries replayed, runs queued)."""
    # Not a cancelled run's: staff ended it for good, and a replay would send its pending deliveries too.
    failed = deliveries.filter(state=Delivery.State.FAILED, payload__isnull=False).exclude(
        run__status=SyncRun.Status.CANCELLED
    )
    ids = list(failed.values_list("pk", flat=True))
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
