"""Shared fixtures; the helpers that tests import live in tests/helpers.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from robolake.sample import write_robomimic_dataset
from tests.helpers import BROWSER_TIMEOUT_S, CAMERAS


@pytest.fixture(scope="session")
def robomimic_raw(tmp_path_factory) -> Path:
    """10 synthetic robomimic episodes of 20-ish steps in 3 files, two camera sizes."""
    raw = tmp_path_factory.mktemp("robomimic_raw")
    write_robomimic_dataset(str(raw), episodes=10, steps=24, seed=7, per_file=4, cameras=CAMERAS)
    return raw


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine their spinning costs 10x."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def s3_bucket(monkeypatch) -> str:
    """A bucket on a local moto S3 server started for the test; yields its name."""
    from tests.s3_server import moto_server

    with moto_server("robolake-test", monkeypatch):
        yield "robolake-test"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory) -> list[str]:
    """The headless chromium command line (its own profile folder), once it has opened a page."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (tests/peers/chromium.sh installs Debian's)")
    profile = tmp_path_factory.mktemp("chromium_profile")
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
    try:
        probe = subprocess.run([*command, "--dump-dom", "data:text/html,<p>ready</p>"],
                               capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"chromium did not open a page within {BROWSER_TIMEOUT_S} s")
    if "ready" not in probe.stdout:
        pytest.skip(f"chromium cannot start: {probe.stderr.strip()[-300:]}")
    return command
