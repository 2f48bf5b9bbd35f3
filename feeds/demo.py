"""Demo data for local use: a staff login, a workspace on the built-in sandbox, a mapping, a data file."""

from __future__ import annotations

import csv
import random
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from django.conf import settings
from django.contrib.auth import get_user_model

from feeds.models import Mapping, SyncJob, Workspace
from feeds.sources.build import source_root

DEMO_USER = "demo"
DEMO_WORKSPACE = "Demo Client"
DEMO_KEY = "demo-feed-key"
FIRST_NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim"]
LAST_NAMES = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Berners-Lee",
]


def var_dir() -> Path:
    path = Path(settings.BASE_DIR) / "var"
    path.mkdir(exist_ok=True)
    return path


def _read_or_create(path: Path, make) -> str:
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def sandbox_credentials() -> dict[str, str]:
    """The demo Feed key and secret the local sandbox accepts (kept in var/, never in the repository)."""
    secret = _read_or_create(var_dir() / "sandbox-secret", lambda: secrets.token_urlsafe(24))
    return {DEMO_KEY: secret}


def write_demo_file(path: Path, records: int = 5000, users: int = 400, bad_every: int = 250, seed: int = 7) -> Path:
    """Orders from the last 20 days, a few of them broken on purpose so that rejects can be seen."""
    rand = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "order_id",
                "customer_id",
                "email",
                "first_name",
                "last_name",
                "plan",
                "lifetime_orders",
                "sku",
                "amount",
                "ordered_at",
            ]
        )
        for i in range(records):
            user = rand.randrange(users)
            first, last = FIRST_NAMES[user % 10], LAST_NAMES[(user // 10) % 10]
            row = [
                f"o-{i:07d}",
                f"c-{user:05d}",
                f" {first}.{last}{user}@Example.com ",
                first,
                last,
                rand.choice(["free", "pro", "team"]),
                str(rand.randint(1, 50)),
                f"SKU-{rand.randint(1, 300):04d}",
                f"{rand.randint(100, 50000) / 100:.2f}",
                (now - timedelta(minutes=rand.randint(60, 20 * 24 * 60))).isoformat(),
            ]
            if bad_every and i % bad_every == bad_every - 1:
                row[8 if i % 2 else 9] = "n/a"  # a broken amount or date
            writer.writerow(row)
    return path


def setup_demo(stdout=None) -> dict:
    """Create (or refresh) the demo login, workspace, mapping and job. Idempotent."""
    password = _read_or_create(var_dir() / "demo-password", lambda: secrets.token_urlsafe(12))
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=DEMO_USER, defaults={"email": "demo@example.com"})
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()

    port = settings.MPFEED_DEMO_SANDBOX_PORT
    workspace = Workspace.objects.filter(name=DEMO_WORKSPACE).first() or Workspace(name=DEMO_WORKSPACE)
    workspace.pod = Workspace.Pod.SANDBOX
    workspace.endpoint_url = f"http://127.0.0.1:{port}/v2"
    workspace.environment = Workspace.Environment.DEVELOPMENT
    [(key, secret)] = sandbox_credentials().items()
    workspace.set_credentials(key, secret)

    mapping = Mapping.objects.filter(workspace=workspace, name="default").first() or Mapping(workspace=workspace)
    mapping.update_rules(orjson.loads((Path(settings.BASE_DIR) / "demo" / "mapping.json").read_bytes()))

    # In the source folder: file jobs read nothing outside it.
    data = source_root() / "demo" / "orders.csv"
    if not data.exists():
        write_demo_file(data)
    SyncJob.objects.update_or_create(
        workspace=workspace,
        name="Demo orders",
        defaults={"mapping": mapping, "source_kind": SyncJob.SourceKind.FILE, "source_config": {"path": str(data)}},
    )
    return {"username": DEMO_USER, "password": password, "workspace": workspace, "data": data}
