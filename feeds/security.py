"""Protections of the whole site: the Content-Security-Policy, error reports without connection strings, the
client's address behind the TLS proxy, and the SQLite file readable by its owner only (see SECURITY.md)."""

from __future__ import annotations

import ipaddress
import re
import stat
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


# user:password@ in any URL: postgres://mpfeed:s3cret@db/… → postgres://…@db/…
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.I)


def redact_connection_strings(text: str) -> str:
    return _USERINFO.sub(r"\1…@", text)


class ErrorReportFilter(SafeExceptionReporterFilter):
    """What a DEBUG error page and an error e-mail show: Django's own hiding of settings named like secrets, also
    for database and broker settings and environment variables, and no password inside any URL."""

    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|AUTHORIZATION|DATABASE|REDIS|BROKER|DSN|_URL$", flags=re.I
    )

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        # type(), not isinstance(): lazy objects in settings pass for strings without being ones.
        return redact_connection_strings(cleansed) if type(cleansed) is str else cleansed

    def get_traceback_frame_variables(self, request, tb_frame):
        return [
            (name, redact_connection_strings(value) if type(value) is str else value)
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]


def client_ip(request) -> str:
    """The address a request came from: REMOTE_ADDR, or behind MPFEED_PROXY_COUNT proxies (the TLS proxy that
    sets X-Forwarded-For), the address the outermost trusted proxy saw. What is left of that in the header is
    the client's word and never trusted."""
    count = getattr(settings, "MPFEED_PROXY_COUNT", 0)
    remote = request.META.get("REMOTE_ADDR", "")
    if count > 0:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if len(forwarded) >= count:
            remote = forwarded[-count]
    try:
        return str(ipaddress.ip_address(remote))
    except ValueError:
        return "unknown"


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
