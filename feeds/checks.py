"""System checks: refuse development keys and unsafe switches when DEBUG is off."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from feeds.security import parse_origins


@register(Tags.security, deploy=False)
def check_keys(app_configs=None, **kwargs) -> list[CheckMessage]:
    if settings.DEBUG:
        return []
    errors: list[CheckMessage] = []
    if settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY:
        errors.append(
            Error(
                "SECRET_KEY is the development key.",
                hint="Set the SECRET_KEY environment variable to a long random value.",
                id="mpfeed.E001",
            )
        )
    if settings.DEVELOPMENT_FERNET_KEY in settings.FERNET_KEYS:
        errors.append(
            Error(
                "FERNET_KEYS contains the development key: stored API secrets would be readable by anyone.",
                hint="Set FERNET_KEYS to one or more long random values, newest first.",
                id="mpfeed.E002",
            )
        )
    if settings.MPFEED_ALERT_WEBHOOK_URL and not settings.MPFEED_ALERT_WEBHOOK_SECRET:
        errors.append(
            Warning(
                "MPFEED_ALERT_WEBHOOK_URL is set without MPFEED_ALERT_WEBHOOK_SECRET: alerts go out unsigned.",
                hint="Set MPFEED_ALERT_WEBHOOK_SECRET so receivers can check the X-Mpfeed-Signature header.",
                id="mpfeed.W002",
            )
        )
    if not settings.MPFEED_SITE_URL:
        errors.append(
            Warning(
                "MPFEED_SITE_URL is not set: alert e-mails cannot link to the workspace page.",
                hint="Set MPFEED_SITE_URL to the site's public address, e.g. https://feeds.partner.example.",
                id="mpfeed.W003",
            )
        )
    _, bad = parse_origins(list(settings.MPFEED_EMBED_ORIGINS))
    if bad:
        errors.append(
            Warning(
                f"MPFEED_EMBED_ORIGINS holds values that are not origins, ignored: {', '.join(bad)}.",
                hint="List origins only: scheme://host[:port], e.g. https://app.partner.example, no path.",
                id="mpfeed.W004",
            )
        )
    if settings.MPFEED_ALLOW_SANDBOX:
        errors.append(
            Warning(
                "MPFEED_ALLOW_SANDBOX is on: workspaces may send client data to any URL.",
                hint="Turn it off in production unless this deployment is a test system.",
                id="mpfeed.W001",
            )
        )
    return errors
