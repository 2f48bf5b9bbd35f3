"""Limits on what one address or one account may try: logins, credential-link tests; pushes made idempotent by
their key; malformed ids answered 400; error pages without connection strings."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from django.views.debug import ExceptionReporter

from feeds import sweeper
from feeds.models import AddressAttempt, CredentialLink, InboxPush, InboxRecord, SyncJob
from feeds.security import client_ip
from tests.helpers import SANDBOX_KEY, SANDBOX_SECRET, make_mapping, make_staff, make_workspace

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-enough-pass-phrase-7"  # noqa: S105


# ---------------------------------------------------------------------------------------------------- logins


@pytest.fixture
def staff_user(settings, django_user_model):
    settings.AXES_FAILURE_LIMIT = 3
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, for the test only
    user = make_staff("otto")
    user.set_password(PASSWORD)
    user.save()
    return user


def login(client, username, password, address="203.0.113.7", **headers):
    return client.post(
        reverse("admin:login"), {"username": username, "password": password}, REMOTE_ADDR=address, headers=headers
    )


def test_an_account_is_locked_after_failures_from_any_addresses(staff_user):
    client = Client()
    for i in range(2):
        assert login(client, "otto", "wrong", address=f"198.51.100.{i}").status_code == 200  # the form again
    assert login(client, "otto", "wrong", address="198.51.100.2").status_code == 429  # the limit reached
    locked = login(client, "otto", PASSWORD, address="192.0.2.99")  # the right password, a new address
    assert locked.status_code == 429 and "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_an_address_is_locked_after_failures_on_any_accounts(staff_user, django_user_model):
    client = Client()
    for name in ("alice", "bob", "carol"):
        login(client, name, "wrong", address="203.0.113.50")
    assert login(client, "otto", PASSWORD, address="203.0.113.50").status_code == 429
    # Another address may still log in to that account.
    other = Client()
    assert login(other, "otto", PASSWORD, address="203.0.113.51").status_code == 302


def test_a_success_before_the_limit_starts_the_count_again(staff_user):
    client = Client()
    for _ in range(2):
        login(client, "otto", "wrong")
    assert login(client, "otto", PASSWORD).status_code == 302
    client.logout()
    for _ in range(2):
        login(client, "otto", "wrong")
    assert login(client, "otto", PASSWORD).status_code == 302


def test_behind_the_proxy_the_address_is_the_one_the_proxy_saw(settings):
    settings.MPFEED_PROXY_COUNT = 1
    factory = RequestFactory()
    # The client may write anything to the left of what the proxy appended: only the last entry counts.
    settings.MPFEED_TRUSTED_PROXIES = ["10.0.0.2"]
    request = factory.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.8")
    assert client_ip(request) == "198.51.100.8"
    # Straight to the server, not through the proxy: the header is the client's word, ignored.
    direct = factory.get("/", REMOTE_ADDR="203.0.113.66", HTTP_X_FORWARDED_FOR="198.51.100.8")
    assert client_ip(direct) == "203.0.113.66"
    settings.MPFEED_PROXY_COUNT = 0
    assert client_ip(request) == "10.0.0.2"  # without a proxy, the header is ignored
    assert client_ip(factory.get("/", REMOTE_ADDR="not an address")) is None


# ------------------------------------------------------------------------------------ credential-link tests


def test_link_tests_are_limited_per_address_whatever_the_link(client, sandbox, settings):
    settings.MPFEED_LINK_TESTS_PER_ADDRESS = 3
    tokens = [CredentialLink.issue(make_workspace(sandbox, name=f"W{i}"))[1] for i in range(4)]
    data = {"api_key": SANDBOX_KEY, "api_secret": "wrong-secret-1"}
    for token in tokens[:3]:
        response = client.post(reverse("feeds:connect", args=[token]), data, REMOTE_ADDR="203.0.113.9")
        assert response.status_code == 200
    refused = client.post(reverse("feeds:connect", args=[tokens[3]]), data, REMOTE_ADDR="203.0.113.9")
    assert refused.status_code == 429 and "too many connection tests from your network" in refused.content.decode()
    assert len(sandbox.requests_log()) == 3
    assert CredentialLink.objects.get(workspace__name="W3").attempts == 0  # the link itself was not used up
    # Another address still may.
    other = client.post(reverse("feeds:connect", args=[tokens[3]]), data, REMOTE_ADDR="203.0.113.10")
    assert other.status_code == 200 and len(sandbox.requests_log()) == 4


def test_an_address_is_counted_only_for_tests_that_reached_mparticle(client, sandbox, settings):
    settings.MPFEED_LINK_TESTS_PER_ADDRESS = 1
    _, token = CredentialLink.issue(make_workspace(sandbox, name="W"))
    data = {"api_key": SANDBOX_KEY, "api_secret": "wrong-secret-1"}
    sandbox.queue_faults(["503", "429"])
    right = {"api_key": SANDBOX_KEY, "api_secret": SANDBOX_SECRET}
    for _ in range(2):  # mParticle busy: these say nothing of the credentials, and are not counted
        busy = client.post(reverse("feeds:connect", args=[token]), right, REMOTE_ADDR="203.0.113.9")
        assert busy.status_code == 200 and "busy" in busy.content.decode()
    assert (
        client.post(reverse("feeds:connect", args=[token]), {"api_key": ""}, REMOTE_ADDR="203.0.113.9").status_code
        == 200
    )
    assert AddressAttempt.objects.get(address="203.0.113.9").count == 0
    judged = client.post(reverse("feeds:connect", args=[token]), data, REMOTE_ADDR="203.0.113.9")
    assert judged.status_code == 200 and AddressAttempt.objects.get(address="203.0.113.9").count == 1
    refused = client.post(reverse("feeds:connect", args=[token]), data, REMOTE_ADDR="203.0.113.9")
    assert refused.status_code == 429
    assert CredentialLink.objects.get().attempts == 1  # the link too counted the judged test only


def test_the_address_counts_start_again_each_window(monkeypatch):
    now = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: now)
    assert all(AddressAttempt.allow("t", "192.0.2.1", 2, 60) for _ in range(2))
    assert not AddressAttempt.allow("t", "192.0.2.1", 2, 60)
    monkeypatch.setattr(timezone, "now", lambda: now + timedelta(seconds=61))
    assert AddressAttempt.allow("t", "192.0.2.1", 2, 60)


# ------------------------------------------------------------------------------------------------- pushes


@pytest.fixture
def inbox(sandbox):
    workspace = make_workspace(sandbox)
    job = SyncJob.objects.create(
        workspace=workspace, name="pushes", mapping=make_mapping(workspace), source_kind=SyncJob.SourceKind.INBOX
    )
    return job, job.new_inbox_token()


def push(client, job, token, body: bytes, key: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} | ({"Idempotency-Key": key} if key is not None else {})
    return client.post(f"/inbox/{job.inbox_id}/", body, content_type="application/x-ndjson", headers=headers)


def test_a_push_repeated_with_its_idempotency_key_is_stored_once(client, inbox):
    job, token = inbox
    body = b'{"id": "1"}\n{"id": "2"}\n'
    first = push(client, job, token, body, key="export-2026-12-01T10:00")
    assert first.status_code == 202 and first.json()["replayed"] is False
    again = push(client, job, token, body, key="export-2026-12-01T10:00")  # a retry after a lost answer
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert {k: again.json()[k] for k in ("received", "first_id", "last_id")} == {
        k: first.json()[k] for k in ("received", "first_id", "last_id")
    }
    assert InboxRecord.objects.filter(job=job).count() == 2
    # The same key with another body is a mistake of the sender's: refused, nothing stored.
    other = push(client, job, token, b'{"id": "3"}\n', key="export-2026-12-01T10:00")
    assert other.status_code == 422 and InboxRecord.objects.filter(job=job).count() == 2
    # A new key is a new push; no key at all keeps the old behaviour (stored each time).
    assert push(client, job, token, b'{"id": "3"}\n', key="export-2").status_code == 202
    assert push(client, job, token, body).status_code == 202
    assert push(client, job, token, body).status_code == 202
    assert InboxRecord.objects.filter(job=job).count() == 7


def test_keys_are_per_job_and_forgotten_after_their_time(client, inbox, sandbox, settings):
    job, token = inbox
    other = SyncJob.objects.create(
        workspace=job.workspace, name="other", mapping=job.mapping, source_kind=SyncJob.SourceKind.INBOX
    )
    other_token = other.new_inbox_token()
    assert push(client, job, token, b'{"id": "1"}', key="k").status_code == 202
    assert push(client, other, other_token, b'{"id": "2"}', key="k").json()["replayed"] is False
    settings.MPFEED_IDEMPOTENCY_HOURS = 1
    assert sweeper.forget_old_push_keys(timezone.now() + timedelta(hours=2)) == 2
    assert not InboxPush.objects.exists()


@pytest.mark.parametrize("key", ["x" * 256, "caf\u00e9", "a\u0007b"])
def test_a_malformed_idempotency_key_is_refused(client, inbox, key):
    job, token = inbox
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    response = client.post(f"/inbox/{job.inbox_id}/", b'{"id": "1"}', content_type="application/json", headers=headers)
    assert response.status_code == 400 and not InboxRecord.objects.exists()


# ------------------------------------------------------------------------------------------- malformed ids


@pytest.mark.parametrize("value", ["²", "١٢", "99999999999999999999999", "-1", "x", ""])
def test_malformed_ids_in_forms_are_a_400_or_a_form_error_never_a_500(client, sandbox, value):
    workspace = make_workspace(sandbox)
    make_mapping(workspace)
    client.force_login(make_staff("otto"))
    response = client.post(
        reverse("feeds:job_new", args=[workspace.slug]),
        {"name": "j", "mapping": value, "endpoint_mode": "events", "source_kind": "file",
         "source_config": '{"path": "a.csv"}'},
    )  # fmt: skip
    assert response.status_code == 200 and response.context["form"].errors["mapping"]
    admin = client.get(f"/admin/feeds/workspace/{value or 'x'}/change/")
    assert admin.status_code in (302, 404)


# ----------------------------------------------------------------------------------------------- error pages


# Built by joining: the page shows the source lines around the error, and these must not be found there.
PASSWORDS = ["crm" + "-pass-31x", "redis" + "-pass-58q", "db" + "-pass-77k", "r" + "-pass-9", "local-var" + "-pass-3"]


def test_error_pages_show_no_connection_string(settings):
    # (No local variable holds a bare password: the page lists them, as Django does unless told otherwise.)
    settings.MPFEED_SOURCE_DATABASES = {"crm": f"postgres://reader:{PASSWORDS[0]}@db.internal/crm"}
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": f"redis://:{PASSWORDS[1]}@cache.internal:6379/0"}
    request = RequestFactory().get(
        "/x",
        DATABASE_URL=f"postgres://mpfeed:{PASSWORDS[2]}@db.internal/mpfeed",
        REDIS_URL=f"redis://:{PASSWORDS[3]}@r/0",
    )
    # Local variables the page lists: a URL, a driver's connection parameters, a libpq "key=value" string.
    url = f"postgres://mpfeed:{PASSWORDS[4]}@db.internal/x"  # noqa: F841
    conn_params = {"host": "db.internal", "user": "mpfeed", "password": PASSWORDS[4]}  # noqa: F841
    dsn = f"host=db.internal user=mpfeed password={PASSWORDS[4]} dbname=x"  # noqa: F841
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        html = ExceptionReporter(request, *sys.exc_info()).get_traceback_html()
    for secret in PASSWORDS:
        assert secret not in html, secret
    assert "db.internal" in html  # the page is still useful: only the passwords are gone


def test_proxy_headers_from_anyone_but_the_proxy_are_dropped(client, settings):
    from feeds.security import TrustedProxyMiddleware

    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.MPFEED_TRUSTED_PROXIES = ["10.0.0.2"]
    seen = {}

    def view(request):
        seen.update(secure=request.is_secure(), forwarded=request.META.get("HTTP_X_FORWARDED_FOR"))
        return None

    middleware = TrustedProxyMiddleware(view)
    factory = RequestFactory()
    middleware(
        factory.get("/", REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_PROTO="https", HTTP_X_FORWARDED_FOR="1.1.1.1")
    )
    assert seen == {"secure": False, "forwarded": None}
    middleware(factory.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_PROTO="https", HTTP_X_FORWARDED_FOR="1.1.1.1"))
    assert seen == {"secure": True, "forwarded": "1.1.1.1"}
