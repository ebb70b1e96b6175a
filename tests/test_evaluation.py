"""Offline evaluation: the metrics on a hand-made prediction set equal hand-computed
values, and `robolake evaluate` measures a trained checkpoint on a test split in
physical units."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from robolake.lake import Lake
from tests.helpers import load_split, trained_run
from training.evaluate import predict_episodes
from training.metrics import EpisodePrediction, action_metrics, grouped_metrics, smoothness

NAMES = ["dx", "dy", "gripper"]


def hand_made() -> list[EpisodePrediction]:
    first = EpisodePrediction(
        "e1", "pick",
        predicted=np.array([[0, 0, 1], [1, 0, 1], [1, 1, -1]], float),
        recorded=np.array([[0, 0, 1], [0, 0, 1], [1, 0, -1]], float),
        predicted_tokens=np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3]]),
        recorded_tokens=np.array([[1, 2, 3], [0, 2, 3], [0, 0, 3]]),
    )
    second = EpisodePrediction(
        "e2", "push",
        predicted=np.array([[2, 0, -1]], float),
        recorded=np.array([[0, 2, 1]], float),
        predicted_tokens=np.array([[5, 5, 5]]),
        recorded_tokens=np.array([[5, 0, 0]]),
    )
    return [first, second]


def test_metrics_equal_the_hand_computed_values():
    # errors by step: (0,0,0) (1,0,0) (0,1,0) (2,-2,-2)
    metrics = action_metrics(hand_made(), NAMES, gripper_dim=2, gripper_threshold=0.0)
    assert metrics.mse == [1.25, 1.25, 1.0]
    assert metrics.l1 == [0.75, 0.75, 0.5]
    assert metrics.gripper_accuracy == 0.75  # same side, same side, same side, opposite sides
    assert metrics.action_token_accuracy == pytest.approx(7 / 12)  # 3 + 2 + 1 + 1 of 12 tokens
    assert metrics.smoothness == 3.0  # episode 1: 1 + (1 + 4) = 6, episode 2 (one step): 0
    assert metrics.recorded_smoothness == 2.5  # episode 1: 1 + 4 = 5
    assert (metrics.episodes, metrics.steps) == (2, 4)
    assert smoothness(np.array([[0.0], [0.5], [0.5], [-0.5]])) == 1.25


def test_seen_and_held_out_tasks_are_reported_apart():
    grouped = grouped_metrics(hand_made(), NAMES, 2, 0.0, seen_tasks={"pick"})
    assert grouped["seen_tasks"]["steps"] == 3 and grouped["held_out_tasks"]["steps"] == 1
    assert grouped["held_out_tasks"]["per_dimension"]["dx"] == {"mse": 4.0, "l1": 2.0}
    assert set(grouped["per_task"]) == {"pick", "push"} and grouped["per_task"]["push"]["gripper_accuracy"] == 0.0
    assert "held_out_tasks" not in grouped_metrics(hand_made(), NAMES, 2, 0.0, seen_tasks={"pick", "push"})


@pytest.fixture(scope="module")
def trained(robomimic_raw, tmp_path_factory) -> tuple[Path, Path]:
    """A lake with train and test splits, and a run trained on it for a few steps."""
    return trained_run(robomimic_raw, tmp_path_factory.mktemp("evaluate"), steps=6)


def test_evaluate_measures_the_test_split_in_physical_units(trained, capsys):
    lake, run = trained
    assert main(["evaluate", str(run), "--lake", str(lake)]) == 0
    assert "evaluate " in capsys.readouterr().out
    metrics = json.loads((run / "eval" / "eval.json").read_text())
    target = Lake(str(lake)).resolve("synthetic_tabletop")
    test_episodes = load_split(target.gold_dir, "test")
    assert metrics["dataset"]["split"] == "test"
    assert metrics["overall"]["steps"] == sum(len(e["steps"]) for e in test_episodes)
    assert set(metrics["per_task"]) == {e["episode_metadata"]["task"] for e in test_episodes}
    assert all(np.isfinite(v["mse"]) for v in metrics["overall"]["per_dimension"].values())
    with open(run / "eval" / "per_dimension.csv", newline="") as f:
        assert [row["dimension"] for row in csv.DictReader(f)] == target.statistics["robolake"]["action_names"]
    # the recorded side is the raw (physical) action of each step, in step order
    predictions = {e.episode_id: e for e in predict_episodes(run / "best", target, "test", batch_size=16)}
    for episode in test_episodes:
        recorded = predictions[episode["episode_metadata"]["episode_id"]].recorded
        np.testing.assert_allclose(recorded, np.stack([s["action_raw"] for s in episode["steps"]]))


def test_rollouts_are_a_total_with_intervals_a_baseline_and_a_report(trained, capsys):
    lake, run = trained
    out = run / "eval_rollouts"
    assert main(["evaluate", str(run), "--lake", str(lake), "--out", str(out), "--rollouts", "4", "--max-steps", "3",
                 "--baseline", str(run / "best")]) == 0
    printed = capsys.readouterr().out
    assert "closed-loop success 0 of 4 (0%, 95% CI 0%-49%)" in printed and f"{out / 'eval.html'}" in printed
    rollouts = json.loads((out / "eval.json").read_text())["rollouts"]
    # 4 episodes in all, cycled over the test split's tasks
    tasks = sorted(json.loads((out / "eval.json").read_text())["per_task"])
    assert rollouts["episodes"] == 4 and rollouts["seed"] == 1
    assert {task: s["episodes"] for task, s in rollouts["per_task"].items()} == {
        task: len(range(k, 4, len(tasks))) for k, task in enumerate(tasks)}
    low, high = rollouts["success_ci"]
    assert rollouts["successes"] == 0 and low == 0.0 and high == pytest.approx(1.96 ** 2 / (4 + 1.96 ** 2), abs=1e-3)
    assert set(rollouts["by_field"]) >= {"task", "color"}
    demonstrations = rollouts["demonstrations"]["overall"]
    assert demonstrations["policy_mean_length"] == 3 and demonstrations["demo_episodes"] > 0
    assert demonstrations["length_ratio"] == pytest.approx(3 / demonstrations["demo_mean_length"])
    baseline = json.loads((out / "eval.json").read_text())["baseline_rollouts"]
    assert baseline["checkpoint"] == str(run / "best") and baseline["episodes"] == 4
    assert baseline["per_task"].keys() == rollouts["per_task"].keys()
    assert baseline["paired"] == {"scenes": 4, "both": 0, "only_this": 0, "only_baseline": 0, "p_value": 1.0,
                                  "verdict": "no measurable difference"}
    assert "this policy: no measurable difference (better on 0 scenes, worse on 0" in printed
    assert len(list((out / "rollouts").glob("*.png"))) == 4  # every failure has its contact sheet
    page = (out / "eval.html").read_text()
    assert "baseline success (same scenes)" in page and page.count('<img src="rollouts/') == 4


def test_evaluate_names_a_missing_split(trained, capsys):
    lake, run = trained
    assert main(["evaluate", str(run), "--lake", str(lake), "--split", "val"]) == 2
    assert "has no val episodes" in capsys.readouterr().err
