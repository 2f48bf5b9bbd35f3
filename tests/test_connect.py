"""The client's credential page (feeds/views/connect.py): a one-time link, a connection test of the new
credentials against the sandbox over real HTTP, and nothing stored, shown or logged that should not be."""

from __future__ import annotations

import html
import logging
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.conf import Conf

from feeds import sync
from feeds.models import CredentialLink, SyncRun, Workspace
from tests.helpers import (
    SANDBOX_KEY,
    SANDBOX_SECRET,
    free_port,
    make_job,
    make_staff,
    make_workspace,
    purchase_rows,
    run_job,
    write_csv,
)

pytestmark = pytest.mark.django_db

WRONG_SECRET = "wr0ng-SECRET-also-never-shown-41c7"
REFUSED = (
    "mParticle did not accept this key and secret; check you copied the Feed's key and secret (not the workspace's), "
    "and the pod."
)
UNREACHABLE = "mParticle could not be reached or is busy; try again in a few minutes."
GONE = "This link is not valid any more"


def url(token: str) -> str:
    return reverse("feeds:connect", args=[token])


def text(response) -> str:
    return html.unescape(response.content.decode())


def post(client: Client, token: str, sandbox=None, headers: dict | None = None, **fields):
    """The client's form posted (the workspaces here are on the sandbox pod staff set up: no pod to choose)."""
    data = {"api_key": SANDBOX_KEY, "api_secret": SANDBOX_SECRET, **fields}
    return client.post(url(token), data, headers=headers)


def page(client: Client, token: str):
    """The link opened as a browser does: the token is swapped for the session, then the form at /connect/."""
    first = client.get(url(token))
    if first.status_code != 302:
        return first
    assert first["Location"] == reverse("feeds:connect_page") and token not in first["Location"]
    return client.get(first["Location"])


def assert_nothing_secret(response, *secrets: str) -> None:
    body = response.content.decode()
    for secret in (SANDBOX_SECRET, WRONG_SECRET, *secrets):
        assert secret not in body
        assert html.escape(secret) not in body


def assert_private(response, *, form: bool = False) -> None:
    """Not cached, and the URL (the token) never sent on in a Referer: no Referer at all, except from the form
    page, which sends the origin only (with "no-referrer" browsers send `Origin: null`, refused by Django's CSRF
    check; see test_csrf_is_enforced)."""
    assert response["Referrer-Policy"] == ("strict-origin" if form else "no-referrer")
    assert "no-store" in response["Cache-Control"]


@pytest.fixture
def awaiting(sandbox):
    """A new workspace waiting for its first credentials (staff set the sandbox pod up)."""
    return Workspace.objects.create(name="Acme Shoes", pod=Workspace.Pod.SANDBOX, endpoint_url=f"{sandbox.url}/v2")


# ------------------------------------------------------------------------------------------------------ GET


def test_a_valid_link_shows_only_its_workspace_and_the_partner(client, sandbox, settings, django_user_model):
    settings.PARTNER_NAME = "Datapartner Ltd"
    workspace = make_workspace(sandbox, name="Acme Shoes")
    make_workspace(sandbox, name="Globex Secret Client")
    _, token = CredentialLink.issue(workspace)

    response = page(client, token)
    assert response.status_code == 200
    body = text(response)
    assert "Acme Shoes" in body and "Datapartner Ltd" in body
    assert "Globex" not in body
    assert SANDBOX_KEY not in body and sandbox.url not in body  # neither the stored key nor the endpoint
    assert_nothing_secret(response)
    assert_private(response, form=True)
    # The form: key, secret, CSRF, the button; no pod (staff set this one up on the sandbox) and no endpoint URL.
    assert 'name="pod"' not in body and "endpoint_url" not in body and "Endpoint URL" not in body
    assert re.search(r'<input type="text" name="api_key"[^>]*autocomplete="off"', body)
    assert re.search(r'<input type="password" name="api_secret"[^>]*autocomplete="off"', body)
    assert "csrfmiddlewaretoken" in body and ">Test and save</button>" in body
    # No staff chrome for a staff member opening the client's link either.
    staff = django_user_model.objects.create_user("stella", password="pw-long-enough-1", is_staff=True)
    client.force_login(staff)
    body = text(page(client, CredentialLink.issue(workspace)[1]))
    assert "Log out" not in body and "Globex" not in body


def test_the_client_chooses_an_mparticle_pod_never_the_sandbox_nor_an_endpoint(client, sandbox, settings):
    assert settings.MPFEED_ALLOW_SANDBOX  # even where staff may use the sandbox
    workspace = Workspace.objects.create(name="Acme Shoes")
    _, token = CredentialLink.issue(workspace)
    body = text(page(client, token))
    assert '<option value="partner" selected>' in body
    for value in ("us1", "us2", "eu1", "au1"):
        assert f'<option value="{value}"' in body
    assert 'value="sandbox"' not in body and "endpoint_url" not in body

    response = post(client, token, pod="sandbox", endpoint_url=f"{sandbox.url}/v2")
    assert response.status_code == 200
    assert "Select a valid choice" in text(response)
    assert sandbox.requests_log() == []
    workspace.refresh_from_db()
    assert not workspace.has_credentials


@pytest.mark.parametrize("state", ["unknown", "revoked", "used", "expired"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_unknown_revoked_used_and_expired_links_are_refused_with_the_same_words(
    client, sandbox, settings, state, method
):
    settings.PARTNER_NAME = "Example Partner"
    workspace = make_workspace(sandbox, name="Acme Shoes")
    link, token = CredentialLink.issue(workspace)
    if state == "unknown":
        token = token[:-4] + "abcd"
    elif state == "revoked":
        link.revoke()
    elif state == "used":
        CredentialLink.objects.filter(pk=link.pk).update(used_at=timezone.now())
    elif state == "expired":
        CredentialLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = client.get(url(token)) if method == "get" else post(client, token, sandbox, api_secret=WRONG_SECRET)
    assert response.status_code == (404 if state == "unknown" else 410)
    body = text(response)
    assert GONE in body and "ask Example Partner for a new link" in body.replace("\n  ", " ")
    assert "Acme Shoes" not in body and '<form method="post" class="stack"' not in body
    assert_nothing_secret(response)
    assert_private(response)
    # The page is the same, word for word, whatever happened to the link.
    assert response.content == client.get(url("no-such-token")).content
    assert response.content == Client().get(reverse("feeds:connect_page")).content  # no link in this session
    link.refresh_from_db()
    assert link.attempts == 0
    assert sandbox.requests_log() == []


# ----------------------------------------------------------------------------------------------------- POST


def test_passing_credentials_are_stored_verified_and_resume_the_blocked_run(client, sandbox, tmp_path, monkeypatch):
    workspace = make_workspace(sandbox, name="Acme Shoes")
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(5)))
    workspace.set_credentials(SANDBOX_KEY, "an-old-wrong-secret")
    run = run_job(job)
    assert run.status == SyncRun.Status.BLOCKED
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.CREDENTIALS_REJECTED
    link, token = CredentialLink.issue(workspace)
    sandbox.reset()
    monkeypatch.setattr(Conf, "SYNC", True)  # the resumed run is worked on right here

    response = post(client, token, sandbox)
    assert response.status_code == 200
    body = text(response)
    assert "mParticle accepted these credentials." in body and "Acme Shoes is connected" in body
    assert_nothing_secret(response, "an-old-wrong-secret")
    assert_private(response)

    workspace.refresh_from_db()
    assert (workspace.api_key, workspace.api_secret) == (SANDBOX_KEY, SANDBOX_SECRET)
    assert workspace.pod == Workspace.Pod.SANDBOX and workspace.endpoint_url == f"{sandbox.url}/v2"
    assert workspace.credentials_verified_at is not None
    assert workspace.status == Workspace.Status.ACTIVE and workspace.status_message == ""
    link.refresh_from_db()
    assert link.state == "used" and link.attempts == 1 and link.last_attempt_at is not None
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    # The first request was the connection test: one batch without events, development, to /events.
    first = sandbox.requests_log()[0]
    assert first.status == 202 and first.path.endswith("/events")
    assert {k.path for k in sandbox.kept()} >= {"/v2/events"}
    assert sum(1 for k in sandbox.kept() if k.path == "/v2/events") == 1

    # The link worked once.
    again = post(client, token, sandbox)
    assert again.status_code == 410 and GONE in text(again)
    assert client.get(url(token)).status_code == 410
    assert client.get(reverse("feeds:connect_page")).status_code == 404  # the session forgot the link
    link.refresh_from_db()
    assert link.attempts == 1


def test_staff_see_credentials_received_and_verified(client, awaiting, sandbox, django_user_model):
    _, token = CredentialLink.issue(awaiting)
    assert post(client, token, sandbox).status_code == 200
    awaiting.refresh_from_db()
    assert awaiting.status == Workspace.Status.ACTIVE and awaiting.credentials_verified_at is not None

    staff = Client()
    staff.force_login(make_staff("stella"))
    page = staff.get(reverse("feeds:workspace", args=[awaiting.slug]))
    assert "Credentials received and verified" in text(page)
    assert_nothing_secret(page)


def test_refused_credentials_store_nothing_and_keep_the_old_ones(client, sandbox):
    workspace = make_workspace(sandbox, name="Acme Shoes")
    before = Workspace.objects.filter(pk=workspace.pk).values().get()
    link, token = CredentialLink.issue(workspace)

    response = post(client, token, sandbox, api_secret=WRONG_SECRET)
    assert response.status_code == 200
    body = text(response)
    assert REFUSED in body and "Nothing was saved." in body
    # The form again: key and secret are empty.
    assert re.search(r'<input type="password" name="api_secret"(?![^>]*value=)[^>]*>', body)
    assert re.search(r'<input type="text" name="api_key"(?![^>]*value=)[^>]*>', body)
    assert SANDBOX_KEY not in body
    assert_nothing_secret(response)
    assert_private(response, form=True)

    assert Workspace.objects.filter(pk=workspace.pk).values().get() == before  # old credentials, same status
    link.refresh_from_db()
    assert link.state == "open" and link.attempts == 1
    assert [r.status for r in sandbox.requests_log()] == [403]

    # The link still works for the right secret.
    assert post(client, token, sandbox).status_code == 200
    workspace.refresh_from_db()
    assert workspace.api_secret == SANDBOX_SECRET and workspace.credentials_verified_at is not None


def test_an_unreachable_endpoint_is_explained_and_nothing_is_stored(client, awaiting):
    port = free_port()
    Workspace.objects.filter(pk=awaiting.pk).update(endpoint_url=f"http://127.0.0.1:{port}/v2")
    link, token = CredentialLink.issue(awaiting)
    response = post(client, token)
    assert response.status_code == 200
    body = text(response)
    assert UNREACHABLE in body
    # Nothing about the host: not its address, its port, nor how it failed.
    assert str(port) not in body and "127.0.0.1" not in body and "refused" not in body.lower()
    assert_nothing_secret(response)
    awaiting.refresh_from_db()
    assert not awaiting.has_credentials and awaiting.status == Workspace.Status.AWAITING_CREDENTIALS
    link.refresh_from_db()
    assert link.usable and link.attempts == 0  # the test never reached mParticle: not counted


@pytest.mark.parametrize("fault", ["429", "503"])
def test_a_busy_mparticle_is_explained_and_nothing_is_stored(client, awaiting, sandbox, fault):
    link, token = CredentialLink.issue(awaiting)
    sandbox.queue_faults([fault])
    response = post(client, token, sandbox)
    assert response.status_code == 200
    assert UNREACHABLE in text(response) and fault not in text(response)
    awaiting.refresh_from_db()
    assert not awaiting.has_credentials
    link.refresh_from_db()
    assert link.attempts == 0  # mParticle said nothing of the credentials: not counted


def test_only_tests_that_mparticle_judged_use_up_the_link(client, awaiting, sandbox, settings):
    """A link's limit counts the tests mParticle answered about the credentials (401/403, 2xx), not network
    errors, throttles, faults of the server or refusals of this deployment."""
    settings.MPFEED_CREDENTIAL_LINK_ATTEMPTS = 2
    settings.MPFEED_LINK_TESTS_PER_ADDRESS = 2
    link, token = CredentialLink.issue(awaiting)
    sandbox.queue_faults(["429", "503", "500"])
    for _ in range(3):
        assert UNREACHABLE in text(post(client, token, sandbox))
    Workspace.objects.filter(pk=awaiting.pk).update(endpoint_url=f"http://127.0.0.1:{free_port()}/v2")
    assert UNREACHABLE in text(post(client, token))  # a network error
    settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS = False  # this deployment refuses the endpoint: nothing is sent
    assert UNREACHABLE in text(post(client, token))
    link.refresh_from_db()
    assert link.attempts == 0 and link.usable
    # The address's count was given back too: two judged tests still may run from it.
    settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS = True
    Workspace.objects.filter(pk=awaiting.pk).update(endpoint_url=f"{sandbox.url}/v2")
    assert REFUSED in text(post(client, token, sandbox, api_secret=WRONG_SECRET))  # a 401/403: counted
    link.refresh_from_db()
    assert link.attempts == 1
    assert "mParticle accepted" in text(post(client, token, sandbox))  # a 2xx: counted, and the link used
    link.refresh_from_db()
    assert link.attempts == 2 and link.state == "used"


def test_an_incomplete_form_is_shown_again_without_a_test(client, awaiting, sandbox):
    link, token = CredentialLink.issue(awaiting)
    response = post(client, token, sandbox, api_secret="")
    assert response.status_code == 200
    body = text(response)
    assert "This field is required." in body and SANDBOX_KEY not in body
    assert 'aria-invalid="true"' in body and 'aria-describedby="id_api_secret_error"' in body

    response = post(client, token, api_key="", api_secret=WRONG_SECRET)
    assert "This field is required." in text(response)
    assert_nothing_secret(response)
    assert sandbox.requests_log() == []
    link.refresh_from_db()
    assert link.attempts == 0  # nothing was tested: nothing counted


def test_a_link_revoked_or_used_during_the_test_stores_nothing(client, awaiting, sandbox, monkeypatch):
    link, token = CredentialLink.issue(awaiting)
    real_test = sync.test_connection

    def test_while_staff_revoke(workspace):
        link.revoke()  # or another request used the link meanwhile
        return real_test(workspace)

    monkeypatch.setattr(sync, "test_connection", test_while_staff_revoke)
    response = post(client, token, sandbox)
    assert response.status_code == 410 and GONE in text(response)
    awaiting.refresh_from_db()
    assert not awaiting.has_credentials and awaiting.credentials_verified_at is None
    link.refresh_from_db()
    assert link.state == "revoked" and link.used_at is None


def test_the_new_credentials_are_tested_before_anything_is_stored(client, sandbox, monkeypatch):
    workspace = make_workspace(sandbox, name="Acme Shoes")
    _, token = CredentialLink.issue(workspace)
    seen = []
    real_test = sync.test_connection

    def spy(probe):
        stored = Workspace.objects.get(pk=workspace.pk)
        seen.append((probe.pk, probe.api_secret, probe._state.adding, stored.api_secret))
        return real_test(probe)

    monkeypatch.setattr(sync, "test_connection", spy)
    sandbox.add_credentials("new-feed-key", "new-feed-secret-9d1e")
    assert post(client, token, sandbox, api_key="new-feed-key", api_secret="new-feed-secret-9d1e").status_code == 200
    assert seen == [(workspace.pk, "new-feed-secret-9d1e", True, SANDBOX_SECRET)]
    workspace.refresh_from_db()
    assert (workspace.api_key, workspace.api_secret) == ("new-feed-key", "new-feed-secret-9d1e")


def test_attempts_are_limited(client, awaiting, sandbox, settings):
    settings.PARTNER_NAME = "Example Partner"
    settings.MPFEED_CREDENTIAL_LINK_ATTEMPTS = 2
    link, token = CredentialLink.issue(awaiting)
    for _ in range(2):
        assert REFUSED in text(post(client, token, sandbox, api_secret=WRONG_SECRET))

    response = post(client, token, sandbox)  # even the right secret: the link has had its attempts
    assert response.status_code == 429
    body = text(response)
    assert "Too many attempts" in body and "ask Example Partner" in body.replace("\n  ", " ")
    assert_private(response)
    assert page(client, token).status_code == 429
    link.refresh_from_db()
    assert link.attempts == 2 and link.usable
    awaiting.refresh_from_db()
    assert not awaiting.has_credentials
    assert len(sandbox.requests_log()) == 2


# --------------------------------------------------------------------------------------------- protections


def test_csrf_is_enforced(awaiting, sandbox):
    browser = Client(enforce_csrf_checks=True)
    link, token = CredentialLink.issue(awaiting)
    response = post(browser, token, sandbox)
    assert response.status_code == 403
    link.refresh_from_db()
    assert link.attempts == 0 and sandbox.requests_log() == []

    form = page(browser, token)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.content.decode()).group(1)
    # What a browser sends from a page under "no-referrer": refused. Hence "strict-origin" on the form page.
    refused = post(browser, token, sandbox, csrfmiddlewaretoken=csrf, headers={"Origin": "null"})
    assert refused.status_code == 403
    link.refresh_from_db()
    assert link.attempts == 0 and sandbox.requests_log() == []
    # What it sends under "strict-origin": the page's origin.
    response = post(browser, token, sandbox, csrfmiddlewaretoken=csrf, headers={"Origin": "http://testserver"})
    assert response.status_code == 200 and "mParticle accepted these credentials." in text(response)


def test_the_token_and_the_secret_are_not_logged(client, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    workspace = make_workspace(sandbox, name="Acme Shoes")
    revoked, revoked_token = CredentialLink.issue(workspace)
    revoked.revoke()
    _, token = CredentialLink.issue(workspace)

    client.get(url("unknown-" + token))
    client.get(url(revoked_token))
    client.put(url(token))
    client.get(url(token))
    post(client, token, sandbox, api_secret=WRONG_SECRET)
    post(client, token, sandbox)
    client.get(url(token))

    assert caplog.records  # our own lines, without the token
    for secret in (token, revoked_token, SANDBOX_SECRET, WRONG_SECRET):
        assert secret not in caplog.text


# ------------------------------------------------------------------------------------------ the hand-over


def test_the_token_leaves_the_address_after_the_first_request(client, awaiting, sandbox):
    link, token = CredentialLink.issue(awaiting)
    form = page(client, token)  # asserts the redirect to /connect/, without the token
    assert form.status_code == 200 and form.request["PATH_INFO"] == "/connect/"
    assert token not in form.content.decode()
    # The form posts to /connect/ (no action: the page's own address), where the session names the link.
    assert '<form method="post" class="stack" novalidate>' in form.content.decode()
    response = client.post(reverse("feeds:connect_page"), {"api_key": SANDBOX_KEY, "api_secret": SANDBOX_SECRET})
    assert response.status_code == 200 and "mParticle accepted these credentials." in text(response)
    link.refresh_from_db()
    assert link.state == "used"
    # Another browser, without the session, has nothing at /connect/.
    assert Client().post(reverse("feeds:connect_page"), {"api_key": "k", "api_secret": "s"}).status_code == 404


def test_staff_see_the_pod_and_the_keys_last_characters_never_the_secret(client, sandbox):
    workspace = Workspace.objects.create(name="Acme Shoes")
    _, token = CredentialLink.issue(workspace)
    sandbox.add_credentials("feed-key-4f9Q", "feed-secret-never-shown-77")
    # Only mParticle pods for the client: tested here against the sandbox standing in for the partner pod.
    from feeds.mparticle import schema

    schema.POD_BASE_URLS["partner"], real = f"{sandbox.url}/v2", schema.POD_BASE_URLS["partner"]
    try:
        response = post(client, token, pod="partner", api_key="feed-key-4f9Q", api_secret="feed-secret-never-shown-77")
    finally:
        schema.POD_BASE_URLS["partner"] = real
    assert "mParticle accepted these credentials." in text(response)

    staff = Client()
    staff.force_login(make_staff("stella"))
    body = text(staff.get(reverse("feeds:workspace", args=[workspace.slug])))
    assert "Partner inbound (Feed) · key …f9Q" in body.replace("\u2026", "…") or "…4f9Q" in body
    assert "…4f9Q" in body and "feed-key-4f9Q" not in body and "feed-secret-never-shown-77" not in body
    link_row = re.search(r"<td>created .*?</tr>", body, re.S).group(0)
    assert "Partner inbound (Feed) · key" in link_row and "…4f9Q" in link_row


def test_staff_may_require_their_confirmation_before_new_credentials_are_used(client, sandbox, tmp_path, monkeypatch):
    workspace = make_workspace(sandbox, name="Acme Shoes")
    workspace.set_credentials(SANDBOX_KEY, "an-old-wrong-secret")
    run = run_job(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(3))))
    assert run.status == SyncRun.Status.BLOCKED
    Workspace.objects.filter(pk=workspace.pk).update(confirm_new_credentials=True)
    link, token = CredentialLink.issue(workspace)

    response = post(client, token)
    assert response.status_code == 200
    assert "confirm them before data is sent" in text(response).replace("\n  ", " ")
    workspace.refresh_from_db()
    # Tested and kept aside: the ones in use did not change, nothing resumed.
    assert workspace.api_secret == "an-old-wrong-secret" and workspace.pending_api_secret == SANDBOX_SECRET
    assert workspace.has_pending_credentials and workspace.status == Workspace.Status.CREDENTIALS_REJECTED
    # Held aside encrypted, like the ones in use: the plain secret is in no column of the table.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM feeds_workspace")
        assert SANDBOX_SECRET not in repr(cursor.fetchall())
    run.refresh_from_db()
    assert run.status == SyncRun.Status.BLOCKED

    viewer, operator = Client(), Client()
    viewer.force_login(make_staff("vera", "view_workspace"))
    operator.force_login(make_staff("otto"))
    address = reverse("feeds:workspace", args=[workspace.slug])
    assert "Use the new credentials" not in text(viewer.get(address))
    assert viewer.post(reverse("feeds:credentials_confirm", args=[workspace.slug])).status_code == 403
    body = text(operator.get(address))
    assert "New credentials received" in body and "Use the new credentials" in body
    assert SANDBOX_SECRET not in body and "an-old-wrong-secret" not in body

    monkeypatch.setattr(Conf, "SYNC", True)
    operator.post(reverse("feeds:credentials_confirm", args=[workspace.slug]))
    workspace.refresh_from_db()
    assert workspace.api_secret == SANDBOX_SECRET and not workspace.has_pending_credentials
    assert workspace.pending_api_secret == "" and workspace.status == Workspace.Status.ACTIVE
    assert workspace.credentials_verified_at is not None
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED, run.error


def test_credentials_held_for_confirmation_can_be_discarded(client, sandbox):
    workspace = make_workspace(sandbox, name="Acme Shoes", confirm_new_credentials=True)
    _, token = CredentialLink.issue(workspace)
    sandbox.add_credentials("other-account-key", "other-account-secret")
    post(client, token, api_key="other-account-key", api_secret="other-account-secret")
    workspace.refresh_from_db()
    assert workspace.has_pending_credentials and workspace.api_key == SANDBOX_KEY
    operator = Client()
    operator.force_login(make_staff("otto"))
    operator.post(reverse("feeds:credentials_discard", args=[workspace.slug]))
    workspace.refresh_from_db()
    assert not workspace.has_pending_credentials and workspace.pending_api_key == ""
    assert (workspace.api_key, workspace.api_secret) == (SANDBOX_KEY, SANDBOX_SECRET)


# ------------------------------------------------------------------------------------- custom endpoints


@pytest.mark.parametrize(
    "address",
    [
        "http://127.0.0.1:8765/v2",
        "http://localhost/v2",
        "http://10.1.2.3/v2",
        "http://192.168.0.10/v2",
        "http://172.16.0.1/v2",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/v2",
        "http://[fe80::1]/v2",
        "http://[::ffff:127.0.0.1]/v2",
        "http://[64:ff9b::7f00:1]/v2",  # NAT64 of 127.0.0.1
        "http://[2002:a00:1::]/v2",  # 6to4 of 10.0.0.1
        "http://[::7f00:1]/v2",  # IPv4-compatible 127.0.0.1
        "http://0.0.0.0/v2",
        "http://100.64.0.1/v2",
    ],
)
def test_staff_cannot_point_a_workspace_at_a_private_address_unless_allowed(settings, address):
    settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS = False
    staff = Client()
    staff.force_login(make_staff("otto"))
    data = {"name": "Acme", "pod": "sandbox", "endpoint_url": address, "environment": "development",
            "rate_limit": "270"}  # fmt: skip
    response = staff.post(reverse("feeds:workspace_new"), data)
    assert response.status_code == 200 and not Workspace.objects.exists()
    assert "not a public endpoint" in text(response) and "MPFEED_ALLOW_PRIVATE_ENDPOINTS" in text(response)

    settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS = True
    assert staff.post(reverse("feeds:workspace_new"), data).status_code == 302


def test_a_public_address_is_accepted():
    from feeds.mparticle.endpoints import non_public_reason

    assert non_public_reason("https://93.184.216.34/v2") is None
    assert non_public_reason("https://[2606:4700::1111]/v2") is None
    assert "cannot be resolved" in non_public_reason("https://no-such-host.invalid/v2")
    assert "must start with https://" in non_public_reason("ftp://93.184.216.34/")


def test_a_stored_private_endpoint_is_not_sent_to(settings, sandbox, tmp_path):
    # E.g. saved while the setting was on, or a name that resolves to a private address since.
    workspace = make_workspace(sandbox, name="Acme Shoes")
    settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS = False
    answer = sync.test_connection(workspace)
    assert not answer.delivered and "not a public endpoint" in answer.error
    with pytest.raises(sync.SyncError, match="not a public endpoint"):
        sync.start_run(make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(2))))
    assert sandbox.requests_log() == []
