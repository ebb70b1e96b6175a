"""`robolake stats NAME --where`: statistics of any selection of episodes merged from the
silver episode_stats rows equal a fresh computation over the selected curated steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from cli.main import main
from robolake.lake import Lake
from robolake.normalization import load_statistics
from tests.helpers import assert_quantiles_match_numpy, robomimic_spec, run_convert
from validation.selection_stats import selection_statistics

NAME = "synthetic_tabletop"


@pytest.fixture(scope="module")
def lake(robomimic_raw, tmp_path_factory) -> Path:
    lake = tmp_path_factory.mktemp("stats") / "lake"
    run_convert(robomimic_spec(robomimic_raw, normalization={"state": True}), lake)
    return lake


def curated(lake: Path) -> dict[str, np.ndarray]:
    """Gold's raw actions per episode, with the split and the task of each."""
    steps = pads.dataset(Lake(str(lake)).silver_partition(NAME, "curated_steps", "1.0.0"), partitioning="hive").to_table().to_pandas()
    episodes = pads.dataset(Lake(str(lake)).silver_partition(NAME, "episodes", "1.0.0"), partitioning="hive").to_table().to_pandas()
    return steps.merge(episodes[["episode_id", "task"]], on="episode_id")


def test_without_a_condition_the_train_selection_is_dataset_statistics(lake):
    merged = selection_statistics(Lake(str(lake)), NAME, None)
    published = load_statistics(Lake(str(lake)).gold(NAME, "1.0.0"))
    assert merged["num_transitions"] == published["num_transitions"]
    assert merged["num_trajectories"] == published["num_trajectories"]
    for key in ("action", "proprio"):
        for stat in ("mean", "std", "min", "max", "q01", "median", "q99"):
            np.testing.assert_allclose(merged[key][stat], published[key][stat], rtol=1e-9, atol=1e-12, err_msg=stat)
    for camera, pixels in published["robolake"]["cameras"].items():
        np.testing.assert_allclose(merged["cameras"][camera]["mean"], pixels["mean"], rtol=1e-9)
        np.testing.assert_allclose(merged["cameras"][camera]["std"], pixels["std"], rtol=1e-9)


@pytest.mark.parametrize("where, split", [("task = 'pick'", "train"), ("task <> 'pick' AND color IS NOT NULL", "all")])
def test_a_selection_equals_a_direct_computation_on_its_steps(lake, where, split):
    merged = selection_statistics(Lake(str(lake)), NAME, where, split)
    steps = curated(lake)
    selected = steps[steps.task == "pick"] if where.startswith("task =") else steps[steps.task != "pick"]
    if split != "all":
        selected = selected[selected.split == split]
    actions = np.stack(selected.action_raw).astype(np.float64)
    assert 0 < merged["num_transitions"] == len(actions) < len(steps)
    assert merged["num_trajectories"] == selected.episode_id.nunique()
    np.testing.assert_allclose(merged["action"]["mean"], actions.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(merged["action"]["std"], actions.std(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(merged["action"]["min"], actions.min(axis=0))
    np.testing.assert_array_equal(merged["action"]["max"], actions.max(axis=0))
    assert_quantiles_match_numpy(merged["action"], actions)


def test_the_cli_prints_a_table_or_json_and_a_bad_condition_is_one_line(lake, capsys):
    assert main(["stats", NAME, "--lake", str(lake), "--where", "task = 'pick'"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["dimension", "mean", "std", "min", "q01", "median", "q99", "max"]
    assert out.splitlines()[1].startswith("dx ") and "camera front: RGB mean" in out
    assert main(["stats", f"{NAME}:1.0.0", "--lake", str(lake), "--split", "all", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["split"] == "all" and document["num_transitions"] == len(curated(lake))
    assert main(["stats", NAME, "--lake", str(lake), "--where", "tsk = 'pick'"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'Referenced column "tsk" not found' in err
    assert main(["stats", NAME, "--lake", str(lake), "--where", "task = 'nothing'"]) == 2
    assert "no episode meets (task = 'nothing') AND split = 'train'" in capsys.readouterr().err
