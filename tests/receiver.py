"""A webhook receiver on a loopback port, for the alert, event and webhook tests (the `receiver` fixture)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from feeds import events

WEBHOOK_SECRET = "whsec-PLAINTEXT-do-not-leak-77c1"


def loopback(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """A threaded HTTP server on a free loopback port, and the (daemon) thread that serves it, not yet started."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    return server, threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)


class Receiver:
    """A webhook receiver on a loopback port that keeps what it was sent and answers `status`."""

    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server, self.thread = loopback(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/mpfeed"

    @property
    def alerts(self) -> list[tuple[dict, bytes]]:
        """What was received but the events of feeds.events (runs ended, credentials verified: tests/test_events)."""
        return [(h, b) for h, b in self.received if json.loads(b)["event"] not in events.EVENTS]


@pytest.fixture
def receiver(settings):
    receiver = Receiver()
    receiver.thread.start()
    settings.MPFEED_ALERT_WEBHOOK_URL = receiver.url
    settings.MPFEED_ALERT_WEBHOOK_SECRET = WEBHOOK_SECRET
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()
