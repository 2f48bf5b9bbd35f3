"""The partner API's operations: each reads the request, calls the home of its rule (feeds.actions, the models'
methods, feeds.sync, the forms the staff pages use, the push inbox) and answers JSON (partner_api.schemas). The
route table at the end is the URL map and the OpenAPI description both (partner_api.urls, partner_api.openapi)."""

from __future__ import annotations

import json
from typing import cast
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.core.paginator import EmptyPage, Paginator
from django.db.models import Field, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse

from feeds import actions, health, sync
from feeds import mapping as mapping_rules
from feeds.forms import ConnectForm, JobForm, WorkspaceForm
from feeds.models import CredentialLink, Mapping, MappingConflict, OutputChanged, SyncJob, SyncRun, Workspace
from feeds.mparticle.client import TRANSIENT
from feeds.views.connect import explain
from feeds.views.system import receive_push
from partner_api import schemas
from partner_api.auth import ApiError, Operation, error_response, read_json
from partner_api.models import ApiToken

MAX_PAGE_SIZE = 200
PAGE_SIZE = 50


class _Caller:
    """Who an action names as its author (actions.pause writes "Paused by …")."""

    def __init__(self, token: ApiToken):
        self.token = token
        self.is_authenticated = False  # no user: a run or link made through the API has no created_by

    def get_username(self) -> str:
        return f"API token {self.token.name}"


# ------------------------------------------------------------------------------------------------ helpers


def _workspace(token: ApiToken, slug: str) -> Workspace:
    return get_object_or_404(token.reachable(), slug=slug)


def _job(token: ApiToken, slug: str, job_id: int) -> SyncJob:
    return get_object_or_404(
        SyncJob.objects.select_related("mapping", "workspace"), pk=job_id, workspace=_workspace(token, slug)
    )


def _run(token: ApiToken, run_id: int) -> SyncRun:
    return get_object_or_404(SyncRun.objects.select_related("workspace"), pk=run_id, workspace__in=token.reachable())


def _page(request: HttpRequest, rows: QuerySet, serialize, *, serialize_all=None) -> JsonResponse:
    """A page of `rows`: ?page= (from 1) and ?page_size= (at most MAX_PAGE_SIZE), with the next page's address.
    `serialize_all`, if given, answers the page's rows at once (e.g. their health in one assessment)."""
    try:
        number = int(request.GET.get("page", "1"))
        size = int(request.GET.get("page_size", str(PAGE_SIZE)))
    except ValueError:
        raise ApiError(400, "bad_page", "page and page_size are whole numbers.") from None
    if number < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        raise ApiError(400, "bad_page", f"page starts at 1; page_size is between 1 and {MAX_PAGE_SIZE}.")
    paginator = Paginator(rows, size, allow_empty_first_page=True)
    try:
        page = paginator.page(number)
    except EmptyPage:
        raise ApiError(404, "no_such_page", f"There are {paginator.num_pages} page(s).") from None

    def address(n: int) -> str:
        return request.build_absolute_uri(f"{request.path}?page={n}&page_size={size}")

    return JsonResponse(
        {
            "count": paginator.count,
            "next": address(number + 1) if page.has_next() else None,
            "previous": address(number - 1) if page.has_previous() else None,
            "results": serialize_all(list(page.object_list)) if serialize_all else [serialize(r) for r in page],
        }
    )


def _defaults(model, names) -> dict:
    """What a model's fields hold when not given (a form needs every field; a JSON body may leave some out)."""
    return {name: cast(Field, model._meta.get_field(name)).get_default() for name in names}


def _form_errors(form) -> ApiError:
    fields = {name: [str(m) for m in errors] for name, errors in form.errors.items()}
    return ApiError(422, "invalid", "The request is not valid; see the fields.", fields=fields)


def _done(done: actions.Done, ws: Workspace) -> JsonResponse:
    ws.refresh_from_db()
    return JsonResponse({"changed": done.changed, "message": done.text, "workspace": schemas.workspace(ws)})


# --------------------------------------------------------------------------------------------- workspaces


def workspace_list(request, token):
    def with_health(workspaces: list[Workspace]) -> list[dict]:
        healths = health.assess(workspaces)
        return [schemas.workspace(ws, healths[ws.pk]) for ws in workspaces]

    return _page(request, token.reachable().order_by("name"), None, serialize_all=with_health)


WORKSPACE_FIELDS = ("name", "pod", "endpoint_url", "environment", "rate_limit", "confirm_new_credentials")


def workspace_create(request, token):
    if token.limited:
        raise ApiError(403, "token_limited", "A token limited to some workspaces cannot create workspaces.")
    data = read_json(request)
    defaults = _defaults(Workspace, WORKSPACE_FIELDS)
    form = WorkspaceForm({**defaults, **{k: data[k] for k in WORKSPACE_FIELDS if k in data and data[k] is not None}})
    if not form.is_valid():
        raise _form_errors(form)
    ws = form.save()
    return JsonResponse(schemas.workspace(ws, health.of(ws)), status=201)


def workspace_read(request, token, slug):
    ws = _workspace(token, slug)
    return JsonResponse(schemas.workspace(ws, health.of(ws)))


def workspace_pause(request, token, slug):
    ws = _workspace(token, slug)
    return _done(actions.pause(ws, _Caller(token)), ws)


def workspace_resume(request, token, slug):
    ws = _workspace(token, slug)
    return _done(actions.resume(ws), ws)


def workspace_promote(request, token, slug):
    ws = _workspace(token, slug)
    try:
        changed = ws.promote()
    except ValidationError as e:
        raise ApiError(409, "promotion_refused", " ".join(e.messages)) from None
    message = f"{ws.name} now sends to the production environment." if changed else "Already in production."
    return JsonResponse({"changed": changed, "message": message, "workspace": schemas.workspace(ws)})


# ------------------------------------------------------------------------------------------- credentials


def credentials_set(request, token, slug):
    """The new key and secret are tested first; the ones in use stay until they pass (actions.replace_credentials,
    the hand-over's rule). Never echoed: the answer names the key's last characters at most."""
    ws = _workspace(token, slug)
    data = read_json(request)
    given = {k: data[k] for k in ("pod", "api_key", "api_secret") if data.get(k) is not None}
    form = ConnectForm(ws, {"pod": ws.pod, **given})  # the pod: the workspace's unless another is given
    if not form.is_valid():
        raise _form_errors(form)
    pod = form.cleaned_data.get("pod") or ws.pod
    handover = actions.replace_credentials(ws, pod, form.cleaned_data["api_key"], form.cleaned_data["api_secret"])
    answer = handover.answer
    if answer is None:  # only a link's hand-over is refused before testing (its limits); this one always tests
        raise ApiError(409, "conflict", "The credentials were not tested; try again.")
    if not answer.delivered:
        unchanged = " The credentials in use are unchanged."
        if answer.outcome in TRANSIENT:
            raise ApiError(503, "connection_test_failed", explain(answer) + unchanged, headers={"Retry-After": "60"})
        raise ApiError(422, "credentials_refused", explain(answer) + unchanged)
    stored = handover.workspace
    if stored is None:  # cannot happen without a link; kept for the type
        raise ApiError(409, "conflict", "The workspace changed meanwhile; try again.")
    if handover.held:
        held = {"state": "held_for_confirmation", "message": "Verified; held until staff confirm them."}
        return JsonResponse({**held, "workspace": schemas.workspace(stored)}, status=202)
    body: dict = {"state": "in_use", "message": explain(answer), "resumed_runs": handover.resumed}
    return JsonResponse({**body, "workspace": schemas.workspace(stored)})


# -------------------------------------------------------------------------------------- credential links


def link_create(request, token, slug):
    ws = _workspace(token, slug)
    data = read_json(request)
    hours = data.get("hours")
    if hours is not None and (
        not isinstance(hours, int | float) or isinstance(hours, bool) or not 0 < hours <= 24 * 30
    ):
        raise ApiError(422, "invalid", "hours is a number between 0 and 720.", fields={"hours": ["0 < hours ≤ 720"]})
    origin = data.get("origin")
    allowed = ws.allowed_embed_origins  # MPFEED_EMBED_ORIGINS and the workspace's own
    if origin is not None and (not isinstance(origin, str) or ws.embed_origin(origin) is None):
        raise ApiError(422, "invalid", "origin is not one of the origins allowed to frame the form (MPFEED_EMBED_ORIGINS or the workspace's embed origins).",
                       fields={"origin": ["not in MPFEED_EMBED_ORIGINS nor the workspace's embed origins"]})  # fmt: skip
    link, secret = CredentialLink.issue(ws, None, hours)
    url = request.build_absolute_uri(reverse("feeds:connect", args=[secret]))
    # The embeddable form's address (for an <iframe> in the partner's product), when any origin may frame it.
    embed_url = None
    if allowed:
        embed_url = request.build_absolute_uri(reverse("feeds:connect_embed", args=[secret]))
        if origin:
            embed_url += "?" + urlencode({"origin": origin.strip().rstrip("/").lower()})
    return JsonResponse({**schemas.link(link), "url": url, "embed_url": embed_url}, status=201)


def link_revoke(request, token, slug, link_id):
    link = get_object_or_404(CredentialLink, pk=link_id, workspace=_workspace(token, slug))
    link.revoke()
    return JsonResponse(schemas.link(link))


# ---------------------------------------------------------------------------------------------- mappings


def mapping_list(request, token, slug):
    rows = _workspace(token, slug).mappings.order_by("name")
    return _page(request, rows, lambda m: schemas.mapping(m, rules=False))


def mapping_read(request, token, slug, name):
    return JsonResponse(schemas.mapping(get_object_or_404(Mapping, workspace=_workspace(token, slug), name=name)))


def _rules(data: dict) -> dict:
    rules = data.get("rules")
    if not isinstance(rules, dict):
        raise ApiError(422, "invalid", "rules is the mapping document, a JSON object.", fields={"rules": ["required"]})
    return rules


def mapping_validate(request, token, slug):
    """What loading would say, without storing: the rules' errors, and the golden samples' changes (against the
    stored mapping of that name, if any)."""
    ws = _workspace(token, slug)
    data = read_json(request)
    rules = _rules(data)
    stored = ws.mappings.filter(name=data.get("name") or "").first()
    body: dict = {"valid": True, "errors": [], "sample_changes": [], "accept_changes": None}
    try:
        Mapping(pk=stored.pk if stored else None).prepare_rules(rules)
    except mapping_rules.MappingError as e:
        body.update(valid=False, errors=e.errors)
    except OutputChanged as e:
        body.update(sample_changes=e.changes, accept_changes=e.digest)
    return JsonResponse(body)


def mapping_load(request, token, slug, name):
    """Create or replace the mapping `name`, checked as the editor checks it (Mapping.update_rules): a change in
    the golden samples' output is refused (409) unless accepted — with the digest the refusal gave, or true."""
    ws = _workspace(token, slug)
    data = read_json(request)
    rules = _rules(data)
    version = data.get("version")
    accept = data.get("accept_changes", False)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ApiError(422, "invalid", "version is a whole number.", fields={"version": ["a whole number"]})
    if not isinstance(accept, bool | str):
        raise ApiError(422, "invalid", "accept_changes is true or a digest.", fields={"accept_changes": ["bad"]})
    item = ws.mappings.filter(name=name).first() or Mapping(workspace=ws, name=name)
    created = item.pk is None
    if created:
        try:
            Mapping._meta.get_field("name").clean(name, item)
        except ValidationError as e:
            raise ApiError(422, "invalid", " ".join(e.messages)) from None
    try:
        changed = item.update_rules(rules, version=version, accept_changes=accept)
    except mapping_rules.MappingError as e:
        raise ApiError(422, "mapping_invalid", "The mapping is not valid.", fields={"rules": e.errors}) from None
    except OutputChanged as e:
        response = error_response(
            409, "samples_changed", "The golden samples come out differently; send accept_changes to accept.",
            fields={"rules": e.changes},
        )  # fmt: skip
        body = json.loads(response.content)
        body["error"]["accept_changes"] = e.digest
        return JsonResponse(body, status=409)
    except MappingConflict as e:
        raise ApiError(409, "version_conflict", str(e)) from None
    return JsonResponse({**schemas.mapping(item), "changed": changed}, status=201 if created else 200)


# -------------------------------------------------------------------------------------------------- jobs


JOB_FIELDS = ("name", "endpoint_mode", "enabled", "schedule_minutes", "schedule_cron", "source_kind")


def _job_form(ws: Workspace, data: dict, job: SyncJob | None) -> JobForm:
    """The staff page's form (JobForm: the name, the mapping of this workspace, SyncJob.set_source's checks),
    filled from the JSON given over what the job holds."""
    current: dict = _defaults(SyncJob, JOB_FIELDS)
    if job is not None:
        current = {name: getattr(job, name) for name in JOB_FIELDS}
        current.update(mapping=job.mapping_id, source_config=job.source_config)
    form_data = {**current, **{k: data[k] for k in JOB_FIELDS if k in data}}
    if form_data.get("schedule_cron") is None:
        form_data["schedule_cron"] = ""
    if form_data.get("schedule_minutes") is None:
        form_data.pop("schedule_minutes", None)
    if "mapping" in data:
        found = ws.mappings.filter(name=str(data["mapping"])).first()
        form_data["mapping"] = found.pk if found else ""
        if found is None:
            raise ApiError(422, "invalid", "No mapping of this name.", fields={"mapping": ["no such mapping"]})
    if "source_config" in data:
        form_data["source_config"] = data["source_config"]
    form_data["source_config"] = json.dumps(form_data.get("source_config") or {})
    secret = data.get("source_secret")
    if secret == "":
        form_data["clear_source_secret"] = True
    elif secret is not None:
        form_data["new_source_secret"] = str(secret)
    if form_data.get("enabled") is None:
        form_data["enabled"] = True
    return JobForm(form_data, instance=job, workspace=ws)


def job_list(request, token, slug):
    rows = _workspace(token, slug).jobs.select_related("mapping", "workspace").order_by("name")
    return _page(request, rows, schemas.job)


def job_create(request, token, slug):
    ws = _workspace(token, slug)
    form = _job_form(ws, read_json(request), None)
    if not form.is_valid():
        raise _form_errors(form)
    return JsonResponse(schemas.job(form.save()), status=201)


def job_read(request, token, slug, job_id):
    return JsonResponse(schemas.job(_job(token, slug, job_id)))


def job_update(request, token, slug, job_id):
    job = _job(token, slug, job_id)
    form = _job_form(job.workspace, read_json(request), job)
    if not form.is_valid():
        raise _form_errors(form)
    return JsonResponse(schemas.job(form.save()))


def job_run(request, token, slug, job_id):
    job = _job(token, slug, job_id)
    try:
        run = sync.start_run(job, trigger=SyncRun.Trigger.API, user=None)
    except sync.AlreadyRunning as e:
        raise ApiError(409, "already_running", str(e)) from None
    except sync.SyncError as e:
        raise ApiError(409, "run_refused", str(e)) from None
    sync.enqueue_run(run)
    run.refresh_from_db()
    return JsonResponse(schemas.run(run), status=202)


def job_records(request, token, slug, job_id):
    """The job's push inbox, reached with an API token (sync) instead of the inbox token: the same rules."""
    job = _job(token, slug, job_id)
    if job.source_kind != SyncJob.SourceKind.INBOX:
        raise ApiError(409, "not_an_inbox", "This job does not read a push inbox (source_kind 'inbox').")

    def error(status: int, code: str, message: str) -> HttpResponse:
        return error_response(status, code, message)

    return receive_push(request, job, error)


# -------------------------------------------------------------------------------------------------- runs


def run_list(request, token, slug):
    rows = _workspace(token, slug).runs.select_related("workspace").order_by("-created_at", "-pk")
    return _page(request, rows, schemas.run)


def run_read(request, token, run_id):
    return JsonResponse(schemas.run(_run(token, run_id)))


def run_deliveries(request, token, run_id):
    rows = _run(token, run_id).deliveries.order_by("sequence").defer("payload")
    return _page(request, rows, schemas.delivery)


def run_rejects(request, token, run_id):
    return _page(request, _run(token, run_id).rejects.order_by("pk"), schemas.reject)


# ------------------------------------------------------------------------------------------- route table

READ, ONBOARD, SYNC = ApiToken.Scope.READ, ApiToken.Scope.ONBOARD, ApiToken.Scope.SYNC
PAGED = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}},
]
WORKSPACE_BODY = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "pod": {"type": "string", "enum": list(Workspace.Pod.values)},
        "endpoint_url": {"type": "string", "description": "Only for the sandbox pod."},
        "environment": {"type": "string", "enum": list(Workspace.Environment.values)},
        "rate_limit": {"type": "number"},
        "confirm_new_credentials": {"type": "boolean"},
    },
}
CREDENTIALS_BODY = {
    "type": "object",
    "required": ["api_key", "api_secret"],
    "properties": {
        "api_key": {"type": "string", "writeOnly": True},
        "api_secret": {"type": "string", "writeOnly": True},
        "pod": {"type": "string", "description": "An mParticle pod; a sandbox workspace keeps its endpoint."},
    },
}
MAPPING_BODY = {
    "type": "object",
    "required": ["rules"],
    "properties": {
        "rules": {"type": "object", "description": "The mapping document (see the README, Mappings)."},
        "version": {"type": "integer", "description": "The version it was read at: refused (409) if it moved."},
        "accept_changes": {"description": "true, or the digest a 409 samples_changed gave."},
        "name": {"type": "string", "description": "validate only: compare with this stored mapping."},
    },
}
JOB_BODY = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "mapping": {"type": "string", "description": "The name of a mapping of the workspace."},
        "source_kind": {"type": "string", "enum": list(SyncJob.SourceKind.values)},
        "source_config": {"type": "object"},
        "source_secret": {"type": "string", "writeOnly": True, "description": 'HTTP sources; "" removes it.'},
        "endpoint_mode": {"type": "string", "enum": list(SyncJob.EndpointMode.values)},
        "enabled": {"type": "boolean"},
        "schedule_minutes": {"type": ["integer", "null"]},
        "schedule_cron": {"type": "string"},
    },
}
RECORDS_BODY = {"type": "array", "items": {"type": "object"}, "description": "A JSON array, or NDJSON."}
LINK_BODY = {"type": "object", "properties": {"hours": {"type": "number"}, "origin": {"type": "string"}}}

# (path, URL name, operations): the path in Django's syntax, under /api/v1/.
ROUTES: list[tuple[str, str, list[Operation]]] = [
    ("workspaces/", "workspaces", [
        Operation("GET", READ, workspace_list, "List the workspaces this token reaches", query=PAGED),
        Operation("POST", ONBOARD, workspace_create, "Create a workspace", WORKSPACE_BODY, responses={"201": "Created"}),
    ]),
    ("workspaces/<slug:slug>/", "workspace", [
        Operation("GET", READ, workspace_read, "A workspace's status and health"),
    ]),
    ("workspaces/<slug:slug>/pause/", "workspace_pause", [
        Operation("POST", ONBOARD, workspace_pause, "Pause: no new run starts, unfinished runs stop"),
    ]),
    ("workspaces/<slug:slug>/resume/", "workspace_resume", [
        Operation("POST", ONBOARD, workspace_resume, "Resume a paused workspace (its credentials are tested)"),
    ]),
    ("workspaces/<slug:slug>/promote/", "workspace_promote", [
        Operation("POST", ONBOARD, workspace_promote, "Development → production, after a successful run"),
    ]),
    ("workspaces/<slug:slug>/credentials/", "workspace_credentials", [
        Operation("PUT", ONBOARD, credentials_set, "Set or replace the key and secret (tested first; write-only)",
                  CREDENTIALS_BODY, responses={"200": "In use", "202": "Held for staff to confirm"}),
    ]),
    ("workspaces/<slug:slug>/links/", "links", [
        Operation("POST", ONBOARD, link_create, "Create a one-time credential link", LINK_BODY,
                  responses={"201": "Created"}),
    ]),
    ("workspaces/<slug:slug>/links/<int:link_id>/revoke/", "link_revoke", [
        Operation("POST", ONBOARD, link_revoke, "Revoke a credential link"),
    ]),
    ("workspaces/<slug:slug>/mappings/", "mappings", [
        Operation("GET", READ, mapping_list, "List the workspace's mappings", query=PAGED),
    ]),
    ("workspaces/<slug:slug>/mappings/validate/", "mapping_validate", [
        Operation("POST", ONBOARD, mapping_validate, "Check a mapping and its golden samples, storing nothing",
                  MAPPING_BODY),
    ]),
    ("workspaces/<slug:slug>/mappings/<str:name>/", "mapping", [
        Operation("GET", READ, mapping_read, "A mapping and its rules"),
        Operation("PUT", ONBOARD, mapping_load, "Load (create or replace) a mapping, with the golden-sample check",
                  MAPPING_BODY, responses={"200": "Replaced", "201": "Created"}),
    ]),
    ("workspaces/<slug:slug>/jobs/", "jobs", [
        Operation("GET", READ, job_list, "List the workspace's sync jobs", query=PAGED),
        Operation("POST", ONBOARD, job_create, "Create a sync job", JOB_BODY, responses={"201": "Created"}),
    ]),
    ("workspaces/<slug:slug>/jobs/<int:job_id>/", "job", [
        Operation("GET", READ, job_read, "A sync job"),
        Operation("PATCH", ONBOARD, job_update, "Change a sync job (the fields given)", JOB_BODY),
    ]),
    ("workspaces/<slug:slug>/jobs/<int:job_id>/run/", "job_run", [
        Operation("POST", SYNC, job_run, "Run the job now", responses={"202": "Queued"}),
    ]),
    ("workspaces/<slug:slug>/jobs/<int:job_id>/records/", "job_records", [
        Operation("POST", SYNC, job_records, "Push records to the job's inbox (stored before 202)", RECORDS_BODY,
                  responses={"202": "Stored"}),
    ]),
    ("workspaces/<slug:slug>/runs/", "runs", [
        Operation("GET", READ, run_list, "The workspace's runs, newest first", query=PAGED),
    ]),
    ("runs/<int:run_id>/", "run", [
        Operation("GET", READ, run_read, "A run's status and counters"),
    ]),
    ("runs/<int:run_id>/deliveries/", "run_deliveries", [
        Operation("GET", READ, run_deliveries, "A run's deliveries (requests to mParticle)", query=PAGED),
    ]),
    ("runs/<int:run_id>/rejects/", "run_rejects", [
        Operation("GET", READ, run_rejects, "A run's rejected records", query=PAGED),
    ]),
]  # fmt: skip
