"""A workspace's health: the one rule behind the staff home, the workspace page, the admin and the alerts.

What a workspace's health is, first match wins:

1. **blocked** (alert: credentials_rejected) — mParticle refused the workspace's credentials. Nothing is sent at all
   while they are refused, so a failed run elsewhere must not hide it.
2. **failing** (alert: run_failed) — the newest finished run of one of its jobs failed. Counted per job, so that one
   job succeeding neither hides another job's failure nor announces a recovery; a failed run put back to work (a
   replay) still counts as failed, and as the newest, until it finishes again.
3. **failing** (alert: deliveries_failing) — requests have been failing for over FAILING_FOR (they are retried).
4. **attention** — staff paused it, it waits for the client's credentials, or a run of it is blocked although its
   credentials are no longer refused (a connection test resumes it).
5. **new** — no run of it has finished yet (its first one may be under way).
6. **ok** — the newest finished run of every job that ran succeeded.

Every face shows this state and its reason, and an alert is sent exactly when it moves into or out of blocked or
failing (feeds.alerts), so the pages and the alerts cannot disagree. The credentials line follows the same facts:
rejected credentials are never called "received and verified".

`assess` works the health out for any number of workspaces in a few queries (the newest run of each workspace,
each job's newest finished and unfinished run, the deliveries failing for too long); the staff home adds its
figures (events delivered, per day) with two aggregate queries more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

from django.db.models import Count, F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from feeds.models import AlertEvent, Delivery, SyncJob, SyncRun, Workspace

DAYS = 30
FAILING_FOR = timedelta(hours=1)  # deliveries failing longer than this make the workspace failing
OK = "ok"
# Failing or blocked first, then those that need attention, then the rest.
RANK = {"blocked": 0, "failing": 0, "attention": 1, "ok": 2, "new": 3}
# What each cause shows as, and which alert it is (OK: none).
STATES = {
    AlertEvent.Kind.CREDENTIALS_REJECTED: ("blocked", AlertEvent.Kind.CREDENTIALS_REJECTED),
    AlertEvent.Kind.RUN_FAILED: ("failing", AlertEvent.Kind.RUN_FAILED),
    AlertEvent.Kind.DELIVERIES_FAILING: ("failing", AlertEvent.Kind.DELIVERIES_FAILING),
    "paused": ("attention", OK),
    "awaiting_credentials": ("attention", OK),
    "run_blocked": ("attention", OK),
    "new": ("new", OK),
    OK: ("ok", OK),
}


@dataclass(frozen=True)
class Credentials:
    """The credentials line of a workspace: a badge level ("ok", "warn", "bad") and what it says."""

    level: str
    label: str
    verified_at: datetime | None = None


@dataclass(frozen=True)
class WorkspaceHealth:
    """A workspace's health (see the module's docstring for the rule) and, for people, why."""

    workspace: Workspace
    cause: str  # a key of STATES
    reason: str
    run_id: int | None = None  # the run the reason is about, if any
    last_run: SyncRun | None = None  # the workspace's newest run, whatever its status (for display)

    @property
    def state(self) -> str:
        """What the pages show: blocked, failing, attention, new or ok."""
        return STATES[self.cause][0]

    @property
    def alert(self) -> str:
        """What the alerts announce: "ok" or one of AlertEvent.Kind except RECOVERED."""
        return STATES[self.cause][1]

    @property
    def level(self) -> str:
        """The badge's level: bad, warn or ok."""
        return {"blocked": "bad", "failing": "bad", "ok": "ok"}.get(self.state, "warn")

    @cached_property
    def credentials(self) -> Credentials:
        return credentials_state(self.workspace)


def credentials_state(workspace: Workspace) -> Credentials:
    """Refused credentials say so, whenever they were last verified: the workspace's status is what holds now."""
    if workspace.status == Workspace.Status.CREDENTIALS_REJECTED:
        return Credentials("bad", "Credentials rejected by mParticle")
    if workspace.has_credentials and workspace.credentials_verified_at:
        return Credentials("ok", "Credentials received and verified", workspace.credentials_verified_at)
    if workspace.has_credentials:
        return Credentials("warn", "Credentials stored, not verified yet")
    return Credentials("warn", "Waiting for the client's credentials")


def of(workspace: Workspace, now: datetime | None = None) -> WorkspaceHealth:
    """One workspace's health."""
    return assess([workspace], now)[workspace.pk]


def assess(workspaces: Iterable[Workspace], now: datetime | None = None) -> dict[int, WorkspaceHealth]:
    """The health of each workspace, by pk: three or four queries however many workspaces there are."""
    by_id = {w.pk: w for w in workspaces}
    if not by_id:
        return {}
    now = now or timezone.now()
    runs = _Runs(_runs(by_id))
    failing = _failing_deliveries(by_id, now)
    return {pk: _decide(w, runs, failing.get(pk)) for pk, w in by_id.items()}


# ------------------------------------------------------------------------------------------------ the rule


@dataclass(frozen=True)
class _Failing:
    count: int
    oldest: Delivery


def _decide(workspace: Workspace, runs: _Runs, failing: _Failing | None) -> WorkspaceHealth:
    pk = workspace.pk

    def health(cause: str, reason: str, run_id: int | None = None) -> WorkspaceHealth:
        return WorkspaceHealth(workspace, cause, reason, run_id, runs.newest.get(pk))

    blocked = runs.blocked.get(pk)
    if workspace.status == Workspace.Status.CREDENTIALS_REJECTED:
        reason = workspace.status_message or "mParticle refused the workspace's credentials."
        return health(AlertEvent.Kind.CREDENTIALS_REJECTED, reason, blocked.pk if blocked else None)
    failed = runs.failed.get(pk)
    if failed is not None:
        error = failed.error or "its failed requests are being replayed"
        return health(
            AlertEvent.Kind.RUN_FAILED, f"Run #{failed.pk} of job {failed.job.name} failed: {error}", failed.pk
        )
    if failing is not None:
        since = timezone.localtime(failing.oldest.first_failure_at)
        reason = (
            f"{failing.count} request(s) have been failing since {since:%Y-%m-%d %H:%M %Z} "
            f"(run #{failing.oldest.run_id}); last error: {failing.oldest.last_error or 'unknown'}. "
            "They are retried; no data is lost."
        )
        return health(AlertEvent.Kind.DELIVERIES_FAILING, reason, failing.oldest.run_id)
    if workspace.status == Workspace.Status.PAUSED:
        return health("paused", workspace.status_message or "Paused by staff: no run starts until it is resumed.")
    if workspace.status == Workspace.Status.AWAITING_CREDENTIALS:
        return health("awaiting_credentials", "Waiting for the client's credentials.")
    if blocked is not None:
        reason = f"Run #{blocked.pk} of job {blocked.job.name} is blocked: {blocked.error or 'no reason recorded'}"
        return health("run_blocked", f"{reason} Testing the credentials resumes it.", blocked.pk)
    working = runs.working.get(pk)
    if not runs.finished.get(pk):
        if working is not None:
            return health("new", f"Run #{working.pk} is under way; no run has finished yet.", working.pk)
        return health("new", "No run yet.")
    reason = "The newest finished run of every job succeeded."
    if working is not None:
        return health(OK, f"{reason} Run #{working.pk} is under way.", working.pk)
    return health(OK, reason)


# ----------------------------------------------------------------------------------------------- the facts


def _runs(by_id: dict) -> list[SyncRun]:
    """In one query: each workspace's newest run, and each job's newest finished run and unfinished run."""
    # A failed run put back to work (a replay) still counts as failed until it finishes again, and as the newest.
    finished = Q(status__in=SyncRun.FINISHED_STATUSES) | Q(reopened_from=SyncRun.Status.FAILED)
    newest_finished = (
        SyncRun.objects.filter(finished, job=OuterRef("pk"))
        .order_by(F("finished_at").desc(nulls_first=True), "-pk")
        .values("pk")[:1]
    )
    unfinished = SyncRun.objects.filter(job=OuterRef("pk"), status__in=SyncRun.ACTIVE_STATUSES).values("pk")[:1]
    newest = SyncRun.objects.filter(workspace=OuterRef("pk")).order_by("-created_at", "-pk").values("pk")[:1]
    jobs = SyncJob.objects.filter(workspace__in=by_id)
    return list(
        SyncRun.objects.filter(
            Q(pk__in=jobs.values(last=Subquery(newest_finished)))
            | Q(pk__in=jobs.values(active=Subquery(unfinished)))
            | Q(pk__in=Workspace.objects.filter(pk__in=by_id).values(newest=Subquery(newest)))
        )
        .select_related("job")
        .defer("mapping_rules", "source_config", "cursor", "cursor_before")
    )


class _Runs:
    """The runs `_runs` found, sorted out per workspace."""

    def __init__(self, rows: list[SyncRun]):
        self.newest: dict[int, SyncRun] = {}
        self.failed: dict[int, SyncRun] = {}  # the most recently finished of the jobs' failed newest finished runs
        self.finished: dict[int, bool] = {}
        self.blocked: dict[int, SyncRun] = {}
        self.working: dict[int, SyncRun] = {}
        last_by_job: dict[int, SyncRun] = {}
        for run in rows:
            _keep(self.newest, run.workspace_id, run, _created)
            if run.status in SyncRun.FINISHED_STATUSES or run.reopened_from == SyncRun.Status.FAILED:
                _keep(last_by_job, run.job_id, run, _finished)
            if run.status == SyncRun.Status.BLOCKED:
                _keep(self.blocked, run.workspace_id, run, _created)
            elif run.status in SyncRun.WORKING_STATUSES:
                _keep(self.working, run.workspace_id, run, _created)
        for run in last_by_job.values():
            self.finished[run.workspace_id] = True
            if run.status == SyncRun.Status.FAILED or run.reopened_from == SyncRun.Status.FAILED:
                _keep(self.failed, run.workspace_id, run, _finished)


def _keep(runs: dict[int, SyncRun], key: int, run: SyncRun, order) -> None:
    """runs[key] becomes `run` when it comes later by `order`."""
    mine = runs.get(key)
    if mine is None or order(run) > order(mine):
        runs[key] = run


def _created(run: SyncRun) -> tuple:
    return (run.created_at, run.pk)


def _finished(run: SyncRun) -> tuple:
    """Newest finished first; one being worked on again (no finish time) is the newest of all."""
    return (run.finished_at is None, run.finished_at or datetime.min.replace(tzinfo=UTC), run.pk)


def _failing_deliveries(by_id: dict, now: datetime) -> dict[int, _Failing]:
    """Requests still pending whose first failure is over FAILING_FOR old: how many, and the oldest, per workspace."""
    failing = Delivery.objects.to_send().filter(workspace__in=by_id, first_failure_at__lt=now - FAILING_FOR)
    counts = dict(failing.values("workspace_id").annotate(n=Count("pk")).order_by().values_list("workspace_id", "n"))
    if not counts:
        return {}
    oldest = failing.filter(workspace=OuterRef("pk")).order_by("first_failure_at", "pk").values("pk")[:1]
    rows = Delivery.objects.filter(pk__in=Workspace.objects.filter(pk__in=counts).values(oldest=Subquery(oldest))).only(
        "pk", "workspace_id", "run_id", "first_failure_at", "last_error"
    )
    return {d.workspace_id: _Failing(counts[d.workspace_id], d) for d in rows}


# ------------------------------------------------------------------------------------------- the staff home


@dataclass
class Overview:
    """A row of the staff home: the workspace, its health, and what it delivered lately."""

    workspace: Workspace
    health: WorkspaceHealth
    events_24h: int = 0
    daily: list[dict] = field(default_factory=list)  # [{"label": "2026-11-01", "value": n}] over DAYS days

    @property
    def state(self) -> str:
        return self.health.state

    @property
    def last_run(self) -> SyncRun | None:
        return self.health.last_run


def workspace_health(workspaces=None) -> list[Overview]:
    """Every workspace (or those given) with its health and figures, failing and blocked ones first."""
    workspaces = list(workspaces if workspaces is not None else Workspace.objects.all())
    now = timezone.now()
    today = timezone.localdate()
    start = today - timedelta(days=DAYS - 1)
    healths = assess(workspaces, now)
    by_id = {w.pk: Overview(w, healths[w.pk]) for w in workspaces}
    delivered = Delivery.objects.delivered().filter(workspace__in=by_id, finished_at__isnull=False)
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
    for overview in by_id.values():
        overview.daily = [
            {
                "label": str(start + timedelta(days=i)),
                "value": per_day.get((overview.workspace.pk, start + timedelta(days=i)), 0),
            }
            for i in range(DAYS)
        ]
    return sorted(by_id.values(), key=lambda o: (RANK[o.state], o.workspace.name.lower()))
