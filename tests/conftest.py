"""The cast of fixtures shared by the tests: a running sandbox Events API, workspaces, mappings, files."""

from __future__ import annotations

import os

import pytest

from feeds.mparticle.sandbox import Sandbox
from tests.browser import chromium  # noqa: F401  (the browser fixture, for tests/test_browser.py)
from tests.helpers import SANDBOX_KEY, SANDBOX_SECRET

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mpfeed_site.settings")


@pytest.fixture
def sandbox():
    """The sandbox Events API on an ephemeral loopback port, over real HTTP."""
    box = Sandbox({SANDBOX_KEY: SANDBOX_SECRET}, rate_limit=None)
    box.start()
    yield box
    box.stop()


@pytest.fixture(autouse=True)
def _fast_backoff(settings):
    # Waits are observed through a fake sleep in the engine tests; keep any real ones short.
    settings.MPFEED_BACKOFF_BASE = 0.01
    settings.MPFEED_BACKOFF_CAP = 0.05
    settings.MPFEED_ALLOW_SANDBOX = True
