"""The Events API client: one narrow function that sends a body and classifies every answer.

https://docs.mparticle.com/developers/server/http/ . Every call has explicit timeouts and never raises for
HTTP or network failures: the answer says what happened, whether it is worth retrying, and how long the
server asked us to wait. No Django imports here.
"""

from __future__ import annotations

import enum
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime

import orjson
import requests
from requests.auth import HTTPBasicAuth

from feeds.words import connection_message

from . import schema

USER_AGENT = "mpfeed/1.0"
EXCERPT_LENGTH = 2000


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"  # 202, nothing refused
    PARTIAL = "partial"  # 202 with an `errors` body: the named batches were refused
    BAD_REQUEST = "bad_request"  # 400: permanent for this payload
    UNAUTHORIZED = "unauthorized"  # 401: no credentials sent
    FORBIDDEN = "forbidden"  # 403: credentials rejected
    TOO_LARGE = "too_large"  # 413: split and resend
    THROTTLED = "throttled"  # 429: wait, then resend unchanged
    SERVER_ERROR = "server_error"  # 5xx: transient
    NETWORK_ERROR = "network_error"  # timeout, reset, refused: transient
    UNEXPECTED = "unexpected"  # any other status: kept for a person to look at


# Worth sending again unchanged: a throttle, or a fault of the server or the network.
SERVER_FAULTS = frozenset({Outcome.SERVER_ERROR, Outcome.NETWORK_ERROR})
TRANSIENT = frozenset({Outcome.THROTTLED, *SERVER_FAULTS})
CREDENTIALS = frozenset({Outcome.UNAUTHORIZED, Outcome.FORBIDDEN})
# The request was taken (some of its batches may have been refused).
DELIVERED = frozenset({Outcome.ACCEPTED, Outcome.PARTIAL})


@dataclass(frozen=True, slots=True)
class BatchError:
    index: int | None  # position of the refused batch in the request body, when the server names it
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    status: int | None
    latency: float
    errors: tuple[BatchError, ...] = ()
    retry_after: float | None = None
    rate_limit_used: int | None = None
    rate_limit_scope: str | None = None
    excerpt: str = ""
    error: str = ""  # network failure, written for people

    @property
    def delivered(self) -> bool:
        return self.outcome in DELIVERED

    @property
    def judged_credentials(self) -> bool:
        """Whether mParticle said something of the credentials: accepted them (2xx) or refused them (401/403).
        Not a network error, nor a throttle or fault of the server that says nothing about them."""
        return self.delivered or self.outcome in CREDENTIALS

    def describe(self) -> str:
        if self.outcome is Outcome.NETWORK_ERROR:
            return f"network error: {self.error}"
        text = f"HTTP {self.status} ({self.outcome.value})"
        if self.errors:
            text += ": " + "; ".join(e.message for e in self.errors[:3])
        return text


_PATH_INDEX = re.compile(r"Path\s+'\[(\d+)\]")


def parse_errors(body: bytes) -> tuple[BatchError, ...]:
    """Read an `{"errors": [{"code":..., "message":...}]}` body; messages name a batch as Path '[n]'."""
    if not body:
        return ()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ()
    items = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return ()
    errors = []
    for item in items:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", ""))
        match = _PATH_INDEX.search(message)
        errors.append(
            BatchError(
                index=int(match.group(1)) if match else None,
                code=str(item.get("code", "")),
                message=message[:EXCERPT_LENGTH],
            )
        )
    return tuple(errors)


def retry_after_seconds(value: str | None) -> float | None:
    """The seconds a Retry-After header asks to wait (None when absent or unusable). Pure, so that every HTTP
    client of the project reads it alike (the partner HTTP source too)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        # RFC 9110 also allows an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT"): the seconds until then.
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": a date in UTC
            when = when.replace(tzinfo=UTC)
        return max(when.timestamp() - time.time(), 0.0)
    if not math.isfinite(seconds):
        # "inf" or "nan" parse as floats but cannot be waited for.
        return None
    return max(seconds, 0.0)


def _int_header(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except (ValueError, OverflowError):
        return None


def classify(status: int, body: bytes, headers, latency: float) -> Answer:
    errors = parse_errors(body) if body else ()
    if status in (200, 201, 202, 204):
        outcome = Outcome.PARTIAL if errors else Outcome.ACCEPTED
    elif status == 400:
        outcome = Outcome.BAD_REQUEST
    elif status == 401:
        outcome = Outcome.UNAUTHORIZED
    elif status == 403:
        outcome = Outcome.FORBIDDEN
    elif status == 413:
        outcome = Outcome.TOO_LARGE
    elif status == 429:
        outcome = Outcome.THROTTLED
    elif 500 <= status < 600:
        outcome = Outcome.SERVER_ERROR
    else:
        outcome = Outcome.UNEXPECTED
    return Answer(
        outcome=outcome,
        status=status,
        latency=latency,
        errors=errors,
        retry_after=retry_after_seconds(headers.get("Retry-After")),
        rate_limit_used=_int_header(headers.get("X-mp-rate-limit-percentage-used")),
        rate_limit_scope=headers.get("X-mp-rate-limit-exceeded") or None,
        excerpt=body[:EXCERPT_LENGTH].decode("utf-8", "replace"),
    )


def base_url_for(pod: str, custom_url: str | None = None) -> str:
    """The Events API base URL (ending in /v2) for a pod; `custom_url` only for the sandbox pod."""
    if pod == "sandbox":
        if not custom_url:
            raise ValueError("the sandbox pod needs an endpoint URL")
        return custom_url.rstrip("/")
    try:
        return schema.POD_BASE_URLS[pod]
    except KeyError:
        raise ValueError(f"unknown pod {pod!r}") from None


@dataclass
class EventsClient:
    """Sends bodies to one workspace's Events API with its key and secret (HTTP Basic)."""

    base_url: str
    api_key: str
    api_secret: str = field(repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def post(self, path: str, body: bytes) -> Answer:
        """POST an already serialized body to base_url + path and classify the answer."""
        started = time.monotonic()
        try:
            response = self.session.post(
                self.base_url + path,
                data=body,
                # As UTF-8 bytes (RFC 7617): requests encodes str as latin-1 and raises on anything else.
                auth=HTTPBasicAuth(self.api_key.encode(), self.api_secret.encode()),
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
                timeout=(self.connect_timeout, self.read_timeout),
                allow_redirects=False,
            )
            content = response.content
        except requests.Timeout:
            return self._network_error(started, "the Events API did not answer in time")
        except requests.ConnectionError as e:
            return self._network_error(started, connection_message(e))
        except requests.RequestException as e:
            return self._network_error(started, type(e).__name__)
        return classify(response.status_code, content, response.headers, time.monotonic() - started)

    def _network_error(self, started: float, message: str) -> Answer:
        return Answer(outcome=Outcome.NETWORK_ERROR, status=None, latency=time.monotonic() - started, error=message)

    # The connection test sends one batch; the engine sends stored bodies through post().
    def upload(self, batch: dict) -> Answer:
        # https://docs.mparticle.com/developers/server/http/#v2events
        return self.post(schema.EVENTS_PATH, orjson.dumps(batch))

    def close(self) -> None:
        self.session.close()
