"""Webhook messages (feeds/webhooks.py): every alert and event is kept for each webhook until its receiver takes it —
tried again later with the same body and delivery id, given up after MPFEED_WEBHOOK_ATTEMPTS, sent again by staff
— against a real receiver over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from feeds import sweeper, tasks, webhooks
from feeds.models import AlertEvent, SyncRun, WebhookMessage
from tests.helpers import make_workspace, run_job
from tests.receiver import WEBHOOK_SECRET, Receiver
from tests.test_alerts import failing_job

pytestmark = pytest.mark.django_db

EVENT = "run.finished"
BODY = b'{"event":"run.finished","workspace":{"name":"Acme","slug":"acme"},"at":"2026-12-02T07:00:00+00:00"}'


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.MPFEED_ALERT_EMAILS = []
    settings.MPFEED_ALERT_WEBHOOK_URL = ""
    settings.MPFEED_ALERT_WEBHOOK_SECRET = ""
    settings.MPFEED_WEBHOOK_ATTEMPTS = 4


def later(message: WebhookMessage, by: timedelta = timedelta(0)):
    """The moment the message's next try is due (plus `by`)."""
    message.refresh_from_db()
    assert message.next_attempt_at is not None
    return message.next_attempt_at + by


def test_a_message_the_receiver_missed_is_sent_again_with_the_same_body_and_delivery_id(receiver):
    workspace = make_workspace()
    receiver.status = 503
    assert webhooks.deliver(BODY, EVENT, workspace, "test").startswith("failed: HTTP 503 (try 1 of 4; again at ")
    message = WebhookMessage.objects.get()
    assert (message.state, message.attempts, message.event) == ("pending", 1, "run.finished")
    assert message.next_attempt_at - message.created_at == timedelta(minutes=1)

    # Not due yet: the sweep leaves it.
    assert webhooks.retry_due(timezone.now()) == 0
    # Due, the receiver still down: tried again, the wait grows (1, then 5 minutes).
    assert webhooks.retry_due(later(message)) == 1
    message.refresh_from_db()
    assert message.attempts == 2 and message.state == "pending"
    assert message.last_result.startswith("failed: HTTP 503 (try 2 of 4")
    # The receiver is back: the next sweep sends it.
    receiver.status = 204
    assert webhooks.retry_due(later(message)) == 1
    message.refresh_from_db()
    assert (message.state, message.attempts, message.next_attempt_at) == ("sent", 3, None)
    assert message.last_result == "sent: HTTP 204" and message.sent_at is not None

    bodies = [body for _, body in receiver.received]
    assert bodies == [BODY, BODY, BODY]  # the exact bytes each time: the signature and "at" still hold
    ids = [h["X-Mpfeed-Delivery"] for h, _ in receiver.received]
    assert ids == [str(message.pk)] * 3
    assert [h["X-Mpfeed-Attempt"] for h, _ in receiver.received] == ["1", "2", "3"]
    for headers, body in receiver.received:
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Mpfeed-Signature"] == expected
    # Nothing more once sent.
    assert webhooks.retry_due(timezone.now() + timedelta(days=3)) == 0


def test_the_waits_grow_then_the_message_is_given_up(receiver, caplog):
    receiver.status = 500
    workspace = make_workspace()
    webhooks.deliver(BODY, EVENT, workspace, "test")
    message = WebhookMessage.objects.get()
    waits = [message.next_attempt_at - message.created_at]
    with caplog.at_level(logging.WARNING, logger="feeds.webhooks"):
        for _ in range(3):
            due = later(message)
            assert webhooks.retry_due(due) == 1
            message.refresh_from_db()
            if message.next_attempt_at:
                waits.append(message.next_attempt_at - due)
    assert waits == [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15)]
    assert (message.state, message.attempts, message.next_attempt_at) == ("gave_up", 4, None)
    assert message.last_result == "failed: HTTP 500 (given up after 4 tries)"
    assert "given up" in caplog.text
    assert len(receiver.received) == 4
    # Given up: no sweep tries it again …
    assert webhooks.retry_due(timezone.now() + timedelta(days=30)) == 0
    # … but staff can, and once the receiver takes it, it is sent.
    receiver.status = 200
    assert webhooks.send_again(WebhookMessage.objects.all()) == 1
    message.refresh_from_db()
    assert (message.state, message.attempts, message.last_result) == ("sent", 5, "sent: HTTP 200")


def test_the_later_waits_are_eight_hours_and_twelve_tries_span_two_days():
    assert [webhooks.retry_delay(n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 11)] == [
        timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1), timedelta(hours=2),
        timedelta(hours=4), timedelta(hours=8), timedelta(hours=8), timedelta(hours=8),
    ]  # fmt: skip
    assert sum((webhooks.retry_delay(n) for n in range(1, 12)), timedelta()) > timedelta(days=1.95)


def test_an_unreachable_receiver_is_tried_again_and_its_url_never_shown(receiver, settings):
    receiver.server.shutdown()
    receiver.server.server_close()
    settings.MPFEED_ALERT_WEBHOOK_URL = receiver.url + "?token=receiver-token-1234"
    result = webhooks.deliver(BODY, EVENT, make_workspace(), "test")
    message = WebhookMessage.objects.get()
    assert result.startswith("failed: ConnectionError (try 1 of 4")
    assert message.state == "pending"
    webhooks.retry_due(later(message))
    message.refresh_from_db()
    assert message.attempts == 2 and "receiver-token" not in message.last_result + result


def test_each_webhook_has_its_own_message_and_a_removed_one_gets_no_more(receiver):
    own = Receiver()
    own.thread.start()
    try:
        workspace = make_workspace(alert_webhook_url=own.url, alert_webhook_secret="own-secret-PLAINTEXT-4411")
        own.status = 502
        result = webhooks.deliver(BODY, EVENT, workspace, "test")
        assert result.startswith("sent: HTTP 204; workspace's: failed: HTTP 502 (try 1 of 4")
        sent, pending = WebhookMessage.objects.order_by("target")
        assert (sent.target, sent.state, pending.target, pending.state) == ("global", "sent", "workspace", "pending")
        # Signed with the workspace's own key.
        [(headers, body)] = own.received
        mac = hmac.new(b"own-secret-PLAINTEXT-4411", body, hashlib.sha256).hexdigest()
        assert headers["X-Mpfeed-Signature"] == f"sha256={mac}"
        # The keys are read when sending, never kept with the messages.
        kept = repr(list(WebhookMessage.objects.values()))
        assert "own-secret" not in kept and WEBHOOK_SECRET not in kept
        # The workspace's webhook is removed before the next try: that message is given up, not sent anywhere.
        workspace.alert_webhook_url = ""
        workspace.save()
        webhooks.retry_due(later(pending))
        pending.refresh_from_db()
        assert pending.state == "gave_up" and pending.last_result == "not sent: the workspace no longer has a webhook"
        assert len(own.received) == 1 and len(receiver.received) == 1
    finally:
        own.server.shutdown()
        own.server.server_close()


def test_two_sweepers_never_both_try_a_message(receiver):
    receiver.status = 503
    webhooks.deliver(BODY, EVENT, make_workspace(), "test")
    message = WebhookMessage.objects.get()
    due = later(message)
    # Another sweeper takes the message (its try count moves) between this one's query and its claim.
    assert webhooks._claim(message.pk, 1, due) is True
    assert webhooks._claim(message.pk, 1, due) is False
    assert WebhookMessage.objects.get().attempts == 2


def test_not_configured_keeps_nothing():
    assert webhooks.deliver(BODY, EVENT, make_workspace(), "test") == webhooks.NOT_CONFIGURED
    assert not WebhookMessage.objects.exists()


def test_a_failed_runs_alert_reaches_a_receiver_that_was_down_through_the_sweeper_task(tmp_path, receiver):
    receiver.status = 503
    workspace = make_workspace()
    assert run_job(failing_job(workspace, tmp_path)).status == SyncRun.Status.FAILED
    alert = AlertEvent.objects.get()
    assert alert.webhook_result.startswith("failed: HTTP 503 (try 1 of 4")
    events = sorted(WebhookMessage.objects.values_list("event", flat=True))
    assert events == ["run.failed", "run_failed"]  # the event and the alert, one message each
    receiver.status = 204
    WebhookMessage.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert tasks.resume_stalled().endswith("tried 2 webhook message(s) again")
    assert set(WebhookMessage.objects.values_list("state", flat=True)) == {"sent"}
    assert sorted(json.loads(b)["event"] for _, b in receiver.received[-2:]) == ["run.failed", "run_failed"]


def test_old_messages_are_pruned_but_pending_ones_kept(receiver, capsys):
    workspace = make_workspace()
    webhooks.deliver(BODY, EVENT, workspace, "test")  # sent
    receiver.status = 500
    webhooks.deliver(BODY, EVENT, workspace, "test")  # pending
    old = timezone.now() - timedelta(days=31)
    WebhookMessage.objects.update(created_at=old)
    assert sweeper.prune_sent()[2] == 1
    assert list(WebhookMessage.objects.values_list("state", flat=True)) == ["pending"]
    call_command("prune_sent")
    assert "0 webhook message(s) older than 30 day(s)" in capsys.readouterr().out


def test_staff_see_the_messages_and_send_them_again_from_the_admin(client, receiver):
    receiver.status = 500
    workspace = make_workspace()
    webhooks.deliver(BODY, EVENT, workspace, "test")
    message = WebhookMessage.objects.get()
    staff = User.objects.create_user("ops", password="pw-ops-1234", is_staff=True)
    client.force_login(staff)
    url = reverse("admin:feeds_webhookmessage_changelist")
    assert client.get(url).status_code == 403  # no permission on the messages yet
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_webhookmessage"]))
    page = client.get(url)
    assert page.status_code == 200 and "run.finished" in page.content.decode()
    assert "Send again now" not in page.content.decode()  # viewing is not sending
    staff.user_permissions.add(Permission.objects.get(codename="change_workspace"))
    receiver.status = 204
    answer = client.post(url, {"action": "send_again", "_selected_action": [message.pk]}, follow=True)
    assert "Tried 1 message(s) again; 1 of the selected are now sent." in answer.content.decode()
    message.refresh_from_db()
    assert message.state == "sent" and len(receiver.received) == 2
    assert client.get(reverse("admin:feeds_webhookmessage_add")).status_code == 403
