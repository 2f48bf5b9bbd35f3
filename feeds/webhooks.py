"""The webhooks: every alert and event goes to each webhook as a message that is kept until the receiver takes it.

`deliver` stores one WebhookMessage per configured webhook — the global one (MPFEED_ALERT_WEBHOOK_URL) and the
workspace's own (Workspace.alert_webhook_url) — and tries each at once, in the worker that has the news. A message
the receiver does not take (no answer within TIMEOUT, an answer other than 2xx, a workspace webhook found not to be
a public endpoint when sent) is tried again by the every-minute sweeper (`retry_due`, from
feeds.tasks.resume_stalled) after 1, 5 and 15 minutes, 1, 2 and 4 hours, then every 8 hours, up to
MPFEED_WEBHOOK_ATTEMPTS tries in all; then it is given up: logged, and listed as such in the admin (Webhook
messages), where staff can send it again. A webhook that is no longer configured gets nothing more.

Each try POSTs the exact stored body with `Content-Type: application/json`, `X-Mpfeed-Signature: sha256=<hex
HMAC-SHA256 of the body>` keyed with MPFEED_ALERT_WEBHOOK_SECRET, or the workspace's alert_webhook_secret for its
own webhook (no signature when the key is empty), `X-Mpfeed-Timestamp` (Unix seconds of this try),
`X-Mpfeed-Delivery` (the message's id, the same on every try: a receiver that took a message but answered too late
can drop the repeat) and `X-Mpfeed-Attempt` (1, 2, …). Redirects are not followed. Results and logs never name the
URL (it may carry a receiver's token), and no body holds a secret (feeds.events).

Sending never raises: the first try's result, in one line, is returned to the caller (stored on the AlertEvent),
every try's on the message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.utils import timezone

from feeds.models import WebhookMessage, Workspace
from feeds.words import clipped

log = logging.getLogger(__name__)

TIMEOUT = 5  # seconds, to connect and to read the answer
RESULT_LENGTH = 200  # WebhookMessage.last_result, AlertEvent.webhook_result
# Seconds before the next try, after the 1st, 2nd, … try; past the end of the list, its last.
RETRY_DELAYS = (60, 300, 900, 3600, 7200, 14400, 28800)
RETRIES_PER_SWEEP = 50  # a sweep's share: receivers that time out cost TIMEOUT each
NOT_CONFIGURED = "not configured (MPFEED_ALERT_WEBHOOK_URL is empty, and the workspace has no webhook)"

GLOBAL, WORKSPACE = WebhookMessage.Target.GLOBAL, WebhookMessage.Target.WORKSPACE
PENDING, SENT, GAVE_UP = WebhookMessage.State.PENDING, WebhookMessage.State.SENT, WebhookMessage.State.GAVE_UP


def sign(body: bytes, secret: str) -> str:
    """The X-Mpfeed-Signature value: what a receiver recomputes over the exact bytes it received."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(tries: int) -> timedelta:
    """How long after its `tries`-th try a message is tried again."""
    return timedelta(seconds=RETRY_DELAYS[min(tries, len(RETRY_DELAYS)) - 1])


def deliver(body: bytes, event: str, workspace: Workspace, what: str) -> str:
    """Keep `body` (whose "event" is `event`) as a message for the global webhook and for the workspace's own, try
    each now, and say what happened in one line (nothing is raised). `what` names the message in the log ("alert
    12", "run 3: event run.finished")."""
    targets = [GLOBAL] if settings.MPFEED_ALERT_WEBHOOK_URL else []
    if workspace.alert_webhook_url:
        targets.append(WORKSPACE)
    if not targets:
        return NOT_CONFIGURED
    event = event[:60]
    now = timezone.now()
    results: list[str] = []
    for target in targets:
        # Its first try counted, and the next one set, before it is made: a worker that dies while it waits for
        # the answer leaves the message to the sweeper, not lost.
        message = WebhookMessage.objects.create(
            workspace=workspace, target=target, event=event, body=body.decode(), attempts=1,
            next_attempt_at=now + retry_delay(1), created_at=now,
        )  # fmt: skip
        result = _try(message, what)
        results.append(f"workspace's: {result}" if target == WORKSPACE and results else result)
    return _result("; ".join(results))


def retry_due(now: datetime | None = None, limit: int = RETRIES_PER_SWEEP) -> int:
    """Try again the messages whose next try is due, oldest due first, at most `limit`; returns how many were
    tried. A message is taken by a conditional update of its try count, so two sweepers never both try it."""
    now = now or timezone.now()
    due = WebhookMessage.objects.filter(state=PENDING, next_attempt_at__lte=now).order_by("next_attempt_at", "id")
    return _try_again(due[:limit], now)


def send_again(messages) -> int:
    """Try the given messages once more now, whatever their state (staff, from the admin); a message that is not
    taken again is given up again, or tried later while it has tries left. Returns how many were tried."""
    return _try_again(messages, timezone.now(), any_state=True)


def _try_again(messages, now: datetime, *, any_state: bool = False) -> int:
    tried = 0
    for pk, attempts in list(messages.values_list("pk", "attempts")):
        if _claim(pk, attempts, now, any_state=any_state):
            _try(WebhookMessage.objects.select_related("workspace").get(pk=pk), f"webhook message {pk}")
            tried += 1
    return tried


def prune(now: datetime | None = None) -> int:
    """Delete the messages sent or given up on more than MPFEED_WEBHOOK_RETENTION_DAYS ago; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.MPFEED_WEBHOOK_RETENTION_DAYS)
    old = WebhookMessage.objects.filter(state__in=[SENT, GAVE_UP], created_at__lt=cutoff)
    return old.delete()[0]


def _claim(pk: int, attempts: int, now: datetime, *, any_state: bool = False) -> bool:
    rows = WebhookMessage.objects.filter(pk=pk, attempts=attempts)
    if not any_state:
        rows = rows.filter(state=PENDING)
    return bool(rows.update(state=PENDING, attempts=attempts + 1, next_attempt_at=now + retry_delay(attempts + 1)))


def _try(message: WebhookMessage, what: str) -> str:
    """Send the message (its try already counted) and store how it went; returns that, in one line."""
    taken, result, final = _post(message, what)
    fields: dict = {}
    if taken:
        fields.update(state=SENT, sent_at=timezone.now(), next_attempt_at=None)
    elif final or message.attempts >= settings.MPFEED_WEBHOOK_ATTEMPTS:
        if not final:
            result += f" (given up after {message.attempts} tries)"
        fields.update(state=GAVE_UP, next_attempt_at=None)
        log.warning("%s: webhook message %s given up: %s", what, message.pk, result)
    else:
        when = timezone.localtime(message.next_attempt_at)
        result += f" (try {message.attempts} of {settings.MPFEED_WEBHOOK_ATTEMPTS}; again at {when:%H:%M:%S})"
    result = _result(result)
    # Only while this try is still the message's latest (a sweeper may have taken it since).
    WebhookMessage.objects.filter(pk=message.pk, attempts=message.attempts).update(last_result=result, **fields)
    return result


def _post(message: WebhookMessage, what: str) -> tuple[bool, str, bool]:
    """(taken, what happened, final: whether trying again is pointless)."""
    if message.target == GLOBAL:
        url, secret = settings.MPFEED_ALERT_WEBHOOK_URL, settings.MPFEED_ALERT_WEBHOOK_SECRET
        if not url:
            return False, "not sent: MPFEED_ALERT_WEBHOOK_URL is no longer set", True
        unsigned = "" if secret else " (unsigned: MPFEED_ALERT_WEBHOOK_SECRET is empty)"
    else:
        workspace = message.workspace
        url, secret = workspace.alert_webhook_url, workspace.alert_webhook_secret
        if not url:
            return False, "not sent: the workspace no longer has a webhook", True
        # Checked again at every try: the host's name may point elsewhere since the workspace was saved.
        refusal = workspace.webhook_refusal()
        if refusal:
            log.warning("%s: the workspace's webhook refused: not a public endpoint", what)
            return False, f"not sent: {refusal}", False
        unsigned = "" if secret else " (unsigned: no secret set)"
    body = message.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "mpfeed-alerts",
        "X-Mpfeed-Timestamp": str(int(time.time())),
        "X-Mpfeed-Delivery": str(message.pk),
        "X-Mpfeed-Attempt": str(message.attempts),
    }
    if secret:
        headers["X-Mpfeed-Signature"] = sign(body, secret)
    try:
        with requests.post(url, data=body, headers=headers, timeout=TIMEOUT, allow_redirects=False) as response:
            status = response.status_code
    except Exception as e:
        # Only the error's type: its text names the URL, which may carry a token of the receiver's.
        log.warning("%s: webhook failed: %s", what, type(e).__name__)
        return False, f"failed: {type(e).__name__}{unsigned}", False
    if 200 <= status < 300:
        return True, f"sent: HTTP {status}{unsigned}", False
    log.warning("%s: webhook answered HTTP %s", what, status)
    return False, f"failed: HTTP {status}{unsigned}", False


def _result(text: str) -> str:
    return clipped(text, RESULT_LENGTH)
