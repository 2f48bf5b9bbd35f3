"""make_* helpers for tests."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

from feeds.models import Mapping, SyncJob, Workspace

SANDBOX_KEY = "test-feed-key"
SANDBOX_SECRET = "s3cr3t-PLAINTEXT-do-not-leak-8f2a"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released): for a server to start on, or to be refused at."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MAPPING = {
    "record_key": "id",
    "identities": {"customer_id": "user_id", "email": {"field": "email", "transform": ["trim", "lower"]}},
    "user_attributes": {"plan": "plan", "$firstname": "first_name"},
    "events": [
        {
            "name": "Purchase Completed",
            "custom_event_type": "transaction",
            "timestamp": {"field": "ts", "format": "iso8601"},
            "attributes": {"sku": "sku", "amount": {"field": "amount", "type": "float"}},
        }
    ],
}


def make_workspace(sandbox=None, name: str = "Acme", **fields) -> Workspace:
    workspace = Workspace(name=name, pod=Workspace.Pod.SANDBOX, **fields)
    workspace.endpoint_url = fields.get("endpoint_url") or (f"{sandbox.url}/v2" if sandbox else "http://127.0.0.1:9/v2")
    workspace.set_credentials(SANDBOX_KEY, SANDBOX_SECRET)
    return workspace


def make_mapping(workspace: Workspace, rules: dict | None = None, name: str = "default", **options) -> Mapping:
    mapping = Mapping(workspace=workspace, name=name)
    mapping.update_rules(rules or MAPPING, **options)
    return mapping


def make_job(workspace: Workspace, path: Path | str, mapping: Mapping | None = None, **fields) -> SyncJob:
    kind = "ndjson" if str(path).endswith(".ndjson") else "csv"
    return SyncJob.objects.create(
        workspace=workspace,
        name=fields.pop("name", f"job-{Path(path).name}"),
        mapping=mapping or make_mapping(workspace),
        source_kind="file",
        source_config={"path": str(path), "format": kind},
        **fields,
    )


def write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    fieldnames = fieldnames or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def purchase_rows(n: int, users: int | None = None, start: int = 0) -> list[dict]:
    users = users or n
    return [
        {
            "id": f"r{i}",
            "user_id": f"u{i % users}",
            "email": f" User{i % users}@Example.com ",
            "plan": "pro" if i % 2 else "free",
            "first_name": f"Name{i % users}",
            "ts": f"2026-11-{1 + i % 20:02d}T10:00:00Z",
            "sku": f"SKU-{i}",
            "amount": f"{i % 100}.50",
        }
        for i in range(start, start + n)
    ]


class FakeClock:
    """Time for the engine's waits and pace, and optionally the sandbox's token bucket: waits cost nothing."""

    def __init__(self, start: float = 1_000_000.0):
        self.now = start
        self.waits: list[float] = []

    def time(self) -> float:
        return self.now

    monotonic = time

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def run_job(job, clock: FakeClock | None = None, **start):
    """Start a run of `job` and work on it in this process until it stops (waits cost no real time)."""
    import random

    from feeds import sync

    clock = clock or FakeClock()
    run = sync.start_run(job, **start)
    return sync.run_inline(run.pk, sync.Pacing(sleep=clock.sleep, clock=clock.time, rand=random.Random(1)))


def workspace_form_data(workspace: Workspace, **changes) -> dict:
    """The admin workspace form's POST data for `workspace`, with `changes` applied (credentials empty)."""
    data = {
        "name": workspace.name,
        "slug": workspace.slug,
        "pod": workspace.pod,
        "endpoint_url": workspace.endpoint_url,
        "environment": workspace.environment,
        "status": workspace.status,
        "rate_limit": workspace.rate_limit,
        "embed_origins": workspace.embed_origins,
        "new_api_key": "",
        "new_api_secret": "",
        "_save": "Save",
    }
    data.update(changes)
    return data


def messages_of(response) -> list[str]:
    """The Django messages a response's page shows."""
    return [str(m) for m in response.context["messages"]]


def dispatch(*runs, clock: FakeClock | None = None, **options):
    """Send these runs' deliveries with a sender stepping them in this thread (no pool: the test's database
    transaction is the sender's), until none is left to send. Waits cost nothing on `clock`. Returns the
    dispatcher, for what it counted."""
    import random

    from feeds import sync
    from feeds.dispatch import Dispatcher

    clock = clock or FakeClock()
    dispatcher = Dispatcher(
        threads=0,
        poll=options.pop("poll", 0.01),
        pacing=sync.Pacing(sleep=clock.sleep, clock=clock.time, rand=random.Random(1)),
        only={run.pk for run in runs} if runs else None,
        **options,
    )
    dispatcher.run(until=lambda: dispatcher.polls > 0 and not dispatcher.slots and not dispatcher.sendable().exists())
    for run in runs:
        run.refresh_from_db()
    return dispatcher


def make_staff(username: str, *codenames: str):
    """A staff member holding these feeds permissions (all of the app's when none are named): an operator."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(username, f"{username}@example.com", None, is_staff=True)
    permissions = Permission.objects.filter(content_type__app_label="feeds")
    user.user_permissions.set(permissions.filter(codename__in=codenames) if codenames else permissions)
    return user
