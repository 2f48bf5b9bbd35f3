"""Real processes for end-to-end tests: manage.py commands and a django-q2 cluster on a SQLite file."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


def site_env(db_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPFEED_", "DJANGO_", "Q_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{db_path}",
        DJANGO_SETTINGS_MODULE="mpfeed_site.settings",
        Q_WORKERS="1",
        Q_POLL="0.2",
        PYTHONUNBUFFERED="1",
        MPFEED_ALLOW_SANDBOX="true",
        MPFEED_ALLOW_PRIVATE_ENDPOINTS="true",
        # The tests' files are in temporary folders (pytest's, or tempfile's).
        MPFEED_SOURCE_ROOT=tempfile.gettempdir(),
    )
    env.update(extra)
    return env


def manage(env, *args, input_env=None, check=True, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**env, **(input_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


class ProcessGroup:
    """A `manage.py` command in its own process group, so that a crash can take all its processes at once."""

    command: tuple[str, ...] = ()

    def __init__(self, env, log_path: Path):
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:  # the child has its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", *self.command], cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the whole group: no cleanup, like a machine losing power."""
        if self.proc:
            with contextlib.suppress(ProcessLookupError):  # the group is gone already
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop as Ctrl-C would; then SIGKILL whatever of the group is left (a worker that outlived its parent
        must not go on using the test's database and ports)."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        self.kill()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


class Cluster(ProcessGroup):
    """`manage.py qcluster`: the django-q2 workers."""

    command = ("qcluster",)


class Site(ProcessGroup):
    """`manage.py serve --no-sandbox`: the site (runserver) and a django-q2 cluster, as `make run` starts them."""

    def __init__(self, env, log_path: Path):
        super().__init__(env, log_path)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.command = ("serve", "--no-sandbox", "--addr", self.url.removeprefix("http://"))

    def start(self, timeout: float = 60) -> None:
        super().start()
        proc = self.proc
        assert proc is not None  # started just now

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the site exited with {proc.returncode}:\n{self.log()}")
            try:
                return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout, what=f"the site at {self.url}")


def add_workspace(
    env, name: str, endpoint_url: str, mapping_path: Path, key: str | None = None, secret: str | None = None, *extra
) -> None:
    """`add_workspace` (the key and secret given as the environment, as the README says; the sandbox's test
    credentials unless told) and `load_mapping`, as a partner's engineer sets a workspace up headlessly."""
    from tests.helpers import SANDBOX_KEY, SANDBOX_SECRET

    manage(
        env, "add_workspace", "--name", name, "--pod", "sandbox", "--endpoint-url", endpoint_url, *extra,
        input_env={"MPFEED_API_KEY": key or SANDBOX_KEY, "MPFEED_API_SECRET": secret or SANDBOX_SECRET},
    )  # fmt: skip
    manage(env, "load_mapping", "--workspace", name, str(mapping_path))


def queue_run(env, workspace: str, data: Path) -> int:
    """`run_sync --file` without waiting: the run is queued for the cluster; returns its id."""
    import json

    out = manage(env, "run_sync", "--workspace", workspace, "--file", str(data))
    return json.loads(out.stdout.strip().splitlines()[-1])["run"]


def query(db_path: Path, sql: str, *params) -> list[tuple]:
    """Read the site's database from the test process (read-only, alongside the cluster)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
