"""One pipeline: a preview shows what a run of the same records does — the same batches on the same endpoints, the
same refusals with the same reasons — because the engine and every preview run feeds.pipeline."""

from __future__ import annotations

import copy

import orjson
import pytest
from django.urls import reverse

from feeds import pipeline
from feeds.mapping import compile_mapping
from feeds.models import RejectedRecord, SyncRun
from feeds.mparticle import schema
from feeds.mparticle.batch import set_aside_form
from feeds.preview import preview_job
from feeds.sources import Item
from tests.helpers import make_job, make_mapping, make_workspace, run_job, write_csv
from tests.test_delivery import TIMED_MAPPING, TWO_EVENT_MAPPING, timed_rows, two_event_rows

pytestmark = pytest.mark.django_db

TOO_RECENT = "historical data must be at least 72 hours old; this event is newer"


def without_ids(batch: dict) -> dict:
    """A batch less its source_request_id (a run's depend on the run and slice, a preview's are placeholders)."""
    return {k: v for k, v in batch.items() if k != "source_request_id"}


def previewed(preview) -> dict[str, list[dict]]:
    return {path: [without_ids(b) for b in batches] for path, batches in preview.by_endpoint()}


def sent(sandbox) -> dict[str, list[dict]]:
    """What the sandbox received on each endpoint, in the order it came."""
    out: dict[str, list[dict]] = {}
    for kept in sandbox.kept():
        out.setdefault(kept.path.removeprefix("/v2"), []).append(without_ids(kept.batch))
    return out


def refused(run: SyncRun) -> list[tuple[str, str]]:
    return list(RejectedRecord.objects.filter(run=run).order_by("pk").values_list("ref", "reason"))


def test_a_preview_of_a_historical_job_refuses_a_too_recent_record_with_the_runs_reason(tmp_path):
    workspace = make_workspace()
    rows = timed_rows([10, 0.5, None])  # old enough, 12 hours old, no timestamp
    path = write_csv(tmp_path / "orders.csv", rows)
    job = make_job(workspace, path, make_mapping(workspace, TIMED_MAPPING), endpoint_mode="historical")

    preview = preview_job(job)

    assert [(r["ref"], r["reason"]) for r in preview.rejected] == [
        ("orders.csv:3", TOO_RECENT),
        ("orders.csv:4", "historical data needs a timestamp on every event (timestamp_unixtime_ms)"),
    ]
    assert preview.rejected[0]["excerpt"]  # the record, as the run's rejected record keeps it
    assert preview.endpoints == [schema.HISTORICAL_PATH]
    assert [b["user_identities"]["customer_id"] for b in preview.batches] == ["u0"]


@pytest.mark.parametrize("mode", ["historical", "auto", "realtime"])
def test_a_preview_and_a_run_of_the_same_records_agree(sandbox, tmp_path, mode):
    workspace = make_workspace(sandbox)
    rows = timed_rows([10, 100, 0.5, None, 45, 2.9]) + [dict(timed_rows([40])[0], user_id="u0", id="o9")]
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", rows), make_mapping(workspace, TIMED_MAPPING))
    job.endpoint_mode = mode
    job.save()

    preview = preview_job(job)
    run = run_job(job)

    assert run.status in (SyncRun.Status.SUCCEEDED, SyncRun.Status.SUCCEEDED_WITH_REJECTS), run.error
    assert previewed(preview) == sent(sandbox)
    assert [(r["ref"], r["reason"]) for r in preview.rejected] == refused(run)
    assert preview.records == run.records_read


def test_a_preview_of_an_auto_job_shows_which_events_go_to_the_historical_endpoint(sandbox, tmp_path):
    workspace = make_workspace(sandbox)
    path = write_csv(tmp_path / "visits.csv", two_event_rows())
    job = make_job(workspace, path, make_mapping(workspace, TWO_EVENT_MAPPING), endpoint_mode="auto")

    preview = preview_job(job)

    names = {
        path: sorted((b["user_identities"]["customer_id"], [e["data"]["event_name"] for e in b["events"]]) for b in bs)
        for path, bs in preview.by_endpoint()
    }
    assert names == {
        schema.HISTORICAL_PATH: [("mixed", ["First"]), ("old", ["First", "Second"])],
        schema.BULK_PATH: [("mixed", ["Second"]), ("recent", ["First", "Second"])],
    }
    run_job(job)
    assert previewed(preview) == sent(sandbox)


def test_the_job_preview_page_and_the_mapping_editor_show_the_historical_endpoint(staff, tmp_path):
    workspace = make_workspace()
    mapping = make_mapping(workspace, TIMED_MAPPING)
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", timed_rows([10, 0.5])), mapping)
    job.endpoint_mode = "historical"
    job.save()

    page = staff.get(reverse("feeds:job_preview", args=[workspace.slug, job.pk])).content.decode()
    assert f"Batches to {schema.HISTORICAL_PATH} (1)" in page and TOO_RECENT in page

    body = {"document": TIMED_MAPPING, "job": job.pk}
    url = reverse("feeds:mapping_preview", args=[workspace.slug])
    result = staff.post(url, orjson.dumps(body), content_type="application/json").json()
    assert result["endpoints"] == [schema.HISTORICAL_PATH]
    assert result["batches_text"].startswith(f"// to {schema.HISTORICAL_PATH} (1 batch(es))\n")
    assert [r["reason"] for r in result["rejected"]] == [TOO_RECENT]


@pytest.mark.parametrize("codegen", [True, False])
def test_set_aside_sends_a_record_whole_in_real_time_exactly_while_route_would(codegen):
    """The converter sets a record aside itself only while `route` would send it whole to the real-time
    endpoint: an event exactly 30 days old still goes there, one a millisecond older goes to the historical
    endpoint (with the profile in real time), and the rows are those of routing the converted record."""
    converter = compile_mapping(TIMED_MAPPING, id_salt="w", codegen=codegen)
    ts = 1_790_000_000_000
    record = {"id": "o1", "user_id": "u1", "email": "u1@example.com", "plan": "pro", "ts": str(ts), "sku": "A"}
    items = [Item("orders.csv:2", dict(record)), Item("orders.csv:3", {**record, "id": "o2", "ts": ""})]
    converted = converter.convert(record, "orders.csv:2")

    def routed(mode: str, now_ms: int) -> list:
        return [
            (path, *set_aside_form(part), part.ref, len(part.events))
            for path, part in pipeline.route(copy.deepcopy(converted), mode, now_ms)
        ]

    for mode, now_ms, paths in [
        ("auto", ts + schema.REALTIME_MAX_AGE_MS, [schema.BULK_PATH]),
        ("auto", ts + schema.REALTIME_MAX_AGE_MS + 1, [schema.HISTORICAL_PATH, schema.BULK_PATH]),
        ("realtime", ts + 10 * schema.REALTIME_MAX_AGE_MS, [schema.BULK_PATH]),
        ("historical", ts + schema.REALTIME_MAX_AGE_MS, [schema.HISTORICAL_PATH]),
    ]:
        rows, refusals = pipeline.set_aside(converter, items, mode, now_ms)
        first = [r for r in rows if r[2] == 1]
        assert [r[0] for r in first] == paths, (mode, now_ms)
        assert [(r[0], r[1], r[4], r[3], r[5]) for r in first] == routed(mode, now_ms)
        if mode == "historical":  # the record without a time cannot go there
            assert [r.reason for r in refusals] == [
                "historical data needs a timestamp on every event (timestamp_unixtime_ms)"
            ]
        else:
            assert not refusals and [r[0] for r in rows if r[2] == 2] == [schema.BULK_PATH]
