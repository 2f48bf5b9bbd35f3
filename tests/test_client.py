"""The Events API client against the sandbox over real HTTP: every status of the contract, and how it is read."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import requests

from feeds.mparticle.client import (
    CREDENTIALS,
    TRANSIENT,
    Answer,
    BatchError,
    EventsClient,
    Outcome,
    base_url_for,
    classify,
    parse_errors,
)
from feeds.mparticle.schema import BULK_PATH, HISTORICAL_PATH, MAX_REQUEST_BYTES
from sandbox.server import FaultConfig, Sandbox
from tests.helpers import SANDBOX_KEY, SANDBOX_SECRET, free_port

DAY_MS = 24 * 3600 * 1000


def bulk(client: EventsClient, batches: list[dict], *, historical: bool = False) -> Answer:
    """A bulk request as the engine sends one: a serialized body through post()."""
    return client.post(HISTORICAL_PATH if historical else BULK_PATH, orjson.dumps(batches))


def transient(answer: Answer) -> bool:
    """Worth sending again unchanged (429, 5xx, no answer), as the engine reads an answer."""
    return answer.outcome in TRANSIENT


class RecordingSession(requests.Session):
    """Keeps every request it sends, so a test can read the headers that went over the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False  # never route loopback through a proxy from the environment
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        return super().send(request, **kwargs)


class StrippingSession(RecordingSession):
    """Removes the Authorization header on the way out, as a misconfigured proxy in front of us could."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        request.headers.pop("Authorization", None)
        return super().send(request, **kwargs)


@pytest.fixture
def make_client(sandbox: Sandbox) -> Iterator[Callable[..., EventsClient]]:
    made: list[EventsClient] = []

    def make(
        base_url: str | None = None,
        key: str = SANDBOX_KEY,
        secret: str = SANDBOX_SECRET,
        session: requests.Session | None = None,
        **timeouts: float,
    ) -> EventsClient:
        timeouts.setdefault("connect_timeout", 2.0)
        timeouts.setdefault("read_timeout", 2.0)
        client = EventsClient(
            base_url if base_url is not None else f"{sandbox.url}/v2",
            key,
            secret,
            session=session or RecordingSession(),
            **timeouts,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., EventsClient]) -> EventsClient:
    return make_client()


def make_batch(request_id: str, ts: int | None = None, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"event_name": "Purchase Completed", "custom_event_type": "transaction"}
    if ts is not None:
        data["timestamp_unixtime_ms"] = ts
    batch: dict[str, Any] = {
        "source_request_id": request_id,
        "environment": "development",
        "user_identities": {"customer_id": f"u-{request_id}"},
        "events": [{"event_type": "custom_event", "data": data}],
    }
    batch.update(fields)
    return batch


def assert_no_secret(answer: Answer, *secrets: str) -> None:
    texts = [repr(answer), answer.describe(), answer.excerpt, answer.error]
    texts += [f"{e.code} {e.message}" for e in answer.errors]
    for secret in secrets:
        assert not any(secret in text for text in texts), f"{secret!r} leaked into {answer!r}"


# 202 ------------------------------------------------------------------------------------------------------


def test_it_accepts_one_batch_and_reads_the_rate_limit_percentage(client, sandbox):
    sandbox.configure(rate_limit=10)  # one batch out of a bucket of ten: 10 % used

    answer = client.upload(make_batch("r-1"))

    assert answer.outcome is Outcome.ACCEPTED
    assert answer.status == 202
    assert answer.rate_limit_used == 10
    assert answer.delivered and not transient(answer)
    assert answer.errors == () and answer.retry_after is None and answer.rate_limit_scope is None
    assert answer.latency > 0
    assert answer.describe() == "HTTP 202 (accepted)"
    assert [k.source_request_id for k in sandbox.kept()] == ["r-1"]


def test_it_reads_a_rate_limit_percentage_of_zero_when_unlimited(client, sandbox):
    answer = bulk(client, [make_batch(f"r-{i}") for i in range(100)])

    assert answer.outcome is Outcome.ACCEPTED
    assert answer.rate_limit_used == 0
    assert len(sandbox.kept()) == 100


def test_a_bulk_202_with_errors_is_partial_and_names_each_refused_batch(client, sandbox):
    batches = [
        make_batch("r-0"),
        make_batch("r-1", environment="staging"),
        make_batch("r-2"),
        make_batch("r-3", user_identities={"customerid": "u-3"}),
    ]

    answer = bulk(client, batches)

    assert answer.outcome is Outcome.PARTIAL
    assert answer.status == 202
    assert answer.delivered and not transient(answer)
    assert [e.index for e in answer.errors] == [1, 3]
    assert {e.code for e in answer.errors} == {"BAD_REQUEST"}
    assert answer.errors[0].message.startswith("Path '[1]'")
    assert "environment" in answer.errors[0].message
    assert answer.errors[1].message.startswith("Path '[3]'")
    assert "user_identities.customerid" in answer.errors[1].message
    assert answer.describe().startswith("HTTP 202 (partial): Path '[1]'")
    assert [k.source_request_id for k in sandbox.kept()] == ["r-0", "r-2"]


# 400 ------------------------------------------------------------------------------------------------------


def test_an_invalid_batch_on_events_is_a_bad_request_with_the_servers_messages(client, sandbox):
    batch = make_batch("r-1")
    del batch["events"][0]["data"]["event_name"]

    answer = client.upload(batch)

    assert answer.outcome is Outcome.BAD_REQUEST
    assert answer.status == 400
    assert not transient(answer) and not answer.delivered
    # /events names fields, not batches: the error has no index.
    assert [(e.index, e.code) for e in answer.errors] == [(None, "BAD_REQUEST")]
    assert answer.errors[0].message == "Path 'events[0].data.event_name': is required"
    assert "event_name" in answer.excerpt
    assert sandbox.kept() == []


def test_a_body_that_is_not_json_is_a_bad_request(client, sandbox):
    answer = client.post("/events", b"this is not json")

    assert answer.outcome is Outcome.BAD_REQUEST
    assert answer.status == 400
    assert len(answer.errors) == 1
    assert answer.errors[0].index is None
    assert "not valid UTF-8 JSON" in answer.errors[0].message


# 401 / 403 ------------------------------------------------------------------------------------------------


def test_a_request_without_authorization_is_unauthorized(make_client, sandbox):
    # EventsClient always sends HTTP Basic (even for an empty key, see the next test), so the only honest way
    # to reach the sandbox's 401 over real HTTP is to lose the header after the client built it, the way a
    # proxy could. The client's own code (post and classify) still reads the real answer.
    session = StrippingSession()
    client = make_client(session=session)

    answer = client.upload(make_batch("r-1"))

    assert "Authorization" not in session.sent[0].headers
    assert answer.outcome is Outcome.UNAUTHORIZED
    assert answer.status == 401
    assert answer.outcome in CREDENTIALS
    assert not transient(answer) and not answer.delivered
    assert "Missing Authorization header" in answer.errors[0].message
    assert sandbox.kept() == []


def test_an_empty_key_is_still_sent_and_refused_as_forbidden(make_client, sandbox):
    session = RecordingSession()
    client = make_client(key="", secret="", session=session)

    answer = client.upload(make_batch("r-1"))

    assert session.sent[0].headers["Authorization"] == "Basic " + base64.b64encode(b":").decode()
    assert answer.outcome is Outcome.FORBIDDEN
    assert answer.status == 403


@pytest.mark.parametrize(
    ("key", "secret"),
    [(SANDBOX_KEY, "wrong-secret"), ("unknown-key", SANDBOX_SECRET)],
    ids=["wrong-secret", "unknown-key"],
)
def test_rejected_credentials_are_forbidden(make_client, sandbox, key, secret):
    answer = make_client(key=key, secret=secret).upload(make_batch("r-1"))

    assert answer.outcome is Outcome.FORBIDDEN
    assert answer.status == 403
    assert answer.outcome in CREDENTIALS
    assert not transient(answer) and not answer.delivered
    assert answer.errors[0].message == "Invalid API key or secret"
    assert_no_secret(answer, secret)
    assert sandbox.kept() == []


def test_it_sends_basic_auth_with_key_and_secret(make_client, sandbox):
    session = RecordingSession()
    client = make_client(session=session)

    answer = client.upload(make_batch("r-1"))

    assert answer.outcome is Outcome.ACCEPTED
    scheme, _, token = session.sent[0].headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(token).decode() == f"{SANDBOX_KEY}:{SANDBOX_SECRET}"
    assert session.sent[0].headers["Content-Type"] == "application/json"
    assert sandbox.requests_log()[-1].api_key == SANDBOX_KEY


def test_it_sends_a_non_latin_1_secret_as_utf_8_instead_of_raising(make_client, sandbox):
    secret = "s\u00e9cr\u00e8t-\u20ac-\u79d8\u5bc6"
    sandbox.add_credentials("key-utf8", secret)
    session = RecordingSession()

    answer = make_client(key="key-utf8", secret=secret, session=session).upload(make_batch("r-1"))

    assert answer.outcome is Outcome.ACCEPTED
    token = session.sent[0].headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(token).decode("utf-8") == f"key-utf8:{secret}"
    assert_no_secret(answer, secret)


# 413 ------------------------------------------------------------------------------------------------------


def test_a_body_of_256_kb_is_too_large(client, sandbox):
    answer = client.post("/bulkevents", b" " * MAX_REQUEST_BYTES)

    assert answer.outcome is Outcome.TOO_LARGE
    assert answer.status == 413
    assert not transient(answer) and not answer.delivered
    assert answer.errors[0].code == "REQUEST_TOO_LARGE"


# 429 ------------------------------------------------------------------------------------------------------


def test_it_reads_retry_after_and_scope_from_the_token_bucket(client, sandbox):
    sandbox.configure(rate_limit=2)
    first = bulk(client, [make_batch("r-0"), make_batch("r-1")])

    answer = client.upload(make_batch("r-2"))

    assert first.outcome is Outcome.ACCEPTED and first.rate_limit_used == 100
    assert answer.outcome is Outcome.THROTTLED
    assert answer.status == 429
    assert answer.retry_after == 1.0
    assert answer.rate_limit_scope == "workspace"
    assert transient(answer) and not answer.delivered
    assert len(sandbox.kept()) == 2


def test_it_reads_retry_after_from_an_injected_429(client, sandbox):
    sandbox.configure(faults=FaultConfig(retry_after=7))
    sandbox.queue_faults(["429"])

    answer = client.upload(make_batch("r-1"))

    assert answer.outcome is Outcome.THROTTLED
    assert answer.retry_after == 7.0
    assert answer.rate_limit_scope == "workspace"
    assert transient(answer)
    assert sandbox.kept() == []


def _throttle_by_bucket(sandbox: Sandbox, client: EventsClient) -> Answer:
    sandbox.configure(rate_limit=1, send_retry_after=False)
    assert client.upload(make_batch("r-0")).outcome is Outcome.ACCEPTED
    return client.upload(make_batch("r-1"))


def _throttle_by_fault(sandbox: Sandbox, client: EventsClient) -> Answer:
    sandbox.configure(faults=FaultConfig(retry_after=None))
    sandbox.queue_faults(["429"])
    return client.upload(make_batch("r-1"))


@pytest.mark.parametrize("throttle", [_throttle_by_bucket, _throttle_by_fault], ids=["bucket", "fault"])
def test_a_429_without_retry_after_has_no_retry_after(client, sandbox, throttle):
    answer = throttle(sandbox, client)

    assert answer.outcome is Outcome.THROTTLED
    assert answer.status == 429
    assert answer.retry_after is None
    assert answer.rate_limit_scope == "workspace"
    assert transient(answer)


# 5xx and the network --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(client, sandbox, status):
    sandbox.queue_faults([str(status)])

    answer = client.upload(make_batch("r-1"))

    assert answer.outcome is Outcome.SERVER_ERROR
    assert answer.status == status
    assert transient(answer) and not answer.delivered
    assert answer.describe() == f"HTTP {status} (server_error): Injected server error {status}"
    assert sandbox.kept() == []


def test_a_dropped_connection_is_a_network_error_not_an_exception(client, sandbox):
    sandbox.queue_faults(["drop"])

    answer = client.upload(make_batch("r-1"))

    assert answer.outcome is Outcome.NETWORK_ERROR
    assert answer.status is None
    assert answer.error == "the connection was closed without an answer"
    assert answer.describe() == "network error: the connection was closed without an answer"
    assert transient(answer) and not answer.delivered
    assert sandbox.requests_log()[-1].fault == "drop"
    # The same client carries on once the trouble is over.
    assert client.upload(make_batch("r-1")).outcome is Outcome.ACCEPTED


def test_a_slow_answer_past_the_read_timeout_is_a_network_error(make_client, sandbox):
    client = make_client(read_timeout=0.2)
    sandbox.configure(faults=FaultConfig(slow_seconds=0.8))
    sandbox.queue_faults(["slow"])
    started = time.monotonic()

    answer = client.upload(make_batch("r-1"))

    assert time.monotonic() - started < 0.7  # gave up at the read timeout, did not wait for the answer
    assert answer.outcome is Outcome.NETWORK_ERROR
    assert answer.status is None
    assert answer.error == "the Events API did not answer in time"
    assert transient(answer)
    assert 0.2 <= answer.latency < 0.7


def test_a_refused_connection_is_a_network_error(make_client):
    client = make_client(base_url=f"http://127.0.0.1:{free_port()}/v2")

    answer = client.upload(make_batch("r-1"))

    assert answer.outcome is Outcome.NETWORK_ERROR
    assert answer.status is None
    assert answer.error == "the connection was refused"
    assert transient(answer)


def test_an_unknown_path_is_unexpected(make_client, sandbox):
    answer = make_client(base_url=f"{sandbox.url}/v3").upload(make_batch("r-1"))

    assert answer.outcome is Outcome.UNEXPECTED
    assert answer.status == 404
    assert not transient(answer) and not answer.delivered
    assert "No such endpoint: /v3/events" in answer.excerpt


# Paths and base URLs --------------------------------------------------------------------------------------


def test_it_sends_each_upload_to_its_path_under_the_partner_prefix(make_client, sandbox):
    client = make_client(base_url=f"{sandbox.url}/s2s/v2")
    old = int(time.time() * 1000) - 40 * DAY_MS

    answers = [
        client.upload(make_batch("r-events")),
        bulk(client, [make_batch("r-bulk")]),
        bulk(client, [make_batch("r-historical", ts=old)], historical=True),
    ]

    assert [a.outcome for a in answers] == [Outcome.ACCEPTED] * 3
    assert [(k.path, k.source_request_id) for k in sandbox.kept()] == [
        ("/s2s/v2/events", "r-events"),
        ("/s2s/v2/bulkevents", "r-bulk"),
        ("/s2s/v2/bulkevents/historical", "r-historical"),
    ]


def test_it_sends_historical_uploads_to_the_historical_path(client, sandbox):
    old = int(time.time() * 1000) - 40 * DAY_MS

    answer = bulk(client, [make_batch("r-0", ts=old), make_batch("r-1", ts=old)], historical=True)

    assert answer.outcome is Outcome.ACCEPTED
    assert [k.path for k in sandbox.kept()] == ["/v2/bulkevents/historical"] * 2


@pytest.mark.parametrize(
    ("pod", "url"),
    [
        ("partner", "https://inbound.mparticle.com/s2s/v2"),
        ("us1", "https://s2s.mparticle.com/v2"),
        ("us2", "https://s2s.us2.mparticle.com/v2"),
        ("eu1", "https://s2s.eu1.mparticle.com/v2"),
        ("au1", "https://s2s.au1.mparticle.com/v2"),
    ],
)
def test_base_url_for_gives_each_pods_documented_url(pod, url):
    assert base_url_for(pod) == url


def test_base_url_for_the_sandbox_is_its_custom_url_without_a_trailing_slash():
    assert base_url_for("sandbox", "http://127.0.0.1:8765/v2/") == "http://127.0.0.1:8765/v2"


def test_base_url_for_refuses_an_unknown_pod():
    with pytest.raises(ValueError, match="unknown pod 'us3'"):
        base_url_for("us3")


@pytest.mark.parametrize("custom_url", [None, ""])
def test_base_url_for_refuses_the_sandbox_without_a_url(custom_url):
    with pytest.raises(ValueError, match="sandbox pod needs an endpoint URL"):
        base_url_for("sandbox", custom_url)


# Secrets --------------------------------------------------------------------------------------------------


def test_the_secret_is_not_in_the_clients_repr(client):
    assert SANDBOX_KEY in repr(client)
    assert SANDBOX_SECRET not in repr(client)
    assert SANDBOX_SECRET not in str(client)


def test_the_secret_is_not_in_any_answer(make_client, sandbox):
    client = make_client()
    sandbox.queue_faults(["429", "503", "drop"])
    answers = [
        client.upload(make_batch("r-throttled")),
        client.upload(make_batch("r-error")),
        client.upload(make_batch("r-dropped")),
        client.upload(make_batch("r-1")),
        bulk(client, [make_batch("r-2"), make_batch("r-3", environment="staging")]),
        client.post("/events", b"{"),
        make_client(session=StrippingSession()).upload(make_batch("r-4")),
        make_client(base_url=f"http://127.0.0.1:{free_port()}/v2").upload(make_batch("r-5")),
    ]

    assert [a.outcome for a in answers] == [
        Outcome.THROTTLED,
        Outcome.SERVER_ERROR,
        Outcome.NETWORK_ERROR,
        Outcome.ACCEPTED,
        Outcome.PARTIAL,
        Outcome.BAD_REQUEST,
        Outcome.UNAUTHORIZED,
        Outcome.NETWORK_ERROR,
    ]
    for answer in answers:
        assert_no_secret(answer, SANDBOX_SECRET)


# Reading bodies and headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"{",
        b"[]",
        b"null",
        b"42",
        b'"errors"',
        b'{"errors": null}',
        b'{"errors": "Path \'[1]\': broken"}',
        b'{"errors": {"code": "BAD_REQUEST"}}',
        b'{"errors": [1, "Path \'[0]\'", null, []]}',
        b"[" * 5000 + b"]" * 5000,
        b"<html><body>502 Bad Gateway</body></html>",
    ],
)
def test_parse_errors_returns_nothing_for_junk(body):
    assert parse_errors(body) == ()


def test_parse_errors_reads_index_code_and_message():
    body = orjson.dumps(
        {
            "errors": [
                {"code": "BAD_REQUEST", "message": "Path '[12]': at 'environment': is required"},
                {"code": "BAD_REQUEST", "message": "Path 'events[0].data.event_name': is required"},
                {"message": 7},
            ]
        }
    )

    assert parse_errors(body) == (
        BatchError(index=12, code="BAD_REQUEST", message="Path '[12]': at 'environment': is required"),
        BatchError(index=None, code="BAD_REQUEST", message="Path 'events[0].data.event_name': is required"),
        BatchError(index=None, code="", message="7"),
    )


def test_junk_bodies_on_a_202_still_count_as_accepted():
    answer = classify(202, b"<html>ok</html>", {}, 0.01)

    assert answer.outcome is Outcome.ACCEPTED
    assert answer.errors == ()
    assert answer.excerpt == "<html>ok</html>"


def test_it_reads_retry_after_as_seconds():
    assert classify(429, b"", {"Retry-After": "1.5"}, 0.0).retry_after == 1.5
    assert classify(429, b"", {"Retry-After": " 3 "}, 0.0).retry_after == 3.0
    assert classify(429, b"", {"Retry-After": "-5"}, 0.0).retry_after == 0.0


def test_it_reads_retry_after_as_an_http_date():
    from email.utils import format_datetime

    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= classify(429, b"", {"Retry-After": soon}, 0.0).retry_after <= 30
    # A date already past: go on now.
    assert classify(429, b"", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0).retry_after == 0.0


@pytest.mark.parametrize("value", ["Wed, 41 Oct 2015 07:28:00 GMT", "soon", "nan", "inf", "-inf", "Mon, 1 Jan"])
def test_it_reads_an_unusable_retry_after_as_unknown(value):
    # An engine would sleep(inf) or crash on sleep(nan): unknown falls back to its own backoff.
    assert classify(429, b"", {"Retry-After": value}, 0.0).retry_after is None


@pytest.mark.parametrize("value", ["lots", "", "nan", "inf", "1e400"])
def test_it_reads_an_unusable_rate_limit_percentage_as_unknown(value):
    answer = classify(202, b"", {"X-mp-rate-limit-percentage-used": value}, 0.0)

    assert answer.outcome is Outcome.ACCEPTED
    assert answer.rate_limit_used is None
