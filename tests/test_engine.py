"""The sync engine against the sandbox Events API over real HTTP."""

from __future__ import annotations

import orjson
import pytest

from feeds import sync
from feeds.models import Delivery, DeliveryAttempt, RejectedRecord, SyncRun, Workspace
from sandbox.server import FaultConfig
from tests.helpers import FakeClock, make_job, make_workspace, purchase_rows, run_job, write_csv

pytestmark = pytest.mark.django_db


def message_ids(sandbox) -> list[str]:
    return [e["data"]["source_message_id"] for e in sandbox.events()]


def test_every_record_arrives_once_grouped_per_user_across_the_run(sandbox, tmp_path, settings):
    settings.MPFEED_CHUNK_SIZE = 40  # read in three chunks; the users' records are set aside across them
    path = write_csv(tmp_path / "orders.csv", purchase_rows(100, users=10))
    run = run_job(make_job(make_workspace(sandbox), path))
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert run.records_read == 100
    assert run.events == run.events_accepted == 100
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == 100
    # Each of the 10 users' 10 records in one batch: 10 batches, not 100 (nor 30, one per user and chunk).
    assert run.batches == 10 and len(sandbox.kept()) == 10
    users = [k.batch["user_identities"]["customer_id"] for k in sandbox.kept()]
    assert sorted(users) == [f"u{i}" for i in range(10)]
    assert all(len(k.batch["events"]) == 10 for k in sandbox.kept())
    assert sandbox.duplicates() == []
    assert all(d.state == Delivery.State.ACCEPTED and d.payload is not None for d in run.deliveries.all())
    assert sandbox.kept()[0].batch["environment"] == "development"
    assert not run.set_aside.exists() and run.windows == 1


def test_a_bounded_window_builds_what_it_holds_before_reading_on(sandbox, tmp_path, settings):
    settings.MPFEED_CHUNK_SIZE = 40
    settings.MPFEED_GROUP_WINDOW_RECORDS = 40  # built every 40 records set aside
    path = write_csv(tmp_path / "orders.csv", purchase_rows(100, users=10))
    run = run_job(make_job(make_workspace(sandbox), path))
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    # 3 windows (40, 40, 20), each holding every one of the 10 users once: 30 batches.
    assert run.batches == 30 and run.windows == 3
    assert len(set(message_ids(sandbox))) == 100


def test_it_waits_out_a_429_with_retry_after_and_the_data_arrives_once(sandbox, tmp_path):
    clock = FakeClock()
    sandbox.configure(rate_limit=150, faults=FaultConfig(retry_after=2))
    sandbox._clock = clock.monotonic  # the bucket refills with the fake clock
    # The pace reads the 150 batches/s from the first answer and causes no 429: a hiccup brings some anyway.
    sandbox.queue_faults(["429", "429", "429"])
    path = write_csv(tmp_path / "orders.csv", purchase_rows(300, users=300))
    run = run_job(make_job(make_workspace(sandbox), path), clock)
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert run.throttled >= 3
    throttled = [r for r in sandbox.requests_log() if r.status == 429]
    assert len(throttled) == run.throttled
    # Every wait after a 429 is at least what Retry-After asked for.
    attempts = DeliveryAttempt.objects.filter(status=429)
    assert attempts.count() == len(throttled)
    assert all(a.retry_after >= 1 and a.waited >= a.retry_after for a in attempts)
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == 300
    assert Delivery.objects.filter(throttled_count__gt=0).exists()


def test_a_429_without_retry_after_backs_off(sandbox, tmp_path):
    clock = FakeClock()
    sandbox.configure(rate_limit=150, send_retry_after=False, faults=FaultConfig(retry_after=None))
    sandbox._clock = clock.monotonic
    sandbox.queue_faults(["429", "429"])
    path = write_csv(tmp_path / "orders.csv", purchase_rows(300, users=300))
    run = run_job(make_job(make_workspace(sandbox), path), clock)
    assert run.status == SyncRun.Status.SUCCEEDED
    assert run.throttled >= 1 and clock.waits
    assert len(set(message_ids(sandbox))) == 300


def test_503s_are_retried(sandbox, tmp_path):
    sandbox.queue_faults(["503", "502", "drop"])
    path = write_csv(tmp_path / "orders.csv", purchase_rows(20))
    run = run_job(make_job(make_workspace(sandbox), path))
    assert run.status == SyncRun.Status.SUCCEEDED
    assert run.retries == 3
    [delivery] = run.deliveries.all()
    assert delivery.attempts == 4
    assert len(set(message_ids(sandbox))) == 20


def test_random_faults_lose_nothing(sandbox, tmp_path, settings):
    settings.MPFEED_CHUNK_SIZE = 50
    settings.MPFEED_GROUP_WINDOW_RECORDS = 50  # deliveries every 50 records
    sandbox.configure(faults=FaultConfig(seed=3, throttle_rate=0.3, error_rate=0.1, drop_rate=0.05, retry_after=1))
    path = write_csv(tmp_path / "orders.csv", purchase_rows(400, users=150))
    run = run_job(make_job(make_workspace(sandbox), path))
    assert run.status == SyncRun.Status.SUCCEEDED
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == 400


def test_bad_records_are_rejected_with_reasons_and_the_rest_arrive(sandbox, tmp_path):
    rows = purchase_rows(10)
    rows[2]["user_id"] = rows[2]["email"] = ""
    rows[5]["amount"] = "ten"
    rows[7]["ts"] = "not a date"
    path = write_csv(tmp_path / "orders.csv", rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write("r99,too,few\n")
    run = run_job(make_job(make_workspace(sandbox), path))
    assert run.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS
    assert run.records_read == 11 and run.records_rejected == 4
    reasons = dict(RejectedRecord.objects.filter(run=run).values_list("ref", "reason"))
    assert reasons == {
        "orders.csv:4": "no identity: every mapped identity field is missing or empty (email, user_id); the record's fields are id, user_id, email, plan, first_name, ts, sku, "
        "amount",
        "orders.csv:7": "events[0].attributes.amount: 'ten' is not a number",
        "orders.csv:9": reasons["orders.csv:9"],
        "orders.csv:12": "the row has 3 fields, the header has 8",
    }
    assert reasons["orders.csv:9"].startswith("events[0].timestamp: 'not a date' is not a time")
    assert len(set(message_ids(sandbox))) == 7


def test_rejected_credentials_block_the_run_and_keep_the_deliveries(sandbox, tmp_path):
    workspace = make_workspace(sandbox)
    path = write_csv(tmp_path / "orders.csv", purchase_rows(5))
    job = make_job(workspace, path)
    workspace.set_credentials("test-feed-key", "wrong-secret")
    run = run_job(job)
    assert run.status == SyncRun.Status.BLOCKED
    assert "403" in run.error
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.CREDENTIALS_REJECTED
    [delivery] = run.deliveries.all()
    assert delivery.state == Delivery.State.PENDING and delivery.payload is not None
    assert sandbox.events() == []


def test_a_batch_refused_inside_a_202_is_rejected_and_the_rest_accepted(sandbox, tmp_path):
    workspace = make_workspace(sandbox)
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(3)))
    run = sync.start_run(job)
    good = {
        "source_request_id": "g1",
        "environment": "development",
        "user_identities": {"customer_id": "a"},
        "events": [{"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}],
    }
    bad = {**good, "source_request_id": "b1", "events": [{"event_type": "not_a_type", "data": {}}]}
    body = orjson.dumps([good, bad])
    Delivery.objects.create(
        run=run,
        workspace=workspace,
        sequence=1,
        payload=Delivery.compress(body),
        payload_bytes=len(body),
        batch_count=2,
        event_count=2,
        source_request_ids=["g1", "b1"],
        record_refs=[["orders.csv:2"], ["orders.csv:3"]],
        batch_events=[1, 1],
    )
    run.read_done = True
    run.save()
    run = sync.process_run(run.pk)
    delivery = Delivery.objects.get(run=run, sequence=1)
    assert delivery.state == Delivery.State.PARTIAL
    [reject] = RejectedRecord.objects.filter(run=run)
    assert reject.ref == "orders.csv:3" and reject.stage == RejectedRecord.Stage.SERVER
    assert "Path '[1]'" in reject.reason and reject.source_request_id == "b1"
    assert [k.source_request_id for k in sandbox.kept()] == ["g1"]
    assert run.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS
    # The answer's accepted share is on its attempt, so the run page's chart counts it.
    from feeds.views.runs import chart_series

    assert delivery.attempt_log.get().events_accepted == 1 == run.events_accepted
    assert sum(point["accepted"] for point in chart_series(run)[0]) == 1


def test_only_one_unfinished_run_per_job(sandbox, tmp_path):
    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(3)))
    sync.start_run(job)
    with pytest.raises(sync.AlreadyRunning):
        sync.start_run(job)


def test_a_missing_file_fails_the_run_with_a_clear_error(sandbox, tmp_path):
    job = make_job(make_workspace(sandbox), tmp_path / "gone.csv")
    run = run_job(job)
    assert run.status == SyncRun.Status.FAILED
    assert run.error == f"the file {tmp_path / 'gone.csv'} does not exist"


def test_working_inline_on_a_run_that_is_gone_says_so(sandbox, tmp_path):
    # process_run answers None for a run deleted meanwhile; run_inline used to fail on it (found by mypy).
    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(1)))
    run = sync.start_run(job)
    run_id = run.pk
    run.delete()
    assert sync.run_inline(run_id) is None


def test_the_task_takes_only_the_run_id(sandbox, tmp_path, monkeypatch):
    from django_q.conf import Conf
    from django_q.models import Task

    monkeypatch.setattr(Conf, "SYNC", True)
    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(5)))
    run = sync.start_run(job)
    sync.enqueue_run(run)
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED
    assert sync.run_inline(run.pk).status == SyncRun.Status.SUCCEEDED  # safe to run twice
    assert len(sandbox.events()) == 5
    [task] = Task.objects.all()
    assert task.func == "feeds.tasks.process_run" and task.args == (run.pk,) and task.kwargs == {}
