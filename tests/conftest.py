"""Shared fixtures; the helpers that tests import live in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from robolake.sample import write_robomimic_dataset
from tests.helpers import CAMERAS


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
