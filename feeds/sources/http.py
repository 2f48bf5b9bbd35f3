"""A partner's JSON API, read page by page, on hosts that settings.MPFEED_HTTP_SOURCE_HOSTS allows.

Config (a job's source settings)::

    {"url": "https://api.partner.example/v1/events?since={cursor}",
     "records_path": "data",          # where the page's list of records is; dots for nesting; "" = the body
     "next": {"type": "link", "path": "links.next"},      # a URL in the body (absolute or relative), or
             {"type": "cursor", "path": "meta.next_cursor", "param": "cursor"},  # ?cursor=<value> on the URL
             {"type": "link_header"},                      # RFC 8288: Link: <url>; rel="next"
             (absent or null: one page)
     "cursor_field": "updated_at",    # optional, dots allowed: its last value fills {cursor} on the next run
     "initial_cursor": "",            # optional: what fills {cursor} on the very first run
     "key_field": "id",               # optional: refs name the record ("api.partner.example:id=42")
     "timeout": 30}                   # seconds to wait for the API to answer (connect: MPFEED_CONNECT_TIMEOUT)

The Authorization header value is given apart, `HTTPSource.from_config(config, auth_header)`, and goes only
into that header: never into items, positions, refs, messages, repr or logs.

Positions (`Item.position`, JSON):

- within a run: `{"page": <the page's URL>, "number": N, "index": i}` (+ `"since"` with cursor_field): reading
  from it fetches that page again, yields its records after index i, then follows the next pages. That is exact
  when the API's pages are stable, as cursor and link pagination usually are.
- the last item of a complete read: `{"since": v}` with cursor_field (v: the cursor_field value of the last
  record that had one, else the value this run started from), or `None` without it. Reading from
  `{"since": v}` starts from the URL with {cursor} = v, URL-encoded; so the next run reads what is new, as long
  as the API lists records oldest first. From `None` it starts with initial_cursor.

A read ends at a page with no next link (or cursor), or with no records. Only http and https URLs on an allowed
host are fetched; next links and redirects must stay on the configured URL's host and never go from https to
http. 429, 5xx and network errors are retried (MPFEED_HTTP_SOURCE_ATTEMPTS, waits of at most
MPFEED_HTTP_SOURCE_MAX_WAIT seconds, Retry-After honoured up to that); then the read stops with a SourceError.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import orjson
import requests
from django.conf import settings

from feeds.mparticle.client import retry_after_seconds
from feeds.sources import Item, SourceError, with_last_position
from feeds.words import connection_message, kind

logger = logging.getLogger(__name__)

EXCERPT = 300
MAX_PAGE_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 5
NEXT_TYPES = {"link": {"path"}, "cursor": {"path", "param"}, "link_header": set()}
CONFIG_KEYS = {"url", "records_path", "next", "cursor_field", "initial_cursor", "key_field", "timeout"}
MISSING = object()


def allowed_hosts() -> set[str]:
    """Host names from settings.MPFEED_HTTP_SOURCE_HOSTS, lower case; "*" is not a wildcard."""
    hosts = getattr(settings, "MPFEED_HTTP_SOURCE_HOSTS", []) or []
    if isinstance(hosts, str):
        hosts = hosts.split(",")
    return {host.strip().strip("[]").rstrip(".").lower() for host in hosts if host.strip()} - {"*"}


def dig(value: Any, path: str) -> Any:
    """The value at a dotted path ("meta.next", "items.0.id"), or MISSING; "" is the value itself."""
    for part in path.split(".") if path else ():
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


@dataclass
class HTTPSource:
    url: str
    records_path: str = ""
    next: dict | None = None
    cursor_field: str | None = None
    initial_cursor: str = ""
    key_field: str | None = None
    timeout: float = 30.0
    auth_header: str | None = field(default=None, repr=False)
    sleep: Callable[[float], Any] = field(default=time.sleep, repr=False, compare=False)  # the tests' edge

    @classmethod
    def from_config(cls, config: dict, auth_header: str | None = None) -> HTTPSource:
        """A source from a job's config; SourceError (for people) when the config cannot work."""
        if not isinstance(config, dict):
            raise SourceError("the HTTP source settings must be an object")
        unknown = set(config) - CONFIG_KEYS
        if unknown:
            raise SourceError(f"unknown HTTP source setting {sorted(unknown)[0]!r}")
        url = config.get("url")
        if not isinstance(url, str) or not url:
            raise SourceError("the HTTP source needs a url")
        cursor_field = config.get("cursor_field") or None
        if cursor_field is not None and not isinstance(cursor_field, str):
            raise SourceError("cursor_field must be a field name")
        if url.count("{cursor}") > 1 or bool(cursor_field) != ("{cursor}" in url):
            raise SourceError("cursor_field and one {cursor} in the url go together: {cursor} gets its last value")
        next_ = config.get("next") or None
        if next_ is not None:
            kind = next_.get("type") if isinstance(next_, dict) else None
            if kind not in NEXT_TYPES:
                raise SourceError("next.type must be link, cursor or link_header")
            for name in NEXT_TYPES[kind]:
                if not isinstance(next_.get(name), str) or not next_[name]:
                    raise SourceError(f"next.{name} is needed with next.type {kind}")
        for name in ("records_path", "initial_cursor", "key_field"):
            if not isinstance(config.get(name) or "", str):
                raise SourceError(f"{name} must be text")
        timeout = config.get("timeout", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
            raise SourceError("timeout must be a number of seconds, at most 300")
        if auth_header is not None and ("\r" in auth_header or "\n" in auth_header):
            raise SourceError("the Authorization header value must be on one line")
        source = cls(
            url=url,
            records_path=config.get("records_path") or "",
            next=next_,
            cursor_field=cursor_field,
            initial_cursor=config.get("initial_cursor") or "",
            key_field=config.get("key_field") or None,
            timeout=float(timeout),
            auth_header=auth_header or None,
        )
        source._check_url(source._first_url(source.initial_cursor), first=True)
        return source

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def incremental(self) -> bool:
        """True when the last position of a complete read makes the next run read only what is new."""
        return self.cursor_field is not None

    def read(self, cursor: Any = None) -> Iterator[Item]:
        since, page, number, index = self.initial_cursor, None, 1, -1
        if isinstance(cursor, dict) and isinstance(cursor.get("page"), str):
            page, number, index = cursor["page"], cursor.get("number", 1), cursor.get("index", -1)
            if not isinstance(number, int) or not isinstance(index, int):
                raise SourceError(f"the saved position {cursor!r} is not one this source made")
            since = cursor.get("since", since)
        elif isinstance(cursor, dict) and set(cursor) == {"since"} and self.cursor_field:
            since = cursor["since"]
        elif cursor is not None:
            raise SourceError(f"the saved position {cursor!r} is not one this source made")
        if page is None:
            page = self._first_url(since)
            self._check_url(page, first=True)
        else:
            self._check_url(page)
        items = self._items(page, number, index, since)
        cursor_field = self.cursor_field

        def final(item: Item) -> dict | None:
            return {"since": item.position["since"]} if cursor_field else None

        return with_last_position(items, final)

    def _first_url(self, since: Any) -> str:
        return self.url.replace("{cursor}", quote(str(since), safe=""))

    def _check_url(self, url: str, first: bool = False) -> None:
        """Refuse URLs off the allow-list and next pages that leave the API's host or its https."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"only http and https URLs can be read, not {url[:100]!r}")
        if parts.username is not None or parts.password is not None:
            raise SourceError("put the API's credentials in the Authorization header, not in the URL")
        host = parts.hostname.rstrip(".")
        allowed = allowed_hosts()
        if host not in allowed:
            configured = getattr(settings, "MPFEED_HTTP_SOURCE_HOSTS", []) or []
            hint = " ('*' is not supported: list each host)" if "*" in configured else ""
            hint = hint or ("" if allowed else " (it is empty: no host is allowed)")
            raise SourceError(f"the host {host} is not in MPFEED_HTTP_SOURCE_HOSTS{hint}")
        if not first and host != self.host.rstrip("."):
            raise SourceError(f"the next page is on {host}, not on the API's host {self.host}: refused")
        if not first and parts.scheme == "http" and urlsplit(self.url).scheme == "https":
            raise SourceError("the next page is on http, not https: refused (the credentials would travel in clear)")

    def _items(self, url: str | None, number: int, skip_through: int, since: Any) -> Iterator[Item]:
        seen: set[str] = set()
        with requests.Session() as session:
            while url:
                if url in seen:
                    raise SourceError(f"the partner API's next page repeats page {url[:200]}: stopped")
                seen.add(url)
                body, headers = self._get(session, url)
                records = dig(body, self.records_path)
                if records is MISSING:
                    raise SourceError(f"the page {url[:200]} has no {self.records_path!r}")
                if records is None:
                    records = []
                if not isinstance(records, list):
                    where = repr(self.records_path) if self.records_path else "body"
                    raise SourceError(f"the page's {where} is {kind(records)}, not a list of records")
                next_url = self._next_url(body, headers, url) if records else None
                for index, record in enumerate(records):
                    if index <= skip_through:
                        continue
                    position = {"page": url, "number": number, "index": index}
                    if self.cursor_field:
                        value = dig(record, self.cursor_field) if isinstance(record, dict) else None
                        if isinstance(value, str | int | float) and not isinstance(value, bool):
                            since = value
                        position["since"] = since
                    yield self._item(record, number, index, position)
                url, number, skip_through = next_url, number + 1, -1

    def _item(self, record: Any, number: int, index: int, position: dict) -> Item:
        ref = f"{self.host}:page {number} item {index + 1}"
        if not isinstance(record, dict):
            excerpt = orjson.dumps(record)[:EXCERPT].decode("utf-8", "replace")
            return Item(
                ref=ref, error=f"expected a JSON object, got {kind(record)}", excerpt=excerpt, position=position
            )
        key = dig(record, self.key_field) if self.key_field else None
        if isinstance(key, str | int) and not isinstance(key, bool):
            ref = f"{self.host}:{self.key_field}={key}"
        return Item(ref=ref, record=record, position=position)

    def _next_url(self, body: Any, headers, url: str) -> str | None:
        if not self.next:
            return None
        next_type = self.next["type"]
        if next_type == "link_header":
            target = requests.utils.parse_header_links(headers.get("Link", "")) if headers.get("Link") else []
            links = [link.get("url") for link in target if "next" in link.get("rel", "").split()]
            return self._checked(urljoin(url, links[0])) if links and links[0] else None
        value = dig(body, self.next["path"])
        if value is MISSING or value is None or value == "":
            return None
        if next_type == "link":
            if not isinstance(value, str):
                raise SourceError(f"the page's {self.next['path']!r} is {kind(value)}, not a link")
            return self._checked(urljoin(url, value))
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise SourceError(f"the page's {self.next['path']!r} is {kind(value)}, not a cursor")
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != self.next["param"]]
        query.append((self.next["param"], str(value)))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _checked(self, url: str) -> str:
        self._check_url(url)
        return url

    def _get(self, session: requests.Session, url: str) -> tuple[Any, Any]:
        """The page's JSON and headers; transient failures retried, the rest a SourceError."""
        attempts = max(1, int(getattr(settings, "MPFEED_HTTP_SOURCE_ATTEMPTS", 5)))
        max_wait = float(getattr(settings, "MPFEED_HTTP_SOURCE_MAX_WAIT", 30))
        base = float(getattr(settings, "MPFEED_BACKOFF_BASE", 0.5))
        for attempt in range(1, attempts + 1):
            retry_after, problem = None, ""
            try:
                response = self._request(session, url)
            except requests.Timeout:
                problem = "it did not answer in time"
            except requests.RequestException as e:
                problem = connection_message(e)
            else:
                with response:
                    status = response.status_code
                    if status in (401, 403):
                        raise SourceError(f"the partner API refused the credentials (HTTP {status})")
                    if status == 429 or status >= 500:
                        problem, retry_after = (
                            f"it answered HTTP {status}",
                            retry_after_seconds(response.headers.get("Retry-After")),
                        )
                    elif not 200 <= status < 300:
                        excerpt = self._scrub(response.raw.read(EXCERPT, decode_content=True))
                        raise SourceError(f"the partner API answered HTTP {status} for {url[:200]}: {excerpt}")
                    else:
                        try:
                            content = self._content(response)
                        except requests.RequestException as e:
                            problem = f"the page was cut off ({connection_message(e)})"
                        else:
                            return self._json(content, response, url), response.headers
            if attempt == attempts:
                raise SourceError(f"the partner API at {self.host} failed {attempts} times; last: {problem}")
            backoff = random.uniform(0, min(max_wait, base * 2 ** (attempt - 1)))  # noqa: S311 - jitter
            wait = min(max_wait, retry_after) if retry_after is not None else backoff
            logger.warning(
                "partner API %s: %s; retry %d of %d in %.1f s", self.host, problem, attempt, attempts - 1, wait
            )
            self.sleep(wait)
        raise AssertionError("unreachable")

    def _request(self, session: requests.Session, url: str) -> requests.Response:
        """GET with explicit timeouts, following a few redirects that stay on the API's host."""
        headers: dict[str, str | bytes] = {"Accept": "application/json", "User-Agent": "mpfeed"}
        if self.auth_header:
            # As UTF-8 bytes: requests would encode a str as latin-1 and fail on anything else.
            headers["Authorization"] = self.auth_header.encode()
        connect = float(getattr(settings, "MPFEED_CONNECT_TIMEOUT", 5))
        for _ in range(MAX_REDIRECTS + 1):
            response = session.get(
                url, headers=headers, timeout=(connect, self.timeout), stream=True, allow_redirects=False
            )
            if not response.is_redirect:
                return response
            response.close()
            url = urljoin(url, response.headers["Location"])
            self._check_url(url)
        raise SourceError(f"the partner API redirected more than {MAX_REDIRECTS} times")

    def _content(self, response: requests.Response) -> bytes:
        limit = int(getattr(settings, "MPFEED_HTTP_SOURCE_MAX_PAGE_BYTES", MAX_PAGE_BYTES))
        too_large = SourceError(f"a page of the partner API is larger than {limit / 1024 / 1024:g} MB: refused")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        # The read timeout bounds each wait for bytes; this bounds a page that trickles in.
        deadline = time.monotonic() + 5 * self.timeout
        content = bytearray()
        for block in response.iter_content(64 * 1024):  # decompressed: a gzip bomb is cut off too
            content += block
            if len(content) > limit:
                raise too_large
            if time.monotonic() > deadline:
                raise requests.Timeout("the page took too long")
        return bytes(content)

    def _json(self, content: bytes, response: requests.Response, url: str) -> Any:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            kind = response.headers.get("Content-Type", "no content type")
            excerpt = self._scrub(content[:EXCERPT])
            raise SourceError(f"the partner API's page {url[:200]} is not JSON ({kind}): {excerpt}") from None

    def _scrub(self, text: bytes | str) -> str:
        """Text from the API for a message, without the credentials should the API echo them."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if self.auth_header:
            for secret in sorted({self.auth_header, *self.auth_header.split()[1:]}, key=len, reverse=True):
                if len(secret) >= 4:
                    text = text.replace(secret, "***")
        return " ".join(text.split())
