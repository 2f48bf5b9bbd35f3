"""Protections of the whole site: the Content-Security-Policy, error reports without connection strings, the
client's address behind the TLS proxy, and the SQLite file readable by its owner only (see SECURITY.md)."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from contextlib import suppress
from pathlib import Path

from django.conf import settings
from django.views.debug import SafeExceptionReporterFilter

# No inline script or style anywhere (the pages carry none): what is not the site's own file does not run.
DEFAULT_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    """Sends MPFEED_CONTENT_SECURITY_POLICY (DEFAULT_POLICY) with every response that has none yet."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = getattr(settings, "MPFEED_CONTENT_SECURITY_POLICY", "") or DEFAULT_POLICY

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response


ORIGIN = re.compile(r"https?://[a-z0-9.-]+(:[0-9]{1,5})?", re.I)


def parse_origins(values: list[str] | str) -> tuple[list[str], list[str]]:
    """Origins (scheme://host[:port], no path) normalised — trimmed, no trailing slash, lower case — and the
    values that are not origins, as given. A string is split at commas and white space (one a line, or
    comma-separated): the rule of MPFEED_EMBED_ORIGINS and of a workspace's own embed origins alike."""
    if isinstance(values, str):
        values = re.split(r"[,\s]+", values)
    good: list[str] = []
    bad: list[str] = []
    for value in values:
        origin = value.strip().rstrip("/").lower()
        if not origin:
            continue
        if ORIGIN.fullmatch(origin):
            good.append(origin)
        else:
            bad.append(value.strip())
    return list(dict.fromkeys(good)), bad


def embed_origins(extra: list[str] | None = None) -> list[str]:
    """The partner pages allowed to frame the embeddable credential form (MPFEED_EMBED_ORIGINS: full origins,
    scheme://host[:port], no path), followed by `extra` (a workspace's own, Workspace.allowed_embed_origins);
    what is not an origin is left out (a system check says so)."""
    good, _ = parse_origins(list(getattr(settings, "MPFEED_EMBED_ORIGINS", [])))
    return list(dict.fromkeys([*good, *(extra or [])]))


def framed_policy(origins: list[str]) -> str:
    """The site's policy for a page that the given origins — and only they — may frame ('none' without any)."""
    ancestors = " ".join(origins) if origins else "'none'"
    policy = getattr(settings, "MPFEED_CONTENT_SECURITY_POLICY", "") or DEFAULT_POLICY
    parts = [p.strip() for p in policy.split(";") if p.strip() and not p.strip().startswith("frame-ancestors")]
    return "; ".join([*parts, f"frame-ancestors {ancestors}"])


def parent_origin(asked: str, allowed: list[str]) -> str | None:
    """The partner page's origin the form may be framed by and tell when it is done: the one asked for
    (`?origin=`) when allowed, else the only one allowed; "" when several are allowed and none was asked (framed
    by any of them, telling none); None when the one asked for is not allowed."""
    asked = asked.strip().rstrip("/").lower()
    if asked:
        return asked if asked in allowed else None
    return allowed[0] if len(allowed) == 1 else ""


class TrustedProxyMiddleware:
    """First of all: the headers a TLS proxy sets (SECURE_PROXY_SSL_HEADER, X-Forwarded-For) are dropped from a
    request that did not come from one of MPFEED_TRUSTED_PROXIES — someone reaching the server directly cannot
    pass for HTTPS or choose the address the limits count."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.trusted = set(getattr(settings, "MPFEED_TRUSTED_PROXIES", []))
        header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
        self.headers = ["HTTP_X_FORWARDED_FOR", *([header[0]] if header else [])]

    def __call__(self, request):
        if "*" not in self.trusted and request.META.get("REMOTE_ADDR") not in self.trusted:
            for name in self.headers:
                request.META.pop(name, None)
        return self.get_response(request)


# user:password@ in any URL (postgres://mpfeed:s3cret@db/… → postgres://…@db/…), and password=… in libpq-style
# "key=value" connection strings.
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.I)
_KEYWORD_PASSWORD = re.compile(r"\b(password|passwd|pwd|secret)(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|\S+)", re.I)


def redact_connection_strings(text: str) -> str:
    return _KEYWORD_PASSWORD.sub(r"\1\2********************", _USERINFO.sub(r"\1…@", text))


class ErrorReportFilter(SafeExceptionReporterFilter):
    """What a DEBUG error page and an error e-mail show: Django's own hiding of settings named like secrets, also
    for database and broker settings, environment variables and every frame's local variables (a dict such as a
    database driver's connection parameters is cleansed key by key), and no password inside any text."""

    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|PWD|SIGNATURE|HTTP_COOKIE|AUTHORIZATION|DATABASE|REDIS|BROKER|DSN|_URL$|^URL$",
        flags=re.I,
    )

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        # type(), not isinstance(): lazy objects in settings pass for strings without being ones.
        return redact_connection_strings(cleansed) if type(cleansed) is str else cleansed

    def get_traceback_frame_variables(self, request, tb_frame):
        return [
            (name, self.cleanse_setting(name, value) if not isinstance(name, str) or name != "request" else value)
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]


def client_ip(request) -> str | None:
    """The address a request came from: REMOTE_ADDR; behind MPFEED_PROXY_COUNT proxies (the TLS proxy that sets
    X-Forwarded-For), and only when REMOTE_ADDR is one of MPFEED_TRUSTED_PROXIES, the address the outermost
    trusted proxy saw. What a client writes in the header itself is never trusted. None when there is no valid
    address (a request made in-process)."""
    count = getattr(settings, "MPFEED_PROXY_COUNT", 0)
    remote = request.META.get("REMOTE_ADDR", "")
    trusted = getattr(settings, "MPFEED_TRUSTED_PROXIES", [])
    if count > 0 and ("*" in trusted or remote in trusted):
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if len(forwarded) >= count:
            remote = forwarded[-count]
    try:
        return str(ipaddress.ip_address(remote))
    except ValueError:
        return None


def create_sqlite_file() -> None:
    """The default SQLite database file, created empty with mode 0600 when it is missing (an empty file is an
    empty database to SQLite)."""
    database = settings.DATABASES["default"]
    name = str(database.get("NAME") or "")
    if database["ENGINE"] != "django.db.backends.sqlite3" or not name or name == ":memory:" or "mode=memory" in name:
        return
    path = Path(name)
    if path.parent.is_dir() and not path.exists():
        with suppress(FileExistsError, PermissionError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def owner_only_sqlite_file(sender, connection, **kwargs) -> None:
    """On every new SQLite connection: the database file (and its -wal and -shm files, which SQLite creates with
    the database file's mode) readable and writable by its owner only. Connected to `connection_created`."""
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict["NAME"])
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    for file in (Path(name), Path(f"{name}-wal"), Path(f"{name}-shm")):
        try:
            mode = file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                file.chmod(stat.S_IMODE(mode) & ~(stat.S_IRWXG | stat.S_IRWXO))
        except (FileNotFoundError, PermissionError):
            pass
