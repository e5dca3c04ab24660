"""Headless Chromium for the tests that render adhere's pages (the eval report, the serve dashboard).

A test takes the `chromium` fixture (tests/conftest.py) and calls `run_chromium`. Without a
Chromium binary the test skips, unless ADHERE_REQUIRE_BROWSER=1 (CI sets it), where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

# Without the background-networking flags Chromium tries to reach the (closed) network at start.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def find_chromium() -> str:
    """The Chromium binary; skips the test when there is none, or fails it under ADHERE_REQUIRE_BROWSER=1."""
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found is None:
        message = "no Chromium binary found (Debian: apt-get install chromium)"
        if os.environ.get("ADHERE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{message}, and ADHERE_REQUIRE_BROWSER=1 requires the browser tests")
        pytest.skip(f"{message}; set ADHERE_REQUIRE_BROWSER=1 to make this a failure")
    return found


def run_chromium(binary: str, *args: str) -> str:
    """Run headless Chromium with a fresh profile and `args` (a URL, --screenshot=..., --dump-dom); its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
