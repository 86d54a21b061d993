"""A real browser for the status page tests: Debian's ``chromium``, driven by Playwright.

Playwright's Python package only drives the browser; the browser is the one
``tools/run-tests`` installs from Debian (``/usr/bin/chromium``): nothing is
downloaded (``playwright install`` is never run). Each session gets a fresh
profile directory, so no state leaks between tests.

Screenshots go to ``test-artifacts/status-page/`` at the repository root
(ignored by git), for a person to look at after a run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "status-page"
CHROMIUM = os.environ.get("KIDECAR_CHROMIUM", "/usr/bin/chromium")
#: flags that work as root in a container without a display or a GPU; no phoning home
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

if TYPE_CHECKING:  # playwright is imported when a browser starts, not at collection
    from playwright.sync_api import Page


def chromium_path() -> str:
    """The browser binary, or a test failure that says how to get it (never a skip)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} not found: tools/run-tests installs Debian's chromium "
                    "(apt-get install --no-install-recommends chromium)")
    return CHROMIUM


@contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[Page]:
    """One page of a fresh headless chromium; closed (with its profile) on exit."""
    from playwright.sync_api import sync_playwright

    binary = chromium_path()
    profile = tempfile.mkdtemp(prefix="kidecar-chromium-")
    try:
        with sync_playwright() as driver:
            context = driver.chromium.launch_persistent_context(
                profile, executable_path=binary, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height})
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(15_000)
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as ``test-artifacts/status-page/<name>.png``; returns the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
