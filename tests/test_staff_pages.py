"""Staff pages: access, the workspace health home, onboarding a workspace, credential links, runs, promotion."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from feeds.models import CredentialLink, Delivery, SyncRun, Workspace, token_hash
from tests.helpers import (
    SANDBOX_SECRET,
    FakeClock,
    make_job,
    make_staff,
    make_workspace,
    purchase_rows,
    run_job,
    write_csv,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(make_staff("sam"))
    return client


@pytest.fixture
def workspace(sandbox):
    return make_workspace(sandbox, name="Acme")


def staff_urls(workspace):
    return [
        ("get", reverse("feeds:home")),
        ("get", reverse("feeds:workspace_new")),
        ("get", reverse("feeds:workspace", args=[workspace.slug])),
        ("post", reverse("feeds:link_issue", args=[workspace.slug])),
        ("post", reverse("feeds:promote", args=[workspace.slug])),
    ]


def test_staff_pages_send_anonymous_users_to_login_and_refuse_non_staff(client, django_user_model, workspace):
    for method, url in staff_urls(workspace):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    client.force_login(django_user_model.objects.create_user("nina"))
    for method, url in staff_urls(workspace):
        assert getattr(client, method)(url).status_code == 403, url
    assert not CredentialLink.objects.exists()


def test_the_home_lists_failing_and_blocked_workspaces_first(staff, sandbox, tmp_path):
    healthy = make_workspace(sandbox, name="Aardvark")
    run_job(make_job(healthy, write_csv(tmp_path / "a.csv", purchase_rows(4))))
    failing = make_workspace(sandbox, name="Zebra")
    job = make_job(failing, tmp_path / "missing.csv")
    assert run_job(job).status == SyncRun.Status.FAILED
    Workspace.objects.create(name="Newcomer")
    response = staff.get(reverse("feeds:home"))
    assert response.status_code == 200
    names = [h.workspace.name for h in response.context["healths"]]
    # Failing first, then those needing attention (awaiting credentials), then the healthy ones.
    assert names == ["Zebra", "Newcomer", "Aardvark"]
    health = {h.workspace.name: h for h in response.context["healths"]}
    assert health["Zebra"].state == "failing" and health["Aardvark"].state == "ok"
    assert health["Aardvark"].events_24h == 4
    assert health["Aardvark"].daily[-1]["value"] == 4 and len(health["Aardvark"].daily) == 30
    assert SANDBOX_SECRET not in response.content.decode()


def test_the_home_does_a_constant_number_of_queries(staff, sandbox, tmp_path, django_assert_max_num_queries):
    for i in range(3):
        run_job(make_job(make_workspace(sandbox, name=f"W{i}"), write_csv(tmp_path / f"{i}.csv", purchase_rows(2))))
    with django_assert_max_num_queries(12):
        staff.get(reverse("feeds:home"))
    for i in range(3, 12):
        run_job(make_job(make_workspace(sandbox, name=f"W{i}"), write_csv(tmp_path / f"{i}.csv", purchase_rows(2))))
    with django_assert_max_num_queries(12):
        staff.get(reverse("feeds:home"))


def test_staff_create_a_workspace_without_any_credentials(staff):
    response = staff.post(
        reverse("feeds:workspace_new"),
        {"name": "New Client", "pod": "partner", "environment": "development", "rate_limit": 270},
    )
    workspace = Workspace.objects.get(name="New Client")
    assert response["Location"] == reverse("feeds:workspace", args=[workspace.slug])
    assert workspace.status == Workspace.Status.AWAITING_CREDENTIALS and not workspace.has_credentials
    response = staff.post(
        reverse("feeds:workspace_new"), {"name": "X", "pod": "sandbox", "environment": "development", "rate_limit": 270}
    )
    assert response.status_code == 200 and "needs an endpoint URL" in response.content.decode()


def test_a_credential_link_is_shown_once_and_stored_hashed(staff, workspace):
    response = staff.post(reverse("feeds:link_issue", args=[workspace.slug]), follow=True)
    page = response.content.decode()
    [link] = CredentialLink.objects.all()
    token = response.context["new_link"].rstrip("/").rsplit("/", 1)[1]
    assert token in page and link.token_hash == token_hash(token) and token not in link.token_hash
    assert link.expires_at - timezone.now() > timedelta(hours=71)
    # Not shown again.
    assert token not in staff.get(reverse("feeds:workspace", args=[workspace.slug])).content.decode()


def test_staff_revoke_a_link(staff, workspace):
    link, _ = CredentialLink.issue(workspace)
    staff.post(reverse("feeds:link_revoke", args=[workspace.slug, link.pk]))
    link.refresh_from_db()
    assert link.state == "revoked" and not CredentialLink.objects.usable().exists()


def test_run_sync_now_queues_a_run_and_opens_its_page(staff, workspace, tmp_path, monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
    job = make_job(workspace, write_csv(tmp_path / "o.csv", purchase_rows(3)))
    response = staff.post(reverse("feeds:job_run", args=[workspace.slug, job.pk]))
    run = SyncRun.objects.get()
    assert response["Location"] == reverse("feeds:run", args=[run.pk])
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED and run.created_by.username == "sam"
    assert Delivery.objects.filter(run=run, state="accepted").exists()


def test_promotion_to_production_waits_for_a_successful_run(staff, workspace, tmp_path):
    url = reverse("feeds:promote", args=[workspace.slug])
    response = staff.post(url, follow=True)
    assert "Promote after at least one successful run" in response.content.decode()
    workspace.refresh_from_db()
    assert workspace.environment == "development"
    run_job(make_job(workspace, write_csv(tmp_path / "o.csv", purchase_rows(2))))
    staff.post(url)
    workspace.refresh_from_db()
    assert workspace.environment == "production"


def test_the_workspace_page_and_the_admin_show_the_learned_pace(staff, sandbox, tmp_path, django_user_model):
    workspace = make_workspace(sandbox, name="Paced", rate_limit=270)
    page = staff.get(reverse("feeds:workspace", args=[workspace.slug])).content.decode()
    assert "Nothing sent yet: the pace starts at the budget (270 batches/s)" in page
    # The sandbox enforces 135 batches/s, though the budget says 270: the first request reads it.
    clock = FakeClock()
    sandbox.configure(rate_limit=135)
    sandbox._clock = clock.monotonic  # the sandbox's bucket refills on the engine's (fake) clock
    run = run_job(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(200))), clock)
    assert run.status == SyncRun.Status.SUCCEEDED
    page = staff.get(reverse("feeds:workspace", args=[workspace.slug])).content.decode()
    pace = workspace.pace
    assert 120 <= pace.limit <= 135
    assert f'{pace.limit:.0f} batches/s <span class="small muted">(read from mParticle&#x27;s answers)</span>' in page
    assert "Budget</dt><dd>270 batches/s" in page
    staff.force_login(django_user_model.objects.create_superuser("root", "root@example.com", None))
    admin = staff.get(reverse("admin:feeds_workspace_changelist")).content.decode()
    assert f"limit {pace.limit:.0f} batches/s, read from mParticle&#x27;s answers" in admin
    change = staff.get(reverse("admin:feeds_workspace_change", args=[workspace.pk])).content.decode()
    assert "Learned pace" in change and f"sent at {pace.rate:.0f} batches/s" in change
