"""Every bad input ends in quarantine with its reason; the rest of the dataset is written."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from robolake.lake import Lake
from robolake.sample import write_robomimic_dataset, write_robomimic_file
from tests.helpers import CAMERAS, load_split, robomimic_spec, run_convert

STEPS = 24


def _replace(group: h5py.Group, key: str, data: np.ndarray) -> None:
    del group[key]
    group[key] = data


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


# fault name -> (how to break demo_1 of its own file, expected reason code, words the reason must contain)
FAULTS = {
    "truncated": (None, "unreadable_file", ["cannot open as HDF5"]),
    "missing_key": (lambda d: d.__delitem__("actions"), "missing_key", ["'actions'"]),
    "missing_attr": (lambda d: d.attrs.__delitem__("language_instruction"), "missing_key", ["instruction", "language_instruction"]),
    "length_mismatch": (
        lambda d: _replace(d, "obs/robot0_eef_pos", d["obs/robot0_eef_pos"][:-3]), "length_mismatch", ["'obs/robot0_eef_pos' has 21 steps but the actions have 24"]
    ),
    "nan_action": (lambda d: d["actions"].__setitem__((5, 2), np.nan), "non_finite", ["action", "step 5, dimension 2"]),
    "inf_state": (lambda d: d["obs/robot0_eef_quat"].__setitem__((7, 0), np.inf), "non_finite", ["state", "step 7"]),
    "too_short": ("short", "too_short", ["3 steps", "min_steps=5"]),
    "too_long": ("long", "too_long", ["40 steps", "max_steps=30"]),
    "bad_camera": (lambda d: _replace(d, "obs/wrist_image", np.zeros((STEPS, 60, 80), np.uint8)), "bad_shape", ["obs/wrist_image", "(T, H, W, 3)"]),
}


def _write_faulty(raw, name, fault, seed):
    path = str(raw / f"{name}.hdf5")
    steps = {"short": 3, "long": 40}.get(fault if isinstance(fault, str) else "", STEPS)
    write_robomimic_file(path, episodes=2 if steps == STEPS else 1, steps=steps, seed=seed, cameras=CAMERAS)
    if fault is None:
        _truncate(path)
    elif callable(fault):
        with h5py.File(path, "r+") as h5:
            fault(h5["data/demo_1"])


@pytest.fixture(scope="module")
def faulty_build(tmp_path_factory):
    raw = tmp_path_factory.mktemp("faulty_raw")
    write_robomimic_dataset(str(raw), episodes=4, steps=STEPS, seed=3, per_file=4, cameras=CAMERAS)
    for seed, (name, (fault, _, _)) in enumerate(FAULTS.items()):
        _write_faulty(raw, name, fault, seed + 100)
    lake = tmp_path_factory.mktemp("faulty_lake")
    spec = robomimic_spec(raw, episode_length={"min_steps": 5, "max_steps": 30})
    outcome = run_convert(spec, lake)
    table = pq.read_table(Path(Lake(str(lake)).quarantine("synthetic_tabletop", "1.0.0")) / "quarantine.parquet")
    quarantined = {row["episode_id"]: row for row in table.to_pylist()}
    written = {
        e["episode_metadata"]["episode_id"]
        for split in outcome.manifest["counts"]["by_split"]
        for e in load_split(outcome.gold_dir, split)
    }
    return outcome, quarantined, written


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_quarantined_with_reason(faulty_build, fault):
    _, quarantined, written = faulty_build
    _, code, words = FAULTS[fault]
    episode_id = fault if fault == "truncated" else f"{fault}/data/demo_1"
    record = quarantined[episode_id]
    assert record["reason_code"] == code
    for word in words:
        assert word in record["reason"], record["reason"]
    assert record["source_path"].endswith(f"{fault}.hdf5") and len(record["source_sha256"]) == 64
    assert episode_id not in written
    if fault not in ("truncated", "too_short", "too_long"):
        assert f"{fault}/data/demo_2" in written  # its healthy sibling in the same file


def test_counts_reconcile(faulty_build):
    outcome, quarantined, written = faulty_build
    counts = outcome.manifest["counts"]
    good = 4 + sum(1 for name in FAULTS if name not in ("truncated", "too_short", "too_long"))
    assert len(written) == counts["episodes_written"] == good
    assert len(quarantined) == counts["episodes_quarantined"] == len(FAULTS)
    assert counts["episodes_found"] == good + len(FAULTS)
    assert sum(outcome.manifest["quarantine_reasons"].values()) == len(FAULTS)


def test_all_quarantined_publishes_no_version_but_keeps_the_reasons(tmp_path):
    from robolake.errors import RobolakeError

    raw = tmp_path / "raw"
    write_robomimic_dataset(str(raw), episodes=2, steps=STEPS, seed=5, per_file=2, cameras=CAMERAS)
    spec = robomimic_spec(raw, episode_length={"min_steps": 100})
    with pytest.raises(RobolakeError, match="every episode was quarantined, nothing published") as error:
        run_convert(spec, tmp_path / "lake")
    assert Lake(str(tmp_path / "lake")).published() == []
    [rejected] = Lake(str(tmp_path / "lake")).build_dirs()  # kept for its reasons, until `robolake gc`
    assert f"reasons in {rejected.quarantine}/quarantine.parquet" in str(error.value)
    table = pq.read_table(Path(rejected.quarantine) / "quarantine.parquet")
    assert table.column("reason_code").to_pylist() == ["too_short", "too_short"]
