"""Headless Chromium for the dashboard's browser test and screenshots: Debian's `chromium` package
driven by Python playwright through `executable_path` (playwright's own browser download needs a
network this project does not assume).

`ensure_chromium()` installs the package with apt-get when `/usr/bin/chromium` is missing (as root;
otherwise it says what to run). `chromium()` opens a browser with flags that keep it from reaching
any network service of its own (no background networking, updates, sync or QUIC).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class BrowserUnavailable(RuntimeError):
    """Chromium or playwright cannot be used here; the message says how to get them."""


def ensure_chromium(path: Path = CHROMIUM, *, timeout_s: float = 900) -> Path:
    """The Chromium binary, installing Debian's `chromium` package first if it is missing."""
    if path.is_file():
        return path
    if shutil.which("apt-get") is None:
        raise BrowserUnavailable(f"{path} is missing and there is no apt-get to install it: install Chromium and "
                                 "pass its path")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise BrowserUnavailable(f"{path} is missing: install it with `sudo apt-get install -y chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:  # the package lists may be missing or stale
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=timeout_s)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not path.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BrowserUnavailable(f"`{' '.join(install)}` failed: {' | '.join(tail)}")
    return path


@contextmanager
def chromium(*, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A playwright `Page` in headless Debian Chromium (the browser is closed on exit)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise BrowserUnavailable(f"python playwright is missing ({err}): pip install playwright") from None
    binary = ensure_chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(binary), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()
