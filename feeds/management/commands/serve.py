from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from feeds.demo import sandbox_credentials
from sandbox.server import Sandbox


class Command(BaseCommand):
    help = "Run the site, a django-q2 cluster and the sandbox Events API together (local use). Ctrl-C stops all."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000", help="Where the site listens.")
        parser.add_argument("--no-sandbox", action="store_true", help="Do not start the sandbox Events API.")

    def handle(self, *args, **options):
        sandbox = None
        if not options["no_sandbox"]:
            sandbox = Sandbox(sandbox_credentials())
            url = sandbox.start(port=settings.MPFEED_DEMO_SANDBOX_PORT)
            self.stdout.write(f"Sandbox Events API: {url}/v2 (state at {url}/_sandbox/state)")
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        env = dict(os.environ)
        env.setdefault("MPFEED_SITE_URL", f"http://{options['addr']}")  # the links in alert e-mails
        if sandbox:
            # The built-in sandbox listens on loopback: let this local site and its workers send to it.
            env.setdefault("MPFEED_ALLOW_PRIVATE_ENDPOINTS", "true")
        children = {
            "qcluster": subprocess.Popen([*manage, "qcluster"], env=env),
            "runserver": subprocess.Popen([*manage, "runserver", "--noreload", options["addr"]], env=env),
        }
        self.stdout.write(f"Site: http://{options['addr']}/  (task cluster started; Ctrl-C stops everything)")

        def stop(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        try:
            while all(child.poll() is None for child in children.values()):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 10
            for child in children.values():
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
            if sandbox:
                sandbox.stop()
        failed = [n for n, c in children.items() if c.returncode not in (0, -signal.SIGINT, -signal.SIGTERM, None)]
        if failed:
            self.stderr.write(f"Stopped because {', '.join(failed)} exited.")
            raise SystemExit(1)
