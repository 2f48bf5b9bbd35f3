"""One client's throttling never slows another: two workspaces synced at once by a real two-worker cluster,
one against an Events API that throttles it hard, the other against one that does not."""

from __future__ import annotations

import json

import orjson
import pytest

from sandbox.server import Sandbox
from tests.helpers import MAPPING, SANDBOX_KEY, SANDBOX_SECRET, purchase_rows, write_csv
from tests.processes import Cluster, add_workspace, manage, query, site_env, wait_for

pytestmark = pytest.mark.slow


def run_row(db, run_id):
    [row] = query(
        db,
        "select status, events_accepted, throttled, seconds_waited, finished_at from feeds_syncrun where id = ?",
        run_id,
    )
    return dict(zip(["status", "events_accepted", "throttled", "seconds_waited", "finished_at"], row))


def test_a_throttled_workspace_does_not_slow_another(tmp_path):
    throttled = Sandbox({SANDBOX_KEY: SANDBOX_SECRET}, rate_limit=20)  # a hard limit the workspace does not know
    healthy = Sandbox({SANDBOX_KEY: SANDBOX_SECRET}, rate_limit=None)
    throttled.start()
    healthy.start()
    db = tmp_path / "site.sqlite3"
    env = site_env(db, Q_WORKERS="2", MPFEED_CHUNK_SIZE="1000")
    cluster = Cluster(env, tmp_path / "cluster.log")
    (tmp_path / "mapping.json").write_bytes(orjson.dumps(MAPPING))
    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        runs = {}
        for name, box, users in (("Throttled", throttled, 1500), ("Healthy", healthy, 1500)):
            add_workspace(env, name, f"{box.url}/v2", tmp_path / "mapping.json")
            data = write_csv(tmp_path / f"{name}.csv", purchase_rows(3000, users=users))
            runs[name] = data
        cluster.start()
        # The throttled client's run starts first and keeps a worker busy with 429s.
        ids = {}
        for name in ("Throttled", "Healthy"):
            out = manage(env, "run_sync", "--workspace", name, "--file", str(runs[name]))
            ids[name] = json.loads(out.stdout.strip().splitlines()[-1])["run"]
        done = wait_for(
            lambda: (r := run_row(db, ids["Healthy"]))["status"] == "succeeded" and r, 120, what="the healthy run"
        )
        slow = run_row(db, ids["Throttled"])
        paces = dict(
            query(
                db, "select w.name, p.rate from feeds_workspacepace p join feeds_workspace w on w.id = p.workspace_id"
            )
        )
    finally:
        cluster.stop()
        throttled.stop()
        healthy.stop()

    # The healthy client got everything, without a single 429 or wait, while the other was still held back.
    assert done["events_accepted"] == 3000 == len(healthy.events())
    assert done["throttled"] == 0 and done["seconds_waited"] == 0
    assert slow["status"] in ("running", "waiting", "queued"), slow
    assert slow["throttled"] > 0
    assert throttled.count_by_status().get(429, 0) > 0
    # Each workspace has its own pace: the throttled one was cut, the healthy one kept its full budget.
    assert paces["Healthy"] == pytest.approx(270 * 0.98)
    assert paces["Throttled"] < paces["Healthy"]
