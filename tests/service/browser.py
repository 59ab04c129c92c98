"""Debian's system Chromium, driven by Playwright, for tests of the service's web page.

Playwright's own browser builds cannot be downloaded here, so the tests use the `chromium`
package's binary. A test that needs a browser is skipped, with the reason, when the binary or
the ``playwright`` package is missing; under ``scripts/test`` (FEDFABRIC_REQUIRE_FABRIC=1),
which installs both, it fails instead.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing() -> str | None:
    """Why no browser test can run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "the Python package playwright is not installed (pip install playwright)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@asynccontextmanager
async def open_browser() -> AsyncIterator[Browser]:
    """A headless Chromium, closed on exit; skips the test when there is none.

    Playwright gives each launch a fresh temporary profile (user-data dir) and deletes it after.
    """
    reason = missing()
    if reason is not None and os.environ.get("FEDFABRIC_REQUIRE_FABRIC") == "1":
        pytest.fail(f"the browser tests must run here (scripts/test installs both): {reason}")
    if reason is not None:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def open_page(browser: Browser, width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
    """A page in a new browser context (its own cookies and storage) of that viewport size."""
    context = await browser.new_context(
        viewport={"width": width, "height": height}, ignore_https_errors=True
    )
    try:
        yield await context.new_page()
    finally:
        await context.close()
