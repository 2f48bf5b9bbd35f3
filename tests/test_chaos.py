"""Chaos: a sandbox that throttles, fails, drops connections and answers slowly, 20,000 records, and the real
django-q2 cluster killed with SIGKILL twice during the run. Every valid record must arrive exactly once."""

from __future__ import annotations

import json
import random
import time

import orjson
import pytest

from sandbox.server import FaultConfig, Sandbox
from tests.helpers import MAPPING, SANDBOX_KEY, SANDBOX_SECRET, purchase_rows, write_csv
from tests.processes import Cluster, add_workspace, manage, query, site_env, wait_for

pytestmark = pytest.mark.slow

RECORDS = 20_000
TERMINAL = ("succeeded", "succeeded_with_rejects", "failed", "blocked")


def run_state(db, run_id: int) -> dict:
    [row] = query(
        db,
        "select status, records_read, events_accepted, records_rejected, error from feeds_syncrun where id = ?",
        run_id,
    )
    return dict(zip(["status", "records_read", "events_accepted", "records_rejected", "error"], row))


def test_nothing_is_lost_or_duplicated_when_the_cluster_is_killed(tmp_path):
    sandbox = Sandbox(
        {SANDBOX_KEY: SANDBOX_SECRET},
        rate_limit=None,
        faults=FaultConfig(
            seed=11, throttle_rate=0.3, error_rate=0.1, drop_rate=0.05, slow_rate=0.05, slow_seconds=0.4, retry_after=1
        ),
    )
    sandbox.start()
    db = tmp_path / "site.sqlite3"
    env = site_env(
        db,
        Q_WORKERS="2",
        MPFEED_LEASE_SECONDS="3",
        MPFEED_CHUNK_SIZE="2500",
        MPFEED_BACKOFF_BASE="0.05",
        MPFEED_BACKOFF_CAP="0.5",
        MPFEED_READ_TIMEOUT="2",
    )
    cluster = Cluster(env, tmp_path / "cluster.log")
    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        (tmp_path / "mapping.json").write_bytes(orjson.dumps(MAPPING))
        add_workspace(env, "Chaos", f"{sandbox.url}/v2", tmp_path / "mapping.json")
        rows = purchase_rows(RECORDS, users=1000)
        rand = random.Random(5)
        invalid = set(rand.sample(range(RECORDS), 200))
        for i in invalid:
            rows[i]["amount"] = "not-a-number"
        data = write_csv(tmp_path / "orders.csv", rows)

        cluster.start()
        queued = manage(env, "run_sync", "--workspace", "Chaos", "--file", str(data))
        run_id = json.loads(queued.stdout.strip().splitlines()[-1])["run"]

        # Kill the whole cluster twice at seeded moments: once early (mid-read or mid-send), once later.
        for threshold in (rand.randint(1500, 4000), rand.randint(9000, 13000)):
            wait_for(lambda t=threshold: run_state(db, run_id)["events_accepted"] >= t, 240, what=f"{threshold} events")
            cluster.kill()
            assert run_state(db, run_id)["status"] not in TERMINAL
            cluster.start()
            # The dead workers' leases (3 s here) run out: the new cluster's senders take up the sending by
            # themselves, and reading that was cut short is queued again by the sweeper (every minute in the
            # cluster) or, here sooner, by an operator.
            time.sleep(3.5)
            manage(env, "resume_stalled")

        state = wait_for(
            lambda: (s := run_state(db, run_id))["status"] in TERMINAL and s, 300, interval=0.5, what="the run to end"
        )
    finally:
        cluster.stop()
        sandbox.stop()

    assert state["status"] == "succeeded_with_rejects", (state, cluster.log()[-3000:])
    assert state["records_rejected"] == len(invalid)
    # Counted at the sandbox: every valid record's event once, each batch id once.
    message_ids = [e["data"]["source_message_id"] for e in sandbox.events()]
    assert len(message_ids) == len(set(message_ids)) == RECORDS - len(invalid)
    kept_ids = [k.source_request_id for k in sandbox.kept()]
    assert len(kept_ids) == len(set(kept_ids))
    stored_ids = {
        i
        for (ids,) in query(db, "select source_request_ids from feeds_delivery where parent_id is null")
        for i in json.loads(ids)
    }
    assert set(kept_ids) == stored_ids  # nothing kept under an id the outbox does not know
    statuses = sandbox.count_by_status()
    assert statuses.get(429, 0) > 0 and statuses.get(0, 0) > 0 and sum(v for k, v in statuses.items() if k >= 500) > 0
