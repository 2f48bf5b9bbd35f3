"""Pacing benchmark: how close to a workspace's true limit mpfeed delivers, and how many 429s it causes.

The sandbox Events API runs in its own process and enforces a limit on the workspace's key (with Retry-After);
a `manage.py qcluster` with two worker processes sends two runs of the workspace at once (two jobs, one run per
worker process: two processes pace themselves by the one shared, learned pace). One batch per record (distinct
users), requests of up to 100 batches. Scenarios:

- `at-limit`: the budget and the true limit are both 270 batches/s (goal: ≥ 95 % of it, ≤ 2 % 429s);
- `no-pacing`: the same with pacing off, 429-driven only (for comparison);
- `half`: the budget says 270, the true limit is 135 (goal: ≥ 90 % of 135, ≤ 5 % 429s);
- `drop`: the true limit is 270, drops to 100 for a minute, comes back (goal: ≥ 85 % of the true limit over the
  run, ≤ 5 % 429s);
- `half-again`: `half` once more on the same database: the next run starts from what was learned;
- `half-429s`, `drop-429s`: `half` (sized for two minutes) and `drop` against a server that leaves
  X-mp-rate-limit-percentage-used out: the limit is learned from 429s alone.

Shares are of what the true limit allowed between the first and the last batch kept; each scenario gets a fresh
database, except `half-again`. Every record must arrive exactly once.

    .venv/bin/python bench/pacing.py [--seconds 60] [--only half drop]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import site_env, start_cluster, start_sandbox, stop  # noqa: E402

KEY, SECRET = "pace-key", "pace-secret-not-real"
MAPPING = {"identities": {"customer_id": "user"}, "events": [{"name": "Ping", "attributes": {"n": "n"}}]}


def limit_at(schedule: list[tuple[float, float]], t: float) -> float:
    """The true limit `t` seconds after the start: the last step of the schedule at or before t."""
    current = schedule[0][1]
    for start, limit in schedule:
        if t >= start:
            current = limit
    return current


def scenario(label: str, *, budget: float, schedule: list[tuple[float, float]], seconds: float, pacing: bool = True,
             workdir: Path, database: Path | None = None, report_use: bool = True) -> dict:  # fmt: skip
    """Sync enough records for about `seconds` at the schedule's limits; the limit follows the schedule."""
    capacity = sum(limit_at(schedule, t / 10) for t in range(int(seconds * 10))) / 10
    records = int(capacity)
    database = database or workdir / f"{label}.sqlite3"
    env = site_env(f"sqlite:///{database}", Q_WORKERS="2", MPFEED_SEND_LANES="1",
                   MPFEED_PACING="true" if pacing else "false")  # fmt: skip
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from feeds import sync
    from feeds.models import Mapping, SyncJob, SyncRun, Workspace, WorkspacePace

    proc, url = start_sandbox(
        credentials={KEY: SECRET}, key_limits={KEY: schedule[0][1]}, lean=True, report_use=report_use
    )
    cluster = start_cluster(env, workdir / f"{label}-cluster.log")
    try:
        workspace, _ = Workspace.objects.get_or_create(name="Paced", defaults={"pod": "sandbox"})
        workspace.pod, workspace.endpoint_url, workspace.rate_limit = "sandbox", f"{url}/v2", budget
        workspace.set_credentials(KEY, SECRET)
        mapping, _ = Mapping.objects.get_or_create(workspace=workspace, defaults={"rules": MAPPING})
        jobs = []
        for part in range(2):
            data = workdir / f"{label}-{part}.csv"
            with open(data, "w") as f:
                f.write("user,n\n")
                for i in range(records // 2):
                    f.write(f"{label}-{part}-u{i},{i}\n")
            job, _ = SyncJob.objects.get_or_create(
                workspace=workspace, name=f"{label}-{part}", defaults={"mapping": mapping, "source_config": {}}
            )
            job.source_config = {"path": str(data)}
            job.save()
            jobs.append(job)
        time.sleep(3)  # the cluster's workers and senders start
        started = requests.get(f"{url}/_sandbox/state?ids=0", timeout=10).json()["clock"]
        for job in jobs:
            sync.enqueue_run(sync.start_run(job))

        def follow() -> None:  # the true limit changes on schedule, told to the sandbox as mParticle would not
            for at, limit in schedule[1:]:
                time.sleep(
                    max(0.0, started + at - requests.get(f"{url}/_sandbox/state?ids=0", timeout=10).json()["clock"])
                )
                requests.post(f"{url}/_sandbox/config", json={"key_limits": {KEY: limit}}, timeout=10)

        changer = threading.Thread(target=follow, daemon=True)
        changer.start()
        deadline = time.monotonic() + seconds * 4 + 120
        while time.monotonic() < deadline:
            state = requests.get(f"{url}/_sandbox/state?ids=0", timeout=30).json()
            if state["kept_batches"] >= (records // 2) * 2:
                break
            time.sleep(1)
        final = requests.get(f"{url}/_sandbox/state", timeout=60).json()
        statuses = list(SyncRun.objects.filter(job__in=jobs).values_list("status", flat=True))
        pace = WorkspacePace.objects.filter(workspace=workspace).first()  # none with pacing off
    finally:
        stop(cluster)
        stop(proc, group=False)
    stats = final["keys"][KEY]
    first, last = stats["first_kept"] - started, stats["last_kept"] - started
    allowed = sum(limit_at(schedule, first + t / 10) for t in range(int((last - first) * 10))) / 10
    ids = final["source_message_ids"]
    return {
        "label": label,
        "batches": stats["batches"],
        "seconds": last - first,
        "rate": stats["batches"] / (last - first),
        "share": stats["batches"] / allowed,
        "requests": stats["requests"],
        "throttled": stats["throttled"],
        "throttled_share": stats["throttled"] / stats["requests"],
        "learned": pace.limit if pace else float("nan"),
        "exactly_once": len(ids) == len(set(ids)) == (records // 2) * 2,
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="of sending at the scenario's limits")
    parser.add_argument(
        "--only", nargs="+", choices=["at-limit", "no-pacing", "half", "drop", "half-again", "half-429s", "drop-429s"]
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    s = args.seconds
    plan = {
        "at-limit": {"budget": 270, "schedule": [(0, 270)], "seconds": s},
        "no-pacing": {"budget": 270, "schedule": [(0, 270)], "seconds": s, "pacing": False},
        "half": {"budget": 270, "schedule": [(0, 135)], "seconds": s},
        "drop": {"budget": 270, "schedule": [(0, 270), (s, 100), (2 * s, 270)], "seconds": 3 * s},
        "half-again": {"budget": 270, "schedule": [(0, 135)], "seconds": s, "database": "half.sqlite3"},
        # A server that does not report its use: the limit is learned from 429s alone.
        "half-429s": {"budget": 270, "schedule": [(0, 135)], "seconds": 2 * s, "report_use": False},
        "drop-429s": {
            "budget": 270,
            "schedule": [(0, 270), (s, 100), (2 * s, 270)],
            "seconds": 3 * s,
            "report_use": False,
        },
    }
    if args.child:  # one scenario in a process of its own (its own database and Django)
        workdir = Path(args.workdir)
        options = dict(plan[args.child])
        if "database" in options:
            options["database"] = workdir / options["database"]
        print(json.dumps(scenario(args.child, workdir=workdir, **options)))
        return
    workdir = Path(tempfile.mkdtemp(prefix="mpfeed-pacing-"))
    print(f"{'scenario':<12}{'batches':>9}{'seconds':>9}{'batches/s':>11}{'of true':>9}{'requests':>10}{'429s':>6}"
          f"{'429 share':>11}{'learned':>9}{'exactly once':>14}", flush=True)  # fmt: skip
    for label in plan:
        if args.only and label not in args.only:
            continue
        out = subprocess.run(
            [sys.executable, __file__, "--child", label, "--workdir", str(workdir), "--seconds", str(s)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            print(f"{label}: failed\n{out.stderr[-3000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label:<12}{r['batches']:>9}{r['seconds']:>9.1f}{r['rate']:>11.1f}{r['share']:>9.1%}{r['requests']:>10}"
              f"{r['throttled']:>6}{r['throttled_share']:>11.1%}{r['learned']:>9.1f}"
              f"{'yes' if r['exactly_once'] else 'NO':>14}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
