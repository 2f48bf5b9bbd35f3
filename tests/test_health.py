"""One health model (feeds.health): the staff home, the workspace page, the admin and the alerts agree."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from feeds import alerts, health, sync
from feeds.models import AlertEvent, Delivery, SyncRun, Workspace
from tests.helpers import make_job, make_mapping, make_staff, make_workspace, purchase_rows, run_job, write_csv

pytestmark = pytest.mark.django_db


@pytest.fixture
def sam(client):
    client.force_login(make_staff("sam"))
    return client


@pytest.fixture(autouse=True)
def _no_alert_delivery(settings):
    settings.MPFEED_ALERT_EMAILS = []
    settings.MPFEED_ALERT_WEBHOOK_URL = ""


def good_job(workspace, tmp_path, name="good", mapping=None):
    return make_job(workspace, write_csv(tmp_path / f"{name}.csv", purchase_rows(3)), name=name, mapping=mapping)


# ------------------------------------------------------------------------------------------- the situations


def healthy(sandbox, tmp_path):
    workspace = make_workspace(sandbox, name="Healthy")
    assert run_job(good_job(workspace, tmp_path)).status == SyncRun.Status.SUCCEEDED
    return workspace


def one_job_failing(sandbox, tmp_path):
    """Two jobs: the one that failed is older than the newest run, which succeeded."""
    workspace = make_workspace(sandbox, name="One Failing")
    mapping = make_mapping(workspace)
    assert run_job(make_job(workspace, tmp_path / "missing.csv", mapping=mapping, name="broken")).status == "failed"
    assert run_job(good_job(workspace, tmp_path, mapping=mapping)).status == SyncRun.Status.SUCCEEDED
    return workspace


def credentials_rejected(sandbox, tmp_path):
    """Verified at hand-over, refused later by mParticle (revoked): the run in progress is blocked."""
    workspace = make_workspace(sandbox, name="Rejected")
    assert workspace.mark_credentials_verified()
    run = sync.start_run(good_job(workspace, tmp_path))
    workspace.mark_credentials_rejected("mParticle refused the API key and secret (HTTP 403).")
    run.finish(SyncRun.Status.BLOCKED, "mParticle refused the API key and secret (HTTP 403).")
    return workspace


def never_run(sandbox, tmp_path):
    workspace = make_workspace(sandbox, name="Never Run")
    good_job(workspace, tmp_path)
    return workspace


def first_run_under_way(sandbox, tmp_path):
    workspace = make_workspace(sandbox, name="First Run")
    sync.start_run(good_job(workspace, tmp_path))
    return workspace


def running_after_success(sandbox, tmp_path):
    workspace = make_workspace(sandbox, name="Running")
    job = good_job(workspace, tmp_path)
    assert run_job(job).status == SyncRun.Status.SUCCEEDED
    run = sync.start_run(job)
    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.RUNNING)
    return workspace


def running_after_failure(sandbox, tmp_path):
    """A job whose last run failed runs again: failing until that run finishes well."""
    workspace = make_workspace(sandbox, name="Running Again")
    job = make_job(workspace, tmp_path / "missing.csv", name="broken")
    assert run_job(job).status == SyncRun.Status.FAILED
    sync.start_run(job)
    return workspace


def paused(sandbox, tmp_path):
    workspace = make_workspace(sandbox, name="Paused")
    assert run_job(good_job(workspace, tmp_path)).status == SyncRun.Status.SUCCEEDED
    Workspace.objects.filter(pk=workspace.pk).update(status=Workspace.Status.PAUSED, status_message="Paused by sam.")
    return workspace


def awaiting_credentials(sandbox, tmp_path):
    return Workspace.objects.create(name="Newcomer")


def deliveries_failing(sandbox, tmp_path):
    workspace = make_workspace(sandbox, name="Deliveries Failing")
    run = sync.start_run(good_job(workspace, tmp_path))
    Delivery.objects.create(
        run=run,
        workspace=workspace,
        sequence=1,
        payload=Delivery.compress(b"[]"),
        first_failure_at=timezone.now() - timedelta(hours=2),
        attempts=9,
        last_status=503,
        last_error="HTTP 503: Service Unavailable",
    )
    return workspace


# situation: (page state, alert, the reason says, credentials line)
SITUATIONS = {
    healthy: ("ok", "ok", "every job succeeded", "Credentials stored, not verified yet"),
    one_job_failing: ("failing", AlertEvent.Kind.RUN_FAILED, "of job broken failed", None),
    credentials_rejected: ("blocked", AlertEvent.Kind.CREDENTIALS_REJECTED, "HTTP 403", "Credentials rejected"),
    never_run: ("new", "ok", "No run yet", None),
    first_run_under_way: ("new", "ok", "no run has finished yet", None),
    running_after_success: ("ok", "ok", "is under way", None),
    running_after_failure: ("failing", AlertEvent.Kind.RUN_FAILED, "of job broken failed", None),
    paused: ("attention", "ok", "Paused by sam.", None),
    awaiting_credentials: ("attention", "ok", "Waiting for the client's credentials", "Waiting for the client's"),
    deliveries_failing: ("failing", AlertEvent.Kind.DELIVERIES_FAILING, "1 request(s) have been failing", None),
}


def health_on(html: str, where: str) -> str:
    """The data-health of the first badge after `where` in a page."""
    found = re.search(r'data-health="(\w+)"', html[html.index(where) :])
    return found.group(1) if found else ""


@pytest.mark.parametrize("situation", SITUATIONS, ids=lambda s: s.__name__)
def test_every_face_shows_the_same_health(sam, sandbox, tmp_path, situation):
    state, alert, reason, credentials = SITUATIONS[situation]
    workspace = situation(sandbox, tmp_path)
    workspace.refresh_from_db()
    found = health.of(workspace)
    assert (found.state, found.alert) == (state, alert), found.reason
    assert reason in found.reason

    # The staff home.
    home = sam.get(reverse("feeds:home"))
    [row] = [o for o in home.context["healths"] if o.workspace.pk == workspace.pk]
    assert row.state == state and row.health.reason == found.reason
    assert health_on(home.content.decode(), f'data-workspace="{workspace.slug}"') == state

    # The workspace page: its heading's badge, the reason, and a credentials line that says the same.
    page = sam.get(reverse("feeds:workspace", args=[workspace.slug])).content.decode()
    assert health_on(page, "<h1>") == state
    assert escape(reason) in page
    line = page[page.index('id="credentials-state"') :].split("</p>")[0]
    if credentials:
        assert escape(credentials) in line
    if state == "blocked":
        assert "received and verified" not in page

    # The admin: the list (worked out for the page at once) and the change page.
    listing = sam.get(reverse("admin:feeds_workspace_changelist"))
    [listed] = [w for w in listing.context["cl"].result_list if w.pk == workspace.pk]
    assert listed.found_health.state == state
    assert f'<strong class="health {state}">{state}</strong>' in listing.content.decode()
    change = sam.get(reverse("admin:feeds_workspace_change", args=[workspace.pk])).content.decode()
    assert f'<strong class="health {state}">{state}</strong>' in change

    # The alerts: what they announce (and have announced, the runs above evaluated them) is the same state.
    assert alerts.current_state(workspace).health == alert
    alerts.evaluate(workspace)
    workspace.refresh_from_db()
    assert workspace.health == alert
    newest = AlertEvent.objects.filter(workspace=workspace).first()
    assert (newest.kind if newest else "ok") == alert


def test_the_home_used_to_say_failing_where_the_workspace_page_said_active(sam, sandbox, tmp_path):
    """The home judged the workspace's newest run, the alerts each job's newest finished run: one job failing
    behind a newer success was "ok" on the home and "Run failed" in the alerts. Now both say failing."""
    workspace = one_job_failing(sandbox, tmp_path)
    assert AlertEvent.objects.get(workspace=workspace).kind == AlertEvent.Kind.RUN_FAILED
    home = sam.get(reverse("feeds:home")).content.decode()
    page = sam.get(reverse("feeds:workspace", args=[workspace.slug])).content.decode()
    assert health_on(home, f'data-workspace="{workspace.slug}"') == "failing" == health_on(page, "<h1>")


def test_a_blocked_run_of_an_active_workspace_needs_attention(sandbox, tmp_path):
    """Credentials no longer refused (the pause is over, say) but a run still blocked: a connection test
    resumes it. Not an alert (nothing is refused), but not "ok" either."""
    workspace = make_workspace(sandbox)
    run = sync.start_run(good_job(workspace, tmp_path))
    run.finish(SyncRun.Status.BLOCKED, sync.PAUSED)
    found = health.of(workspace)
    assert (found.state, found.alert, found.run_id) == ("attention", "ok", run.pk)
    assert "Testing the credentials resumes it" in found.reason


def test_the_health_of_many_workspaces_takes_a_few_queries(sandbox, tmp_path, django_assert_max_num_queries):
    builders = [healthy, one_job_failing, credentials_rejected, never_run, running_after_success, deliveries_failing]
    for build in builders:
        build(sandbox, tmp_path)
    workspaces = list(Workspace.objects.all())
    with django_assert_max_num_queries(3):
        found = health.assess(workspaces)
    assert [found[w.pk].state for w in workspaces] == [
        "failing",  # Deliveries Failing (by name)
        "ok",  # Healthy
        "new",  # Never Run
        "failing",  # One Failing
        "blocked",  # Rejected
        "ok",  # Running
    ]


def test_the_sweeper_evaluates_only_the_workspaces_whose_health_moved(sandbox, tmp_path, monkeypatch):
    healthy(sandbox, tmp_path)
    moved = never_run(sandbox, tmp_path)
    evaluated = []
    real = alerts.evaluate

    def spy(workspace, now=None):
        evaluated.append(workspace.pk)
        return real(workspace, now)

    monkeypatch.setattr(alerts, "evaluate", spy)
    assert alerts.evaluate_all() == []
    assert evaluated == []
    Workspace.objects.filter(pk=moved.pk).update(status=Workspace.Status.CREDENTIALS_REJECTED)
    [event] = alerts.evaluate_all()
    assert evaluated == [moved.pk] and event.kind == AlertEvent.Kind.CREDENTIALS_REJECTED


def test_the_admin_list_and_the_home_do_not_query_per_workspace(sam, sandbox, tmp_path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    healthy(sandbox, tmp_path)
    pages = [reverse("admin:feeds_workspace_changelist"), reverse("feeds:home")]
    few = []
    for page in pages:
        with CaptureQueriesContext(connection) as queries:
            assert sam.get(page).status_code == 200
        few.append(len(queries))
    for build in (one_job_failing, credentials_rejected, never_run, running_after_success, deliveries_failing):
        build(sandbox, tmp_path)
    for page, count in zip(pages, few, strict=True):
        with CaptureQueriesContext(connection) as queries:
            assert sam.get(page).status_code == 200
        # One more at most: the oldest of the deliveries failing, asked only when some are.
        assert len(queries) <= count + 1, page


def test_the_home_counts_as_delivered_the_named_delivered_states(sandbox, tmp_path):
    workspace = make_workspace(sandbox, name="Counted")
    run = sync.start_run(good_job(workspace, tmp_path))
    now = timezone.now()
    for sequence, state in enumerate(Delivery.State, start=1):
        Delivery.objects.create(
            run=run, workspace=workspace, sequence=sequence, state=state, event_count=10**sequence, finished_at=now
        )
    [overview] = health.workspace_health([workspace])
    expected = sum(10**i for i, state in enumerate(Delivery.State, start=1) if state in Delivery.DELIVERED_STATES)
    assert set(Delivery.DELIVERED_STATES) == {Delivery.State.ACCEPTED, Delivery.State.PARTIAL}
    assert overview.events_24h == expected and overview.daily[-1]["value"] == expected
