"""The client's API secret is stored encrypted and shows up nowhere else: tables, pages, logs, tasks, output.

Each search has a control that plants the secret where the search should find it, so a search that silently
stops looking cannot pass for a clean result.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import random
import zlib
from collections.abc import Iterator

import orjson
import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.contrib import admin
from django.core.management import call_command
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone
from fernet_fields.hkdf import derive_fernet_key

from feeds import sync
from feeds.models import Delivery, SyncJob, SyncRun, Workspace
from tests.helpers import (
    MAPPING,
    SANDBOX_KEY,
    SANDBOX_SECRET,
    make_job,
    make_mapping,
    make_workspace,
    purchase_rows,
    write_csv,
)
from tests.helpers import workspace_form_data as form_data

pytestmark = pytest.mark.django_db

# The secret itself, and the Authorization header that carries it (HTTP Basic: base64 of "key:secret").
BASIC_AUTH = base64.b64encode(f"{SANDBOX_KEY}:{SANDBOX_SECRET}".encode()).decode()
NEEDLES = (SANDBOX_SECRET, BASIC_AUTH)

LOGGERS = ["", "django", "django.db.backends", "django.request", "urllib3", "requests", "django-q", "feeds"]


def shows_secret(value: str | bytes) -> bool:
    if isinstance(value, str):
        return any(needle in value for needle in NEEDLES)
    return any(needle.encode() in bytes(value) for needle in NEEDLES)


# ------------------------------------------------------------------------------------------- helpers


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run_job(job: SyncJob) -> SyncRun:
    run = sync.start_run(job)
    pacing = sync.Pacing(sleep=FakeClock().sleep, rand=random.Random(1))
    while True:
        found = sync.process_run(run.pk, pacing=pacing)
        assert found is not None
        run = found
        if run.status != SyncRun.Status.QUEUED:
            return run


def raw_credentials(workspace_pk: int) -> tuple[bytes, bytes]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key, api_secret FROM feeds_workspace WHERE id = %s", [workspace_pk])
        key, secret = cursor.fetchone()
    return bytes(key), bytes(secret)


def _inflated(data: bytes) -> Iterator[bytes]:
    try:
        inflated = zlib.decompress(data)
    except zlib.error:
        return
    yield inflated


def _readings(value) -> Iterator[bytes]:
    """A column value as stored, and as it reads after the encodings our tables use: zlib (delivery payloads),
    base64 (pickled task arguments), base64 parts joined by ":" (django-q's signed packages)."""
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        yield value
        yield from _inflated(value)
    elif isinstance(value, str):
        yield value.encode()
        for part in value.lstrip(".").split(":"):
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    data = decode(part + "=" * (-len(part) % 4))
                except (ValueError, binascii.Error):
                    continue
                yield data
                yield from _inflated(data)


def columns_showing_secret() -> list[str]:
    """Every table, every row, every column, read with a raw cursor."""
    hits = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            # The table names come from the database's own catalogue.
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            columns = [c[0] for c in cursor.description]
            for row in cursor.fetchall():
                for column, value in zip(columns, row):
                    if any(shows_secret(reading) for reading in _readings(value)):
                        hits.append(f"{table}.{column}")
    return hits


def tasks_showing_secret() -> list[str]:
    """django-q's queue and task tables, decoded the way django-q reads them."""
    from django_q.models import OrmQ, Schedule, Task
    from django_q.signing import SignedPackage

    hits = []
    for queued in OrmQ.objects.all():
        if shows_secret(queued.payload) or shows_secret(repr(SignedPackage.loads(queued.payload))):
            hits.append(f"OrmQ {queued.pk}")
    for task in Task.objects.all():
        if shows_secret(repr((task.name, task.func, task.args, task.kwargs, task.result))):
            hits.append(f"Task {task.pk}")
    for schedule in Schedule.objects.all():
        if shows_secret(repr((schedule.name, schedule.func, schedule.args, schedule.kwargs))):
            hits.append(f"Schedule {schedule.pk}")
    return hits


def admin_pages() -> list[str]:
    """The admin index, and for every model of mpfeed and django-q: the list, the add page and, for a few
    rows, the change, history and delete pages."""
    pages = [reverse("admin:index")]
    for model in admin.site._registry:
        if model._meta.app_label not in ("feeds", "django_q"):
            continue
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages += [reverse(f"{prefix}_changelist"), reverse(f"{prefix}_add")]
        for pk in model._default_manager.values_list("pk", flat=True)[:5]:
            pages += [reverse(f"{prefix}_{view}", args=[pk]) for view in ("change", "history", "delete")]
    return pages


def pages_showing_secret(client) -> list[str]:
    hits, shown = [], 0
    for page in admin_pages():
        response = client.get(page)
        # Add pages of the read-only models answer 403; everything else must render.
        assert response.status_code in (200, 403), page
        shown += response.status_code == 200
        if shows_secret(response.content):
            hits.append(page)
    assert shown >= 20
    return hits


def capture_all_logs(caplog) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    for name in LOGGERS:
        assert logging.getLogger(name).propagate or not name, f"{name} does not reach caplog"


def log_text(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(r) + repr(r.__dict__) for r in records)


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def scenario(caplog, sandbox, tmp_path, staff, monkeypatch) -> dict:
    """Everything that handles the secret, logged at DEBUG (SQL included): staff enter it in the admin, a run
    with rejected records, a run refused by mParticle, a run queued in django-q, a run through django-q."""
    from django_q.conf import Conf

    capture_all_logs(caplog)
    monkeypatch.setattr(connections["default"], "force_debug_cursor", True)

    workspace = Workspace.objects.create(
        name="Acme", slug="acme", pod=Workspace.Pod.SANDBOX, endpoint_url=f"{sandbox.url}/v2"
    )
    data = form_data(workspace, new_api_key=SANDBOX_KEY, new_api_secret=SANDBOX_SECRET)
    assert staff.post(reverse("admin:feeds_workspace_change", args=[workspace.pk]), data).status_code == 302
    workspace.refresh_from_db()
    assert workspace.has_credentials

    rows = purchase_rows(10)
    rows[2]["user_id"] = rows[2]["email"] = ""
    rows[5]["amount"] = "ten"
    orders = write_csv(tmp_path / "orders.csv", rows)
    mapping = make_mapping(workspace)
    finished = run_job(make_job(workspace, orders, mapping, name="orders"))
    assert finished.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS

    refused_workspace = make_workspace(sandbox, name="Refused")
    refused_workspace.set_credentials("refused-key", SANDBOX_SECRET)
    sandbox.add_credentials("refused-key", "what-mparticle-expects")
    refused = run_job(make_job(refused_workspace, orders))
    assert refused.status == SyncRun.Status.BLOCKED

    queued = sync.start_run(make_job(workspace, orders, mapping, name="queued"))
    sync.enqueue_run(queued)

    with monkeypatch.context() as m:
        m.setattr(Conf, "SYNC", True)
        job = make_job(workspace, orders, mapping, name="through django-q")
        response = staff.post(
            reverse("admin:feeds_syncjob_changelist"), {"action": "run_now", "_selected_action": [job.pk]}
        )
        assert response.status_code == 302
    [through_q] = job.runs.all()
    assert through_q.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS

    assert sandbox.events()
    return {"workspace": workspace, "finished": finished, "refused": refused, "queued": queued, "through_q": through_q}


# ------------------------------------------------------------------------------------------- storage


def test_the_credentials_are_stored_as_fernet_tokens_that_decrypt_back(settings):
    workspace = make_workspace()
    raw_key, raw_secret = raw_credentials(workspace.pk)
    fernet = Fernet(derive_fernet_key(settings.FERNET_KEYS[0]))
    for raw, plain in ((raw_key, SANDBOX_KEY), (raw_secret, SANDBOX_SECRET)):
        assert raw.startswith(b"gAAAAA")  # a Fernet token: version byte 0x80, base64
        assert plain.encode() not in raw
        assert fernet.decrypt(raw) == plain.encode()
    assert Workspace.objects.get(pk=workspace.pk).api_secret == SANDBOX_SECRET


def test_the_secret_is_in_no_table(scenario):
    assert columns_showing_secret() == []
    assert tasks_showing_secret() == []


def test_no_admin_page_shows_the_secret(scenario, staff):
    assert pages_showing_secret(staff) == []


def test_no_log_record_carries_the_secret(scenario, caplog):
    records = caplog.get_records("setup")
    names = {r.name for r in records}
    # The HTTP layer, the engine, django-q and the SQL were all heard at DEBUG.
    assert {"urllib3.connectionpool", "feeds.sync", "django-q", "django.db.backends"} <= names, names
    assert any(r.levelno == logging.DEBUG for r in records if r.name.startswith("urllib3"))
    assert not shows_secret(log_text(records))


def test_the_task_queue_and_task_table_hold_only_the_run_id(sandbox, tmp_path, monkeypatch):
    from django_q.conf import Conf
    from django_q.models import OrmQ, Task
    from django_q.signing import SignedPackage

    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(5)))
    run = sync.start_run(job)
    sync.enqueue_run(run)
    [queued] = OrmQ.objects.all()
    with connection.cursor() as cursor:
        cursor.execute("SELECT payload FROM django_q_ormq")
        [(raw,)] = cursor.fetchall()
    assert not shows_secret(raw)
    package = SignedPackage.loads(raw)
    assert package["func"] == "feeds.tasks.process_run"
    assert package["args"] == (run.pk,) and package["kwargs"] == {}
    assert not shows_secret(repr(package))

    # The same task, run the way a worker runs it.
    queued.delete()
    monkeypatch.setattr(Conf, "SYNC", True)
    sync.enqueue_run(run)
    [task] = Task.objects.all()
    assert task.success, task.result
    assert task.args == (run.pk,) and task.kwargs == {}
    assert task.result == SyncRun.Status.SUCCEEDED
    assert tasks_showing_secret() == []
    assert columns_showing_secret() == []


# -------------------------------------------------------------------------------------- the controls


def test_the_searches_find_a_planted_secret(staff, tmp_path):
    """The control: with the secret planted in a text column, a compressed payload and a queued and a finished
    task, every search above reports it."""
    from django_q.models import Task
    from django_q.tasks import async_task

    workspace = make_workspace()
    assert columns_showing_secret() == [] and tasks_showing_secret() == []

    Workspace.objects.filter(pk=workspace.pk).update(status_message=f"refused {SANDBOX_SECRET}")
    run = sync.start_run(make_job(workspace, tmp_path / "orders.csv"))
    body = orjson.dumps([{"note": SANDBOX_SECRET}])
    Delivery.objects.create(run=run, workspace=workspace, sequence=1, payload=Delivery.compress(body))
    assert SANDBOX_SECRET.encode() not in Delivery.compress(body)
    async_task("feeds.tasks.process_run", SANDBOX_SECRET)
    now = timezone.now()
    Task.objects.create(
        id="planted",
        name="planted",
        func="feeds.tasks.process_run",
        args=(BASIC_AUTH,),
        started=now,
        stopped=now,
        success=False,
    )

    assert sorted(set(columns_showing_secret())) == [
        "django_q_ormq.payload",
        "django_q_task.args",
        "feeds_delivery.payload",
        "feeds_workspace.status_message",
    ]
    assert sorted(hit.split()[0] for hit in tasks_showing_secret()) == ["OrmQ", "Task"]
    pages = pages_showing_secret(staff)
    assert reverse("admin:feeds_workspace_change", args=[workspace.pk]) in pages
    assert reverse("admin:django_q_failure_change", args=["planted"]) in pages


def test_the_log_search_hears_urllib3_at_debug(caplog):
    capture_all_logs(caplog)
    logging.getLogger("urllib3.connectionpool").debug("header %s", BASIC_AUTH)
    assert shows_secret(log_text(caplog.records))


# ---------------------------------------------------------------------------------------------- repr


def test_reprs_and_summaries_do_not_show_the_secret(sandbox, tmp_path):
    workspace = make_workspace(sandbox)
    run = run_job(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(3))))
    client = workspace.client()
    assert client.api_secret == SANDBOX_SECRET  # it does hold the secret, and keeps it out of its repr
    for text in (repr(workspace), str(workspace), repr(client), repr(run), repr(run.summary()), repr(run.job)):
        assert not shows_secret(text), text
    assert not shows_secret(repr(client.post("/bulkevents", b"[]")))
    client.close()


def test_a_form_with_errors_does_not_echo_the_typed_secret(staff):
    workspace = Workspace.objects.create(name="Empty", slug="empty")
    data = form_data(workspace, name="", new_api_key=SANDBOX_KEY, new_api_secret=SANDBOX_SECRET)
    response = staff.post(reverse("admin:feeds_workspace_change", args=[workspace.pk]), data)
    assert response.status_code == 200 and response.context["adminform"].form.errors
    assert not shows_secret(response.content)


# ------------------------------------------------------------------------------------------ commands


def test_the_commands_do_not_print_or_log_the_secret(sandbox, tmp_path, monkeypatch, caplog, capsys):
    capture_all_logs(caplog)
    monkeypatch.setenv("MPFEED_API_KEY", SANDBOX_KEY)
    monkeypatch.setenv("MPFEED_API_SECRET", SANDBOX_SECRET)
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "add_workspace", "--name=Acme", "--pod=sandbox", f"--endpoint-url={sandbox.url}/v2", stdout=out, stderr=err
    )
    workspace = Workspace.objects.get(name="Acme")
    assert "credentials set" in out.getvalue()
    assert workspace.api_secret == SANDBOX_SECRET
    assert not shows_secret(raw_credentials(workspace.pk)[1])

    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_bytes(orjson.dumps(MAPPING))
    call_command("load_mapping", str(mapping_file), "--workspace=Acme", stdout=out, stderr=err)
    orders = write_csv(tmp_path / "orders.csv", purchase_rows(5))
    out_before = len(out.getvalue())
    call_command("run_sync", "--workspace=Acme", f"--file={orders}", "--inline", stdout=out, stderr=err)
    summary = orjson.loads(out.getvalue()[out_before:])
    assert summary["status"] == SyncRun.Status.SUCCEEDED and summary["events_accepted"] == 5

    printed = capsys.readouterr()
    for text in (out.getvalue(), err.getvalue(), printed.out, printed.err, log_text(caplog.records)):
        assert not shows_secret(text), text


# ------------------------------------------------------------------------------------------ key rotation

CACHED = ("keys", "fernet_keys", "fernet")


@pytest.fixture
def use_fernet_keys(settings):
    """Set FERNET_KEYS for the encrypted fields, which cache their keys on the field instances."""
    fields = [Workspace._meta.get_field(name) for name in ("api_key", "api_secret")]
    saved = [{name: field.__dict__[name] for name in CACHED if name in field.__dict__} for field in fields]

    def use(*keys: str) -> None:
        settings.FERNET_KEYS = list(keys)
        for field in fields:
            for name in CACHED:
                field.__dict__.pop(name, None)

    yield use
    for field, cached in zip(fields, saved):
        for name in CACHED:
            field.__dict__.pop(name, None)
        field.__dict__.update(cached)


def test_a_secret_saved_under_the_old_key_reads_with_a_new_key_first(use_fernet_keys):
    use_fernet_keys("old-key")
    workspace = make_workspace()
    _, token = raw_credentials(workspace.pk)
    assert Fernet(derive_fernet_key("old-key")).decrypt(token) == SANDBOX_SECRET.encode()

    use_fernet_keys("new-key", "old-key")
    workspace = Workspace.objects.get(pk=workspace.pk)
    assert (workspace.api_key, workspace.api_secret) == (SANDBOX_KEY, SANDBOX_SECRET)

    # rotate_keys re-encrypts it under the new key alone.
    out = io.StringIO()
    call_command("rotate_keys", stdout=out)
    assert "Re-encrypted the credentials of 1 workspace(s)" in out.getvalue()
    _, token = raw_credentials(workspace.pk)
    assert Fernet(derive_fernet_key("new-key")).decrypt(token) == SANDBOX_SECRET.encode()
    with pytest.raises(InvalidToken):
        Fernet(derive_fernet_key("old-key")).decrypt(token)
    use_fernet_keys("new-key")
    assert Workspace.objects.get(pk=workspace.pk).api_secret == SANDBOX_SECRET


def test_a_secret_does_not_read_without_its_key(use_fernet_keys):
    # The control for the test above: the key change really reaches the fields.
    use_fernet_keys("old-key")
    workspace = make_workspace()
    use_fernet_keys("another-key")
    with pytest.raises(InvalidToken):
        Workspace.objects.get(pk=workspace.pk)


def test_credential_link_tokens_are_redacted_from_every_log_line(caplog):
    import logging

    from feeds.logfilters import RedactLinkTokens

    record = logging.LogRecord("django.security.csrf", logging.WARNING, __file__, 1,
                               "Forbidden (%s): %s", ("Origin checking failed", "/connect/abc-DEF_123/"), None)  # fmt: skip
    RedactLinkTokens().filter(record)
    assert record.getMessage() == "Forbidden (Origin checking failed): /connect/…/"
    assert "abc-DEF_123" not in record.getMessage()
