"""The staff run page: header and counters, live status.json, the chart, deliveries and rejects (filtered,
paginated, constant queries), CSV exports, replays, and who may see any of it."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from feeds import sync
from feeds.models import Delivery, DeliveryAttempt, RejectedRecord, SyncRun
from feeds.views import runs
from sandbox.server import FaultConfig
from tests import browser
from tests.helpers import (
    SANDBOX_KEY,
    SANDBOX_SECRET,
    FakeClock,
    make_job,
    make_workspace,
    messages_of,
    purchase_rows,
    run_job,
    write_csv,
)

pytestmark = pytest.mark.django_db

ROWS = 5


def url(name: str, run: SyncRun) -> str:
    return reverse(f"feeds:{name}", args=[run.pk])


def page(client, address: str) -> str:
    """GET a page that must exist and must not show the workspace's credentials."""
    response = client.get(address)
    assert response.status_code == 200, address
    text = response.content.decode()
    assert SANDBOX_SECRET not in text and SANDBOX_KEY not in text, address
    return text


def csv_rows(response) -> list[dict]:
    assert response.status_code == 200
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment; filename=")
    text = b"".join(response.streaming_content).decode()
    assert SANDBOX_SECRET not in text and SANDBOX_KEY not in text
    return list(csv.DictReader(io.StringIO(text)))


# ------------------------------------------------------------------------------------------------ fixtures


def mixed_rows(good: int) -> list[dict]:
    """`good` valid records, each followed by one whose amount is not a number (rejected while mapping)."""
    rows = purchase_rows(2 * good)
    for bad in rows[1::2]:
        bad["amount"] = "ten"
    return rows


def mixed_run(sandbox, tmp_path, settings, good: int, name: str = "orders") -> SyncRun:
    """A finished run with `good` deliveries (one per chunk of two records) and `good` rejected records."""
    settings.MPFEED_CHUNK_SIZE = 2
    settings.MPFEED_GROUP_WINDOW_RECORDS = 1  # a delivery for each chunk's one good record
    path = write_csv(tmp_path / f"{name}.csv", mixed_rows(good))
    run = run_job(make_job(make_workspace(sandbox, name=name.title()), path, name=name))
    assert run.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS, run.error
    assert run.deliveries.count() == good and run.rejects.count() == good
    return run


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_run_page_moves_during_a_run(chromium, live_server, client, alice, sandbox, tmp_path, settings):
    """A real run against the sandbox, worked on a slice at a time while the page is open: its counters and its
    lists (deliveries, rejected records) move without a reload, and the chart with them."""
    settings.MPFEED_CHUNK_SIZE = 2
    settings.MPFEED_GROUP_WINDOW_RECORDS = 1  # each chunk: one delivery and one rejected record
    good = 6
    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", mixed_rows(good)), name="orders")
    run = sync.start_run(job)

    def work_until(deliveries: int) -> SyncRun:
        """Slices of the run's work (a worker's time slices, here), until it has this many deliveries."""
        while run.deliveries.count() < deliveries:
            worked = sync.process_run(run.pk, time_slice=0.001)
            assert worked is not None and worked.status == SyncRun.Status.QUEUED, worked and worked.status
        return SyncRun.objects.get(pk=run.pk)

    now = work_until(2)
    client.force_login(alice)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
          "url": live_server.url}]
    )  # fmt: skip
    browser_page = context.new_page()
    browser_page.goto(f"{live_server.url}{url('run', run)}")
    shots = browser.Shots("run-page-moving")
    assert browser_page.get_attribute("#run", "data-live") == "1"
    rows = "document.querySelectorAll('#deliveries tr[data-delivery]').length"
    rejects = "document.querySelectorAll('#rejects tbody tr').length"
    counter = "document.querySelector('[data-counter=\"{}\"]').textContent"
    assert browser_page.evaluate(rows) == now.deliveries.count()
    assert browser_page.evaluate(rejects) == now.rejects.count()
    shots.take(browser_page, "started")

    browser_page.evaluate("window.stillTheSamePage = true")
    for deliveries in (4, good):
        now = work_until(deliveries)
        expected = {
            rows: now.deliveries.count(),
            rejects: now.rejects.count(),
            counter.format("records_read"): str(now.records_read),
            counter.format("records_rejected"): str(now.records_rejected),
            counter.format("events_accepted"): str(now.events_accepted),
        }
        for expression, value in expected.items():
            browser.wait_js(browser_page, f"String({expression}) === {str(value)!r}", timeout=10_000)
        # The list's own count and its states move too, and the newest delivery is in the table.
        last = now.deliveries.order_by("-sequence").first()
        assert browser_page.locator(f'#deliveries tr[data-delivery="{last.sequence}"]').count() == 1
        assert f"{now.deliveries.count()} request" in browser_page.inner_text("#deliveries-h")
        assert browser_page.evaluate("window.stillTheSamePage") is True
        shots.take(browser_page, f"{deliveries}-deliveries")

    # A filter stays while the lists move: only accepted deliveries, as the page's query says.
    browser_page.goto(f"{live_server.url}{url('run', run)}?state=accepted")
    browser_page.evaluate("window.stillTheSamePage = true")
    Delivery.objects.filter(run=run, sequence=1).update(state=Delivery.State.FAILED)
    browser.wait_js(browser_page, f"{rows} === {good - 1}", timeout=10_000)
    assert browser_page.evaluate("window.stillTheSamePage") is True

    # The run ends: the page reloads once, with everything.
    Delivery.objects.filter(run=run, sequence=1).update(state=Delivery.State.ACCEPTED)
    ended = sync.run_inline(run.pk)
    assert ended is not None and ended.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS, ended and ended.error
    browser.wait_js(browser_page, "window.stillTheSamePage === undefined", timeout=10_000)
    browser_page.wait_for_load_state()
    assert browser_page.inner_text('[data-run="status"]') == "Succeeded with rejected records"
    assert browser_page.evaluate(rejects) == good
    shots.take(browser_page, "ended")
    context.close()


@pytest.fixture
def finished_run(sandbox, tmp_path, settings) -> SyncRun:
    return mixed_run(sandbox, tmp_path, settings, ROWS)


@pytest.fixture
def failed_run(sandbox, tmp_path, settings) -> SyncRun:
    """Every request answered 5xx and no retry horizon: the run's deliveries are parked as failed."""
    settings.MPFEED_RETRY_HORIZON = 0
    settings.MPFEED_CHUNK_SIZE = 2
    settings.MPFEED_GROUP_WINDOW_RECORDS = 2  # deliveries every 2 records
    sandbox.configure(faults=FaultConfig(error_rate=1.0))
    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(ROWS)), name="orders")
    run = run_job(job)
    assert run.status == SyncRun.Status.FAILED, run.error
    assert run.deliveries.failed().count() == 3
    return run


# ----------------------------------------------------------------------------------------------- the page


def test_the_page_shows_the_run_its_counters_and_tables(staff, finished_run):
    run = finished_run
    text = page(staff, url("run", run))
    assert f"Run #{run.pk}" in text and run.job.name in text and run.workspace.name in text
    assert 'class="badge succeeded_with_rejects"' in text and "Succeeded with rejected records" in text
    assert "source read to the end" in text
    assert f'data-counter="records_read">{2 * ROWS}<' in text
    assert f'data-counter="records_rejected">{ROWS}<' in text
    assert f'data-counter="events_accepted">{ROWS}<' in text
    assert f"{ROWS} of {ROWS} events written so far accepted" in text
    assert 'aria-valuenow="100"' in text and 'value="100"' in text
    # Every delivery, with a link to its admin page; every rejected record, with its reason.
    for delivery in run.deliveries.all():
        assert reverse("admin:feeds_delivery_change", args=[delivery.pk]) in text
    assert text.count('<tr data-delivery="') == ROWS
    assert text.count("&#x27;ten&#x27; is not a number") == ROWS
    assert "orders.csv:3" in text and "Mapping" in text
    # Nothing failed, so nothing to replay; the exports are linked.
    assert "Replay" not in text
    assert url("run_deliveries_csv", run) in text and url("run_rejects_csv", run) in text
    # The page embeds its live status for run.js, and a finished run does not poll.
    assert 'id="run-status"' in text and 'data-live="0"' in text


def test_a_waiting_run_shows_until_when_and_polls(staff, finished_run):
    run = finished_run
    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.RUNNING)  # sending, when a 429 came
    assert run.wait_until(timezone.now() + timedelta(minutes=5), "Waiting for rate limit")
    text = page(staff, url("run", run))
    assert "Waiting for rate limit until " in text and 'data-live="1"' in text
    assert 'class="badge waiting"' in text


def test_deliveries_filter_by_state(staff, finished_run):
    run = finished_run
    # One delivery failed, by hand: the filter shows it alone, and the counts per state.
    failed = run.deliveries.get(sequence=2)
    Delivery.objects.filter(pk=failed.pk).update(state=Delivery.State.FAILED)
    text = page(staff, url("run", run) + "?state=failed")
    assert text.count('<tr data-delivery="') == 1 and '<tr data-delivery="2">' in text
    assert "Failed (retryable) (1)" in text and "Accepted (4)" in text and f"All ({ROWS})" in text
    assert "?state=accepted#deliveries" in text
    text = page(staff, url("run", run) + "?state=accepted")
    assert text.count('<tr data-delivery="') == ROWS - 1 and '<tr data-delivery="2">' not in text
    assert "No delivery in this state." in page(staff, url("run", run) + "?state=split")
    # An unknown state shows everything.
    assert page(staff, url("run", run) + "?state=nonsense").count('<tr data-delivery="') == ROWS
    # The export follows the filter.
    rows = csv_rows(staff.get(url("run_deliveries_csv", run) + "?state=failed"))
    assert [r["sequence"] for r in rows] == ["2"]


@pytest.fixture
def big_run(sandbox, tmp_path, settings) -> SyncRun:
    return mixed_run(sandbox, tmp_path, settings, 60, name="big")


def test_deliveries_and_rejects_are_paginated(staff, big_run):
    run = big_run
    text = page(staff, url("run", run))
    assert text.count('<tr data-delivery="') == runs.PER_PAGE
    assert "page 1 of 2" in text and "?page=2#deliveries" in text and "?rpage=2#rejects" in text
    text = page(staff, url("run", run) + "?page=2")
    assert text.count('<tr data-delivery="') == 10 and '<tr data-delivery="60">' in text
    assert '<tr data-delivery="1">' not in text
    # The other table's page and the state filter are kept in the links.
    text = page(staff, url("run", run) + "?page=2&state=accepted&rpage=2")
    assert "big.csv:121" in text  # the last rejected record, on the second page of rejects
    assert "state=accepted" in text and "page=1" in text and "rpage=2" in text
    # A page out of range shows the last one.
    assert '<tr data-delivery="60">' in page(staff, url("run", run) + "?page=99")


def count_queries(client, address: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(address)
        if response.streaming:
            b"".join(response.streaming_content)
    assert response.status_code == 200
    return len(queries)


def test_queries_do_not_grow_with_deliveries(staff, sandbox, tmp_path, settings):
    small = mixed_run(sandbox, tmp_path, settings, 5, name="small")
    big = mixed_run(sandbox, tmp_path, settings, 60, name="big")
    for name in ["run", "run_status", "run_deliveries_csv", "run_rejects_csv"]:
        few, many = count_queries(staff, url(name, small)), count_queries(staff, url(name, big))
        assert few == many, name
        assert many <= 12, name


# ---------------------------------------------------------------------------------------------- status.json


def test_status_json_of_a_finished_run(staff, finished_run):
    run = finished_run
    data = staff.get(url("run_status", run)).json()
    assert data["run"] == run.pk
    assert data["status"] == "succeeded_with_rejects" and data["status_label"] == "Succeeded with rejected records"
    assert data["live"] is False and data["finished"] is True and data["read_done"] is True
    assert data["message"] == "" and data["resume_at"] is None
    assert data["progress"] == 1.0
    assert data["counters"] == {
        "records_read": 2 * ROWS,
        "records_rejected": ROWS,
        "batches": ROWS,
        "events_per_batch": 1.0,
        "requests": ROWS,
        "events": ROWS,
        "events_accepted": ROWS,
        "throttled": 0,
        "retries": 0,
        "seconds_waited": 0.0,
        "batches_rejected": 0,
    }
    assert data["started_at"] and data["finished_at"]
    assert sum(p["accepted"] for p in data["chart"]) == ROWS
    assert sum(p["throttled"] for p in data["chart"]) == 0
    assert data["chart_step_minutes"] == 1


def test_status_json_of_a_waiting_run(staff, finished_run):
    run = finished_run
    # Half-way and throttled, by hand: the worker gave the run back until the rate limit allows more.
    resume_at = timezone.now() + timedelta(minutes=3)
    SyncRun.objects.filter(pk=run.pk).update(
        status=SyncRun.Status.WAITING, resume_at=resume_at, read_done=False, finished_at=None, events=2 * ROWS,
        throttled=4, seconds_waited=12.345,
    )  # fmt: skip
    data = staff.get(url("run_status", run)).json()
    assert data["status"] == "waiting" and data["status_label"] == "Waiting"
    assert data["live"] is True and data["finished"] is False and data["read_done"] is False
    assert data["message"] == f"Waiting until {timezone.localtime(resume_at):%Y-%m-%d %H:%M:%S %Z}"
    assert data["resume_at"] == timezone.localtime(resume_at).isoformat()
    assert data["progress"] == 0.5 and data["progress_text"] == f"{ROWS} of {2 * ROWS} events written so far accepted"
    assert data["counters"]["throttled"] == 4 and data["counters"]["seconds_waited"] == 12.3
    assert data["finished_at"] is None
    # As the engine words it (SyncRun.wait_until).
    run.refresh_from_db()
    run.wait_until(resume_at, "Waiting for rate limit")
    data = staff.get(url("run_status", run)).json()
    assert data["message"].startswith("Waiting for rate limit until ")


def test_status_json_of_a_queued_run_has_no_progress_yet(staff, sandbox, tmp_path):
    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(ROWS)))
    run = sync.start_run(job)
    data = staff.get(url("run_status", run)).json()
    assert data["status"] == "queued" and data["live"] is True
    assert data["progress"] is None and data["chart"] == [] and data["started_at"] is None
    assert "Queued" in data["message"]
    text = page(staff, url("run", run))
    assert "No request sent yet." in text and "reading…" in text and "No delivery yet." in text


def test_the_chart_counts_accepted_events_and_429s_per_minute(staff, sandbox, tmp_path):
    clock = FakeClock()
    sandbox.configure(rate_limit=150)
    sandbox._clock = clock.monotonic  # the bucket refills with the fake clock
    sandbox.queue_faults(["429", "429"])  # the pace learns the 150 without a 429; these come anyway
    path = write_csv(tmp_path / "orders.csv", purchase_rows(300, users=300))
    run = run_job(make_job(make_workspace(sandbox), path), clock)
    assert run.status == SyncRun.Status.SUCCEEDED and run.throttled >= 2
    chart = staff.get(url("run_status", run)).json()["chart"]
    assert sum(p["accepted"] for p in chart) == run.events_accepted == 300
    assert sum(p["throttled"] for p in chart) == run.throttled


def test_a_long_run_is_charted_in_wider_buckets(finished_run):
    run = finished_run
    # Spread the attempts over five hours: at most CHART_POINTS buckets, nothing lost.
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(hours=5)
    attempts = list(DeliveryAttempt.objects.filter(delivery__run=run).order_by("id"))
    for i, attempt in enumerate(attempts):
        attempt.at = start + timedelta(minutes=75 * i)
    DeliveryAttempt.objects.bulk_update(attempts, ["at"])
    first = attempts[0].delivery
    DeliveryAttempt.objects.create(delivery=first, at=start + timedelta(seconds=30), outcome="throttled", status=429)
    points, step = runs.chart_series(run)
    assert step == 3 and len(points) <= runs.CHART_POINTS
    assert sum(p["accepted"] for p in points) == ROWS
    assert points[0]["throttled"] == 1 and points[0]["accepted"] == first.event_count
    assert points[0]["label"] == f"{timezone.localtime(start):%H:%M}"


# ------------------------------------------------------------------------------------------------- exports


def test_the_deliveries_csv_lists_every_request_without_bodies(staff, finished_run):
    run = finished_run
    rows = csv_rows(staff.get(url("run_deliveries_csv", run)))
    assert [r["sequence"] for r in rows] == [str(i) for i in range(1, ROWS + 1)]
    first = run.deliveries.get(sequence=1)
    assert rows[0] == {
        "sequence": "1",
        "parent_sequence": "",
        "path": first.path,
        "state": "accepted",
        "batches": "1",
        "events": "1",
        "attempts": "1",
        "throttled_429": "0",
        "seconds_waited": "0.0",
        "last_status": "202",
        "last_error": "",
        "source_request_ids": " ".join(first.source_request_ids),
        "created_at": timezone.localtime(first.created_at).isoformat(),
        "sent_at": timezone.localtime(first.sent_at).isoformat(),
        "finished_at": timezone.localtime(first.finished_at).isoformat(),
    }


def test_a_failed_deliverys_csv_row_has_its_error_but_not_its_body(staff, failed_run):
    rows = csv_rows(staff.get(url("run_deliveries_csv", failed_run)))
    assert {r["state"] for r in rows} == {"failed"}
    assert all(r["last_status"].startswith("5") and r["last_error"] for r in rows)
    body = failed_run.deliveries.first().body().decode()
    text = " ".join(str(r) for r in rows)
    assert "Purchase Completed" in body and "Purchase Completed" not in text and "sku" not in text.lower()


def test_the_rejects_csv_has_every_record_and_reason(staff, finished_run):
    run = finished_run
    rows = csv_rows(staff.get(url("run_rejects_csv", run)))
    assert len(rows) == ROWS
    assert [r["ref"] for r in rows] == [f"orders.csv:{2 * i + 3}" for i in range(ROWS)]
    assert {r["stage"] for r in rows} == {"mapping"}
    assert {r["reason"] for r in rows} == {"events[0].attributes.amount: 'ten' is not a number"}
    assert all("ten" in r["excerpt"] for r in rows)
    assert rows[0]["delivery_sequence"] == ""


def test_csv_cells_cannot_become_spreadsheet_formulas(staff, finished_run):
    RejectedRecord.objects.create(
        run=finished_run, stage=RejectedRecord.Stage.SOURCE, ref="=HYPERLINK(1)", reason="+1", excerpt="@x"
    )
    row = csv_rows(staff.get(url("run_rejects_csv", finished_run)))[-1]
    assert (row["ref"], row["reason"], row["excerpt"]) == ("'=HYPERLINK(1)", "'+1", "'@x")


# ------------------------------------------------------------------------------------------------- replays


def test_replay_sends_the_failed_deliveries_again_and_the_run_succeeds(staff, failed_run, sandbox, sync_q):
    run = failed_run
    text = page(staff, url("run", run))
    assert "Replay 3 failed deliveries" in text
    assert text.count('name="delivery"') == 3  # and one button per failed delivery
    sandbox.configure(faults=FaultConfig())  # healthy again
    response = staff.post(url("run_replay", run), follow=True)
    assert response.redirect_chain == [(url("run", run), 302)]
    assert messages_of(response) == [f"Replayed 3 delivery(ies); queued run(s) #{run.pk}."]
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert run.events_accepted == ROWS and not run.deliveries.failed().exists()
    ids = [e["data"]["source_message_id"] for e in sandbox.events()]
    assert len(ids) == len(set(ids)) == ROWS
    text = response.content.decode()
    assert "failed deliveries</button>" not in text and 'name="delivery"' not in text
    assert 'class="badge succeeded"' in text and f'data-counter="events_accepted">{ROWS}<' in text


def test_replay_of_one_delivery(staff, failed_run, sandbox, sync_q):
    run = failed_run
    sandbox.configure(faults=FaultConfig())
    one = run.deliveries.get(sequence=2)
    response = staff.post(url("run_replay", run), {"delivery": one.pk}, follow=True)
    assert messages_of(response) == [f"Replayed 1 delivery(ies); queued run(s) #{run.pk}."]
    one.refresh_from_db()
    assert one.state == Delivery.State.ACCEPTED
    assert run.deliveries.failed().count() == 2
    # Not a delivery of this run: nothing to replay. Not an id at all: a 400, never a 500.
    response = staff.post(url("run_replay", run), {"delivery": "999999"}, follow=True)
    assert messages_of(response) == ["Nothing to replay: this run has no failed deliveries."]
    for malformed in ["x", "²", "١٢", "99999999999999999999999", "-1", "1.0"]:
        response = staff.post(url("run_replay", run), {"delivery": malformed})
        assert response.status_code == 400, malformed
        assert "a whole number" in response.content.decode()
    assert run.deliveries.failed().count() == 2


def test_replay_with_nothing_failed_says_so(staff, finished_run):
    response = staff.post(url("run_replay", finished_run), follow=True)
    assert messages_of(response) == ["Nothing to replay: this run has no failed deliveries."]


def test_staff_who_may_not_change_deliveries_see_no_replay_and_cannot_post_one(client, charlie, failed_run):
    client.force_login(charlie)
    text = page(client, url("run", failed_run))
    assert "Replay" not in text
    assert client.post(url("run_replay", failed_run)).status_code == 403
    assert failed_run.deliveries.failed().count() == 3


def test_replay_is_post_only(staff, failed_run):
    assert staff.get(url("run_replay", failed_run)).status_code == 405


# ---------------------------------------------------------------------------------------------------- access

URLS = ["run", "run_status", "run_deliveries_csv", "run_rejects_csv", "run_replay"]


@pytest.mark.parametrize("name", URLS)
def test_anonymous_users_are_sent_to_log_in(client, finished_run, name):
    address = url(name, finished_run)
    response = client.post(address) if name == "run_replay" else client.get(address)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login") + "?next=")


@pytest.mark.parametrize("name", URLS)
def test_users_who_are_not_staff_get_403(client, bob, finished_run, name):
    client.force_login(bob)
    address = url(name, finished_run)
    response = client.post(address) if name == "run_replay" else client.get(address)
    assert response.status_code == 403
    assert not finished_run.deliveries.exclude(state=Delivery.State.ACCEPTED).exists()


@pytest.mark.parametrize("name", URLS)
def test_an_unknown_run_is_404(staff, name):
    address = reverse(f"feeds:{name}", args=[999999])
    response = staff.post(address) if name == "run_replay" else staff.get(address)
    assert response.status_code == 404


# ---------------------------------------------------------------------------------------------- in a browser


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_page_follows_a_live_run_and_reloads_when_it_ends(
    chromium, live_server, client, alice, sandbox, tmp_path, settings
):
    run = mixed_run(sandbox, tmp_path, settings, ROWS)
    SyncRun.objects.filter(pk=run.pk).update(
        status=SyncRun.Status.WAITING, resume_at=timezone.now() + timedelta(minutes=3), finished_at=None
    )
    client.force_login(alice)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
          "url": live_server.url}]
    )  # fmt: skip
    polls = []
    browser_page = context.new_page()
    browser_page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/status.json") else None)
    browser_page.goto(f"{live_server.url}{url('run', run)}")
    shots = browser.Shots("run-page")
    assert browser_page.inner_text('[data-run="status"]') == "Waiting"
    assert browser_page.inner_text('[data-run="message"]').startswith("Waiting until ")
    assert browser_page.locator("#run-chart rect").count() > 0  # drawn by run.js
    shots.take(browser_page, "waiting")

    # The worker goes on: the numbers change without a reload.
    browser_page.evaluate("window.stillTheSamePage = true")
    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.RUNNING, records_read=777, events=2 * ROWS)
    browser.wait_js(
        browser_page, "document.querySelector('[data-counter=\"records_read\"]').textContent === '777'", timeout=10_000
    )
    assert browser_page.inner_text('[data-run="status"]') == "Running"
    assert browser_page.is_hidden('[data-run="message"]')
    assert browser_page.get_attribute('[data-run="progress"]', "aria-valuenow") == "50"
    assert browser_page.evaluate("window.stillTheSamePage") is True
    shots.take(browser_page, "running")

    # The run ends: polling stops and the page reloads once.
    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.SUCCEEDED, finished_at=timezone.now())
    browser.wait_js(browser_page, "window.stillTheSamePage === undefined", timeout=10_000)
    browser_page.wait_for_load_state()
    assert browser_page.inner_text('[data-run="status"]') == "Succeeded"
    assert browser_page.get_attribute("#run", "data-live") == "0"
    seen = len(polls)
    browser_page.wait_for_timeout(2_500)
    assert len(polls) == seen
    shots.take(browser_page, "ended")
    context.close()
