"""What was sent: staff search by a user's identity (e-mail, customer id, mpid, …) or an event's
source_message_id across runs and workspaces, and see each batch sent for them — its run, endpoint, answer, the
records it came from and, while the body is kept, the batch itself."""

from __future__ import annotations

import orjson
from django.conf import settings
from django.core.paginator import Paginator
from django.shortcuts import render

from feeds.forms import SentSearchForm
from feeds.models import Delivery, RejectedRecord, SentKey
from feeds.views.access import staff_required

PER_PAGE = 20


@staff_required(read="view_delivery")
def sent_search(request):
    form = SentSearchForm(request.GET or None)
    page = results = None
    query = ""
    if form.is_valid() and form.cleaned_data["q"]:
        query = form.cleaned_data["q"]
        found = SentKey.objects.matching(query, workspace=form.cleaned_data["workspace"])
        page = Paginator(found, PER_PAGE).get_page(request.GET.get("page"))
        results = _results(list(page.object_list), query)
    context = {
        "form": form,
        "query": query,
        "page": page,
        "results": results,
        "body_days": settings.MPFEED_BODY_RETENTION_DAYS,
        "search_days": settings.MPFEED_SEARCH_RETENTION_DAYS,
    }
    return render(request, "feeds/sent_search.html", context)


def _results(found: list[dict], query: str) -> list[dict]:
    """Each batch found, with its delivery, run, answer and records: a few queries for the whole page."""
    ids = {row["delivery_id"] for row in found}
    deliveries = Delivery.objects.select_related("run__job", "workspace").in_bulk(ids)
    matched: dict[tuple[int, int], list[str]] = {}
    for delivery_id, batch, kind in SentKey.objects.filter(
        delivery_id__in=ids, value__in=SentKey.candidates(query)
    ).values_list("delivery_id", "batch", "kind"):
        matched.setdefault((delivery_id, batch), []).append(kind)
    refused = dict(
        RejectedRecord.objects.filter(delivery_id__in=ids, stage=RejectedRecord.Stage.SERVER).values_list(
            "source_request_id", "reason"
        )
    )
    bodies: dict[int, list | None] = {}
    results = []
    for row in found:
        delivery = deliveries.get(row["delivery_id"])
        if delivery is None:  # pruned meanwhile
            continue
        index = row["batch"]
        if delivery.pk not in bodies:
            bodies[delivery.pk] = delivery.batches() if delivery.payload is not None else None
        batches = bodies[delivery.pk]
        srids = delivery.source_request_ids
        srid = srids[index] if index < len(srids) else ""
        results.append(
            {
                "delivery": delivery,
                "run": delivery.run,
                "batch": index,
                "matched": matched.get((delivery.pk, index), []),
                "source_request_id": srid,
                "refs": delivery.record_refs[index] if index < len(delivery.record_refs) else [],
                "events": delivery.batch_events[index] if index < len(delivery.batch_events) else 0,
                "outcome": delivery.batch_outcome(srid, refused),
                "endpoint": delivery.endpoint(),
                "json": _pretty(batches[index]) if batches is not None and index < len(batches) else None,
            }
        )
    return results


def _pretty(batch: dict) -> str:
    return orjson.dumps(batch, option=orjson.OPT_INDENT_2).decode()
