"""Fleet benchmark: many client workspaces syncing at once, each at its own mParticle limit.

A partner with WORKSPACES clients: each workspace has its own key, limited at the sandbox to LIMIT batches per
second (its budget in mpfeed says the same), answers come after LATENCY seconds like a real service's, and each
syncs RECORDS records of distinct users (one batch each). All runs are started at once on the default set-up —
one `manage.py qcluster` with its default workers, SQLite, the ORM broker — or, with --postgres-redis, on
PostgreSQL and a Redis broker with --clusters clusters (think machines), one of them killed with SIGKILL
halfway with --kill. The sandbox runs in its own process and keeps ids and counts only.

It prints the batches per second delivered while every workspace was busy (the goal: at least 90 % of
WORKSPACES × LIMIT), the slowest workspace's finish against the median's (goal: at most 1.3×), the peak resident
memory of all the cluster processes together (goal: at most 1 GB; as the sum of their RSS, which counts the memory
forked processes share once for each, and of their PSS, which shares it out), and whether every event arrived exactly once.

    .venv/bin/python bench/fleet.py [--workspaces 100] [--limit 50] [--records 5000] [--latency 0.08]
    .venv/bin/python bench/fleet.py --postgres-redis --clusters 2 --kill
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import postgres_and_redis, site_env, start_cluster, start_sandbox, stop, tree_memory  # noqa: E402

MAPPING = {
    "record_key": "id",
    "identities": {"customer_id": "user"},
    "events": [{"name": "Ping", "attributes": {"n": "n"}}],
}


def key(i: int) -> tuple[str, str]:
    return f"fleet-key-{i}", f"fleet-secret-{i}-not-real"


def at(samples: list[tuple[float, int]], when: float) -> float:
    """The kept batches at `when`, interpolated between samples."""
    for (t0, n0), (t1, n1) in zip(samples, samples[1:]):
        if t0 <= when <= t1:
            return n0 + (n1 - n0) * ((when - t0) / (t1 - t0) if t1 > t0 else 1)
    return samples[-1][1] if when >= samples[-1][0] else samples[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspaces", type=int, default=100)
    parser.add_argument("--limit", type=float, default=50)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.08)
    parser.add_argument("--postgres-redis", action="store_true", help="PostgreSQL and a Redis broker")
    parser.add_argument("--clusters", type=int, default=1)
    parser.add_argument("--kill", action="store_true", help="SIGKILL the first cluster halfway")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mpfeed-fleet-"))
    if args.postgres_redis:
        database_url, redis_url = postgres_and_redis("fleet")
        env = site_env(database_url, REDIS_URL=redis_url)
    else:
        env = site_env(f"sqlite:///{workdir / 'fleet.sqlite3'}")
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from feeds import sync
    from feeds.models import Mapping, SyncJob, SyncRun, Workspace

    keys = dict(key(i) for i in range(args.workspaces))
    sandbox, url = start_sandbox(
        credentials=keys,
        key_limits=dict.fromkeys(keys, args.limit),
        latency=args.latency,
        lean=True,
        log=workdir / "sandbox.log",
    )
    jobs = []
    for i in range(args.workspaces):
        data = workdir / f"client-{i}.csv"
        with open(data, "w") as f:
            f.write("id,user,n\n")
            for r in range(args.records):
                f.write(f"c{i}-{r},user-{r},{r}\n")
        workspace = Workspace.objects.create(
            name=f"Client {i:03d}", pod="sandbox", endpoint_url=f"{url}/v2", rate_limit=args.limit
        )
        workspace.set_credentials(*key(i))
        mapping = Mapping.objects.create(workspace=workspace, rules=MAPPING)
        jobs.append(
            SyncJob.objects.create(
                workspace=workspace, name="export", mapping=mapping, source_config={"path": str(data)}
            )
        )

    clusters = [start_cluster(env, workdir / f"cluster-{n}.log") for n in range(args.clusters)]
    time.sleep(3)  # the clusters' workers and senders start
    state = requests.get(f"{url}/_sandbox/state?ids=0", timeout=10).json()
    started = state["clock"]
    for job in jobs:  # as staff pressing "Run sync now" on every job
        sync.enqueue_run(sync.start_run(job))

    total = args.workspaces * args.records
    samples: list[tuple[float, int]] = []
    peak_rss = peak_pss = 0
    killed_at = None
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            state = requests.get(f"{url}/_sandbox/state?ids=0", timeout=30).json()
            kept = sum(k["batches"] for k in state["keys"].values())
            samples.append((state["clock"], kept))
            memory = [tree_memory(c.pid) for c in clusters if c.poll() is None]
            peak_rss = max(peak_rss, sum(m[0] for m in memory))
            peak_pss = max(peak_pss, sum(m[1] for m in memory))
            if args.kill and killed_at is None and kept >= total / 2:
                os.killpg(clusters[0].pid, signal.SIGKILL)
                clusters[0].wait()
                killed_at = state["clock"] - started
                print(f"killed cluster 0 at {killed_at:.1f} s with {kept} of {total} batches kept", flush=True)
            if kept >= total:
                break
            time.sleep(0.5)
        final = requests.get(f"{url}/_sandbox/state", timeout=120).json()
        runs = list(SyncRun.objects.values_list("status", flat=True))
    finally:
        for proc in clusters:
            if proc.poll() is None:
                stop(proc)
        stop(sandbox, group=False)

    per_key = final["keys"]
    finishes = [per_key[key(i)[0]]["last_kept"] - started for i in range(args.workspaces) if key(i)[0] in per_key]
    busy_from = max(per_key[k]["first_kept"] for k in per_key)
    busy_to = min(per_key[k]["last_kept"] for k in per_key)
    busy_rate = (at(samples, busy_to) - at(samples, busy_from)) / (busy_to - busy_from) if busy_to > busy_from else 0
    ids = final["source_message_ids"]
    capacity = args.workspaces * args.limit
    requests_total = sum(k["requests"] for k in per_key.values())
    throttled = sum(k["throttled"] for k in per_key.values())
    result = {
        "workdir": str(workdir),
        "set_up": "PostgreSQL + Redis" if args.postgres_redis else "default (SQLite, ORM broker)",
        "clusters": args.clusters,
        "killed_at_s": killed_at,
        "workspaces": args.workspaces,
        "kept_batches": final["kept_batches"],
        "busy_batches_per_s": round(busy_rate, 1),
        "busy_share_of_limits": round(busy_rate / capacity, 3),
        "busy_window_s": round(busy_to - busy_from, 1),
        "median_finish_s": round(statistics.median(finishes), 1),
        "slowest_finish_s": round(max(finishes), 1),
        "slowest_over_median": round(max(finishes) / statistics.median(finishes), 2),
        "peak_rss_mb": round(peak_rss / 2**20),
        "peak_pss_mb": round(peak_pss / 2**20),
        "requests": requests_total,
        "throttled": throttled,
        "duplicates_answered": final["duplicates"],
        "every_event_once": len(ids) == len(set(ids)) == total
        and all(per_key[key(i)[0]]["events"] == args.records for i in range(args.workspaces)),
        "runs": {status: runs.count(status) for status in set(runs)},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
