"""Pacing benchmark: how close to a workspace's rate limit mpfeed delivers, and how many 429s it causes.

The sandbox Events API runs in its own process, enforcing RATE batches per second per key with Retry-After.
mpfeed syncs a file sized for about SECONDS of sending at that rate (one batch per record: distinct users),
first with pacing, then without it (429-driven only). For each it prints the achieved batch rate as a share of
the limit, 429s as a share of requests, and whether every record arrived exactly once.

    .venv/bin/python bench/pacing.py [--seconds 60] [--rate 270]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEY, SECRET = "bench-key", "bench-secret-not-real"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sandbox(rate: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "feeds.mparticle.sandbox", "--port", str(port), "--rate-limit", str(rate),
         "--credential", f"{KEY}:{SECRET}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(f"{url}/_sandbox/state", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit("the sandbox did not start")


def one_run(label: str, pacing: bool, records: int, rate: float, data: Path) -> dict:
    from django.conf import settings
    from django.db.models import Max, Min, Sum

    from feeds import sync, tasks
    from feeds.models import Delivery, DeliveryAttempt, Mapping, SyncJob, Workspace, WorkspacePace

    settings.MPFEED_PACING = pacing
    proc, url = start_sandbox(rate)
    try:
        WorkspacePace.objects.all().delete()
        workspace, _ = Workspace.objects.get_or_create(name=f"bench-{label}", defaults={"pod": "sandbox"})
        workspace.pod, workspace.endpoint_url, workspace.rate_limit = "sandbox", f"{url}/v2", rate
        workspace.set_credentials(KEY, SECRET)
        mapping, _ = Mapping.objects.get_or_create(
            workspace=workspace,
            defaults={
                "rules": {"identities": {"customer_id": "user"}, "events": [{"name": "Ping", "attributes": {"n": "n"}}]}
            },
        )
        job, _ = SyncJob.objects.get_or_create(
            workspace=workspace, name="bench", defaults={"mapping": mapping, "source_config": {"path": str(data)}}
        )
        run = sync.start_run(job)
        started = time.monotonic()
        run = tasks.run_inline(run.pk)
        wall = time.monotonic() - started
        attempts = DeliveryAttempt.objects.filter(delivery__run=run)
        window = attempts.aggregate(first=Min("at"), last=Max("at"))
        accepted = Delivery.objects.filter(run=run, state=Delivery.State.ACCEPTED).aggregate(n=Sum("batch_count"))["n"]
        seconds = (window["last"] - window["first"]).total_seconds()
        state = requests.get(f"{url}/_sandbox/state", timeout=10).json()
    finally:
        proc.terminate()
        proc.wait()
    by_status = state["requests_by_status"]
    requests_sent = sum(by_status.values())
    ids = state["source_message_ids"]
    return {
        "label": label,
        "status": run.status,
        "seconds": seconds,
        "wall": wall,
        "batches": accepted,
        "rate": accepted / seconds,
        "share_of_limit": accepted / seconds / rate,
        "requests": requests_sent,
        "throttled": by_status.get("429", 0),
        "throttled_share": by_status.get("429", 0) / requests_sent,
        "exactly_once": len(ids) == len(set(ids)) == records and state["duplicates"] == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=270)
    args = parser.parse_args()
    records = int(args.seconds * args.rate)

    workdir = Path(tempfile.mkdtemp(prefix="mpfeed-bench-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}", DJANGO_SETTINGS_MODULE="mpfeed_site.settings"
    )
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    data = workdir / "pings.csv"
    with open(data, "w") as f:
        f.write("user,n\n")
        for i in range(records):
            f.write(f"u{i},{i}\n")

    print(f"{records} records (one batch each) against a sandbox enforcing {args.rate:.0f} batches/s with Retry-After")
    print(
        f"{'mode':<22}{'batches/s':>10}{'of limit':>10}{'requests':>10}{'429s':>7}{'429 share':>11}{'exactly once':>14}"
    )
    for label, pacing in (("paced", True), ("429-driven (no pacing)", False)):
        r = one_run(label.split()[0], pacing, records, args.rate, data)
        print(
            f"{label:<22}{r['rate']:>10.1f}{r['share_of_limit']:>10.1%}{r['requests']:>10}{r['throttled']:>7}"
            f"{r['throttled_share']:>11.1%}{'yes' if r['exactly_once'] else 'NO':>14}"
        )


if __name__ == "__main__":
    main()
