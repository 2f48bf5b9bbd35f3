"""What operators watch: metrics in Prometheus's text format, and whether the system's parts are alive.

Every figure comes from a few aggregate queries served by indexes (deliveries by workspace and state, the oldest
pending delivery of each workspace), from the pace rows (the learned limit, 429s) and from the senders'
heartbeats (requests in flight), so that a scrape every 15 seconds costs little however many rows there are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Count, Min, Sum
from django.utils import timezone

from feeds import tasks
from feeds.models import Delivery, Sender, SyncRun, Workspace, WorkspacePace

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: object) -> str:
    # https://prometheus.io/docs/instrumenting/exposition_formats/ : backslash, double quote and line feed escaped.
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return repr(float(value)) if isinstance(value, float) else str(int(value))


@dataclass
class Metric:
    name: str
    kind: str  # gauge or counter
    help: str
    samples: list[tuple[dict[str, object], float]] = field(default_factory=list)

    def add(self, value: float, **labels: object) -> None:
        self.samples.append((labels, value))

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            yield f"{self.name}{{{text}}} {_number(value)}" if text else f"{self.name} {_number(value)}"


def metrics() -> list[Metric]:
    now = timezone.now()
    slugs = dict(Workspace.objects.values_list("pk", "slug"))

    deliveries = Metric("mpfeed_deliveries", "gauge", "Deliveries (HTTP requests of up to 100 batches) by state.")
    for row in Delivery.objects.values("workspace_id", "state").annotate(n=Count("pk")).order_by():
        deliveries.add(row["n"], workspace=slugs.get(row["workspace_id"], row["workspace_id"]), state=row["state"])

    oldest = Metric(
        "mpfeed_oldest_pending_delivery_seconds", "gauge", "Age of each workspace's oldest delivery still to send."
    )
    for row in (
        Delivery.objects.to_send().values("workspace_id").annotate(first=Min("created_at")).order_by("workspace_id")
    ):
        oldest.add(round((now - row["first"]).total_seconds(), 3), workspace=slugs.get(row["workspace_id"]))

    rejected = Metric(
        "mpfeed_records_rejected_total", "counter", "Source records refused (reading, mapping, mParticle)."
    )
    for row in SyncRun.objects.values("workspace_id").annotate(n=Sum("records_rejected")).order_by("workspace_id"):
        rejected.add(row["n"] or 0, workspace=slugs.get(row["workspace_id"]))

    runs = Metric("mpfeed_runs", "gauge", "Runs not finished, by status.")
    for row in SyncRun.objects.active().values("status").annotate(n=Count("pk")).order_by("status"):
        runs.add(row["n"], status=row["status"])

    answered = Metric("mpfeed_requests_total", "counter", "Answers from the Events API, per workspace.")
    throttled = Metric("mpfeed_throttled_total", "counter", "429 answers from the Events API, per workspace.")
    pace = Metric("mpfeed_pace_batches_per_second", "gauge", "The pace each workspace is sent at now.")
    limit = Metric("mpfeed_learned_limit_batches_per_second", "gauge", "The limit learned from mParticle's answers.")
    budget = Metric("mpfeed_budget_batches_per_second", "gauge", "The budget configured for each workspace.")
    for workspace in Workspace.objects.only("slug", "rate_limit"):
        budget.add(workspace.rate_limit, workspace=workspace.slug)
    for paced in WorkspacePace.objects.values("workspace_id", "rate", "limit", "requests_total", "throttled_total"):
        slug = slugs.get(paced["workspace_id"])
        answered.add(paced["requests_total"], workspace=slug)
        throttled.add(paced["throttled_total"], workspace=slug)
        pace.add(round(paced["rate"], 3), workspace=slug)
        limit.add(round(paced["limit"], 3), workspace=slug)

    alive = list(Sender.objects.alive(now))
    senders = Metric("mpfeed_senders_alive", "gauge", "Sending processes that beat in the last 30 seconds.")
    senders.add(len(alive))
    in_flight = Metric("mpfeed_requests_in_flight", "gauge", "Requests waiting for an answer, per sending process.")
    lanes = Metric("mpfeed_sender_runs", "gauge", "Runs each sending process is sending for.")
    for sender in alive:
        in_flight.add(sender.in_flight, sender=str(sender))
        lanes.add(sender.lanes, sender=str(sender))
    return [deliveries, oldest, runs, rejected, answered, throttled, pace, limit, budget, senders, in_flight, lanes]


def render(families: list[Metric]) -> str:
    return "\n".join(line for family in families for line in family.render()) + "\n"


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def system_health() -> dict[str, Check]:
    """The database, the task broker, and the clusters (their senders' heartbeats, or django-q2's own stats)."""
    checks: dict[str, Check] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = Check(True, connection.vendor)
    except Exception as e:  # noqa: BLE001 (reported, not raised: this is the health page)
        checks["database"] = Check(False, type(e).__name__)
        return checks
    checks["broker"] = Check(*tasks.broker_health())
    senders = Sender.objects.alive().count()
    clusters = 0
    try:
        clusters = tasks.clusters_reporting()
    except Exception:  # noqa: BLE001 (the ORM broker keeps stats in a per-process cache: none to see)
        log.debug("no django-q2 cluster stats", exc_info=True)
    checks["cluster"] = Check(
        senders > 0 or clusters > 0, f"{senders} sending process(es) beating, {clusters} cluster(s) reporting"
    )
    return checks
