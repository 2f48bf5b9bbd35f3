"""Alerts when a workspace changes state: by e-mail (Django's mail settings) and by a signed webhook.

A workspace's health is worked out by feeds.health, the rule the staff pages and the admin show too (its status,
its jobs' newest finished runs, its deliveries), and compared with the health the last alert announced
(Workspace.health): an alert goes out when a workspace becomes blocked or failing there, or stops being so. Only a
change sends an alert, once: the stored health moves with a conditional update, so two workers that notice the same change at
the same moment cannot both send it, and a second failed run in a row changes nothing.

The engine calls `evaluate_safely` when a worker lets go of a run, and the every-minute sweeper calls
`evaluate_all`, which is how "deliveries failing for over an hour" and recoveries are noticed between runs.
Sending never raises: what happened is recorded on the AlertEvent (email_result, webhook_result).

Besides the global recipients and webhook (MPFEED_ALERT_EMAILS, MPFEED_ALERT_WEBHOOK_URL and _SECRET), each
workspace may name its own (Workspace.alert_emails, alert_webhook_url and alert_webhook_secret, set on the
workspace page and in the admin): an alert goes to both. A workspace's webhook must be a public endpoint, as the
Events API endpoints must (unless MPFEED_ALLOW_PRIVATE_ENDPOINTS), checked when saved and again when sent. The
e-mail links to the workspace page at MPFEED_SITE_URL, and says so when that is not set.

The webhook is a POST of JSON {"event", "workspace": {"name", "slug"}, "message", "at"} with
`X-Mpfeed-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed with MPFEED_ALERT_WEBHOOK_SECRET, or the workspace's secret for its own webhook>` and
`X-Mpfeed-Timestamp` (Unix seconds). The body's "at" is covered by the signature: receivers can refuse old ones.
A receiver that does not take it is sent it again later, with the same X-Mpfeed-Delivery id (feeds.webhooks).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import get_connection, send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from feeds import health, webhooks
from feeds.models import AlertEvent, SyncJob, Workspace
from feeds.words import clipped

log = logging.getLogger(__name__)

OK = health.OK
LABELS = {OK: "OK", **dict(AlertEvent.Kind.choices)}
TIMEOUT = 5  # seconds, for the SMTP connection when EMAIL_TIMEOUT is not set
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
    # A workspace starts "ok" before anything ran: that is no OK an alert may claim it was in.
    was_ok = previous != OK or workspace.health_changed_at is not None or workspace.runs.succeeded().exists()
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
    send(event, workspace, previous=previous if was_ok else "", run_id=state.run_id)
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
    values = [
        workspace.api_key,
        workspace.api_secret,
        settings.MPFEED_ALERT_WEBHOOK_SECRET,
        workspace.alert_webhook_secret,
    ]
    for header in SyncJob.objects.filter(workspace=workspace).values_list("source_secret", flat=True):
        values.append(header)
        values.extend(header.split(None, 1)[1:])  # "Bearer <token>": the token alone, too
    return sorted({v.strip() for v in values if v and len(v.strip()) >= 4}, key=len, reverse=True)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _result(text: str) -> str:
    return clipped(text, RESULT_LENGTH)


# ----------------------------------------------------------------------------------------------- sending


def send(event: AlertEvent, workspace: Workspace, *, previous: str = "", run_id: int | None = None) -> None:
    """E-mail and webhooks; each outcome is stored on the event, nothing is raised. `previous`: the health the
    workspace was in ("" when it was in none yet, e.g. its first run failed: the e-mail claims no "OK")."""
    event.email_result = _send_email(event, workspace, previous, run_id)
    event.webhook_result = _send_webhooks(event, workspace)
    event.save(update_fields=["email_result", "webhook_result"])


def recipients(workspace: Workspace) -> list[str]:
    """Who gets the workspace's alert e-mails: MPFEED_ALERT_EMAILS and the workspace's own recipients."""
    try:
        own = workspace.alert_email_list
    except ValidationError:  # stored before the check, or edited in the database: the valid ones still get it
        own = [a for a in re.split(r"[,;\s]+", workspace.alert_emails) if a and _is_email(a)]
    return list(dict.fromkeys([*settings.MPFEED_ALERT_EMAILS, *(a.strip() for a in own)]))


def _is_email(text: str) -> bool:
    try:
        validate_email(text.strip())
    except ValidationError:
        return False
    return True


def workspace_link(workspace: Workspace) -> str:
    """The workspace page's address for people reading an alert: MPFEED_SITE_URL and the page's path, or a
    sentence saying why there is none (never a link that cannot work)."""
    if not settings.MPFEED_SITE_URL:
        return "(no link: MPFEED_SITE_URL, the site's public address, is not set on this deployment)"
    return f"{settings.MPFEED_SITE_URL}{reverse('feeds:workspace', args=[workspace.slug])}"


def _send_email(event: AlertEvent, workspace: Workspace, previous: str, run_id: int | None) -> str:
    to = recipients(workspace)
    if not to:
        return "not configured (MPFEED_ALERT_EMAILS is empty, and the workspace has no alert recipients)"
    site = getattr(settings, "SITE_NAME", "mpfeed")
    # One line whatever the name holds (a line break in a header is refused by the mail library, or worse).
    subject = _one_line(f"[{site}] {workspace.name}: {event.get_kind_display()}")
    now = LABELS[workspace.health]
    if previous:
        change = f"{workspace.name} changed state: {LABELS.get(previous, previous)} → {now}."
    else:  # nothing was OK before (e.g. its first run failed): no "OK →" that never was
        change = f"{workspace.name}: {now}."
    lines = [
        change,
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
        f"Workspace page: {workspace_link(workspace)}",
        "",
        "You get one message per change of state, not one per run.",
    ]
    try:
        # An explicit timeout: EMAIL_TIMEOUT when set, else TIMEOUT (a hung SMTP server must not hold a worker).
        connection = get_connection(timeout=getattr(settings, "EMAIL_TIMEOUT", None) or TIMEOUT)
        sent = send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, to, connection=connection)
    except Exception as e:
        log.warning("alert %s: e-mail failed: %s", event.pk, type(e).__name__)
        return _result(f"failed: {type(e).__name__}: {_redact(str(e), _mail_secrets())}")
    return f"sent to {len(to)} recipient(s)" if sent else "failed: the mail backend sent nothing"


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


def _send_webhooks(event: AlertEvent, workspace: Workspace) -> str:
    """The global webhook (MPFEED_ALERT_WEBHOOK_URL) and the workspace's own, each with its own key, tried again
    later while the receiver does not take it (feeds.webhooks)."""
    return webhooks.deliver(webhook_body(event, workspace), event.kind, workspace, f"alert {event.pk}")
