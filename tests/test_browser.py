"""The whole onboarding in a real browser (Playwright + Debian's chromium) against the real site: `manage.py
serve` (runserver and a django-q2 cluster, as `make run` starts them) on its own SQLite file. Staff create a
workspace and a credential link; the client, in a second browser context, enters the Feed's key and secret and
sees the connection test pass; staff see the credentials verified, map fields with the preview, run a sync, watch
the progress reach the end and see the deliveries. Screenshots of every step go to test-artifacts/screenshots/."""

from __future__ import annotations

import json
import re

import pytest

from tests import processes
from tests.browser import Shots, shows, wait_js
from tests.helpers import MAPPING, SANDBOX_KEY, SANDBOX_SECRET, purchase_rows, write_csv

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

STAFF = ("stella", "a-long-staff-password-1")


@pytest.fixture
def site(tmp_path):
    """The site and its cluster as real processes, on a fresh database with one staff user."""
    db = tmp_path / "site.sqlite3"
    env = processes.site_env(db)
    processes.manage(env, "migrate", "--noinput", "-v", "0")
    processes.manage(
        env, "createsuperuser", "--noinput", "--username", STAFF[0], "--email", "stella@example.com",
        input_env={"DJANGO_SUPERUSER_PASSWORD": STAFF[1]},
    )  # fmt: skip
    site = processes.Site(env, tmp_path / "site.log")
    site.db = db
    try:
        site.start()
        yield site
    finally:
        site.stop()


def shell(site, code: str, **env: str) -> str:
    """Run Python in the site's Django (its database), for what a browser cannot see; returns what it printed.
    Values go in through `env` (never on a command line, where `ps` shows them)."""
    return processes.manage(site.env, "shell", "-v", "0", "-c", code, input_env=env).stdout.strip()


def login(page, url):
    page.goto(f"{url}/admin/login/?next=/")
    page.get_by_label("Username").fill(STAFF[0])
    page.get_by_label("Password").fill(STAFF[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")


def test_onboarding_from_workspace_to_delivered_data(chromium, site, sandbox, tmp_path):
    shots = Shots("onboarding")
    staff = chromium.new_context(viewport={"width": 1280, "height": 900})
    client = chromium.new_context(viewport={"width": 390, "height": 844})  # a phone
    try:
        page, cpage = staff.new_page(), client.new_page()
        # Every page is shown under the site's Content-Security-Policy: a violation is a failure.
        violations: list[str] = []
        for p in (page, cpage):
            p.on(
                "console",
                lambda m, p=p: (
                    violations.append(f"{p.url}: {m.location}: {m.text[:60]}")
                    if "Content Security Policy" in m.text
                    else None
                ),
            )
        login(page, site.url)
        shots.take(page, "staff-home-empty")
        onboard(page, cpage, site, sandbox, shots)
        map_fields_run_and_watch(page, site, sandbox, shots, tmp_path)
        assert violations == []
    except Exception:
        print(site.log()[-5000:])  # what the site and its cluster said, to explain a failure
        raise
    finally:
        client.close()
        staff.close()


def onboard(page, cpage, site, sandbox, shots):
    """Staff create the workspace and a credential link; the client hands over the key and secret."""
    page.get_by_role("link", name="New workspace").first.click()
    page.get_by_label("Name").fill("Acme Shoes")
    page.get_by_label("Pod").select_option("sandbox")
    page.get_by_label("Endpoint URL").fill(f"{sandbox.url}/v2")
    shots.take(page, "new-workspace")
    page.get_by_role("button", name="Create workspace").click()
    page.wait_for_url(re.compile(r"/workspaces/acme-shoes/$"))
    assert "Waiting for the client's credentials" in page.inner_text("#credentials-state")

    page.get_by_role("button", name="Create a credential link").click()
    link = page.input_value("#new-link")
    assert "/connect/" in link
    shots.take(page, "credential-link")

    # The client, in another browser context (no login), hands over the Feed's key and secret.
    cpage.goto(link)
    assert "Acme Shoes" in cpage.inner_text("body")
    # The token left the address bar; staff chose the (sandbox) endpoint: the client is asked for none.
    assert cpage.url == f"{site.url}/connect/" and link.rsplit("/", 2)[-2] not in cpage.url
    assert cpage.get_by_label("Endpoint URL").count() == 0 and cpage.get_by_label("Pod").count() == 0
    shots.take(cpage, "client-form")
    cpage.get_by_label("API key").fill(SANDBOX_KEY)
    cpage.get_by_label("API secret").fill(SANDBOX_SECRET)
    cpage.get_by_role("button", name="Test and save").click()
    shows(cpage, "accepted")
    assert SANDBOX_SECRET not in cpage.content()
    shots.take(cpage, "client-verified")

    # The link works once.
    cpage.goto(link)
    assert "not valid" in cpage.inner_text("body").lower()
    shots.take(cpage, "client-link-used")

    # Staff see the credentials received and verified; the database holds the secret only as ciphertext.
    page.reload()
    assert "Credentials received and verified" in page.inner_text("#credentials-state")
    assert SANDBOX_SECRET not in page.content()
    assert (
        shell(
            site,
            "import os; from feeds.models import Workspace; w = Workspace.objects.get(name='Acme Shoes'); "
            "print(w.api_secret == os.environ['EXPECTED_SECRET'], w.credentials_verified_at is not None)",
            EXPECTED_SECRET=SANDBOX_SECRET,
        )
        == "True True"
    )
    # The database file and its write-ahead log hold the secret only as ciphertext.
    assert SANDBOX_SECRET.encode() not in b"".join(f.read_bytes() for f in site.db.parent.glob("site.sqlite3*"))

    # An expired link is refused too.
    token = shell(
        site,
        "from feeds.models import CredentialLink, Workspace; "
        "print(CredentialLink.issue(Workspace.objects.get(name='Acme Shoes'), hours=-1)[1])",
    )
    cpage.goto(f"{site.url}/connect/{token}/")
    assert "not valid" in cpage.inner_text("body").lower()


def map_fields_run_and_watch(page, site, sandbox, shots, tmp_path):
    """Staff map fields with the live preview, create a job, run it, watch the progress reach the end and see
    the deliveries."""
    rows = purchase_rows(300, users=300)
    rows[7]["amount"] = "lots"  # one bad record, refused with its reason
    data = write_csv(tmp_path / "orders.csv", rows)

    page.goto(f"{site.url}/workspaces/acme-shoes/")
    page.get_by_role("link", name="New mapping").click()
    page.get_by_label("Name", exact=True).fill("orders")
    page.locator("#json-details summary").click()
    page.fill("#id_document", json.dumps(MAPPING, indent=2))
    # Mapping from a CSV sample: the file's header and a few of its lines, the bad one among them.
    lines = data.read_text().splitlines(keepends=True)
    page.locator("#preview-records").fill("".join(lines[:4] + [lines[8]]))
    page.locator("#preview-run").click()
    wait_js(page, "document.querySelector('#preview-batches').textContent.includes('Purchase Completed')")
    # The refused sample is shown with the reason, next to the rule that refused it.
    wait_js(page, "document.querySelector('#preview-refused').textContent.includes('is not a number')")
    shots.take(page, "mapping-preview")
    page.get_by_role("button", name="Save mapping").click()
    shows(page, "Mapping saved")
    ((mapping_id, rules, sample),) = processes.query(
        site.db, "SELECT id, rules, sample FROM feeds_mapping WHERE name = 'orders'"
    )
    assert json.loads(rules)["identities"] == MAPPING["identities"]
    assert sample.splitlines() == [line.rstrip("\r\n") for line in lines[:4] + [lines[8]]]  # kept with it

    # A job over the file.
    page.goto(f"{site.url}/workspaces/acme-shoes/jobs/new/")
    page.get_by_label("Name").fill("Nightly orders")
    page.get_by_label("Mapping").select_option(value=str(mapping_id))
    page.get_by_label("Source kind").select_option("file")
    page.get_by_label("Source settings (JSON)").fill(json.dumps({"path": str(data)}))
    shots.take(page, "new-job")
    page.get_by_role("button", name="Create the job").click()
    page.wait_for_load_state()

    # The sandbox answers slowly, so that the run can be watched as it goes; the cluster does the work and
    # the run page follows it by polling.
    from sandbox.server import FaultConfig

    sandbox.configure(faults=FaultConfig(seed=1, slow_rate=1.0, slow_seconds=0.4))
    page.goto(f"{site.url}/workspaces/acme-shoes/")
    page.get_by_role("button", name="Run sync now").first.click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    shots.take(page, "run-started")
    # When the run ends, the page reloads itself once, complete and no longer polling (data-live="0").
    wait_js(
        page,
        "(document.querySelector('#run') || {dataset: {}}).dataset.live === '0' && "
        "['Succeeded with rejected records', 'Succeeded'].includes("
        "(document.querySelector('[data-run=status]') || {}).textContent?.trim())",
        timeout=120_000,
    )
    page.wait_for_load_state()
    shots.take(page, "run-finished")
    status, accepted, rejected = processes.query(
        site.db, "SELECT status, events_accepted, records_rejected FROM feeds_syncrun"
    )[0]
    assert (status, accepted, rejected) == ("succeeded_with_rejects", 299, 1)
    body = page.inner_text("body")
    assert "is not a number" in body  # the rejected record and its reason
    deliveries = processes.query(site.db, "SELECT count(*) FROM feeds_delivery")[0][0]
    assert page.locator("tr[data-delivery]").count() == deliveries
    assert len({e["data"]["source_message_id"] for e in sandbox.events()}) == 299
    assert SANDBOX_SECRET not in page.content()


def test_each_confirmation_and_the_copy_button(chromium, site, sandbox):
    """Promoting, moving back to development and revoking a link each ask first, on a page that works without
    JavaScript (Cancel changes nothing); the copy button says "Copied", then its own label again."""
    shell(
        site,
        "from feeds.models import *\n"
        "w = Workspace.objects.create(name='Acme Shoes', pod='sandbox', endpoint_url='http://127.0.0.1:9/v2')\n"
        "m = Mapping.objects.create(workspace=w, rules={})\n"
        "j = SyncJob.objects.create(workspace=w, mapping=m, name='orders', source_kind='file',"
        " source_config={'path': 'x.csv'})\n"
        "SyncRun.objects.create(job=j, workspace=w, status='succeeded', source_kind='file',"
        " endpoint_mode='realtime', environment='development', mapping_version=1, mapping_rules={})\n",
    )
    shots = Shots("confirmations")
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    violations: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda m: violations.append(m.text[:80]) if "Content Security Policy" in m.text else None)
        login(page, site.url)
        workspace_url = f"{site.url}/workspaces/acme-shoes/"

        # Promote: asked, cancelled (nothing changes), asked again, done.
        page.goto(workspace_url)
        page.get_by_role("link", name="Promote to production…").click()
        page.wait_for_url(re.compile(r"/promote/$"))
        assert "client's production environment" in page.inner_text("#confirm-what")
        shots.take(page, "promote-asked")
        page.get_by_role("link", name="Cancel").click()
        page.wait_for_url(workspace_url)
        assert "environment development" in page.inner_text("main")
        page.get_by_role("link", name="Promote to production…").click()
        page.get_by_role("button", name="Promote to production").click()
        page.wait_for_url(workspace_url)
        assert "now sends to the production environment" in page.inner_text("main")
        assert "environment production" in page.inner_text("main")

        # And the way back.
        page.get_by_role("link", name="Move back to development…").click()
        page.wait_for_url(re.compile(r"/demote/$"))
        assert "does not take data out of mParticle" in page.inner_text("#confirm-what")
        shots.take(page, "demote-asked")
        page.get_by_role("button", name="Move back to development").click()
        page.wait_for_url(workspace_url)
        assert "environment development" in page.inner_text("main")

        # A credential link: the copy button, then revoking it (asked first).
        page.get_by_role("button", name="Create a credential link").click()
        copy = page.locator("button[data-copy='#new-link']")
        copy.click()
        wait_js(page, "document.querySelector(\"button[data-copy='#new-link']\").textContent === 'Copied'")
        assert page.evaluate("navigator.clipboard.readText()") == page.input_value("#new-link")
        shots.take(page, "copied")
        copy.click()  # clicked again while it says "Copied": it still goes back to its own label
        wait_js(page, "document.querySelector(\"button[data-copy='#new-link']\").textContent === 'Copy'", 5000)
        page.get_by_role("link", name="Revoke…").click()
        page.wait_for_url(re.compile(r"/revoke/$"))
        assert "stops working at once" in page.inner_text("#confirm-what")
        shots.take(page, "revoke-asked")
        page.get_by_role("button", name="Revoke the link").click()
        page.wait_for_url(workspace_url)
        assert "The link was revoked." in page.inner_text("main")
        assert "revoked" in page.inner_text("table")
        assert page.get_by_role("link", name="Revoke…").count() == 0

        # The admin asks too, before it promotes.
        page.goto(f"{site.url}/admin/feeds/workspace/")
        page.locator("input[name='_selected_action']").first.check()
        page.locator("select[name='action']").select_option("promote")
        page.get_by_role("button", name="Go").click()
        assert "client's production environment" in page.inner_text("#confirm-what")
        shots.take(page, "admin-promote-asked")
        page.get_by_role("button", name="Promote to production").click()
        shows(page, "now sends to the production environment")
        assert violations == []
    except Exception:
        print(site.log()[-5000:])
        raise
    finally:
        context.close()


# ------------------------------------------------------------------------------------ the embeddable hand-over


PARENT_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Partner's product</title></head><body>
<h1>Connect your mParticle workspace</h1>
<iframe id="mpfeed" src="{src}" title="mParticle credentials" width="700" height="650"></iframe>
<script>
  window.received = [];
  window.addEventListener("message", function (event) {{
    if (event.origin !== "{site}") return;  // only the site's frame is listened to
    window.received.push({{origin: event.origin, data: event.data}});
  }});
</script></body></html>"""


class ParentPage:
    """The partner's own product: a static page on another origin (another host name and port than the site's)."""

    def __init__(self, html_for):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = page.html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://localhost:{self.server.server_port}"
        self.html = ""
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def parent_page():
    page = ParentPage(None)
    yield page
    page.close()


@pytest.fixture
def embedding_site(tmp_path, parent_page):
    """The site, allowing the partner's page (and only it) to frame the credential form."""
    db = tmp_path / "site.sqlite3"
    env = processes.site_env(db, MPFEED_EMBED_ORIGINS=parent_page.origin)
    processes.manage(env, "migrate", "--noinput", "-v", "0")
    site = processes.Site(env, tmp_path / "site.log")
    site.db = db
    try:
        site.start()
        yield site
    finally:
        site.stop()


def test_the_credential_form_inside_a_partners_page(chromium, embedding_site, parent_page, sandbox):
    """A partner's page on another origin frames the form; the client hands the credentials over inside it (no
    cookie of the site is needed: a cross-site frame's are blocked or partitioned); the parent page hears of it
    by a postMessage from the site's origin."""
    site = embedding_site
    token = shell(
        site,
        "import os; from feeds.models import CredentialLink, Workspace\n"
        "w = Workspace.objects.create(name='Acme Shoes', pod='sandbox', endpoint_url=os.environ['ENDPOINT'])\n"
        "print(CredentialLink.issue(w)[1])",
        ENDPOINT=f"{sandbox.url}/v2",
    )
    src = f"{site.url}/connect/embed/{token}/?origin={parent_page.origin}"
    parent_page.html = PARENT_PAGE.format(src=src, site=site.url)
    shots = Shots("embedded-hand-over")
    # localhost and 127.0.0.1 are two sites: the frame's SameSite=Lax cookies would not be sent; it needs none.
    context = chromium.new_context(viewport={"width": 900, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{parent_page.origin}/")
        frame = page.frame_locator("#mpfeed")
        frame.get_by_label("API key").fill(SANDBOX_KEY)
        frame.get_by_label("API secret").fill(SANDBOX_SECRET)
        shots.take(page, "framed-form")
        frame.get_by_role("button", name="Test and save").click()
        frame.get_by_text("mParticle accepted these credentials.").wait_for()
        wait_js(page, "window.received.length > 0")
        [message] = page.evaluate("window.received")
        assert message == {
            "origin": site.url,
            "data": {"type": "mpfeed:credentials", "state": "in_use", "workspace": "acme-shoes"},
        }
        shots.take(page, "framed-done")
        assert SANDBOX_SECRET not in page.frames[1].content()
        assert (
            shell(
                site,
                "import os; from feeds.models import Workspace; w = Workspace.objects.get(name='Acme Shoes'); "
                "print(w.api_secret == os.environ['EXPECTED_SECRET'], w.credentials_verified_at is not None)",
                EXPECTED_SECRET=SANDBOX_SECRET,
            )
            == "True True"
        )

        # Another origin cannot frame it: the browser refuses to show the page.
        intruder = ParentPage(None)
        try:
            token2 = shell(site, "from feeds.models import *; print(CredentialLink.issue(Workspace.objects.get())[1])")
            intruder.html = PARENT_PAGE.format(src=f"{site.url}/connect/embed/{token2}/", site=site.url)
            page.goto(f"{intruder.origin}/")
            page.wait_for_timeout(500)
            framed = page.frames[1]
            assert "Test and save" not in framed.content()
        finally:
            intruder.close()
    finally:
        context.close()
