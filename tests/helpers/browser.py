"""Headless Chromium for the tests that open a page as a person would (the report, `dvc plots show`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# No request leaves the machine: every host name resolves to nothing (the pages must work offline).
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND"


def chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def in_ci() -> bool:
    """``CI=true`` (``.ci/run`` exports it; CI services set it): the browser check may not be skipped there."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def need_chromium() -> str:
    """The Chromium binary; without one, skip (saying why) except under CI, where it is a failure."""
    found = chromium()
    if found is None:
        why = "no Chromium found (install the Debian package `chromium`, or set CHROMIUM=/path/to/chrome)"
        if in_ci():
            pytest.fail(f"{why}; CI={os.environ['CI']}: the browser check must run in CI (.ci/run installs it)")
        pytest.skip(why)
    return found


def run_chromium(tmp: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Headless Chromium with a throw-away profile, console messages on stderr, offline, 20 s of virtual time."""
    cmd = [need_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0", OFFLINE,
           "--virtual-time-budget=20000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
