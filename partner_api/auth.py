"""How a call of the partner API is answered before and after its view: the token (never a session cookie, never
CSRF — a token is not something a browser sends by itself), its scope, the rate per token, errors as JSON with a
stable code, and one ApiCall row per call (never its body)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from feeds.security import client_ip
from partner_api.models import ApiCall, ApiToken

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal, answered as {"error": {"code", "message"}} (and `fields` for invalid input)."""

    def __init__(self, status: int, code: str, message: str, *, fields: dict | None = None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = fields
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, *, fields: dict | None = None, headers=None) -> JsonResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    response = JsonResponse({"error": body}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def invalid(e: ValidationError) -> ApiError:
    """A model's or form's ValidationError as a 422, field by field."""
    if hasattr(e, "error_dict"):
        fields = {name: [str(m) for m in ValidationError(errors).messages] for name, errors in e.error_dict.items()}
        return ApiError(422, "invalid", "The request is not valid; see the fields.", fields=fields)
    return ApiError(422, "invalid", " ".join(e.messages))


@dataclass(frozen=True)
class Operation:
    method: str
    scope: str  # an ApiToken.Scope value
    view: Callable[..., HttpResponse]
    summary: str
    body: dict | None = None  # the JSON schema of the request body (OpenAPI), None: no JSON body
    query: list[dict] = field(default_factory=list)  # OpenAPI parameters in the query
    responses: dict[str, str] = field(default_factory=lambda: {"200": "OK"})


def read_json(request: HttpRequest) -> dict:
    if not request.body:
        return {}
    try:
        data = json.loads(request.body)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_json", "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "The body must be a JSON object.")
    return data


def _token(request: HttpRequest) -> ApiToken:
    header = request.headers.get("Authorization", "")
    if not header:
        raise ApiError(401, "token_missing", "Send a partner API token as 'Authorization: Bearer <token>'.")
    scheme, _, raw = header.partition(" ")
    token = ApiToken.find(raw.strip()) if scheme.lower() == "bearer" else None
    if token is None:
        raise ApiError(401, "token_invalid", "This API token is not valid.")
    return token


def _check_state(token: ApiToken) -> None:
    if token.state == "revoked":
        raise ApiError(401, "token_revoked", "This API token was revoked; ask for a new one.")
    if token.state == "expired":
        raise ApiError(401, "token_expired", "This API token has expired; ask for a new one.")


def endpoint(operations: list[Operation]) -> Callable[..., HttpResponse]:
    """One URL of the API: its operations by method, behind the token, its scope and the rate."""
    by_method = {op.method: op for op in operations}

    @csrf_exempt  # authenticated by the bearer token only; session cookies are never read
    def view(request: HttpRequest, **kwargs) -> HttpResponse:
        started = time.monotonic()
        token: ApiToken | None = None
        try:
            token = _token(request)
            _check_state(token)  # a revoked or expired token's calls stay attributed to it
            wait = token.count_call()
            if wait is not None:
                raise ApiError(
                    429,
                    "rate_limited",
                    "Too many calls with this token; try again after Retry-After seconds.",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
            op = by_method.get(request.method or "")
            if op is None:
                allowed = ", ".join(sorted(by_method))
                raise ApiError(405, "method_not_allowed", f"Use {allowed} here.", headers={"Allow": allowed})
            if not token.allows(op.scope):
                raise ApiError(403, "scope_missing", f"This token lacks the {op.scope!r} scope.")
            token.mark_used()
            response = op.view(request, token, **kwargs)
            code = ""
        except ApiError as e:
            response, code = error_response(e.status, e.code, e.message, fields=e.fields, headers=e.headers), e.code
        except Http404:
            response, code = error_response(404, "not_found", "No such object (or not for this token)."), "not_found"
        except ValidationError as e:
            api_error = invalid(e)
            response = error_response(422, api_error.code, api_error.message, fields=api_error.fields)
            code = api_error.code
        except Exception:
            # Answered in JSON all the same, and in the trail; the traceback (never a body) goes to the log.
            log.exception("partner API: %s %s failed", request.method, request.path)
            response, code = error_response(500, "server_error", "Something went wrong; try again."), "server_error"
        response["Cache-Control"] = "no-store"
        ApiCall.objects.create(
            token=token,
            method=(request.method or "")[:10],
            path=request.path[:500],
            status=response.status_code,
            error_code=code,
            address=client_ip(request) or "",
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return response

    view.operations = by_method  # type: ignore[attr-defined]  # read by the OpenAPI description and its test
    return view


@csrf_exempt
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other address under /api/v1/: a JSON 404, never the site's HTML page."""
    return error_response(404, "no_such_endpoint", "There is no such API endpoint; see /api/v1/openapi.json.")
