"""The staff run page: live progress, a chart over time, deliveries and rejected records, CSV exports, replays."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncMinute
from django.http import HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from feeds import actions, sync
from feeds.models import Delivery, DeliveryAttempt, RejectedRecord, SyncRun
from feeds.mparticle.client import Outcome
from feeds.notices import replay_message
from feeds.views.access import REPLAY, get_run, may, parse_id, staff_required

PER_PAGE = 50
# The chart keeps at most this many points: a long run's minutes are summed into wider buckets.
CHART_POINTS = 120
COUNTERS = [
    ("records_read", "Records read"),
    ("records_rejected", "Records rejected"),
    ("batches", "Batches"),
    ("events_per_batch", "Events per batch"),
    ("requests", "Requests"),
    ("events", "Events written"),
    ("events_accepted", "Events accepted"),
    ("throttled", "429 answers"),
    ("retries", "Retries"),
    ("seconds_waited", "Seconds waited"),
]
# What a delivery list shows; never the payload (up to 256 KB each).
DELIVERY_FIELDS = [
    "id", "run_id", "sequence", "path", "state", "batch_count", "event_count", "attempts", "throttled_count",
    "seconds_waited", "last_status", "last_error",
]  # fmt: skip


# ------------------------------------------------------------------------------------------------ live data


def _when(value) -> str | None:
    return timezone.localtime(value).isoformat() if value else None


def status_message(run: SyncRun) -> str:
    """Why the run is where it is, for people: the error, or until when it waits."""
    if run.status == SyncRun.Status.WAITING:
        if run.error:
            return run.error  # e.g. "Waiting for rate limit until 2026-11-02 10:15:00 UTC" (SyncRun.wait_until)
        if run.resume_at:
            return f"Waiting until {timezone.localtime(run.resume_at):%Y-%m-%d %H:%M:%S %Z}"
        return "Waiting"
    if run.status == SyncRun.Status.QUEUED and not run.error:
        return "Queued: waiting for a worker"
    return run.error


# What the chart counts per bucket of the run's attempts: (key, what it counts).
CHART_COUNTS = ("accepted", "throttled", "server_errors", "network_errors", "latency_sum", "answered")


def chart_series(run: SyncRun) -> tuple[list[dict], int]:
    """Per minute of the run's attempts (one query), oldest first: events accepted, 429 answers, 5xx answers,
    network failures (no answer: timeout, reset, refused) and the mean latency of the requests answered. Minutes
    without attempts are zeros; a run longer than CHART_POINTS minutes is shown in wider buckets, whose width in
    minutes is returned with the points."""
    answered = Q(status__isnull=False)
    rows = (
        DeliveryAttempt.objects.filter(delivery__run=run)
        .annotate(minute=TruncMinute("at"))
        .values("minute")
        .annotate(
            accepted=Sum("events_accepted"),
            throttled=Count("id", filter=Q(status=429)),
            server_errors=Count("id", filter=Q(status__gte=500, status__lt=600)),
            network_errors=Count("id", filter=Q(outcome=Outcome.NETWORK_ERROR.value)),
            latency_sum=Sum("latency_ms", filter=answered),
            answered=Count("id", filter=answered),
        )
        .order_by("minute")
    )
    # In UTC, so that bucket arithmetic never crosses a daylight saving change.
    per_minute = {row["minute"].astimezone(UTC): [row[key] or 0 for key in CHART_COUNTS] for row in rows}
    if not per_minute:
        return [], 1
    first, last = min(per_minute), max(per_minute)
    step = max(1, math.ceil((_minutes(last - first) + 1) / CHART_POINTS))
    buckets = [[0] * len(CHART_COUNTS) for _ in range(_minutes(last - first) // step + 1)]
    for minute, counts in per_minute.items():
        bucket = buckets[_minutes(minute - first) // step]
        for i, value in enumerate(counts):
            bucket[i] += value
    points = []
    for i, bucket in enumerate(buckets):
        at = timezone.localtime(first + timedelta(minutes=i * step))
        totals = dict(zip(CHART_COUNTS, bucket, strict=True))
        latency_sum, answers = totals.pop("latency_sum"), totals.pop("answered")
        latency = round(latency_sum / answers) if answers else None
        points.append({"label": f"{at:%H:%M}", "at": at.isoformat(), **totals, "latency_ms": latency})
    return points, step


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def reading_text(run: SyncRun) -> str:
    if run.read_done:
        return "source read to the end"
    if run.building:
        return f"sending each user's records together: {run.set_aside_records} record(s) still to build"
    return f"reading… {run.set_aside_records} record(s) set aside, to be sent together per user"


def live_status(run: SyncRun) -> dict:
    """What the page shows and status.json answers: status, counters, progress and the chart."""
    counters = {key: getattr(run, key) for key, _ in COUNTERS}
    counters["seconds_waited"] = round(run.seconds_waited, 1)
    counters["batches_rejected"] = run.batches_rejected
    chart, step = chart_series(run)
    return {
        "run": run.pk,
        "status": run.status,
        "status_label": run.get_status_display(),
        "live": run.status in SyncRun.WORKING_STATUSES,  # polled; a blocked run waits for people
        "finished": run.status in SyncRun.FINISHED_STATUSES,
        "message": status_message(run),
        "level": "error" if run.status in SyncRun.STOPPED_STATUSES else "warning",
        "resume_at": _when(run.resume_at) if run.status == SyncRun.Status.WAITING else None,
        "read_done": run.read_done,
        "reading_text": reading_text(run),
        "counters": counters,
        # Events accepted out of the events written into deliveries so far (a source's total is not known
        # until it has been read); None until there is an event.
        "progress": min(1.0, run.events_accepted / run.events) if run.events else None,
        "progress_text": f"{run.events_accepted} of {run.events} events written so far accepted",
        "created_at": _when(run.created_at),
        "started_at": _when(run.started_at),
        "finished_at": _when(run.finished_at),
        "chart": chart,
        "chart_step_minutes": step,
    }


# -------------------------------------------------------------------------------------------------- pages


def _lists(request, run: SyncRun) -> dict:
    """The deliveries (by state, a page of them) and rejected records (a page) — the page's lists, and the
    fragment the page fetches to keep them moving while the run works."""
    states = dict(Delivery.State.choices)
    state = request.GET.get("state") if request.GET.get("state") in states else None
    by_state = dict(run.deliveries.values_list("state").annotate(n=Count("id")).order_by())
    deliveries = run.deliveries.only(*DELIVERY_FIELDS).order_by("sequence")
    if state:
        deliveries = deliveries.filter(state=state)
    rejects = run.rejects.only("id", "run_id", "stage", "ref", "reason", "excerpt").order_by("id")
    # What the user may not see is not even read (the admin's rule: each model its view permission).
    if not may(request, "view_delivery"):
        deliveries = deliveries.none()
    if not may(request, "view_rejectedrecord"):
        rejects = rejects.none()
    delivery_page = Paginator(deliveries, PER_PAGE).get_page(request.GET.get("page"))
    reject_page = Paginator(rejects, PER_PAGE).get_page(request.GET.get("rpage"))
    return {
        "run": run,
        "states": [(value, label, by_state.get(value, 0)) for value, label in states.items()],
        "state": state,
        "deliveries_total": sum(by_state.values()),
        "deliveries": delivery_page,
        "deliveries_pager": _pager(request, delivery_page, "page", "deliveries", "Pages of deliveries"),
        "rejects": reject_page,
        "rejects_pager": _pager(request, reject_page, "rpage", "rejects", "Pages of rejected records"),
        "failed": by_state.get(Delivery.State.FAILED, 0),
        # A cancelled run is over for good: nothing of it is sent again.
        "can_replay": may(request, REPLAY) and run.status != SyncRun.Status.CANCELLED,
    }


@staff_required(read="view_syncrun")
def run(request, run_id):
    run = get_run(run_id)
    status = live_status(run)
    context = {
        **_lists(request, run),
        "status": status,
        "counters": [(key, label, status["counters"][key]) for key, label in COUNTERS],
        "percent": round((status["progress"] or 0) * 100),
        "can_cancel": run.is_active and may(request, "change_syncrun"),
        "can_pause": may(request, "change_workspace"),
    }
    return render(request, "feeds/run.html", context)


@staff_required(read="view_syncrun")
def run_lists(request, run_id):
    """The run page's two lists alone (the same query: state, page, rpage), which run.js swaps in as it polls."""
    return render(request, "feeds/run_lists.html", _lists(request, get_run(run_id)))


@staff_required(write="change_syncrun")
def run_cancel(request, run_id):
    """End the run for good: what is not sent yet is not sent (its deliveries are kept)."""
    done = actions.cancel_run(get_run(run_id), request.user)
    messages.add_message(request, done.level, done.text)
    return redirect("feeds:run", run_id=run_id)


def _pager(request, page, param: str, anchor: str, label: str) -> dict:
    """Links to the first, previous, next and last pages, keeping the other parameters (state, other table)."""

    def link(number: int) -> str:
        query = request.GET.copy()
        query[param] = number
        return f"?{query.urlencode()}#{anchor}"

    last = page.paginator.num_pages
    return {
        "page": page,
        "label": label,
        "first": link(1) if page.has_previous() else None,
        "previous": link(page.previous_page_number()) if page.has_previous() else None,
        "next": link(page.next_page_number()) if page.has_next() else None,
        "last": link(last) if page.has_next() else None,
    }


@staff_required(read="view_syncrun")
def run_status(request, run_id):
    return JsonResponse(live_status(get_run(run_id)))


@staff_required(write=REPLAY)
def run_replay(request, run_id):
    """Send the run's failed deliveries again (or one of them), their stored bodies byte for byte."""
    run = get_run(run_id)
    deliveries = run.deliveries.all()
    one = request.POST.get("delivery", "")
    if one:
        delivery_id = parse_id(one)
        if delivery_id is None:
            return HttpResponseBadRequest("delivery must be the id of one of this run's deliveries (a whole number).")
        deliveries = deliveries.filter(pk=delivery_id)
    count, queued = sync.replay(deliveries)
    level, text = replay_message(count, queued, nothing="this run has no failed deliveries.")
    messages.add_message(request, level, text)
    return redirect("feeds:run", run_id=run.pk)


# ---------------------------------------------------------------------------------------------- CSV exports


class _Echo:
    """A file-like object whose write() hands the line back, for csv.writer in a streamed response."""

    def write(self, value: str) -> str:
        return value


def _cell(value) -> object:
    # Text from a client's records or a server's answer must not run as a formula in a spreadsheet.
    # Also after leading spaces, and with the full-width signs some spreadsheets read as the same.
    if isinstance(value, str) and (
        value[:1] in ("\t", "\r", "\n") or value.lstrip(" ")[:1] in ("=", "+", "-", "@", "＝", "＋", "－", "＠")
    ):
        return "'" + value
    return value


def _stream_csv(filename: str, header: list[str], rows: Iterable[Iterable]) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([_cell(v) for v in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _csv_value(value) -> object:
    if isinstance(value, datetime):
        return _when(value)
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):  # source_request_ids
        return " ".join(map(str, value))
    return "" if value is None else value


@staff_required(read="view_delivery")
def deliveries_csv(request, run_id):
    run = get_run(run_id)
    deliveries = run.deliveries.order_by("sequence")
    if request.GET.get("state") in Delivery.State.values:
        deliveries = deliveries.filter(state=request.GET["state"])
    # (column, field): everything staff review about a request, never its body.
    columns = [
        ("sequence", "sequence"), ("parent_sequence", "parent__sequence"), ("path", "path"), ("state", "state"),
        ("batches", "batch_count"), ("events", "event_count"), ("attempts", "attempts"),
        ("throttled_429", "throttled_count"), ("seconds_waited", "seconds_waited"), ("last_status", "last_status"),
        ("last_error", "last_error"), ("source_request_ids", "source_request_ids"), ("created_at", "created_at"),
        ("sent_at", "sent_at"), ("finished_at", "finished_at"),
    ]  # fmt: skip
    rows = deliveries.values_list(*(field for _, field in columns)).iterator(chunk_size=1000)
    return _stream_csv(
        f"run-{run.pk}-deliveries.csv", [name for name, _ in columns], (map(_csv_value, row) for row in rows)
    )


@staff_required(read="view_rejectedrecord")
def rejects_csv(request, run_id):
    run = get_run(run_id)
    columns = [
        ("ref", "ref"), ("stage", "stage"), ("reason", "reason"), ("excerpt", "excerpt"),
        ("delivery_sequence", "delivery__sequence"), ("source_request_id", "source_request_id"),
        ("created_at", "created_at"),
    ]  # fmt: skip
    rejects = RejectedRecord.objects.filter(run=run).order_by("id")
    rows = rejects.values_list(*(field for _, field in columns)).iterator(chunk_size=1000)
    return _stream_csv(
        f"run-{run.pk}-rejected-records.csv", [name for name, _ in columns], (map(_csv_value, row) for row in rows)
    )
