"""Each answer of the Events API and what the engine does about it (the table in feeds/sending.py), against
the sandbox over real HTTP: splits, blocked credentials, long waits, failures and replays, crashes, endpoints."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import orjson
import pytest
import requests
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ, Task

from feeds import sweeper, sync
from feeds.models import Delivery, DeliveryAttempt, RejectedRecord, SyncRun, Workspace
from feeds.mparticle import schema
from feeds.mparticle.client import Answer, EventsClient, Outcome
from feeds.pacing import Pacing
from feeds.sending import Lane
from sandbox.server import FaultConfig
from tests.helpers import (
    MAPPING,
    SANDBOX_KEY,
    SANDBOX_SECRET,
    FakeClock,
    dispatch,
    make_job,
    make_mapping,
    make_workspace,
    purchase_rows,
    run_job,
    write_csv,
)

pytestmark = pytest.mark.django_db

DAY_MS = 24 * 3600 * 1000


def fake_pacing(clock: FakeClock) -> Pacing:
    return Pacing(sleep=clock.sleep, clock=clock.time, rand=random.Random(7))


def message_ids(sandbox) -> list[str]:
    return [e["data"]["source_message_id"] for e in sandbox.events()]


def kept_ids(sandbox, path_suffix: str = "bulkevents") -> list[str]:
    """source_request_ids the sandbox kept from the engine (not from connection tests, which go to /events)."""
    return [k.source_request_id for k in sandbox.kept() if k.path.endswith(path_suffix)]


def sent_ids(run: SyncRun) -> list[str]:
    """Every batch id the run's deliveries hold, splits counted once (through their parts)."""
    return [i for d in run.deliveries.exclude(state=Delivery.State.SPLIT) for i in d.source_request_ids]


def batch(srid: str, *, events: int = 1, padding: int = 0) -> dict:
    return {
        "source_request_id": srid,
        "environment": "development",
        "user_identities": {"customer_id": f"user-{srid}"},
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "Order",
                    "custom_event_type": "transaction",
                    "source_message_id": f"{srid}-{n}",
                    "custom_attributes": {"note": "x" * padding} if padding else {},
                },
            }
            for n in range(events)
        ],
    }


def queued_run_with(workspace, tmp_path, items: list, ids: list[str]) -> SyncRun:
    """A run whose source is already read and whose one delivery holds `items`, as stored by the engine."""
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(1)))
    run = sync.start_run(job)
    body = b"[" + b",".join(orjson.dumps(item) for item in items) + b"]"
    Delivery.objects.create(
        run=run,
        workspace=workspace,
        sequence=1,
        payload=Delivery.compress(body),
        payload_bytes=len(body),
        batch_count=len(items),
        event_count=len(items),
        source_request_ids=ids,
        record_refs=[[f"orders.csv:{10 + 2 * i}", f"orders.csv:{11 + 2 * i}"] for i in range(len(items))],
        batch_events=[1] * len(items),
    )
    run.read_done = True
    run.save()
    return run


class WorkerDied(BaseException):
    """A crash that no `except Exception` catches: the process is gone, the run stays RUNNING on its lease."""


def expire_lease(run: SyncRun) -> None:
    """The worker that held the run is gone: its leases, reading and sending, run out."""
    past = timezone.now() - timedelta(seconds=1)
    SyncRun.objects.filter(pk=run.pk).update(lease_until=past, send_lease_until=past)


# --------------------------------------------------------------------------------------------- 400 and 413


def test_a_400_is_bisected_until_the_bad_batches_are_isolated(sandbox, tmp_path):
    # The sandbox answers 400 for the whole request when an element of the array is not an object (a
    # malformed request, not a bad batch inside a 202): halving must isolate those two and deliver the rest.
    workspace = make_workspace(sandbox)
    ids = [f"b{i}" for i in range(7)]
    items = [batch(srid) for srid in ids]
    items[2], items[5] = "not a batch", 42
    run = queued_run_with(workspace, tmp_path, items, ids)

    run = sync.process_run(run.pk, pacing=fake_pacing(FakeClock()))

    assert run.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS, run.error
    parent = run.deliveries.get(sequence=1)
    assert parent.state == Delivery.State.SPLIT and parent.last_status == 400 and parent.payload is None
    leaves = run.deliveries.exclude(state=Delivery.State.SPLIT)
    assert sorted(i for d in leaves for i in d.source_request_ids) == sorted(ids)
    rejected = leaves.filter(state=Delivery.State.REJECTED)
    assert sorted(d.source_request_ids[0] for d in rejected) == ["b2", "b5"]
    assert all(d.batch_count == 1 and d.last_status == 400 for d in rejected)
    assert set(leaves.exclude(state=Delivery.State.REJECTED).values_list("state", flat=True)) == {"accepted"}
    rejects = RejectedRecord.objects.filter(run=run).order_by("ref")
    assert [(r.ref, r.source_request_id) for r in rejects] == [
        ("orders.csv:14", "b2"),
        ("orders.csv:15", "b2"),
        ("orders.csv:20", "b5"),
        ("orders.csv:21", "b5"),
    ]
    assert all(r.stage == RejectedRecord.Stage.SERVER and "must be an object" in r.reason for r in rejects)
    # Each good batch arrived once; the refused requests kept nothing.
    assert sorted(kept_ids(sandbox)) == ["b0", "b1", "b3", "b4", "b6"]
    assert sandbox.duplicates() == []
    assert run.batches_rejected == 2 and run.records_rejected == 4 and run.events_accepted == 5


def test_a_413_is_split_and_every_batch_arrives_once(sandbox, tmp_path):
    workspace = make_workspace(sandbox)
    ids = [f"big{i}" for i in range(4)]
    items = [batch(srid, events=22, padding=4000) for srid in ids]  # about 90 KB each, 360 KB together
    sizes = [len(orjson.dumps(item)) for item in items]
    assert all(size < schema.MAX_BATCH_BYTES for size in sizes) and sum(sizes) > schema.MAX_REQUEST_BYTES
    run = queued_run_with(workspace, tmp_path, items, ids)

    run = sync.process_run(run.pk, pacing=fake_pacing(FakeClock()))

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    parent = run.deliveries.get(sequence=1)
    assert parent.state == Delivery.State.SPLIT and parent.last_status == 413
    parts = run.deliveries.filter(parent=parent)
    assert [d.source_request_ids for d in parts] == [ids[:2], ids[2:]]
    assert all(d.state == Delivery.State.ACCEPTED for d in parts)
    assert [r.status for r in sandbox.requests_log()] == [413, 202, 202]
    assert sorted(kept_ids(sandbox)) == sorted(ids) and sandbox.duplicates() == []
    assert run.events_accepted == 4 and not RejectedRecord.objects.exists()


# ----------------------------------------------------------------------------------------------- 401, 403


def test_a_403_blocks_the_run_and_passing_credentials_resume_it(sandbox, tmp_path, monkeypatch):
    workspace = make_workspace(sandbox)
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(5)))
    workspace.set_credentials(SANDBOX_KEY, "wrong-secret")
    run = run_job(job)
    assert run.status == SyncRun.Status.BLOCKED
    assert (
        run.error
        == "mParticle refused the API key and secret (HTTP 403). Deliveries are kept and resume with new credentials."
    )
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.CREDENTIALS_REJECTED
    [delivery] = run.deliveries.all()
    assert delivery.state == Delivery.State.PENDING and delivery.payload is not None and delivery.last_status == 403
    # A new run cannot start either while the credentials are refused.
    with pytest.raises(sync.SyncError, match="credentials were rejected"):
        sync.start_run(job)

    monkeypatch.setattr(Conf, "SYNC", True)  # an enqueued task runs right here
    workspace.set_credentials(SANDBOX_KEY, "still-wrong")
    verification = sync.verify_and_resume(workspace)
    assert verification.answer.outcome is Outcome.FORBIDDEN and verification.resumed == []
    workspace.refresh_from_db()
    run.refresh_from_db()
    assert workspace.status == Workspace.Status.CREDENTIALS_REJECTED
    assert run.status == SyncRun.Status.BLOCKED and not Task.objects.exists()

    workspace.set_credentials(SANDBOX_KEY, SANDBOX_SECRET)
    verification = sync.verify_and_resume(workspace)
    assert verification.answer.outcome is Outcome.ACCEPTED and verification.resumed == [run.pk]
    workspace.refresh_from_db()
    run.refresh_from_db()
    assert workspace.status == Workspace.Status.ACTIVE and workspace.status_message == ""
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    [task] = Task.objects.all()
    assert task.func == "feeds.tasks.process_run" and task.args == (run.pk,)
    # The stored delivery went out as it was, once; the connection test kept no events.
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == 5
    assert kept_ids(sandbox) == delivery.source_request_ids and sandbox.duplicates() == []


class _SessionWithoutAuth(requests.Session):
    """A client that forgets to send credentials: the only way to get a real 401 out of the sandbox."""

    def request(self, method, url, **kwargs):
        kwargs["auth"] = None
        return super().request(method, url, **kwargs)


def test_a_401_blocks_the_run_and_keeps_the_deliveries(sandbox, tmp_path, monkeypatch):
    real_client = Workspace.client

    def client_without_auth(self) -> EventsClient:
        client = real_client(self)
        client.session = _SessionWithoutAuth()
        return client

    monkeypatch.setattr(Workspace, "client", client_without_auth)
    workspace = make_workspace(sandbox)
    run = run_job(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(5))))
    assert run.status == SyncRun.Status.BLOCKED
    assert "HTTP 401" in run.error
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.CREDENTIALS_REJECTED
    assert "no credentials were sent (HTTP 401)" in workspace.status_message
    [delivery] = run.deliveries.all()
    assert delivery.state == Delivery.State.PENDING and delivery.payload is not None
    assert [r.status for r in sandbox.requests_log()] == [401] and sandbox.events() == []


# ---------------------------------------------------------------------------------------------- long waits


def test_a_long_retry_after_gives_the_run_back_until_a_sender_takes_it_up_again(sandbox, tmp_path):
    sandbox.configure(faults=FaultConfig(retry_after=30))
    sandbox.queue_faults(["429"])
    clock = FakeClock()
    pacing = fake_pacing(clock)
    workspace = make_workspace(sandbox)
    run = sync.start_run(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(5))))

    before = timezone.now()
    started = time.monotonic()
    run = sync.process_run(run.pk, pacing=pacing)
    assert time.monotonic() - started < 5  # the worker did not sit out the 30 s
    assert clock.waits == []  # nor did it sleep them on the fake clock

    assert run.status == SyncRun.Status.WAITING
    assert before + timedelta(seconds=30) <= run.resume_at <= timezone.now() + timedelta(seconds=31)
    assert run.error.startswith("Waiting for rate limit until ")
    assert run.lease_until is None and run.send_lease_until is None and run.throttled == 1
    [delivery] = run.deliveries.all()
    assert delivery.state == Delivery.State.PENDING and delivery.throttled_count == 1
    assert delivery.seconds_waited >= 30

    # Too early: neither a worker, nor a sender, nor the sweeper touches it.
    assert sync.process_run(run.pk, pacing=pacing).status == SyncRun.Status.WAITING
    assert sweeper.resume_stalled() == [] and not OrmQ.objects.exists()
    assert dispatch(run, clock=clock).requests == 0
    assert len(sandbox.requests_log()) == 1

    SyncRun.objects.filter(pk=run.pk).update(resume_at=timezone.now() - timedelta(seconds=1))
    clock.sleep(31)  # the workspace's pace held everyone for the same wait
    # Nothing to queue: a sender takes the run up by itself once the wait is over.
    assert sweeper.resume_stalled() == [] and not OrmQ.objects.exists()
    assert dispatch(run, clock=clock).requests == 1
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert [r.status for r in sandbox.requests_log()] == [429, 202]
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == 5 and sandbox.duplicates() == []


def test_a_5xx_backoff_longer_than_the_inline_wait_gives_the_run_back(sandbox, tmp_path, settings):
    settings.MPFEED_BACKOFF_BASE = settings.MPFEED_BACKOFF_CAP = 600
    sandbox.queue_faults(["503"])
    clock = FakeClock()
    pacing = fake_pacing(clock)
    run = sync.start_run(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(5))))

    started = time.monotonic()
    run = sync.process_run(run.pk, pacing=pacing)
    assert time.monotonic() - started < 5 and clock.waits == []

    assert run.status == SyncRun.Status.WAITING
    assert run.error.startswith("Retrying after HTTP 503 (server_error): Injected server error 503 until ")
    [delivery] = run.deliveries.all()
    [attempt] = delivery.attempt_log.all()
    assert attempt.waited > settings.MPFEED_MAX_INLINE_WAIT
    assert run.resume_at == pytest.approx(
        delivery.sent_at + timedelta(seconds=attempt.waited), abs=timedelta(seconds=1)
    )
    assert delivery.first_failure_at is not None and delivery.state == Delivery.State.PENDING

    SyncRun.objects.filter(pk=run.pk).update(resume_at=timezone.now())
    dispatch(run, clock=clock)
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert [r.status for r in sandbox.requests_log()] == [503, 202]
    assert len(set(message_ids(sandbox))) == 5


# ------------------------------------------------------------------------------------ failures and replays


def record_bodies(monkeypatch) -> list[tuple[str, bytes]]:
    """Spy on what the client puts on the wire (it still sends it)."""
    sent: list[tuple[str, bytes]] = []
    real_post = EventsClient.post

    def post(self, path: str, body: bytes) -> Answer:
        sent.append((path, body))
        return real_post(self, path, body)

    monkeypatch.setattr(EventsClient, "post", post)
    return sent


def test_5xx_past_the_retry_horizon_is_kept_as_failed_and_replay_resends_the_same_bytes(
    sandbox, tmp_path, settings, monkeypatch
):
    settings.MPFEED_RETRY_HORIZON = 0
    sandbox.configure(faults=FaultConfig(seed=5, error_rate=1.0))
    sent = record_bodies(monkeypatch)
    clock = FakeClock()
    run = run_job(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(30))), clock)

    assert run.status == SyncRun.Status.FAILED
    assert run.error == (
        "1 request(s) could not be delivered and are kept as failed; replay them once the cause is fixed."
    )
    [delivery] = run.deliveries.all()
    assert delivery.state == Delivery.State.FAILED and delivery.payload is not None
    assert delivery.attempts == 2 and delivery.last_status in (500, 502, 503)
    stored = delivery.body()
    assert {body for _, body in sent} == {stored}
    assert sandbox.kept() == []

    sandbox.configure(faults=FaultConfig())  # healthy again
    assert sync.replay_run(run) == (1, [run.pk])
    run.refresh_from_db()
    assert run.status == SyncRun.Status.QUEUED and run.error == ""
    run = sync.process_run(run.pk, pacing=fake_pacing(clock))

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert sent[-1] == (schema.BULK_PATH, stored)  # byte for byte
    assert [k.batch for k in sandbox.kept()] == orjson.loads(stored)
    assert sorted(kept_ids(sandbox)) == sorted(delivery.source_request_ids)
    assert sandbox.duplicates() == []
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.ACCEPTED and delivery.body() == stored  # kept for the retention period
    # Replaying what was accepted does nothing.
    assert sync.replay_run(run) == (0, [])
    assert sync.replay(Delivery.objects.filter(pk=delivery.pk)) == (0, [])


def test_replay_workspace_picks_only_deliveries_created_since_the_time(sandbox, tmp_path, settings):
    settings.MPFEED_RETRY_HORIZON = 0
    settings.MPFEED_CHUNK_SIZE = 10
    settings.MPFEED_GROUP_WINDOW_RECORDS = 10  # deliveries every 10 records
    sandbox.configure(faults=FaultConfig(seed=5, error_rate=1.0))
    clock = FakeClock()
    workspace = make_workspace(sandbox)
    run = run_job(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(30))), clock)
    assert run.status == SyncRun.Status.FAILED
    old, *recent = run.deliveries.order_by("sequence")
    assert len(recent) == 2 and all(d.state == Delivery.State.FAILED for d in (old, *recent))
    Delivery.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=3))

    sandbox.configure(faults=FaultConfig())
    assert sync.replay_workspace(workspace, since=timezone.now() - timedelta(hours=1)) == (2, [run.pk])
    run = sync.process_run(run.pk, pacing=fake_pacing(clock))

    states = dict(run.deliveries.values_list("pk", "state"))
    assert states == {old.pk: "failed", recent[0].pk: "accepted", recent[1].pk: "accepted"}
    assert sorted(kept_ids(sandbox)) == sorted(recent[0].source_request_ids + recent[1].source_request_ids)
    assert run.status == SyncRun.Status.FAILED and "1 request(s)" in run.error

    # A wider window takes the old one too; the accepted ones are not sent again.
    assert sync.replay_workspace(workspace, since=timezone.now() - timedelta(days=1)) == (1, [run.pk])
    run = sync.process_run(run.pk, pacing=fake_pacing(clock))
    assert run.status == SyncRun.Status.SUCCEEDED
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == 30 and sandbox.duplicates() == []


# ----------------------------------------------------------------------------------------------- crashes


@pytest.mark.parametrize("crash", [WorkerDied, RuntimeError], ids=["worker-died", "unexpected-error"])
def test_a_crash_between_persist_and_send_resumes_without_loss_or_duplicates(
    sandbox, tmp_path, settings, monkeypatch, crash
):
    settings.MPFEED_CHUNK_SIZE = 10
    settings.MPFEED_GROUP_WINDOW_RECORDS = 10  # deliveries every 10 records
    real_step = Lane.step
    calls = []

    def step(self):
        if self.run.deliveries.pending().exists():  # about to send a persisted delivery
            calls.append(self.run.pk)
            if len(calls) == 1:
                raise crash("the worker went away after the first chunk was persisted")
        return real_step(self)

    monkeypatch.setattr(Lane, "step", step)
    clock = FakeClock()
    run = sync.start_run(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(30))))
    with pytest.raises(crash):
        sync.process_run(run.pk, pacing=fake_pacing(clock))

    run.refresh_from_db()
    assert run.records_read == 10 and run.deliveries.pending().count() == 1 and sandbox.kept() == []
    if crash is WorkerDied:
        assert run.status == SyncRun.Status.RUNNING
        assert sweeper.resume_stalled() == []  # its lease still runs
        expire_lease(run)
    else:
        assert run.status == SyncRun.Status.FAILED
        assert run.error.startswith("Internal error while syncing")
    assert sweeper.resume_stalled() == [run.pk]
    run = sync.process_run(run.pk, pacing=fake_pacing(clock))

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == 30
    # Every batch was sent under the id it was stored with, and under no other.
    assert sorted(kept_ids(sandbox)) == sorted(sent_ids(run)) and len(sent_ids(run)) == 30
    assert sandbox.duplicates() == []
    assert run.deliveries.count() == 3 and run.batches == 30


def test_a_crash_between_send_and_record_resends_the_same_bytes(sandbox, tmp_path, monkeypatch):
    sent = record_bodies(monkeypatch)
    real_post = EventsClient.post  # the spy: it records, then really sends

    def post_then_die(self, path, body):
        answer = real_post(self, path, body)
        if len(sent) == 1:
            raise WorkerDied("the worker went away before it recorded the answer")
        return answer

    monkeypatch.setattr(EventsClient, "post", post_then_die)
    clock = FakeClock()
    run = sync.start_run(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(10))))
    with pytest.raises(WorkerDied):
        sync.process_run(run.pk, pacing=fake_pacing(clock))
    [delivery] = run.deliveries.all()
    assert delivery.state == Delivery.State.PENDING and delivery.attempts == 0
    assert len(sandbox.kept()) == 10  # mParticle has it, we do not know

    # Everything was read: no reading to queue again. A sender takes the run up once its leases ran out.
    assert sweeper.resume_stalled() == []
    assert not dispatch(run, clock=clock).requests
    expire_lease(run)
    assert sweeper.resume_stalled() == []
    assert dispatch(run, clock=clock).requests == 1

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert [body for _, body in sent] == [delivery.body()] * 2
    assert sorted(sandbox.duplicates()) == sorted((SANDBOX_KEY, i) for i in delivery.source_request_ids)
    assert sorted(kept_ids(sandbox)) == sorted(delivery.source_request_ids)
    assert len(message_ids(sandbox)) == 10


def test_a_lost_answer_is_retried_with_the_same_bytes_and_nothing_is_kept_twice(sandbox, tmp_path, monkeypatch):
    sent = record_bodies(monkeypatch)
    real_post = EventsClient.post

    def post_and_lose_the_answer(self, path, body):
        answer = real_post(self, path, body)
        if len(sent) == 1:  # the server took it; the connection broke before the answer came back
            return Answer(outcome=Outcome.NETWORK_ERROR, status=None, latency=0.0, error="connection reset")
        return answer

    monkeypatch.setattr(EventsClient, "post", post_and_lose_the_answer)
    run = run_job(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(10))))

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    [delivery] = run.deliveries.all()
    assert delivery.attempts == 2 and run.retries == 1
    assert sent[0] == sent[1]
    assert len(sandbox.duplicates()) == 10
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == 10


# --------------------------------------------------------------------------------------------- endpoints

TIMED_MAPPING = {
    **MAPPING,
    "events": [
        {
            "name": "Purchase Completed",
            "custom_event_type": "transaction",
            "timestamp": {"field": "ts", "format": "epoch_ms", "required": False},
            "attributes": {"sku": "sku"},
        }
    ],
}

TWO_EVENT_MAPPING = {
    "record_key": "id",
    "identities": {"customer_id": "user_id"},
    "events": [
        {
            "name": "First",
            "custom_event_type": "other",
            "timestamp": {"field": "first_ts", "format": "epoch_ms"},
        },
        {
            "name": "Second",
            "custom_event_type": "other",
            "timestamp": {"field": "second_ts", "format": "epoch_ms"},
        },
    ],
}


def now_ms() -> int:
    return int(time.time() * 1000)


def timed_rows(ages_in_days: list[float | None]) -> list[dict]:
    rows = purchase_rows(len(ages_in_days))
    for row, age in zip(rows, ages_in_days):
        row["ts"] = "" if age is None else str(now_ms() - int(age * DAY_MS))
    return rows


def two_event_rows() -> list[dict]:
    ages = {"mixed": (40, 1), "old": (60, 45), "recent": (2, 0.1)}
    return [
        {"id": name, "user_id": name, "first_ts": now_ms() - int(a * DAY_MS), "second_ts": now_ms() - int(b * DAY_MS)}
        for name, (a, b) in ages.items()
    ]


def by_path(sandbox) -> dict[str, list[tuple[str, list[str]]]]:
    """What the sandbox kept on each path: (user, event names) per batch."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for k in sandbox.kept():
        names = [e["data"]["event_name"] for e in k.batch["events"]]
        out.setdefault(k.path, []).append((k.batch["user_identities"]["customer_id"], names))
    return {path: sorted(batches) for path, batches in out.items()}


def test_historical_mode_sends_to_the_historical_endpoint_and_refuses_what_it_would_drop(sandbox, tmp_path):
    workspace = make_workspace(sandbox)
    rows = timed_rows([10, 100, 0.5, None, 2.9])  # ok, ok, 12 h old, no timestamp, just under 72 h
    mapping = make_mapping(workspace, TIMED_MAPPING)
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", rows), mapping, endpoint_mode="historical")
    run = run_job(job)

    assert run.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS, run.error
    assert {r.path for r in sandbox.requests_log()} == {"/v2" + schema.HISTORICAL_PATH}
    assert sorted(k.batch["user_identities"]["customer_id"] for k in sandbox.kept()) == ["u0", "u1"]
    reasons = dict(RejectedRecord.objects.filter(run=run).values_list("ref", "reason"))
    assert reasons == {
        "orders.csv:4": "historical data must be at least 72 hours old; this event is newer",
        "orders.csv:5": "historical data needs a timestamp on every event (timestamp_unixtime_ms)",
        "orders.csv:6": "historical data must be at least 72 hours old; this event is newer",
    }
    assert all(r.stage == RejectedRecord.Stage.MAPPING for r in RejectedRecord.objects.filter(run=run))
    # Nothing was sent that mParticle would silently drop.
    assert sandbox.rejects() == [] and run.records_rejected == 3 and run.events_accepted == 2


def test_auto_mode_sends_events_older_than_30_days_to_historical_and_splits_mixed_records(sandbox, tmp_path):
    workspace = make_workspace(sandbox)
    path = write_csv(tmp_path / "visits.csv", two_event_rows())
    job = make_job(workspace, path, make_mapping(workspace, TWO_EVENT_MAPPING), endpoint_mode="auto")
    run = run_job(job)

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert by_path(sandbox) == {
        "/v2" + schema.HISTORICAL_PATH: [("mixed", ["First"]), ("old", ["First", "Second"])],
        "/v2" + schema.BULK_PATH: [("mixed", ["Second"]), ("recent", ["First", "Second"])],
    }
    assert sandbox.rejects() == []
    assert sorted(run.deliveries.values_list("path", flat=True)) == [schema.BULK_PATH, schema.HISTORICAL_PATH]
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == 6 and run.events_accepted == 6


def test_realtime_mode_sends_everything_to_bulkevents(sandbox, tmp_path):
    workspace = make_workspace(sandbox)
    path = write_csv(tmp_path / "visits.csv", two_event_rows())
    job = make_job(workspace, path, make_mapping(workspace, TWO_EVENT_MAPPING), endpoint_mode="realtime")
    run = run_job(job)

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert by_path(sandbox) == {
        "/v2" + schema.BULK_PATH: [
            ("mixed", ["First", "Second"]),
            ("old", ["First", "Second"]),
            ("recent", ["First", "Second"]),
        ],
    }


# ---------------------------------------------------------------------------------------------- attempts


def test_every_attempt_is_recorded(sandbox, tmp_path):
    clock = FakeClock()
    sandbox.configure(rate_limit=1000, faults=FaultConfig(retry_after=2))
    sandbox._clock = clock.monotonic
    sandbox.queue_faults(["429", "503"])
    run = run_job(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(20))), clock)

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    [delivery] = run.deliveries.all()
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery))
    assert [(a.outcome, a.status) for a in attempts] == [("throttled", 429), ("server_error", 503), ("accepted", 202)]
    assert [a.retry_after for a in attempts] == [2.0, None, None]
    assert [a.rate_limit_scope for a in attempts] == ["workspace", "", ""]
    assert [a.rate_limit_used for a in attempts] == [None, None, 2]  # 20 of 1,000 tokens
    assert attempts[0].waited >= 2 and attempts[1].waited > 0 and attempts[2].waited == 0
    assert all(a.latency_ms >= 0 for a in attempts) and sum(a.latency_ms for a in attempts) < 5000
    assert attempts[0].message.startswith("HTTP 429") and attempts[1].message.startswith("HTTP 503")
    assert attempts[2].message == ""
    assert [a.at for a in attempts] == sorted(a.at for a in attempts)
    assert delivery.attempts == 3 and delivery.throttled_count == 1 and delivery.last_status == 202
    assert delivery.seconds_waited == pytest.approx(attempts[0].waited + attempts[1].waited)
    assert run.throttled == 1 and run.retries == 2
    assert run.seconds_waited == pytest.approx(delivery.seconds_waited)
