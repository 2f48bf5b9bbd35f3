"""mpfeed settings, driven by environment variables (see the README's "Configuration").

With no environment set it runs for local use: DEBUG on, SQLite in the project folder, django-q2's ORM broker,
development keys. With DEBUG off, a system check (feeds.checks) refuses the development keys.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from feeds.words import truth

BASE_DIR = Path(__file__).resolve().parent.parent

# Keys used when nothing is configured; a system check refuses them when DEBUG is off.
DEVELOPMENT_SECRET_KEY = "mpfeed-development-secret-key-do-not-use-in-production"  # noqa: S105
DEVELOPMENT_FERNET_KEY = "mpfeed-development-fernet-key-do-not-use-in-production"


def envbool(name: str, default: str) -> bool:
    """A setting read with the words of feeds.words.truth (true/false, yes/no, 1/0, on/off); empty is false."""
    value = os.getenv(name, default)
    answer = truth(value) if value.strip() else False
    if answer is None:
        raise ImproperlyConfigured(f"{name} must be true or false, not {value.strip().lower()!r}")
    return answer


def envint(name: str, default: str) -> int:
    value = os.getenv(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def envfloat(name: str, default: str) -> float:
    value = os.getenv(name, default)
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


SECRET_KEY = os.getenv("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = envbool("DEBUG", "True")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
SITE_NAME = os.getenv("SITE_NAME", "mpfeed")
# The partner's name, shown to clients on the credential page.
PARTNER_NAME = os.getenv("PARTNER_NAME", "Example Partner")

# Fernet keys for the stored credentials, newest first (comma-separated). Values are any strings; each is
# turned into a Fernet key with HKDF. Rotate by putting a new key first, then run `manage.py rotate_keys`.
FERNET_KEYS = envlist("FERNET_KEYS", DEVELOPMENT_FERNET_KEY)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "django_q",
    "feeds",
    "partner_api",
]

MIDDLEWARE = [
    "feeds.security.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "feeds.security.ContentSecurityPolicyMiddleware",
    # Static files from STATIC_ROOT (after collectstatic), with long cache lifetimes for hashed names.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns away logins from an address or to an account with too many failures (django-axes).
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "mpfeed_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "mpfeed_site.wsgi.application"

# DATABASE_URL, e.g. postgres://user:pass@host:5432/mpfeed; SQLite in the project folder by default.
DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{BASE_DIR / 'mpfeed.sqlite3'}"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", "0"),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The site, the sandbox and the django-q2 workers share one SQLite file: WAL lets readers and a writer
    # work at once, IMMEDIATE transactions avoid lock upgrades failing, and the timeout waits out a writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    if os.getenv("SQLITE_TEST_NAME"):
        DATABASES["default"]["TEST"] = {"NAME": os.getenv("SQLITE_TEST_NAME")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.getenv("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.getenv("STATIC_ROOT", BASE_DIR / "static-collected"))
# With DEBUG off, file names carry a hash of their content (cached for a year by browsers): run `collectstatic`
# before starting the site. WhiteNoise serves them, compressed.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if envbool("MPFEED_STATIC_MANIFEST", str(not DEBUG))
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "feeds:home"

# Production hardening, on when DEBUG is off (all overridable).
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", str(not DEBUG))
# A load balancer's probes come over plain HTTP, inside the network: answered, not redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^health$"]
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", str(not DEBUG))
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", str(not DEBUG))
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000")
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "False")
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", str(12 * 3600))
# The pages' policy (feeds.security): only the site's own scripts and styles, no frames of it anywhere.
MPFEED_CONTENT_SECURITY_POLICY = os.getenv("MPFEED_CONTENT_SECURITY_POLICY", "")
# Error pages (DEBUG) and error e-mails hide settings and variables that hold connection strings or passwords.
DEFAULT_EXCEPTION_REPORTER_FILTER = "feeds.security.ErrorReportFilter"
# How many proxies in front of the site add to X-Forwarded-For (1 behind one TLS proxy): the client's address
# for login and link-test limits. 0: REMOTE_ADDR, the header ignored.
MPFEED_PROXY_COUNT = envint("MPFEED_PROXY_COUNT", "0")
# The proxies' own addresses (as gunicorn's FORWARDED_ALLOW_IPS): X-Forwarded-For and X-Forwarded-Proto are
# believed only from them ("*": from anyone, when nothing but the proxy can reach the site).
MPFEED_TRUSTED_PROXIES = envlist("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Logins (django-axes): an address, or an account, is turned away for AXES_COOLOFF_TIME after this many failures.
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", "5")
AXES_COOLOFF_TIME = envfloat("AXES_COOLOFF_HOURS", "0.25")
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_CLIENT_IP_CALLABLE = "feeds.security.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "feeds/login_locked.html"
AXES_VERBOSE = False
# Joining the browsers' HSTS preload list is a decision for whoever owns the domain, not a default.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
if os.getenv("SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = (os.getenv("SECURE_PROXY_SSL_HEADER"), "https")

# django-q2. The ORM broker on the same database by default; set REDIS_URL to use Redis instead.
# timeout < retry, so a task is never handed to a second worker while the first still runs it.
Q_CLUSTER = {
    "name": "mpfeed",
    "workers": envint("Q_WORKERS", "2"),
    "timeout": envint("Q_TIMEOUT", "1800"),
    "retry": envint("Q_RETRY", "1860"),
    "max_attempts": envint("Q_MAX_ATTEMPTS", "3"),
    "catch_up": False,
    "save_limit": envint("Q_SAVE_LIMIT", "1000"),
    "ack_failures": True,
    "poll": envfloat("Q_POLL", "0.5"),
    # The scheduler runs every 30 guard cycles: 0.2 s makes continuations start within ~6 s of being due.
    "guard_cycle": envfloat("Q_GUARD_CYCLE", "0.2"),
    # Whether this cluster runs the schedules (job schedules, the sweeper). Safe on several clusters at once
    # (django-q2 locks each due schedule's row); turn it off where a separate scheduler cluster runs them.
    "scheduler": envbool("Q_SCHEDULER", "True"),
    "label": "Task queue",
}
if os.getenv("REDIS_URL"):
    Q_CLUSTER["redis"] = os.getenv("REDIS_URL")
else:
    Q_CLUSTER["orm"] = "default"

# mpfeed itself.
# The sandbox pod (any endpoint URL, e.g. the built-in fake Events API) is for local use and tests.
MPFEED_ALLOW_SANDBOX = envbool("MPFEED_ALLOW_SANDBOX", str(DEBUG))
# A sandbox endpoint on a loopback, private or link-local address (the built-in sandbox on 127.0.0.1): off unless
# set; `manage.py serve` (make run) turns it on for the site and workers it starts.
MPFEED_ALLOW_PRIVATE_ENDPOINTS = envbool("MPFEED_ALLOW_PRIVATE_ENDPOINTS", "False")
MPFEED_CONNECT_TIMEOUT = envfloat("MPFEED_CONNECT_TIMEOUT", "5")
MPFEED_READ_TIMEOUT = envfloat("MPFEED_READ_TIMEOUT", "30")
# Records read, mapped and set aside in one transaction.
MPFEED_CHUNK_SIZE = envint("MPFEED_CHUNK_SIZE", "2000")
# A run sets records aside per user and builds deliveries of each user's records together once the source is
# read — or once this many records (or bytes of them) are set aside, so that a huge source starts sending
# before its whole read: a window. Users are built in slices of about MPFEED_BUILD_SLICE records.
MPFEED_GROUP_WINDOW_RECORDS = envint("MPFEED_GROUP_WINDOW_RECORDS", "2000000")
MPFEED_GROUP_WINDOW_BYTES = envint("MPFEED_GROUP_WINDOW_BYTES", str(4 * 1024**3))
MPFEED_BUILD_SLICE = envint("MPFEED_BUILD_SLICE", "5000")
# Waits on 429 and 5xx: backoff base and cap (seconds).
MPFEED_BACKOFF_BASE = envfloat("MPFEED_BACKOFF_BASE", "0.5")
MPFEED_BACKOFF_CAP = envfloat("MPFEED_BACKOFF_CAP", "60")
# A 429's Retry-After is waited at most this long before trying again (the answer decides again then).
MPFEED_MAX_RETRY_AFTER = envfloat("MPFEED_MAX_RETRY_AFTER", "3600")
# How long transient failures (5xx, network) are retried before the delivery is parked as failed-retryable.
MPFEED_RETRY_HORIZON = envfloat("MPFEED_RETRY_HORIZON", str(24 * 3600))
# What was sent: an answered delivery's exact body is kept this many days (0: dropped as soon as it is answered),
# its batches searchable by identity and source_message_id this many days; then only the results stay.
MPFEED_BODY_RETENTION_DAYS = envfloat("MPFEED_BODY_RETENTION_DAYS", "7")
MPFEED_SEARCH_RETENTION_DAYS = envfloat("MPFEED_SEARCH_RETENTION_DAYS", "7")
# The only folder file sources read from (relative paths start there; created when missing). Files outside it,
# through '..' or symbolic links included, are refused whatever made the job.
MPFEED_SOURCE_ROOT = Path(os.getenv("MPFEED_SOURCE_ROOT") or BASE_DIR / "var" / "sources").resolve()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Credential-link URLs carry a token: every handler rewrites /connect/<token>/ to /connect/…/.
    # Control characters in a message (from a name, a record, a server's answer) are escaped: one line per record.
    "filters": {
        "redact_link_tokens": {"()": "feeds.logfilters.RedactLinkTokens"},
        "escape_controls": {"()": "feeds.logfilters.EscapeControlCharacters"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_link_tokens", "escape_controls"],
        }
    },
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"level": os.getenv("DJANGO_LOG_LEVEL", "WARNING")},
        # runserver's access log has its own handler; route it through ours so it is filtered too.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

EMAIL_BACKEND = os.getenv("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# A worker reads one run for at most this many seconds, then queues the rest (turns for every run; under Q_TIMEOUT).
MPFEED_TASK_SLICE = envfloat("MPFEED_TASK_SLICE", "120")
# Senders (feeds.dispatch), one in every django-q2 worker process: requests in flight at most (0: this cluster
# does not send), runs held at most, how often it looks for runs to send, and how long it holds a run while
# others wait for a sender.
MPFEED_SEND_THREADS = envint("MPFEED_SEND_THREADS", "16")
MPFEED_SEND_LANES = envint("MPFEED_SEND_LANES", "500")
MPFEED_SEND_POLL = envfloat("MPFEED_SEND_POLL", "0.5")
MPFEED_SEND_TURN = envfloat("MPFEED_SEND_TURN", "30")
# Reading stops this many deliveries ahead of the senders, and goes on when they have sent most of them.
MPFEED_OUTBOX_AHEAD = envint("MPFEED_OUTBOX_AHEAD", "1000")
# The port `manage.py serve` runs the built-in sandbox Events API on (the demo workspace points at it).
MPFEED_DEMO_SANDBOX_PORT = envint("MPFEED_DEMO_SANDBOX_PORT", "8765")
# Pacing: each workspace is sent to at MPFEED_PACE_TARGET × its rate limit, shared by all workers.
MPFEED_PACING = envbool("MPFEED_PACING", "True")
MPFEED_PACE_TARGET = envfloat("MPFEED_PACE_TARGET", "0.98")
# Waits longer than this (429 Retry-After, backoff) give the worker back; a scheduled continuation resumes.
MPFEED_MAX_INLINE_WAIT = envfloat("MPFEED_MAX_INLINE_WAIT", "5")
# A run's reading lease: a worker that dies while reading is replaced after this many seconds.
MPFEED_LEASE_SECONDS = envfloat("MPFEED_LEASE_SECONDS", "60")
# A sender renews its runs' leases twice a second; one that dies has its runs taken over after this many seconds.
MPFEED_SEND_LEASE = envfloat("MPFEED_SEND_LEASE", "3")
# A queued run whose task has not started after this many seconds is queued again (a lost task).
MPFEED_REQUEUE_AFTER = envfloat("MPFEED_REQUEUE_AFTER", "120")
# The largest push a job's inbox accepts in one request.
MPFEED_INBOX_MAX_BYTES = envint("MPFEED_INBOX_MAX_BYTES", str(10 * 1024 * 1024))
DATA_UPLOAD_MAX_MEMORY_SIZE = max(2621440, MPFEED_INBOX_MAX_BYTES)


def envdatabases(name: str) -> dict[str, str]:
    """Comma-separated name=URL pairs: "crm=postgres://u:p@host/crm,shop=sqlite:////srv/shop.db"."""
    databases = {}
    # A comma starts a new pair only when name= follows (a URL may list several hosts); encode commas in passwords.
    for pair in re.split(r",\s*(?=[A-Za-z0-9_-]+=)", os.getenv(name, "").strip()):
        if not pair.strip():
            continue
        key, _, url = (part.strip() for part in pair.partition("="))
        # Never echo the URL: it holds a password.
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key) or not re.match(r"(sqlite|postgres|postgresql)://", url):
            raise ImproperlyConfigured(
                f"{name}: each entry must be name=sqlite:////path or name=postgres://... ({key[:40]!r})"
            )
        databases[key] = url
    return databases


# Sources. SQL: the partner databases a job may query (read-only sessions), by name.
MPFEED_SOURCE_DATABASES = envdatabases("MPFEED_SOURCE_DATABASES")
MPFEED_SQL_STATEMENT_TIMEOUT = envfloat("MPFEED_SQL_STATEMENT_TIMEOUT", "300")
# HTTP JSON: the only hosts a job may read from (no wildcard), and how hard to try.
MPFEED_HTTP_SOURCE_HOSTS = envlist("MPFEED_HTTP_SOURCE_HOSTS", "")
MPFEED_HTTP_SOURCE_ATTEMPTS = envint("MPFEED_HTTP_SOURCE_ATTEMPTS", "5")
MPFEED_HTTP_SOURCE_MAX_WAIT = envfloat("MPFEED_HTTP_SOURCE_MAX_WAIT", "30")
MPFEED_HTTP_SOURCE_MAX_PAGE_BYTES = envint("MPFEED_HTTP_SOURCE_MAX_PAGE_BYTES", str(50 * 1024 * 1024))

# Onboarding: how long a client's credential link works, and how many connection tests it allows.
MPFEED_CREDENTIAL_LINK_HOURS = envfloat("MPFEED_CREDENTIAL_LINK_HOURS", "72")
MPFEED_CREDENTIAL_LINK_ATTEMPTS = envint("MPFEED_CREDENTIAL_LINK_ATTEMPTS", "10")
# Connection tests from one address (MPFEED_PROXY_COUNT says how it is found) per hour, whatever the link.
MPFEED_LINK_TESTS_PER_ADDRESS = envint("MPFEED_LINK_TESTS_PER_ADDRESS", "30")
# Calls of the partner API per token and minute (a fixed window): over it, 429 with Retry-After.
MPFEED_API_RATE_PER_MINUTE = envint("MPFEED_API_RATE_PER_MINUTE", "600")
# How long a push's Idempotency-Key is remembered (a retry with the same key stores nothing).
MPFEED_IDEMPOTENCY_HOURS = envfloat("MPFEED_IDEMPOTENCY_HOURS", "48")

# Alerts when a workspace changes state: e-mail (Django's mail settings) and a signed webhook.
MPFEED_ALERT_EMAILS = envlist("MPFEED_ALERT_EMAILS", "")
MPFEED_ALERT_WEBHOOK_URL = os.getenv("MPFEED_ALERT_WEBHOOK_URL", "")
MPFEED_ALERT_WEBHOOK_SECRET = os.getenv("MPFEED_ALERT_WEBHOOK_SECRET", "")
# A webhook message the receiver did not take (no answer, not 2xx) is tried again, later each time (1, 5, 15
# minutes, 1, 2, 4 then every 8 hours), up to this many tries in all (12: about 2 days); then it is given up.
MPFEED_WEBHOOK_ATTEMPTS = envint("MPFEED_WEBHOOK_ATTEMPTS", "12")
# Messages sent or given up on are kept this long (on the admin's Webhook messages), then deleted.
MPFEED_WEBHOOK_RETENTION_DAYS = envfloat("MPFEED_WEBHOOK_RETENTION_DAYS", "30")
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "mpfeed@localhost")
EMAIL_HOST = os.getenv("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", "25")
EMAIL_HOST_USER = os.getenv("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.getenv("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "False")
EMAIL_TIMEOUT = envfloat("EMAIL_TIMEOUT", "10")
# /metrics (Prometheus text format) answers staff, and scrapers sending this token as "Authorization: Bearer".
MPFEED_METRICS_TOKEN = os.getenv("MPFEED_METRICS_TOKEN", "")
# Partner pages (origins: https://app.partner.example) that may frame the embeddable credential form,
# /connect/embed/<token>/; every other page keeps X-Frame-Options DENY and frame-ancestors 'none'.
MPFEED_EMBED_ORIGINS = envlist("MPFEED_EMBED_ORIGINS", "")
# The site's public address, for links in alert e-mails (e.g. https://feeds.partner.example). Unset, the e-mails
# say there is no link rather than point at an address that cannot work (`manage.py serve` sets its own).
MPFEED_SITE_URL = os.getenv("MPFEED_SITE_URL", "").rstrip("/")
