"""Each staff workflow has one home (model methods, feeds.actions): the staff pages, the admin and the commands
call it, so they do the same thing and say the same words — confirming or discarding credentials a client
handed over, promoting a workspace, pausing it, and saving a mapping."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from feeds import actions
from feeds.models import CredentialLink, Mapping, SyncRun, Workspace
from tests.helpers import (
    MAPPING,
    SANDBOX_KEY,
    SANDBOX_SECRET,
    make_job,
    make_mapping,
    make_staff,
    make_workspace,
    messages_of,
    purchase_rows,
    run_job,
    write_csv,
)
from tests.helpers import workspace_form_data as form_data

pytestmark = pytest.mark.django_db

NEW_KEY = "new-key-0001"


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:feeds_{model._meta.model_name}_{view}", args=args)


def act(client, action: str, *workspaces):
    data = {"action": action, ACTION_CHECKBOX_NAME: [w.pk for w in workspaces], "index": 0}
    return client.post(admin_url(Workspace, "changelist"), data, follow=True)


def page_action(client, name: str, workspace):
    return client.post(reverse(f"feeds:{name}", args=[workspace.slug]), follow=True)


def holding(sandbox, name: str) -> Workspace:
    """A workspace whose client handed over new credentials through a link, held for staff to confirm."""
    workspace = make_workspace(sandbox, name=name, confirm_new_credentials=True)
    link, _ = CredentialLink.issue(workspace)
    assert link.redeem(Workspace.Pod.SANDBOX, NEW_KEY, "new-secret", timezone.now()) is not None
    workspace.refresh_from_db()
    assert workspace.has_pending_credentials and workspace.api_key == SANDBOX_KEY
    return workspace


# ------------------------------------------------------------------------------- credentials held for staff


def test_the_page_and_the_admin_confirm_held_credentials_alike(staff, sandbox):
    on_page, in_admin = holding(sandbox, "Page Co"), holding(sandbox, "Admin Co")
    said = [
        messages_of(page_action(staff, "credentials_confirm", on_page)),
        messages_of(act(staff, "confirm_credentials", in_admin)),
    ]
    assert said == [
        ["Page Co: the new credentials (key …0001) are in use."],
        ["Admin Co: the new credentials (key …0001) are in use."],
    ]
    for workspace in (on_page, in_admin):
        workspace.refresh_from_db()
        assert (workspace.api_key, workspace.api_secret) == (NEW_KEY, "new-secret")
        assert not workspace.has_pending_credentials and workspace.credentials_verified_at is not None
    # Again: nothing is waiting any more, and both say so.
    assert messages_of(page_action(staff, "credentials_confirm", on_page)) == [
        "Page Co: no credentials were waiting for confirmation."
    ]
    assert messages_of(act(staff, "confirm_credentials", in_admin)) == [
        "Admin Co: no credentials were waiting for confirmation."
    ]


def test_the_page_and_the_admin_discard_held_credentials_alike(staff, sandbox):
    on_page, in_admin = holding(sandbox, "Page Co"), holding(sandbox, "Admin Co")
    assert messages_of(page_action(staff, "credentials_discard", on_page)) == [
        "Page Co: the credentials received were discarded; the ones in use stay."
    ]
    assert messages_of(act(staff, "discard_credentials", in_admin)) == [
        "Admin Co: the credentials received were discarded; the ones in use stay."
    ]
    for workspace in (on_page, in_admin):
        workspace.refresh_from_db()
        assert not workspace.has_pending_credentials and workspace.pending_api_key == ""
        assert (workspace.api_key, workspace.api_secret) == (SANDBOX_KEY, SANDBOX_SECRET)


def test_confirming_resumes_the_runs_the_old_credentials_blocked(sandbox, tmp_path, sync_q):
    workspace = make_workspace(sandbox, name="Acme", confirm_new_credentials=True)
    workspace.set_credentials(SANDBOX_KEY, "an-old-wrong-secret")
    run = run_job(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(3))))
    assert run.status == SyncRun.Status.BLOCKED
    link, _ = CredentialLink.issue(workspace)
    link.redeem(Workspace.Pod.SANDBOX, SANDBOX_KEY, SANDBOX_SECRET, timezone.now())
    done = actions.confirm_credentials(Workspace.objects.get(pk=workspace.pk))
    assert done.changed and done.text.endswith(f"are in use. Runs resumed: #{run.pk}.")
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED, run.error


# ------------------------------------------------------------------------------------------------ promotion


def confirm_in_admin(client, action: str, *workspaces):
    """An admin action that asks first: the confirmation page, then its POST."""
    page = act(client, action, *workspaces)
    data = {"action": action, ACTION_CHECKBOX_NAME: [w.pk for w in workspaces], "index": 0, "confirmed": "yes"}
    return page, client.post(admin_url(Workspace, "changelist"), data, follow=True)


def test_the_page_and_the_admin_promote_alike_each_after_a_confirmation(staff, sandbox, tmp_path):
    on_page, in_admin = make_workspace(sandbox, name="Page Co"), make_workspace(sandbox, name="Admin Co")
    refusal = "Promote after at least one successful run in development."
    # The page's GET only asks, and says why it cannot be done yet; the POST refuses with the same words.
    asked = staff.get(reverse("feeds:promote", args=[on_page.slug]))
    assert asked.status_code == 200 and refusal in asked.content.decode()
    assert messages_of(page_action(staff, "promote", on_page)) == [f"Page Co: {refusal}"]
    _, done = confirm_in_admin(staff, "promote", in_admin)
    assert messages_of(done) == [f"Admin Co: {refusal}"]
    assert set(Workspace.objects.values_list("environment", flat=True)) == {"development"}

    for workspace in (on_page, in_admin):
        run = run_job(make_job(workspace, write_csv(tmp_path / f"{workspace.slug}.csv", purchase_rows(2))))
        assert run.status == SyncRun.Status.SUCCEEDED
    # Asking changes nothing, on the page or in the admin.
    asked = staff.get(reverse("feeds:promote", args=[on_page.slug]))
    assert "production environment: their data" in asked.content.decode()
    assert 'type="submit">Promote to production</button>' in asked.content.decode()
    page, done = confirm_in_admin(staff, "promote", in_admin)
    assert page.status_code == 200 and "production environment: their data" in page.content.decode()
    assert "Admin Co" in page.content.decode()
    assert messages_of(page_action(staff, "promote", on_page)) == ["Page Co now sends to the production environment."]
    assert messages_of(done) == ["Admin Co now sends to the production environment."]
    assert set(Workspace.objects.values_list("environment", flat=True)) == {"production"}


def test_the_way_back_from_production_on_the_page_and_in_the_admin(staff, sandbox):
    on_page = make_workspace(sandbox, name="Page Co", environment="production")
    in_admin = make_workspace(sandbox, name="Admin Co", environment="production")
    workspace_page = staff.get(reverse("feeds:workspace", args=[on_page.slug])).content.decode()
    assert reverse("feeds:demote", args=[on_page.slug]) in workspace_page
    asked = staff.get(reverse("feeds:demote", args=[on_page.slug]))
    assert asked.status_code == 200 and "development environment again" in asked.content.decode()
    page, done = confirm_in_admin(staff, "demote", in_admin)
    assert "development environment again" in page.content.decode()
    assert Workspace.objects.get(pk=on_page.pk).environment == "production"  # asking changed nothing
    assert messages_of(page_action(staff, "demote", on_page)) == [
        "Page Co now sends to the development environment again."
    ]
    assert messages_of(done) == ["Admin Co now sends to the development environment again."]
    assert set(Workspace.objects.values_list("environment", flat=True)) == {"development"}
    # Twice is said, not done twice; and back to production needs the promotion's rule again.
    assert messages_of(page_action(staff, "demote", on_page)) == ["Page Co sends to development already."]
    assert "sends to development already" in staff.get(reverse("feeds:demote", args=[on_page.slug])).content.decode()


def test_the_admin_form_does_not_change_the_environment_of_a_workspace(staff, sandbox):
    workspace = make_workspace(sandbox, name="Admin Co")
    response = staff.post(admin_url(Workspace, "change", workspace.pk), form_data(workspace, environment="production"))
    assert response.status_code == 302
    assert Workspace.objects.get().environment == "development"  # only the actions, after a confirmation


def test_a_workspace_may_be_created_in_production_on_the_page_and_in_the_admin(staff):
    # Only a change from development is a promotion: a new workspace may start in either environment.
    response = staff.post(
        reverse("feeds:workspace_new"),
        {"name": "Page Co", "pod": "partner", "environment": "production", "rate_limit": 270},
    )
    assert response.status_code == 302
    data = form_data(Workspace(name="Admin Co", slug="admin-co", pod="partner", environment="production"))
    assert staff.post(admin_url(Workspace, "add"), data).status_code == 302
    assert set(Workspace.objects.values_list("environment", flat=True)) == {"production"}


# ---------------------------------------------------------------------------------------- pause and resume


def test_the_admin_form_leaves_the_status_to_pause_and_resume(staff, sandbox):
    workspace = make_workspace(sandbox)
    assert act(staff, "pause", workspace).status_code == 200
    workspace.refresh_from_db()
    # A change form opened before the pause, saved after it, does not undo it (nor can the status be typed in).
    response = staff.post(
        admin_url(Workspace, "change", workspace.pk),
        form_data(workspace, status="active", rate_limit="100"),
        follow=True,
    )
    assert messages_of(response)[0].endswith("was changed successfully.")
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.PAUSED and workspace.rate_limit == 100
    assert workspace.status_message.startswith("Paused by alice on ")
    assert messages_of(act(staff, "resume", workspace))[0].startswith("Acme is active again.")
    assert messages_of(act(staff, "resume", workspace)) == ["Acme is not paused (active); left as it is."]


# ---------------------------------------------------------------------------------------------- mappings


def editor_url(mapping: Mapping) -> str:
    return reverse("feeds:mapping_edit", args=[mapping.workspace.slug, mapping.pk])


def editor_save(client, mapping: Mapping, doc: dict, name: str, **fields):
    return client.post(editor_url(mapping), {"name": name, "document": json.dumps(doc), **fields})


def admin_save(client, mapping: Mapping, doc: dict, name: str, **fields):
    data = {"workspace": mapping.workspace_id, "name": name, "rules": json.dumps(doc), "_save": "Save", **fields}
    return client.post(admin_url(Mapping, "change", mapping.pk), data)


def test_a_stale_version_is_refused_alike_by_the_editor_and_the_admin(staff):
    workspace = make_workspace()
    on_page, in_admin = make_mapping(workspace, name="page"), make_mapping(workspace, name="admin")
    for mapping in (on_page, in_admin):
        Mapping.objects.get(pk=mapping.pk).update_rules({**MAPPING, "description": "saved by someone else"})
    mine = {**MAPPING, "description": "mine"}
    page = editor_save(staff, on_page, mine, "page", version=1)
    admin = admin_save(staff, in_admin, mine, "admin", seen_version=1)
    assert page.status_code == admin.status_code == 200
    stale = (
        "Someone saved this mapping since you opened it (now version 2). Copy your JSON, reload the page and apply "
        "your changes again."
    )
    assert page.context["form"].non_field_errors() == admin.context["adminform"].form.non_field_errors() == [stale]
    for mapping in Mapping.objects.all():
        assert mapping.version == 2 and mapping.rules["description"] == "saved by someone else"
    # The admin's change form carries the version it was opened at.
    form = staff.get(admin_url(Mapping, "change", in_admin.pk)).context["adminform"].form
    assert form["seen_version"].value() == 2


def test_a_rename_without_new_rules_is_stored_alike_by_the_editor_and_the_admin(staff):
    workspace = make_workspace()
    on_page, in_admin = make_mapping(workspace, name="page"), make_mapping(workspace, name="admin")
    assert editor_save(staff, on_page, on_page.rules, "page v2", version=1).status_code == 302
    assert admin_save(staff, in_admin, in_admin.rules, "admin v2", seen_version=1).status_code == 302
    assert sorted(Mapping.objects.values_list("name", "version")) == [("admin v2", 1), ("page v2", 1)]


def test_invalid_rules_are_refused_alike_by_the_editor_the_admin_and_load_mapping(staff, tmp_path):
    workspace = make_workspace()
    mapping = make_mapping(workspace)
    bad = {**MAPPING, "identities": {"customerid": "user_id"}}
    page = editor_save(staff, mapping, bad, "default", version=1)
    on_page = [m.text for m in page.context["found"]]
    in_admin = admin_save(staff, mapping, bad, "default").context["adminform"].form.errors["rules"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(CommandError) as refused:
        call_command("load_mapping", str(path), "--workspace", workspace.name)
    assert on_page and "identities.customerid" in on_page[0]
    assert on_page == list(in_admin)
    assert str(refused.value) == "The mapping is not valid:\n  " + "\n  ".join(on_page)
    assert Mapping.objects.get().version == 1


def test_changed_sample_outputs_are_accepted_alike_by_the_editor_the_admin_and_load_mapping(staff, tmp_path):
    record = {"id": "r1", "user_id": "u1", "plan": "pro", "ts": "2026-11-20T10:00:00Z"}
    first = {**MAPPING, "samples": [{"record": record, "expect": {}}]}
    edited = {**first, "user_attributes": {"plan": {"field": "plan", "transform": ["upper"]}}}
    workspace = make_workspace()
    on_page, in_admin, by_command = (make_mapping(workspace, first, name=n, accept_changes=True) for n in "pac")

    page = editor_save(staff, on_page, edited, "p", version=1)
    admin = admin_save(staff, in_admin, edited, "a", seen_version=1)
    # Both show the same changes, with the same digest to accept exactly them.
    form = admin.context["adminform"].form
    assert page.context["changes"] == list(form.errors["rules"])[:-1]
    assert page.context["changes_digest"] == form["changes_digest"].value()
    digest = page.context["changes_digest"]
    editor_save(staff, on_page, edited, "p", version=1, accept_changes="on", changes_digest=digest)
    admin_save(staff, in_admin, edited, "a", seen_version=1, accept_changes="on", changes_digest=digest)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(edited))
    call_command("load_mapping", str(path), "--workspace", workspace.name, "--name", "c", "--accept-changes")

    stored = {m.name: m for m in Mapping.objects.all()}
    assert {m.version for m in stored.values()} == {2}
    assert stored["p"].rules == stored["a"].rules == stored["c"].rules
    assert stored["p"].rules["samples"][0]["expect"]["user_attributes"] == {"plan": "PRO"}


# ------------------------------------------------------------------------------------- credential links


def test_a_link_counts_its_attempts_up_to_its_limit_and_not_once_revoked(settings):
    settings.MPFEED_CREDENTIAL_LINK_ATTEMPTS = 2
    link, _ = CredentialLink.issue(make_workspace())
    assert link.count_attempt() and link.count_attempt()
    assert link.exhausted and not link.count_attempt() and link.attempts == 2
    other, _ = CredentialLink.issue(link.workspace)
    CredentialLink.objects.filter(pk=other.pk).update(revoked_at=timezone.now())
    assert not other.count_attempt() and not other.usable and other.attempts == 0


def test_replays_need_the_same_permission_in_the_admin_and_on_the_run_page(client, sandbox, tmp_path):
    run = run_job(make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", purchase_rows(2))))
    client.force_login(make_staff("vera", "view_syncrun", "view_delivery"))
    run_page = reverse("feeds:run", args=[run.pk])
    assert client.get(run_page).context["can_replay"] is False
    assert client.post(reverse("feeds:run_replay", args=[run.pk])).status_code == 403
    actions_offered = client.get(admin_url(SyncRun, "changelist")).context["action_form"]
    assert actions_offered is None or "replay_failed" not in dict(actions_offered.fields["action"].choices)
    replayer = Client()
    replayer.force_login(make_staff("rita", "view_syncrun", "view_delivery", "change_delivery"))
    assert replayer.get(run_page).context["can_replay"] is True
    form = replayer.get(admin_url(SyncRun, "changelist")).context["action_form"]
    assert "replay_failed" in dict(form.fields["action"].choices)
