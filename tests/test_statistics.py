"""Statistics (train split only, streaming, mergeable), outlier-action filtering and
normalization: known answers against numpy, filter policies, and the gold dataset."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipelines.filters import filter_episode
from robolake.lake import Build, Lake
from robolake.normalization import denormalize, load_statistics, normalize
from robolake.spec import parse_spec
from schemas.documents import check
from tests.helpers import assert_quantiles_match_numpy, load_split, robomimic_spec, robust_of, run_convert, stats_of


def test_known_answers_against_numpy():
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(0.01, 0.02, (30_000, 3)), rng.exponential(0.5, (30_000, 2)) - 0.2,
                           np.sign(rng.normal(size=(30_000, 1)))], axis=1)
    result = stats_of(rows).result()
    np.testing.assert_allclose(result["mean"], rows.mean(axis=0), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(result["std"], rows.std(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(result["min"], rows.min(axis=0))
    np.testing.assert_array_equal(result["max"], rows.max(axis=0))
    assert_quantiles_match_numpy(result, rows)


def _heavy_tailed(rng, n):
    return rng.standard_t(1.5, (n, 2)) * 0.01


def _bimodal(rng, n):
    return np.concatenate([rng.normal(-0.5, 0.01, (n // 2, 2)), rng.normal(0.8, 0.02, (n - n // 2, 2))])


@pytest.mark.parametrize("make, n", [
    (_heavy_tailed, 10_000), (_bimodal, 10_000), (lambda rng, n: np.full((n, 2), 0.123), 1_000),
    (lambda rng, n: rng.normal(size=(n, 2)), 7), (lambda rng, n: rng.normal(size=(n, 2)), 2),
    (lambda rng, n: np.array([[1.0, -2.0]]), 1), (_heavy_tailed, 1_000_000),
], ids=["heavy_tailed", "bimodal", "constant", "tiny_7", "tiny_2", "one_value", "heavy_tailed_1e6"])
def test_quantiles_equal_numpy_linear_interpolation_single_and_merged(make, n):
    rows = make(np.random.default_rng(n), n)
    whole = stats_of(rows).result()
    assert_quantiles_match_numpy(whole, rows)
    parts = [stats_of(part) for part in np.array_split(rows, 5) if len(part)]
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    assert {k: merged.result()[k] for k in ("q01", "median", "q99")} == {k: whole[k] for k in ("q01", "median", "q99")}


def test_constant_and_tiny_data_give_numpys_quantiles_exactly():
    constant = stats_of(np.full((50, 1), 0.3)).result()
    assert constant["q01"] == constant["median"] == constant["q99"] == [0.3]
    two = stats_of(np.array([[-1.0], [1.0]])).result()  # the order statistics at ranks 0 and n - 1: min and max
    assert [two[k][0] for k in ("q01", "median", "q99")] == pytest.approx(list(np.quantile([-1.0, 1.0], [0.01, 0.5, 0.99])))


def test_merging_two_halves_equals_the_whole():
    rows = np.random.default_rng(1).normal(3.0, 2.0, (10_001, 4))
    whole = stats_of(rows)
    first, second = stats_of(rows[:3_333]), stats_of(rows[3_333:])
    first.merge(second)
    merged, expected = first.result(), whole.result()
    for key in ("mean", "std"):
        np.testing.assert_allclose(merged[key], expected[key], rtol=1e-12)
    for key in ("count", "min", "max", "q01", "median", "q99"):
        assert merged[key] == expected[key], key


def test_statistics_pickle_sparse_and_come_back_whole():
    """Partial statistics cross every shuffle of the conversion (one per train shard)."""
    rows = np.random.default_rng(2).normal(0.0, 0.05, (500, 7))
    stats = stats_of(rows)
    pickled = pickle.dumps(stats)
    restored = pickle.loads(pickled)
    assert len(pickled) < stats.sketch.counts.nbytes / 10
    np.testing.assert_array_equal(restored.sketch.counts, stats.sketch.counts)
    assert restored.result() == stats.result()


def test_spike_is_caught_by_jump_and_zscore_rules():
    spec = parse_spec(robomimic_spec(Path("raw")))
    rng = np.random.default_rng(2)
    episodes = [rng.normal(0, 0.01, (60, 7)) for _ in range(50)]
    train = np.concatenate(episodes)
    spiked = episodes[0].copy()
    usual = np.median(np.abs(np.diff(spiked[:, 1])))
    spiked[30, 1] = spiked[29, 1] + 10 * usual * 8  # far beyond 10x the usual change, both ways
    result = filter_episode(spiked, spec, robust_of(train))
    assert {(f.rule, f.step, f.dim) for f in result.flags} == {("jump", 30, 1), ("zscore", 30, 1)}


def test_clean_gaussian_data_flags_at_most_a_tenth_of_a_percent():
    spec = parse_spec(robomimic_spec(Path("raw")))
    rng = np.random.default_rng(3)
    episodes = [rng.normal(0, 1, (100, 7)) for _ in range(300)]
    robust = robust_of(np.concatenate(episodes))
    flagged = sum(len({f.step for f in filter_episode(e, spec, robust).flags}) for e in episodes)
    assert flagged / (300 * 100) <= 0.001


@pytest.mark.parametrize("policy", ["clip", "drop_step", "quarantine"])
def test_each_policy(policy):
    spec = parse_spec(robomimic_spec(Path("raw"), filters={"bounds": {"max": [0.5] * 6 + [None], "policy": policy},
                                                          "zscore": None, "jump": None}))
    actions = np.zeros((12, 7))
    actions[0, 2] = 0.9
    actions[5, 0] = 0.7
    result = filter_episode(actions, spec, robust_of(actions))
    assert [(f.step, f.dim, f.value, f.rule, f.policy) for f in result.flags] == [
        (0, 2, 0.9, "bounds", policy), (5, 0, 0.7, "bounds", policy)
    ]
    if policy == "clip":
        assert not result.quarantined and result.keep.all()
        assert result.actions[0, 2] == result.actions[5, 0] == 0.5
    elif policy == "drop_step":
        assert result.keep.tolist() == [False] + [True] * 4 + [False] + [True] * 6
        assert result.actions.shape == (10, 7) and np.abs(result.actions).max() == 0
    else:
        assert result.quarantined and "bounds rule flagged dz=0.9 at step 0 and 1 more item(s)" in result.rejected


def _statistics(mode: str, mask: list[bool], std_bound: float = 1.0) -> dict:
    stats = {"mean": [1.0, -2.0, 0.5], "std": [2.0, 0.0, 1.0], "min": [-3.0, -2.0, -1.0], "max": [5.0, -2.0, 2.0],
             "q01": [-2.0, -2.0, -0.5], "q99": [4.0, -2.0, 1.5], "mask": mask}
    return {"action": stats, "robolake": {"normalization": {"mode": mode, "std_bound": std_bound, "mask": mask}}}


@pytest.mark.parametrize("mode", ["mean_std", "bounds_q99", "min_max"])
def test_normalize_round_trip_zero_range_and_mask(mode):
    statistics = _statistics(mode, [True, True, False])
    values = np.array([[0.5, -2.0, 7.0], [1.5, -2.0, -3.0]])
    normalized = normalize(values, statistics)
    assert np.all(np.abs(normalized[:, 0]) <= 1)
    assert np.all(normalized[:, 1] == 0)  # zero range: 0, no division by zero
    np.testing.assert_array_equal(normalized[:, 2], values[:, 2])  # masked: as it is
    np.testing.assert_allclose(denormalize(normalized, statistics), values, rtol=1e-12)


def test_clipping_is_the_only_loss():
    statistics = _statistics("bounds_q99", [True, True, True])
    values = np.array([[10.0, -2.0, 0.5]])
    assert normalize(values, statistics)[0, 0] == 1.0
    assert denormalize(normalize(values, statistics), statistics)[0, 0] == 4.0  # q99, not 10


@pytest.fixture(scope="module")
def spiked_raw(robomimic_raw, tmp_path_factory) -> Path:
    """The session's robomimic files with one spike in the first episode of tabletop_000."""
    raw = tmp_path_factory.mktemp("spiked")
    for path in robomimic_raw.glob("*.hdf5"):
        shutil.copy(path, raw / path.name)
    with h5py.File(raw / "tabletop_000.hdf5", "r+") as h5:
        h5["data/demo_1/actions"][0, 0] = 5.0  # the first step, far outside the data
    return raw


@pytest.mark.parametrize("policy", ["clip", "drop_step", "quarantine"])
def test_policies_in_the_gold_dataset(spiked_raw, tmp_path, policy):
    rules = {"bounds": {"max": [1.0] * 6 + [None], "policy": policy}, "zscore": None, "jump": None}
    spec = robomimic_spec(spiked_raw, filters=rules)
    outcome = run_convert(spec, tmp_path)
    build = Build.of_gold(outcome.gold_dir)
    quarantine_dir = Path(build.quarantine)
    records = pq.read_table(quarantine_dir / "filtered_actions").to_pylist()
    spike = records
    assert [(r["episode_id"], r["step_index"], r["dimension"], r["value"], r["policy"]) for r in spike] == [
        ("tabletop_000/data/demo_1", 0, "dx", 5.0, policy)
    ]
    episodes = {
        e["episode_metadata"]["episode_id"]: e for split in outcome.manifest["counts"]["by_split"]
        for e in load_split(outcome.gold_dir, split)
    }
    with h5py.File(spiked_raw / "tabletop_000.hdf5") as h5:
        source = h5["data/demo_1/actions"][()]
    if policy == "quarantine":
        assert "tabletop_000/data/demo_1" not in episodes
        rejected = pq.read_table(quarantine_dir / "quarantine.parquet").to_pylist()
        assert [(r["episode_id"], r["reason_code"]) for r in rejected] == [("tabletop_000/data/demo_1", "outlier_action")]
        assert outcome.manifest["counts"]["episodes_written"] == 9
        return
    steps = episodes["tabletop_000/data/demo_1"]["steps"]
    if policy == "clip":
        assert spike[0]["replacement"] == 1.0 and len(steps) == 24 and steps[0]["action_raw"][0] == 1.0
    else:
        assert spike[0]["replacement"] is None and len(steps) == 23
        assert steps[0]["is_first"] and not any(s["is_first"] for s in steps[1:])  # is_first moved to step 1
        np.testing.assert_allclose(steps[0]["action_raw"], source[1], rtol=1e-6)
        assert steps[-1]["is_last"] and steps[-1]["is_terminal"]
    assert outcome.manifest["filter"]["by_rule"]["bounds"] == 1
    # the curated steps table holds exactly gold's numeric steps
    curated = pads.dataset(build.silver("curated_steps"), partitioning="hive").to_table().to_pylist()
    by_episode = {}
    for row in sorted(curated, key=lambda r: r["step_index"]):
        by_episode.setdefault(row["episode_id"], []).append(row)
    assert set(by_episode) == set(episodes)
    for episode_id, rows in by_episode.items():
        gold_steps = episodes[episode_id]["steps"]
        for key in ("action", "action_raw", "state", "is_first", "is_last"):
            gold = [s["observation"]["state"] if key == "state" else s[key] for s in gold_steps]
            np.testing.assert_array_equal([r[key] for r in rows], gold)


def test_statistics_come_from_train_only_and_travel_with_the_dataset(robomimic_raw, tmp_path):
    first = run_convert(robomimic_spec(robomimic_raw), tmp_path / "a")
    statistics = load_statistics(first.gold_dir)
    check(statistics, "dataset_statistics", "dataset_statistics.json")
    train = load_split(first.gold_dir, "train")
    raw_train = np.concatenate([[s["action_raw"] for s in e["steps"]] for e in train])
    assert statistics["num_transitions"] == len(raw_train) and statistics["num_trajectories"] == len(train)
    np.testing.assert_allclose(statistics["action"]["mean"], raw_train.mean(axis=0), rtol=1e-5, atol=1e-7)
    assert statistics["action"]["mask"] == [True] * 6 + [False]
    assert set(statistics["robolake"]["cameras"]) == {"front", "wrist"}
    front = np.concatenate([[s["observation"]["front"] for s in e["steps"]] for e in train]).reshape(-1, 3) / 255
    np.testing.assert_allclose(statistics["robolake"]["cameras"]["front"]["mean"], front.mean(axis=0), atol=0.01)
    np.testing.assert_allclose(statistics["robolake"]["cameras"]["front"]["std"], front.std(axis=0), atol=0.01)

    # Change every val/test episode: the statistics stay the same, the dataset does not.
    changed = tmp_path / "raw"
    shutil.copytree(robomimic_raw, changed)
    held_out = [e["episode_metadata"]["episode_id"] for split in ("val", "test")
                for e in (load_split(first.gold_dir, split) if split in first.manifest["counts"]["by_split"] else [])]
    assert held_out, "the fixture should put some episodes outside train"
    for episode_id in held_out:
        file_id, group = episode_id.split("/", 1)
        with h5py.File(changed / f"{file_id}.hdf5", "r+") as h5:
            h5[f"{group}/actions"][:, :6] *= 1.5
    second = run_convert(robomimic_spec(changed), tmp_path / "b")
    assert second.manifest["fingerprint"] != first.manifest["fingerprint"]
    again = load_statistics(second.gold_dir)
    assert json.dumps(again["action"]) == json.dumps(statistics["action"])
    assert json.dumps(again["proprio"]) == json.dumps(statistics["proprio"])


def test_bounds_q99_mode_normalizes_state_and_leaves_the_gripper(robomimic_raw, tmp_path):
    spec = robomimic_spec(robomimic_raw, normalization={"mode": "bounds_q99", "state": True})
    outcome = run_convert(spec, tmp_path)
    statistics = load_statistics(outcome.gold_dir)
    assert statistics["robolake"]["normalization"]["mode"] == "bounds_q99"
    silver = pq.read_table(Lake(str(tmp_path)).silver_partition("synthetic_tabletop", "steps", "1.0.0")).to_pylist()
    raw_state = {(r["episode_id"], r["step_index"]): r["state"] for r in silver}
    for split in outcome.manifest["counts"]["by_split"]:
        for episode in load_split(outcome.gold_dir, split):
            episode_id = episode["episode_metadata"]["episode_id"]
            actions = np.array([s["action"] for s in episode["steps"]])
            raw = np.array([s["action_raw"] for s in episode["steps"]])
            assert np.abs(actions).max() <= 1.0
            np.testing.assert_array_equal(actions[:, 6], raw[:, 6])  # the gripper is masked
            np.testing.assert_allclose(actions, normalize(raw, statistics).astype(np.float32), atol=1e-6)
            state = np.array([raw_state[(episode_id, i)] for i in range(len(episode["steps"]))])
            expected = normalize(state, statistics, "state").astype(np.float32)
            np.testing.assert_allclose([s["observation"]["state"] for s in episode["steps"]], expected, atol=1e-6)


def test_mean_std_maps_std_bound_deviations_to_one_and_old_files_keep_their_clip():
    statistics = _statistics("mean_std", [True, True, True], std_bound=3.0)  # mean 1, std 2 in dimension 0
    values = np.array([[1.0 + 6.0, -2.0, 0.5], [1.0 - 3.0, -2.0, 0.5], [1.0 + 60.0, -2.0, 0.5]])
    np.testing.assert_allclose(normalize(values, statistics)[:, 0], [1.0, -0.5, 1.0])
    old = {"action": statistics["action"], "robolake": {"normalization": {"mode": "mean_std", "clip": 2.0}}}
    np.testing.assert_allclose(normalize(values, old)[:, 0], [2.0, -1.5, 2.0])  # schema 1.0.0: z clipped at 2
