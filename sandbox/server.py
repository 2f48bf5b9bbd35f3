"""A fake mParticle Events API for tests, local runs and benchmarks.

It does what mParticle's Events API documentation says the real one does: the three POST paths under /v2 and
/s2s/v2, Basic auth, size and shape checks, per-batch validation, a token bucket of batches per second per API
key, seeded fault injection, de-duplication by source_request_id and the historical rules; and it has an
inspection API (in-process methods and GET /_sandbox/state).

There is no internet on the build machines, so this is what every client and engine test talks to: it must be
strict where mParticle is strict and must never crash on bad input. No Django imports: stdlib + orjson only.

Run it standalone with ``python -m sandbox --credential KEY:SECRET``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from feeds.mparticle.schema import (
    BULK_PATH,
    DEFAULT_BATCHES_PER_SECOND,
    EVENTS_PATH,
    HISTORICAL_MIN_AGE_MS,
    HISTORICAL_PATH,
    MAX_BATCHES_PER_REQUEST,
    MAX_REQUEST_BYTES,
)
from feeds.words import json_type, truth
from sandbox.checks import bulk_message, path_message, validate_batch
from sandbox.keys import UNSET, KeyCounts, KeyLimits

logger = logging.getLogger(__name__)

CREDENTIALS_ENV = "MPFEED_SANDBOX_CREDENTIALS"

# The real API lives under /v2 on the pod hosts and under /s2s/v2 on the partner (Feed) host.
# https://docs.mparticle.com/developers/server/http/#endpoint
API_PREFIXES: tuple[str, ...] = ("/v2", "/s2s/v2")
API_PATHS: frozenset[str] = frozenset(
    prefix + path for prefix in API_PREFIXES for path in (EVENTS_PATH, BULK_PATH, HISTORICAL_PATH)
)
STATE_PATH = "/_sandbox/state"
RESET_PATH = "/_sandbox/reset"
CONFIG_PATH = "/_sandbox/config"

HISTORICAL_NO_EVENTS = "historical: no events"
HISTORICAL_NO_TIMESTAMP = "historical: event without timestamp_unixtime_ms"
HISTORICAL_TOO_NEW = "historical: event newer than 72 hours"

# Bodies of refused requests are read and thrown away so the keep-alive connection stays usable, but only up
# to this size: beyond it the connection is closed instead of reading megabytes for nothing.
MAX_DRAIN_BYTES = 16 * 1024 * 1024
# How many request log entries GET /_sandbox/state returns.
STATE_LOG_ENTRIES = 200
# How many problems of one batch are spelled out in its error message.
# An idle keep-alive connection is closed after this, so handler threads never pile up forever.
CONNECTION_TIMEOUT_SECONDS = 60.0


@dataclass
class FaultConfig:
    """Random trouble, as fractions of all requests that passed route, auth and size checks.

    One random draw per request decides, so the outcomes are mutually exclusive and the rates must add up to
    at most 1. The same seed gives the same sequence of outcomes for a sequential client.
    """

    seed: int = 0
    throttle_rate: float = 0.0  # answered 429 at random (besides the token bucket)
    error_rate: float = 0.0  # answered 500, 502 or 503
    drop_rate: float = 0.0  # connection closed without any answer, after the body was read
    slow_rate: float = 0.0  # answered normally after slow_seconds
    slow_seconds: float = 2.0
    retry_after: int | None = 1  # Retry-After sent on random 429s; None leaves the header out

    def __post_init__(self) -> None:
        rates = (self.throttle_rate, self.error_rate, self.drop_rate, self.slow_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates):
            raise ValueError("fault rates must be between 0 and 1")
        if sum(rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must add up to at most 1 (one outcome per request)")
        if self.slow_seconds < 0:
            raise ValueError("slow_seconds must not be negative")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must not be negative")


@dataclass(frozen=True)
class KeptBatch:
    api_key: str
    path: str  # the request path as sent, e.g. "/s2s/v2/bulkevents/historical"
    source_request_id: str | None
    batch: dict[str, Any]  # the parsed batch exactly as received; shared, do not mutate


@dataclass(frozen=True)
class Reject:
    api_key: str
    path: str
    index: int  # position in the bulk array; 0 on /events
    reason: str
    source_request_id: str | None


@dataclass(frozen=True)
class LoggedRequest:
    at: float  # the sandbox clock (monotonic unless injected)
    method: str
    path: str
    api_key: str | None  # None when auth failed or did not run (404, 405)
    status: int  # 0 when the connection was dropped without an answer
    batches: int  # batches in the parsed body; 0 when it did not parse
    retry_after: int | None
    fault: str | None  # "throttle", "error", "drop" or "slow" when injected


class _Refusal(Exception):
    """A request answered before it reached the batches, with an errors body."""

    def __init__(self, status: int, code: str, *messages: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(*messages)
        self.status = status
        self.code = code
        self.messages = messages
        self.headers = headers or {}


class Sandbox:
    """The fake API and everything it kept. start() for tests, serve_forever() for the command line.

    rate_limit is batches per second per API key (None or 0: unlimited); burst is the bucket size (default one
    second's worth); key_limits gives keys a limit of their own (a bucket of one second of it). latency is added
    to every answer of the API paths (half before the request is handled, half after), as a real service's round
    trip. keep_batches=False keeps only ids and counts (for benchmarks of millions of batches). clock and now_ms
    are injectable so token refills and the 72-hour rule are deterministic.
    """

    def __init__(
        self,
        credentials: dict[str, str] | None = None,
        *,
        rate_limit: float | None = DEFAULT_BATCHES_PER_SECOND,
        burst: float | None = None,
        faults: FaultConfig | None = None,
        send_retry_after: bool = True,
        report_use: bool = True,
        key_limits: dict[str, float] | None = None,
        latency: float = 0.0,
        keep_batches: bool = True,
        clock: Callable[[], float] = time.monotonic,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        # One lock guards everything below: handler threads, the test thread and configure() all touch it.
        self._lock = threading.RLock()
        self._credentials: dict[str, str] = dict(credentials or {})
        self._limits = KeyLimits(rate_limit, burst, key_limits, lambda: self._clock())
        self._counts = KeyCounts()
        if latency < 0:
            raise ValueError("latency must not be negative")
        self._latency = latency
        self._keep_batches = keep_batches
        # A copy, so that changing the caller's object later cannot bypass configure() and the reseeding.
        self._faults = replace(faults) if faults else FaultConfig()
        self._send_retry_after = send_retry_after
        self._report_use = report_use
        self._clock = clock
        self._now_ms = now_ms
        self._rng = random.Random(self._faults.seed)
        self._queued_faults: deque[tuple[str, int]] = deque()
        self._kept: list[KeptBatch] = []
        self._kept_count = 0
        self._kept_events = 0
        self._in_flight = self._max_in_flight = 0  # API requests being answered now, and the most at once
        self._message_ids: list[str] = []
        self._kept_ids: set[tuple[str, str]] = set()
        self._rejects: list[Reject] = []
        self._duplicates: list[tuple[str, str]] = []
        self._log: list[LoggedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- configuration -------------------------------------------------------------------------------------

    def add_credentials(self, key: str, secret: str) -> None:
        with self._lock:
            self._credentials[key] = secret

    def configure(
        self,
        *,
        rate_limit: float | None = UNSET,
        burst: float | None = UNSET,
        faults: FaultConfig | None = UNSET,
        send_retry_after: bool = UNSET,
        report_use: bool = UNSET,
        key_limits: dict[str, float | None] = UNSET,
        latency: float = UNSET,
    ) -> None:
        """Change behaviour while running. A new default rate refills every bucket; a key's own new limit keeps its
        tokens (None removes it); new faults reseed the random draws."""
        with self._lock:
            self._limits.configure(rate_limit=rate_limit, burst=burst, key_limits=key_limits)
            if latency is not UNSET:
                if latency is None or latency < 0:
                    raise ValueError("latency must not be negative")
                self._latency = float(latency)
            if faults is not UNSET:
                self._faults = replace(faults) if faults else FaultConfig()
                self._rng = random.Random(self._faults.seed)
            if send_retry_after is not UNSET:
                self._send_retry_after = send_retry_after
            if report_use is not UNSET:
                self._report_use = report_use

    def queue_faults(self, faults: Iterable[str | int]) -> None:
        """Script the faults of the next requests, in order, ahead of the random ones.

        Each entry is "drop", "slow", "throttle" (or 429), "error" (a random 500/502/503) or a 5xx status such
        as "503". A test can then say exactly what happens: `queue_faults(["503", "drop"])`.
        """
        parsed = [_parse_fault(fault) for fault in faults]
        with self._lock:
            self._queued_faults.extend(parsed)

    def reset(self) -> None:
        """Forget what was kept, rejected and logged; refill buckets and reseed faults. Keep credentials/config."""
        with self._lock:
            self._queued_faults.clear()
            self._limits.reset()
            self._counts.reset()
            self._kept.clear()
            self._kept_count = self._kept_events = 0
            self._max_in_flight = self._in_flight
            self._message_ids.clear()
            self._kept_ids.clear()
            self._rejects.clear()
            self._duplicates.clear()
            self._log.clear()
            self._rng = random.Random(self._faults.seed)

    @property
    def rate_limit(self) -> float | None:
        return self._limits.rate_limit

    @property
    def burst(self) -> float | None:
        return self._limits.burst

    @property
    def latency(self) -> float:
        return self._latency

    def limit_for(self, api_key: str) -> float | None:
        """The batches per second `api_key` may send (its own limit, or the default)."""
        return self._limits.limit_for(api_key)

    @property
    def faults(self) -> FaultConfig:
        return replace(self._faults)

    @property
    def send_retry_after(self) -> bool:
        return self._send_retry_after

    @property
    def report_use(self) -> bool:
        """Whether successes carry X-mp-rate-limit-percentage-used (a server that leaves it out can be tried)."""
        return self._report_use

    @property
    def api_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._credentials)

    # -- serving ---------------------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a daemon thread; return the base URL without a path, e.g. http://127.0.0.1:40123."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        server = self._make_server(host, port)
        # A short poll interval so stop() returns quickly: tests start and stop a sandbox each.
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="mparticle-sandbox", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not running")
        return self._server.url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def serve_forever(self, host: str, port: int, ready: Callable[[str], None] | None = None) -> None:
        """Serve in the calling thread until interrupted; `ready` gets the base URL once the port is bound."""
        server = self._make_server(host, port)
        try:
            if ready is not None:
                ready(server.url)
            server.serve_forever()
        finally:
            server.close_connections()
            server.server_close()

    def _make_server(self, host: str, port: int) -> _Server:
        server = _Server((host, port), _Handler)
        server.sandbox = self
        return server

    # -- inspection (copies, safe from any thread) -----------------------------------------------------------

    def kept(self) -> list[KeptBatch]:
        with self._lock:
            return list(self._kept)

    def batches(self) -> list[dict[str, Any]]:
        with self._lock:
            return [kept.batch for kept in self._kept]

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [event for kept in self._kept for event in kept.batch.get("events") or ()]

    def rejects(self) -> list[Reject]:
        with self._lock:
            return list(self._rejects)

    def duplicates(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._duplicates)

    @property
    def max_in_flight(self) -> int:
        """The most API requests answered at once since the start (or the last reset)."""
        with self._lock:
            return self._max_in_flight

    def requests_log(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def count_by_status(self) -> dict[int, int]:
        """Requests by HTTP status; 0 counts connections dropped without an answer."""
        counts: dict[int, int] = {}
        with self._lock:
            for entry in self._log:
                counts[entry.status] = counts.get(entry.status, 0) + 1
        return counts

    def snapshot(self, *, ids: bool = True) -> dict[str, Any]:
        """Everything kept and counted; without the long lists (ids, rejects, log) when `ids` is false."""
        with self._lock:
            reasons: dict[str, int] = {}
            for reject in self._rejects:
                reasons[reject.reason] = reasons.get(reject.reason, 0) + 1
            state = {
                "clock": self._clock(),
                "kept_batches": self._kept_count,
                "kept_events": self._kept_events,
                "rejects": [asdict(reject) for reject in self._rejects],
                "rejects_by_reason": reasons,
                "duplicates": len(self._duplicates),
                "requests": len(self._log),
                # JSON object keys must be strings.
                "requests_by_status": {str(status): n for status, n in sorted(self.count_by_status().items())},
                "request_log": [asdict(entry) for entry in self._log[-STATE_LOG_ENTRIES:]],
                "source_request_ids": [k.source_request_id for k in self._kept if k.source_request_id is not None],
                "source_message_ids": list(self._message_ids),
                "keys": self._counts.snapshot(),
                "max_in_flight": self._max_in_flight,
                "config": {
                    "queued_faults": [
                        f"{fault}:{status}" if status else fault for fault, status in self._queued_faults
                    ],
                    "rate_limit": self._limits.rate_limit,
                    "burst": self._limits.burst,
                    "key_limits": self._limits.key_limits,
                    "latency": self._latency,
                    "keep_batches": self._keep_batches,
                    "send_retry_after": self._send_retry_after,
                    "report_use": self._report_use,
                    "faults": asdict(self._faults),
                    "api_keys": sorted(self._credentials),
                },
            }
            if not ids:
                for name in ("rejects", "request_log", "source_request_ids", "source_message_ids"):
                    del state[name]
            return state

    # -- decisions taken by the handler, each under the lock --------------------------------------------------

    def _arrived(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _departed(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _log_request(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def _authenticate(self, header: str | None) -> str:
        """Return the API key, or raise _Refusal 401/403."""
        if header is None:
            raise _Refusal(401, "UNAUTHORIZED", "Missing Authorization header (HTTP Basic: API key and secret)")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise _Refusal(403, "FORBIDDEN", "Authorization must use the Basic scheme")
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise _Refusal(403, "FORBIDDEN", "Authorization credentials could not be decoded") from None
        key, colon, secret = decoded.partition(":")
        with self._lock:
            expected = self._credentials.get(key)
        # compare_digest so the fake does not teach anyone a timing-leaky comparison.
        if not colon or expected is None or not hmac.compare_digest(secret.encode(), expected.encode()):
            raise _Refusal(403, "FORBIDDEN", "Invalid API key or secret")
        return key

    def _draw_fault(self) -> tuple[str | None, int]:
        """Pick this request's fault (and the 5xx status for errors) from the seeded generator."""
        with self._lock:
            if self._queued_faults:
                fault, status = self._queued_faults.popleft()
                if fault == "error" and not status:
                    status = self._rng.choice((500, 502, 503))
                return fault, status
            faults = self._faults
            draw = self._rng.random()
            if draw < faults.throttle_rate:
                return "throttle", 429
            draw -= faults.throttle_rate
            if draw < faults.error_rate:
                return "error", self._rng.choice((500, 502, 503))
            draw -= faults.error_rate
            if draw < faults.drop_rate:
                return "drop", 0
            draw -= faults.drop_rate
            if draw < faults.slow_rate:
                return "slow", 0
            return None, 0

    def _fault_settings(self) -> FaultConfig:
        with self._lock:
            return self._faults

    def _take_tokens(self, api_key: str, cost: int) -> tuple[int | None, int]:
        """Spend `cost` tokens of the key's bucket: (None, percent used) when allowed, else (seconds to wait, 0)."""
        return self._limits.take(api_key, cost)

    def _accept(self, api_key: str, path: str, items: Sequence[Any], bulk: bool) -> list[str]:
        """Validate, apply the historical rules, de-duplicate and keep. Return the error messages to answer."""
        historical = path.endswith(HISTORICAL_PATH)
        errors: list[str] = []
        with self._lock:
            for index, batch in enumerate(items):
                request_id = _source_request_id(batch)
                problems = validate_batch(batch)
                if problems:
                    reason = bulk_message(index, problems) if bulk else "; ".join(path_message(*p) for p in problems)
                    self._rejects.append(Reject(api_key, path, index, reason, request_id))
                    if bulk:
                        errors.append(reason)
                    else:
                        errors.extend(path_message(*p) for p in problems)
                    continue
                if historical:
                    late = self._historical_reason(batch)
                    if late is not None:
                        # Silently not processed, as mParticle does: the answer stays a plain 202.
                        self._rejects.append(Reject(api_key, path, index, late, request_id))
                        continue
                if request_id is not None:
                    if (api_key, request_id) in self._kept_ids:
                        self._duplicates.append((api_key, request_id))
                        self._counts.duplicate(api_key)
                        continue
                    self._kept_ids.add((api_key, request_id))
                events = batch.get("events") or ()
                self._kept_count += 1
                self._kept_events += len(events)
                self._message_ids.extend(
                    event["data"]["source_message_id"]
                    for event in events
                    if isinstance(event.get("data"), dict) and event["data"].get("source_message_id") is not None
                )
                self._counts.kept(api_key, len(events), self._clock())
                if self._keep_batches:
                    self._kept.append(KeptBatch(api_key, path, request_id, batch))
        return errors

    def _historical_reason(self, batch: dict[str, Any]) -> str | None:
        events = batch.get("events") or []
        if not events:
            return HISTORICAL_NO_EVENTS
        now = self._now_ms()
        stamps = [event["data"].get("timestamp_unixtime_ms") for event in events]
        if any(stamp is None for stamp in stamps):
            return HISTORICAL_NO_TIMESTAMP
        if any(now - stamp < HISTORICAL_MIN_AGE_MS for stamp in stamps):
            return HISTORICAL_TOO_NEW
        return None


def _parse_fault(fault: str | int) -> tuple[str, int]:
    text = str(fault).strip().lower()
    if text in ("drop", "slow", "error"):
        return text, 0
    if text in ("throttle", "429"):
        return "throttle", 429
    if text.isdigit() and 500 <= int(text) <= 599:
        return "error", int(text)
    raise ValueError(f"unknown fault {fault!r}: use drop, slow, throttle, 429, error or a 5xx status")


def _source_request_id(batch: Any) -> str | None:
    if isinstance(batch, dict) and isinstance(batch.get("source_request_id"), str):
        return batch["source_request_id"]
    return None


def _errors_body(code: str, *messages: str) -> bytes:
    return orjson.dumps({"errors": [{"code": code, "message": message} for message in messages]})


# -- HTTP --------------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Never wait for handler threads on close: a client's idle keep-alive connection would block stop().
    block_on_close = False
    sandbox: Sandbox

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    @property
    def url(self) -> str:
        """The base URL of the bound address (the port the system chose when asked for 0)."""
        host, port = self.server_address[:2]
        assert isinstance(host, str)  # an AF_INET socket's name; the stub allows bytes for other families
        return f"http://{host}:{port}"

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Cut open connections so a stopped sandbox cannot answer anything late."""
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-request are routine here (drop faults, timeouts); never print tracebacks.
        logger.debug("sandbox connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so every answer carries Content-Length
    server_version = "mparticle-sandbox"
    timeout = CONNECTION_TIMEOUT_SECONDS
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's delayed ACK
    # (about 40 ms per request on Linux), which would make the sandbox the bottleneck of every benchmark.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # The sandbox keeps its own request log; stderr noise would drown test output.
        pass

    # -- methods ---------------------------------------------------------------------------------------------

    def do_POST(self) -> None:
        self._guarded(self._post)

    def do_GET(self) -> None:
        self._guarded(self._other_method)

    def do_HEAD(self) -> None:
        self._guarded(self._other_method)

    def do_PUT(self) -> None:
        self._guarded(self._other_method)

    def do_PATCH(self) -> None:
        self._guarded(self._other_method)

    def do_DELETE(self) -> None:
        self._guarded(self._other_method)

    def do_OPTIONS(self) -> None:
        self._guarded(self._other_method)

    def _guarded(self, handler: Callable[[], None]) -> None:
        """Run a handler so that no malformed request can kill the thread or leave the client hanging."""
        self._answered = False
        self._delay = 0.0
        self._api_key: str | None = None
        self._batches = 0
        self._fault: str | None = None
        try:
            handler()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            logger.exception("sandbox failed on %s %s", self.command, self.path)
            self.close_connection = True
            if not self._answered:
                with contextlib.suppress(OSError):
                    self._answer(500, _errors_body("INTERNAL_SERVER_ERROR", "The sandbox failed; see its log"))

    # -- routing ---------------------------------------------------------------------------------------------

    @property
    def _route(self) -> str:
        return urlsplit(self.path).path

    @property
    def _sandbox(self) -> Sandbox:
        return self.server.sandbox

    def _other_method(self) -> None:
        route = self._route
        # The inspection routes need no auth: this is a test fake bound to loopback, holding fake data.
        if route == STATE_PATH and self.command == "GET":
            self._drain()
            # ?ids=0 leaves out the lists of ids, rejects and requests (a benchmark polls millions of batches).
            ids = truth(parse_qs(urlsplit(self.path).query).get("ids", ["1"])[-1]) is not False
            self._answer(200, orjson.dumps(self._sandbox.snapshot(ids=ids)), log=False)
        elif route in API_PATHS or route in (STATE_PATH, RESET_PATH, CONFIG_PATH):
            self._drain()
            allow = "GET" if route == STATE_PATH else "POST"
            self._refuse(405, "METHOD_NOT_ALLOWED", f"{self.command} is not allowed here", {"Allow": allow})
        else:
            self._drain()
            self._refuse(404, "NOT_FOUND", f"No such endpoint: {route}")

    def _post(self) -> None:
        route = self._route
        if route == RESET_PATH:
            self._drain()
            self._sandbox.reset()
            self._answer(200, orjson.dumps({"reset": True}), log=False)
            return
        if route == CONFIG_PATH:
            try:
                self._configure()
            except _Refusal as refusal:
                self._answer(refusal.status, _errors_body(refusal.code, *refusal.messages), refusal.headers)
            return
        if route == STATE_PATH:
            self._drain()
            self._refuse(405, "METHOD_NOT_ALLOWED", "POST is not allowed here", {"Allow": "GET"})
            return
        if route not in API_PATHS:
            self._drain()
            self._refuse(404, "NOT_FOUND", f"No such endpoint: {route}")
            return
        self._sandbox._arrived()
        try:
            self._serve_events(route)
        except _Refusal as refusal:
            self._answer(refusal.status, _errors_body(refusal.code, *refusal.messages), refusal.headers)
        finally:
            self._sandbox._departed()

    def _configure(self) -> None:
        """POST /_sandbox/config {"rate_limit", "burst", "latency", "key_limits": {key: rate or null},
        "send_retry_after", "report_use"}: change what is given, while running; answers the config."""
        body = self._read_body()
        if body is None:
            return
        try:
            changes = orjson.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            allowed = {"rate_limit", "burst", "latency", "key_limits", "send_retry_after", "report_use"}
            unknown = sorted(set(changes) - allowed)
            if unknown:
                raise ValueError(f"unknown settings: {', '.join(unknown)}")
            if "key_limits" in changes and not isinstance(changes["key_limits"], dict):
                raise ValueError("key_limits must map API keys to batches per second (or null)")
            self._sandbox.configure(**changes)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            self._refuse(400, "BAD_REQUEST", f"Invalid sandbox configuration: {exc}")
            return
        self._answer(200, orjson.dumps(self._sandbox.snapshot()["config"]), log=False)

    def _serve_events(self, route: str) -> None:
        sandbox = self._sandbox
        # Auth before anything else, as mParticle does (docs: "What the sandbox must do", point 2).
        try:
            self._api_key = sandbox._authenticate(self.headers.get("Authorization"))
        except _Refusal:
            self._drain()
            raise

        body = self._read_body()
        if body is None:
            return  # the client went away mid-body; nobody to answer
        latency = sandbox.latency
        if latency:
            # Half the round trip before the request is handled, half before the answer goes out (_answer).
            time.sleep(latency / 2)
            self._delay = latency / 2

        fault, error_status = sandbox._draw_fault()
        self._fault = fault
        if fault == "drop":
            # Read everything, answer nothing: what a load balancer dropping the connection looks like.
            self.close_connection = True
            self._log(0, None)
            self._answered = True
            return
        if fault == "throttle":
            retry_after = sandbox._fault_settings().retry_after
            raise _Refusal(
                429, "TOO_MANY_REQUESTS", "Throttled (injected fault)", headers=_throttle_headers(retry_after)
            )
        if fault == "error":
            raise _Refusal(error_status, "SERVER_ERROR", f"Injected server error {error_status}")
        if fault == "slow":
            time.sleep(sandbox._fault_settings().slow_seconds)

        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _Refusal(400, "BAD_REQUEST", f"Body is not valid UTF-8 JSON: {exc}") from None

        bulk = route.endswith((BULK_PATH, HISTORICAL_PATH))
        if bulk:
            if not isinstance(payload, list):
                raise _Refusal(400, "BAD_REQUEST", f"Body must be an array of batches, got {json_type(payload)}")
            self._batches = len(payload)
            if not 1 <= len(payload) <= MAX_BATCHES_PER_REQUEST:
                raise _Refusal(
                    400,
                    "BAD_REQUEST",
                    f"Body must hold 1 to {MAX_BATCHES_PER_REQUEST} batches, got {len(payload)}",
                )
            # The contract makes an array holding a non-object a malformed request (400), not a bad batch.
            not_objects = [
                f"Path '[{i}]': batch must be an object, got {json_type(b)}"
                for i, b in enumerate(payload)
                if not isinstance(b, dict)
            ]
            if not_objects:
                raise _Refusal(400, "BAD_REQUEST", *not_objects)
            items: list[Any] = payload
        else:
            if not isinstance(payload, dict):
                raise _Refusal(400, "BAD_REQUEST", f"Body must be one batch object, got {json_type(payload)}")
            self._batches = 1
            items = [payload]

        wait, percent_used = sandbox._take_tokens(self._api_key, len(items))
        if wait is not None:
            raise _Refusal(
                429,
                "TOO_MANY_REQUESTS",
                f"Rate limit exceeded for this API key; enough tokens for {len(items)} batches in {wait} s",
                headers=_throttle_headers(wait if sandbox.send_retry_after else None),
            )

        errors = sandbox._accept(self._api_key, route, items, bulk)
        if errors and not bulk:
            raise _Refusal(400, "BAD_REQUEST", *errors)
        headers = {"X-mp-rate-limit-percentage-used": str(percent_used)} if sandbox.report_use else {}
        self._answer(202, _errors_body("BAD_REQUEST", *errors) if errors else b"", headers)

    # -- body ------------------------------------------------------------------------------------------------

    def _content_length(self) -> int:
        """The declared body size; raise _Refusal when it is missing or not a number."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            # Without a length (e.g. chunked) the rest of the stream cannot be trusted: answer and close.
            self.close_connection = True
            raise _Refusal(411, "LENGTH_REQUIRED", "Content-Length is required")
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise _Refusal(400, "BAD_REQUEST", "Content-Length is not a valid number")
        return length

    def _read_body(self) -> bytes | None:
        length = self._content_length()
        if length >= MAX_REQUEST_BYTES:
            self._drain()
            raise _Refusal(
                413, "REQUEST_TOO_LARGE", f"Body is {length} bytes; it must be under {MAX_REQUEST_BYTES} bytes"
            )
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return None
        return body

    def _drain(self) -> None:
        """Throw the body away so the keep-alive connection can carry the next request."""
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw) if raw is not None else 0
        except ValueError:
            length = -1
        if raw is None and self.headers.get("Transfer-Encoding"):
            length = -1
        if length < 0 or length > MAX_DRAIN_BYTES:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    # -- answers ---------------------------------------------------------------------------------------------

    def _refuse(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._answer(status, _errors_body(code, message), headers)

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None, *, log: bool = True) -> None:
        headers = headers or {}
        if self._delay:
            time.sleep(self._delay)
            self._delay = 0.0
        if log:
            retry_after = headers.get("Retry-After")
            self._log(status, int(retry_after) if retry_after is not None else None)
        self._answered = True
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _log(self, status: int, retry_after: int | None) -> None:
        self._sandbox._counts.answered(self._api_key, status)
        self._sandbox._log_request(
            LoggedRequest(
                at=self._sandbox._clock(),
                method=self.command,
                path=self._route,
                api_key=self._api_key,
                status=status,
                batches=self._batches,
                retry_after=retry_after,
                fault=self._fault,
            )
        )


def _throttle_headers(retry_after: int | None) -> dict[str, str]:
    headers = {"X-mp-rate-limit-exceeded": "workspace"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers
