"""`robolake summary` on a lake built here: a converted version with one episode
quarantined, its gate and coverage report, a short training run and its evaluation; and,
on the same lake before any of those ran, each missing piece said as such."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli.main import main
from cli.summary import under_sampled_values
from robolake.lake import Lake
from tests.helpers import config_file, robomimic_spec, run_convert

NAME = "synthetic_tabletop:1.0.0"


@pytest.fixture(scope="module")
def converted(robomimic_raw, tmp_path_factory) -> tuple[Path, Path]:
    """(a lake with one converted version, one NaN episode quarantined; a copy of it)."""
    root = tmp_path_factory.mktemp("summary")
    raw = root / "raw"
    shutil.copytree(robomimic_raw, raw)
    with h5py.File(raw / "tabletop_000.hdf5", "r+") as h5:
        h5["data/demo_1/actions"][3, 0] = np.nan
    spec = robomimic_spec(raw, splits={"fractions": {"train": 0.5, "test": 0.5}})
    run_convert(spec, root / "lake")
    shutil.copytree(root / "lake", root / "bare")  # as converted: no gate, no report, no run
    return root / "lake", root / "bare"


@pytest.fixture(scope="module")
def complete(converted, tmp_path_factory) -> Path:
    """The converted lake after the gate, the coverage report, training and evaluation."""
    lake, _ = converted
    assert main(["validate", NAME, "--lake", str(lake)]) in (0, 1)
    assert main(["report", NAME, "--lake", str(lake)]) == 0
    config = config_file(tmp_path_factory.mktemp("config"), steps=6, val_every=3)
    run = lake / "runs" / "tiny"
    assert main(["train", NAME, "--config", config, "--lake", str(lake), "--run-dir", str(run)]) == 0
    assert main(["evaluate", str(run), "--lake", str(lake), "--rollouts", "2", "--max-steps", "3"]) == 0
    return lake


def summary(lake: Path, capsys) -> list[str]:
    assert main(["summary", "--lake", str(lake)]) == 0
    return capsys.readouterr().out.splitlines()


def row(lines: list[str], first: str) -> list[str]:
    """The cells (split on runs of 2+ spaces) of every line starting with `first`."""
    return [re.split(r" {2,}", line) for line in lines if line.startswith(first)]


def test_summary_shows_the_real_figures(complete, capsys):
    lines = summary(complete, capsys)
    assert all(len(line) <= 100 for line in lines if str(complete) not in line)  # paths are as long as they are
    gold = Lake(str(complete)).resolve(NAME)
    counts, saturation = gold.manifest["counts"], gold.manifest["saturation"]["action"]
    assert counts["episodes_quarantined"] == 1
    worst = max(saturation, key=saturation.get)
    reports = complete / "reports" / "synthetic_tabletop" / "1.0.0"
    validate = json.loads((reports / "validate.json").read_text())
    gate = "passed" if validate["passed"] else "FAILED"
    # the figures, the under-sampled values, the behaviour checks' flags, the first HTML report
    [figures, values, behaviour, _] = row(lines, NAME)
    assert behaviour[1] == "none (step_timing skipped)"  # 9 clean episodes; HDF5 records no timestamps
    _, written, quarantined, gate_cell, at_bound = figures
    assert (written, quarantined) == (str(counts["episodes_written"]), "1") and gate_cell.startswith(gate)
    assert at_bound == f"{saturation[worst]:.1%} ({worst})"
    flagged = json.loads((reports / "coverage.json").read_text())["flagged"]
    assert values[1].startswith(f"{len(flagged)}: {flagged[0]}")

    run = complete / "runs" / "tiny"
    trained = json.loads((run / "summary.json").read_text())
    rollouts = json.loads((run / "eval" / "eval.json").read_text())["rollouts"]
    [name, trained_on, val_loss, success], [_, swap], _ = row(lines, "tiny")  # figures, swap check, HTML report
    assert (name, trained_on) == ("tiny", NAME)
    assert val_loss == f"{trained['best_val_loss']:.3f} (step {trained['best_step']})"
    low, high = rollouts["success_ci"]
    assert success == f"{rollouts['successes']} of 2 ({rollouts['success_rate']:.0%}, 95% CI {low:.0%}-{high:.0%})"
    named = json.loads((run / "eval" / "eval.json").read_text())["instruction_swap"]["went_to_named"]
    assert swap == (f"went to the named object {named['count']} of 2 ({named['rate']:.0%}, "
                    f"95% CI {named['ci'][0]:.0%}-{named['ci'][1]:.0%})")
    pages = lines[lines.index("HTML reports") + 1:]
    assert [page.split()[-1] for page in pages] == [
        str(reports / "coverage.html"), str(reports / "data_docs" / "index.html"), str(run / "eval" / "eval.html")]


def test_missing_pieces_are_said_as_such(converted, capsys):
    _, bare = converted
    lines = summary(bare, capsys)
    [figures, values, behaviour] = row(lines, NAME)
    assert figures[2:4] == ["1", "not run"] and values[1] == behaviour[1] == "no coverage report"
    assert f"runs: none in {bare / 'runs'} yet (robolake train)" in lines
    assert "HTML reports" not in lines


def test_a_run_without_summary_or_evaluation(converted, capsys, tmp_path):
    _, bare = converted
    lake = tmp_path / "lake"
    shutil.copytree(bare, lake)
    (lake / "runs" / "started" / "last").mkdir(parents=True)
    (lake / "runs" / "started" / "last" / "provenance.json").write_text(json.dumps(
        {"dataset": {"name": "synthetic_tabletop", "version": "1.0.0"}, "started_at": "2026-01-01T00:00:00Z"}))
    [[_, trained_on, val_loss, success], [_, swap]] = row(summary(lake, capsys), "started")
    assert (trained_on, val_loss, success, swap) == (NAME, "no summary.json (not finished)", "not evaluated",
                                                     "not evaluated")


def test_an_empty_lake_is_one_clear_error(tmp_path, capsys):
    assert main(["summary", "--lake", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no lake at {tmp_path} (no raw/ manifest, no versions/): check --lake" in err and "Traceback" not in err


def test_under_sampled_values_come_whole_from_the_report():
    """Values are listed as the report names them, a ": " inside one included; a report
    written before it named them gives its count and what to do."""
    coverage = {"under_sampled": 2, "flagged": ["scene=lab: bench 2", "task=push"]}
    assert under_sampled_values(coverage, room=80) == "2: scene=lab: bench 2, task=push"
    assert under_sampled_values(coverage, room=25) == "2: scene=lab: bench 2, +1 more"
    assert under_sampled_values({"under_sampled": 3, "flags": ["a=b: 1 of 9 episodes"]}, room=80) == (
        "3 (run robolake report again to list them)")
