"""The partner API (partner_api/): every endpoint with a token of each scope, without one, with a revoked or
expired one, with a token reaching for another workspace's objects, and with a session cookie only; the
credential rules; the OpenAPI description against the URL map; the README's worked example against a live site
and the sandbox."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.urls import URLPattern, get_resolver, reverse
from django.utils import timezone

from feeds.models import CredentialLink, InboxRecord, Mapping, SyncJob, SyncRun, Workspace
from partner_api.api import ROUTES
from partner_api.models import ApiCall, ApiToken
from partner_api.openapi import document, openapi_path
from tests.helpers import (
    MAPPING,
    SANDBOX_KEY,
    SANDBOX_SECRET,
    make_job,
    make_mapping,
    make_workspace,
    purchase_rows,
    run_job,
    write_csv,
)

pytestmark = pytest.mark.django_db

ALL = ["read", "onboard", "sync"]


def api(client: Client, method: str, address: str, token: str | None = None, body=None, **headers):
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    if method == "GET":
        return client.get(address, **headers)
    data = json.dumps(body) if body is not None else ""
    return getattr(client, method.lower())(address, data, content_type="application/json", **headers)


def error_code(response) -> str:
    assert response["Content-Type"] == "application/json", response.content[:200]
    return response.json()["error"]["code"]


@pytest.fixture
def objects(sandbox, tmp_path):
    workspace = make_workspace(sandbox, name="Acme")
    link, _ = CredentialLink.issue(workspace)
    mapping = make_mapping(workspace)
    job = make_job(workspace, write_csv(tmp_path / "a.csv", purchase_rows(3)), mapping=mapping)
    inbox = SyncJob.objects.create(
        workspace=workspace, mapping=mapping, name="inbox", source_kind=SyncJob.SourceKind.INBOX, source_config={}
    )
    run = run_job(job)
    other = make_workspace(sandbox, name="Other")
    return {"workspace": workspace, "link": link, "mapping": mapping, "job": job, "inbox": inbox, "run": run,
            "other": other}  # fmt: skip


def _kwargs(route: str, o: dict) -> dict:
    values = {"slug": o["workspace"].slug, "link_id": o["link"].pk, "name": o["mapping"].name,
              "job_id": o["inbox"].pk if route.endswith("records/") else o["job"].pk, "run_id": o["run"].pk}  # fmt: skip
    return {name: values[name] for name in re.findall(r"<\w+:(\w+)>", route)}


def operations(o: dict):
    for route, name, ops in ROUTES:
        address = reverse(f"partner_api:{name}", kwargs=_kwargs(route, o))
        for op in ops:
            yield op, address


def test_every_endpoint_refuses_calls_without_a_valid_token(client, objects, alice):
    revoked, revoked_raw = ApiToken.issue("revoked", ALL)
    revoked.revoke()
    expired, expired_raw = ApiToken.issue("expired", ALL, expires_at=timezone.now() - timedelta(seconds=1))
    client.force_login(alice)  # a staff session is no key to the API
    for op, address in operations(objects):
        assert error_code(api(client, op.method, address)) == "token_missing", (op.method, address)
        assert api(client, op.method, address).status_code == 401
        assert error_code(api(client, op.method, address, "mpf_not-a-token")) == "token_invalid"
        assert error_code(api(client, op.method, address, revoked_raw)) == "token_revoked"
        assert error_code(api(client, op.method, address, expired_raw)) == "token_expired"
        basic = api(client, op.method, address, HTTP_AUTHORIZATION="Basic YWxpY2U6eA==")
        assert basic.status_code == 401
    assert Workspace.objects.count() == 2 and CredentialLink.objects.get().state == "open"
    assert ApiCall.objects.filter(token=None, status=401).exists()
    assert ApiCall.objects.filter(token=revoked, error_code="token_revoked").exists()


def test_every_endpoint_asks_for_its_scope(client, objects):
    for scope in ALL:
        _, raw = ApiToken.issue(f"only {scope}", [scope])
        for op, address in operations(objects):
            response = api(client, op.method, address, raw, body={})
            if op.scope == scope:
                assert response.status_code not in (401, 403, 405), (scope, op.method, address, response.content)
            else:
                assert response.status_code == 403 and error_code(response) == "scope_missing", (scope, address)


def test_a_limited_token_gets_404_for_another_workspaces_objects(client, objects):
    token, raw = ApiToken.issue("other only", ALL, workspaces=[objects["other"]])
    for op, address in operations(objects):
        response = api(client, op.method, address, raw, body={})
        if address == reverse("partner_api:workspaces"):
            continue  # the list is of its workspaces; creating one is refused (below)
        assert response.status_code == 404 and error_code(response) == "not_found", (op.method, address)
    listed = api(client, "GET", reverse("partner_api:workspaces"), raw).json()
    assert [w["slug"] for w in listed["results"]] == ["other"]
    created = api(client, "POST", reverse("partner_api:workspaces"), raw, {"name": "New"})
    assert created.status_code == 403 and error_code(created) == "token_limited"
    workspace = objects["workspace"]
    assert workspace.status == Workspace.Status.ACTIVE and not Workspace.objects.filter(name="New").exists()
    assert SyncRun.objects.count() == 1 and not InboxRecord.objects.exists()


def test_every_call_is_in_the_audit_trail(client, objects):
    token, raw = ApiToken.issue("audited", ALL)
    api(client, "GET", reverse("partner_api:workspace", args=["acme"]), raw)
    api(client, "GET", reverse("partner_api:workspace", args=["nope"]), raw)
    calls = list(ApiCall.objects.filter(token=token).order_by("at", "pk").values_list("method", "path", "status"))
    assert calls == [("GET", "/api/v1/workspaces/acme/", 200), ("GET", "/api/v1/workspaces/nope/", 404)]
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_calls_over_the_rate_are_answered_429_with_retry_after(client, objects, settings):
    settings.MPFEED_API_RATE_PER_MINUTE = 3
    _, raw = ApiToken.issue("busy", ["read"])
    _, other = ApiToken.issue("calm", ["read"])
    address = reverse("partner_api:workspaces")
    assert [api(client, "GET", address, raw).status_code for _ in range(3)] == [200, 200, 200]
    refused = api(client, "GET", address, raw)
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert api(client, "GET", address, other).status_code == 200  # per token


def test_errors_are_json_with_a_stable_code(client, objects):
    _, raw = ApiToken.issue("t", ALL)
    unknown = api(client, "GET", "/api/v1/nothing/here/", raw)
    assert unknown.status_code == 404 and error_code(unknown) == "no_such_endpoint"
    wrong = api(client, "DELETE", reverse("partner_api:workspace", args=["acme"]), raw)
    assert wrong.status_code == 405 and error_code(wrong) == "method_not_allowed" and wrong["Allow"] == "GET"
    bad = client.post(reverse("partner_api:workspaces"), "{nope", content_type="application/json",
                      HTTP_AUTHORIZATION=f"Bearer {raw}")  # fmt: skip
    assert bad.status_code == 400 and error_code(bad) == "bad_json"
    invalid = api(client, "POST", reverse("partner_api:workspaces"), raw, {"name": "Acme"})
    assert invalid.status_code == 422 and "name" in invalid.json()["error"]["fields"]
    paged = api(client, "GET", reverse("partner_api:workspaces") + "?page_size=1000", raw)
    assert paged.status_code == 400 and error_code(paged) == "bad_page"


def test_lists_are_paged(client, objects):
    _, raw = ApiToken.issue("t", ["read"])
    first = api(client, "GET", reverse("partner_api:workspaces") + "?page_size=1", raw).json()
    assert first["count"] == 2 and len(first["results"]) == 1 and first["previous"] is None
    assert first["results"][0]["health"]["state"] in ("ok", "new", "attention", "failing", "blocked")
    second = api(client, "GET", first["next"].replace("http://testserver", ""), raw).json()
    assert second["next"] is None and second["results"][0]["slug"] != first["results"][0]["slug"]


# ------------------------------------------------------------------------------------------- credentials


def test_new_credentials_are_tested_and_the_old_kept_until_they_pass(client, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    workspace = make_workspace(sandbox, name="Acme")
    _, raw = ApiToken.issue("t", ["onboard"])
    address = reverse("partner_api:workspace_credentials", args=["acme"])
    wrong_secret = "wrong-SECRET-never-echoed-91x"
    refused = api(client, "PUT", address, raw, {"api_key": "another-key-1234", "api_secret": wrong_secret})
    assert refused.status_code == 422 and error_code(refused) == "credentials_refused"
    workspace.refresh_from_db()
    assert (workspace.api_key, workspace.api_secret) == (SANDBOX_KEY, SANDBOX_SECRET)  # the old ones kept
    assert workspace.status == Workspace.Status.ACTIVE

    sandbox.add_credentials("new-feed-key-5678", "new-SECRET-never-echoed-42y")
    passed = api(
        client, "PUT", address, raw, {"api_key": "new-feed-key-5678", "api_secret": "new-SECRET-never-echoed-42y"}
    )
    assert passed.status_code == 200 and passed.json()["state"] == "in_use"
    assert passed.json()["workspace"]["credentials"]["key_hint"] == "…5678"
    workspace.refresh_from_db()
    assert workspace.api_secret == "new-SECRET-never-echoed-42y" and workspace.credentials_verified_at

    missing = api(client, "PUT", address, raw, {"api_key": "k"})
    assert missing.status_code == 422 and "api_secret" in missing.json()["error"]["fields"]

    for secret in (wrong_secret, "new-SECRET-never-echoed-42y", SANDBOX_SECRET):
        assert secret not in refused.content.decode() + passed.content.decode()
        assert secret not in caplog.text
        assert not ApiCall.objects.filter(path__contains=secret).exists()


def test_credentials_wait_for_staff_when_the_workspace_asks(client, sandbox):
    workspace = make_workspace(sandbox, name="Acme", confirm_new_credentials=True)
    _, raw = ApiToken.issue("t", ["onboard"])
    sandbox.add_credentials("held-feed-key-0001", "held-secret-xyz")
    held = api(client, "PUT", reverse("partner_api:workspace_credentials", args=["acme"]), raw,
               {"api_key": "held-feed-key-0001", "api_secret": "held-secret-xyz"})  # fmt: skip
    assert held.status_code == 202 and held.json()["state"] == "held_for_confirmation"
    workspace.refresh_from_db()
    assert workspace.api_key == SANDBOX_KEY and workspace.pending_api_key == "held-feed-key-0001"


def test_an_unreachable_mparticle_keeps_the_old_credentials(client):
    workspace = make_workspace(None, name="Acme")  # points at a port nothing listens on
    _, raw = ApiToken.issue("t", ["onboard"])
    answer = api(client, "PUT", reverse("partner_api:workspace_credentials", args=["acme"]), raw,
                 {"api_key": "k-000000000000", "api_secret": "s"})  # fmt: skip
    assert answer.status_code == 503 and error_code(answer) == "connection_test_failed" and answer["Retry-After"]
    workspace.refresh_from_db()
    assert workspace.api_key == SANDBOX_KEY


def test_no_response_carries_a_secret(client, objects):
    objects["job"].source_secret = "Bearer source-SECRET-77"
    objects["job"].save()
    _, raw = ApiToken.issue("t", ["read"])
    for op, address in operations(objects):
        if op.method == "GET":
            text = api(client, "GET", address, raw).content.decode()
            assert SANDBOX_SECRET not in text and "source-SECRET-77" not in text, address


# ------------------------------------------------------------------------------------------ the resources


def test_workspace_lifecycle(sandbox, alice):
    client = Client(enforce_csrf_checks=True)  # a token call needs no CSRF token, even beside a session
    client.force_login(alice)
    _, raw = ApiToken.issue("t", ALL)
    created = api(client, "POST", reverse("partner_api:workspaces"), raw,
                  {"name": "Beta Co", "pod": "sandbox", "endpoint_url": f"{sandbox.url}/v2"})  # fmt: skip
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["slug"] == "beta-co" and body["status"] == "awaiting_credentials" and body["health"]["state"]
    paused = api(client, "POST", reverse("partner_api:workspace_pause", args=["beta-co"]), raw).json()
    assert paused["changed"] and paused["workspace"]["status"] == "paused" and "API token t" in paused["workspace"][
        "status_message"]  # fmt: skip
    assert not api(client, "POST", reverse("partner_api:workspace_pause", args=["beta-co"]), raw).json()["changed"]
    resumed = api(client, "POST", reverse("partner_api:workspace_resume", args=["beta-co"]), raw).json()
    assert resumed["changed"] and resumed["workspace"]["status"] == "awaiting_credentials"
    refused = api(client, "POST", reverse("partner_api:workspace_promote", args=["beta-co"]), raw)
    assert refused.status_code == 409 and error_code(refused) == "promotion_refused"
    sandbox.add_credentials("beta-feed-key-0001", "beta-secret")
    keys = {"api_key": "beta-feed-key-0001", "api_secret": "beta-secret"}  # no pod: the workspace's (sandbox)
    assert (
        api(client, "PUT", reverse("partner_api:workspace_credentials", args=["beta-co"]), raw, keys).status_code == 200
    )
    read = api(client, "GET", reverse("partner_api:workspace", args=["beta-co"]), raw).json()
    assert read["status"] == "active" and read["credentials"]["verified_at"] and read["health"]["state"] == "new"


def test_links_are_created_and_revoked(client, objects):
    _, raw = ApiToken.issue("t", ["onboard"])
    made = api(client, "POST", reverse("partner_api:links", args=["acme"]), raw, {"hours": 2})
    assert made.status_code == 201 and "/connect/" in made.json()["url"]
    token = made.json()["url"].rstrip("/").rsplit("/", 1)[1]
    assert CredentialLink.find(token).pk == made.json()["id"]
    revoked = api(client, "POST", reverse("partner_api:link_revoke", args=["acme", made.json()["id"]]), raw)
    assert revoked.json()["state"] == "revoked"


def test_mappings_are_validated_and_loaded_with_the_golden_sample_check(client, objects):
    _, raw = ApiToken.issue("t", ALL)
    bad = api(client, "POST", reverse("partner_api:mapping_validate", args=["acme"]), raw, {"rules": {"x": 1}})
    assert bad.status_code == 200 and not bad.json()["valid"] and bad.json()["errors"]
    doc = {**MAPPING, "samples": [{"name": "s", "record": purchase_rows(1)[0], "expect": {}}]}
    loaded = api(client, "PUT", reverse("partner_api:mapping", args=["acme", "new"]), raw,
                 {"rules": doc, "accept_changes": True})  # fmt: skip
    assert loaded.status_code == 201 and loaded.json()["version"] == 1, loaded.content
    changed = {**doc, "user_attributes": {"plan": "first_name"}}
    check = api(client, "POST", reverse("partner_api:mapping_validate", args=["acme"]), raw,
                {"rules": changed, "name": "new"}).json()  # fmt: skip
    assert check["valid"] and check["sample_changes"] and check["accept_changes"]
    refused = api(client, "PUT", reverse("partner_api:mapping", args=["acme", "new"]), raw, {"rules": changed})
    assert refused.status_code == 409 and error_code(refused) == "samples_changed"
    assert Mapping.objects.get(name="new").version == 1
    accepted = api(client, "PUT", reverse("partner_api:mapping", args=["acme", "new"]), raw,
                   {"rules": changed, "accept_changes": refused.json()["error"]["accept_changes"]})  # fmt: skip
    assert accepted.status_code == 200 and accepted.json()["version"] == 2
    stale = api(client, "PUT", reverse("partner_api:mapping", args=["acme", "new"]), raw,
                {"rules": doc, "version": 1, "accept_changes": True})  # fmt: skip
    assert stale.status_code == 409 and error_code(stale) == "version_conflict"
    invalid = api(client, "PUT", reverse("partner_api:mapping", args=["acme", "new"]), raw, {"rules": {"x": 1}})
    assert invalid.status_code == 422 and error_code(invalid) == "mapping_invalid"


def test_jobs_are_created_changed_and_run(client, objects, sync_q, tmp_path):
    _, raw = ApiToken.issue("t", ALL)
    path = write_csv(tmp_path / "b.csv", purchase_rows(4))
    config = {"path": str(path), "format": "csv"}
    body = {"name": "b", "mapping": "default", "source_kind": "file", "source_config": config}
    made = api(client, "POST", reverse("partner_api:jobs", args=["acme"]), raw, body)
    assert made.status_code == 201, made.content
    job_id = made.json()["id"]
    taken = api(client, "POST", reverse("partner_api:jobs", args=["acme"]), raw, body)
    assert taken.status_code == 422 and "name" in taken.json()["error"]["fields"]
    outside = api(client, "POST", reverse("partner_api:jobs", args=["acme"]), raw,
                  {**body, "name": "c", "source_config": {"path": "/etc/passwd", "format": "csv"}})  # fmt: skip
    assert outside.status_code == 422 and "source_config" in outside.json()["error"]["fields"]
    changed = api(client, "PATCH", reverse("partner_api:job", args=["acme", job_id]), raw, {"schedule_minutes": 30})
    assert changed.status_code == 200 and changed.json()["schedule_minutes"] == 30 and changed.json()["name"] == "b"
    queued = api(client, "POST", reverse("partner_api:job_run", args=["acme", job_id]), raw)
    assert queued.status_code == 202, queued.content
    run = api(client, "GET", reverse("partner_api:run", args=[queued.json()["id"]]), raw).json()
    assert run["status"] == "succeeded" and run["counters"]["records_read"] == 4
    deliveries = api(client, "GET", reverse("partner_api:run_deliveries", args=[run["id"]]), raw).json()
    assert deliveries["count"] >= 1 and deliveries["results"][0]["state"] == "accepted"
    runs = api(client, "GET", reverse("partner_api:runs", args=["acme"]), raw).json()
    assert runs["results"][0]["id"] == run["id"]


def test_records_are_pushed_to_an_inbox_job_only(client, objects):
    _, raw = ApiToken.issue("t", ["sync"])
    address = reverse("partner_api:job_records", args=["acme", objects["inbox"].pk])
    pushed = api(client, "POST", address, raw, [{"id": "x1"}, {"id": "x2"}])
    assert pushed.status_code == 202 and pushed.json()["received"] == 2
    assert InboxRecord.objects.filter(job=objects["inbox"]).count() == 2
    empty = api(client, "POST", address, raw, [])
    assert empty.status_code == 400 and error_code(empty) == "bad_records"
    not_inbox = api(client, "POST", reverse("partner_api:job_records", args=["acme", objects["job"].pk]), raw, [{}])
    assert not_inbox.status_code == 409 and error_code(not_inbox) == "not_an_inbox"


# -------------------------------------------------------------------------------------------------- OpenAPI


def test_the_openapi_description_matches_the_url_map(client):
    served = client.get("/api/v1/openapi.json").json()
    assert served == json.loads(json.dumps(document()))
    described = {(path, method.upper()) for path, item in served["paths"].items() for method in item}
    mapped = set()
    resolver = get_resolver()
    for pattern in resolver.resolve("/api/v1/openapi.json").tried[-1][0].url_patterns:
        assert isinstance(pattern, URLPattern)
        if pattern.name in ("openapi", "not_found", "root"):
            continue
        for method in pattern.callback.operations:
            mapped.add((openapi_path(str(pattern.pattern))[0], method))
    assert described == mapped and len(mapped) >= 20
    for path, item in served["paths"].items():
        for operation in item.values():
            names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert names == set(re.findall(r"{(\w+)}", path)), path
            assert operation["x-scope"] in ALL


# ------------------------------------------------------------------------------------ the README's example


def readme_example() -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return text.split("<!-- api-example -->", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the example needs curl and jq")
@pytest.mark.django_db(transaction=True)
def test_the_readme_example_onboards_a_client_and_runs_its_first_sync(live_server, sandbox, sync_q, caplog):
    """The README's block as a partner's engineer runs it: bash, curl and jq against a live site (its runs worked
    at once, sync_q) and the sandbox. Each answer is printed, with a line between them, to be checked here."""
    caplog.set_level(logging.DEBUG)
    _, token = ApiToken.issue("partner platform", ALL)
    env = {"PATH": os.environ["PATH"], "MPFEED": live_server.url, "TOKEN": token, "SANDBOX": sandbox.url,
           "MP_KEY": SANDBOX_KEY, "MP_SECRET": SANDBOX_SECRET}  # fmt: skip
    script = "set -euo pipefail\n" + readme_example().replace("\ncurl ", "\necho\ncurl ")
    script += '\necho; echo "JOB=$JOB RUN=$RUN"\n'
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout, done.stderr)
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith(("{", "["))]
    workspace, credentials, mapping, pushed, run, deliveries, rejects = answers
    assert workspace["slug"] == "acme-shoes" and credentials["state"] == "in_use"
    assert mapping["version"] == 1 and pushed["received"] == 2
    assert run["status"] == "succeeded", run
    assert run["counters"]["records_read"] == 2 and run["counters"]["events_accepted"] == 2
    assert deliveries["count"] >= 1 and rejects["count"] == 0
    assert sorted(e["data"]["custom_attributes"]["sku"] for e in sandbox.events()) == ["S-1", "S-2"]
    stored = Workspace.objects.get(slug="acme-shoes")
    assert stored.status == Workspace.Status.ACTIVE and stored.credentials_verified_at is not None
    assert SANDBOX_SECRET not in done.stdout and not ApiCall.objects.filter(status__gte=400).exists()
    assert SANDBOX_SECRET not in caplog.text and SANDBOX_SECRET not in done.stderr


# ------------------------------------------------------------------------------- staff: the page, the admin


def test_the_token_page_applies_partner_apis_permissions(client, bob, objects):
    token, _ = ApiToken.issue("t", ["read"])
    pages = [("get", reverse("api_tokens:list"), "view_apitoken"), ("post", reverse("api_tokens:list"), "add_apitoken"),
             ("post", reverse("api_tokens:revoke", args=[token.pk]), "change_apitoken")]  # fmt: skip
    for method, address, _ in pages:
        assert "/admin/login/" in getattr(client, method)(address)["Location"]
    client.force_login(bob)
    for method, address, _ in pages:
        assert getattr(client, method)(address).status_code == 403
    for method, address, needed in pages:
        everything_else = [p for p in ("view_apitoken", "add_apitoken", "change_apitoken") if p != needed]
        client.force_login(make_api_staff(f"no-{needed}", *everything_else))
        assert getattr(client, method)(address).status_code == 403, (method, address)
        client.force_login(make_api_staff(f"{method}-{needed}", needed))
        assert getattr(client, method)(address).status_code in (200, 302), (method, address)
    assert ApiToken.objects.get(pk=token.pk).state == "revoked"


def make_api_staff(username: str, *codenames: str):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="partner_api", codename__in=codenames))
    return user


def test_staff_create_a_token_on_the_page_shown_once(staff, objects):
    answer = staff.post(reverse("api_tokens:list"), {"name": "Platform", "scopes": ["read", "sync"],
                                                     "workspaces": [objects["workspace"].pk]})  # fmt: skip
    assert answer.status_code == 302
    page = staff.get(reverse("api_tokens:list")).content.decode()
    raw = re.search(r'value="(mpf_[^"]+)"', page).group(1)
    token = ApiToken.find(raw)
    assert token.scopes == ["read", "sync"] and list(token.workspaces.all()) == [objects["workspace"]]
    assert raw not in staff.get(reverse("api_tokens:list")).content.decode()  # once
    assert token.token_hash != raw and raw not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert api(Client(), "GET", reverse("partner_api:workspaces"), raw).status_code == 200
    past = staff.post(reverse("api_tokens:list"), {"name": "Old", "scopes": ["read"], "expires_at": "2020-01-01 00:00"})
    assert past.status_code == 200 and "must be in the future" in past.content.decode()


def test_staff_create_and_revoke_tokens_in_the_admin_and_see_the_calls(staff):
    answer = staff.post(reverse("admin:partner_api_apitoken_add"), {"name": "Admin made", "scopes": ["read"]},
                        follow=True)  # fmt: skip
    raw = re.search(r"The token is (mpf_\S+)", answer.content.decode()).group(1)
    token = ApiToken.find(raw)
    assert token is not None and token.scopes == ["read"] and token.created_by.username == "alice"
    api(Client(), "GET", reverse("partner_api:workspaces"), raw)
    calls = staff.get(reverse("admin:partner_api_apicall_changelist")).content.decode()
    assert "/api/v1/workspaces/" in calls
    staff.post(reverse("admin:partner_api_apitoken_changelist"),
               {"action": "revoke", "_selected_action": [token.pk]})  # fmt: skip
    assert error_code(api(Client(), "GET", reverse("partner_api:workspaces"), raw)) == "token_revoked"
    assert raw not in staff.get(reverse("admin:partner_api_apitoken_change", args=[token.pk])).content.decode()
