from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from feeds.models import SyncJob
from feeds.sources.inbox import PushError, parse_push, store_push


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"}) if request.GET.get("format") == "json" else HttpResponse("OK")


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
    if not job.enabled:
        return _push_error(409, "this job is disabled; nothing was stored")
    declared = (request.headers.get("Content-Length") or "0").strip()
    if not (declared.isascii() and declared.isdigit()):
        return _push_error(400, "the Content-Length header is not a number of bytes")
    length = int(declared)
    if length > settings.MPFEED_INBOX_MAX_BYTES:
        return _push_error(413, f"the body is over {settings.MPFEED_INBOX_MAX_BYTES} bytes; send smaller pushes")
    try:
        records = parse_push(request.body, request.content_type or "")
    except PushError as e:
        return _push_error(400, str(e))
    first, last = store_push(job, records)
    return JsonResponse({"received": len(records), "first_id": first, "last_id": last}, status=202)


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("inbox/<uuid:inbox_id>/", inbox, name="inbox"),
]
