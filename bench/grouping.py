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
import random
import resource
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
LIMIT = 270  # mParticle's default batches per second per workspace
OLD_CHUNK = 2000  # the grouping before: a user's records were grouped within a chunk of this many records


def child(records: int, users: int) -> None:
    from common import child_site, sync_inline  # bench/common.py

    workdir = Path(tempfile.mkdtemp(prefix="mpfeed-grouping-"))
    child_site(workdir)
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
    run, seconds, _ = sync_inline("grouping", data)
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
