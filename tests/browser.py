"""Playwright driving Debian's chromium, for the browser tests (never a downloaded browser)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
def chromium():
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing (scripts/chromium.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(f"NOTICE: browser tests skipped: {message}")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the tests still use the ORM in it.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


class Shots:
    """Numbered screenshots of each step, kept as test artefacts."""

    def __init__(self, name: str):
        self.dir = ARTIFACTS / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def take(self, page, step: str) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def shows(page, text: str, selector: str = "body", timeout: float = 10_000) -> None:
    """Wait until the element shows the text. After a click that submits a form, reading the page at once may
    read the old page, or an empty one between the two: Playwright's expect asks again until it holds."""
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_contain_text(text, timeout=timeout, ignore_case=True)


def wait_js(page, expression: str, timeout: float = 10_000) -> None:
    """Wait until a JavaScript expression is true in the page, across reloads. Page.wait_for_function compiles
    its predicate with eval inside the page, which the site's Content-Security-Policy forbids; page.evaluate
    does not."""
    import time

    from playwright.sync_api import Error

    deadline = time.monotonic() + timeout / 1000
    while True:
        try:
            if page.evaluate(expression):
                return
        except Error as e:  # the page navigated (a reload) while the expression ran: ask the new one
            if "context was destroyed" not in str(e) and "navigat" not in str(e):
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout / 1000:.0f} s: {expression}")
        time.sleep(0.05)
