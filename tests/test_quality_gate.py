"""`robolake validate`: a clean converted dataset passes; for every error-severity check,
the same dataset with that one thing broken in its lake tables fails the gate with that
check named; warnings do not fail it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.main import main
from pipelines.silver_writer import fixed_list, vectors
from robolake.lake import Lake
from tests.helpers import robomimic_spec, run_convert
from validation.gate import load_config, run_gate
from validation.quality_flags import CHECK_NAMES as QUALITY_CHECK_NAMES

NAME, VERSION = "synthetic_tabletop", "1.0.0"


MEAN_STD = {"mode": "mean_std", "std_bound": 3.0}


@pytest.fixture(scope="module")
def gaussian_raw(robomimic_raw, tmp_path_factory) -> Path:
    """The conftest episodes with Gaussian actions and a -1/+1 gripper."""
    raw = tmp_path_factory.mktemp("gate_raw")
    rng = np.random.default_rng(3)
    for path in sorted(robomimic_raw.glob("*.hdf5")):
        copy = raw / path.name
        shutil.copy(path, copy)
        with h5py.File(copy, "a") as h5:
            for demo in h5["data"].values():
                actions = demo["actions"]
                gaussian = rng.normal(0.0, 0.01, actions.shape)
                gaussian[:, 6] = np.where(rng.random(len(gaussian)) < 0.5, -1.0, 1.0)
                actions[...] = gaussian
    return raw


@pytest.fixture(scope="module")
def clean_lake(gaussian_raw, tmp_path_factory) -> Path:
    """mean_std normalization (3 standard deviations to +-1), so that every check applies;
    0.3% of Gaussian values clip."""
    lake = tmp_path_factory.mktemp("gate") / "lake"
    run_convert(robomimic_spec(gaussian_raw, normalization=MEAN_STD), lake)
    return lake


@pytest.fixture
def lake(clean_lake, tmp_path) -> Path:
    """A copy of the clean lake that one test may break."""
    copy = tmp_path / "lake"
    shutil.copytree(clean_lake, copy)
    return copy


def gate(lake: Path, **overrides) -> dict[str, list]:
    """Run the gate; returns {"error": [failed checks], "warning": [...]}."""
    config = {**load_config(NAME), **overrides}
    outcomes, _ = run_gate(Lake(str(lake)), Lake(str(lake)).resolve(NAME), config)
    failed = {"error": [], "warning": []}
    for outcome in outcomes:
        if not outcome.success:
            failed[outcome.severity].append(outcome)
    return failed


def rewrite(lake: Path, table: str, change) -> None:
    """Apply `change(pandas frame) -> frame` to every Parquet file of a silver table."""
    for path in sorted(Path(Lake(str(lake)).silver_partition(NAME, table, VERSION)).glob("split=*/*.parquet")):
        original = pq.read_table(path)
        frame = change(original.to_pandas(), path)
        pq.write_table(pa.Table.from_pandas(frame, schema=original.schema, preserve_index=False), path)


def first_episode(frame):
    return frame["episode_id"] == frame["episode_id"].iloc[0]


def test_the_clean_dataset_passes_and_the_cli_writes_results_and_data_docs(lake, capsys):
    assert gate(lake)["error"] == []
    assert main(["validate", NAME, "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    assert f"gate {NAME} {VERSION}: PASSED" in out
    reports = lake / "reports" / NAME / VERSION
    results = json.loads((reports / "validate.json").read_text())
    assert results["passed"] and results["failed_errors"] == 0 and len(results["unexpected"]) >= 12
    details = json.loads((reports / "validate_details.json").read_text())
    assert details["checks"]["finite_values.non_finite"]["severity"] == "error"
    assert (reports / "data_docs" / "index.html").exists()


def _break_length(lake):
    def keep_three(frame, _):
        episode = first_episode(frame)
        return frame[~episode | (frame.groupby("episode_id").cumcount() < 3)]
    rewrite(lake, "curated_steps", keep_three)  # min_steps is 5


def _break_finite(lake):
    path = sorted(Path(Lake(str(lake)).silver_partition(NAME, "curated_steps", VERSION)).glob("split=train/*.parquet"))[0]
    table = pq.read_table(path)
    actions = vectors(table, "action_raw").copy()
    actions[1, 3] = np.nan  # a NaN, as a broken raw file would give (pandas would turn it into null)
    index = table.schema.get_field_index("action_raw")
    pq.write_table(table.set_column(index, table.schema.field(index), fixed_list(actions)), path)


def _break_range(lake):
    def big(frame, _):
        frame.at[frame.index[2], "action"] = np.array([3.0] + [0.0] * 6, np.float32)
        return frame
    rewrite(lake, "curated_steps", big)


def _break_moments(lake):
    def shrink(frame, path):
        if "split=train" in str(path):
            frame["action"] = [np.concatenate([a[:1] * 0.1, a[1:]]).astype(np.float32) for a in frame["action"]]
        return frame
    rewrite(lake, "curated_steps", shrink)


def _break_saturation(lake):
    def pile_up(frame, path):
        if "split=train" in str(path):
            frame["action"] = [np.concatenate([[1.0] if i % 5 == 0 else a[:1], a[1:]]).astype(np.float32)
                               for i, a in enumerate(frame["action"])]
        return frame
    rewrite(lake, "curated_steps", pile_up)


def _break_flags(lake):
    def second_first(frame, _):
        frame.loc[frame.index[1], "is_first"] = True
        return frame
    rewrite(lake, "curated_steps", second_first)


def _break_images(lake):
    ok, small = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))
    def shrink(frame, _):
        frame["image_front"] = small.tobytes()
        return frame
    rewrite(lake, "steps", shrink)


def _break_instructions(lake):
    def generic(frame, _):
        frame.loc[frame.index[0], "language_instruction"] = "task_17"
        return frame
    rewrite(lake, "episodes", generic)


def _break_unique_ids(lake):
    rewrite(lake, "episodes", lambda frame, _: frame.iloc[[0, *range(len(frame))]])


def _break_leakage(lake):
    episodes = Path(Lake(str(lake)).silver_partition(NAME, "episodes", VERSION))
    train = pq.read_table(next((episodes / "split=train").glob("*.parquet")))
    (episodes / "split=leak").mkdir()
    pq.write_table(train.slice(0, 1), episodes / "split=leak" / "part-00000.parquet")


def _break_statistics(lake):
    path = Path(Lake(str(lake)).gold(NAME, VERSION)) / "dataset_statistics.json"
    document = json.loads(path.read_text())
    del document["num_transitions"]
    path.write_text(json.dumps(document))


def _break_quarantine_share(lake):
    path = Path(Lake(str(lake)).gold(NAME, VERSION)) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["counts"]["episodes_found"] += 5
    manifest["counts"]["episodes_quarantined"] += 5
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("breaker, check, column", [
    (_break_length, "episode_length", "num_steps"),
    (_break_finite, "finite_values", "non_finite"),
    (_break_range, "normalized_range", "max_abs"),
    (_break_moments, "normalized_moments", "std"),
    (_break_saturation, "normalization_saturation", "share_at_bound"),
    (_break_flags, "step_flags", "flags_ok"),
    (_break_images, "image_shape", "shape_ok"),
    (_break_instructions, "instructions", "language_instruction"),
    (_break_unique_ids, "unique_episode_ids", "episode_id"),
    (_break_leakage, "split_leakage", "splits"),
    (_break_statistics, "statistics_schema", "valid"),
    (_break_quarantine_share, "quarantine_share", "share"),
])
def test_each_error_check_fails_the_gate_on_a_dataset_that_breaks_it(lake, breaker, check, column):
    breaker(lake)
    errors = gate(lake)["error"]
    assert (check, column) in {(o.check, o.column) for o in errors}, [(o.check, o.column) for o in errors]
    failed = next(o for o in errors if o.check == check)
    assert failed.unexpected >= 1 and failed.examples


def test_the_cli_names_the_failed_expectation_and_exits_1(lake, capsys):
    _break_finite(lake)
    assert main(["validate", f"{NAME}:{VERSION}", "--lake", str(lake)]) == 1
    out = capsys.readouterr().out
    assert ("FAIL finite_values: 1 of 10 episodes break the rule \"no NaN, inf or null in action, action_raw or state\" "
            "(expect_column_values_to_be_between on non_finite)") in out
    assert f"gate {NAME} {VERSION}: FAILED" in out
    assert json.loads((lake / "reports" / NAME / VERSION / "validate.json").read_text())["failed_errors"] == 1


def test_a_warning_is_reported_but_does_not_fail_the_gate(lake):
    _break_moments(lake)
    severity = {**load_config(NAME)["severity"], "normalized_moments": "warning"}
    failed = gate(lake, severity=severity)
    # the round trip notices it too: the shrunk normalized values no longer give back action_raw (the
    # behaviour checks warn of the Gaussian actions' random gripper: tests/test_quality_checks.py)
    assert failed["error"] == [] and [o.check for o in failed["warning"] if o.check not in QUALITY_CHECK_NAMES] == [
        "normalized_moments", "normalization_roundtrip"]


def test_unknown_dataset_and_version_are_one_clear_error(lake, capsys):
    assert main(["validate", "nope", "--lake", str(lake)]) == 2
    assert "nope: no published version" in capsys.readouterr().err
    assert main(["validate", f"{NAME}:9.9.9", "--lake", str(lake)]) == 2
    assert f"{NAME}:9.9.9: not published; versions: {VERSION}" in capsys.readouterr().err


def _convert_and_gate(raw: Path, tmp_path: Path, normalization: dict) -> dict[str, list]:
    run_convert(robomimic_spec(raw, normalization=normalization), tmp_path / "lake")
    return gate(tmp_path / "lake")


def test_mean_std_at_one_standard_deviation_fails_the_gate_naming_dimensions_and_modes(gaussian_raw, tmp_path):
    errors = _convert_and_gate(gaussian_raw, tmp_path, {"mode": "mean_std", "std_bound": 1.0})["error"]
    failed = [o for o in errors if o.check == "normalization_saturation"]
    assert len(failed) == 1 and failed[0].unexpected == 6, [(o.check, o.examples) for o in errors]
    statistics = json.loads((Path(Lake(str(tmp_path / "lake")).gold(NAME, VERSION)) / "dataset_statistics.json").read_text())
    shares = statistics["robolake"]["saturation"]["action"]
    for example in failed[0].examples:  # "dx 31.2% at the bound (would be: bounds_q99 2.1%, min_max 0.6%)"
        name, share = example.split()[:2]
        index = ["dx", "dy", "dz", "droll", "dpitch", "dyaw"].index(name)
        assert 0.25 < float(share.rstrip("%")) / 100 < 0.4  # a standard normal beyond +-1: 31.7%
        assert float(share.rstrip("%")) / 100 == pytest.approx(shares["mean_std"][index], abs=0.06)
        assert "bounds_q99" in example and "min_max" in example
    assert all(share <= 0.05 for share in shares["bounds_q99"][:6])


def test_an_unmasked_gripper_is_reported_as_binary_not_as_saturation(gaussian_raw, tmp_path):
    failed = _convert_and_gate(gaussian_raw, tmp_path, {"mask": [True] * 7})
    assert [o.check for o in failed["error"]] == []
    spread = [o for o in failed["warning"] if o.check == "dimension_spread"]
    assert len(spread) == 1 and spread[0].examples == [
        "gripper: binary: it sits at +-1 by construction; mask it (normalization.mask) to pass it through as is"]


def test_the_round_trip_check_reports_clipping_and_the_largest_error_in_action_units(gaussian_raw, tmp_path):
    from validation.checks import GateInputs, normalization_roundtrip
    from robolake.lake_views import connect

    run_convert(robomimic_spec(gaussian_raw), tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    target = lake.resolve(NAME)
    inputs = GateInputs(connect(lake, NAME, VERSION), lake, target.spec, target.manifest, target.statistics,
                        target.gold_dir, load_config(NAME))
    table = normalization_roundtrip(inputs).table.set_index("dimension")
    steps = pq.read_table(lake.silver_partition(NAME, "curated_steps", VERSION)).to_pandas()
    raw = np.stack(steps.action_raw)[:, :6].astype(np.float64)
    q01, q99 = (np.asarray(target.statistics["action"][k][:6]) for k in ("q01", "q99"))
    np.testing.assert_allclose(table.clipped_share, ((raw <= q01) | (raw >= q99)).mean(axis=0), atol=2e-3)
    lost = np.maximum(q01 - raw, raw - q99).clip(0)  # what clipping to [q01, q99] loses
    np.testing.assert_allclose(table.max_error, lost.max(axis=0), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(table.mean_error, lost.mean(axis=0), rtol=1e-2, atol=1e-6)
    np.testing.assert_allclose(table.signal_lost, lost.mean(axis=0) / np.abs(raw).mean(axis=0), rtol=1e-2, atol=1e-6)
    assert (table.signal_lost < 0.2).all()
