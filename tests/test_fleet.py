"""A fleet of clients, end to end with real processes: a `qcluster` on a SQLite file (or, last, two clusters on
PostgreSQL and a Redis broker), sandboxes over HTTP with latency and limits per key.

- one worker process keeps requests of several workspaces in flight at once, each workspace in its own order,
  and a workspace throttled hard leaves the others untouched;
- a small run finishes while a huge one is being sent (and read), with one worker and one request in flight;
- two processes sending to one workspace share the limit they learn, and the next run starts from it;
- two clusters on PostgreSQL + Redis, one killed with SIGKILL: every valid record arrives exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from sandbox.server import FaultConfig, Sandbox
from tests.helpers import MAPPING, purchase_rows, write_csv
from tests.processes import ROOT, Cluster, add_workspace, manage, query, queue_run, site_env, wait_for

pytestmark = pytest.mark.slow

DONE = ("succeeded", "succeeded_with_rejects", "failed", "blocked")


def credentials(n: int) -> list[tuple[str, str]]:
    return [(f"fleet-key-{i}", f"fleet-secret-{i}") for i in range(n)]


RUN_FIELDS = ["status", "events_accepted", "throttled", "seconds_waited", "records_rejected", "finished_at"]
RUNS = "select id, status, events_accepted, throttled, seconds_waited, records_rejected, finished_at from feeds_syncrun"


def runs(db: Path) -> dict[int, dict]:
    return {row[0]: dict(zip(RUN_FIELDS, row[1:])) for row in query(db, RUNS)}


def ordered(db: Path, run_id: int) -> list[str]:
    """The run's batch ids in the order of its deliveries (splits through their parts)."""
    rows = query(
        db,
        "select source_request_ids from feeds_delivery where run_id = ? and state != 'split' order by sequence",
        run_id,
    )
    return [i for (ids,) in rows for i in json.loads(ids)]


@pytest.fixture
def mapping(tmp_path) -> Path:
    path = tmp_path / "mapping.json"
    path.write_bytes(orjson.dumps(MAPPING))
    return path


def test_one_worker_process_sends_for_several_workspaces_at_once_each_in_order(tmp_path, mapping):
    keys = credentials(4)
    fast = Sandbox(dict(keys), rate_limit=None, latency=0.25)
    slow = Sandbox({"throttled-key": "throttled-secret"}, rate_limit=None,
                   faults=FaultConfig(seed=3, throttle_rate=0.6, retry_after=1))  # fmt: skip
    fast.start()
    slow.start()
    db = tmp_path / "site.sqlite3"
    env = site_env(db, Q_WORKERS="1", MPFEED_CHUNK_SIZE="150")
    cluster = Cluster(env, tmp_path / "cluster.log")
    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        for i, (key, secret) in enumerate(keys):
            add_workspace(env, f"Client {i}", f"{fast.url}/v2", mapping, key, secret)
        add_workspace(env, "Throttled", f"{slow.url}/v2", mapping, "throttled-key", "throttled-secret")
        ids = {}
        for i in range(4):
            ids[f"Client {i}"] = queue_run(env, f"Client {i}", write_csv(tmp_path / f"c{i}.csv", purchase_rows(600)))
        ids["Throttled"] = queue_run(env, "Throttled", write_csv(tmp_path / "t.csv", purchase_rows(600)))
        cluster.start()
        healthy = [ids[f"Client {i}"] for i in range(4)]
        wait_for(lambda: all(runs(db)[r]["status"] == "succeeded" for r in healthy), 120, what="the healthy runs")
        state = runs(db)
        senders = query(db, "select count(*), sum(requests > 0) from feeds_sender")
    finally:
        cluster.stop()
        fast.stop()
        slow.stop()

    # One worker process (one sender) had requests of several workspaces waiting for their answers at once.
    assert senders == [(1, 1)], cluster.log()[-2000:]
    assert fast.max_in_flight >= 3
    for i, (key, _) in enumerate(keys):
        run_id = ids[f"Client {i}"]
        assert state[run_id]["events_accepted"] == 600
        # Each workspace's batches arrived in the order of its deliveries, once each.
        arrived = [k.source_request_id for k in fast.kept() if k.api_key == key]
        assert arrived == ordered(db, run_id)
        # Untouched by the other's 429s: no wait, no 429.
        assert state[run_id]["throttled"] == 0 and state[run_id]["seconds_waited"] == 0
    assert slow.count_by_status().get(429, 0) > 0 and state[ids["Throttled"]]["throttled"] > 0


def test_a_small_run_finishes_while_a_huge_one_is_sent(tmp_path, mapping):
    # One worker, one request in flight, slices of a second: the huge run's reading and sending both take
    # turns with the small run's, which does not wait for the huge one to end.
    keys = credentials(2)
    sandbox = Sandbox(dict(keys), rate_limit=None, latency=0.03)
    sandbox.start()
    db = tmp_path / "site.sqlite3"
    env = site_env(db, Q_WORKERS="1", MPFEED_SEND_THREADS="1", MPFEED_TASK_SLICE="1", MPFEED_CHUNK_SIZE="1000")
    cluster = Cluster(env, tmp_path / "cluster.log")
    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        add_workspace(env, "Huge", f"{sandbox.url}/v2", mapping, *keys[0])
        add_workspace(env, "Small", f"{sandbox.url}/v2", mapping, *keys[1])
        huge = write_csv(tmp_path / "huge.csv", purchase_rows(40_000))
        small = write_csv(tmp_path / "small.csv", purchase_rows(300))
        cluster.start()
        huge_id = queue_run(env, "Huge", huge)
        wait_for(lambda: runs(db)[huge_id]["events_accepted"] > 0, 60, what="the huge run to send")
        small_id = queue_run(env, "Small", small)
        wait_for(lambda: runs(db)[small_id]["status"] in DONE, 60, what="the small run")
        state = runs(db)
        read = query(db, "select records_read from feeds_syncrun where id = ?", huge_id)[0][0]
    finally:
        cluster.stop()
        sandbox.stop()
    assert state[small_id]["status"] == "succeeded" and state[small_id]["events_accepted"] == 300
    # The huge one is still going: far from all of it sent, and (sliced) not all of it read either.
    assert state[huge_id]["status"] in ("running", "queued", "waiting")
    assert state[huge_id]["events_accepted"] < 40_000 / 2, (state, read)


def test_two_processes_share_the_limit_they_learn_and_the_next_run_starts_from_it(tmp_path, mapping):
    # The budget says 270; the sandbox enforces 150 per key. Two clusters, each taking one run at most, send two
    # runs of one workspace at once.
    sandbox = Sandbox({"shared-key": "shared-secret"}, rate_limit=150, latency=0.05)
    sandbox.start()
    db = tmp_path / "site.sqlite3"
    env = site_env(db, Q_WORKERS="1", MPFEED_SEND_LANES="1")
    clusters = [Cluster(env, tmp_path / f"cluster-{n}.log") for n in range(2)]
    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        add_workspace(env, "Shared", f"{sandbox.url}/v2", mapping, "shared-key", "shared-secret")
        for cluster in clusters:
            cluster.start()
        first = [
            queue_run(env, "Shared", write_csv(tmp_path / f"part{n}.csv", purchase_rows(1500, start=n * 1500)))
            for n in range(2)
        ]
        wait_for(lambda: all(runs(db)[r]["status"] == "succeeded" for r in first), 120, what="the two runs")
        senders = query(db, "select count(*) from feeds_sender where requests > 0")[0][0]
        learned = query(db, 'select p."limit", p.reading from feeds_workspacepace p')[0]
        log_first = sandbox.requests_log()
        sandbox.reset()
        again = queue_run(env, "Shared", write_csv(tmp_path / "part2.csv", purchase_rows(1500, start=3000)))
        wait_for(lambda: runs(db)[again]["status"] == "succeeded", 120, what="the next run")
    finally:
        for cluster in clusters:
            cluster.stop()
        sandbox.stop()

    assert senders == 2  # both processes sent to the workspace
    throttled = sum(entry.status == 429 for entry in log_first)
    assert throttled <= 0.05 * len(log_first)
    assert 130 <= learned[0] <= 150 and learned[1] > 0  # read from mParticle's answers, shared through the row
    # The next run starts from what was learned: no 429 at all.
    assert sandbox.count_by_status().get(429, 0) == 0
    assert len(sandbox.kept()) == 1500


# ------------------------------------------------------------------------------ PostgreSQL + Redis, killed


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL database and Redis (scripts/postgres.sh, scripts/redis.sh). Under CI=true a missing one
    fails the test; elsewhere it is skipped with a notice."""
    found = {}
    for name, script in (("postgres", "postgres.sh"), ("redis", "redis.sh")):
        result = subprocess.run(["bash", str(ROOT / "scripts" / script)], capture_output=True, text=True,
                                timeout=600, check=False)  # fmt: skip
        if result.returncode != 0:
            message = f"{name} is not available: {result.stderr.strip()[-500:]}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(f"NOTICE: the PostgreSQL + Redis fleet test is skipped: {message}")
        found[name] = result.stdout.strip().splitlines()[-1]
    import psycopg
    import redis

    name = f"mpfeed_fleet_test_{os.getpid()}"
    with psycopg.connect(found["postgres"], autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(found["redis"]).flushdb()
    yield found["postgres"].rsplit("/", 1)[0] + f"/{name}", found["redis"]
    with psycopg.connect(found["postgres"], autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_clusters_on_postgresql_and_redis_one_killed_lose_and_duplicate_nothing(services, tmp_path, mapping):
    database_url, redis_url = services
    keys = credentials(6)
    sandbox = Sandbox(dict(keys), rate_limit=None, key_limits={k: 150 for k, _ in keys}, latency=0.05)
    sandbox.start()
    env = site_env(tmp_path / "unused.sqlite3", DATABASE_URL=database_url, REDIS_URL=redis_url, Q_WORKERS="2",
                   MPFEED_CHUNK_SIZE="500")  # fmt: skip
    clusters = [Cluster(env, tmp_path / f"cluster-{n}.log") for n in range(2)]
    import psycopg

    def state() -> list[tuple]:
        with psycopg.connect(database_url) as conn:
            return conn.execute("select id, status, records_rejected from feeds_syncrun order by id").fetchall()

    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        for i, (key, secret) in enumerate(keys):
            add_workspace(env, f"Client {i}", f"{sandbox.url}/v2", mapping, key, secret)
        for cluster in clusters:
            cluster.start()
        valid = 0
        for i in range(len(keys)):
            rows = purchase_rows(1500, start=i * 1500)
            for row in rows[::25]:
                row["amount"] = "not-a-number"  # refused by the mapping, each with its line
            valid += sum(row["amount"] != "not-a-number" for row in rows)
            queue_run(env, f"Client {i}", write_csv(tmp_path / f"c{i}.csv", rows))
        wait_for(lambda: len(sandbox.events()) >= valid * 0.4, 120, what="40 % of the events")
        clusters[0].kill()  # a machine lost: SIGKILL to the whole cluster
        final = wait_for(lambda: (s := state()) and all(r[1] in DONE for r in s) and s, 240, what="every run to end")
    finally:
        for cluster in clusters:
            cluster.stop()
        sandbox.stop()

    assert [status for _, status, _ in final] == ["succeeded_with_rejects"] * len(keys), clusters[1].log()[-3000:]
    assert sum(rejected for _, _, rejected in final) == 1500 * len(keys) - valid
    message_ids = [e["data"]["source_message_id"] for e in sandbox.events()]
    assert len(message_ids) == len(set(message_ids)) == valid
    kept = [(k.api_key, k.source_request_id) for k in sandbox.kept()]
    assert len(kept) == len(set(kept))
