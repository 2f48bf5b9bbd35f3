"""The events a partner's platform can follow without polling: every message the alert webhook carries, and its body.

The webhook (MPFEED_ALERT_WEBHOOK_URL and a workspace's own alert_webhook_url) receives, signed exactly as the
alerts (feeds.webhooks.sign: `X-Mpfeed-Signature: sha256=<HMAC-SHA256 of the exact body>`, `X-Mpfeed-Timestamp`):

- the alerts, one per change of a workspace's health (feeds.alerts): "event" is the alert's kind
  ("run_failed", "blocked", "deliveries_failing", "recovered", ...), with "message";
- `run.finished`: a run ended succeeded or succeeded_with_rejects, with its counters;
- `run.failed`: a run ended failed, with its error and counters;
- `credentials.verified`: new or stored credentials passed a connection test with mParticle — through a
  credential link ("via": "link"), the partner API ("api") or a staff connection test ("connection_test");
  "in_use" is false when they wait for staff to confirm them.

Every body is {"event", "workspace": {"name", "slug"}, "at", ...}: the run events add "run": {"id", "job":
{"id", "name"}, "status", "trigger", "error", "started_at", "finished_at", "counters": {...SyncRun.summary's
counters}}; credentials.verified adds "via" and "in_use". No body ever holds a key, a secret or a source's
credentials (the error texts are redacted like the alerts').

Sending is the alerts' path (feeds.webhooks): tried first in the worker that ended the run or verified the
credentials, again later while the receiver does not take it, and never raising (`announce` logs a failure and
returns the first try's one-line result).
"""

from __future__ import annotations

import json
import logging

from django.utils import timezone

from feeds import alerts, webhooks
from feeds.models import SyncRun, Workspace

log = logging.getLogger(__name__)

RUN_FINISHED = "run.finished"
RUN_FAILED = "run.failed"
CREDENTIALS_VERIFIED = "credentials.verified"
EVENTS = (RUN_FINISHED, RUN_FAILED, CREDENTIALS_VERIFIED)

VIA_LINK, VIA_API, VIA_TEST = "link", "api", "connection_test"

COUNTERS = ("records_read", "records_rejected", "batches", "requests", "events", "events_accepted",
            "batches_rejected", "throttled", "retries", "seconds_waited")  # fmt: skip


def body(event: str, workspace: Workspace, **fields: object) -> bytes:
    """The exact bytes sent (and signed) for an event."""
    payload = {
        "event": event,
        "workspace": {"name": workspace.name, "slug": workspace.slug},
        "at": timezone.now().isoformat(),
        **fields,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def run_body(run: SyncRun) -> bytes:
    summary = run.summary()
    secrets = alerts._secrets(run.workspace)
    return body(
        RUN_FAILED if run.status == SyncRun.Status.FAILED else RUN_FINISHED,
        run.workspace,
        run={
            "id": run.pk,
            "job": {"id": run.job_id, "name": run.job.name},
            "status": run.status,
            "trigger": run.trigger,
            "error": alerts._redact(run.error, secrets),
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "counters": {name: summary[name] for name in COUNTERS},
        },
    )


def run_ended(run: SyncRun) -> str:
    """Announce a run that just ended succeeded, succeeded with rejects or failed (the engine calls this once,
    from the one caller whose SyncRun.finish ended it). Never raises."""
    try:
        if run.status not in (SyncRun.Status.SUCCEEDED, SyncRun.Status.SUCCEEDED_WITH_REJECTS, SyncRun.Status.FAILED):
            return "not an event: the run is " + run.status
        return announce(run_body(run), run.workspace, f"run {run.pk}")
    except Exception:
        log.exception("events: announcing the end of run %s failed", getattr(run, "pk", None))
        return "failed: internal error"


def credentials_verified(workspace: Workspace, via: str, *, in_use: bool = True) -> str:
    """Announce credentials that passed a connection test (`in_use`: False when held for staff). Never raises."""
    try:
        data = body(CREDENTIALS_VERIFIED, workspace, via=via, in_use=in_use)
        return announce(data, workspace, f"workspace {workspace.pk}")
    except Exception:
        log.exception("events: announcing verified credentials of workspace %s failed", getattr(workspace, "pk", None))
        return "failed: internal error"


def announce(data: bytes, workspace: Workspace, who: str) -> str:
    event = json.loads(data)["event"]
    result = webhooks.deliver(data, event, workspace, f"{who}: event {event}")
    if result.startswith("sent") or result.startswith("not configured"):
        log.debug("%s: event %s: %s", who, event, result)
    else:
        log.info("%s: event %s: %s", who, event, result)
    return result
