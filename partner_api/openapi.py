"""The OpenAPI 3.1 description of the partner API, built from the route table itself (partner_api.api.ROUTES), so
it cannot drift from the URL map; tests/test_partner_api.py walks the URL map and checks both ways."""

from __future__ import annotations

import re
from functools import cache

from django.http import HttpRequest, JsonResponse

CONVERTERS = {"slug": "string", "str": "string", "int": "integer", "uuid": "string", "path": "string"}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable, for programs: e.g. token_invalid, not_found."},
                "message": {"type": "string", "description": "For people."},
                "fields": {"type": "object", "description": "Invalid input, field by field."},
            },
        }
    },
}


def openapi_path(route: str) -> tuple[str, list[dict]]:
    """Django's "workspaces/<slug:slug>/" as "/api/v1/workspaces/{slug}/" and its path parameters."""
    params = []
    for kind, name in re.findall(r"<(\w+):(\w+)>", route):
        params.append({"name": name, "in": "path", "required": True, "schema": {"type": CONVERTERS[kind]}})
    return "/api/v1/" + re.sub(r"<\w+:(\w+)>", r"{\1}", route), params


@cache
def document() -> dict:
    from partner_api.api import ROUTES

    paths: dict = {}
    for route, name, operations in ROUTES:
        address, params = openapi_path(route)
        item: dict = {}
        for op in operations:
            responses = {
                code: {"description": text, "content": {"application/json": {}}} for code, text in op.responses.items()
            }
            responses["default"] = {
                "description": "An error (400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 503)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            operation = {
                "operationId": f"{name}_{op.method.lower()}",
                "summary": op.summary,
                "x-scope": op.scope,
                "security": [{"token": []}],
                "parameters": params + op.query,
                "responses": responses,
            }
            if op.body is not None:
                content = {"application/json": {"schema": op.body}}
                if name == "job_records":
                    content["application/x-ndjson"] = {"schema": {"type": "string"}}
                operation["requestBody"] = {"required": True, "content": content}
            item[op.method.lower()] = operation
        paths[address] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mpfeed partner API",
            "version": "1",
            "description": "Onboard clients and run their syncs from a partner's platform. Authenticate with a "
            "partner API token (Authorization: Bearer mpf_…); each operation needs its x-scope. Errors are "
            '{"error": {"code", "message"}}; lists are paged (?page=, ?page_size=); calls are rate limited per '
            "token (429 with Retry-After).",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR},
        },
        "paths": paths,
    }


def description(request: HttpRequest) -> JsonResponse:
    """Public: the description tells nothing about any client."""
    return JsonResponse(document())
