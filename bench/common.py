"""What the benchmarks share: the sandbox Events API in a process of its own, clusters started and stopped as an
operator would, the memory of a process tree, and the database services of a deployment."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sandbox(
    rate: float = 0,
    *,
    credentials: dict[str, str] | None = None,
    key_limits: dict[str, float] | None = None,
    latency: float = 0.0,
    lean: bool = False,
    report_use: bool = True,
    log: Path | None = None,
) -> tuple[subprocess.Popen, str]:
    """`python -m sandbox` on a free port; returns the process and its base URL (no /v2)."""
    port = free_port()
    command = [sys.executable, "-m", "sandbox", "--port", str(port), "--rate-limit", str(rate),
               "--latency", str(latency)]  # fmt: skip
    if lean:
        command.append("--lean")
    if not report_use:
        command.append("--no-use-header")
    for key, limit in (key_limits or {}).items():
        command += ["--key-limit", f"{key}={limit}"]
    creds = credentials or {KEY: SECRET}
    env = {**os.environ, "MPFEED_SANDBOX_CREDENTIALS": ",".join(f"{k}:{v}" for k, v in creds.items())}
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        with contextlib.suppress(requests.ConnectionError):
            requests.get(f"{url}/_sandbox/state?ids=0", timeout=1)
            return proc, url
        time.sleep(0.1)
    raise SystemExit("the sandbox did not start")


def start_cluster(env: dict[str, str], log: Path) -> subprocess.Popen:
    """`manage.py qcluster` in a process group of its own (so that it can be killed whole, like a machine)."""
    return subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=open(log, "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def stop(proc: subprocess.Popen, *, group: bool = True) -> None:
    """Ctrl-C, then SIGKILL whatever is left after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT) if group else proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
        proc.wait()


def tree_memory(pid: int) -> tuple[int, int]:
    """Resident bytes of a process and all its descendants (Linux /proc): the sum of their RSS, which counts the
    pages forked processes share once per process, and of their PSS, which counts a shared page in equal parts."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    rss = pss = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            name, _, value = line.partition(":")
            if name == "Rss":
                rss += int(value.split()[0]) * 1024
            elif name == "Pss":
                pss += int(value.split()[0]) * 1024
    return rss, pss


def postgres_and_redis(label: str) -> tuple[str, str]:
    """A fresh PostgreSQL database and a flushed Redis, set up by scripts/postgres.sh and scripts/redis.sh."""
    base = subprocess.run(["bash", "scripts/postgres.sh"], cwd=ROOT, capture_output=True, text=True, check=True)
    url = base.stdout.strip().splitlines()[-1]
    name = f"mpfeed_{label}_{os.getpid()}"
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    out = subprocess.run(["bash", "scripts/redis.sh"], cwd=ROOT, capture_output=True, text=True, check=True)
    redis_url = out.stdout.strip().splitlines()[-1]
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    return url.rsplit("/", 1)[0] + f"/{name}", redis_url


def site_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a site on `database_url`, with settings of its own only (none leaked from ours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPFEED_", "Q_", "DATABASE_", "REDIS_"))}
    # The benchmarks' files are in tempfile's folders: the source folder is there.
    env.update(DJANGO_SETTINGS_MODULE="mpfeed_site.settings", LOG_LEVEL="WARNING", MPFEED_ALLOW_SANDBOX="true",
               MPFEED_ALLOW_PRIVATE_ENDPOINTS="true", MPFEED_SOURCE_ROOT=tempfile.gettempdir(), DATABASE_URL=database_url, **extra)  # fmt: skip
    return env


# ------------------------------------------------------------------------ one file synced inline, in this process

# The sandbox's credentials (start_sandbox's defaults).
KEY, SECRET = "bench-key", "bench-secret-not-real"

# The mapping of the order files that bench/memory.py and bench/grouping.py write: id,user,email,plan,ts,sku,amount.
ORDER_RULES = {
    "record_key": "id",
    "identities": {"customer_id": "user", "email": "email"},
    "user_attributes": {"plan": "plan"},
    "events": [
        {"name": "Order", "custom_event_type": "transaction", "timestamp": "ts",
         "attributes": {"sku": "sku", "amount": {"field": "amount", "type": "float"}}}
    ],
}  # fmt: skip


def child_site(workdir: Path) -> None:
    """Settings for a benchmark child that runs the site in its own process: a fresh SQLite file in `workdir`,
    which is also the source folder; quiet logs; the sandbox allowed on loopback."""
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}",
        DJANGO_SETTINGS_MODULE="mpfeed_site.settings",
        MPFEED_SOURCE_ROOT=str(workdir),
        LOG_LEVEL="WARNING", DEBUG="false", MPFEED_ALLOW_SANDBOX="true", ALLOWED_HOSTS="localhost",
        MPFEED_ALLOW_PRIVATE_ENDPOINTS="true",
    )  # fmt: skip


def sync_inline(name: str, data: Path, rules: dict = ORDER_RULES) -> tuple[object, float, int]:
    """Set Django up (after child_site), migrate, and sync the file `data` with `rules` to a sandbox of its own
    without a rate limit, as `run_sync --inline` does. Returns (the run, its seconds, the peak resident memory in
    KB just before the sync)."""
    import resource

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from feeds import sync
    from feeds.models import Mapping, SyncJob, Workspace

    proc, url = start_sandbox(0)
    try:
        workspace = Workspace.objects.create(name=name, pod="sandbox", endpoint_url=f"{url}/v2", rate_limit=1e6)
        workspace.set_credentials(KEY, SECRET)
        mapping = Mapping.objects.create(workspace=workspace, rules=rules)
        job = SyncJob.objects.create(workspace=workspace, name=name, mapping=mapping, source_config={"path": str(data)})
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        run = sync.run_inline(sync.start_run(job).pk)
        return run, time.monotonic() - started, baseline
    finally:
        proc.terminate()
        proc.wait()
