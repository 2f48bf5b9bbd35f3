from __future__ import annotations

import hmac
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, HttpResponseNotAllowed, HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from feeds import operations
from feeds.models import SyncJob
from feeds.sources.inbox import KeyReused, PushError, parse_push, store_idempotent_push, store_push


def healthz(request):
    """The site answers and its database too (a load balancer's probe)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"}) if request.GET.get("format") == "json" else HttpResponse("OK")


def favicon(request):
    """Browsers ask for /favicon.ico on every page that names none (the admin's): the site's icon."""
    return HttpResponsePermanentRedirect(static("feeds/favicon.svg"))


def health(request):
    """Whether the database, the task broker and at least one cluster are alive: 200 when all are, else 503."""
    checks = operations.system_health()
    ok = all(check.ok for check in checks.values()) and len(checks) == 3
    body = {
        "status": "ok" if ok else "failing",
        **{name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
    }
    return JsonResponse(body, status=200 if ok else 503)


def metrics(request):
    """Prometheus text format, for staff or for a scraper holding MPFEED_METRICS_TOKEN (Authorization: Bearer)."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET"])
    token = settings.MPFEED_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    by_token = bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)
    # The counters name every workspace: staff who may see workspaces, as on the home page.
    by_staff = request.user.is_active and request.user.is_staff and request.user.has_perm("feeds.view_workspace")
    if not (by_token or by_staff):
        response = HttpResponse(
            "Staff only, or send the metrics token as 'Authorization: Bearer <token>'.\n",
            status=401 if not request.user.is_authenticated else 403,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="mpfeed metrics"'
        return response
    return HttpResponse(operations.render(operations.metrics()), content_type=operations.CONTENT_TYPE)


def _push_error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt  # a machine-to-machine endpoint authenticated by its bearer token, not a browser form
@require_POST
def inbox(request, inbox_id):
    """Push records to a job: NDJSON or a JSON array. Answered 202 only once every record is stored."""
    job = SyncJob.objects.filter(inbox_id=inbox_id, source_kind=SyncJob.SourceKind.INBOX).first()
    header = request.headers.get("Authorization", "")
    if not header:
        return _push_error(401, "send the inbox token as 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    # Same answer for an unknown inbox and a wrong token: the URL alone reveals nothing.
    if job is None or scheme.lower() != "bearer" or not job.inbox_token_matches(token.strip()):
        return _push_error(403, "the inbox token is not valid for this URL")
    return receive_push(request, job, lambda status, code, message: _push_error(status, message))


def receive_push(request, job: SyncJob, error: Callable[[int, str, str], HttpResponse]) -> HttpResponse:
    """The inbox's rules for a push to `job` once its caller is authenticated (the inbox token, or a partner API
    token): every record stored before 202 is answered. `error(status, code, message)` words a refusal as the
    caller's face does."""
    if not job.enabled:
        return error(409, "job_disabled", "this job is disabled; nothing was stored")
    declared = (request.headers.get("Content-Length") or "0").strip()
    if not (declared.isascii() and declared.isdigit()):
        return error(400, "bad_content_length", "the Content-Length header is not a number of bytes")
    length = int(declared)
    if length > settings.MPFEED_INBOX_MAX_BYTES:
        return error(
            413, "body_too_large", f"the body is over {settings.MPFEED_INBOX_MAX_BYTES} bytes; send smaller pushes"
        )
    key = request.headers.get("Idempotency-Key", "").strip()
    if key and (len(key) > 255 or not key.isascii() or not key.isprintable()):
        return error(
            400, "bad_idempotency_key", "the Idempotency-Key header must be at most 255 printable ASCII characters"
        )
    try:
        records = parse_push(request.body, request.content_type or "")
    except PushError as e:
        return error(400, "bad_records", str(e))
    if not key:
        first, last = store_push(job, records)
        return JsonResponse({"received": len(records), "first_id": first, "last_id": last}, status=202)
    try:
        stored = store_idempotent_push(job, key, request.body, records)
    except KeyReused:
        return error(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a push with another body; nothing was stored",
        )
    body = {"received": stored.received, "first_id": stored.first_id, "last_id": stored.last_id}
    response = JsonResponse({**body, "replayed": stored.replayed}, status=202)
    if stored.replayed:
        response["Idempotent-Replayed"] = "true"
    return response
