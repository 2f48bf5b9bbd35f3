"""Workspace health at a glance, for the staff home: a few aggregate queries for every workspace at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from feeds.models import Delivery, SyncRun, Workspace

DAYS = 30
# Failing or blocked first, then those that need attention, then the rest.
RANK = {"failing": 0, "blocked": 0, "attention": 1, "ok": 2, "new": 3}


@dataclass
class Health:
    workspace: Workspace
    last_run: SyncRun | None = None
    events_24h: int = 0
    daily: list[dict] = field(default_factory=list)  # [{"label": "2026-11-01", "value": n}] over DAYS days

    @property
    def state(self) -> str:
        ws = self.workspace
        if ws.status == Workspace.Status.CREDENTIALS_REJECTED or (self.last_run and self.last_run.status == "blocked"):
            return "blocked"
        if self.last_run and self.last_run.status == SyncRun.Status.FAILED:
            return "failing"
        if ws.status in (Workspace.Status.AWAITING_CREDENTIALS, Workspace.Status.PAUSED):
            return "attention"
        if self.last_run is None:
            return "new"
        return "ok"


def workspace_health(workspaces=None) -> list[Health]:
    workspaces = list(workspaces if workspaces is not None else Workspace.objects.all())
    now = timezone.now()
    today = timezone.localdate()
    start = today - timedelta(days=DAYS - 1)
    by_id = {w.pk: Health(w) for w in workspaces}
    # The newest run of each workspace: one query with a subquery per workspace, then the runs themselves.
    newest = SyncRun.objects.filter(workspace=OuterRef("pk")).order_by("-created_at").values("pk")[:1]
    run_ids = Workspace.objects.filter(pk__in=by_id).annotate(run_id=Subquery(newest)).values_list("run_id", flat=True)
    for run in SyncRun.objects.filter(pk__in=[r for r in run_ids if r]).select_related("job"):
        by_id[run.workspace_id].last_run = run
    delivered = Delivery.objects.filter(
        workspace__in=by_id, state__in=[Delivery.State.ACCEPTED, Delivery.State.PARTIAL], finished_at__isnull=False
    )
    for row in (
        delivered.filter(finished_at__gte=now - timedelta(hours=24))
        .values("workspace_id")
        .annotate(n=Sum("event_count"))
    ):
        by_id[row["workspace_id"]].events_24h = row["n"] or 0
    per_day: dict[tuple[int, date], int] = {}
    for row in (
        delivered.filter(finished_at__date__gte=start)
        .annotate(day=TruncDate("finished_at"))
        .values("workspace_id", "day")
        .annotate(n=Sum("event_count"))
    ):
        per_day[(row["workspace_id"], row["day"])] = row["n"] or 0
    for health in by_id.values():
        health.daily = [
            {
                "label": str(start + timedelta(days=i)),
                "value": per_day.get((health.workspace.pk, start + timedelta(days=i)), 0),
            }
            for i in range(DAYS)
        ]
    return sorted(by_id.values(), key=lambda h: (RANK[h.state], h.workspace.name.lower()))
