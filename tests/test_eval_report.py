"""Closed-loop results joined to the training data (training/eval_report.py), on a planted
case: blue is 1 of the 10 train episodes, and the policy (the scripted expert but for
blue, where it does nothing) fails every blue rollout. The join, the weak-value line
and eval.html must name blue and link every failed rollout."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from robolake.lake import Lake
from robolake.sample.episode import build_episode
from tests.helpers import WIDTH, measure, robomimic_spec, run_convert
from training.eval_report import (
    compare_with_demonstrations,
    coverage_join,
    step_smoothness,
    weak_lines,
    write_eval_html,
)
from training.metrics import EpisodePrediction, grouped_metrics, smoothness
from training.rollout import run_rollouts
from training.sim_env import ScriptedPolicy, TabletopEnv

CAMERAS = {"front": (48, 64), "wrist": (24, 32)}
DATASET, VERSION = "synthetic_tabletop", "1.0.0"
TASKS = ["pick", "place"]
ROLLOUTS, SEED = 8, 2  # seed 2's first 8 pick/place scenes: 3 blue (episodes 0, 5, 7), 5 others
RARE = "blue"  # 1 of the robomimic_raw fixture's 10 episodes (sample seed 7)


class FailsOnColor:
    """The scripted expert, except in scenes of `color`, where it stands still, gripper open."""

    def __init__(self, env: TabletopEnv, color: str):
        self.env, self.color, self.expert = env, color, ScriptedPolicy(env)

    def reset(self) -> None:
        self.expert.reset()

    def act(self, observation: dict) -> np.ndarray:
        if self.env.meta.color == self.color:
            return np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
        return self.expert.act(observation)


@pytest.fixture(scope="module")
def planted(robomimic_raw, tmp_path_factory):
    """A lake whose one version has every episode in train, and the rollouts (failures
    saved under eval/rollouts)."""
    root = tmp_path_factory.mktemp("eval_report")
    run_convert(robomimic_spec(robomimic_raw, splits={"fractions": {"train": 1.0}}), root / "lake")
    env = TabletopEnv(cameras=CAMERAS)
    report = run_rollouts(FailsOnColor(env, RARE), env, ROLLOUTS, tasks=TASKS, seed=SEED,
                          failures_dir=root / "eval" / "rollouts", show_progress=False)
    env.close()
    return Lake(str(root / "lake")), report, root / "eval"


def test_the_rare_colour_is_joined_to_its_train_coverage_and_named_weak(planted):
    lake, report, _ = planted
    summary = report.summary()
    rows = coverage_join(lake, DATASET, VERSION, summary["by_field"])
    [blue] = [row for row in rows if (row["field"], row["value"]) == ("color", RARE)]
    assert (blue["rollouts"], blue["successes"], blue["success_rate"]) == (3, 0, 0.0)
    assert blue["success_ci"][1] < summary["success_rate"] == 5 / 8
    assert blue["failure_modes"] and sum(blue["failure_modes"].values()) == 3
    # 1 of 10 is below half an even share of 4 colours (12.5%): the coverage report's rule
    assert (blue["train_episodes"], blue["train_total"], blue["train_share"]) == (1, 10, 0.1)
    assert blue["under_sampled"] is True and blue["collect"] == 1
    others = [row for row in rows if row["field"] == "color" and row["value"] != RARE]
    assert all(row["success_rate"] == 1.0 for row in others)
    # the spec records no object: no train figures; every task is in training
    assert all(row["train_episodes"] is None for row in rows if row["field"] == "object")
    assert {row["value"]: row["train_total"] for row in rows if row["field"] == "task"} == dict.fromkeys(TASKS, 10)
    lines = weak_lines(rows, summary["success_rate"])
    assert ("color=blue: 0 of 3 rollouts succeed; 1 of 10 train episodes are blue (under-sampled): "
            "collect about 1 more") in lines
    assert not any(line.startswith(("color=red", "color=green", "color=yellow")) for line in lines)


def test_weak_lines_say_when_training_lacks_a_value():
    row = {"field": "color", "value": "purple", "rollouts": 5, "successes": 0, "success_ci": [0.0, 0.43],
           "train_episodes": 0, "train_total": 10, "under_sampled": True, "collect": None}
    assert weak_lines([row], overall_rate=0.8) == ["color=purple: 0 of 5 rollouts succeed; no train episode is purple"]
    assert weak_lines([row], overall_rate=0.4) == []  # its interval reaches the overall rate


def test_policy_length_and_smoothness_are_compared_per_step_with_the_demonstrations(planted):
    lake, report, _ = planted
    comparison = compare_with_demonstrations(report.records, lake, DATASET, VERSION)
    demos = [build_episode(7, index, steps=24, cameras={}).actions for index in range(10)]
    overall = comparison["overall"]
    assert (overall["demo_episodes"], overall["policy_rollouts"]) == (10, ROLLOUTS)
    assert overall["demo_mean_length"] == 24
    expected = np.mean([step_smoothness(smoothness(actions), len(actions)) for actions in demos])
    assert overall["demo_mean_step_smoothness"] == pytest.approx(expected, rel=1e-5)
    policy = np.mean([r.smoothness / (r.length - 1) for r in report.records])
    assert overall["policy_mean_step_smoothness"] == pytest.approx(policy)
    assert overall["step_smoothness_ratio"] == pytest.approx(policy / expected, rel=1e-5)
    assert overall["length_ratio"] == pytest.approx(np.mean([r.length for r in report.records]) / 24)
    assert set(comparison["per_task"]) == set(TASKS)


def _document(report, comparison: dict) -> dict:
    """An eval.json as `robolake evaluate` writes it, its offline part from one made-up episode."""
    episode = EpisodePrediction("e0", "pick", np.zeros((3, 2)), np.ones((3, 2)), np.zeros((3, 2), int),
                                np.zeros((3, 2), int))
    return {"checkpoint": "runs/finetune/best", "dataset": {"name": DATASET, "version": VERSION, "split": "test"},
            "trained_on": {"name": DATASET, "version": VERSION},
            **grouped_metrics([episode], ["dx", "gripper"], 1, 0.0, {"pick"}),
            "rollouts": {**report.summary(), "seed": SEED, "demonstrations": comparison},
            "baseline_rollouts": {"checkpoint": "runs/pretrain/best", **report.summary()}}


def test_eval_html_is_self_contained_and_links_every_failed_rollout(planted):
    lake, report, folder = planted
    summary = report.summary()
    rows = coverage_join(lake, DATASET, VERSION, summary["by_field"])
    lines = weak_lines(rows, summary["success_rate"])
    document = _document(report, compare_with_demonstrations(report.records, lake, DATASET, VERSION))
    page = write_eval_html(folder / "eval.html", document, rows, lines, report.records).read_text()
    assert (folder / "eval.html").exists() and page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page) and "<script" not in page
    assert "runs/pretrain/best" in page and "95% CI" in page and lines[0] in page
    failed = [record for record in report.records if not record.success]
    assert len(failed) == 3
    for record in failed:
        sheet = Path(record.contact_sheet)
        assert sheet.exists() and sheet.suffix == ".png"
        link = Path(os.path.relpath(sheet, folder)).as_posix()
        assert not link.startswith(("/", ".."))
        assert f'src="{link}"' in page and f'href="{link}"' in page
        video = Path(record.saved_to).with_suffix(".mp4")  # the .npz holds the frames where cv2 cannot encode
        saved = video if video.exists() else Path(record.saved_to)
        assert f'href="{Path(os.path.relpath(saved, folder)).as_posix()}"' in page


def test_eval_html_escapes_what_it_shows(planted, tmp_path):
    lake, report, _ = planted
    summary = report.summary()
    document = _document(report, compare_with_demonstrations(report.records, lake, DATASET, VERSION))
    document["checkpoint"] = "<b>runs</b>"
    page = write_eval_html(tmp_path / "eval.html", document, [], ["color=<i>x</i>: 0 of 1"], []).read_text()
    assert "<b>runs</b>" not in page and "&lt;b&gt;runs&lt;/b&gt;" in page
    assert "<i>x</i>" not in page and "No rollout failed." in page and summary["episodes"] == ROLLOUTS


def test_eval_html_fits_a_desktop_window(planted, chromium, tmp_path):
    """Laid out by headless chromium at 1280 px, no table of eval.html pushes the page sideways
    (the demonstrations table's long column names once did)."""
    lake, report, folder = planted
    summary = report.summary()
    rows = coverage_join(lake, DATASET, VERSION, summary["by_field"])
    document = _document(report, compare_with_demonstrations(report.records, lake, DATASET, VERSION))
    page = write_eval_html(folder / "eval.html", document, rows, weak_lines(rows, summary["success_rate"]),
                           report.records)
    figures = measure(chromium, page, tmp_path)
    assert figures["viewport"] == WIDTH
    assert figures["scroll_width"] <= figures["client_width"], "eval.html scrolls sideways"
