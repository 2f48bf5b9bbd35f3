"""Alerts: one per change of a workspace's health, by e-mail and by a signed webhook, never breaking a sync."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from feeds import alerts, sweeper, sync
from feeds.models import AlertEvent, Delivery, SyncRun, Workspace
from tests.helpers import (
    SANDBOX_KEY,
    SANDBOX_SECRET,
    make_job,
    make_mapping,
    make_workspace,
    purchase_rows,
    run_job,
    write_csv,
)
from tests.receiver import WEBHOOK_SECRET, Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _alert_settings(settings):
    settings.MPFEED_ALERT_EMAILS = ["ops@partner.example", "oncall@partner.example"]
    settings.MPFEED_ALERT_WEBHOOK_URL = ""
    settings.MPFEED_ALERT_WEBHOOK_SECRET = ""
    settings.DEFAULT_FROM_EMAIL = "mpfeed@partner.example"


def failing_job(workspace, tmp_path, name="orders"):
    """A job whose runs fail: its file is not there."""
    return make_job(workspace, tmp_path / f"{name}-missing.csv", name=name)


def good_job(workspace, tmp_path, name="good", mapping=None):
    return make_job(workspace, write_csv(tmp_path / f"{name}.csv", purchase_rows(5)), name=name, mapping=mapping)


def kinds(workspace) -> list[str]:
    return list(
        AlertEvent.objects.filter(workspace=workspace).order_by("created_at", "pk").values_list("kind", flat=True)
    )


def pending_delivery(run: SyncRun, *, failing_since, sequence: int = 1) -> Delivery:
    return Delivery.objects.create(
        run=run,
        workspace=run.workspace,
        sequence=sequence,
        payload=Delivery.compress(b"[]"),
        first_failure_at=failing_since,
        attempts=7,
        last_status=503,
        last_error="HTTP 503: Service Unavailable",
    )


# ------------------------------------------------------------------------------------------- transitions


def test_two_failed_runs_in_a_row_send_one_alert(tmp_path, mailoutbox):
    workspace = make_workspace()
    job = failing_job(workspace, tmp_path)
    first = run_job(job)
    assert first.status == SyncRun.Status.FAILED
    second = run_job(job)
    assert second.status == SyncRun.Status.FAILED
    assert kinds(workspace) == [AlertEvent.Kind.RUN_FAILED]
    assert len(mailoutbox) == 1
    workspace.refresh_from_db()
    assert workspace.health == "run_failed" and workspace.health_changed_at is not None
    [event] = AlertEvent.objects.all()
    assert f"Run #{first.pk} of job orders failed" in event.message
    assert event.email_result == "sent to 2 recipient(s)"
    assert (
        event.webhook_result == "not configured (MPFEED_ALERT_WEBHOOK_URL is empty, and the workspace has no webhook)"
    )
    # The sweeper sees the same state: still nothing new.
    sweeper.resume_stalled()
    assert AlertEvent.objects.count() == 1


def test_a_successful_run_after_a_failure_sends_one_recovery(sandbox, tmp_path, mailoutbox):
    workspace = make_workspace(sandbox)
    job = make_job(workspace, tmp_path / "missing.csv", name="orders")
    run_job(job)
    # The partner puts the file where it belongs: the next run succeeds.
    write_csv(tmp_path / "missing.csv", purchase_rows(5))
    assert run_job(job).status == SyncRun.Status.SUCCEEDED
    assert kinds(workspace) == [AlertEvent.Kind.RUN_FAILED, AlertEvent.Kind.RECOVERED]
    recovered = AlertEvent.objects.get(kind=AlertEvent.Kind.RECOVERED)
    assert recovered.message == "Acme is healthy again (it was: Run failed)."
    assert mailoutbox[-1].subject == "[mpfeed] Acme: Recovered"
    run_job(job)
    assert len(kinds(workspace)) == 2 and len(mailoutbox) == 2
    workspace.refresh_from_db()
    assert workspace.health == "ok"


def test_a_replay_recovers_the_workspace_only_once_the_replayed_run_succeeds(sandbox, tmp_path, settings):
    from sandbox.server import FaultConfig

    workspace = make_workspace(sandbox)
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(4)), name="orders")
    assert run_job(job).status == SyncRun.Status.SUCCEEDED  # an older run that went well
    settings.MPFEED_RETRY_HORIZON = 0
    sandbox.configure(faults=FaultConfig(error_rate=1.0))
    failed = run_job(job)
    assert failed.status == SyncRun.Status.FAILED
    assert kinds(workspace) == [AlertEvent.Kind.RUN_FAILED]
    # Staff replay it: while it is being worked on again, the workspace is not "recovered" (the older run that
    # went well is not what counts), whatever the sweeper evaluates meanwhile.
    sandbox.configure(faults=FaultConfig())
    count, queued = sync.replay_run(failed)
    assert count >= 1
    alerts.evaluate(workspace)
    sweeper.resume_stalled()
    assert kinds(workspace) == [AlertEvent.Kind.RUN_FAILED]
    assert alerts.current_state(workspace).health == AlertEvent.Kind.RUN_FAILED
    # Once the replayed run has delivered everything, it is.
    sync.process_run(failed.pk)
    failed.refresh_from_db()
    assert failed.status == SyncRun.Status.SUCCEEDED and failed.reopened_from == ""
    alerts.evaluate(workspace)
    assert kinds(workspace) == [AlertEvent.Kind.RUN_FAILED, AlertEvent.Kind.RECOVERED]


def test_one_job_succeeding_does_not_hide_another_jobs_failure(sandbox, tmp_path):
    workspace = make_workspace(sandbox)
    mapping = make_mapping(workspace)
    broken = make_job(workspace, tmp_path / "missing.csv", mapping=mapping, name="broken")
    fine = good_job(workspace, tmp_path, mapping=mapping)
    run_job(broken)
    assert run_job(fine).status == SyncRun.Status.SUCCEEDED
    assert kinds(workspace) == [AlertEvent.Kind.RUN_FAILED]


def test_a_new_workspace_that_is_fine_gets_no_alert(sandbox, tmp_path, mailoutbox):
    workspace = make_workspace(sandbox)
    assert alerts.evaluate(workspace) is None
    assert run_job(good_job(workspace, tmp_path)).status == SyncRun.Status.SUCCEEDED
    sweeper.resume_stalled()
    assert not AlertEvent.objects.exists() and mailoutbox == []
    workspace.refresh_from_db()
    assert workspace.health == "ok" and workspace.health_changed_at is None


def test_rejected_credentials_alert_once_and_recover_with_new_ones(sandbox, tmp_path, monkeypatch, mailoutbox):
    from django_q.conf import Conf

    workspace = make_workspace(sandbox)
    job = good_job(workspace, tmp_path)
    workspace.set_credentials(SANDBOX_KEY, "wrong-secret")
    run = run_job(job)
    assert run.status == SyncRun.Status.BLOCKED
    sweeper.resume_stalled()
    assert kinds(workspace) == [AlertEvent.Kind.CREDENTIALS_REJECTED]
    event = AlertEvent.objects.get()
    assert "mParticle refused the API key and secret (HTTP 403)" in event.message
    assert f"Run: #{run.pk}" in mailoutbox[0].body

    monkeypatch.setattr(Conf, "SYNC", True)  # the resumed run works right here
    # Fresh, as the credential page loads it (a full save of a stale copy would write back its old health).
    workspace.refresh_from_db()
    workspace.set_credentials(SANDBOX_KEY, SANDBOX_SECRET)
    assert sync.verify_and_resume(workspace).resumed == [run.pk]
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED
    assert kinds(workspace) == [AlertEvent.Kind.CREDENTIALS_REJECTED, AlertEvent.Kind.RECOVERED]
    assert "it was: Credentials rejected" in mailoutbox[-1].body


def test_deliveries_failing_for_over_an_hour_alert_once_and_recover_when_settled(tmp_path, mailoutbox):
    workspace = make_workspace()
    run = sync.start_run(good_job(workspace, tmp_path))
    now = timezone.now()
    delivery = pending_delivery(run, failing_since=now - timedelta(minutes=59))
    sweeper.resume_stalled(now)
    assert not AlertEvent.objects.exists()  # not yet an hour

    later = now + timedelta(minutes=2)
    sweeper.resume_stalled(later)
    sweeper.resume_stalled(later + timedelta(minutes=1))
    assert kinds(workspace) == [AlertEvent.Kind.DELIVERIES_FAILING]
    event = AlertEvent.objects.get()
    assert "1 request(s) have been failing since" in event.message
    assert f"(run #{run.pk})" in event.message and "HTTP 503" in event.message
    assert mailoutbox[0].subject == "[mpfeed] Acme: Deliveries failing for over an hour"

    Delivery.objects.filter(pk=delivery.pk).update(state=Delivery.State.ACCEPTED, finished_at=timezone.now())
    sweeper.resume_stalled(later + timedelta(minutes=2))
    assert kinds(workspace) == [AlertEvent.Kind.DELIVERIES_FAILING, AlertEvent.Kind.RECOVERED]


def test_a_change_between_problems_is_announced_as_the_new_problem(tmp_path):
    workspace = make_workspace()
    run_job(failing_job(workspace, tmp_path))
    workspace.mark_credentials_rejected("mParticle refused the API key and secret (HTTP 403).")
    alerts.evaluate(workspace)
    assert kinds(workspace) == [AlertEvent.Kind.RUN_FAILED, AlertEvent.Kind.CREDENTIALS_REJECTED]


def test_two_workers_noticing_the_same_change_send_it_once(tmp_path, monkeypatch, mailoutbox):
    workspace = make_workspace()
    run = sync.start_run(failing_job(workspace, tmp_path))
    run.finish(SyncRun.Status.FAILED, "the file is not there")
    real_state = alerts.current_state

    def another_worker_was_faster(ws, now=None):
        state = real_state(ws, now)
        Workspace.objects.filter(pk=ws.pk).update(health=state.health)  # it sent the alert meanwhile
        return state

    monkeypatch.setattr(alerts, "current_state", another_worker_was_faster)
    assert alerts.evaluate(workspace) is None
    assert not AlertEvent.objects.exists() and mailoutbox == []


# ------------------------------------------------------------------------------------------------- e-mail


def test_the_email_says_what_changed_where_and_why(tmp_path, mailoutbox, settings, sandbox):
    settings.MPFEED_SITE_URL = "https://feeds.partner.example"
    workspace = make_workspace(sandbox, name="Acme Retail")
    good = good_job(workspace, tmp_path)
    assert run_job(good).status == SyncRun.Status.SUCCEEDED  # it was OK
    run = run_job(make_job(workspace, tmp_path / "missing.csv", name="orders", mapping=good.mapping))
    [mail] = mailoutbox
    assert mail.subject == "[mpfeed] Acme Retail: Run failed"
    assert mail.from_email == "mpfeed@partner.example"
    assert mail.to == ["ops@partner.example", "oncall@partner.example"]
    assert "Acme Retail changed state: OK → Run failed." in mail.body
    assert "Workspace: Acme Retail (acme-retail)" in mail.body
    assert f"Run: #{run.pk}" in mail.body
    assert run.error and run.error in mail.body
    assert "Workspace page: https://feeds.partner.example/workspaces/acme-retail/" in mail.body
    assert mail.alternatives == []  # plain text


def test_a_first_run_that_fails_claims_no_previous_ok(tmp_path, mailoutbox):
    run_job(failing_job(make_workspace(name="Acme Retail"), tmp_path))
    [mail] = mailoutbox
    assert mail.subject == "[mpfeed] Acme Retail: Run failed"
    assert mail.body.startswith("Acme Retail: Run failed.\n")
    assert "OK" not in mail.body and "changed state" not in mail.body


def test_without_a_site_url_the_email_says_so_rather_than_link_nowhere(tmp_path, mailoutbox, settings):
    settings.MPFEED_SITE_URL = ""
    run_job(failing_job(make_workspace(name="Acme Retail"), tmp_path))
    [mail] = mailoutbox
    assert "Workspace page: (no link: MPFEED_SITE_URL, the site's public address, is not set" in mail.body
    assert "/workspaces/acme-retail/" not in mail.body and "http" not in mail.body


def test_a_workspace_has_its_own_recipients_beside_the_global_ones(tmp_path, mailoutbox, settings):
    workspace = make_workspace(alert_emails="client-ops@acme.example,\nops@partner.example")
    run_job(failing_job(workspace, tmp_path))
    [mail] = mailoutbox
    assert mail.to == ["ops@partner.example", "oncall@partner.example", "client-ops@acme.example"]
    assert AlertEvent.objects.get().email_result == "sent to 3 recipient(s)"
    # Its own are enough, with no global ones.
    settings.MPFEED_ALERT_EMAILS = []
    other = make_workspace(name="Other", alert_emails="team@other.example")
    run_job(failing_job(other, tmp_path, name="other"))
    assert mailoutbox[-1].to == ["team@other.example"]


def test_a_workspace_has_its_own_webhook_signed_with_its_own_secret(tmp_path, receiver, settings):
    own = Receiver()
    own.thread.start()
    try:
        workspace = make_workspace(alert_webhook_url=own.url, alert_webhook_secret="ws-hook-secret-PLAIN-9d1e")
        run_job(failing_job(workspace, tmp_path))
        [(_, global_body)] = receiver.alerts  # the global webhook still gets it
        [(headers, body)] = own.alerts
        assert body == global_body
        expected = hmac.new(b"ws-hook-secret-PLAIN-9d1e", body, hashlib.sha256).hexdigest()
        assert headers["X-Mpfeed-Signature"] == f"sha256={expected}"
        event = AlertEvent.objects.get()
        assert event.webhook_result == "sent: HTTP 204; workspace's: sent: HTTP 204"
        assert "ws-hook-secret" not in event.message + event.webhook_result
    finally:
        own.server.shutdown()
        own.server.server_close()


def test_a_workspace_webhook_must_be_public(settings):
    settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS = False
    workspace = Workspace(name="Acme", pod=Workspace.Pod.PARTNER, alert_webhook_url="http://127.0.0.1:9/hook")
    with pytest.raises(ValidationError) as e:
        workspace.full_clean()
    assert "loopback, private or link-local" in e.value.message_dict["alert_webhook_url"][0]
    workspace.alert_webhook_url, workspace.alert_emails = "", "not-an-address"
    with pytest.raises(ValidationError) as e:
        workspace.full_clean()
    assert e.value.message_dict["alert_emails"] == ["not-an-address is not an e-mail address."]


def test_a_stored_private_webhook_is_not_called(tmp_path, settings):
    own = Receiver()
    own.thread.start()
    try:
        workspace = make_workspace(alert_webhook_url=own.url)
        settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS = False  # e.g. the name points at a private address by now
        event = AlertEvent.objects.create(workspace=workspace, kind=AlertEvent.Kind.RUN_FAILED, message="m")
        alerts.send(event, workspace, previous="ok")
        assert own.received == []
        assert AlertEvent.objects.get().webhook_result.startswith("not sent: 127.0.0.1 is a loopback")
    finally:
        own.server.shutdown()
        own.server.server_close()


def test_no_recipients_means_no_email(tmp_path, settings, mailoutbox):
    settings.MPFEED_ALERT_EMAILS = []
    workspace = make_workspace()
    run_job(failing_job(workspace, tmp_path))
    assert mailoutbox == []
    assert (
        AlertEvent.objects.get().email_result
        == "not configured (MPFEED_ALERT_EMAILS is empty, and the workspace has no alert recipients)"
    )


class BrokenMailBackend(BaseEmailBackend):
    def send_messages(self, messages):
        raise ConnectionRefusedError("[Errno 111] Connection refused")


def test_a_mail_failure_is_recorded_and_the_webhook_still_goes(tmp_path, settings, receiver):
    settings.EMAIL_BACKEND = "tests.test_alerts.BrokenMailBackend"
    workspace = make_workspace()
    run = run_job(failing_job(workspace, tmp_path))
    assert run.status == SyncRun.Status.FAILED
    event = AlertEvent.objects.get()
    assert event.email_result == "failed: ConnectionRefusedError: [Errno 111] Connection refused"
    assert event.webhook_result == "sent: HTTP 204"
    assert len(receiver.alerts) == 1


# ------------------------------------------------------------------------------------------------ webhook


def test_the_webhook_is_signed_with_an_hmac_of_the_exact_body(tmp_path, receiver):
    workspace = make_workspace()
    run = run_job(failing_job(workspace, tmp_path))
    [(headers, body)] = receiver.alerts
    expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Mpfeed-Signature"], f"sha256={expected}")
    assert headers["Content-Type"] == "application/json"
    assert abs(int(headers["X-Mpfeed-Timestamp"]) - timezone.now().timestamp()) < 60
    payload = json.loads(body)
    event = AlertEvent.objects.get()
    assert payload == {
        "event": "run_failed",
        "workspace": {"name": "Acme", "slug": "acme"},
        "message": event.message,
        "at": event.created_at.isoformat(),
    }
    assert f"Run #{run.pk}" in payload["message"]
    assert event.webhook_result == "sent: HTTP 204"
    # A receiver that checks the signature refuses a body someone changed.
    forged = body.replace(b"run_failed", b"recovered")
    forged_mac = hmac.new(WEBHOOK_SECRET.encode(), forged, hashlib.sha256).hexdigest()
    assert f"sha256={forged_mac}" != headers["X-Mpfeed-Signature"]


def test_a_failing_webhook_is_recorded_and_the_run_is_unaffected(tmp_path, receiver):
    receiver.status = 500
    workspace = make_workspace()
    run = run_job(failing_job(workspace, tmp_path))
    assert run.status == SyncRun.Status.FAILED
    assert run.error.startswith("the file ") and run.error.endswith(" does not exist")  # its own reason
    assert AlertEvent.objects.get().webhook_result.startswith("failed: HTTP 500 (try 1 of 12; again at ")


def test_an_unreachable_webhook_is_recorded_without_its_url(tmp_path, settings, receiver):
    receiver.server.shutdown()
    receiver.server.server_close()
    settings.MPFEED_ALERT_WEBHOOK_URL = receiver.url + "?token=receiver-token-1234"
    assert run_job(failing_job(make_workspace(), tmp_path)).status == SyncRun.Status.FAILED
    event = AlertEvent.objects.get()
    assert event.webhook_result.startswith("failed: ConnectionError (try 1 of 12; again at ")
    assert "receiver-token" not in event.webhook_result


def test_an_alert_that_blows_up_never_breaks_the_sync(sandbox, tmp_path, monkeypatch, caplog):
    def broken(workspace, now=None):
        raise RuntimeError("alerts are down")

    monkeypatch.setattr(alerts, "evaluate", broken)
    run = run_job(good_job(make_workspace(sandbox), tmp_path))
    assert run.status == SyncRun.Status.SUCCEEDED
    assert len(sandbox.events()) == 5
    assert sweeper.resume_stalled() == []
    assert "alerts: evaluating workspace" in caplog.text


# ------------------------------------------------------------------------------------------------ secrets


def test_no_secret_ever_leaves_in_an_alert(tmp_path, receiver, mailoutbox):
    workspace = make_workspace()
    job = failing_job(workspace, tmp_path)
    job.source_secret = "Bearer partner-token-PLAINTEXT-9d3e"
    job.save()
    run = sync.start_run(job)
    # Should an error message ever quote a credential, the alert must not repeat it.
    run.finish(
        SyncRun.Status.FAILED,
        f"refused with key {SANDBOX_KEY} / {SANDBOX_SECRET}, token partner-token-PLAINTEXT-9d3e, {WEBHOOK_SECRET}",
    )
    event = alerts.evaluate(workspace)
    [mail] = mailoutbox
    [(headers, body)] = receiver.alerts
    for secret in (SANDBOX_SECRET, SANDBOX_KEY, "partner-token-PLAINTEXT-9d3e", WEBHOOK_SECRET):
        for text in (event.message, mail.subject, mail.body, body.decode(), json.dumps(headers)):
            assert secret not in text
    assert "[redacted]" in event.message and "[redacted]" in mail.body
