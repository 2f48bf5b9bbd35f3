"""Small things that cost trust: a confirmation before what cannot be taken back lightly (promoting, revoking a
link) and a way back from production, alert settings per workspace, and refused records shown with what they
held. The browser half (the confirmations clicked, the copy button) is in tests/test_browser.py."""

from __future__ import annotations

import html

import orjson
import pytest
from django.urls import reverse

from feeds import pipeline, preview
from feeds.models import CredentialLink, Workspace
from feeds.mparticle import schema
from feeds.mparticle.batch import UserRecord, set_aside_form
from tests.helpers import MAPPING, make_workspace, messages_of

pytestmark = pytest.mark.django_db


def body(response) -> str:
    return html.unescape(response.content.decode())


# ---------------------------------------------------------------------------------------------- confirmations


def test_revoking_a_link_asks_first_and_says_what_it_does(staff, sandbox):
    workspace = make_workspace(sandbox)
    link, _ = CredentialLink.issue(workspace)
    url = reverse("feeds:link_revoke", args=[workspace.slug, link.pk])
    page = body(staff.get(reverse("feeds:workspace", args=[workspace.slug])))
    assert f'href="{url}"' in page and f'action="{url}"' not in page  # a link to the question, not a POST
    asked = staff.get(url)
    assert asked.status_code == 200
    text = body(asked)
    assert "Revoke a credential link of Acme?" in text and "stops working at once" in text
    assert 'type="submit">Revoke the link</button>' in text
    link.refresh_from_db()
    assert link.usable  # asking changed nothing
    assert messages_of(staff.post(url, follow=True)) == ["The link was revoked."]
    link.refresh_from_db()
    assert link.state == "revoked"
    again = body(staff.get(url))
    assert "This link is revoked already" in again and "Revoke the link</button>" not in again


def test_a_link_of_another_workspace_is_not_found(staff, sandbox):
    mine, other = make_workspace(sandbox), make_workspace(sandbox, name="Other")
    link, _ = CredentialLink.issue(other)
    assert staff.get(reverse("feeds:link_revoke", args=[mine.slug, link.pk])).status_code == 404
    assert staff.post(reverse("feeds:link_revoke", args=[mine.slug, link.pk])).status_code == 404
    link.refresh_from_db()
    assert link.usable


def test_promoting_asks_first_and_the_workspace_page_leads_there(staff, sandbox):
    workspace = make_workspace(sandbox)
    url = reverse("feeds:promote", args=[workspace.slug])
    page = body(staff.get(reverse("feeds:workspace", args=[workspace.slug])))
    assert f'href="{url}"' in page and f'action="{url}"' not in page
    asked = body(staff.get(url))
    assert "Promote Acme to production?" in asked
    assert "Promote after at least one successful run in development." in asked  # why not yet, no button
    assert "Promote to production</button>" not in asked
    Workspace.objects.filter(pk=workspace.pk).update(environment="production")
    page = body(staff.get(reverse("feeds:workspace", args=[workspace.slug])))
    assert reverse("feeds:demote", args=[workspace.slug]) in page and url not in page


def test_the_confirmations_need_the_permission_to_change(client, sandbox):
    from tests.helpers import make_staff

    workspace = make_workspace(sandbox)
    link, _ = CredentialLink.issue(workspace)
    client.force_login(make_staff("viewer", "view_workspace", "view_credentiallink"))
    for url in (
        reverse("feeds:promote", args=[workspace.slug]),
        reverse("feeds:demote", args=[workspace.slug]),
        reverse("feeds:link_revoke", args=[workspace.slug, link.pk]),
        reverse("feeds:workspace_alerts", args=[workspace.slug]),
    ):
        assert client.get(url).status_code == 403, url
        assert client.post(url).status_code == 403, url
    page = body(client.get(reverse("feeds:workspace", args=[workspace.slug])))
    assert "Revoke…" not in page and "Promote to production…" not in page and "Alert e-mails" not in page


# ------------------------------------------------------------------------------------ alerts of one workspace


def alert_data(**fields) -> dict:
    data = {"alert_emails": "", "alert_webhook_url": "", "new_alert_webhook_secret": ""}
    return {**data, **fields}


def test_staff_set_a_workspaces_alert_recipients_and_webhook_on_its_page(staff, sandbox, settings):
    settings.MPFEED_ALERT_EMAILS = ["ops@partner.example"]
    workspace = make_workspace(sandbox)
    page = body(staff.get(reverse("feeds:workspace", args=[workspace.slug])))
    assert "Beside the deployment's own:" in page and "ops@partner.example" in page  # the global ones beside
    url = reverse("feeds:workspace_alerts", args=[workspace.slug])
    data = alert_data(
        alert_emails="team@acme.example, oncall@acme.example",
        alert_webhook_url="https://hooks.acme.example/mpfeed",
        new_alert_webhook_secret="hook-secret-PLAIN-5b2c",
    )
    assert messages_of(staff.post(url, data, follow=True)) == ["Alert settings of Acme saved."]
    workspace.refresh_from_db()
    assert workspace.alert_email_list == ["team@acme.example", "oncall@acme.example"]
    assert workspace.alert_webhook_url == "https://hooks.acme.example/mpfeed"
    assert workspace.alert_webhook_secret == "hook-secret-PLAIN-5b2c"
    page = body(staff.get(reverse("feeds:workspace", args=[workspace.slug])))
    assert "team@acme.example" in page and "one is stored" in page
    assert "hook-secret-PLAIN" not in page  # write-only
    # Empty keeps the secret; the box removes it.
    staff.post(url, alert_data(alert_emails="team@acme.example"))
    workspace.refresh_from_db()
    assert workspace.alert_webhook_secret == "hook-secret-PLAIN-5b2c" and workspace.alert_webhook_url == ""
    staff.post(url, alert_data(clear_alert_webhook_secret="on"))
    workspace.refresh_from_db()
    assert workspace.alert_webhook_secret == "" and workspace.alert_emails == ""


def test_bad_alert_settings_are_refused_with_the_reason(staff, sandbox, settings):
    workspace = make_workspace(sandbox)
    url = reverse("feeds:workspace_alerts", args=[workspace.slug])
    response = staff.post(url, alert_data(alert_emails="team@acme.example, nobody"))
    assert response.status_code == 200
    assert response.context["alerts_form"].errors["alert_emails"] == ["nobody is not an e-mail address."]
    settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS = False
    Workspace.objects.filter(pk=workspace.pk).update(pod="partner", endpoint_url="")
    response = staff.post(url, alert_data(alert_webhook_url="http://10.0.0.7/hook", new_alert_webhook_secret="s-123"))
    [error] = response.context["alerts_form"].errors["alert_webhook_url"]
    assert "loopback, private or link-local" in error and "MPFEED_ALLOW_PRIVATE_ENDPOINTS" in error
    assert "s-123" not in body(response)
    workspace.refresh_from_db()
    assert workspace.alert_emails == "" and workspace.alert_webhook_url == "" and workspace.alert_webhook_secret == ""


def test_the_admin_sets_the_same_alert_settings(staff, sandbox):
    from tests.helpers import workspace_form_data

    workspace = make_workspace(sandbox)
    url = reverse("admin:feeds_workspace_change", args=[workspace.pk])
    page = body(staff.get(url))
    assert "Alert e-mails" in page and "Webhook secret" in page
    data = workspace_form_data(
        workspace, alert_emails="team@acme.example", alert_webhook_url="", new_alert_webhook_secret="adm-secret-77"
    )
    assert staff.post(url, data).status_code == 302
    workspace.refresh_from_db()
    assert workspace.alert_emails == "team@acme.example" and workspace.alert_webhook_secret == "adm-secret-77"
    assert "adm-secret-77" not in body(staff.get(url))
    refused = staff.post(url, {**data, "alert_emails": "not an address"})
    assert refused.status_code == 200 and "alert_emails" in refused.context["adminform"].form.errors


# ------------------------------------------------------------------------------------------ refused records


def test_a_pasted_value_that_is_not_a_record_is_shown_with_its_excerpt():
    result = preview.preview_records(MAPPING, [["not", "a", "record"], 42])
    assert [r["excerpt"] for r in result.rejected] == ['["not","a","record"]', "42"]
    assert [r["reason"] for r in result.rejected] == [
        "expected an object, got a list",
        "expected an object, got a number",
    ]


def test_a_record_too_large_to_send_is_shown_with_its_excerpt():
    events = [
        {"event_type": "custom_event", "data": {"event_name": f"e{i}", "custom_attributes": {"note": "x" * 600}}}
        for i in range(300)
    ]
    user, data = set_aside_form(UserRecord(ref="line 7", identities={"customer_id": "u7"}, events=events))
    rows = [(schema.BULK_PATH, user, 1, "line 7", data, len(events))]
    requests, refused = pipeline.build(rows, "development", lambda n, *_: [f"id-{i}" for i in range(n)])
    assert requests == []
    [refusal] = refused
    assert refusal.ref == "line 7" and "over the 131072-byte batch limit" in refusal.reason
    assert refusal.excerpt.startswith('{"user_identities":{"customer_id":"u7"}')
    assert refusal.excerpt.endswith("…") and len(refusal.excerpt) == pipeline.EXCERPT + 1
    orjson.loads(data[1:])  # what the excerpt is the start of
