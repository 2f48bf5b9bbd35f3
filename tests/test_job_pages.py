"""The staff job pages: sources and their settings, schedules, the write-only header, the push inbox token."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from django_q.models import Schedule

from feeds.models import SyncJob
from tests.helpers import make_mapping, make_workspace, purchase_rows, write_csv

pytestmark = pytest.mark.django_db

HEADER = "Bearer partner-token-PLAINTEXT-do-not-leak-31c9"


# ------------------------------------------------------------------------------------------------ the cast


@pytest.fixture
def workspace():
    return make_workspace()


@pytest.fixture
def mapping(workspace):
    return make_mapping(workspace)


@pytest.fixture(autouse=True)
def _sources(settings, tmp_path):
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (id TEXT, email TEXT, plan TEXT, updated_at TEXT)")
    settings.MPFEED_SOURCE_DATABASES = {"crm": f"sqlite:///{db}"}
    settings.MPFEED_HTTP_SOURCE_HOSTS = ["api.partner.example"]
    settings.MPFEED_SOURCE_ROOT = tmp_path
    # The files these jobs name exist: a path that matches no file is refused when saved.
    (tmp_path / "exports").mkdir()
    for name in ("orders.csv", "other.ndjson"):
        (tmp_path / name).write_bytes(b"")


def new_url(workspace) -> str:
    return f"/workspaces/{workspace.slug}/jobs/new/"


def edit_url(job) -> str:
    return f"/workspaces/{job.workspace.slug}/jobs/{job.pk}/"


def form_data(mapping, **fields) -> dict:
    data = {
        "name": "orders",
        "mapping": mapping.pk,
        "source_kind": "file",
        "source_config": json.dumps({"path": "orders.csv"}),
        "endpoint_mode": "realtime",
        "enabled": "on",
        "schedule_minutes": "",
        "schedule_cron": "",
        "new_source_secret": "",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def errors_of(response, field: str) -> list[str]:
    return response.context["form"].errors.get(field, [])


def job_schedules():
    return Schedule.objects.filter(name__startswith="mpfeed-job-")


def make_file_job(workspace, mapping, **fields) -> SyncJob:
    fields = {"source_config": {"path": "orders.csv"}, **fields}
    return SyncJob.objects.create(workspace=workspace, mapping=mapping, name="orders", source_kind="file", **fields)


# ------------------------------------------------------------------------------------------------- access


@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_users_are_sent_to_the_login_page(client, workspace, mapping, method):
    job = make_file_job(workspace, mapping)
    for url in (new_url(workspace), edit_url(job), edit_url(job) + "inbox-token/", edit_url(job) + "preview/"):
        response = getattr(client, method)(url)
        assert response.status_code == 302
        assert response.url.startswith("/admin/login/?next=")
    assert SyncJob.objects.count() == 1


def test_users_who_are_not_staff_are_refused(client, bob, workspace, mapping):
    job = make_file_job(workspace, mapping)
    client.force_login(bob)
    assert client.get(new_url(workspace)).status_code == 403
    assert client.post(new_url(workspace), form_data(mapping, name="sneaky")).status_code == 403
    assert client.get(edit_url(job)).status_code == 403
    assert client.post(edit_url(job) + "inbox-token/").status_code == 403
    assert list(SyncJob.objects.values_list("name", flat=True)) == ["orders"]


def test_a_job_of_another_workspace_is_not_found(staff, workspace, mapping):
    other = make_workspace(name="Other")
    job = make_file_job(workspace, mapping)
    assert staff.get(f"/workspaces/{other.slug}/jobs/{job.pk}/").status_code == 404


# ------------------------------------------------------------------------------------------------- create


def test_the_new_page_starts_from_an_example_of_the_chosen_kind(staff, workspace, mapping):
    response = staff.get(new_url(workspace) + "?kind=sql")
    assert response.status_code == 200
    form = response.context["form"]
    assert form["source_kind"].value() == "sql"
    assert json.loads(form["source_config"].value())["database"] == "crm"
    assert form["mapping"].value() == mapping.pk  # the workspace's only mapping
    content = response.content.decode()
    assert "Generate a new inbox token" not in content
    assert 'id="secret-state">not set' in content


def test_staff_create_a_file_job(staff, workspace, mapping):
    config = {"path": "exports/*.csv.gz", "format": "csv", "incremental": True}
    response = staff.post(new_url(workspace), form_data(mapping, source_config=json.dumps(config)))
    job = SyncJob.objects.get()
    assert response.status_code == 302 and response.url == edit_url(job)
    assert (job.workspace, job.mapping, job.name, job.source_kind) == (workspace, mapping, "orders", "file")
    assert job.source_config == config
    assert job.endpoint_mode == "realtime" and job.enabled
    assert job.source_secret == "" and not job.is_scheduled
    assert not job_schedules().exists()


def test_staff_create_a_sql_job(staff, workspace, mapping):
    config = {"database": "crm", "query": "SELECT id, email FROM customers", "cursor_column": "id"}
    staff.post(new_url(workspace), form_data(mapping, source_kind="sql", source_config=json.dumps(config)))
    job = SyncJob.objects.get()
    assert job.source_kind == "sql" and job.source_config == config


def test_staff_create_an_http_job_with_its_authorization_header(staff, workspace, mapping):
    config = {"url": "https://api.partner.example/v1/events", "records_path": "data"}
    data = form_data(
        mapping, source_kind="http", source_config=json.dumps(config), new_source_secret=HEADER, endpoint_mode="auto"
    )
    assert staff.post(new_url(workspace), data).status_code == 302
    job = SyncJob.objects.get()
    assert job.source_kind == "http" and job.source_config == config
    assert job.source_secret == HEADER and job.endpoint_mode == "auto"


def test_staff_create_an_inbox_job_that_runs_every_minute(staff, workspace, mapping):
    staff.post(new_url(workspace), form_data(mapping, name="pushes", source_kind="inbox", source_config="{}"))
    job = SyncJob.objects.get()
    assert job.source_kind == "inbox" and job.source_config == {}
    schedule = Schedule.objects.get(name=f"mpfeed-job-{job.pk}")
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1
    # Empty settings are an empty object.
    staff.post(new_url(workspace), form_data(mapping, name="pushes 2", source_kind="inbox", source_config=""))
    assert SyncJob.objects.get(name="pushes 2").source_config == {}


# ---------------------------------------------------------------------------------------------------- edit


def test_staff_edit_a_file_job(staff, workspace, mapping):
    job = make_file_job(workspace, mapping)
    response = staff.get(edit_url(job))
    assert response.status_code == 200
    assert json.loads(response.context["form"]["source_config"].value()) == {"path": "orders.csv"}
    config = {"path": "other.ndjson", "incremental": True}
    response = staff.post(
        edit_url(job),
        form_data(mapping, name="orders v2", source_config=json.dumps(config), endpoint_mode="historical"),
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.name == "orders v2" and job.source_config == config and job.endpoint_mode == "historical"


@pytest.mark.parametrize(
    "kind, config",
    [
        ("sql", {"database": "crm", "query": "SELECT * FROM customers"}),
        ("http", {"url": "https://api.partner.example/v2/users"}),
        ("inbox", {}),
    ],
)
def test_changing_the_source_kind_forgets_the_old_position(staff, workspace, mapping, kind, config):
    job = make_file_job(workspace, mapping, cursor={"file": "orders.csv", "offset": 120})
    response = staff.post(edit_url(job), form_data(mapping, source_kind=kind, source_config=json.dumps(config)))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.source_kind == kind and job.source_config == config and job.cursor is None


def test_editing_the_settings_of_the_same_kind_keeps_the_position(staff, workspace, mapping):
    job = make_file_job(workspace, mapping, cursor={"file": "orders.csv", "offset": 120})
    staff.post(edit_url(job), form_data(mapping, source_config=json.dumps({"path": "orders.csv", "format": "csv"})))
    job.refresh_from_db()
    assert job.cursor == {"file": "orders.csv", "offset": 120}


# -------------------------------------------------------------------------------------------------- errors


def test_settings_that_are_not_json_are_refused_next_to_the_field(staff, workspace, mapping):
    response = staff.post(new_url(workspace), form_data(mapping, source_config='{"path": "a.csv",}'))
    assert response.status_code == 200
    [error] = errors_of(response, "source_config")
    assert error.startswith("This is not valid JSON: ") and "line 1" in error
    # Shown right under the settings, and what was typed is kept to be corrected.
    content = response.content.decode()
    textarea_end = content.index("</textarea>", content.index('name="source_config"'))
    assert content.index("This is not valid JSON", textarea_end) - textarea_end < 400
    assert "a.csv" in content
    assert not SyncJob.objects.exists()


def test_settings_must_be_an_object(staff, workspace, mapping):
    response = staff.post(new_url(workspace), form_data(mapping, source_config='["/data/a.csv"]'))
    assert errors_of(response, "source_config") == ['The source settings must be a JSON object: {"name": value, …}.']


@pytest.mark.parametrize(
    "kind, config, message",
    [
        ("file", {"path": "/data/a.csv", "colour": "red"}, "Unknown file source setting colour"),
        ("file", {}, "The file source needs a path"),
        ("sql", {"database": "crm", "query": "DELETE FROM customers"}, "The query must be a SELECT"),
        ("sql", {"database": "shop", "query": "SELECT 1"}, "Unknown source database 'shop'"),
        ("http", {"url": "https://evil.example/x"}, "The host evil.example is not in MPFEED_HTTP_SOURCE_HOSTS"),
        ("inbox", {"path": "/data/a.csv"}, "The push inbox takes no settings"),
    ],
)
def test_settings_a_source_cannot_work_with_are_refused(staff, workspace, mapping, kind, config, message):
    response = staff.post(new_url(workspace), form_data(mapping, source_kind=kind, source_config=json.dumps(config)))
    assert response.status_code == 200
    [error] = errors_of(response, "source_config")
    assert error.startswith(message)
    assert not SyncJob.objects.exists()


def test_file_paths_stay_inside_the_source_root(staff, workspace, mapping, settings, tmp_path):
    settings.MPFEED_SOURCE_ROOT = str(tmp_path / "exports")
    for path in ("/etc/passwd.csv", f"{tmp_path}/exports/../secrets.csv", "../a.csv", f"{tmp_path}/*/a.csv"):
        response = staff.post(new_url(workspace), form_data(mapping, source_config=json.dumps({"path": path})))
        assert response.status_code == 200, path
        assert "MPFEED_SOURCE_ROOT" in errors_of(response, "source_config")[0]
    (tmp_path / "exports" / "2026").mkdir()
    (tmp_path / "exports" / "2026" / "a.csv").write_bytes(b"")
    path = f"{tmp_path}/exports/**/*.csv"
    assert (
        staff.post(new_url(workspace), form_data(mapping, source_config=json.dumps({"path": path}))).status_code == 302
    )


def test_a_mapping_of_another_workspace_cannot_be_chosen(staff, workspace, mapping):
    foreign = make_mapping(make_workspace(name="Other"))
    response = staff.post(new_url(workspace), {**form_data(mapping), "mapping": foreign.pk})
    assert errors_of(response, "mapping")
    assert str(foreign.pk) not in [o["value"] for o in _options(response, "mapping")]
    assert not SyncJob.objects.exists()


def _options(response, name):
    field = response.context["form"][name]
    return [{"value": str(choice.data["value"])} for choice in field.subwidgets]


def test_two_jobs_of_a_workspace_cannot_share_a_name(staff, workspace, mapping):
    make_file_job(workspace, mapping)
    response = staff.post(new_url(workspace), form_data(mapping, name="orders"))
    assert errors_of(response, "name") == ["This workspace already has a job with this name."]


# ------------------------------------------------------------------------------------------------ schedules


def test_an_interval_is_kept_as_a_django_q_schedule(staff, workspace, mapping):
    staff.post(new_url(workspace), form_data(mapping, schedule_minutes="15"))
    job = SyncJob.objects.get()
    schedule = Schedule.objects.get(name=f"mpfeed-job-{job.pk}")
    assert schedule.func == "feeds.tasks.run_scheduled_job" and schedule.args == f"({job.pk},)"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 15
    assert "every 15 min" in staff.get(edit_url(job)).content.decode()


def test_a_cron_expression_is_kept_as_a_django_q_schedule_and_follows_the_job(staff, workspace, mapping):
    staff.post(new_url(workspace), form_data(mapping, schedule_cron="*/15 * * * *"))
    job = SyncJob.objects.get()
    schedule = Schedule.objects.get(name=f"mpfeed-job-{job.pk}")
    assert schedule.schedule_type == Schedule.CRON and schedule.cron == "*/15 * * * *"
    # Disabled: no schedule; enabled again with an interval: a schedule every 30 minutes.
    staff.post(edit_url(job), form_data(mapping, schedule_cron="*/15 * * * *", enabled=None))
    assert not Schedule.objects.filter(name=f"mpfeed-job-{job.pk}").exists()
    staff.post(edit_url(job), form_data(mapping, schedule_minutes="30"))
    schedule = Schedule.objects.get(name=f"mpfeed-job-{job.pk}")
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 30
    staff.post(edit_url(job), form_data(mapping))
    assert not Schedule.objects.filter(name=f"mpfeed-job-{job.pk}").exists()


@pytest.mark.parametrize(
    "minutes, cron, field, message",
    [
        ("15", "*/5 * * * *", "schedule_cron", "Give either an interval in minutes or a cron expression."),
        ("", "every day", "schedule_cron", "'every day' is not a valid cron expression."),
        ("0", "", "schedule_minutes", "Ensure this value is greater than or equal to 1."),
    ],
)
def test_a_schedule_that_cannot_work_is_refused(staff, workspace, mapping, minutes, cron, field, message):
    response = staff.post(new_url(workspace), form_data(mapping, schedule_minutes=minutes, schedule_cron=cron))
    assert errors_of(response, field) == [message]
    assert not SyncJob.objects.exists() and not job_schedules().exists()


# ------------------------------------------------------------------------------------------ write-only header


def test_the_authorization_header_is_never_shown_back(staff, workspace, mapping):
    config = json.dumps({"url": "https://api.partner.example/v1/events"})
    staff.post(
        new_url(workspace), form_data(mapping, source_kind="http", source_config=config, new_source_secret=HEADER)
    )
    job = SyncJob.objects.get()
    content = staff.get(edit_url(job)).content.decode()
    assert HEADER not in content and "partner-token" not in content
    assert 'id="secret-state">set' in content
    # A refused form does not echo the header either, and the stored one is kept.
    response = staff.post(
        edit_url(job), form_data(mapping, source_kind="http", source_config="{", new_source_secret="Bearer new-one-77")
    )
    assert response.status_code == 200 and "new-one-77" not in response.content.decode()
    assert HEADER not in response.content.decode()
    job.refresh_from_db()
    assert job.source_secret == HEADER
    # Empty keeps it; the box removes it.
    staff.post(edit_url(job), form_data(mapping, source_kind="http", source_config=config))
    job.refresh_from_db()
    assert job.source_secret == HEADER
    staff.post(edit_url(job), form_data(mapping, source_kind="http", source_config=config, clear_source_secret="on"))
    job.refresh_from_db()
    assert job.source_secret == ""


def test_a_header_is_only_for_http_sources_and_on_one_line(staff, workspace, mapping):
    response = staff.post(new_url(workspace), form_data(mapping, new_source_secret=HEADER))
    assert errors_of(response, "new_source_secret") == ["Only HTTP sources send an Authorization header."]
    config = json.dumps({"url": "https://api.partner.example/v1/events"})
    response = staff.post(
        new_url(workspace),
        form_data(mapping, source_kind="http", source_config=config, new_source_secret="Bearer a\nX-Evil: 1"),
    )
    assert errors_of(response, "new_source_secret") == ["The header value must be on one line."]
    assert not SyncJob.objects.exists()


# ---------------------------------------------------------------------------------------------- push inbox


def _token_in(content: str) -> str | None:
    match = re.search(r'id="inbox-token" type="text" readonly value="([^"]+)"', content)
    return match.group(1) if match else None


def test_an_inbox_job_shows_its_push_url_and_a_new_token_once(staff, client, workspace, mapping):
    job = SyncJob.objects.create(workspace=workspace, mapping=mapping, name="pushes", source_kind="inbox")
    content = staff.get(edit_url(job)).content.decode()
    assert f"http://testserver/inbox/{job.inbox_id}/" in content
    assert "not set yet" in content and "Generate a new inbox token" in content

    response = staff.post(edit_url(job) + "inbox-token/")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    token = _token_in(response.content.decode())
    assert token and 'data-copy="#inbox-token"' in response.content.decode()
    job.refresh_from_db()
    assert job.inbox_token_matches(token) and token not in job.inbox_token_hash
    # Shown once: the next visit says only that a token is set.
    content = staff.get(edit_url(job)).content.decode()
    assert token not in content and _token_in(content) is None and "not set yet" not in content
    # The token works for pushes; a new one replaces it.
    rows = "\n".join(json.dumps(r) for r in purchase_rows(2))
    push = client.post(
        f"/inbox/{job.inbox_id}/", rows, "application/x-ndjson", headers={"Authorization": f"Bearer {token}"}
    )
    assert push.status_code == 202
    newer = _token_in(staff.post(edit_url(job) + "inbox-token/").content.decode())
    assert newer != token
    job.refresh_from_db()
    assert job.inbox_token_matches(newer) and not job.inbox_token_matches(token)


def test_only_inbox_jobs_get_a_token(staff, workspace, mapping):
    job = make_file_job(workspace, mapping)
    response = staff.post(edit_url(job) + "inbox-token/", follow=True)
    assert "Only push inbox jobs have a token." in response.content.decode()
    job.refresh_from_db()
    assert job.inbox_token_hash == ""
    assert staff.get(edit_url(job) + "inbox-token/").status_code == 405


# ------------------------------------------------------------------------------------------------- preview


def test_the_preview_shows_the_first_records_as_batches(staff, workspace, mapping, tmp_path):
    path = write_csv(tmp_path / "orders.csv", purchase_rows(3))
    job = make_file_job(workspace, mapping, source_config={"path": str(path)})
    response = staff.get(edit_url(job) + "preview/")
    assert response.status_code == 200
    assert response.context["preview"].records == 3
    assert "Purchase Completed" in response.content.decode()


def test_the_preview_says_when_the_source_cannot_be_read(staff, workspace, mapping, tmp_path):
    job = make_file_job(workspace, mapping, source_config={"path": str(tmp_path / "missing.csv")})
    content = staff.get(edit_url(job) + "preview/").content.decode()
    assert "the source cannot be read" in content
