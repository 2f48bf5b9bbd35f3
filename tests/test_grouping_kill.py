"""kill -9 of the whole django-q2 cluster while a run sets records aside, and again while it sends them: every
event arrives exactly once, each user's events still in one batch."""

from __future__ import annotations

import json
import time

import orjson
import pytest

from sandbox.server import Sandbox
from tests.helpers import MAPPING, SANDBOX_KEY, SANDBOX_SECRET, purchase_rows, write_csv
from tests.processes import Cluster, add_workspace, manage, query, site_env, wait_for

pytestmark = pytest.mark.slow

RECORDS, USERS = 30_000, 3_000
TERMINAL = ("succeeded", "succeeded_with_rejects", "failed", "blocked")


def state(db, run_id: int) -> dict:
    names = ["status", "source_done", "set_aside_records", "events_accepted", "events", "error"]
    sql = (
        "select status, source_done, set_aside_records, events_accepted, events, error from feeds_syncrun where id = ?"
    )
    [row] = query(db, sql, run_id)
    return dict(zip(names, row))


def test_a_cluster_killed_while_setting_aside_and_while_sending_loses_and_duplicates_nothing(tmp_path):
    sandbox = Sandbox({SANDBOX_KEY: SANDBOX_SECRET}, rate_limit=None, latency=0.02)
    sandbox.start()
    db = tmp_path / "site.sqlite3"
    env = site_env(db, Q_WORKERS="1", MPFEED_LEASE_SECONDS="3", MPFEED_CHUNK_SIZE="500", MPFEED_SEND_THREADS="2")
    cluster = Cluster(env, tmp_path / "cluster.log")
    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        (tmp_path / "mapping.json").write_bytes(orjson.dumps(MAPPING))
        add_workspace(env, "Grouped", f"{sandbox.url}/v2", tmp_path / "mapping.json")
        data = write_csv(tmp_path / "orders.csv", purchase_rows(RECORDS, users=USERS))  # users interleaved
        cluster.start()
        queued = manage(env, "run_sync", "--workspace", "Grouped", "--file", str(data))
        run_id = json.loads(queued.stdout.strip().splitlines()[-1])["run"]

        # 1. While setting aside: records are set aside, the source not read to the end.
        wait_for(lambda: (s := state(db, run_id))["set_aside_records"] > 0 and not s["source_done"], 120,
                 interval=0.02, what="records set aside")  # fmt: skip
        cluster.kill()
        killed_at = state(db, run_id)
        assert not killed_at["source_done"] and killed_at["events_accepted"] == 0
        cluster.start()
        time.sleep(3.5)  # the dead reader's lease runs out; the sweeper (here, an operator) queues it again
        manage(env, "resume_stalled")

        # 2. While sending: some of the built deliveries accepted, others not yet.
        wait_for(lambda: 0 < state(db, run_id)["events_accepted"] < RECORDS * 0.8, 180, interval=0.02,
                 what="sending under way")  # fmt: skip
        cluster.kill()
        assert state(db, run_id)["status"] not in TERMINAL
        cluster.start()
        time.sleep(3.5)
        manage(env, "resume_stalled")

        final = wait_for(lambda: (s := state(db, run_id))["status"] in TERMINAL and s, 300, interval=0.5,
                         what="the run to end")  # fmt: skip
    finally:
        cluster.stop()
        sandbox.stop()

    assert final["status"] == "succeeded", (final, cluster.log()[-3000:])
    message_ids = [e["data"]["source_message_id"] for e in sandbox.events()]
    assert len(message_ids) == len(set(message_ids)) == RECORDS
    kept = sandbox.kept()
    kept_ids = [k.source_request_id for k in kept]
    assert len(kept_ids) == len(set(kept_ids))
    # Each user's events in one batch, the kills notwithstanding (a slice is rebuilt with the same ids).
    users = [k.batch["user_identities"]["customer_id"] for k in kept]
    assert len(users) == len(set(users)) == USERS
    assert query(db, "select count(*) from feeds_setasiderecord") == [(0,)]
