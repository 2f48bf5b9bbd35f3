"""The production profile, started as the README says: DEBUG off, `migrate`, `collectstatic`, gunicorn with
mpfeed_site/gunicorn.conf.py behind a (simulated) TLS proxy. Pages and their static files load, the security
headers are sent, cookies are secure, the database file is its owner's only, the access log keeps no link token,
and a real browser shows the pages under the Content-Security-Policy without a single violation."""

from __future__ import annotations

import base64
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers import free_port
from tests.processes import ROOT, wait_for

pytestmark = pytest.mark.slow

HTTPS = {"X-Forwarded-Proto": "https"}  # what the TLS proxy in front adds (SECURE_PROXY_SSL_HEADER)
PASSWORD = "production-profile-pass-phrase-41"  # noqa: S105


def production_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPFEED_", "DJANGO_", "Q_", "DATABASE", "REDIS"))}
    env.update(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(48),
        FERNET_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        ALLOWED_HOSTS="localhost,127.0.0.1",
        # The browser below talks plain HTTP to the server as if through the TLS proxy: its Origin is http://.
        CSRF_TRUSTED_ORIGINS=f"https://localhost:{port},http://localhost:{port}",
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        STATIC_ROOT=str(tmp_path / "static"),
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO",
        MPFEED_PROXY_COUNT="1",
        MPFEED_SITE_URL="https://feeds.partner.example",
        MPFEED_SOURCE_ROOT=str(tmp_path / "sources"),
        PORT=str(port),
        HOST="127.0.0.1",
        WEB_WORKERS="2",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env, *args) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def production(tmp_path):
    port = free_port()
    env = production_env(tmp_path, port)
    manage(env, "check", "--deploy", "--fail-level", "WARNING")
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    manage(env, "createsuperuser", "--noinput", "--username", "ops", "--email", "ops@partner.example")
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "mpfeed_site/gunicorn.conf.py", "mpfeed_site.wsgi"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"gunicorn exited with {server.returncode}:\n{log.read_text()}")
        try:
            return requests.get(f"{url}/healthz", headers=HTTPS, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, 60, what="gunicorn")
        yield {"url": url, "port": port, "env": env, "log": log, "db": tmp_path / "prod.sqlite3"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_the_production_server_serves_pages_and_static_files_securely(production):
    url = production["url"]
    # Plain HTTP is sent to HTTPS (the proxy then terminates TLS).
    plain = requests.get(f"{url}/admin/login/", allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")

    page = requests.get(f"{url}/admin/login/", headers=HTTPS, timeout=10)
    assert page.status_code == 200 and "Log in" in page.text
    headers = page.headers
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    csrf = next(c for c in page.cookies if c.name == "csrftoken")
    assert csrf.secure
    # A probe over plain HTTP (the load balancer's, inside the network) is answered, not redirected.
    assert requests.get(f"{url}/healthz", allow_redirects=False, timeout=10).status_code == 200

    # Logging in sets a session cookie that is Secure and HttpOnly. (requests keeps Secure cookies for https://
    # addresses: the CSRF cookie goes back by hand, as the browser behind the TLS proxy would send it.)
    form = requests.get(f"{url}/admin/login/", headers=HTTPS, timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    origin = f"https://localhost:{production['port']}"
    done = requests.post(
        f"{url}/admin/login/?next=/",
        data={"csrfmiddlewaretoken": token, "username": "ops", "password": PASSWORD},
        headers={**HTTPS, "Origin": origin, "Cookie": f"csrftoken={form.cookies['csrftoken']}"},
        allow_redirects=False,
        timeout=10,
    )
    assert done.status_code == 302, done.text[:500]
    session = next(c for c in done.cookies if c.name == "sessionid")
    assert session.secure and session.has_nonstandard_attr("HttpOnly")

    # The static files the page names: hashed names, served by the site itself, cached for long.
    assets = re.findall(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"', page.text)
    assert assets, page.text[:2000]
    for asset in assets:
        assert re.search(r"\.[0-9a-f]{12}\.(css|js)$", asset), asset
        response = requests.get(f"{url}{asset}", headers={**HTTPS, "Accept-Encoding": "gzip"}, timeout=10)
        assert response.status_code == 200, asset
        assert "max-age=315360000" in response.headers["Cache-Control"], asset
        assert response.headers["Content-Type"].startswith(("text/css", "text/javascript", "application/javascript"))

    # The database file (and its write-ahead log) is readable by its owner only.
    for path in (production["db"], Path(f"{production['db']}-wal")):
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_access_log_keeps_no_credential_link_token(production):
    token = secrets.token_urlsafe(32)
    requests.get(f"{production['url']}/connect/{token}/", headers=HTTPS, timeout=10)
    requests.get(f"{production['url']}/healthz", headers=HTTPS, timeout=10)

    def logged() -> bool:
        return "/healthz" in production["log"].read_text()

    wait_for(logged, 10, what="the access log line")
    text = production["log"].read_text()
    assert token not in text and "/connect/…/" in text


@pytest.mark.browser
def test_the_pages_show_under_the_policy_without_a_violation(production, chromium):
    base = f"http://localhost:{production['port']}"
    context = chromium.new_context(extra_http_headers=HTTPS)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(f"{base}/admin/login/?next=/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/")
    assert "Client workspaces" in page.inner_text("h1")
    # The site's stylesheet applies (served by WhiteNoise, under its hashed name).
    assert page.evaluate("getComputedStyle(document.querySelector('.row.spread')).justifyContent") == "space-between"
    for address in ("/workspaces/new/", "/admin/feeds/workspace/add/", "/admin/feeds/syncjob/"):
        response = page.goto(f"{base}{address}")
        assert response.status == 200, address
    context.close()
    assert [p for p in problems if "Content Security Policy" in p or "Refused" in p] == [], problems
    assert problems == []
