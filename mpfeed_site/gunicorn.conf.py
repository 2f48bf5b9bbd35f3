"""gunicorn's settings for the production web process (README, "Production"):

    .venv/bin/gunicorn -c mpfeed_site/gunicorn.conf.py mpfeed_site.wsgi

Listens on $PORT (8000) on every interface, behind the TLS proxy; $WEB_WORKERS processes (2 per core by
default) of $WEB_THREADS threads. The access log goes to standard output with credential-link tokens replaced
by "…" and control characters escaped, like every other log line of the site.
"""

from __future__ import annotations

import multiprocessing
import os

from gunicorn.glogging import Logger

bind = f"{os.getenv('HOST', '0.0.0.0')}:{os.getenv('PORT', '8000')}"  # noqa: S104 (behind the proxy)
workers = int(os.getenv("WEB_WORKERS", str(2 * multiprocessing.cpu_count())))
threads = int(os.getenv("WEB_THREADS", "4"))
timeout = int(os.getenv("WEB_TIMEOUT", "60"))
graceful_timeout = 30
# A push to an inbox may be large (MPFEED_INBOX_MAX_BYTES); the proxy in front should buffer it.
limit_request_line = 8190
accesslog = os.getenv("WEB_ACCESS_LOG", "-")
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
# The proxy's address is the only one trusted to say the request came over HTTPS (SECURE_PROXY_SSL_HEADER).
forwarded_allow_ips = os.getenv("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


class RedactingLogger(Logger):
    """The access log without credential-link tokens (in the path and the Referer) nor control characters."""

    def atoms(self, resp, req, environ, request_time):
        from feeds.logfilters import escape_controls, redact

        atoms = super().atoms(resp, req, environ, request_time)
        return {
            key: escape_controls(redact(value)) if isinstance(value, str) else value for key, value in atoms.items()
        }


logger_class = RedactingLogger
