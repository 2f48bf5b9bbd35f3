"""The whole onboarding in a real browser (Playwright + Debian's chromium): staff create a workspace and a
credential link; the client, in a second browser context, enters the Feed's key and secret and sees the
connection test pass; staff see the credentials verified, map fields with the preview, run a sync, watch the
progress reach the end and see the deliveries. Screenshots of every step go to test-artifacts/screenshots/."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connection

from feeds import tasks
from feeds.models import CredentialLink, SyncRun, Workspace
from tests.browser import Shots
from tests.helpers import SANDBOX_KEY, SANDBOX_SECRET, purchase_rows, write_csv

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_superuser("stella", "stella@example.com", "a-long-staff-password-1")


@pytest.fixture
def worker(monkeypatch):
    """Stand-in for the django-q2 cluster: a queued run is worked on in a background thread, as a worker would."""
    threads = []

    def enqueue(run):
        def work():
            try:
                tasks.run_inline(run.pk)
            finally:
                connection.close()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        threads.append(thread)
        return f"thread-{run.pk}"

    monkeypatch.setattr("feeds.sync.enqueue_run", enqueue)
    yield threads
    for thread in threads:
        thread.join(timeout=30)


def login(page, live_server):
    page.goto(f"{live_server.url}/admin/login/?next=/")
    page.get_by_label("Username").fill("stella")
    page.get_by_label("Password").fill("a-long-staff-password-1")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")


def test_onboarding_from_workspace_to_delivered_data(chromium, live_server, sandbox, staff_user, worker, tmp_path):
    shots = Shots("onboarding")
    staff = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = staff.new_page()
    login(page, live_server)
    shots.take(page, "staff-home-empty")

    # Staff create the workspace.
    page.get_by_role("link", name="New workspace").first.click()
    page.get_by_label("Name").fill("Acme Shoes")
    page.get_by_label("Pod").select_option("sandbox")
    page.get_by_label("Endpoint URL").fill(f"{sandbox.url}/v2")
    shots.take(page, "new-workspace")
    page.get_by_role("button", name="Create workspace").click()
    page.wait_for_url(re.compile(r"/workspaces/acme-shoes/$"))
    assert "Waiting for the client's credentials" in page.inner_text("#credentials-state")

    # ... and a credential link for the client.
    page.get_by_role("button", name="Create a credential link").click()
    link = page.input_value("#new-link")
    assert "/connect/" in link
    shots.take(page, "credential-link")

    # The client, in another browser context (no login), hands over the Feed's key and secret.
    client = chromium.new_context(viewport={"width": 390, "height": 844})  # a phone
    cpage = client.new_page()
    cpage.goto(link)
    body = cpage.inner_text("body")
    assert "Acme Shoes" in body
    shots.take(cpage, "client-form")
    cpage.get_by_label("Pod").select_option("sandbox")
    cpage.get_by_label("Endpoint URL").fill(f"{sandbox.url}/v2")
    cpage.get_by_label("API key").fill(SANDBOX_KEY)
    cpage.get_by_label("API secret").fill(SANDBOX_SECRET)
    cpage.get_by_role("button", name="Test and save").click()
    cpage.wait_for_load_state()
    assert "accepted" in cpage.inner_text("body").lower()
    assert SANDBOX_SECRET not in cpage.content()
    shots.take(cpage, "client-verified")

    # The link works once.
    cpage.goto(link)
    assert "not valid" in cpage.inner_text("body").lower()
    shots.take(cpage, "client-link-used")

    # Staff see the credentials received and verified.
    page.reload()
    assert "Credentials received and verified" in page.inner_text("#credentials-state")
    workspace = Workspace.objects.get(name="Acme Shoes")
    assert workspace.api_secret == SANDBOX_SECRET and workspace.credentials_verified_at
    assert SANDBOX_SECRET not in page.content()
    shots.take(page, "staff-verified")

    # An expired link is refused too.
    expired, token = CredentialLink.issue(workspace, hours=-1)
    cpage.goto(f"{live_server.url}/connect/{token}/")
    assert "not valid" in cpage.inner_text("body").lower()

    map_fields_run_and_watch(page, live_server, workspace, shots, tmp_path, sandbox, worker)
    client.close()
    staff.close()


def load_without_lock(page, attempts: int = 10) -> None:
    """Load the run page again until it renders (run.js may be reloading it at the same moment)."""
    from playwright.sync_api import Error as PlaywrightError

    url = page.url
    for _ in range(attempts):
        try:
            page.goto(url)
            page.wait_for_load_state()
            if page.locator("[data-run=status]").count():
                return
        except PlaywrightError:
            pass
        page.wait_for_timeout(500)
    raise AssertionError("the run page did not load")


def map_fields_run_and_watch(page, live_server, workspace, shots, tmp_path, sandbox, worker):
    """Staff map fields with the live preview, create a job, run it, watch the progress reach the end and see
    the deliveries."""
    import json

    from tests.helpers import MAPPING

    rows = purchase_rows(300, users=300)
    rows[7]["amount"] = "lots"  # one bad record, refused with its reason
    data = write_csv(tmp_path / "orders.csv", rows)

    page.goto(f"{live_server.url}/workspaces/{workspace.slug}/")
    page.get_by_role("link", name="New mapping").click()
    page.get_by_label("Name", exact=True).fill("orders")
    page.locator("#json-details summary").click()
    page.fill("#id_document", json.dumps(MAPPING, indent=2))
    page.locator("#preview-records").fill(json.dumps(rows[:3] + [rows[7]]))
    page.locator("#preview-run").click()
    page.wait_for_function("document.querySelector('#preview-batches').textContent.includes('Purchase Completed')")
    # The refused sample is shown with the reason, next to the rule that refused it.
    page.wait_for_function("document.querySelector('#preview-refused').textContent.includes('is not a number')")
    shots.take(page, "mapping-preview")
    page.get_by_role("button", name="Save mapping").click()
    page.wait_for_load_state()
    assert "Mapping saved" in page.inner_text("body")
    mapping = workspace.mappings.get(name="orders")
    assert mapping.rules["identities"] == MAPPING["identities"]

    # A job over the file.
    page.goto(f"{live_server.url}/workspaces/{workspace.slug}/jobs/new/")
    page.get_by_label("Name").fill("Nightly orders")
    page.get_by_label("Mapping").select_option(value=str(mapping.pk))
    page.get_by_label("Source kind").select_option("file")
    page.get_by_label("Source settings (JSON)").fill(json.dumps({"path": str(data)}))
    shots.take(page, "new-job")
    page.get_by_role("button", name="Create the job").click()
    page.wait_for_load_state()
    job = workspace.jobs.get(name="Nightly orders")

    # The sandbox answers slowly, so that the run can be watched as it goes.
    from feeds.mparticle.sandbox import FaultConfig

    sandbox.configure(faults=FaultConfig(seed=1, slow_rate=1.0, slow_seconds=0.4))
    page.goto(f"{live_server.url}/workspaces/{workspace.slug}/")
    page.get_by_role("button", name="Run sync now").first.click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    # The stand-in worker writes to the same SQLite test database the live server reads; a read can meet a
    # write lock there (the real cluster works on its own connection and file), so a page load is retried.
    load_without_lock(page)
    shots.take(page, "run-started")
    # The page polls status.json and updates itself while the worker works; wait for the worker to finish,
    # then the page shows the end.
    for thread in worker:
        thread.join(timeout=60)
    page.wait_for_function(
        "['Succeeded with rejected records', 'Succeeded'].includes("
        "(document.querySelector('[data-run=status]') || {}).textContent?.trim())",
        timeout=30_000,
    )
    load_without_lock(page)
    shots.take(page, "run-finished")
    run = job.runs.get()
    assert run.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS
    assert run.events_accepted == 299 and run.records_rejected == 1
    body = page.inner_text("body")
    assert "is not a number" in body  # the rejected record and its reason
    assert page.locator("tr[data-delivery]").count() == run.deliveries.count()
    assert len({e["data"]["source_message_id"] for e in sandbox.events()}) == 299
    assert SANDBOX_SECRET not in page.content()
