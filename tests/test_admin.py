"""The staff admin: who may see it, what its lists show, the write-only credentials, the run action."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from feeds import sync
from feeds.models import Delivery, Mapping, RejectedRecord, SyncJob, SyncRun, Workspace
from tests.helpers import (
    SANDBOX_KEY,
    SANDBOX_SECRET,
    make_job,
    make_mapping,
    make_workspace,
    messages_of,
    purchase_rows,
    run_job,
    write_csv,
)
from tests.helpers import workspace_form_data as form_data

pytestmark = pytest.mark.django_db

MODELS = [Workspace, Mapping, SyncJob, SyncRun, Delivery, RejectedRecord]


def url(model, view: str, *args) -> str:
    return reverse(f"admin:feeds_{model._meta.model_name}_{view}", args=args)


def rows(response) -> list:
    return list(response.context["cl"].result_list)


# ------------------------------------------------------------------------------------------------ the cast


@pytest.fixture
def finished_run(sandbox, tmp_path) -> SyncRun:
    """A real run against the sandbox: 10 rows, 2 of them rejected while mapping."""
    data = purchase_rows(10)
    data[2]["user_id"] = data[2]["email"] = ""
    data[5]["amount"] = "ten"
    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", data), name="orders")
    run = run_job(job)
    assert run.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS, run.error
    assert run.deliveries.exists() and run.rejects.count() == 2
    return run


@pytest.fixture
def clean_run(sandbox, tmp_path) -> SyncRun:
    """A second workspace whose run succeeded without rejects."""
    job = make_job(
        make_workspace(sandbox, name="Beta"), write_csv(tmp_path / "beta.csv", purchase_rows(4)), name="beta"
    )
    run = run_job(job)
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    return run


def one_of_each(run: SyncRun) -> dict:
    return {
        Workspace: run.workspace,
        Mapping: run.job.mapping,
        SyncJob: run.job,
        SyncRun: run,
        Delivery: run.deliveries.first(),
        RejectedRecord: run.rejects.first(),
    }


# ----------------------------------------------------------------------------------------------- access


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_staff_see_the_changelist_and_change_page(staff, finished_run, model):
    obj = one_of_each(finished_run)[model]
    response = staff.get(url(model, "changelist"))
    assert response.status_code == 200
    assert obj in rows(response)
    response = staff.get(url(model, "change", obj.pk))
    assert response.status_code == 200
    assert response.context["original"] == obj


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("who", ["anonymous", "bob"])
def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(client, bob, finished_run, model, who):
    if who == "bob":
        client.force_login(bob)
    obj = one_of_each(finished_run)[model]
    for page in (url(model, "changelist"), url(model, "change", obj.pk)):
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith(reverse("admin:login") + "?next="), page


# ---------------------------------------------------------------------------------------- filters, search


def test_the_run_list_filters_by_status_and_searches_by_job(staff, finished_run, clean_run):
    response = staff.get(url(SyncRun, "changelist") + "?status__exact=succeeded")
    assert response.status_code == 200
    assert rows(response) == [clean_run]
    response = staff.get(url(SyncRun, "changelist") + "?status__exact=succeeded_with_rejects")
    assert rows(response) == [finished_run]
    response = staff.get(url(SyncRun, "changelist") + "?q=beta")
    assert rows(response) == [clean_run]
    response = staff.get(url(SyncRun, "changelist") + f"?workspace__id__exact={finished_run.workspace_id}")
    assert rows(response) == [finished_run]


def test_the_delivery_list_filters_by_state_and_finds_a_run_by_id(staff, finished_run, clean_run):
    response = staff.get(url(Delivery, "changelist") + "?state__exact=accepted")
    assert response.status_code == 200
    assert set(rows(response)) == set(Delivery.objects.filter(state="accepted")) and len(rows(response)) == 2
    response = staff.get(url(Delivery, "changelist") + "?state__exact=failed")
    assert rows(response) == []
    response = staff.get(url(Delivery, "changelist") + f"?q={clean_run.pk}")
    assert rows(response) == list(clean_run.deliveries.all())


def test_the_rejected_list_filters_by_stage_and_searches_reasons_and_refs(staff, finished_run):
    response = staff.get(url(RejectedRecord, "changelist") + "?stage__exact=mapping")
    assert response.status_code == 200
    assert len(rows(response)) == 2
    response = staff.get(url(RejectedRecord, "changelist") + "?stage__exact=server")
    assert rows(response) == []
    response = staff.get(url(RejectedRecord, "changelist") + "?q=not+a+number")
    assert [r.ref for r in rows(response)] == ["orders.csv:7"]
    assert "&#x27;ten&#x27; is not a number" in response.content.decode()
    response = staff.get(url(RejectedRecord, "changelist") + "?q=orders.csv:4")
    assert [r.reason for r in rows(response)] == [
        "no identity: every mapped identity field is missing or empty (email, user_id); the record's fields are id, user_id, email, plan, first_name, ts, sku, amount"
    ]


def test_the_workspace_and_job_lists_filter_and_search(staff, finished_run, clean_run):
    empty = Workspace.objects.create(name="Empty", slug="empty")
    response = staff.get(url(Workspace, "changelist") + "?status__exact=awaiting_credentials")
    assert response.status_code == 200
    assert rows(response) == [empty]
    response = staff.get(url(Workspace, "changelist") + "?q=acm")
    assert rows(response) == [finished_run.workspace]
    response = staff.get(url(SyncJob, "changelist") + "?q=beta.csv")
    assert rows(response) == [clean_run.job]
    response = staff.get(url(Mapping, "changelist") + "?q=Beta")
    assert rows(response) == [clean_run.job.mapping]


# ------------------------------------------------------------------------------------ write-only credentials


def test_the_workspace_page_shows_the_pod_and_the_keys_end_never_the_credentials(staff):
    workspace = make_workspace()
    response = staff.get(url(Workspace, "change", workspace.pk))
    html = response.content.decode()
    assert response.status_code == 200
    assert SANDBOX_SECRET not in html and SANDBOX_KEY not in html
    assert '<div class="readonly">Sandbox / custom URL (testing only), key …-key</div>' in html
    # The inputs are there, empty.
    assert '<input type="password" name="new_api_key" autocomplete="off"' in html
    assert 'name="new_api_secret" autocomplete="new-password"' in html
    assert 'value="' + SANDBOX_KEY not in html


def test_a_workspace_without_credentials_shows_not_set(staff):
    workspace = Workspace.objects.create(name="Empty", slug="empty")
    response = staff.get(url(Workspace, "change", workspace.pk))
    assert '<div class="readonly">not set</div>' in response.content.decode()
    response = staff.get(url(Workspace, "changelist"))
    assert '<td class="field-credentials">not set</td>' in response.content.decode()


def test_saving_with_empty_credential_inputs_keeps_the_stored_ones(staff):
    workspace = make_workspace()
    updated_at = workspace.credentials_updated_at
    response = staff.post(url(Workspace, "change", workspace.pk), form_data(workspace, rate_limit="12.5"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    workspace.refresh_from_db()
    assert workspace.rate_limit == 12.5
    assert (workspace.api_key, workspace.api_secret) == (SANDBOX_KEY, SANDBOX_SECRET)
    assert workspace.credentials_updated_at == updated_at


def test_new_credentials_replace_the_stored_ones(staff):
    workspace = make_workspace()
    data = form_data(workspace, new_api_key=" new-key ", new_api_secret="new-secret")
    response = staff.post(url(Workspace, "change", workspace.pk), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    workspace = Workspace.objects.get(pk=workspace.pk)
    assert (workspace.api_key, workspace.api_secret) == ("new-key", "new-secret")


def test_a_new_secret_alone_replaces_only_the_secret(staff):
    workspace = make_workspace()
    response = staff.post(url(Workspace, "change", workspace.pk), form_data(workspace, new_api_secret="rotated"))
    assert response.status_code == 302
    workspace.refresh_from_db()
    assert (workspace.api_key, workspace.api_secret) == (SANDBOX_KEY, "rotated")


def test_new_credentials_reactivate_a_workspace_whose_credentials_were_rejected(staff, sandbox):
    workspace = make_workspace(sandbox)
    workspace.mark_credentials_rejected("mParticle refused the API key and secret (HTTP 403).")
    # Credentials mParticle also refuses are stored, but the workspace stays rejected.
    data = form_data(workspace, new_api_key="k2", new_api_secret="s2")
    assert data["status"] == Workspace.Status.CREDENTIALS_REJECTED
    assert staff.post(url(Workspace, "change", workspace.pk), data).status_code == 302
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.CREDENTIALS_REJECTED and workspace.api_secret == "s2"
    # Once new ones pass the connection test, it is active again.
    sandbox.add_credentials("k3", "s3")
    data = form_data(workspace, new_api_key="k3", new_api_secret="s3")
    assert staff.post(url(Workspace, "change", workspace.pk), data).status_code == 302
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.ACTIVE and workspace.status_message == ""
    assert workspace.api_secret == "s3"


@pytest.mark.parametrize("given", ["new_api_key", "new_api_secret"])
def test_only_one_of_key_and_secret_is_an_error_without_stored_credentials(staff, given):
    workspace = Workspace.objects.create(name="Empty", slug="empty")
    response = staff.post(url(Workspace, "change", workspace.pk), form_data(workspace, **{given: "half"}))
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == ["Enter both the API key and the API secret."]
    workspace.refresh_from_db()
    assert (workspace.api_key, workspace.api_secret) == ("", "")
    assert workspace.status == Workspace.Status.AWAITING_CREDENTIALS


def test_a_workspace_added_with_credentials_stores_them_and_is_active(staff, sandbox):
    # On the sandbox pod: saving new credentials runs a connection test, which must stay on loopback.
    workspace = Workspace(name="New client", slug="new-client", pod="sandbox", endpoint_url=f"{sandbox.url}/v2")
    data = form_data(workspace, new_api_key=SANDBOX_KEY, new_api_secret=SANDBOX_SECRET)
    response = staff.post(url(Workspace, "add"), data, follow=True)
    assert response.status_code == 200
    workspace = Workspace.objects.get(name="New client")
    assert (workspace.api_key, workspace.api_secret) == (SANDBOX_KEY, SANDBOX_SECRET)
    assert workspace.status == Workspace.Status.ACTIVE
    assert any("Credentials verified" in m for m in messages_of(response))


def test_adding_a_workspace_with_only_a_key_is_an_error(staff):
    data = form_data(Workspace(name="New client", slug="new-client", pod="partner"), new_api_key="k")
    response = staff.post(url(Workspace, "add"), data)
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == ["Enter both the API key and the API secret."]
    assert not Workspace.objects.filter(name="New client").exists()


# ------------------------------------------------------------------------------------------ run sync now


def run_now(client, *jobs):
    data = {"action": "run_now", ACTION_CHECKBOX_NAME: [job.pk for job in jobs], "index": 0}
    return client.post(url(SyncJob, "changelist"), data, follow=True)


def test_run_sync_now_runs_the_job_through_django_q(staff, sandbox, tmp_path, monkeypatch, alice):
    from django_q.conf import Conf
    from django_q.models import Task

    monkeypatch.setattr(Conf, "SYNC", True)
    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(5)))
    response = run_now(staff, job)
    assert response.status_code == 200
    [run] = SyncRun.objects.filter(job=job)
    assert messages_of(response) == [f"{job}: run #{run.pk} queued."]
    assert run.status == SyncRun.Status.SUCCEEDED and run.events_accepted == 5
    assert run.trigger == SyncRun.Trigger.MANUAL and run.created_by == alice
    [task] = Task.objects.all()
    assert task.func == "feeds.tasks.process_run"
    assert task.args == (run.pk,) and task.kwargs == {}
    assert len(sandbox.events()) == 5


def test_run_sync_now_queues_only_the_run_id(staff, sandbox, tmp_path):
    from django_q.models import OrmQ

    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(5)))
    response = run_now(staff, job)
    [run] = SyncRun.objects.filter(job=job)
    assert messages_of(response) == [f"{job}: run #{run.pk} queued."]
    assert run.status == SyncRun.Status.QUEUED
    [queued] = OrmQ.objects.all()
    assert queued.task["func"] == "feeds.tasks.process_run"
    assert queued.task["args"] == (run.pk,) and queued.task["kwargs"] == {}


def test_a_second_click_while_a_run_is_unfinished_is_an_error(staff, sandbox, tmp_path):
    from django_q.models import OrmQ

    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(5)))
    run_now(staff, job)
    [run] = SyncRun.objects.filter(job=job)
    response = run_now(staff, job)
    assert response.status_code == 200
    assert messages_of(response) == [f"{job}: {job} already has an unfinished run (#{run.pk})."]
    assert [m.level_tag for m in response.context["messages"]] == ["error"]
    assert SyncRun.objects.filter(job=job).count() == 1
    assert OrmQ.objects.count() == 1


def test_run_sync_now_refuses_a_workspace_without_credentials(staff, tmp_path):
    workspace = Workspace.objects.create(name="Empty", slug="empty")
    job = make_job(workspace, tmp_path / "orders.csv", mapping=make_mapping(workspace))
    response = run_now(staff, job)
    assert messages_of(response) == [f"{job}: Empty has no credentials yet."]
    assert not SyncRun.objects.exists()


# -------------------------------------------------------------------------------------------- run page


def test_the_run_page_links_to_its_deliveries_and_rejects_with_counts(staff, finished_run, clean_run):
    response = staff.get(url(SyncRun, "change", finished_run.pk))
    html = response.content.decode()
    deliveries = url(Delivery, "changelist") + f"?run__id__exact={finished_run.pk}"
    rejects = url(RejectedRecord, "changelist") + f"?run__id__exact={finished_run.pk}"
    assert f'<a href="{deliveries}">1 accepted</a>' in html
    assert f'<a href="{rejects}">2 rejected</a>' in html

    response = staff.get(deliveries)
    assert response.status_code == 200
    assert rows(response) == list(finished_run.deliveries.all())
    response = staff.get(rejects)
    assert response.status_code == 200
    assert rows(response) == list(finished_run.rejects.all())


def test_a_run_without_deliveries_says_none(staff, tmp_path):
    workspace = make_workspace()
    run = sync.start_run(make_job(workspace, tmp_path / "orders.csv"))
    html = staff.get(url(SyncRun, "change", run.pk)).content.decode()
    assert ">none</a>" in html and ">0 rejected</a>" in html


# ------------------------------------------------------------------------------------------ query counts


def add_runs(job: SyncJob, n: int) -> None:
    """n finished runs of `job`, each with one delivery and one rejected record."""
    runs = SyncRun.objects.bulk_create(
        SyncRun(
            job=job,
            workspace=job.workspace,
            status=SyncRun.Status.SUCCEEDED_WITH_REJECTS,
            source_kind=job.source_kind,
            source_config=job.source_config,
            endpoint_mode=job.endpoint_mode,
            environment="development",
            mapping_version=1,
            mapping_rules={},
        )
        for _ in range(n)
    )
    Delivery.objects.bulk_create(
        Delivery(run=run, workspace=job.workspace, sequence=1, state=Delivery.State.ACCEPTED) for run in runs
    )
    RejectedRecord.objects.bulk_create(
        RejectedRecord(run=run, stage=RejectedRecord.Stage.MAPPING, ref="orders.csv:2", reason="bad") for run in runs
    )


@pytest.mark.parametrize("model", [SyncRun, Delivery, RejectedRecord], ids=lambda m: m.__name__)
def test_the_list_does_not_query_per_row(staff, tmp_path, django_assert_max_num_queries, model):
    workspace = make_workspace()
    job = make_job(workspace, tmp_path / "orders.csv")
    add_runs(job, 3)
    with CaptureQueriesContext(connection) as few:
        response = staff.get(url(model, "changelist"))
    assert len(rows(response)) == 3

    # Spread the new runs over other workspaces and jobs, so nothing is answered from an object already loaded.
    for i in range(9):
        other = make_workspace(name=f"Client {i}")
        add_runs(make_job(other, tmp_path / f"o{i}.csv"), 3)
    with django_assert_max_num_queries(len(few)):
        response = staff.get(url(model, "changelist"))
    assert len(rows(response)) == 30


# ----------------------------------------------------------------------------------------------- mappings


def test_a_mapping_edit_that_changes_sample_outputs_must_be_accepted(staff):
    import json

    from tests.helpers import MAPPING

    workspace = make_workspace()
    record = {"id": "r1", "user_id": "u1", "plan": "pro", "ts": "2026-11-20T10:00:00Z"}
    mapping = make_mapping(workspace, {**MAPPING, "samples": [{"record": record, "expect": {}}]}, accept_changes=True)
    edited = {**mapping.rules, "user_attributes": {"plan": {"field": "plan", "transform": ["upper"]}}}
    data = {"workspace": workspace.pk, "name": mapping.name, "rules": json.dumps(edited), "_save": "Save"}
    response = staff.post(url(Mapping, "change", mapping.pk), data)
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["rules"])
    assert "samples[0]: user_attributes.plan" in errors and "Accept changed sample outputs" in errors
    mapping.refresh_from_db()
    assert mapping.version == 1
    # Accepted as the editor accepts them: the changes the page showed (their digest is in the form), no others.
    digest = response.context["adminform"].form["changes_digest"].value()
    assert f'name="changes_digest" value="{digest}"' in response.content.decode()
    response = staff.post(url(Mapping, "change", mapping.pk), {**data, "accept_changes": "on"})
    assert response.status_code == 200 and Mapping.objects.get(pk=mapping.pk).version == 1
    response = staff.post(
        url(Mapping, "change", mapping.pk), {**data, "accept_changes": "on", "changes_digest": digest}
    )
    assert response.status_code == 302
    mapping.refresh_from_db()
    assert mapping.version == 2 and mapping.rules["samples"][0]["expect"]["user_attributes"] == {"plan": "PRO"}
    # Invalid rules are refused with the place.
    bad = {**data, "rules": json.dumps({"identities": {"customerid": "x"}})}
    response = staff.post(url(Mapping, "change", mapping.pk), bad)
    assert "identities.customerid" in " ".join(response.context["adminform"].form.errors["rules"])
