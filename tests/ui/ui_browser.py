"""What the web UI's tests share: a real server (a real System and the real CherryPy server on
127.0.0.1, over a real git repository) and a real Chromium driven by Playwright.

The browser is Debian's ``/usr/bin/chromium`` (``scripts/bootstrap`` installs it as root);
Playwright never downloads one. Every page a test opens must run without a script error: the
``page`` fixture fails the test on any.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import requests

from ..served import Api

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
CSRF_RE = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')
# what a test provokes on purpose, which Chromium logs: a refused value, a full stream cap, a page
# of the UI that a hostile page tried to frame
EXPECTED = re.compile(r"Failed to load resource: the server responded with a status of (400|401|403|409|503)|"
                      r"violates the following Content Security Policy directive: \"frame-ancestors 'none'\"")


def chromium() -> str:
    """Debian's chromium; skipped only where it cannot be had (scripts/bootstrap installs it as root)."""
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{CHROMIUM} is missing and cannot be installed here (that needs root and apt-get)")
    pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap installs it (apt-get install chromium)")


@pytest.fixture(scope="module", name="browser")
def _browser():
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class PageErrors(list):
    """Script errors and failed loads of the page's own files, as they happen."""


@pytest.fixture(name="page")
def _page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900}, color_scheme="light")
    context.set_default_timeout(20_000)
    page = context.new_page()
    problems = PageErrors()
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and not EXPECTED.search(msg.text)
            and problems.append(f"console error: {msg.text}"))
    yield page
    context.close()
    assert not problems, problems


class UiServer(Api):
    """A running server and a requests session on it (no browser)."""

    def csrf(self, path: str = "/ui/") -> str:
        """The CSRF token the UI puts into its forms (for requests made without a browser)."""
        found = CSRF_RE.search(self.get(path).text)
        assert found, f"no CSRF token on {path}"
        return found.group(1)

    def new_session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        return session


@pytest.fixture(name="ui")
def _ui(serve):
    def start(files: dict, **overrides) -> UiServer:
        return UiServer(*serve(files, **overrides))

    return start
