"""Grouping benchmark: batches per user when a run sends each user's records together, whatever their order.

Each size runs in a fresh process: a temporary SQLite database, a generated CSV file ordered by time with users
interleaved at random (as partner exports are), the sandbox Events API in its own process (no rate limit), and
`run_sync --inline`'s code path. Reported per size: batches per distinct user (goal ≤ 1.05), the delivery time
that implies at mParticle's default 270 batches/s beside the time the previous grouping (per chunk of 2,000
records, computed from the same file) implied, the run's records/s, and the peak resident set size (goal: the
1,000,000-record run within 10 % of the 100,000-record one).

    .venv/bin/python bench/grouping.py [--sizes 100000:5000 1000000:50000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
KEY, SECRET = "bench-key", "bench-secret-not-real"  # the sandbox's credentials (bench/common.py)
LIMIT = 270  # mParticle's default batches per second per workspace
OLD_CHUNK = 2000  # the grouping before: a user's records were grouped within a chunk of this many records


def child(records: int, users: int) -> None:
    from common import start_sandbox  # bench/common.py

    workdir = Path(tempfile.mkdtemp(prefix="mpfeed-grouping-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}",
        DJANGO_SETTINGS_MODULE="mpfeed_site.settings",
        MPFEED_SOURCE_ROOT=str(workdir),
        LOG_LEVEL="WARNING", DEBUG="false", MPFEED_ALLOW_SANDBOX="true", ALLOWED_HOSTS="localhost",
        MPFEED_ALLOW_PRIVATE_ENDPOINTS="true",
    )  # fmt: skip
    data = workdir / "orders.csv"
    rand = random.Random(1)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    old_batches = 0
    seen: set[int] = set()
    everyone: set[int] = set()
    with open(data, "w") as f:
        f.write("id,user,email,plan,ts,sku,amount\n")
        for i in range(records):
            u = rand.randrange(users)
            seen.add(u)
            everyone.add(u)
            if (i + 1) % OLD_CHUNK == 0 or i == records - 1:
                old_batches += len(seen)
                seen = set()
            ts = (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.write(f"o{i},u{u},user{u}@example.com,pro,{ts},SKU-{i % 999},{i % 500}.25\n")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from feeds import sync
    from feeds.models import Mapping, SyncJob, Workspace

    proc, url = start_sandbox(0)
    try:
        workspace = Workspace.objects.create(name="grouping", pod="sandbox", endpoint_url=f"{url}/v2", rate_limit=1e6)
        workspace.set_credentials(KEY, SECRET)
        rules = {
            "record_key": "id",
            "identities": {"customer_id": "user", "email": "email"},
            "user_attributes": {"plan": "plan"},
            "events": [
                {"name": "Order", "custom_event_type": "transaction", "timestamp": "ts",
                 "attributes": {"sku": "sku", "amount": {"field": "amount", "type": "float"}}}
            ],
        }  # fmt: skip
        mapping = Mapping.objects.create(workspace=workspace, rules=rules)
        job = SyncJob.objects.create(
            workspace=workspace, name="grouping", mapping=mapping, source_config={"path": str(data)}
        )
        started = time.monotonic()
        run = sync.run_inline(sync.start_run(job).pk)
        seconds = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    distinct = len(everyone)
    print(json.dumps({
        "records": records, "users": users, "status": run.status, "events": run.events_accepted,
        "batches": run.batches, "old_batches": old_batches, "requests": run.requests, "seconds": seconds,
        "peak_kb": peak, "distinct_users": distinct,
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["100000:5000", "1000000:50000"], help="records:users")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        records, users = map(int, args.child.split(":"))
        child(records, users)
        return
    results = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", size], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{'records':>9}{'users':>7}{'status':>11}{'batches':>9}{'per user':>9}{'at 270/s':>10}"
        f"{'before':>9}{'b. per user':>12}{'seconds':>9}{'records/s':>11}{'peak RSS MB':>13}"
    )
    for r in results:
        print(
            f"{r['records']:>9}{r['users']:>7}{r['status']:>11}{r['batches']:>9}"
            f"{r['batches'] / r['distinct_users']:>9.3f}{r['batches'] / LIMIT:>9.0f}s"
            f"{r['old_batches'] / LIMIT:>8.0f}s{r['old_batches'] / r['distinct_users']:>12.2f}"
            f"{r['seconds']:>9.1f}{r['records'] / r['seconds']:>11,.0f}{r['peak_kb'] / 1024:>13.1f}"
        )
    if len(results) > 1:
        growth = results[-1]["peak_kb"] / results[0]["peak_kb"] - 1
        print(
            f"peak memory growth from {results[0]['records']} to {results[-1]['records']} records: {growth:+.1%}"
            " (goal within 10%)"
        )


if __name__ == "__main__":
    main()
