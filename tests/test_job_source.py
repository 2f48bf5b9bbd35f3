"""A job's source, declared and changed in one place each: the registry of source kinds (feeds/sources/registry.py)
drives the model's choices, the job page's help and examples and the engine; SyncJob.set_source is the one way
the job page, the admin and run_sync change a job's source, so they refuse the same settings and all reset the
reading position when the kind changes."""

from __future__ import annotations

import dataclasses
import io
import json
import sqlite3

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from feeds.models import InboxRecord, SyncJob, SyncRun
from feeds.sources import SourceError, registry
from feeds.sources.build import build_source, is_incremental
from tests.helpers import make_mapping, make_workspace

pytestmark = pytest.mark.django_db

POSITION = {"file": "orders.csv", "offset": 120, "line": 3, "crc": 1}
HEADER = "Bearer tok-3c9e-do-not-show"


@pytest.fixture(autouse=True)
def _sources(settings, tmp_path):
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (id TEXT, email TEXT, plan TEXT, updated_at TEXT)")
    settings.MPFEED_SOURCE_DATABASES = {"crm": f"sqlite:///{db}"}
    settings.MPFEED_HTTP_SOURCE_HOSTS = ["api.partner.example"]
    root = settings.MPFEED_SOURCE_ROOT = tmp_path / "root"
    # The files these jobs name exist (a path that matches no file is refused when saved), the example's too.
    (root / "exports").mkdir(parents=True)
    for name in ("orders.csv", "other.csv", "exports/orders-1.csv.gz"):
        (root / name).write_bytes(b"")


@pytest.fixture
def mapping():
    return make_mapping(make_workspace())


@pytest.fixture
def job(mapping):
    return SyncJob.objects.create(
        workspace=mapping.workspace,
        name="orders",
        mapping=mapping,
        source_kind="file",
        source_config={"path": "orders.csv"},
        cursor=POSITION,
    )


# ------------------------------------------------------------------------------------------------ the registry


@pytest.mark.parametrize("spec", registry.KINDS, ids=lambda spec: spec.value)
def test_each_kind_has_an_example_that_validates_and_builds(spec, job):
    registry.check_settings(spec.value, spec.example, job_id=job.pk)
    secret = "Bearer x" if spec.takes_secret else ""
    source = build_source(spec.value, json.loads(spec.example_text()), secret=secret, job_id=job.pk)
    assert callable(source.read)
    assert spec.help and spec.label
    job.check_source(spec.value, spec.example)  # as the job page and the admin check it


def test_the_models_choices_are_the_registered_kinds():
    registered = [(spec.value, spec.label) for spec in registry.KINDS]
    assert SyncJob.SourceKind.choices == registered
    assert SyncJob._meta.get_field("source_kind").choices == registered
    assert SyncRun._meta.get_field("source_kind").choices == registered
    assert [SyncJob.SourceKind[spec.name] for spec in registry.KINDS] == [spec.value for spec in registry.KINDS]


def test_the_job_page_offers_each_kind_with_its_help_and_example(client, alice, mapping):
    client.force_login(alice)
    response = client.get(reverse("feeds:job_new", args=[mapping.workspace.slug]) + "?kind=sql")
    offered = {kind["value"]: kind for kind in response.context["kinds"]}
    assert list(offered) == [spec.value for spec in registry.KINDS]
    for spec in registry.KINDS:
        assert offered[spec.value]["help"] == spec.help
        assert json.loads(offered[spec.value]["example"]) == spec.example
    assert offered["sql"]["current"]
    assert json.loads(response.context["form"].initial["source_config"]) == registry.source_kind("sql").example


def test_which_kinds_go_on_from_the_last_run_is_declared_with_them():
    assert [spec.value for spec in registry.KINDS if spec.incremental] == ["sql", "http", "inbox"]
    assert not is_incremental("file", {"path": "a.csv"})
    assert is_incremental("file", {"path": "a.csv", "incremental": True})
    assert all(is_incremental(kind, {}) for kind in ("sql", "http", "inbox"))


def test_which_kinds_ask_a_partners_system_is_declared_with_them(job):
    assert [spec.value for spec in registry.KINDS if spec.remote] == ["sql", "http"]
    assert not job.source_is_remote
    job.source_kind = "http"
    assert job.source_is_remote


def test_the_inbox_declares_its_default_schedule_and_that_it_deletes_what_was_forwarded():
    declared = {spec.value: spec for spec in registry.KINDS}
    assert {v for v, s in declared.items() if s.default_schedule_minutes} == {"inbox"}
    assert declared["inbox"].default_schedule_minutes == 1
    assert {v for v, s in declared.items() if s.has_new or s.drop_forwarded} == {"inbox"}


def test_a_new_job_takes_its_kinds_default_schedule_from_the_registry(mapping, monkeypatch):
    inbox = SyncJob.objects.create(workspace=mapping.workspace, name="pushed", mapping=mapping, source_kind="inbox")
    assert inbox.schedule_minutes == 1
    files = SyncJob.objects.create(workspace=mapping.workspace, name="files", mapping=mapping, source_kind="file")
    assert files.schedule_minutes is None
    # The model asks the registry: a kind that declared a default would get it.
    spec = dataclasses.replace(registry.source_kind("file"), default_schedule_minutes=15)
    monkeypatch.setitem(registry._BY_VALUE, "file", spec)
    other = SyncJob.objects.create(workspace=mapping.workspace, name="other", mapping=mapping, source_kind="file")
    assert other.schedule_minutes == 15
    cron = SyncJob.objects.create(
        workspace=mapping.workspace, name="cron", mapping=mapping, source_kind="file", schedule_cron="0 3 * * *"
    )
    assert cron.schedule_minutes is None


def test_the_engine_asks_the_registry_what_is_new_and_what_to_delete(mapping, job):
    inbox = SyncJob.objects.create(workspace=mapping.workspace, name="pushed", mapping=mapping, source_kind="inbox")
    assert not registry.has_new("inbox", inbox.pk, None)
    ids = [InboxRecord.objects.create(job=inbox, data="{}").pk for _ in range(3)]
    assert registry.has_new("inbox", inbox.pk, None)
    assert registry.has_new("inbox", inbox.pk, {"id": ids[1]})
    assert not registry.has_new("inbox", inbox.pk, {"id": ids[2]})
    registry.drop_forwarded("inbox", inbox.pk, {"id": ids[1]})
    assert list(InboxRecord.objects.filter(job=inbox).values_list("pk", flat=True)) == [ids[2]]
    # Kinds that hold nothing for the job: a scheduled run always looks, and nothing is deleted.
    assert registry.has_new("file", job.pk, POSITION)
    registry.drop_forwarded("file", job.pk, POSITION)
    assert InboxRecord.objects.filter(job=inbox).count() == 1


def test_an_unknown_kind_is_a_source_error():
    with pytest.raises(SourceError, match="unknown source kind 'ftp'"):
        build_source("ftp", {})
    with pytest.raises(SourceError, match="unknown source kind 'ftp'"):
        is_incremental("ftp", {})


# ---------------------------------------------------------------------------------------------- the two faces


def page_data(job, **fields) -> dict:
    data = {
        "name": job.name,
        "mapping": job.mapping_id,
        "source_kind": job.source_kind,
        "source_config": json.dumps(job.source_config),
        "endpoint_mode": job.endpoint_mode,
        "enabled": "on",
        "schedule_minutes": "",
        "schedule_cron": "",
        "new_source_secret": "",
    }
    return {**data, **fields}


def admin_data(job, **fields) -> dict:
    return {**page_data(job, **fields), "workspace": job.workspace_id}


def post_page(client, job, **fields):
    url = reverse("feeds:job_edit", args=[job.workspace.slug, job.pk])
    return client.post(url, page_data(job, **fields))


def post_admin(client, job, **fields):
    url = reverse("admin:feeds_syncjob_change", args=[job.pk])
    return client.post(url, admin_data(job, **fields))


FACES = {"page": post_page, "admin": post_admin}


def errors_of(response, field: str) -> list[str]:
    if "adminform" in response.context:
        return list(response.context["adminform"].form.errors.get(field, []))
    return list(response.context["form"].errors.get(field, []))


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize(
    "kind, config",
    [
        ("sql", {"database": "crm", "query": "SELECT * FROM customers"}),
        ("http", {"url": "https://api.partner.example/v2/users"}),
        ("inbox", {}),
    ],
)
def test_both_faces_forget_the_old_position_when_the_kind_changes(client, alice, job, face, kind, config):
    client.force_login(alice)
    response = FACES[face](client, job, source_kind=kind, source_config=json.dumps(config))
    assert response.status_code == 302, errors_of(response, "source_config")
    job.refresh_from_db()
    assert job.source_kind == kind and job.source_config == config and job.cursor is None


@pytest.mark.parametrize("face", FACES)
def test_both_faces_keep_the_position_when_the_same_kind_is_edited(client, alice, job, face):
    client.force_login(alice)
    config = json.dumps({"path": "orders.csv", "format": "csv"})
    assert FACES[face](client, job, source_config=config).status_code == 302
    job.refresh_from_db()
    assert job.source_config == {"path": "orders.csv", "format": "csv"} and job.cursor == POSITION


@pytest.mark.parametrize(
    "kind, config, message",
    [
        # The source folder (MPFEED_SOURCE_ROOT): the same check, with the same words, from both faces.
        ("file", {"path": "/etc/passwd.csv"}, "is outside the source folder"),
        ("file", {"path": "../outside/*.csv"}, "is outside the source folder"),
        ("file", {"path": "*/../../outside/a.csv"}, "'..' cannot follow a wildcard"),
        # What the admin did not check before: a database that is not configured.
        ("sql", {"database": "shop", "query": "SELECT 1"}, "Unknown source database 'shop'"),
        ("http", {"url": "https://evil.example/x"}, "The host evil.example is not in MPFEED_HTTP_SOURCE_HOSTS"),
        ("inbox", {"path": "a.csv"}, "The push inbox takes no settings"),
    ],
)
def test_both_faces_refuse_the_same_settings_with_the_same_message(client, alice, job, kind, config, message):
    client.force_login(alice)
    said = {}
    for face, post in FACES.items():
        response = post(client, job, source_kind=kind, source_config=json.dumps(config))
        assert response.status_code == 200, face
        [said[face]] = errors_of(response, "source_config")
    assert said["page"] == said["admin"] and message in said["page"]
    job.refresh_from_db()
    assert job.source_kind == "file" and job.source_config == {"path": "orders.csv"} and job.cursor == POSITION


def test_both_faces_keep_a_header_for_http_sources_only(client, alice, job):
    client.force_login(alice)
    said = {}
    for face, post in FACES.items():
        response = post(client, job, new_source_secret=HEADER)
        assert response.status_code == 200 and HEADER not in response.content.decode(), face
        [said[face]] = errors_of(response, "new_source_secret")
    assert said["page"] == said["admin"] == "Only HTTP sources send an Authorization header."
    job.refresh_from_db()
    assert job.source_secret == ""


@pytest.mark.parametrize("face", FACES)
def test_both_faces_set_and_remove_the_header(client, alice, job, face):
    client.force_login(alice)
    http = {"source_kind": "http", "source_config": json.dumps({"url": "https://api.partner.example/v1/events"})}
    assert FACES[face](client, job, **http, new_source_secret=HEADER).status_code == 302
    job.refresh_from_db()
    assert job.source_secret == HEADER and job.cursor is None
    assert FACES[face](client, job, **http).status_code == 302  # empty keeps it
    job.refresh_from_db()
    assert job.source_secret == HEADER
    assert FACES[face](client, job, **http, clear_source_secret="on").status_code == 302
    job.refresh_from_db()
    assert job.source_secret == ""


# ------------------------------------------------------------------------------------------ the model's workflow


def test_set_source_resets_the_position_only_when_the_kind_changes(job):
    job.set_source("file", {"path": "other.csv"})
    assert job.cursor == POSITION
    job.set_source("inbox", {})
    assert job.cursor is None and job.source_kind == "inbox"
    job.save()
    job.cursor = {"id": 7}
    job.set_source("inbox", {})  # saved as an inbox job: the same kind now
    assert job.cursor == {"id": 7}


def test_set_source_compares_with_the_kind_last_read_from_the_database(job):
    SyncJob.objects.filter(pk=job.pk).update(source_kind="inbox", source_config={}, cursor={"id": 7})
    job.refresh_from_db()
    job.set_source("inbox", {})
    assert job.cursor == {"id": 7}
    job.refresh_from_db(fields=["cursor"])
    job.set_source("file", {"path": "orders.csv"})
    assert job.cursor is None


def test_set_source_changes_nothing_when_refused(job):
    with pytest.raises(ValidationError) as e:
        job.set_source("sql", {"database": "shop", "query": "SELECT 1"})
    assert e.value.message_dict == {"source_config": ["Unknown source database 'shop' (MPFEED_SOURCE_DATABASES: crm)."]}
    assert job.source_kind == "file" and job.cursor == POSITION


def test_run_sync_refuses_a_file_outside_the_folder_with_the_pages_words(mapping, tmp_path, settings):
    outside = tmp_path / "outside.csv"
    outside.write_text("id\n1\n")
    try:
        SyncJob(workspace=mapping.workspace).set_source("file", {"path": str(outside)})
    except ValidationError as e:
        [said] = e.messages
    with pytest.raises(CommandError) as refused:
        call_command("run_sync", f"--workspace={mapping.workspace.name}", f"--file={outside}", stdout=io.StringIO())
    assert str(refused.value) == said and "outside the source folder" in said
    assert not SyncJob.objects.filter(name__startswith="file:").exists()


@pytest.mark.parametrize("face", FACES)
def test_an_empty_settings_box_means_no_settings_on_both_faces(client, alice, job, face):
    client.force_login(alice)
    assert FACES[face](client, job, source_kind="inbox", source_config="").status_code == 302
    job.refresh_from_db()
    assert job.source_kind == "inbox" and job.source_config == {} and job.cursor is None


# --------------------------------------------------------------------------------- a path that matches no file


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize(
    "config, reason",
    [
        ({"path": "missing.csv"}, "does not exist"),
        ({"path": "nowhere/*.csv", "incremental": True}, "nowhere does not exist"),
        ({"path": "exports/*.ndjson"}, "matches no file"),
    ],
)
def test_a_file_job_whose_path_matches_no_file_is_refused_when_saved(client, alice, job, face, config, reason):
    client.force_login(alice)
    response = FACES[face](client, job, source_config=json.dumps(config))
    assert response.status_code == 200
    [error] = errors_of(response, "source_config")
    assert reason in error
    job.refresh_from_db()
    assert job.source_config == {"path": "orders.csv"}  # nothing changed


def test_an_incremental_glob_may_match_nothing_yet_its_files_arrive_later(job):
    job.set_source("file", {"path": "exports/*.ndjson", "incremental": True})
    assert job.source_config["path"] == "exports/*.ndjson"
    with pytest.raises(ValidationError) as e:
        job.set_source("file", {"path": "exports/*.ndjson"})  # a whole-file job with nothing to read: a typo
    assert 'set "incremental": true' in e.value.message_dict["source_config"][0]
