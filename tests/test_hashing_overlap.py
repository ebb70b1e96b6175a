"""Source hashes computed beside ingest (pipelines/convert.py) are still each file's plain
sha256, wherever a build records them: the manifest, the raw manifest, silver, gold and
the quarantine, in one process and on two multi_processing workers, on a first
conversion and with the hashes registered."""

from __future__ import annotations

import hashlib
import shutil

import h5py
import numpy as np
import pyarrow.dataset as pads
import pytest

from pipelines import raw_manifest
from pipelines.convert import HASHES, RAW_STATISTICS, SILVER_SHARDS, STATISTICS, ShardResult, _gold_work
from pipelines.stats import DatasetStats
from robolake.lake import Lake
from tests.helpers import load_split, quarantine_records, robomimic_spec, run_convert


def plain_sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.fixture(scope="module")
def raw(robomimic_raw, tmp_path_factory):
    """The robomimic files, one more whose first demo holds a NaN action (quarantined in
    ingest) and one that is not HDF5 (quarantined in planning, so hashed there)."""
    folder = tmp_path_factory.mktemp("raw")
    for path in robomimic_raw.glob("*.hdf5"):
        shutil.copy(path, folder)
    shutil.copy(folder / "tabletop_000.hdf5", folder / "with_nan.hdf5")
    with h5py.File(folder / "with_nan.hdf5", "r+") as h5:
        first = sorted(h5["data"])[0]
        h5[f"data/{first}/actions"][3, 0] = np.nan
    (folder / "garbage.hdf5").write_bytes(b"not an HDF5 file" * 1000)
    return folder


def check_hashes(outcome, lake_dir, expected: dict[str, str]) -> None:
    manifest = outcome.manifest
    assert {s["path"]: s["sha256"] for s in manifest["sources"]} == expected
    assert {path: row["sha256"] for path, row in raw_manifest.registered(Lake(str(lake_dir))).items()} == expected
    build = Lake(str(lake_dir)).current_build(manifest["dataset"], manifest["version"])
    silver = pads.dataset(build.silver("episodes"), partitioning="hive").to_table()
    assert silver.num_rows == manifest["counts"]["episodes_ingested"]
    assert all(expected[p] == s for p, s in zip(silver["source_path"].to_pylist(), silver["source_sha256"].to_pylist()))
    gold = [e["episode_metadata"] for split in manifest["counts"]["by_split"] for e in load_split(outcome.gold_dir, split)]
    assert len(gold) == manifest["counts"]["episodes_written"]
    assert all(expected[meta["source_path"]] == meta["source_sha256"] for meta in gold)
    quarantined = quarantine_records(lake_dir, manifest["dataset"], manifest["version"])
    assert {q["reason_code"] for q in quarantined} == {"unreadable_file", "non_finite"}
    assert all(expected[q["source_path"]] == q["source_sha256"] for q in quarantined)


@pytest.mark.parametrize("beam_args", [[], ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]],
                         ids=["in-process", "2 workers"])
def test_hashes_are_plain_sha256_first_and_registered(raw, tmp_path, beam_args):
    expected = {str(path): plain_sha256(path) for path in raw.glob("*.hdf5")}
    spec = robomimic_spec(raw)
    first = run_convert(spec, tmp_path, beam_args)
    check_hashes(first, tmp_path, expected)
    assert first.manifest["timings"]["stages_s"]["hash"] > 0
    again = run_convert(spec, tmp_path, beam_args, overwrite=True)  # the hashes are registered now
    check_hashes(again, tmp_path, expected)
    assert again.manifest["timings"]["stages_s"]["hash"] == 0
    assert again.manifest["fingerprint"] == first.manifest["fingerprint"]
    assert again.manifest["counts"] == first.manifest["counts"]


def test_each_gold_shard_is_sent_only_its_own_sources_hashes():
    """Barrier 2 hands each gold writer the sha256 of the files its episodes came from:
    at Open X-Embodiment scale the whole map (~100k files) copied to every scatter key
    would be most of the shuffle."""
    raw = DatasetStats(7, 3, [])
    raw.add_episode(np.random.default_rng(0).normal(size=(40, 7)), np.zeros((40, 3)), {})
    shards = [
        ShardResult("train", 0, 2, 80, sources=("/raw/a.hdf5", "/raw/b.hdf5")),
        ShardResult("train", 1, 1, 40, sources=("/raw/b.hdf5",)),
        ShardResult("val", 0, 0, 0),  # empty: not written
        ShardResult("val", 3, 1, 30, sources=("/raw/c.hdf5",)),
    ]
    hashes = [("/raw/a.hdf5", "aa"), ("/raw/b.hdf5", "bb"), ("/raw/c.hdf5", "cc"), ("/raw/unused.hdf5", "dd")]
    work, shared = _gold_work({SILVER_SHARDS: shards, RAW_STATISTICS: raw, STATISTICS: {}, HASHES: hashes})
    assert [(w.result.split, w.result.shard, w.index, w.count, w.hashes) for w in work] == [
        ("train", 0, 0, 2, {"/raw/a.hdf5": "aa", "/raw/b.hdf5": "bb"}),
        ("train", 1, 1, 2, {"/raw/b.hdf5": "bb"}),
        ("val", 3, 0, 1, {"/raw/c.hdf5": "cc"}),
    ]
