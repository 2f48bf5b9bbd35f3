"""The embeddable credential form (/connect/embed/<token>/): framed only by MPFEED_EMBED_ORIGINS, working without
the session or CSRF cookies a partner's frame cannot keep (a signed ticket in the form instead), refusing forged,
altered, stale and used-up posts, rendering no secret, and offered by the partner API (embed_url)."""

from __future__ import annotations

import html
import json
import logging
import re

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from feeds.logfilters import redact
from feeds.models import CredentialLink, Workspace
from feeds.security import parent_origin
from partner_api.models import ApiToken
from tests.helpers import SANDBOX_KEY, SANDBOX_SECRET, make_workspace, messages_of, workspace_form_data

pytestmark = pytest.mark.django_db

PARTNER = "https://app.partner.example"
OTHER = "https://other.partner.example"
WRONG_SECRET = "wrong-SECRET-PLAINTEXT-never-shown-51"


@pytest.fixture(autouse=True)
def _origins(settings):
    settings.MPFEED_EMBED_ORIGINS = [PARTNER, OTHER]


@pytest.fixture
def awaiting(sandbox):
    return Workspace.objects.create(name="Acme Shoes", pod=Workspace.Pod.SANDBOX, endpoint_url=f"{sandbox.url}/v2")


def embed_url(token: str, origin: str | None = PARTNER) -> str:
    return reverse("feeds:connect_embed", args=[token]) + (f"?origin={origin}" if origin else "")


def ticket_of(response) -> str:
    found = re.search(r'name="ticket" value="([^"]+)"', response.content.decode())
    assert found, response.content.decode()[:500]
    return html.unescape(found.group(1))


def ancestors(response) -> str:
    [part] = [p.strip() for p in response["Content-Security-Policy"].split(";") if "frame-ancestors" in p]
    return part


def post(client: Client, ticket: str | None, **fields):
    data = {"api_key": SANDBOX_KEY, "api_secret": SANDBOX_SECRET, **fields}
    if ticket is not None:
        data["ticket"] = ticket
    return client.post(reverse("feeds:connect_embed_page"), data)


# ------------------------------------------------------------------------------------------------ framing


def test_only_the_origin_it_was_opened_for_may_frame_it(client, awaiting):
    _, token = CredentialLink.issue(awaiting)
    page = client.get(embed_url(token))
    assert page.status_code == 200
    assert ancestors(page) == f"frame-ancestors {PARTNER}"
    assert "X-Frame-Options" not in page
    # The rest of the policy is the site's: no inline script, forms only to the site.
    assert (
        "script-src 'self'" in page["Content-Security-Policy"]
        and "form-action 'self'" in page["Content-Security-Policy"]
    )
    # Opened without an origin, with two allowed: framed by either, telling neither when done.
    both = client.get(embed_url(token, None))
    assert ancestors(both) == f"frame-ancestors {PARTNER} {OTHER}"


def test_an_origin_not_listed_may_not_frame_it(client, awaiting):
    _, token = CredentialLink.issue(awaiting)
    page = client.get(embed_url(token, "https://evil.example"))
    assert page.status_code == 403
    assert page["X-Frame-Options"] == "DENY" and ancestors(page) == "frame-ancestors 'none'"
    assert 'name="ticket"' not in page.content.decode()


def test_without_the_setting_nobody_may_frame_it_and_every_other_page_keeps_deny(client, awaiting, settings):
    _, token = CredentialLink.issue(awaiting)
    for address in (reverse("feeds:connect", args=[token]), reverse("feeds:healthz")):
        other = client.get(address)
        assert other["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in other["Content-Security-Policy"]
    settings.MPFEED_EMBED_ORIGINS = []
    page = client.get(embed_url(token, None))
    assert page.status_code == 200  # it still works, opened on its own
    assert page["X-Frame-Options"] == "DENY" and ancestors(page) == "frame-ancestors 'none'"
    settings.MPFEED_EMBED_ORIGINS = ["not an origin", "https://x.example/with/path"]
    page = client.get(embed_url(token, None))
    assert ancestors(page) == "frame-ancestors 'none'"


def test_the_parent_origin_rule():
    assert parent_origin("https://APP.partner.example/", [PARTNER]) == PARTNER
    assert parent_origin("", [PARTNER]) == PARTNER
    assert parent_origin("", [PARTNER, OTHER]) == ""
    assert parent_origin("", []) == ""
    assert parent_origin("https://evil.example", [PARTNER]) is None


# --------------------------------------------------------------------------------------------- the hand-over


def test_the_embedded_form_works_without_any_cookie(awaiting, sandbox):
    client = Client(enforce_csrf_checks=True)
    _, token = CredentialLink.issue(awaiting)
    page = client.get(embed_url(token))
    assert page.status_code == 200 and not page.cookies  # no session, no CSRF cookie: nothing third-party needed
    assert 'name="csrfmiddlewaretoken"' not in page.content.decode()
    assert f'action="{reverse("feeds:connect_embed_page")}"' in page.content.decode()
    ticket = ticket_of(page)
    assert token not in ticket
    client.cookies.clear()  # the partner's frame: the site's cookies are blocked
    done = post(client, ticket)
    assert done.status_code == 200, done.content.decode()[:500]
    body = done.content.decode()
    assert "Acme Shoes is connected" in html.unescape(body) and not done.cookies
    assert (
        f'data-origin="{PARTNER}"' in body and 'data-state="in_use"' in body and 'data-workspace="acme-shoes"' in body
    )
    assert "feeds/connect_embed.js" in body and SANDBOX_SECRET not in body
    assert ancestors(done) == f"frame-ancestors {PARTNER}"
    awaiting.refresh_from_db()
    assert (awaiting.api_key, awaiting.api_secret) == (SANDBOX_KEY, SANDBOX_SECRET)
    assert awaiting.credentials_verified_at is not None and awaiting.status == Workspace.Status.ACTIVE
    # The link is used up: the same ticket does nothing more.
    again = post(client, ticket)
    assert again.status_code == 410


def test_refused_credentials_show_the_form_again_without_the_secret(awaiting, sandbox):
    client = Client()
    _, token = CredentialLink.issue(awaiting)
    ticket = ticket_of(client.get(embed_url(token)))
    refused = post(client, ticket, api_secret=WRONG_SECRET)
    assert refused.status_code == 200
    body = refused.content.decode()
    assert "did not accept this key and secret" in html.unescape(body)
    assert WRONG_SECRET not in body and html.escape(WRONG_SECRET) not in body and SANDBOX_KEY not in body
    assert ticket_of(refused)  # a fresh ticket: the contact tries again in the frame
    awaiting.refresh_from_db()
    assert not awaiting.api_secret


def test_a_post_without_a_valid_ticket_is_refused(awaiting, sandbox):
    client = Client(enforce_csrf_checks=True)
    link, token = CredentialLink.issue(awaiting)
    ticket = ticket_of(client.get(embed_url(token)))
    forged = signing.dumps({"link": link.pk, "origin": PARTNER}, salt="another-salt")
    for bad in (None, "", "garbage", ticket[:-2] + "xx", forged):
        refused = post(client, bad)
        assert refused.status_code == 403, bad
        assert "This form has expired" in html.unescape(refused.content.decode())
    link.refresh_from_db()
    assert link.attempts == 0 and link.state == "open"
    awaiting.refresh_from_db()
    assert not awaiting.api_secret
    assert sandbox.requests_log() == []  # nothing was tested


def test_a_stale_ticket_is_refused(awaiting, sandbox, monkeypatch):
    client = Client()
    _, token = CredentialLink.issue(awaiting)
    ticket = ticket_of(client.get(embed_url(token)))
    monkeypatch.setattr(CredentialLink, "EMBED_TICKET_SECONDS", -1)
    assert post(client, ticket).status_code == 403


def test_a_ticket_whose_origin_was_taken_off_the_list_is_refused(awaiting, sandbox, settings):
    client = Client()
    _, token = CredentialLink.issue(awaiting)
    ticket = ticket_of(client.get(embed_url(token)))
    settings.MPFEED_EMBED_ORIGINS = [OTHER]
    refused = post(client, ticket)
    assert refused.status_code == 403 and refused["X-Frame-Options"] == "DENY"


def test_unknown_used_revoked_and_expired_links_are_refused(awaiting, sandbox):
    client = Client()
    assert client.get(embed_url("no-such-token")).status_code == 404
    link, token = CredentialLink.issue(awaiting)
    ticket = ticket_of(client.get(embed_url(token)))
    link.revoke()
    assert client.get(embed_url(token)).status_code == 410
    assert post(client, ticket).status_code == 410
    expired, token = CredentialLink.issue(awaiting, hours=-1)
    assert client.get(embed_url(token)).status_code == 410
    # The token's address answers GET only; the ticket's, POST only.
    assert client.post(embed_url(token)).status_code == 405
    assert client.get(reverse("feeds:connect_embed_page")).status_code == 405


def test_held_credentials_tell_the_parent_they_wait_for_staff(sandbox):
    workspace = make_workspace(sandbox, confirm_new_credentials=True)
    client = Client()
    _, token = CredentialLink.issue(workspace)
    done = post(client, ticket_of(client.get(embed_url(token))))
    assert done.status_code == 200 and 'data-state="held"' in done.content.decode()


def test_the_token_is_never_logged(awaiting, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    client = Client()
    _, token = CredentialLink.issue(awaiting)
    post(client, ticket_of(client.get(embed_url(token))), api_secret=WRONG_SECRET)
    client.get(embed_url("unknown-token-abc"))
    assert token not in caplog.text and WRONG_SECRET not in caplog.text
    assert redact(f"GET /connect/embed/{token}/?origin=x") == "GET /connect/embed/…/?origin=x"
    assert redact("POST /connect/embed/ 200") == "POST /connect/embed/ 200"


# ------------------------------------------------------------------------------------------ the partner API


def test_the_api_gives_a_link_its_embed_url(client, sandbox, settings):
    make_workspace(sandbox, name="Acme")
    _, raw = ApiToken.issue("t", ["onboard"])
    address = reverse("partner_api:links", args=["acme"])

    def create(body):
        return client.post(
            address, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
        )

    made = create({"origin": PARTNER})
    assert made.status_code == 201
    embed = made.json()["embed_url"]
    assert embed.startswith("http://testserver/connect/embed/") and embed.endswith(
        "?origin=https%3A%2F%2Fapp.partner.example"
    )
    page = Client().get(embed.removeprefix("http://testserver"))
    assert page.status_code == 200 and ancestors(page) == f"frame-ancestors {PARTNER}"

    refused = create({"origin": "https://evil.example"})
    assert refused.status_code == 422 and refused.json()["error"]["fields"] == {
        "origin": ["not in MPFEED_EMBED_ORIGINS nor the workspace's embed origins"]
    }
    assert create({}).json()["embed_url"].endswith("/")  # no origin: framed by any allowed one
    settings.MPFEED_EMBED_ORIGINS = []
    assert create({}).json()["embed_url"] is None


# ---------------------------------------------------------------------------------- a workspace's own origins
OWN = "https://portal.client-partner.example"


def test_an_origin_listed_on_the_workspace_frames_only_its_links(client, awaiting, sandbox):
    awaiting.embed_origins = f"{OWN}/\n"
    awaiting.full_clean()
    awaiting.save()
    other = make_workspace(sandbox, name="Other")
    _, mine = CredentialLink.issue(awaiting)
    _, theirs = CredentialLink.issue(other)
    page = client.get(embed_url(mine, OWN))
    assert page.status_code == 200 and ancestors(page) == f"frame-ancestors {OWN}"
    assert ancestors(client.get(embed_url(mine, None))) == f"frame-ancestors {PARTNER} {OTHER} {OWN}"
    refused = client.get(embed_url(theirs, OWN))
    assert refused.status_code == 403 and refused["X-Frame-Options"] == "DENY"
    # The hand-over goes through under the workspace's origin; taken off the workspace, its ticket is refused.
    fresh = Client()
    ticket = ticket_of(fresh.get(embed_url(mine, OWN)))
    assert post(fresh, ticket).status_code == 200
    _, again = CredentialLink.issue(awaiting)
    ticket = ticket_of(fresh.get(embed_url(again, OWN)))
    Workspace.objects.filter(pk=awaiting.pk).update(embed_origins="")
    assert post(fresh, ticket).status_code == 403


def test_the_workspace_page_sets_its_embed_origins_and_refuses_what_is_not_one(staff, sandbox):
    workspace = make_workspace(sandbox)
    page = staff.get(reverse("feeds:workspace", args=[workspace.slug])).content.decode()
    assert "Embed origins" in page and PARTNER in page  # the deployment's own are shown beside
    url = reverse("feeds:workspace_embed", args=[workspace.slug])
    saved = staff.post(
        url, {"embed_origins": f"HTTPS://Portal.Client-Partner.example/, {OTHER}\nhttp://localhost:8080"}
    )
    assert saved.status_code == 302
    workspace.refresh_from_db()
    assert workspace.embed_origins == f"{OWN}\n{OTHER}\nhttp://localhost:8080"
    assert workspace.allowed_embed_origins == [PARTNER, OTHER, OWN, "http://localhost:8080"]
    for bad in ("https://portal.example/with/path", "portal.example", "javascript:alert(1)"):
        refused = staff.post(url, {"embed_origins": f"{OWN}\n{bad}"})
        assert refused.status_code == 200
        [error] = refused.context["embed_form"].errors["embed_origins"]
        assert bad in error and "Not an origin" in error
    workspace.refresh_from_db()
    assert workspace.embed_origins.startswith(OWN)  # what was stored stays
    assert staff.post(url, {"embed_origins": ""}).status_code == 302
    workspace.refresh_from_db()
    assert workspace.embed_origins == "" and workspace.allowed_embed_origins == [PARTNER, OTHER]
    assert any("Embed origins" in m for m in messages_of(staff.get(reverse("feeds:workspace", args=[workspace.slug]))))


def test_the_admin_sets_the_same_embed_origins(staff, sandbox):
    workspace = make_workspace(sandbox)
    url = reverse("admin:feeds_workspace_change", args=[workspace.pk])
    assert "embed_origins" in staff.get(url).content.decode()
    assert staff.post(url, workspace_form_data(workspace, embed_origins=f"{OWN}/")).status_code == 302
    workspace.refresh_from_db()
    assert workspace.embed_origins == OWN
    refused = staff.post(url, workspace_form_data(workspace, embed_origins="https://x.example/path"))
    assert refused.status_code == 200
    assert "Not an origin" in refused.context["adminform"].form.errors["embed_origins"][0]


def test_the_api_honours_the_workspaces_embed_origins(client, sandbox, settings):
    settings.MPFEED_EMBED_ORIGINS = []
    make_workspace(sandbox, name="Acme", embed_origins=OWN)
    make_workspace(sandbox, name="Other")
    _, raw = ApiToken.issue("t", ["onboard"])

    def create(slug, body):
        return client.post(
            reverse("partner_api:links", args=[slug]), json.dumps(body), content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )  # fmt: skip

    made = create("acme", {"origin": OWN})
    assert made.status_code == 201
    page = Client().get(made.json()["embed_url"].removeprefix("http://testserver"))
    assert page.status_code == 200 and ancestors(page) == f"frame-ancestors {OWN}"
    assert create("acme", {}).json()["embed_url"] is not None  # its only origin may frame it
    assert create("other", {"origin": OWN}).status_code == 422
    assert create("other", {}).json()["embed_url"] is None
