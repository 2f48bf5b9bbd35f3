"""Fewest batches: each user's records, wherever they are in the source, are set aside and sent together — in as
few batches as the 128 KB batch limit allows — with crashes at any step losing and duplicating nothing."""

from __future__ import annotations

import base64
import collections
import csv
import random
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler

import orjson
import pytest

from feeds import sweeper, sync
from feeds.models import Delivery, SetAsideRecord, SyncRun
from feeds.mparticle import schema
from feeds.mparticle.batch import UserRecord, set_aside_form
from feeds.reading import Reader
from tests.helpers import SANDBOX_KEY, SANDBOX_SECRET, FakeClock, make_job, make_mapping, make_workspace, run_job
from tests.receiver import loopback
from tests.test_delivery import WorkerDied, expire_lease, fake_pacing, kept_ids, message_ids, sent_ids

pytestmark = pytest.mark.django_db


START = datetime(2026, 11, 1, tzinfo=UTC)


def time_ordered(path, records: int, users: int, seed: int = 3, sku_bytes: int = 6):
    """A partner export ordered by time, users interleaved at random (as real exports are)."""
    rand = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "user_id", "email", "plan", "first_name", "ts", "sku", "amount"])
        writer.writeheader()
        for i in range(records):
            user = rand.randrange(users)
            writer.writerow(
                {
                    "id": f"o{i}", "user_id": f"u{user}", "email": f"user{user}@example.com", "plan": f"p{i}",
                    "first_name": "Ada", "ts": (START + timedelta(seconds=37 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "sku": "S" * sku_bytes, "amount": "9.5",
                }
            )  # fmt: skip
    return path


def test_a_users_events_spread_over_the_whole_file_arrive_in_one_batch(sandbox, tmp_path, settings):
    settings.MPFEED_CHUNK_SIZE = 100  # 20 chunks: every user appears in most of them
    path = time_ordered(tmp_path / "orders.csv", 2000, 50)
    run = run_job(make_job(make_workspace(sandbox), path))
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    kept = sandbox.kept()
    users = [k.batch["user_identities"]["customer_id"] for k in kept]
    assert len(users) == len(set(users)) == 50  # one batch per user
    assert sum(len(k.batch["events"]) for k in kept) == 2000 == len(set(message_ids(sandbox)))
    for k in kept:
        stamps = [e["data"]["timestamp_unixtime_ms"] for e in k.batch["events"]]
        assert stamps == sorted(stamps)  # in time order
    # The user's latest attributes: the plan of their last record.
    last_plan = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            last_plan[row["user_id"]] = row["plan"]
    assert all(k.batch["user_attributes"]["plan"] == last_plan[k.batch["user_identities"]["customer_id"]] for k in kept)
    assert run.batches == 50 and not SetAsideRecord.objects.exists()


def test_a_user_with_more_than_128_kb_of_events_gets_several_full_batches(sandbox, tmp_path):
    path = time_ordered(tmp_path / "orders.csv", 600, 2, sku_bytes=900)  # ~300 events of ~1 KB per user
    run = run_job(make_job(make_workspace(sandbox), path))
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    by_user: dict[str, list[int]] = {}
    for k in sandbox.kept():
        size = len(orjson.dumps(k.batch))
        by_user.setdefault(k.batch["user_identities"]["customer_id"], []).append(size)
    assert sorted(by_user) == ["u0", "u1"]
    for sizes in by_user.values():
        assert len(sizes) >= 3  # more than one batch's worth
        assert all(s <= schema.MAX_BATCH_BYTES for s in sizes)
        # Full batches: all but the last of each user hold at least three quarters of the limit.
        assert all(s > 0.75 * schema.MAX_BATCH_BYTES for s in sorted(sizes)[1:])
    assert len(set(message_ids(sandbox))) == 600


@pytest.mark.parametrize("where", ["set-aside", "build"])
def test_a_worker_dying_while_setting_aside_or_building_loses_and_duplicates_nothing(
    sandbox, tmp_path, settings, monkeypatch, where
):
    settings.MPFEED_CHUNK_SIZE = 50
    settings.MPFEED_BUILD_SLICE = 40
    method = "set_aside" if where == "set-aside" else "build_slice"
    real = getattr(Reader, method)
    calls = []

    def dies_on_the_third(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise WorkerDied(f"the worker went away in {where}")
        return real(self, *args)

    monkeypatch.setattr(Reader, method, dies_on_the_third)
    clock = FakeClock()
    path = time_ordered(tmp_path / "orders.csv", 300, 30)
    run = sync.start_run(make_job(make_workspace(sandbox), path))
    with pytest.raises(WorkerDied):
        sync.process_run(run.pk, pacing=fake_pacing(clock))
    run.refresh_from_db()
    assert not run.read_done and run.status == SyncRun.Status.RUNNING
    expire_lease(run)
    assert sweeper.resume_stalled() == [run.pk]
    run = sync.process_run(run.pk, pacing=fake_pacing(clock))

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == 300
    assert sorted(kept_ids(sandbox)) == sorted(sent_ids(run))
    assert sandbox.duplicates() == []
    assert not SetAsideRecord.objects.exists()
    users = [k.batch["user_identities"]["customer_id"] for k in sandbox.kept()]
    assert len(users) == len(set(users)) == 30  # still one batch per user


def test_an_unexpected_error_ends_the_run_failed_and_leaves_nothing_set_aside(sandbox, tmp_path, monkeypatch):
    def breaks(self, *args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Reader, "build_slice", breaks)
    run = sync.start_run(make_job(make_workspace(sandbox), time_ordered(tmp_path / "orders.csv", 50, 5)))
    with pytest.raises(RuntimeError):
        sync.process_run(run.pk, pacing=fake_pacing(FakeClock()))
    run.refresh_from_db()
    assert run.status == SyncRun.Status.FAILED and not SetAsideRecord.objects.exists()
    assert sandbox.kept() == []  # a new run reads the file again: nothing was sent twice


def test_a_rebuilt_delivery_is_byte_identical(sandbox, tmp_path, settings, monkeypatch):
    settings.MPFEED_BUILD_SLICE = 30
    path = time_ordered(tmp_path / "orders.csv", 200, 20)
    run = sync.start_run(make_job(make_workspace(sandbox), path))
    first_bodies: list[tuple[bytes, list[str]]] = []
    real_create = Delivery.objects.bulk_create
    state = {"failed": False}

    def create_then_die(objs, *args, **kwargs):
        if not state["failed"] and objs:
            first_bodies.extend((d.body(), d.source_request_ids) for d in objs)
            state["failed"] = True
            raise WorkerDied("the worker went away before the slice committed")
        return real_create(objs, *args, **kwargs)

    monkeypatch.setattr(Delivery.objects, "bulk_create", create_then_die)
    with pytest.raises(WorkerDied):
        sync.read_run(run.pk)
    assert first_bodies and not Delivery.objects.exists()
    monkeypatch.setattr(Delivery.objects, "bulk_create", real_create)
    expire_lease(SyncRun.objects.get(pk=run.pk))
    sync.read_run(run.pk)
    rebuilt = [(d.body(), d.source_request_ids) for d in Delivery.objects.order_by("sequence")]
    assert rebuilt[: len(first_bodies)] == first_bodies


def test_a_reader_whose_run_ended_meanwhile_sets_nothing_more_aside(sandbox, tmp_path, settings, monkeypatch):
    settings.MPFEED_CHUNK_SIZE = 20
    real = Reader.set_aside
    calls = []

    def staff_cancel_on_the_second(self, *args):
        calls.append(1)
        if len(calls) == 2:  # the run is ended (failed, cancelled) while this reader reads its next chunk
            SyncRun.objects.get(pk=self.run.pk).finish(SyncRun.Status.FAILED, "ended by staff")
        return real(self, *args)

    monkeypatch.setattr(Reader, "set_aside", staff_cancel_on_the_second)
    run = sync.start_run(make_job(make_workspace(sandbox), time_ordered(tmp_path / "orders.csv", 100, 10)))
    assert sync.read_run(run.pk) is sync.Reading.STOPPED
    run.refresh_from_db()
    assert run.status == SyncRun.Status.FAILED and run.records_read == 20
    assert not SetAsideRecord.objects.exists()  # the first chunk's went with the ending, the second was not written


def test_a_users_key_is_its_identities_canonical_json_or_a_hash_of_it_when_long():
    short = UserRecord(ref="1", identities={"email": "zoë@example.com", "customer_id": "u1"})
    reordered = UserRecord(ref="2", identities={"customer_id": "u1", "email": "zoë@example.com"}, mpid=None)
    assert set_aside_form(short)[0] == set_aside_form(reordered)[0] == '{"customer_id":"u1","email":"zoë@example.com"}'
    with_mpid = UserRecord(ref="3", identities={"customer_id": "u1"}, mpid=-42)
    assert set_aside_form(with_mpid)[0] == '-42|{"customer_id":"u1"}'
    # Past 200 bytes (of UTF-8, not characters), "#" and a sha1: never the text of a shorter key.
    for value in ("x" * 200, "é" * 95):
        user = set_aside_form(UserRecord(ref="4", identities={"customer_id": value}))[0]
        assert user.startswith("#") and len(user) == 41
    at_bound = set_aside_form(UserRecord(ref="5", identities={"customer_id": "x" * 182}))[0]
    assert len(at_bound) == 200 and at_bound[0] == "{"
    assert set_aside_form(UserRecord(ref="6", identities={"customer_id": "x" * 183}))[0][0] == "#"


def test_users_with_long_or_unusual_identities_each_arrive_in_one_batch(sandbox, tmp_path, settings):
    """Keys of every length the column holds: hashed, just under the bound, non-ASCII, differing only in case."""
    settings.MPFEED_CHUNK_SIZE = 7  # each user's records in several chunks
    ids = ["L" * 400, "m" * 150, "zoë", "Zoë", "u1", "u1 "]
    path = tmp_path / "orders.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "user_id", "ts", "sku"])
        writer.writeheader()
        for i in range(60):
            ts = (START + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            writer.writerow({"id": f"o{i}", "user_id": ids[i % len(ids)], "ts": ts, "sku": "S"})
    mapping = {
        "record_key": "id",
        "identities": {"customer_id": "user_id"},
        "events": [{"name": "Bought", "timestamp": {"field": "ts", "format": "iso8601"}, "attributes": {"sku": "sku"}}],
    }
    workspace = make_workspace(sandbox)
    run = run_job(make_job(workspace, path, make_mapping(workspace, mapping)))
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    users = [k.batch["user_identities"]["customer_id"] for k in sandbox.kept()]
    assert sorted(users) == sorted(ids)  # one batch per user: "u1 " is not "u1", nor "Zoë" "zoë"
    assert sum(len(k.batch["events"]) for k in sandbox.kept()) == 60 == len(set(message_ids(sandbox)))


class PlainEventsApi:
    """An Events API fake that shares no code with the sandbox: a bare http.server on a loopback port that checks
    what mParticle checks first (basic auth, a JSON array of batches on /v2/bulkevents), answers 202 with no
    body, and every `throttle_every`-th request 429 with Retry-After — keeping every batch it accepted."""

    def __init__(self, key: str, secret: str, throttle_every: int = 0):
        self.batches: list[dict] = []
        self.requests = self.throttled = 0
        auth = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
        fake = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    fake.requests += 1
                    if self.headers.get("Authorization") != auth:
                        return self.answer(401)
                    if throttle_every and fake.requests % throttle_every == 0:
                        fake.throttled += 1
                        return self.answer(429, {"Retry-After": "1"})
                    batches = orjson.loads(body)
                    if self.path != "/v2/bulkevents" or not isinstance(batches, list) or len(batches) > 100:
                        return self.answer(400)
                    if any(len(orjson.dumps(b)) > schema.MAX_BATCH_BYTES for b in batches):
                        return self.answer(413)
                    fake.batches += batches
                    self.answer(202)

            def answer(self, status, headers=None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server, thread = loopback(Handler)  # (the bare server; none of the sandbox's code)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v2"
        thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_an_events_api_fake_sharing_no_code_with_the_sandbox_gets_one_batch_per_user_and_every_event_once(
    tmp_path, settings
):
    settings.MPFEED_CHUNK_SIZE = 500  # 12 chunks, every user in most of them
    path = time_ordered(tmp_path / "orders.csv", 6000, 700, seed=11)
    fake = PlainEventsApi(SANDBOX_KEY, SANDBOX_SECRET, throttle_every=3)
    try:
        run = run_job(make_job(make_workspace(endpoint_url=fake.url), path))
    finally:
        fake.close()
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert fake.throttled >= 2  # some requests were refused with a 429 and sent again
    with open(path) as f:
        rows = list(csv.DictReader(f))
    users = {r["user_id"] for r in rows}
    batch_users = [b["user_identities"]["customer_id"] for b in fake.batches]
    assert len(batch_users) == len(set(batch_users)) == len(users)  # one batch per distinct user
    events = [e["data"]["source_message_id"] for b in fake.batches for e in b["events"]]
    assert len(events) == len(set(events)) == len(rows)  # every event exactly once
    per_user = collections.Counter(r["user_id"] for r in rows)
    assert {b["user_identities"]["customer_id"]: len(b["events"]) for b in fake.batches} == dict(per_user)
    assert run.batches == len(users) and not SetAsideRecord.objects.exists()
