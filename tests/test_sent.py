"""What was sent: bodies kept for a retention period then dropped (results kept), and staff finding each batch
sent for a user by an identity or a source_message_id across runs — through the sandbox over real HTTP."""

from __future__ import annotations

import random
import re
from datetime import timedelta

import orjson
import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from feeds import sweeper, sync, tasks
from feeds.models import Delivery, RejectedRecord, SentKey, SyncRun
from feeds.mparticle.batch import search_keys
from tests.helpers import (
    MAPPING,
    FakeClock,
    make_job,
    make_mapping,
    make_staff,
    make_workspace,
    purchase_rows,
    run_job,
    write_csv,
)

pytestmark = pytest.mark.django_db

SEARCH = reverse("feeds:sent_search")
WITH_MPID = {**MAPPING, "mpid": {"field": "mpid", "type": "int"}}


def rows_with_mpid(n: int, users: int, start: int = 0) -> list[dict]:
    return [{**row, "mpid": str(9000 + int(row["user_id"][1:]))} for row in purchase_rows(n, users, start)]


def two_runs(sandbox, tmp_path):
    """Two runs of one job, both with records of the users u0..u2 (and their mpids)."""
    workspace = make_workspace(sandbox)
    path = write_csv(tmp_path / "orders.csv", rows_with_mpid(6, users=3))
    job = make_job(workspace, path, mapping=make_mapping(workspace, WITH_MPID))
    first = run_job(job)
    write_csv(path, rows_with_mpid(6, users=3, start=6))
    second = run_job(job)
    assert first.status == second.status == SyncRun.Status.SUCCEEDED, (first.error, second.error)
    return workspace, first, second


def found(value: str, workspace=None) -> list[tuple[int, int]]:
    rows = SentKey.objects.matching(value, workspace=workspace)
    return [(Delivery.objects.get(pk=r["delivery_id"]).run_id, r["batch"]) for r in rows]


# ------------------------------------------------------------------------------------------- the index


def test_search_keys_are_each_batchs_identities_and_ids_as_sent():
    body = orjson.dumps(
        [
            {
                "source_request_id": "r1",
                "environment": "development",
                "user_identities": {"email": "Ann@Example.com", "customer_id": "c1", "other": ""},
                "mpid": 8_000_000_000_000_000_001,
                "device_info": {"ios_advertising_id": "IDFA-1", "platform": "iOS"},
                "events": [{"event_type": "custom_event", "data": {"source_message_id": "m1"}}, {"data": {}}],
            },
            {"source_request_id": "r2", "user_identities": {"customer_id": "c2"}},
        ]
    )
    assert search_keys(body) == [
        [
            ("email", "Ann@Example.com"),
            ("customer_id", "c1"),
            ("mpid", "8000000000000000001"),
            ("ios_advertising_id", "IDFA-1"),
            ("source_request_id", "r1"),
            ("source_message_id", "m1"),
        ],
        [("customer_id", "c2"), ("source_request_id", "r2")],
    ]


def test_each_identity_kind_and_source_message_id_finds_the_batches_of_both_runs(sandbox, tmp_path):
    workspace, first, second = two_runs(sandbox, tmp_path)
    kept = {k.batch["user_identities"]["customer_id"]: k.batch for k in sandbox.kept()}
    assert len(sandbox.kept()) == 6  # three users, one batch each, in each run

    for value in ("user1@example.com", "u1", "9001"):  # e-mail, customer id, mpid — as they were sent
        hits = found(value)
        assert sorted(run for run, _ in hits) == [first.pk, second.pk], value
    assert {k.kind for k in SentKey.objects.filter(value="9001")} == {"mpid"}
    assert len(found("User1@Example.com")) == 2  # an e-mail address also matches in lower case (as the mapping sent it)
    assert found("U1") == []  # ids match exactly

    # An event's source_message_id finds its one batch; the batch's source_request_id too.
    batch = kept["u2"]
    message_id = batch["events"][0]["data"]["source_message_id"]
    hits = found(message_id)
    assert len(hits) == 1
    run_id, index = hits[0]
    delivery = SentKey.objects.get(value=message_id).delivery
    assert delivery.source_request_ids[index] == batch["source_request_id"]
    assert found(batch["source_request_id"]) == hits
    assert found("u9") == []

    # Filtered by workspace: another workspace's batches are not among them.
    other = make_workspace(sandbox, name="Other")
    assert found("u1", workspace=other) == [] and len(found("u1", workspace=workspace)) == 2


def test_a_split_delivery_s_batches_are_found_in_its_halves(sandbox, tmp_path):
    from tests.test_delivery import batch, fake_pacing, queued_run_with

    # Four batches of about 90 KB in one request: mParticle answers 413, the request is halved.
    workspace = make_workspace(sandbox)
    ids = [f"big{i}" for i in range(4)]
    run = queued_run_with(workspace, tmp_path, [batch(srid, events=22, padding=4000) for srid in ids], ids)
    parent = run.deliveries.get()
    SentKey.objects.bulk_create(
        SentKey(delivery=parent, workspace=workspace, batch=index, kind=kind, value=value)
        for index, pairs in enumerate(search_keys(parent.body()))
        for kind, value in pairs
    )

    run = sync.process_run(run.pk, pacing=fake_pacing(FakeClock()))

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    parts = list(run.deliveries.filter(parent=parent).order_by("sequence"))
    assert [p.source_request_ids for p in parts] == [ids[:2], ids[2:]]
    assert not SentKey.objects.filter(delivery=parent).exists()
    for part in parts:
        for index, srid in enumerate(part.source_request_ids):
            for value in (srid, f"user-{srid}", f"{srid}-0"):
                key = SentKey.objects.get(value=value)
                assert (key.delivery_id, key.batch) == (part.pk, index)
            assert part.batches()[index]["source_request_id"] == srid


# ------------------------------------------------------------------------------------------- retention


def age(run: SyncRun, days: float) -> None:
    """Make the run's deliveries answered, and their batches built, `days` ago."""
    when = timezone.now() - timedelta(days=days)
    Delivery.objects.filter(run=run).update(finished_at=when, created_at=when)
    SentKey.objects.filter(delivery__run=run).update(created_at=when)


def test_an_accepted_body_is_kept_for_the_period_then_dropped_with_the_results_kept(sandbox, tmp_path, settings):
    settings.MPFEED_BODY_RETENTION_DAYS = 7
    settings.MPFEED_SEARCH_RETENTION_DAYS = 7
    workspace, first, second = two_runs(sandbox, tmp_path)
    age(first, 8)
    age(second, 6)
    failed = second.deliveries.first()
    Delivery.objects.filter(pk=failed.pk).update(
        state=Delivery.State.FAILED, finished_at=timezone.now() - timedelta(days=30)
    )
    keys_of_failed = SentKey.objects.filter(delivery=failed).count()
    SentKey.objects.filter(delivery=failed).update(created_at=timezone.now() - timedelta(days=30))

    bodies, keys, _ = sweeper.prune_sent()

    assert bodies == first.deliveries.count() and keys > 0
    for delivery in first.deliveries.all():  # past the period: the body goes, every result stays
        assert delivery.payload is None and delivery.batches() is None
        assert delivery.state == Delivery.State.ACCEPTED and delivery.last_status == 202
        assert delivery.source_request_ids and delivery.record_refs and delivery.attempt_log.exists()
    assert not SentKey.objects.filter(delivery__run=first).exists()
    # Within the period: kept, searchable.
    assert all(d.payload is not None for d in second.deliveries.all())
    assert sorted(run for run, _ in found("u1")) == [second.pk]
    # A failed delivery keeps its body and its keys, however old: a replay resends it.
    failed.refresh_from_db()
    assert failed.payload is not None and SentKey.objects.filter(delivery=failed).count() == keys_of_failed
    assert sweeper.prune_sent() == (0, 0, 0)  # nothing more to do


def test_the_command_and_the_hourly_schedule_enforce_the_retention(sandbox, tmp_path, settings, capsys):
    workspace, first, second = two_runs(sandbox, tmp_path)
    age(first, 8)
    call_command("prune_sent")
    assert "Dropped 1 request body(ies) older than 7 day(s)," in capsys.readouterr().out
    assert not first.deliveries.filter(payload__isnull=False).exists()

    tasks.ensure_sweeper()
    schedule = Schedule.objects.get(name=tasks.PRUNER)
    assert schedule.func == tasks.PRUNE_SENT and schedule.schedule_type == Schedule.HOURLY and schedule.repeats == -1
    age(second, 8)
    assert tasks.prune_sent().startswith("dropped 1 body(ies)")
    assert not Delivery.objects.filter(payload__isnull=False).exists()


def test_a_retention_of_zero_drops_the_body_on_acceptance(sandbox, tmp_path, settings):
    settings.MPFEED_BODY_RETENTION_DAYS = 0
    run = run_job(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(3))))
    assert run.status == SyncRun.Status.SUCCEEDED
    assert all(d.state == Delivery.State.ACCEPTED and d.payload is None for d in run.deliveries.all())
    assert len(found("u1")) == 1  # still searchable, by its results


def test_replays_still_resend_the_stored_body_of_failed_deliveries(sandbox, tmp_path):
    run = run_job(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(3))))
    delivery = run.deliveries.get()
    stored = delivery.body()
    Delivery.objects.filter(pk=delivery.pk).update(state=Delivery.State.FAILED)
    age(run, 30)
    sweeper.prune_sent()
    assert sync.replay(Delivery.objects.filter(pk=delivery.pk))[0] == 1
    run = sync.run_inline(run.pk, sync.Pacing(sleep=FakeClock().sleep, clock=FakeClock().time, rand=random.Random(1)))
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.ACCEPTED and delivery.body() == stored
    assert [r.status for r in sandbox.requests_log()] == [202, 202]  # resent byte for byte


# ------------------------------------------------------------------------------------------- the page


def test_a_run_through_the_sandbox_is_found_with_its_answer_record_and_batch(client, sandbox, tmp_path):
    workspace, first, second = two_runs(sandbox, tmp_path)
    client.force_login(make_staff("viewer", "view_delivery"))
    response = client.get(SEARCH, {"q": "user2@example.com"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "2 batches found" in page
    for run in (first, second):
        assert reverse("feeds:run", args=[run.pk]) in page
    assert "HTTP 202" in page and "accepted" in page
    assert "orders.csv:4" in page  # u2's record of the first run (header on line 1)
    assert f"POST {sandbox.url}/v2/bulkevents" in page
    assert "&quot;user2@example.com&quot;" in page  # the batch as sent
    assert workspace.api_key not in page and "Basic " not in page

    # After the retention period: the results, not the body.
    age(first, 8)
    sweeper.prune_sent()
    age(second, 1)
    page = client.get(SEARCH, {"q": "9002"}).content.decode()
    assert "1 batch found" in page and "The body is no longer kept" not in page
    Delivery.objects.update(payload=None)
    page = client.get(SEARCH, {"q": "9002", "workspace": workspace.slug}).content.decode()
    assert "The body is no longer kept" in page and "HTTP 202" in page and "orders.csv:" in page


def test_the_page_says_when_nothing_is_found_and_pages_many_batches(client, sandbox, tmp_path, settings):
    settings.MPFEED_CHUNK_SIZE = 1
    settings.MPFEED_GROUP_WINDOW_RECORDS = 1  # one batch per record: 25 batches of the same user
    workspace = make_workspace(sandbox)
    run_job(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(25, users=1))))
    client.force_login(make_staff("viewer", "view_delivery"))
    page = client.get(SEARCH, {"q": "nobody@example.com"}).content.decode()
    assert "0 batches found" in page and "No batch holds this value" in page
    page = client.get(SEARCH, {"q": "u0"}).content.decode()
    assert "25 batches found" in page and "page 1 of 2" in page
    assert page.count("data-batch=") == 20
    second = client.get(SEARCH, {"q": "u0", "page": 2}).content.decode()
    assert second.count("data-batch=") == 5
    assert client.get(SEARCH, {"q": "u0", "workspace": "no-such"}).status_code == 200  # a form error, not a 500


def test_a_refused_batch_shows_mparticle_s_reason(client, sandbox, tmp_path):
    run = run_job(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(2))))
    delivery = run.deliveries.get()
    srid = delivery.source_request_ids[1]
    Delivery.objects.filter(pk=delivery.pk).update(state=Delivery.State.PARTIAL)
    RejectedRecord.objects.create(run=run, delivery=delivery, stage="server", ref="orders.csv:3", reason="bad event",
                                  source_request_id=srid)  # fmt: skip
    client.force_login(make_staff("viewer", "view_delivery"))
    page = client.get(SEARCH, {"q": "u1"}).content.decode()
    assert "refused by mParticle: bad event" in page
    page = client.get(SEARCH, {"q": "u0"}).content.decode()
    assert "refused by mParticle" not in page and ">accepted<" in page


def test_the_search_needs_the_permission_to_view_deliveries_and_is_linked(client, sandbox, tmp_path):
    workspace, first, _ = two_runs(sandbox, tmp_path)
    client.force_login(make_staff("runs-only", "view_syncrun", "view_workspace"))
    assert client.get(SEARCH, {"q": "u1"}).status_code == 403
    assert SEARCH not in client.get(reverse("feeds:home")).content.decode()
    client.force_login(make_staff("operator"))
    for url in (reverse("feeds:home"), reverse("feeds:workspace", args=[workspace.slug]),
                reverse("feeds:run", args=[first.pk])):  # fmt: skip
        assert SEARCH in client.get(url).content.decode(), url


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_staff_find_what_was_sent_in_a_browser(chromium, live_server, sandbox, tmp_path):
    from django.test import Client

    from tests.browser import Shots

    workspace, first, second = two_runs(sandbox, tmp_path)
    make_workspace(sandbox, name="Other client")
    client = Client()
    client.force_login(make_staff("sam"))
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    shots = Shots("sent-search")
    try:
        page.goto(live_server.url + reverse("feeds:home"))
        page.get_by_role("link", name="What was sent").click()
        page.get_by_label("Identity or id").fill("user1@example.com")
        page.get_by_role("button", name="Search").click()
        assert page.get_by_role("heading", name=re.compile("2 batches found")).is_visible()
        batches = page.locator("article[data-batch]")
        assert batches.count() == 2
        newest = batches.first
        assert newest.get_by_role("link", name=f"Run #{second.pk}").is_visible()
        assert "accepted" in newest.locator("[data-outcome]").inner_text()
        assert "orders.csv:" in newest.locator("[data-refs]").inner_text()
        newest.get_by_text("The batch as sent").click()
        sent = orjson.loads(newest.locator("pre[data-json]").inner_text())
        assert sent["user_identities"] == {"customer_id": "u1", "email": "user1@example.com"} and sent["mpid"] == 9001
        shots.take(page, "found-by-email")

        # By one event's source_message_id, in one workspace, from the workspace page's link.
        message_id = sent["events"][0]["data"]["source_message_id"]
        page.goto(live_server.url + reverse("feeds:workspace", args=[workspace.slug]))
        page.get_by_role("link", name="Find what was sent").click()
        assert page.get_by_label("Workspace").input_value() == workspace.slug
        page.get_by_label("Identity or id").fill(message_id)
        page.get_by_role("button", name="Search").click()
        assert page.get_by_role("heading", name=re.compile("1 batch found")).is_visible()
        page.get_by_label("Workspace").select_option(label="Other client")
        page.get_by_role("button", name="Search").click()
        assert page.get_by_text("No batch holds this value in this workspace").is_visible()
        shots.take(page, "nothing-in-another-workspace")

        # A phone shows it without scrolling sideways.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(live_server.url + SEARCH + "?q=u1")
        assert page.locator("article[data-batch]").count() == 2
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shots.take(page, "phone")
        assert violations == []
    finally:
        context.close()
