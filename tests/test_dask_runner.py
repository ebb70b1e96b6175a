"""The same conversion on Beam's FnApiRunner and on its DaskRunner (a dask.distributed
LocalCluster of two worker processes) gives the same version byte for byte; a given
--dask_client_address is the cluster the conversion runs on."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import distributed
import h5py
import numpy as np
import pytest

from pipelines.runners import beam_runner
from robolake.sample import write_robomimic_dataset
from tests.helpers import CAMERAS, quarantine_records, robomimic_spec, run_convert

pytestmark = pytest.mark.slow

NAME, VERSION = "synthetic_tabletop", "1.0.0"
# a spike that the bounds rule quarantines after ingest, beside the clip and drop rules' work
FILTERS = {"bounds": {"max": [1.0] * 6 + [None], "policy": "quarantine"}}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """7 episodes in 3 files, one with NaN actions (quarantined in ingest), one with an action
    spike (quarantined by the filter), and a file that cannot be opened (quarantined in planning)."""
    raw = tmp_path_factory.mktemp("dask_raw")
    write_robomimic_dataset(str(raw), episodes=7, steps=24, seed=11, per_file=3, cameras=CAMERAS)
    for path, (step, dim), value in (("tabletop_000.hdf5", (3, 0), 5.0), ("tabletop_001.hdf5", (5, 2), np.nan)):
        with h5py.File(raw / path, "r+") as h5:
            demo = sorted(h5["data"])[-1]
            h5[f"data/{demo}/actions"][step, dim] = value
    (raw / "tabletop_003.hdf5").write_bytes(b"not an HDF5 file")
    return raw


def _convert(raw: Path, lake: Path, beam_args: list[str]):
    started = time.perf_counter()
    outcome = run_convert(robomimic_spec(raw, filters=FILTERS), lake, beam_args)
    print(f"{beam_args or 'FnApiRunner'}: {time.perf_counter() - started:.1f} s")
    return outcome


def _file_hashes(gold_dir: str, pattern: str) -> dict[str, str]:
    return {str(path.relative_to(gold_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(gold_dir).glob(pattern))}


def test_dask_runner_builds_the_same_version_as_the_fnapi_runner(raw, tmp_path):
    fnapi = _convert(raw, tmp_path / "fnapi", [])
    dask = _convert(raw, tmp_path / "dask", ["--runner=DaskRunner", "--direct_num_workers=2"])

    assert dask.manifest["fingerprint"] == fnapi.manifest["fingerprint"]
    shards = _file_hashes(fnapi.gold_dir, "*.tfrecord-*")
    assert len(shards) >= 2 and _file_hashes(dask.gold_dir, "*.tfrecord-*") == shards
    for document in ("dataset_statistics.json", "dataset_info.json", "features.json"):
        assert (Path(dask.gold_dir) / document).read_bytes() == (Path(fnapi.gold_dir) / document).read_bytes()
    for key in ("counts", "quarantine_reasons", "filter", "saturation", "sources"):
        assert dask.manifest[key] == fnapi.manifest[key], key
    assert fnapi.manifest["quarantine_reasons"].keys() >= {"non_finite", "outlier_action"}
    assert fnapi.manifest["counts"]["episodes_quarantined"] == 3
    assert quarantine_records(tmp_path / "dask", NAME, VERSION) == quarantine_records(tmp_path / "fnapi", NAME, VERSION)
    assert any(arg.startswith("--dask_client_address=tcp://") for arg in dask.manifest["beam_options"])


def test_dask_runner_runs_on_the_cluster_at_the_given_address(raw, tmp_path):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        outcome = _convert(raw, tmp_path / "lake", ["--runner=DaskRunner", f"--dask_client_address={address}"])
        assert cluster.scheduler.task_prefixes  # the scheduler ran the pipeline's tasks
    assert f"--dask_client_address={address}" in outcome.manifest["beam_options"]
    assert outcome.manifest["counts"]["episodes_written"] == 5


def _worker_environ(address: str, name: str) -> set[str | None]:
    with distributed.Client(address) as client:
        return set(client.run(os.environ.get, name).values())


def test_the_local_cluster_keeps_glibc_allocator_defaults(monkeypatch):
    """Dask's nannies give workers MALLOC_TRIM_THRESHOLD_, which made every frame buffer a
    fresh mmap (a first conversion 25% slower); robolake's own cluster leaves it unset."""
    # as in a fresh process: a nanny also sets it in the process that started the cluster
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with beam_runner(["--runner=DaskRunner", "--direct_num_workers=1"]) as args:
        address = next(arg.split("=", 1)[1] for arg in args if arg.startswith("--dask_client_address="))
        assert _worker_environ(address, "MALLOC_TRIM_THRESHOLD_") == {None}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
        assert _worker_environ(cluster.scheduler_address, "MALLOC_TRIM_THRESHOLD_") == {"65536"}  # Dask's default
