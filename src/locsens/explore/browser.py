"""Headless Chromium for the explorer's browser tests and its screenshots (Playwright for Python pointed at
Debian's ``chromium``; ``LOCSENS_CHROMIUM`` names another executable)."""

from __future__ import annotations

import os
import shutil


def chromium_executable() -> str | None:
    """The Chromium to drive, or None when there is none on this machine."""
    for candidate in (os.environ.get("LOCSENS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def launch(playwright, **options):
    """``playwright.chromium.launch`` on :func:`chromium_executable` (headless; no sandbox: CI runs as root)."""
    executable = chromium_executable()
    if executable is None:
        raise FileNotFoundError("no Chromium found: apt-get install chromium, or set LOCSENS_CHROMIUM")
    return playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"], **options)
