"""The fake Events API, checked over real HTTP on loopback against the contract's ten points."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import requests

from feeds.mparticle.schema import HISTORICAL_MIN_AGE_MS, MAX_REQUEST_BYTES, MAX_USER_ATTRIBUTE_LIST_ENTRIES
from sandbox.cli import build_arg_parser, sandbox_from_args
from sandbox.server import (
    HISTORICAL_NO_EVENTS,
    HISTORICAL_NO_TIMESTAMP,
    HISTORICAL_TOO_NEW,
    FaultConfig,
    KeptBatch,
    LoggedRequest,
    Reject,
    Sandbox,
)

KEY, SECRET = "key-1", "secret-1"
AUTH = (KEY, SECRET)
TIMEOUT = 5
NOW_MS = 1_800_000_000_000
OLD_MS = NOW_MS - HISTORICAL_MIN_AGE_MS - 60_000
API_PATHS = [
    "/v2/events",
    "/v2/bulkevents",
    "/v2/bulkevents/historical",
    "/s2s/v2/events",
    "/s2s/v2/bulkevents",
    "/s2s/v2/bulkevents/historical",
]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    started: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        kwargs.setdefault("now_ms", lambda: NOW_MS)
        sandbox = Sandbox({KEY: SECRET}, **kwargs)
        sandbox.start("127.0.0.1", 0)
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # never route loopback through a proxy from the environment
        yield session


def make_event(name: str = "Purchase Completed", ts: object = OLD_MS, **attributes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"event_name": name, "custom_event_type": "transaction"}
    if ts is not None:
        data["timestamp_unixtime_ms"] = ts
    if attributes:
        data["custom_attributes"] = attributes
    return {"event_type": "custom_event", "data": data}


def make_batch(request_id: str | None = None, events: list[Any] | None = None, **fields: Any) -> dict[str, Any]:
    batch: dict[str, Any] = {"environment": "development", "user_identities": {"customer_id": "u-1"}}
    if request_id is not None:
        batch["source_request_id"] = request_id
    batch["events"] = [make_event()] if events is None else events
    batch.update(fields)
    return batch


def post(
    http: requests.Session, sandbox: Sandbox, path: str, body: Any, auth: Any = AUTH, **kwargs: Any
) -> requests.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return http.post(sandbox.url + path, data=data, auth=auth, headers=headers, timeout=TIMEOUT, **kwargs)


def error_messages(response: requests.Response) -> list[str]:
    return [error["message"] for error in response.json()["errors"]]


def raw_exchange(sandbox: Sandbox, data: bytes) -> bytes:
    """Send bytes as they are and read until the server closes, for requests `requests` cannot make."""
    url = urlsplit(sandbox.url)
    assert url.port is not None  # the sandbox's URL names its port
    with socket.create_connection((url.hostname, url.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # nothing more is coming, even if the request said so
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


# 1. Routes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", API_PATHS)
def test_it_accepts_the_three_paths_under_both_prefixes(http, sandbox, path):
    body = make_batch("r-1") if path.endswith("/events") else [make_batch("r-1")]
    response = post(http, sandbox, path, body)
    assert response.status_code == 202
    assert response.content == b""
    assert [(k.api_key, k.path, k.source_request_id) for k in sandbox.kept()] == [(KEY, path, "r-1")]


@pytest.mark.parametrize("path", ["/", "/v1/events", "/v2/events/extra", "/s2s/v2/bulk", "/v2/historical"])
def test_other_paths_are_404(http, sandbox, path):
    response = post(http, sandbox, path, make_batch())
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "NOT_FOUND"
    assert sandbox.kept() == []


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_other_methods_on_api_paths_are_405(http, sandbox, method):
    response = http.request(method, sandbox.url + "/v2/bulkevents", auth=AUTH, timeout=TIMEOUT)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


# 2. Auth -----------------------------------------------------------------------------------------------------


def test_no_authorization_header_is_401(http, sandbox):
    response = post(http, sandbox, "/v2/events", make_batch(), auth=None)
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert sandbox.kept() == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + base64.b64encode(b"key-1:secret-1").decode(),  # not Basic
        "Basic %%%not-base64%%%",
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
        basic("key-1"),  # no colon
        basic("key-2:secret-1"),  # unknown key
        basic("key-1:secret-2"),  # wrong secret
        basic(":"),
    ],
)
def test_rejected_credentials_are_403(http, sandbox, authorization):
    response = post(http, sandbox, "/v2/events", make_batch(), auth=None, headers={"Authorization": authorization})
    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "FORBIDDEN"
    assert sandbox.kept() == []
    assert sandbox.requests_log()[-1].status == 403


def test_basic_scheme_is_case_insensitive(http, sandbox):
    authorization = "basic " + base64.b64encode(b"key-1:secret-1").decode()
    response = post(http, sandbox, "/v2/events", make_batch(), auth=None, headers={"Authorization": authorization})
    assert response.status_code == 202


def test_route_comes_before_auth_and_auth_before_everything_else(http, make_sandbox):
    sandbox = make_sandbox(faults=FaultConfig(drop_rate=1.0))
    assert post(http, sandbox, "/v2/nowhere", b"{", auth=None).status_code == 404
    assert post(http, sandbox, "/v2/events", b"x" * MAX_REQUEST_BYTES, auth=None).status_code == 401
    assert post(http, sandbox, "/v2/events", b"not json", auth=("key-1", "nope")).status_code == 403
    # Size comes before the fault draw too: even with every request dropped, a big body gets its 413.
    assert post(http, sandbox, "/v2/events", b"x" * MAX_REQUEST_BYTES).status_code == 413


# 3. Size, JSON and shape -------------------------------------------------------------------------------------


def padded(body: Any, size: int) -> bytes:
    """Valid JSON of exactly `size` bytes: trailing whitespace is allowed after a JSON value."""
    data = orjson.dumps(body)
    assert len(data) <= size
    return data + b" " * (size - len(data))


def test_body_of_256_kb_is_413_and_just_below_is_accepted(http, sandbox):
    too_big = post(http, sandbox, "/v2/bulkevents", padded([make_batch("big")], MAX_REQUEST_BYTES))
    assert too_big.status_code == 413
    assert too_big.json()["errors"][0]["code"] == "REQUEST_TOO_LARGE"
    assert sandbox.kept() == []

    # The same keep-alive session carries on after the 413.
    fits = post(http, sandbox, "/v2/bulkevents", padded([make_batch("fits")], MAX_REQUEST_BYTES - 1))
    assert fits.status_code == 202
    assert [k.source_request_id for k in sandbox.kept()] == ["fits"]


def test_missing_content_length_is_411(sandbox):
    request = f"POST /v2/events HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('key-1:secret-1')}\r\n\r\n"
    answer = raw_exchange(sandbox, request.encode())
    assert answer.startswith(b"HTTP/1.1 411 ")


def test_unreadable_content_length_is_400(sandbox):
    request = (
        f"POST /v2/events HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('key-1:secret-1')}\r\n"
        "Content-Length: lots\r\n\r\n"
    )
    answer = raw_exchange(sandbox, request.encode())
    assert answer.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("body", [b"", b"{", b"[{]", b"not json", b'{"environment": "\xff"}'])
def test_invalid_json_or_utf8_is_400(http, sandbox, body):
    response = post(http, sandbox, "/v2/events", body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "BAD_REQUEST"
    assert sandbox.kept() == []


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/v2/events", [make_batch()], "one batch object"),
        ("/v2/events", "a string", "one batch object"),
        ("/v2/bulkevents", make_batch(), "array of batches"),
        ("/v2/bulkevents", [], "1 to 100 batches, got 0"),
        ("/v2/bulkevents", [make_batch() for _ in range(101)], "1 to 100 batches, got 101"),
        ("/v2/bulkevents/historical", [make_batch(), 5], "Path '[1]': batch must be an object"),
        ("/s2s/v2/bulkevents", [make_batch(), make_batch(), None], "Path '[2]'"),
    ],
)
def test_wrong_shapes_are_400(http, sandbox, path, body, fragment):
    response = post(http, sandbox, path, body)
    assert response.status_code == 400
    assert fragment in error_messages(response)[0]
    assert sandbox.kept() == []


def test_a_bulk_of_100_batches_is_accepted(http, sandbox):
    response = post(http, sandbox, "/v2/bulkevents", [make_batch(f"r-{i}") for i in range(100)])
    assert response.status_code == 202
    assert len(sandbox.kept()) == 100


# 4. Per-batch validation -------------------------------------------------------------------------------------


def commerce(**data: Any) -> dict[str, Any]:
    return {"event_type": "commerce_event", "data": data}


INVALID_BATCHES = [
    ({"environment": None}, "Path 'environment'"),
    ({"environment": "staging"}, "Path 'environment': value must be production or development"),
    ({"user_identities": {"customerid": "u-1"}}, "Path 'user_identities.customerid': is not a known identity"),
    ({"user_identities": {"email": 5}}, "Path 'user_identities.email': value must be a string"),
    ({"user_identities": ["email"]}, "Path 'user_identities': value must be an object"),
    ({"user_attributes": {"prefs": {"a": 1}}}, "Path 'user_attributes.prefs': value must be a scalar or a list"),
    ({"user_attributes": {"tags": ["a", 1]}}, "Path 'user_attributes.tags'"),
    (
        {"user_attributes": {"tags": ["x"] * (MAX_USER_ATTRIBUTE_LIST_ENTRIES + 1)}},
        f"list has {MAX_USER_ATTRIBUTE_LIST_ENTRIES + 1} entries",
    ),
    ({"deleted_user_attributes": "old"}, "Path 'deleted_user_attributes': value must be a list of strings"),
    ({"deleted_user_attributes": ["old", 3]}, "Path 'deleted_user_attributes'"),
    ({"mpid": "123"}, "Path 'mpid': value must be an integer"),
    ({"mpid": True}, "Path 'mpid': value must be an integer"),
    ({"events": {"event_type": "custom_event"}}, "Path 'events': value must be an array"),
    ({"events": ["click"]}, "Path 'events[0]': value must be an object"),
    ({"events": [{"data": {}}]}, "Path 'events[0].event_type': is required"),
    ({"events": [{"event_type": "clicked", "data": {}}]}, "Path 'events[0].event_type': value is not a known"),
    ({"events": [{"event_type": "session_start"}]}, "Path 'events[0].data': is required"),
    ({"events": [{"event_type": "session_start", "data": []}]}, "Path 'events[0].data': value must be an object"),
    (
        {"events": [{"event_type": "custom_event", "data": {"custom_event_type": "other"}}]},
        "Path 'events[0].data.event_name': is required",
    ),
    (
        {"events": [{"event_type": "custom_event", "data": {"event_name": " ", "custom_event_type": "other"}}]},
        "Path 'events[0].data.event_name': value must be a non-empty string",
    ),
    (
        {"events": [{"event_type": "custom_event", "data": {"event_name": "A"}}]},
        "Path 'events[0].data.custom_event_type': is required",
    ),
    (
        {"events": [{"event_type": "custom_event", "data": {"event_name": "A", "custom_event_type": "purchase"}}]},
        "Path 'events[0].data.custom_event_type': value is not a custom event type",
    ),
    ({"events": [{"event_type": "screen_view", "data": {}}]}, "Path 'events[0].data.screen_name': is required"),
    ({"events": [commerce()]}, "Path 'events[0].data': needs exactly one of product_action"),
    (
        {"events": [commerce(product_action={"action": "purchase"}, promotion_action={})]},
        "(found product_action, promotion_action)",
    ),
    (
        {"events": [commerce(product_action={"action": "buy"})]},
        "Path 'events[0].data.product_action.action': value is not a product action",
    ),
    (
        {"events": [commerce(product_action={"action": "purchase", "products": [{"custom_attributes": {"a": []}}]})]},
        "Path 'events[0].data.product_action.products[0].custom_attributes.a': value must be a scalar",
    ),
    (
        {"events": [make_event(), make_event(tags=["a", "b"])]},
        "Path 'events[1].data.custom_attributes.tags': value must be a scalar",
    ),
    ({"events": [make_event(nested={"a": 1})]}, "Path 'events[0].data.custom_attributes.nested': value must be"),
    (
        {"events": [{"event_type": "custom_event", "data": {**make_event()["data"], "custom_attributes": [1]}}]},
        "Path 'events[0].data.custom_attributes': value must be an object",
    ),
    ({"events": [make_event(ts=1.5)]}, "Path 'events[0].data.timestamp_unixtime_ms': value must be an integer"),
    ({"events": [make_event(ts="1764115200000")]}, "Path 'events[0].data.timestamp_unixtime_ms'"),
    ({"source_request_id": 7}, "Path 'source_request_id': value must be a string"),
]


@pytest.mark.parametrize(("fields", "expected"), INVALID_BATCHES)
def test_an_invalid_batch_on_events_is_400_naming_the_field(http, sandbox, fields, expected):
    batch = make_batch("bad", **fields)
    if fields.get("environment", "x") is None:
        del batch["environment"]
    response = post(http, sandbox, "/v2/events", batch)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "BAD_REQUEST"
    assert any(expected in message for message in error_messages(response)), error_messages(response)
    assert sandbox.kept() == []
    [reject] = sandbox.rejects()
    assert (reject.api_key, reject.path, reject.index, reject.source_request_id) == (
        KEY,
        "/v2/events",
        0,
        "bad" if fields.get("source_request_id", "bad") == "bad" else None,
    )
    assert expected in reject.reason


def test_a_batch_using_every_feature_is_accepted(http, sandbox):
    batch = {
        "source_request_id": "all",
        "environment": "production",
        "user_identities": {"customer_id": "u-1", "email": "a@example.com", "other_id_10": None, "alias": "x"},
        "user_attributes": {"plan": "pro", "$firstname": "Ada", "age": 36, "vip": True, "gone": None, "tags": ["a"]},
        "deleted_user_attributes": ["old_attr"],
        "mpid": 123456789,
        "events": [
            make_event(sku="A-1", amount=19.99, first=True, note=None),
            {"event_type": "screen_view", "data": {"screen_name": "Home", "source_message_id": "m-2"}},
            commerce(
                product_action={
                    "action": "purchase",
                    "transaction_id": "t-1",
                    "total_amount": 19.99,
                    "products": [{"id": "A-1", "price": 19.99, "quantity": 1, "custom_attributes": {"size": "M"}}],
                },
                currency_code="EUR",
            ),
            commerce(promotion_action={"action": "view", "promotions": []}),
            commerce(product_impressions=[]),
            {"event_type": "session_start", "data": {}},
        ],
    }
    response = post(http, sandbox, "/v2/events", batch)
    assert response.status_code == 202, response.text
    assert sandbox.batches() == [batch]
    assert sandbox.rejects() == []


def test_bulk_answers_202_naming_each_bad_batch_and_keeps_the_good_ones(http, sandbox):
    batches = [
        make_batch("r-0"),
        make_batch("r-1", environment="staging"),
        make_batch("r-2"),
        make_batch("r-3", events=[make_event(tags=["a"]), {"event_type": "nope", "data": {}}]),
        make_batch("r-4"),
    ]
    response = post(http, sandbox, "/v2/bulkevents", batches)
    assert response.status_code == 202
    messages = error_messages(response)
    assert len(messages) == 2
    assert messages[0].startswith("Path '[1]'")
    assert "environment" in messages[0]
    assert messages[1].startswith("Path '[3]'")
    assert "events[0].data.custom_attributes.tags" in messages[1]
    assert "events[1].event_type" in messages[1]
    assert {error["code"] for error in response.json()["errors"]} == {"BAD_REQUEST"}
    assert [k.source_request_id for k in sandbox.kept()] == ["r-0", "r-2", "r-4"]
    assert [(r.index, r.source_request_id) for r in sandbox.rejects()] == [(1, "r-1"), (3, "r-3")]


# 5. Rate-limit percentage header -----------------------------------------------------------------------------


def test_success_carries_the_rate_limit_percentage(http, make_sandbox):
    sandbox = make_sandbox(rate_limit=10, clock=FakeClock())
    response = post(http, sandbox, "/v2/bulkevents", [make_batch() for _ in range(5)])
    assert response.status_code == 202
    assert response.headers["X-mp-rate-limit-percentage-used"] == "50"
    response = post(http, sandbox, "/v2/events", make_batch())
    assert response.headers["X-mp-rate-limit-percentage-used"] == "60"


def test_percentage_is_zero_when_unlimited(http, make_sandbox):
    sandbox = make_sandbox(rate_limit=None)
    response = post(http, sandbox, "/v2/bulkevents", [make_batch() for _ in range(100)])
    assert response.status_code == 202
    assert response.headers["X-mp-rate-limit-percentage-used"] == "0"


# 6. Token bucket ---------------------------------------------------------------------------------------------


def test_token_bucket_counts_batches_and_answers_429_with_retry_after(http, make_sandbox):
    clock = FakeClock()
    sandbox = make_sandbox(rate_limit=10, clock=clock)
    assert post(http, sandbox, "/v2/bulkevents", [make_batch(f"a-{i}") for i in range(10)]).status_code == 202

    throttled = post(http, sandbox, "/v2/bulkevents", [make_batch(f"b-{i}") for i in range(10)])
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.headers["X-mp-rate-limit-exceeded"] == "workspace"
    assert throttled.json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    assert len(sandbox.kept()) == 10  # a throttled request keeps nothing

    clock.now += 0.5  # 5 tokens back: still not enough for 10, and the 429 above spent nothing
    again = post(http, sandbox, "/v2/bulkevents", [make_batch(f"b-{i}") for i in range(10)])
    assert again.status_code == 429
    assert again.headers["Retry-After"] == "1"
    assert post(http, sandbox, "/v2/bulkevents", [make_batch(f"c-{i}") for i in range(5)]).status_code == 202

    clock.now += 1.0
    assert post(http, sandbox, "/v2/bulkevents", [make_batch(f"b-{i}") for i in range(10)]).status_code == 202
    assert len(sandbox.kept()) == 25
    assert [entry.retry_after for entry in sandbox.requests_log()] == [None, 1, 1, None, None]


def test_retry_after_is_the_time_until_enough_tokens(http, make_sandbox):
    clock = FakeClock()
    sandbox = make_sandbox(rate_limit=10, burst=30, clock=clock)
    assert post(http, sandbox, "/v2/bulkevents", [make_batch() for _ in range(30)]).status_code == 202
    response = post(http, sandbox, "/v2/bulkevents", [make_batch() for _ in range(25)])
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"  # 25 tokens at 10 per second


def test_each_api_key_has_its_own_bucket(http, make_sandbox):
    sandbox = make_sandbox(rate_limit=5, clock=FakeClock())
    sandbox.add_credentials("key-2", "secret-2")
    assert post(http, sandbox, "/v2/bulkevents", [make_batch() for _ in range(5)]).status_code == 202
    assert post(http, sandbox, "/v2/events", make_batch()).status_code == 429
    assert post(http, sandbox, "/v2/events", make_batch(), auth=("key-2", "secret-2")).status_code == 202


def test_a_request_bigger_than_the_bucket_passes_when_full_and_leaves_debt(http, make_sandbox):
    sandbox = make_sandbox(rate_limit=10, clock=FakeClock())
    assert post(http, sandbox, "/v2/bulkevents", [make_batch() for _ in range(40)]).status_code == 202
    response = post(http, sandbox, "/v2/events", make_batch())
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "4"  # 30 tokens of debt + 1


def test_retry_after_can_be_switched_off(http, make_sandbox):
    sandbox = make_sandbox(rate_limit=1, clock=FakeClock(), send_retry_after=False)
    assert post(http, sandbox, "/v2/events", make_batch()).status_code == 202
    response = post(http, sandbox, "/v2/events", make_batch())
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert response.headers["X-mp-rate-limit-exceeded"] == "workspace"


def test_configure_changes_the_limit_at_runtime(http, make_sandbox):
    sandbox = make_sandbox(rate_limit=1, clock=FakeClock())
    assert post(http, sandbox, "/v2/events", make_batch()).status_code == 202
    assert post(http, sandbox, "/v2/events", make_batch()).status_code == 429
    sandbox.configure(rate_limit=None)
    assert post(http, sandbox, "/v2/bulkevents", [make_batch() for _ in range(100)]).status_code == 202


def test_each_key_can_have_a_limit_of_its_own_changed_while_it_runs(http, make_sandbox):
    clock = FakeClock()
    sandbox = make_sandbox(rate_limit=None, key_limits={KEY: 5}, clock=clock)
    sandbox.add_credentials("key-2", "secret-2")
    # key-1 has a bucket of 5 batches a second; key-2 the (unlimited) default.
    assert post(http, sandbox, "/v2/bulkevents", [make_batch() for _ in range(5)]).status_code == 202
    throttled = post(http, sandbox, "/v2/events", make_batch())
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    assert post(http, sandbox, "/v2/bulkevents", [make_batch() for _ in range(100)], auth=("key-2", "secret-2")).ok
    assert sandbox.limit_for(KEY) == 5 and sandbox.limit_for("key-2") is None
    # Raised over HTTP, from another process: the bucket keeps its tokens and refills at the new rate.
    answer = http.post(f"{sandbox.url}/_sandbox/config", json={"key_limits": {KEY: 50}}, timeout=TIMEOUT)
    assert answer.status_code == 200 and answer.json()["key_limits"] == {KEY: 50.0}
    clock.now += 0.5
    assert post(http, sandbox, "/v2/bulkevents", [make_batch() for _ in range(20)]).status_code == 202
    # Removed: the default applies again.
    http.post(f"{sandbox.url}/_sandbox/config", json={"key_limits": {KEY: None}}, timeout=TIMEOUT)
    assert sandbox.limit_for(KEY) is None
    keys = sandbox.snapshot()["keys"]
    assert keys[KEY]["batches"] == 25 and keys[KEY]["throttled"] == 1 and keys[KEY]["requests"] == 3
    assert keys["key-2"]["batches"] == 100 and keys["key-2"]["events"] == 100


def test_the_config_endpoint_refuses_what_it_does_not_know(http, sandbox):
    for body in ([1], {"rate": 5}, {"key_limits": [1]}, {"latency": -1}, {"key_limits": {KEY: "fast"}}):
        answer = http.post(f"{sandbox.url}/_sandbox/config", json=body, timeout=TIMEOUT)
        assert answer.status_code == 400, body
        assert error_messages(answer)[0].startswith("Invalid sandbox configuration")
    assert http.get(f"{sandbox.url}/_sandbox/config", timeout=TIMEOUT).status_code == 405


def test_latency_is_added_to_every_answer_and_requests_overlap(http, make_sandbox):
    sandbox = make_sandbox(rate_limit=None, latency=0.2)
    started = time.monotonic()
    assert post(http, sandbox, "/v2/events", make_batch()).status_code == 202
    assert time.monotonic() - started >= 0.2
    # Answers are waited for in parallel: four at once take about one latency, not four.
    import concurrent.futures

    def one(_):
        with requests.Session() as session:
            return post(session, sandbox, "/v2/events", make_batch()).status_code

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(4))) == [202] * 4
    assert time.monotonic() - started < 0.6
    assert sandbox.max_in_flight == 4 and sandbox.snapshot()["max_in_flight"] == 4
    sandbox.configure(latency=0)
    started = time.monotonic()
    post(http, sandbox, "/v2/events", make_batch())
    assert time.monotonic() - started < 0.15


def test_a_lean_sandbox_keeps_ids_and_counts_only(http, make_sandbox):
    sandbox = make_sandbox(rate_limit=None, keep_batches=False)
    batches = [make_batch(f"r{i}") for i in range(3)]
    for i, batch in enumerate(batches):
        batch["events"][0]["data"]["source_message_id"] = f"m{i}"
    assert post(http, sandbox, "/v2/bulkevents", batches).status_code == 202
    assert post(http, sandbox, "/v2/bulkevents", batches[:1]).status_code == 202  # a duplicate
    state = sandbox.snapshot()
    assert sandbox.kept() == [] and state["kept_batches"] == 3 and state["duplicates"] == 1
    assert len(state["source_message_ids"]) == state["kept_events"] == 3
    assert state["keys"][KEY]["duplicates"] == 1 and state["config"]["keep_batches"] is False


def test_json_and_shape_are_checked_before_the_rate_limit(http, make_sandbox):
    sandbox = make_sandbox(rate_limit=1, clock=FakeClock())
    assert post(http, sandbox, "/v2/events", make_batch()).status_code == 202
    assert post(http, sandbox, "/v2/events", b"{").status_code == 400
    assert post(http, sandbox, "/v2/bulkevents", []).status_code == 400
    assert post(http, sandbox, "/v2/events", make_batch()).status_code == 429


# 7. Fault injection ------------------------------------------------------------------------------------------


def statuses(http: requests.Session, sandbox: Sandbox, n: int) -> list[int]:
    return [post(http, sandbox, "/v2/events", make_batch()).status_code for _ in range(n)]


def test_seeded_faults_are_reproducible(http, make_sandbox):
    faults = FaultConfig(seed=7, throttle_rate=0.25, error_rate=0.25)
    first = make_sandbox(rate_limit=None, faults=faults)
    second = make_sandbox(rate_limit=None, faults=faults)
    sequence = statuses(http, first, 40)
    assert statuses(http, second, 40) == sequence
    assert {202, 429} <= set(sequence)
    assert set(sequence) & {500, 502, 503}
    assert set(sequence) <= {202, 429, 500, 502, 503}
    assert len(first.kept()) == sequence.count(202)

    first.reset()  # reseeds
    assert statuses(http, first, 40) == sequence

    other = make_sandbox(rate_limit=None, faults=FaultConfig(seed=8, throttle_rate=0.25, error_rate=0.25))
    assert statuses(http, other, 40) != sequence


def test_injected_429_carries_the_configured_retry_after(http, make_sandbox):
    sandbox = make_sandbox(faults=FaultConfig(throttle_rate=1.0, retry_after=7))
    response = post(http, sandbox, "/v2/events", make_batch())
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["X-mp-rate-limit-exceeded"] == "workspace"
    assert response.json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"

    sandbox.configure(faults=FaultConfig(throttle_rate=1.0, retry_after=None))
    response = post(http, sandbox, "/v2/events", make_batch())
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert sandbox.kept() == []
    assert [entry.fault for entry in sandbox.requests_log()] == ["throttle", "throttle"]


def test_injected_errors_are_5xx_with_a_json_body(http, make_sandbox):
    sandbox = make_sandbox(faults=FaultConfig(error_rate=1.0))
    codes = statuses(http, sandbox, 12)
    assert set(codes) <= {500, 502, 503}
    assert len(set(codes)) > 1
    response = post(http, sandbox, "/v2/events", make_batch())
    assert response.json()["errors"][0]["message"]
    assert sandbox.kept() == []


def test_dropped_connections_give_no_answer(http, make_sandbox):
    sandbox = make_sandbox(faults=FaultConfig(drop_rate=1.0))
    with pytest.raises(requests.exceptions.ConnectionError):
        post(http, sandbox, "/v2/bulkevents", [make_batch("r-1")])
    assert sandbox.kept() == []
    [entry] = sandbox.requests_log()
    assert (entry.status, entry.fault, entry.api_key) == (0, "drop", KEY)

    sandbox.configure(faults=FaultConfig())
    assert post(http, sandbox, "/v2/bulkevents", [make_batch("r-1")]).status_code == 202


def test_slow_answers_arrive_late_but_normal(http, make_sandbox):
    sandbox = make_sandbox(faults=FaultConfig(slow_rate=1.0, slow_seconds=0.3))
    started = time.monotonic()
    response = post(http, sandbox, "/v2/events", make_batch("slow"))
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 202
    assert [k.source_request_id for k in sandbox.kept()] == ["slow"]
    assert sandbox.requests_log()[0].fault == "slow"


def test_queued_faults_come_first_and_in_order(http, make_sandbox):
    sandbox = make_sandbox(faults=FaultConfig(seed=1, throttle_rate=1.0, retry_after=9))
    sandbox.queue_faults(["503", 500, "throttle", "slow"])
    assert statuses(http, sandbox, 2) == [503, 500]
    queued_throttle = post(http, sandbox, "/v2/events", make_batch())
    assert (queued_throttle.status_code, queued_throttle.headers["Retry-After"]) == (429, "9")
    sandbox.configure(faults=FaultConfig(slow_seconds=0.0))  # the queue survives a new random config
    assert statuses(http, sandbox, 1) == [202]
    sandbox.queue_faults(["drop"])
    with pytest.raises(requests.exceptions.ConnectionError):
        post(http, sandbox, "/v2/events", make_batch())
    assert statuses(http, sandbox, 1) == [202]  # back to the random faults: none configured
    assert [entry.fault for entry in sandbox.requests_log()] == ["error", "error", "throttle", "slow", "drop", None]
    with pytest.raises(ValueError):
        sandbox.queue_faults(["404"])


def test_fault_rates_must_make_sense():
    with pytest.raises(ValueError):
        FaultConfig(error_rate=1.5)
    with pytest.raises(ValueError):
        FaultConfig(throttle_rate=0.6, drop_rate=0.6)


# 8. De-duplication -------------------------------------------------------------------------------------------


def test_duplicates_are_answered_202_counted_and_not_kept(http, sandbox):
    sandbox.add_credentials("key-2", "secret-2")
    assert post(http, sandbox, "/v2/events", make_batch("r-1")).status_code == 202
    again = post(http, sandbox, "/v2/bulkevents", [make_batch("r-1"), make_batch("r-2"), make_batch("r-2")])
    assert again.status_code == 202
    assert again.content == b""
    assert post(http, sandbox, "/v2/events", make_batch("r-1"), auth=("key-2", "secret-2")).status_code == 202
    assert [(k.api_key, k.source_request_id) for k in sandbox.kept()] == [
        (KEY, "r-1"),
        (KEY, "r-2"),
        ("key-2", "r-1"),
    ]
    assert sandbox.duplicates() == [(KEY, "r-1"), (KEY, "r-2")]


def test_batches_without_source_request_id_are_always_kept(http, sandbox):
    post(http, sandbox, "/v2/events", make_batch())
    post(http, sandbox, "/v2/bulkevents", [make_batch(), make_batch()])
    assert len(sandbox.kept()) == 3
    assert sandbox.duplicates() == []


def test_rejected_batches_do_not_block_a_good_retry(http, sandbox):
    assert post(http, sandbox, "/v2/events", make_batch("r-1", environment="staging")).status_code == 400
    post(http, sandbox, "/v2/bulkevents/historical", [make_batch("r-1", events=[])])
    assert post(http, sandbox, "/v2/events", make_batch("r-1")).status_code == 202
    assert [k.source_request_id for k in sandbox.kept()] == ["r-1"]
    assert sandbox.duplicates() == []


# 9. Historical rules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ([], HISTORICAL_NO_EVENTS),
        (None, HISTORICAL_NO_EVENTS),
        ([make_event(ts=OLD_MS), make_event(ts=None)], HISTORICAL_NO_TIMESTAMP),
        ([make_event(ts=OLD_MS), make_event(ts=NOW_MS - 1000)], HISTORICAL_TOO_NEW),
        ([make_event(ts=NOW_MS - HISTORICAL_MIN_AGE_MS + 1)], HISTORICAL_TOO_NEW),
    ],
)
def test_historical_batches_breaking_the_rules_are_silently_not_kept(http, sandbox, events, reason):
    batch = make_batch("h-1", events=events)
    if events is None:
        del batch["events"]
    response = post(http, sandbox, "/s2s/v2/bulkevents/historical", [make_batch("h-0"), batch])
    assert response.status_code == 202
    assert response.content == b""
    assert [k.source_request_id for k in sandbox.kept()] == ["h-0"]
    assert sandbox.rejects() == [Reject(KEY, "/s2s/v2/bulkevents/historical", 1, reason, "h-1")]


def test_historical_accepts_events_exactly_72_hours_old(http, sandbox):
    batch = make_batch("h-1", events=[make_event(ts=NOW_MS - HISTORICAL_MIN_AGE_MS)])
    assert post(http, sandbox, "/v2/bulkevents/historical", [batch]).status_code == 202
    assert [k.source_request_id for k in sandbox.kept()] == ["h-1"]


def test_historical_rules_do_not_apply_to_realtime_paths(http, sandbox):
    batches = [make_batch("r-1", events=[]), make_batch("r-2", events=[make_event(ts=None)])]
    assert post(http, sandbox, "/v2/bulkevents", batches).status_code == 202
    assert len(sandbox.kept()) == 2


# 10. Inspection ----------------------------------------------------------------------------------------------


def test_inspection_methods_report_what_happened(http, sandbox):
    post(http, sandbox, "/v2/events", make_batch("r-1", events=[make_event(), make_event("Second")]))
    post(http, sandbox, "/v2/bulkevents", [make_batch("r-1"), make_batch("r-2", mpid="x")])
    post(http, sandbox, "/v2/events", make_batch(), auth=None)

    kept = sandbox.kept()
    assert kept == [KeptBatch(KEY, "/v2/events", "r-1", make_batch("r-1", events=[make_event(), make_event("Second")]))]
    assert sandbox.batches() == [kept[0].batch]
    assert [event["data"]["event_name"] for event in sandbox.events()] == ["Purchase Completed", "Second"]
    assert [(r.index, r.source_request_id) for r in sandbox.rejects()] == [(1, "r-2")]
    assert sandbox.duplicates() == [(KEY, "r-1")]
    log = sandbox.requests_log()
    assert [(e.method, e.path, e.api_key, e.status, e.batches) for e in log] == [
        ("POST", "/v2/events", KEY, 202, 1),
        ("POST", "/v2/bulkevents", KEY, 202, 2),
        ("POST", "/v2/events", None, 401, 0),
    ]
    assert all(isinstance(entry, LoggedRequest) for entry in log)
    assert sandbox.count_by_status() == {202: 2, 401: 1}

    # Copies: changing what was returned changes nothing inside.
    sandbox.kept().clear()
    sandbox.requests_log().clear()
    assert len(sandbox.kept()) == 1
    assert len(sandbox.requests_log()) == 3


def test_state_endpoint_serves_the_snapshot_without_auth(http, sandbox):
    event = make_event()
    event["data"]["source_message_id"] = "m-1"
    post(http, sandbox, "/v2/bulkevents", [make_batch("r-1", events=[event, make_event()]), make_batch("r-1")])
    post(http, sandbox, "/v2/bulkevents/historical", [make_batch("r-2", events=[])])

    response = http.get(sandbox.url + "/_sandbox/state", timeout=TIMEOUT)
    assert response.status_code == 200
    state = response.json()
    assert 0 < state.pop("clock") <= sandbox.snapshot()["clock"]
    assert state == {k: v for k, v in orjson.loads(orjson.dumps(sandbox.snapshot())).items() if k != "clock"}
    lean = http.get(sandbox.url + "/_sandbox/state?ids=0", timeout=TIMEOUT).json()
    assert "source_message_ids" not in lean and "request_log" not in lean and lean["kept_events"] == 2
    assert state["kept_batches"] == 1
    assert state["kept_events"] == 2
    assert state["duplicates"] == 1
    assert state["rejects_by_reason"] == {HISTORICAL_NO_EVENTS: 1}
    assert state["rejects"][0]["reason"] == HISTORICAL_NO_EVENTS
    assert state["requests_by_status"] == {"202": 2}
    assert [entry["path"] for entry in state["request_log"]] == ["/v2/bulkevents", "/v2/bulkevents/historical"]
    assert state["source_request_ids"] == ["r-1"]
    assert state["source_message_ids"] == ["m-1"]
    assert SECRET not in response.text


def test_state_log_is_capped_at_200_entries(http, make_sandbox):
    sandbox = make_sandbox()
    for _ in range(205):
        http.post(sandbox.url + "/v2/events", timeout=TIMEOUT)  # 401s are the cheapest requests
    state = http.get(sandbox.url + "/_sandbox/state", timeout=TIMEOUT).json()
    assert state["requests"] == 205
    assert len(state["request_log"]) == 200


def test_reset_endpoint_forgets_everything_but_credentials(http, make_sandbox):
    sandbox = make_sandbox(rate_limit=1, clock=FakeClock())
    post(http, sandbox, "/v2/events", make_batch("r-1"))
    post(http, sandbox, "/v2/events", make_batch("r-2"))  # throttled
    assert http.post(sandbox.url + "/_sandbox/reset", timeout=TIMEOUT).status_code == 200
    assert sandbox.kept() == [] and sandbox.requests_log() == [] and sandbox.duplicates() == []
    # The bucket is full again and r-1 is no longer a duplicate.
    assert post(http, sandbox, "/v2/events", make_batch("r-1")).status_code == 202
    assert [k.source_request_id for k in sandbox.kept()] == ["r-1"]
    assert http.get(sandbox.url + "/_sandbox/reset", timeout=TIMEOUT).status_code == 405


# Robustness --------------------------------------------------------------------------------------------------


def test_garbage_does_not_kill_the_server(http, sandbox):
    answer = raw_exchange(sandbox, b"\x00\x01 NOT HTTP AT ALL\r\n\r\n")
    assert b"400" in answer
    answer = raw_exchange(sandbox, b"BREW /v2/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501 ")
    raw_exchange(sandbox, b"POST /v2/events HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")  # hangs up mid-body
    assert post(http, sandbox, "/v2/events", make_batch()).status_code == 202


def test_stop_closes_the_port(http, make_sandbox):
    sandbox = make_sandbox()
    url = sandbox.url
    assert post(http, sandbox, "/v2/events", make_batch()).status_code == 202
    sandbox.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        http.post(url + "/v2/events", data=b"{}", auth=AUTH, timeout=TIMEOUT)


# Command line ------------------------------------------------------------------------------------------------


def test_sandbox_from_args_reads_options_and_credentials(http):
    args = build_arg_parser().parse_args(
        [
            "--credential",
            "key-1:secret-1",
            "--credential",
            "key-2:se:cret",
            "--rate-limit",
            "0",
            "--seed",
            "3",
            "--error-rate",
            "0.1",
            "--slow-rate",
            "0.2",
            "--slow-seconds",
            "0.01",
            "--retry-after",
            "4",
        ]
    )
    sandbox = sandbox_from_args(args, environ={"MPFEED_SANDBOX_CREDENTIALS": "key-3:secret-3, key-1:old"})
    assert sandbox.api_keys == ["key-1", "key-2", "key-3"]
    assert sandbox.rate_limit is None
    assert sandbox.send_retry_after is True
    assert sandbox.faults == FaultConfig(seed=3, error_rate=0.1, slow_rate=0.2, slow_seconds=0.01, retry_after=4)

    sandbox.start()
    try:
        for auth in [("key-1", "secret-1"), ("key-2", "se:cret"), ("key-3", "secret-3")]:
            response = http.post(sandbox.url + "/v2/events", data=b"[]", auth=auth, timeout=TIMEOUT)
            assert response.status_code not in (401, 403), auth
        response = http.post(sandbox.url + "/v2/events", data=b"[]", auth=("key-1", "old"), timeout=TIMEOUT)
        assert response.status_code == 403
    finally:
        sandbox.stop()


def test_parser_defaults_and_switches():
    args = build_arg_parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    sandbox = sandbox_from_args(args, environ={})
    assert sandbox.rate_limit == 270
    assert sandbox.api_keys == []

    args = build_arg_parser().parse_args(["--no-retry-after", "--rate-limit", "50", "--burst", "100"])
    sandbox = sandbox_from_args(args, environ={})
    assert (sandbox.rate_limit, sandbox.burst, sandbox.send_retry_after) == (50, 100, False)
    assert sandbox.faults.retry_after is None


@pytest.mark.parametrize("argv", [["--credential", "no-secret"], ["--drop-rate", "2"], ["--rate-limit", "-1"]])
def test_parser_refuses_bad_options(argv, capsys):
    with pytest.raises(SystemExit):
        build_arg_parser().parse_args(argv)


def test_bad_credentials_in_the_environment_are_refused():
    args = build_arg_parser().parse_args([])
    with pytest.raises(ValueError, match="KEY:SECRET"):
        sandbox_from_args(args, environ={"MPFEED_SANDBOX_CREDENTIALS": "key-1"})
