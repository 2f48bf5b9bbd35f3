"""Every URL of the site, tried as anonymous, as a user who is not staff, as staff without permissions, as staff
holding every permission but the one needed, and as staff holding exactly that one: the staff pages apply the
admin's rule (a model permission per action), and a URL missing from the table below fails the test."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from feeds.models import CredentialLink, SyncJob, Workspace
from tests.helpers import make_job, make_mapping, make_staff, make_workspace, purchase_rows, run_job, write_csv

pytestmark = pytest.mark.django_db

# name → (the kwargs it needs, the permission a GET needs, the permission a POST needs); None: not allowed.
STAFF_PAGES = {
    "home": ("", "view_workspace", None),
    "workspace_new": ("", "add_workspace", "add_workspace"),
    "workspace": ("slug", "view_workspace", None),
    "link_issue": ("slug", None, "add_credentiallink"),
    "link_revoke": ("slug link_id", "change_credentiallink", "change_credentiallink"),
    "job_run": ("slug job_id", None, "change_syncjob"),
    "promote": ("slug", "change_workspace", "change_workspace"),
    "workspace_pause": ("slug", None, "change_workspace"),
    "workspace_resume": ("slug", None, "change_workspace"),
    "demote": ("slug", "change_workspace", "change_workspace"),
    "workspace_alerts": ("slug", "change_workspace", "change_workspace"),
    "workspace_embed": ("slug", "change_workspace", "change_workspace"),
    "credentials_confirm": ("slug", None, "change_workspace"),
    "credentials_discard": ("slug", None, "change_workspace"),
    "job_new": ("slug", "add_syncjob", "add_syncjob"),
    "job_edit": ("slug job_id", "view_syncjob", "change_syncjob"),
    "job_inbox_token": ("slug inbox_job_id", None, "change_syncjob"),
    "job_preview": ("slug job_id", "view_syncjob", None),
    "mapping_new": ("slug", "add_mapping", "add_mapping"),
    "mapping_preview": ("slug", None, "view_mapping"),
    "mapping_test_record": ("slug", None, "change_mapping"),
    "mapping_edit": ("slug mapping_id", "view_mapping", "change_mapping"),
    "mapping_export": ("slug mapping_id", "view_mapping", None),
    "datasheet": ("slug mapping_id", "view_mapping", None),
    "datasheet_md": ("slug mapping_id", "view_mapping", None),
    "run": ("run_id", "view_syncrun", None),
    "run_status": ("run_id", "view_syncrun", None),
    "run_lists": ("run_id", "view_syncrun", None),
    "run_cancel": ("run_id", None, "change_syncrun"),
    "run_replay": ("run_id", None, "change_delivery"),
    "run_deliveries_csv": ("run_id", "view_delivery", None),
    "run_rejects_csv": ("run_id", "view_rejectedrecord", None),
    "metrics": ("", "view_workspace", None),
    "sent_search": ("", "view_delivery", None),
}
# URLs with a rule of their own, tested where the rule is.
OWN_RULES = {
    "healthz": "public: a load balancer's probe, tells only that the site answers",
    "favicon": "public: the site's icon",
    "health": "public: a probe, tells whether the database, broker and a cluster are alive",
    "inbox": "the job's inbox token (tests/test_jobs.py)",
    "connect": "the one-time link's token (tests/test_connect.py)",
    "connect_page": "the link whose token this browser's session was given (tests/test_connect.py)",
    "connect_embed": "the one-time link's token, in a partner's frame (tests/test_embed.py)",
    "connect_embed_page": "the signed ticket the embedded form was given (tests/test_embed.py)",
}


def url_names(resolver=None, namespace: str = "") -> set[str]:
    names = set()
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace == "admin":  # the admin applies its own permissions (tests/test_admin.py)
                continue
            names |= url_names(pattern, f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace)
        elif isinstance(pattern, URLPattern):
            assert pattern.name, f"every URL needs a name, {pattern.pattern} has none"
            names.add(f"{namespace}{pattern.name}")
    return names


# The partner API answers its token only, never a session (tests/test_partner_api.py tries every endpoint).
API_RULE = "a partner API token with the operation's scope (tests/test_partner_api.py)"


def test_every_url_is_in_the_table():
    from partner_api.staff_urls import urlpatterns as token_pages
    from partner_api.urls import urlpatterns as api_urls

    # The API tokens' staff page applies partner_api's permissions (tests/test_partner_api.py).
    api = {f"partner_api:{p.name}" for p in api_urls} | {f"api_tokens:{p.name}" for p in token_pages}
    assert url_names() == {f"feeds:{n}" for n in (*STAFF_PAGES, *OWN_RULES)} | api


def test_each_view_declares_the_permissions_of_the_table():
    for name, (_, read, write) in STAFF_PAGES.items():
        if name == "metrics":
            continue
        view = get_resolver().resolve(reverse(f"feeds:{name}", kwargs=_kwargs(name, _objects_stub()))).func
        assert view.permissions == {"read": read, "write": write}, name


def _objects_stub():
    return {"slug": "x", "link_id": 1, "job_id": 1, "inbox_job_id": 1, "mapping_id": 1, "run_id": 1}


def _kwargs(name: str, objects: dict) -> dict:
    kwargs = {}
    for key in STAFF_PAGES[name][0].split():
        kwargs["job_id" if key == "inbox_job_id" else key] = objects[key]
    return kwargs


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
    return {
        "slug": workspace.slug,
        "link_id": link.pk,
        "job_id": job.pk,
        "inbox_job_id": inbox.pk,
        "mapping_id": mapping.pk,
        "run_id": run.pk,
    }


def requests(objects):
    for name, (_, read, write) in STAFF_PAGES.items():
        address = reverse(f"feeds:{name}", kwargs=_kwargs(name, objects))
        yield name, "get", address, read
        yield name, "post", address, write


def call(client, method: str, address: str):
    if method == "post" and address.endswith(("/preview", "/test-record")):  # JSON endpoints
        return client.post(address, "{}", content_type="application/json")
    return getattr(client, method)(address)


def test_anonymous_users_are_sent_to_the_login_page(client, objects):
    for name, method, address, _ in requests(objects):
        response = call(client, method, address)
        if name == "metrics":
            assert response.status_code == (401 if method == "get" else 405), (method, address)
        else:
            assert response.status_code == 302 and "/admin/login/" in response["Location"], (method, address)


def test_users_who_are_not_staff_are_refused_even_with_permissions(client, django_user_model, objects):
    user = django_user_model.objects.create_user("nina")
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="feeds"))
    client.force_login(user)
    for name, method, address, _ in requests(objects):
        # /metrics answers the method first: it is also called by scrapers, which hold no session.
        expected = 405 if (name, method) == ("metrics", "post") else 403
        assert call(client, method, address).status_code == expected, (method, address)


def test_staff_without_permissions_are_refused_everything(client, objects):
    client.force_login(make_staff("sam", "none"))
    for _, method, address, needed in requests(objects):
        assert call(client, method, address).status_code == (403 if needed else 405), (method, address)
    assert CredentialLink.objects.count() == 1 and Workspace.objects.get().environment == "development"


def test_staff_with_every_other_permission_are_refused(objects):
    everything = set(Permission.objects.filter(content_type__app_label="feeds").values_list("codename", flat=True))
    for name, method, address, needed in requests(objects):
        if not needed:
            continue
        client = Client()
        client.force_login(make_staff(f"s{len(name)}{method}{name}"[:150], *(everything - {needed})))
        assert call(client, method, address).status_code == 403, (method, address, needed)


def test_staff_with_the_permission_get_through(objects):
    for name, method, address, needed in requests(objects):
        if not needed:
            continue
        client = Client()
        client.force_login(make_staff(f"{method}-{name}", needed))
        response = call(client, method, address)
        # GET shows the page; POST (with no data) acts and redirects, or shows its form with the errors.
        expected = {200} if method == "get" else {200, 302}
        assert response.status_code in expected, (method, address, response.status_code)


def test_pages_offer_only_the_actions_the_user_may_take(client, objects):
    client.force_login(make_staff("viewer", "view_workspace", "view_syncjob", "view_mapping", "view_syncrun"))
    workspace = client.get(reverse("feeds:workspace", args=[objects["slug"]])).content.decode()
    for action in ("Create a credential link", "Revoke", "Run sync now", "New job", "New mapping", "Promote"):
        assert action not in workspace, action
    assert "New workspace" not in client.get(reverse("feeds:home")).content.decode()
    job = client.get(reverse("feeds:job_edit", args=[objects["slug"], objects["job_id"]])).content.decode()
    assert "Save the job" not in job and "Run sync now" not in job and "not change it" in job
    mapping = client.get(reverse("feeds:mapping_edit", args=[objects["slug"], objects["mapping_id"]])).content
    assert b"Save mapping" not in mapping and b"not change it" in mapping

    client.force_login(make_staff("operator"))
    workspace = client.get(reverse("feeds:workspace", args=[objects["slug"]])).content.decode()
    for action in ("Create a credential link", "Revoke", "Run sync now", "New job", "New mapping", "Promote"):
        assert action in workspace, action


INLINE = [
    (re.compile(r"<[^>]+\sstyle="), "a style attribute"),
    (re.compile(r"<[^>]+\son[a-z]+="), "an event handler attribute"),
    (re.compile(r"<script(?![^>]*\ssrc=)(?![^>]*type=\"application/json\")[^>]*>"), "an inline script"),
    (re.compile(r"<style"), "a style element"),
    (re.compile(r"javascript:"), "a javascript: URL"),
]


def test_no_page_has_inline_script_or_style_which_the_policy_would_block(client, objects, alice):
    from django.contrib import admin

    client.force_login(alice)
    addresses = [
        reverse(f"feeds:{name}", kwargs=_kwargs(name, objects))
        for name, (_, read, _w) in STAFF_PAGES.items()
        if read and name != "metrics"
    ]
    for model in admin.site._registry:
        opts = model._meta
        addresses.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        first = model.objects.first()
        if first is not None and opts.app_label == "feeds":
            addresses.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[first.pk]))
    addresses += [reverse("admin:index"), reverse("api_tokens:list")]
    for address in addresses:
        response = client.get(address)
        assert response.status_code == 200, address
        if not response["Content-Type"].startswith("text/html"):
            continue
        body = response.content.decode()
        for pattern, what in INLINE:
            found = pattern.search(body)
            assert found is None, f"{address} has {what}: {found.group(0)[:120] if found else ''}"
        assert "'self'" in response["Content-Security-Policy"]


def test_sections_of_other_models_need_their_own_view_permission(client, objects):
    client.force_login(make_staff("wendy", "view_workspace", "view_syncrun"))
    page = client.get(reverse("feeds:workspace", args=[objects["slug"]])).content.decode()
    assert "Needs the permission to view mappings" in page and "Needs the permission to view sync jobs" in page
    assert "/mappings/" not in page and "/jobs/" not in page and "Tests tried" not in page
    run = client.get(reverse("feeds:run", args=[objects["run_id"]])).content.decode()
    assert "Seeing deliveries needs the permission" in run and "Seeing rejected records" in run
    assert "data-delivery=" not in run


def test_the_editors_preview_of_a_job_needs_the_permission_to_view_jobs(client, objects):
    import json

    client.force_login(make_staff("mary", "view_mapping"))
    body = json.dumps({"document": {"identities": {"customer_id": "id"}}, "job": objects["job_id"]})
    address = reverse("feeds:mapping_preview", args=[objects["slug"]])
    assert client.post(address, body, content_type="application/json").status_code == 403
    client.force_login(make_staff("mark", "view_mapping", "view_syncjob"))
    assert client.post(address, body, content_type="application/json").status_code == 200
    for bad in ("1e400", "²", '"x"', "true", "-1"):
        malformed = f'{{"document": {{"identities": {{"customer_id": "id"}}}}, "job": {bad}}}'
        assert client.post(address, malformed, content_type="application/json").status_code == 400, bad


def test_a_method_other_than_get_and_post_never_acts(client, objects):
    client.force_login(make_staff("olga"))
    for method in ("options", "put", "delete", "patch", "trace"):
        response = getattr(client, method)(reverse("feeds:promote", args=[objects["slug"]]))
        assert response.status_code == 405, method
    from feeds.models import Workspace

    assert Workspace.objects.get().environment == "development"


def test_staff_who_may_issue_links_but_not_see_the_workspace_get_the_link_once(client, objects):
    client.force_login(make_staff("ivan", "add_credentiallink"))
    response = client.post(reverse("feeds:link_issue", args=[objects["slug"]]))
    assert response.status_code == 200 and "/connect/" in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert not any(key.startswith("new-link") for key, _ in client.session.items())
