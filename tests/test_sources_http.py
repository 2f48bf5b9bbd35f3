"""The HTTP source against a partner API served on loopback by http.server, page by page."""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from feeds.sources import SourceError
from feeds.sources.http import HTTPSource

TOKEN = "tok-8f2a-PLAINTEXT-do-not-leak"
AUTH = f"Bearer {TOKEN}"


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that hang up early (a refused page, a timeout) are part of the tests


class PartnerAPI:
    """Routes "/path?query" to answers (status, body, headers); the last answer of a route repeats."""

    def __init__(self):
        self.routes: dict[str, list] = {}
        self.requests: list[tuple[str, dict]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                api.requests.append((self.path, dict(self.headers)))
                answers = api.routes.get(self.path) or [(404, {"error": "no such page"}, {})]
                status, body, headers = answers.pop(0) if len(answers) > 1 else answers[0]
                if callable(body):
                    body = body(self)
                data = body if isinstance(body, bytes) else orjson.dumps(body)
                self.send_response(status)
                headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}
                for name, value in headers.items():
                    if value is not None:
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)

    def route(self, path: str, *answers):
        self.routes[path] = [a if isinstance(a, tuple) else (200, a, {}) for a in answers]

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


@pytest.fixture
def api(settings):
    server = PartnerAPI()
    server.thread.start()
    settings.MPFEED_HTTP_SOURCE_HOSTS = ["127.0.0.1"]
    settings.MPFEED_HTTP_SOURCE_ATTEMPTS = 3
    settings.MPFEED_HTTP_SOURCE_MAX_WAIT = 5
    yield server
    server.server.shutdown()
    server.server.server_close()


def make_source(api, path="/v1/events", auth=AUTH, **config) -> HTTPSource:
    source = HTTPSource.from_config({"url": api.url + path, "records_path": "data", **config}, auth)
    source.waits = []  # type: ignore[attr-defined]  # the test's record of the sleeps
    source.sleep = source.waits.append  # type: ignore[attr-defined]
    return source


def events(*ids, at="2026-11-01T10:00:00Z"):
    return [{"id": i, "updated_at": at} for i in ids]


def link_pages(api):
    """Three pages linked by links.next: a relative link, an absolute one, then none."""
    api.route("/v1/events", {"data": events(1, 2), "links": {"next": "/v1/events?page=2"}})
    api.route("/v1/events?page=2", {"data": events(3, 4, 5), "links": {"next": api.url + "/v1/events?page=3"}})
    api.route("/v1/events?page=3", {"data": events(6), "links": {"next": None}})


def ids(items) -> list:
    return [item.record["id"] for item in items]


def test_it_follows_next_links_in_the_body(api):
    link_pages(api)
    items = list(make_source(api, next={"type": "link", "path": "links.next"}).read())
    assert ids(items) == [1, 2, 3, 4, 5, 6]
    assert [item.ref for item in items[:3]] == [
        "127.0.0.1:page 1 item 1",
        "127.0.0.1:page 1 item 2",
        "127.0.0.1:page 2 item 1",
    ]
    assert items[2].position == {"page": api.url + "/v1/events?page=2", "number": 2, "index": 0}
    assert api.paths == ["/v1/events", "/v1/events?page=2", "/v1/events?page=3"]


def test_it_follows_a_next_cursor_as_a_query_parameter(api):
    api.route("/v1/events?limit=2", {"data": events(1, 2), "meta": {"next_cursor": "c2"}})
    api.route("/v1/events?limit=2&after=c2", {"data": events(3), "meta": {"next_cursor": 3}})
    api.route("/v1/events?limit=2&after=3", {"data": [], "meta": {"next_cursor": 3}})
    next_ = {"type": "cursor", "path": "meta.next_cursor", "param": "after"}
    items = list(make_source(api, path="/v1/events?limit=2", next=next_, key_field="id").read())
    assert ids(items) == [1, 2, 3]
    assert [item.ref for item in items] == ["127.0.0.1:id=1", "127.0.0.1:id=2", "127.0.0.1:id=3"]
    # The empty page ends the read even though it names a next cursor.
    assert api.paths == ["/v1/events?limit=2", "/v1/events?limit=2&after=c2", "/v1/events?limit=2&after=3"]


def test_it_follows_link_headers(api):
    api.route("/feed", (200, events(1, 2), {"Link": '</feed?p=2>; rel="next", </feed>; rel="first"'}))
    api.route("/feed?p=2", (200, events(3), {"Link": '</feed>; rel="first"'}))
    items = list(make_source(api, path="/feed", records_path="", next={"type": "link_header"}).read())
    assert ids(items) == [1, 2, 3]


def test_records_can_be_nested(api):
    api.route("/v1/events", {"result": {"items": events(1, 2)}})
    assert ids(make_source(api, records_path="result.items").read()) == [1, 2]


def test_it_resumes_after_every_position(api):
    link_pages(api)
    source = make_source(api, next={"type": "link", "path": "links.next"})
    items = list(source.read())
    for i, item in enumerate(items[:-1]):
        assert ids(source.read(item.position)) == ids(items[i + 1 :]), f"resuming after item {i}"
        assert orjson.loads(orjson.dumps(item.position)) == item.position
    # Without cursor_field a complete read leaves None: the next run reads everything again.
    assert items[-1].position is None


def test_the_next_run_starts_from_the_last_cursor_value(api):
    api.route("/v1/events?since=", {"data": events(1, at="2026-11-01T10:00:00Z"), "links": {"next": "/p2"}})
    api.route("/p2", {"data": [*events(2, at="2026-11-01T11:00:00Z"), {"id": 3}], "links": {}})
    source = make_source(
        api, path="/v1/events?since={cursor}", cursor_field="updated_at", next={"type": "link", "path": "links.next"}
    )
    items = list(source.read())
    assert items[0].position == {
        "page": api.url + "/v1/events?since=",
        "number": 1,
        "index": 0,
        "since": "2026-11-01T10:00:00Z",
    }
    assert items[-1].position == {"since": "2026-11-01T11:00:00Z"}  # id 3 has no updated_at: the last value holds

    api.route("/v1/events?since=2026-11-01T11%3A00%3A00Z", {"data": events(4, at="2026-11-01T12:00:00Z")})
    second = list(source.read(items[-1].position))
    assert ids(second) == [4]
    assert second[-1].position == {"since": "2026-11-01T12:00:00Z"}
    assert source.incremental


def test_it_waits_for_retry_after_then_reads(api):
    api.route("/v1/events", (429, {"error": "slow down"}, {"Retry-After": "2"}), {"data": events(1)})
    source = make_source(api)
    assert ids(source.read()) == [1]
    assert source.waits == [2.0]


@pytest.fixture
def local_time_behind_utc(monkeypatch):
    """The process's local time zone five hours behind UTC: a date read as local time would be hours off."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_retry_after_date_without_a_zone_is_utc(api, local_time_behind_utc):
    # RFC 5322's "-0000": a date in UTC, with no zone said. The same helper as the mParticle client's.
    soon = email.utils.format_datetime(datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=3))
    assert soon.endswith("-0000")
    api.route("/v1/events", (429, b"", {"Retry-After": soon}), {"data": events(1)})
    source = make_source(api)
    assert ids(source.read()) == [1]
    [wait] = source.waits
    assert 1 <= wait <= 3  # not the 5 seconds' cap a date five hours ahead would give


@pytest.mark.parametrize("value", ["Wed, 41 Oct 2015 07:28:00 GMT", "Mon, 1 Jan", "nan", "1e400"])
def test_an_unusable_retry_after_falls_back_to_the_backoff(api, value):
    api.route("/v1/events", (503, b"busy", {"Retry-After": value}), {"data": events(1)})
    source = make_source(api)
    assert ids(source.read()) == [1]
    [wait] = source.waits
    assert 0 <= wait <= 5


def test_a_long_retry_after_is_capped(api, settings):
    settings.MPFEED_HTTP_SOURCE_MAX_WAIT = 1.5
    api.route("/v1/events", (503, b"busy", {"Retry-After": "3600"}), {"data": events(1)})
    source = make_source(api)
    assert ids(source.read()) == [1]
    assert source.waits == [1.5]


def test_it_gives_up_after_repeated_server_errors(api):
    api.route("/v1/events", (500, b"<html>oops</html>", {"Content-Type": "text/html"}))
    source = make_source(api)
    with pytest.raises(SourceError, match="the partner API at 127.0.0.1 failed 3 times; last: it answered HTTP 500"):
        list(source.read())
    assert len(api.requests) == 3 and len(source.waits) == 2
    assert all(0 <= wait <= 5 for wait in source.waits)


def test_an_unreachable_api_is_retried_then_reported(api, settings):
    api.server.shutdown()
    api.server.server_close()
    with pytest.raises(SourceError, match="failed 3 times; last: the connection was refused"):
        list(make_source(api).read())


def test_a_slow_api_times_out(api, settings):
    settings.MPFEED_HTTP_SOURCE_ATTEMPTS = 2

    def slow(handler):
        time.sleep(0.5)
        return {"data": []}

    api.route("/v1/events", (200, slow, {}))
    with pytest.raises(SourceError, match="failed 2 times; last: it did not answer in time"):
        list(make_source(api, timeout=0.1).read())


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_stop_at_once(api, status):
    api.route("/v1/events", (status, {"error": "bad token"}, {}))
    with pytest.raises(SourceError, match=rf"the partner API refused the credentials \(HTTP {status}\)"):
        list(make_source(api).read())
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    "answer, message",
    [
        ((200, b"<html>maintenance</html>", {"Content-Type": "text/html"}), r"is not JSON \(text/html\): <html>maint"),
        ({"data": {"id": 1}}, "the page's 'data' is an object, not a list of records"),
        ({"items": []}, "has no 'data'"),
        ((404, {"error": "gone"}, {}), r"answered HTTP 404 for .*/v1/events: {\"error\":\"gone\"}"),
    ],
)
def test_pages_that_cannot_be_read_stop_the_read(api, answer, message):
    api.route("/v1/events", answer)
    with pytest.raises(SourceError, match=message):
        list(make_source(api).read())


def test_a_record_that_is_not_an_object_is_an_item_error(api):
    api.route("/v1/events", {"data": [{"id": 1}, [1, 2], "text", {"id": 4}]})
    items = list(make_source(api).read())
    assert [item.error for item in items] == [
        "",
        "expected a JSON object, got a list",
        "expected a JSON object, got text",
        "",
    ]
    assert items[1].excerpt == "[1,2]" and items[1].ref == "127.0.0.1:page 1 item 2"


@pytest.mark.parametrize("host", ["localhost", "api.partner.example"])
def test_a_next_link_to_another_host_is_refused(api, settings, host):
    settings.MPFEED_HTTP_SOURCE_HOSTS = ["127.0.0.1", "localhost"]
    api.route("/v1/events", {"data": events(1), "links": {"next": f"http://{host}:{api.server.server_port}/steal"}})
    source = make_source(api, next={"type": "link", "path": "links.next"})
    expected = "not on the API's host 127.0.0.1" if host == "localhost" else "api.partner.example is not in MPFEED_HTTP"
    with pytest.raises(SourceError, match=expected):
        list(source.read())
    assert api.paths == ["/v1/events"]


def test_a_redirect_off_the_host_is_refused(api):
    api.route("/v1/events", (302, b"", {"Location": "http://evil.example/v1/events"}))
    with pytest.raises(SourceError, match="evil.example is not in MPFEED_HTTP_SOURCE_HOSTS"):
        list(make_source(api).read())


def test_a_next_page_that_repeats_is_refused(api):
    api.route("/v1/events", {"data": events(1), "links": {"next": "/v1/events"}})
    with pytest.raises(SourceError, match="repeats page"):
        list(make_source(api, next={"type": "link", "path": "links.next"}).read())


@pytest.mark.parametrize(
    "hosts, url, message",
    [
        ([], "http://127.0.0.1/x", r"not in MPFEED_HTTP_SOURCE_HOSTS \(it is empty: no host is allowed\)"),
        (["*"], "http://127.0.0.1/x", r"'\*' is not supported: list each host"),
        (["api.partner.example"], "http://localhost/x", "the host localhost is not in"),
        (["127.0.0.1"], "ftp://127.0.0.1/x", "only http and https URLs"),
        (["127.0.0.1"], "http://user:pw@127.0.0.1/x", "not in the URL"),
    ],
)
def test_the_allow_list_is_enforced(settings, hosts, url, message):
    settings.MPFEED_HTTP_SOURCE_HOSTS = hosts
    with pytest.raises(SourceError, match=message):
        HTTPSource.from_config({"url": url})


def test_the_allow_list_is_checked_again_when_reading(api, settings):
    api.route("/v1/events", {"data": events(1)})
    source = make_source(api)
    settings.MPFEED_HTTP_SOURCE_HOSTS = ["api.partner.example"]
    with pytest.raises(SourceError, match="127.0.0.1 is not in MPFEED_HTTP_SOURCE_HOSTS"):
        source.read()
    assert api.requests == []


def test_https_pages_never_lead_to_http(settings):
    settings.MPFEED_HTTP_SOURCE_HOSTS = ["api.partner.example"]
    source = HTTPSource.from_config({"url": "https://api.partner.example/v1/events"}, AUTH)
    with pytest.raises(SourceError, match="not https: refused"):
        source.read({"page": "http://api.partner.example/v1/events?page=2", "number": 2, "index": 0})


def test_a_page_larger_than_the_cap_is_refused(api, settings):
    settings.MPFEED_HTTP_SOURCE_MAX_PAGE_BYTES = 1000
    api.route("/declared", {"data": events(*range(100))})
    api.route("/undeclared", (200, {"data": events(*range(100))}, {"Content-Length": None}))
    for path in ("/declared", "/undeclared"):
        with pytest.raises(SourceError, match=r"larger than 0.000953674 MB: refused"):
            list(make_source(api, path=path).read())


@pytest.mark.parametrize(
    "config, message",
    [
        ({"cursor_field": "updated_at"}, "cursor_field and one {cursor} in the url go together"),
        ({"next": {"type": "offset"}}, "next.type must be link, cursor or link_header"),
        ({"next": {"type": "cursor", "path": "meta.next"}}, "next.param is needed"),
        ({"timeout": 0}, "timeout must be a number of seconds"),
        ({"headers": {}}, "unknown HTTP source setting 'headers'"),
    ],
)
def test_configs_that_cannot_work_are_refused(api, config, message):
    with pytest.raises(SourceError, match=message):
        HTTPSource.from_config({"url": api.url + "/v1/events", **config})


def test_the_auth_header_is_sent_and_never_leaked(api, caplog):
    echo = lambda handler: {"error": "bad request", "you sent": handler.headers["Authorization"]}  # noqa: E731
    api.route("/v1/events", (429, b"", {"Retry-After": "0"}), {"data": [*events(1), "oops"], "links": {"next": "/p2"}})
    api.route("/p2", (400, echo, {}))
    source = make_source(api, next={"type": "link", "path": "links.next"})
    seen = []
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceError) as error:
        for item in source.read():
            seen.append(item)
    assert [headers.get("Authorization") for _, headers in api.requests] == [AUTH, AUTH, AUTH]
    assert "you sent" in str(error.value) and "***" in str(error.value)
    told = [str(error.value), repr(error.value), repr(source), caplog.text, repr(seen)]
    told += [orjson.dumps(item.position).decode() + item.ref + item.error + item.excerpt for item in seen]
    for text in told:
        assert TOKEN not in text
