"""The cast of fixtures shared by the tests: a running sandbox Events API, workspaces, mappings, files."""

from __future__ import annotations

import os

import pytest

from sandbox.server import Sandbox
from tests.browser import chromium  # noqa: F401  (the browser fixture, for tests/test_browser.py)
from tests.helpers import SANDBOX_KEY, SANDBOX_SECRET
from tests.receiver import receiver  # noqa: F401  (a webhook receiver: alerts, events, webhooks)

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
    settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS = True  # the sandbox listens on loopback


@pytest.fixture(autouse=True)
def _source_root(settings, tmp_path_factory):
    # File jobs read below the source folder: the tests' files are all in pytest's temporary folders.
    settings.MPFEED_SOURCE_ROOT = tmp_path_factory.getbasetemp()


# ------------------------------------------------------------------------------------------------ the cast
# Users log in with force_login: no password, so no slow password hashing.


@pytest.fixture
def alice(django_user_model):
    """A superuser."""
    return django_user_model.objects.create_superuser("alice", "alice@example.com", None)


@pytest.fixture
def bob(django_user_model):
    """Logged in, not staff."""
    return django_user_model.objects.create_user("bob", "bob@example.com", None)


@pytest.fixture
def charlie(django_user_model):
    """Staff who may look at runs and deliveries, but change nothing (not even see workspaces in the admin)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("charlie", "charlie@example.com", None, is_staff=True)
    codenames = ["view_syncrun", "view_delivery", "view_deliveryattempt"]
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="feeds", codename__in=codenames))
    return user


@pytest.fixture
def staff(client, alice):
    """The test client, logged in as alice."""
    client.force_login(alice)
    return client


@pytest.fixture
def sync_q(monkeypatch):
    """django-q2 runs queued tasks at once, in this process."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
