"""Events out (feeds/events.py): the alert webhook also announces run.finished, run.failed and
credentials.verified, to a real HTTP receiver, signed as the alerts are, once each, never breaking a run and never
carrying a secret."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from django.urls import reverse

from feeds import events, sync
from feeds.models import CredentialLink, SyncRun
from partner_api.models import ApiToken
from tests.helpers import (
    SANDBOX_KEY,
    SANDBOX_SECRET,
    make_job,
    make_workspace,
    purchase_rows,
    run_job,
    write_csv,
)
from tests.receiver import WEBHOOK_SECRET

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_mail(settings):
    settings.MPFEED_ALERT_EMAILS = []


def received(got, name: str) -> list[tuple[dict, dict]]:
    """The receiver's messages for event `name`, each checked against its signature."""
    found = []
    for headers, body in got.received:
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Mpfeed-Signature"], expected)
        assert headers["Content-Type"] == "application/json" and headers["X-Mpfeed-Timestamp"].isdigit()
        payload = json.loads(body)
        if payload["event"] == name:
            found.append((headers, payload))
    return found


def test_a_successful_run_is_announced_once_with_its_counters(sandbox, tmp_path, receiver):
    workspace = make_workspace(sandbox)
    run = run_job(make_job(workspace, write_csv(tmp_path / "a.csv", purchase_rows(5)), name="orders"))
    assert run.status == SyncRun.Status.SUCCEEDED
    [(_, payload)] = received(receiver, events.RUN_FINISHED)
    assert payload["workspace"] == {"name": workspace.name, "slug": workspace.slug}
    body = payload["run"]
    assert (
        body["id"] == run.pk and body["status"] == "succeeded" and body["job"] == {"id": run.job_id, "name": "orders"}
    )
    assert body["trigger"] == run.trigger and body["error"] == "" and body["finished_at"] and body["started_at"]
    assert body["counters"]["records_read"] == 5 and body["counters"]["events_accepted"] == 5
    assert set(body["counters"]) == set(events.COUNTERS)
    assert received(receiver, events.RUN_FAILED) == []


def test_a_run_with_rejects_is_announced_as_finished_with_them(sandbox, tmp_path, receiver):
    workspace = make_workspace(sandbox)
    rows = purchase_rows(4)
    rows[1]["amount"] = "not a number"
    run = run_job(make_job(workspace, write_csv(tmp_path / "a.csv", rows)))
    assert run.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS, run.error
    [(_, payload)] = received(receiver, events.RUN_FINISHED)
    assert payload["run"]["status"] == "succeeded_with_rejects"
    assert payload["run"]["counters"]["records_rejected"] == run.records_rejected >= 1


def test_a_failed_run_is_announced_once_beside_the_alert(tmp_path, receiver):
    workspace = make_workspace()
    run = run_job(make_job(workspace, tmp_path / "missing.csv"))
    assert run.status == SyncRun.Status.FAILED
    [(_, payload)] = received(receiver, events.RUN_FAILED)
    assert payload["run"]["id"] == run.pk and payload["run"]["error"] == run.error
    assert [json.loads(b)["event"] for _, b in receiver.received].count("run_failed") == 1  # the alert, as before
    assert received(receiver, events.RUN_FINISHED) == []


def test_a_failing_receiver_does_not_break_the_run(sandbox, tmp_path, receiver, caplog):
    receiver.status = 500
    run = run_job(make_job(make_workspace(sandbox), write_csv(tmp_path / "a.csv", purchase_rows(3))))
    assert run.status == SyncRun.Status.SUCCEEDED and len(sandbox.events()) == 3
    assert "event run.finished: failed: HTTP 500" in caplog.text


def test_an_unreachable_receiver_does_not_break_the_run(sandbox, tmp_path, settings, receiver):
    receiver.server.shutdown()
    receiver.server.server_close()
    run = run_job(make_job(make_workspace(sandbox), write_csv(tmp_path / "a.csv", purchase_rows(3))))
    assert run.status == SyncRun.Status.SUCCEEDED


def test_an_event_that_blows_up_never_breaks_the_run(sandbox, tmp_path, receiver, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("events are down")

    monkeypatch.setattr(events, "announce", broken)
    run = run_job(make_job(make_workspace(sandbox), write_csv(tmp_path / "a.csv", purchase_rows(3))))
    assert run.status == SyncRun.Status.SUCCEEDED
    assert "events: announcing the end of run" in caplog.text


def test_the_workspace_webhook_gets_the_events_signed_with_its_own_secret(sandbox, tmp_path, receiver, settings):
    settings.MPFEED_ALERT_WEBHOOK_URL = ""
    workspace = make_workspace(sandbox)
    workspace.alert_webhook_url = receiver.url
    workspace.alert_webhook_secret = "own-secret-PLAINTEXT-4411"
    workspace.save()
    run_job(make_job(workspace, write_csv(tmp_path / "a.csv", purchase_rows(2))))
    [(headers, body)] = receiver.received
    assert json.loads(body)["event"] == events.RUN_FINISHED
    expected = "sha256=" + hmac.new(b"own-secret-PLAINTEXT-4411", body, hashlib.sha256).hexdigest()
    assert headers["X-Mpfeed-Signature"] == expected
    assert b"own-secret" not in body


def test_credentials_verified_by_a_hand_over(client, sandbox, receiver):
    workspace = make_workspace(sandbox, name="Acme Shoes")
    _, token = CredentialLink.issue(workspace)
    response = client.post(
        reverse("feeds:connect", args=[token]), {"api_key": SANDBOX_KEY, "api_secret": SANDBOX_SECRET}
    )
    assert response.status_code == 200
    [(_, payload)] = received(receiver, events.CREDENTIALS_VERIFIED)
    assert payload["via"] == "link" and payload["in_use"] is True and payload["workspace"]["name"] == "Acme Shoes"


def test_credentials_held_for_staff_are_announced_as_not_in_use(client, sandbox, receiver):
    workspace = make_workspace(sandbox, confirm_new_credentials=True)
    _, token = CredentialLink.issue(workspace)
    client.post(reverse("feeds:connect", args=[token]), {"api_key": SANDBOX_KEY, "api_secret": SANDBOX_SECRET})
    [(_, payload)] = received(receiver, events.CREDENTIALS_VERIFIED)
    assert payload["via"] == "link" and payload["in_use"] is False


def test_credentials_verified_through_the_api_and_a_refusal_is_not(client, sandbox, receiver):
    make_workspace(sandbox, name="Acme")
    _, raw = ApiToken.issue("t", ["onboard"])
    address = reverse("partner_api:workspace_credentials", args=["acme"])

    def put(key, secret):
        return client.put(address, json.dumps({"api_key": key, "api_secret": secret}),
                          content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")  # fmt: skip

    assert put("another-key-1234", "wrong-SECRET-never-echoed").status_code == 422
    assert received(receiver, events.CREDENTIALS_VERIFIED) == []
    sandbox.add_credentials("new-feed-key-5678", "new-SECRET-never-echoed-42y")
    assert put("new-feed-key-5678", "new-SECRET-never-echoed-42y").status_code == 200
    [(_, payload)] = received(receiver, events.CREDENTIALS_VERIFIED)
    assert payload["via"] == "api" and payload["in_use"] is True
    for _, body in receiver.received:
        assert b"new-SECRET" not in body and b"new-feed-key" not in body


def test_credentials_verified_by_a_connection_test(sandbox, receiver):
    workspace = make_workspace(sandbox)
    assert sync.verify_and_resume(workspace).answer.delivered
    [(_, payload)] = received(receiver, events.CREDENTIALS_VERIFIED)
    assert payload["via"] == "connection_test" and payload["in_use"] is True


def test_no_secret_ever_leaves_in_an_event(tmp_path, receiver):
    workspace = make_workspace()
    job = make_job(workspace, tmp_path / "missing.csv")
    job.source_secret = "Bearer partner-token-PLAINTEXT-9d3e"
    job.save()
    run = sync.start_run(job)
    run.finish(
        SyncRun.Status.FAILED, f"refused {SANDBOX_KEY} / {SANDBOX_SECRET} partner-token-PLAINTEXT-9d3e {WEBHOOK_SECRET}"
    )
    events.run_ended(run)
    [(headers, body)] = receiver.received
    for secret in (SANDBOX_SECRET, SANDBOX_KEY, "partner-token-PLAINTEXT-9d3e", WEBHOOK_SECRET):
        assert secret not in body.decode() and secret not in json.dumps(headers)
    assert "[redacted]" in json.loads(body)["run"]["error"]
