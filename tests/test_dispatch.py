"""The sender (feeds.dispatch.Dispatcher) stepping runs in the test's thread (no pool, so that it shares the
test's database transaction) against the sandbox over HTTP: turns between workspaces, its share of the runs,
leases lost and runs given back, failures. Real threads and processes are in tests/test_fleet.py."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from feeds import sweeper, sync
from feeds.dispatch import Dispatcher
from feeds.models import Delivery, Sender, SyncRun
from feeds.sending import Lane
from tests.helpers import (
    SANDBOX_KEY,
    SANDBOX_SECRET,
    FakeClock,
    dispatch,
    make_job,
    make_workspace,
    purchase_rows,
    write_csv,
)

pytestmark = pytest.mark.django_db


def read(job) -> SyncRun:
    """Start a run and read it into deliveries, as its task does in a cluster; a sender sends them."""
    run = sync.start_run(job)
    assert sync.read_run(run.pk) is sync.Reading.DONE
    run.refresh_from_db()
    return run


def test_a_sender_sends_for_several_workspaces_and_ends_their_runs(sandbox, tmp_path, settings):
    settings.MPFEED_CHUNK_SIZE = 50
    settings.MPFEED_GROUP_WINDOW_RECORDS = 50  # deliveries every 50 records
    runs = []
    for n in range(3):
        workspace = make_workspace(sandbox, name=f"Client {n}")
        runs.append(read(make_job(workspace, write_csv(tmp_path / f"c{n}.csv", purchase_rows(120, start=n * 120)))))
    assert all(run.status == SyncRun.Status.RUNNING and run.read_done for run in runs)
    sender = dispatch(*runs)
    assert sorted(sender.runs_seen) == sorted(run.pk for run in runs)
    assert all(run.status == SyncRun.Status.SUCCEEDED and run.events_accepted == 120 for run in runs)
    assert sender.requests == sum(run.deliveries.count() for run in runs)
    ids = [e["data"]["source_message_id"] for e in sandbox.events()]
    assert len(ids) == len(set(ids)) == 360
    assert Sender.objects.get(pk=sender.sender.pk).stopped_at is not None


def test_workspaces_take_turns(sandbox, tmp_path, settings):
    # A run of 20 requests and one of 2, both due all the time: the small one's go out among the first, not after.
    settings.MPFEED_PACING = False
    settings.MPFEED_CHUNK_SIZE = 10
    settings.MPFEED_GROUP_WINDOW_RECORDS = 10  # deliveries every 10 records
    big = read(make_job(make_workspace(sandbox, name="Big"), write_csv(tmp_path / "big.csv", purchase_rows(200))))
    small_ws = make_workspace(sandbox, name="Small")
    small = read(make_job(small_ws, write_csv(tmp_path / "small.csv", purchase_rows(20, start=1000))))
    small_ids = {i for d in small.deliveries.all() for i in d.source_request_ids}
    dispatch(big, small, poll=0)
    order = [k.source_request_id for k in sandbox.kept()]
    positions = [i for i, srid in enumerate(order) if srid in small_ids]
    assert len(positions) == 20 and max(positions) < 60  # its 20 batches within the first requests, not the last
    assert big.status == small.status == SyncRun.Status.SUCCEEDED


def test_a_full_sender_gives_back_the_run_it_held_longest_when_others_wait(sandbox, tmp_path, settings):
    settings.MPFEED_PACING = False
    settings.MPFEED_CHUNK_SIZE = 10
    settings.MPFEED_GROUP_WINDOW_RECORDS = 10  # deliveries every 10 records
    first = read(make_job(make_workspace(sandbox, name="First"), write_csv(tmp_path / "a.csv", purchase_rows(100))))
    second = read(make_job(make_workspace(sandbox, name="Second"), write_csv(tmp_path / "b.csv", purchase_rows(30))))
    sender = dispatch(first, second, max_lanes=1, turn_seconds=0, poll=0)
    # One run at a time, but turns: the second was taken up before the first was done, and back again.
    assert sender.runs_seen[:2] == [first.pk, second.pk] and sender.runs_seen.count(first.pk) >= 2
    assert first.status == second.status == SyncRun.Status.SUCCEEDED


def test_a_run_taken_over_by_another_sender_is_let_go(sandbox, tmp_path):
    run = read(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(10))))
    clock = FakeClock()
    sender = Dispatcher(threads=0, poll=0.01, pacing=sync.Pacing(sleep=clock.sleep, clock=clock.time),
                        only={run.pk})  # fmt: skip
    sender.sender = Sender.objects.create(host="here", pid=1)
    sender._poll()
    assert list(sender.slots) == [run.pk]
    other = Sender.objects.create(host="there", pid=2)
    SyncRun.objects.filter(pk=run.pk).update(sender=other)  # this one stalled; its lease ran out; the other took it
    sender._poll()
    assert sender.slots == {}
    assert SyncRun.objects.get(pk=run.pk).sender == other  # and nothing was given back on the other's behalf


def test_a_waiting_run_is_taken_up_by_any_sender_once_its_wait_is_over(sandbox, tmp_path):
    run = read(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(10))))
    run.wait_until(timezone.now() + timedelta(minutes=5), "Waiting for rate limit")
    assert dispatch(run).requests == 0 and run.status == SyncRun.Status.WAITING
    SyncRun.objects.filter(pk=run.pk).update(resume_at=timezone.now() - timedelta(seconds=1))
    assert dispatch(run).requests == 1
    assert run.status == SyncRun.Status.SUCCEEDED and run.error == ""


def test_a_paused_workspace_blocks_its_runs_and_a_running_one_stops(sandbox, tmp_path, settings):
    settings.MPFEED_CHUNK_SIZE = 10
    settings.MPFEED_GROUP_WINDOW_RECORDS = 10  # deliveries every 10 records
    workspace = make_workspace(sandbox)
    run = read(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(50))))
    clock = FakeClock()
    sender = Dispatcher(threads=0, poll=0.01, pacing=sync.Pacing(sleep=clock.sleep, clock=clock.time),
                        only={run.pk})  # fmt: skip
    sender.sender = Sender.objects.create(host="here", pid=1)
    sender._poll()
    sender._step_here()  # one request
    workspace.status = workspace.Status.PAUSED
    workspace.save(update_fields=["status"])
    sender._poll()
    run.refresh_from_db()
    assert run.status == SyncRun.Status.BLOCKED and run.error == sync.PAUSED and sender.slots == {}
    assert 1 <= len(sandbox.requests_log()) < run.deliveries.count()


def test_a_step_that_keeps_failing_ends_the_run_failed_with_its_deliveries_kept(sandbox, tmp_path, monkeypatch):
    run = read(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(10))))

    def broken(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Lane, "step", broken)
    monkeypatch.setattr("feeds.dispatch.COOLDOWN_SECONDS", 0.0)
    sender = dispatch(run)
    assert sender.runs_seen == [run.pk] * 5
    assert run.status == SyncRun.Status.FAILED and run.error.startswith("Internal error while sending")
    [delivery] = run.deliveries.all()
    assert delivery.state == Delivery.State.FAILED and delivery.payload is not None  # replayable


def test_a_cycle_that_fails_does_not_stop_the_sender(sandbox, tmp_path, monkeypatch):
    run = read(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(10))))
    real_poll = Dispatcher._poll
    calls = []

    def flaky(self):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real_poll(self)

    monkeypatch.setattr(Dispatcher, "_poll", flaky)
    monkeypatch.setattr("feeds.dispatch.CYCLE_RETRY_SECONDS", 0.01)
    dispatch(run)
    assert len(calls) > 1 and run.status == SyncRun.Status.SUCCEEDED


def test_runs_are_shared_among_live_senders(sandbox, tmp_path):
    runs = [
        read(make_job(make_workspace(sandbox, name=f"C{n}"), write_csv(tmp_path / f"{n}.csv", purchase_rows(5))))
        for n in range(6)
    ]
    Sender.objects.create(host="other", pid=9)  # alive: it takes its half
    Sender.objects.create(host="dead", pid=8, heartbeat_at=timezone.now() - timedelta(seconds=30))  # does not count
    clock = FakeClock()
    sender = Dispatcher(threads=0, poll=0.01, pacing=sync.Pacing(sleep=clock.sleep, clock=clock.time,
                        rand=random.Random(1)))  # fmt: skip
    sender.sender = Sender.objects.create(host="here", pid=1)
    sender._poll()
    assert len(sender.slots) == 3
    assert {r.pk for r in runs} >= set(sender.slots)


def test_a_refusal_of_credentials_replaced_meanwhile_does_not_block_the_run(sandbox, tmp_path, monkeypatch):
    from feeds.models import Workspace
    from feeds.mparticle.client import EventsClient

    workspace = make_workspace(sandbox)
    run = read(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(10))))
    workspace.set_credentials("test-feed-key", "an-old-secret-the-client-revoked")
    run.refresh_from_db()
    real_post = EventsClient.post
    calls = []

    def post(self, path, body):
        calls.append(self.api_secret)
        if len(calls) == 1:  # while the request is out, the client hands over new (right) credentials
            Workspace.objects.get(pk=workspace.pk).set_credentials(SANDBOX_KEY, SANDBOX_SECRET)
        return real_post(self, path, body)

    monkeypatch.setattr(EventsClient, "post", post)
    dispatch(run)
    workspace.refresh_from_db()
    assert [s == "an-old-secret-the-client-revoked" for s in calls] == [True, False]
    assert run.status == SyncRun.Status.SUCCEEDED and workspace.status == Workspace.Status.ACTIVE
    assert [r.status for r in sandbox.requests_log()] == [403, 202]


def test_a_reader_that_was_replaced_stops_without_writing_and_keeps_off_the_others_lease(sandbox, tmp_path, settings):
    from django.db.models import F

    from feeds.reading import Reader

    settings.MPFEED_CHUNK_SIZE = 10
    settings.MPFEED_GROUP_WINDOW_RECORDS = 10  # deliveries every 10 records
    run = sync.start_run(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(30))))
    real_persist = Reader.set_aside
    calls = []

    def persist(self, chunk, lease_seconds):
        calls.append(1)
        if len(calls) == 2:  # this reader stalled past its lease; another one took the run and read a chunk
            SyncRun.objects.filter(pk=self.run.pk).update(
                chunks=F("chunks") + 1, lease_until=timezone.now() + timedelta(minutes=1)
            )
        return real_persist(self, chunk, lease_seconds)

    import feeds.reading

    feeds.reading.Reader.set_aside = persist
    try:
        assert sync.read_run(run.pk) is sync.Reading.STOPPED
    finally:
        feeds.reading.Reader.set_aside = real_persist
    run.refresh_from_db()
    assert run.deliveries.count() == 1 and run.records_read == 10  # its second chunk was not written
    assert run.lease_until is not None and run.lease_until > timezone.now()  # the other reader's, left alone


def test_the_sweeper_ends_a_run_fully_sent_whose_sender_stopped_before_ending_it(sandbox, tmp_path):
    run = read(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(10))))
    Delivery.objects.filter(run=run).update(state=Delivery.State.ACCEPTED, payload=None)
    SyncRun.objects.filter(pk=run.pk).update(events_accepted=10)
    assert sweeper.resume_stalled() == []
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED and run.finished_at is not None
