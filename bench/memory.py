"""Memory benchmark: peak memory of a whole file sync must not grow with the file's size.

Each size runs in a fresh process: a temporary SQLite database, a generated CSV file, the sandbox Events API in
its own process (no rate limit), and `run_sync --inline`'s code path. The child reports its peak resident set
size (getrusage ru_maxrss). Goal: the 1,000,000-record sync peaks within 10 % of the 100,000-record one.

    .venv/bin/python bench/memory.py [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def child(records: int) -> None:
    from common import child_site, sync_inline  # bench/common.py

    workdir = Path(tempfile.mkdtemp(prefix="mpfeed-mem-"))
    child_site(workdir)
    data = workdir / "orders.csv"
    rand = random.Random(1)
    with open(data, "w") as f:
        f.write("id,user,email,plan,ts,sku,amount\n")
        for i in range(records):
            u = rand.randrange(records // 4)
            f.write(
                f"o{i},u{u},user{u}@example.com,pro,2026-11-{1 + i % 20:02d}T10:00:00Z,SKU-{i % 999},{i % 500}.25\n"
            )
    run, seconds, baseline = sync_inline("mem", data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"records": records, "status": run.status, "events": run.events_accepted, "seconds": seconds,
                      "peak_kb": peak, "before_sync_kb": baseline}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    results = []
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size)], capture_output=True, text=True, check=True
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'records':>10}{'status':>12}{'events':>10}{'seconds':>9}{'records/s':>11}{'peak RSS MB':>13}")
    for r in results:
        print(
            f"{r['records']:>10}{r['status']:>12}{r['events']:>10}{r['seconds']:>9.1f}"
            f"{r['records'] / r['seconds']:>11,.0f}{r['peak_kb'] / 1024:>13.1f}"
        )
    if len(results) > 1:
        growth = results[-1]["peak_kb"] / results[0]["peak_kb"] - 1
        print(
            f"peak memory growth from {results[0]['records']} to {results[-1]['records']} records: {growth:+.1%} (goal within 10%)"
        )


if __name__ == "__main__":
    main()
