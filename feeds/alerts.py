"""Alerts when a workspace changes state: by e-mail (Django's mail settings) and by a signed webhook.

A workspace's health is worked out by feeds.health, the rule the staff pages and the admin show too (its status,
its jobs' newest finished runs, its deliveries), and compared with the health the last alert announced
(Workspace.health): an alert goes out when a workspace becomes blocked or failing there, or stops being so. Only a
change sends an alert, once: the stored health moves with a conditional update, so two workers that notice the same change at
the same moment cannot both send it, and a second failed run in a row changes nothing.

The engine calls `evaluate_safely` when a worker lets go of a run, and the every-minute sweeper calls
`evaluate_all`, which is how "deliveries failing for over an hour" and recoveries are noticed between runs.
Sending never raises: what happened is recorded on the AlertEvent (email_result, webhook_result).

The webhook is a POST of JSON {"event", "workspace": {"name", "slug"}, "message", "at"} with
`X-Mpfeed-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed with MPFEED_ALERT_WEBHOOK_SECRET>` and
`X-Mpfeed-Timestamp` (Unix seconds). The body's "at" is covered by the signature: receivers can refuse old ones.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime

import requests
from django.conf import settings
from django.core.mail import get_connection, send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from feeds import health
from feeds.models import AlertEvent, SyncJob, Workspace

log = logging.getLogger(__name__)

OK = health.OK
LABELS = {OK: "OK", **dict(AlertEvent.Kind.choices)}
TIMEOUT = 5  # seconds, for the webhook (connect and read) and the SMTP connection
RESULT_LENGTH = 200  # AlertEvent.email_result / webhook_result
REDACTED = "[redacted]"


@dataclass(frozen=True)
class State:
    """A workspace's health and, for people, why."""

    health: str  # "ok" or one of AlertEvent.Kind except RECOVERED
    reason: str = ""
    run_id: int | None = None


def current_state(workspace: Workspace, now: datetime | None = None) -> State:
    """The workspace's health now, as the pages show it (feeds.health: one rule for every face)."""
    found = health.of(workspace, now)
    return State(found.alert, found.reason if found.alert != OK else "", found.run_id if found.alert != OK else None)


def evaluate(workspace: Workspace, now: datetime | None = None) -> AlertEvent | None:
    """Record and send one alert when the workspace's health changed since the last alert; None otherwise."""
    fresh = Workspace.objects.filter(pk=workspace.pk).first()  # the caller's copy may be a run old
    if fresh is None:
        return None
    workspace = fresh
    previous = workspace.health
    state = current_state(workspace, now)
    if state.health == previous:
        return None
    kind = AlertEvent.Kind.RECOVERED if state.health == OK else state.health
    message = _redact(_message(workspace, state, previous), _secrets(workspace))
    changed_at = timezone.now()
    with transaction.atomic():
        # Only the worker that moves the health from what it read sends the alert.
        changed = Workspace.objects.filter(pk=workspace.pk, health=previous).update(
            health=state.health, health_changed_at=changed_at
        )
        if changed != 1:
            return None
        event = AlertEvent.objects.create(workspace=workspace, kind=kind, message=message, created_at=changed_at)
    workspace.health, workspace.health_changed_at = state.health, changed_at
    log.info("workspace %s: %s -> %s (alert %s)", workspace.pk, previous, state.health, event.pk)
    send(event, workspace, previous=previous, run_id=state.run_id)
    return event


def evaluate_safely(workspace: Workspace, now: datetime | None = None) -> AlertEvent | None:
    """`evaluate` for the engine's hooks: an alert problem is logged, never raised into a sync."""
    try:
        return evaluate(workspace, now)
    except Exception:
        log.exception("alerts: evaluating workspace %s failed", getattr(workspace, "pk", None))
        return None


def evaluate_all(now: datetime | None = None) -> list[AlertEvent]:
    """Every workspace whose health moved since its last alert (the every-minute sweeper). Never raises.

    The health of all of them is worked out at once (a few queries, however many workspaces); only those that
    look changed are evaluated one by one, from a fresh read."""
    events: list[AlertEvent] = []
    try:
        workspaces = list(Workspace.objects.only("pk", "status", "status_message", "health"))
    except Exception:
        log.exception("alerts: listing workspaces failed")
        return events
    try:
        found = health.assess(workspaces, now)
        workspaces = [w for w in workspaces if found[w.pk].alert != w.health]
    except Exception:
        log.exception("alerts: working out the workspaces' health failed; evaluating each")
    for workspace in workspaces:
        event = evaluate_safely(workspace, now)
        if event is not None:
            events.append(event)
    return events


# ------------------------------------------------------------------------------------------------ messages


def _message(workspace: Workspace, state: State, previous: str) -> str:
    if state.health == OK:
        return f"{workspace.name} is healthy again (it was: {LABELS.get(previous, previous)})."
    return state.reason


def _secrets(workspace: Workspace) -> list[str]:
    """Values that must never leave in an alert, should an error message ever quote one."""
    values = [workspace.api_key, workspace.api_secret, settings.MPFEED_ALERT_WEBHOOK_SECRET]
    for header in SyncJob.objects.filter(workspace=workspace).values_list("source_secret", flat=True):
        values.append(header)
        values.extend(header.split(None, 1)[1:])  # "Bearer <token>": the token alone, too
    return sorted({v.strip() for v in values if v and len(v.strip()) >= 4}, key=len, reverse=True)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _result(text: str) -> str:
    return text if len(text) <= RESULT_LENGTH else text[: RESULT_LENGTH - 1] + "…"


# ----------------------------------------------------------------------------------------------- sending


def send(event: AlertEvent, workspace: Workspace, *, previous: str = "", run_id: int | None = None) -> None:
    """E-mail and webhook; each outcome is stored on the event, nothing is raised."""
    event.email_result = _send_email(event, workspace, previous, run_id)
    event.webhook_result = _send_webhook(event, workspace)
    event.save(update_fields=["email_result", "webhook_result"])


def _send_email(event: AlertEvent, workspace: Workspace, previous: str, run_id: int | None) -> str:
    recipients = list(settings.MPFEED_ALERT_EMAILS)
    if not recipients:
        return "not configured (MPFEED_ALERT_EMAILS is empty)"
    site = getattr(settings, "SITE_NAME", "mpfeed")
    # One line whatever the name holds (a line break in a header is refused by the mail library, or worse).
    subject = _one_line(f"[{site}] {workspace.name}: {event.get_kind_display()}")
    lines = [
        f"{workspace.name} changed state: {LABELS.get(previous, previous)} → {LABELS[workspace.health]}.",
        "",
        f"Workspace: {workspace.name} ({workspace.slug})",
        f"Alert: {event.get_kind_display()}",
    ]
    if run_id:
        lines.append(f"Run: #{run_id}")
    lines += [
        f"At: {timezone.localtime(event.created_at):%Y-%m-%d %H:%M:%S %Z}",
        "",
        event.message,
        "",
        f"Workspace page: {settings.MPFEED_SITE_URL}{reverse('feeds:workspace', args=[workspace.slug])}",
        "",
        "You get one message per change of state, not one per run.",
    ]
    try:
        # An explicit timeout: EMAIL_TIMEOUT when set, else TIMEOUT (a hung SMTP server must not hold a worker).
        connection = get_connection(timeout=getattr(settings, "EMAIL_TIMEOUT", None) or TIMEOUT)
        sent = send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, recipients, connection=connection)
    except Exception as e:
        log.warning("alert %s: e-mail failed: %s", event.pk, type(e).__name__)
        return _result(f"failed: {type(e).__name__}: {_redact(str(e), _mail_secrets())}")
    return f"sent to {len(recipients)} recipient(s)" if sent else "failed: the mail backend sent nothing"


def _one_line(text: str) -> str:
    return " ".join("".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text).split())


def _mail_secrets() -> list[str]:
    password = getattr(settings, "EMAIL_HOST_PASSWORD", "")
    return [password] if password else []


def webhook_body(event: AlertEvent, workspace: Workspace) -> bytes:
    payload = {
        "event": event.kind,
        "workspace": {"name": workspace.name, "slug": workspace.slug},
        "message": event.message,
        "at": event.created_at.isoformat(),
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign(body: bytes, secret: str) -> str:
    """The X-Mpfeed-Signature value: what a receiver recomputes over the exact bytes it received."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _send_webhook(event: AlertEvent, workspace: Workspace) -> str:
    url = settings.MPFEED_ALERT_WEBHOOK_URL
    if not url:
        return "not configured (MPFEED_ALERT_WEBHOOK_URL is empty)"
    body = webhook_body(event, workspace)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "mpfeed-alerts",
        "X-Mpfeed-Timestamp": str(int(time.time())),
    }
    secret = settings.MPFEED_ALERT_WEBHOOK_SECRET
    if secret:
        headers["X-Mpfeed-Signature"] = sign(body, secret)
    unsigned = "" if secret else " (unsigned: MPFEED_ALERT_WEBHOOK_SECRET is empty)"
    try:
        with requests.post(url, data=body, headers=headers, timeout=TIMEOUT, allow_redirects=False) as response:
            status = response.status_code
    except Exception as e:
        # Only the error's type: its text names the URL, which may carry a token of the receiver's.
        log.warning("alert %s: webhook failed: %s", event.pk, type(e).__name__)
        return _result(f"failed: {type(e).__name__}{unsigned}")
    if 200 <= status < 300:
        return _result(f"sent: HTTP {status}{unsigned}")
    log.warning("alert %s: webhook answered HTTP %s", event.pk, status)
    return _result(f"failed: HTTP {status}{unsigned}")
