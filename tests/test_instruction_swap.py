"""The instruction-swap check (training/instruction_swap.py): the same scene with another
object named, the env judging success for it, and the check telling a policy that reads
the instruction from one that ignores it; `robolake evaluate` reports it in eval.json and
eval.html."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from robolake.sample.scenario import DIRECTION_WORDS, INSTRUCTIONS
from tests.helpers import error_line, robolake, trained_run
from training.instruction_swap import REACH, REACH_HEIGHT, Approach, instruction_swap
from training.metrics import wilson_interval
from training.sim_env import SWAP_OPTION, ScriptedPolicy, TabletopEnv, swap_instruction

CAMERAS = {"front": (48, 64), "wrist": (24, 32)}  # the sample's aspect ratios, small enough to be quick
TASKS = ["pick", "place", "push"]
SCENES = 9  # three of each task, seed 1 (the evaluation's scenes)


def _template(instruction: str, task: str, color: str, shape: str, direction: str) -> str:
    words = DIRECTION_WORDS.get(direction, "")
    return next(t for t in INSTRUCTIONS[task] if t.format(color=color, object=shape, direction=words) == instruction)


@pytest.mark.parametrize("task", TASKS)
def test_the_swap_names_a_distractor_of_the_same_scene(task):
    plain, swapped = TabletopEnv(cameras=CAMERAS), TabletopEnv(cameras=CAMERAS)
    observation, info = plain.reset(seed=1, options={"task": task})
    swapped_observation, swapped_info = swapped.reset(seed=1, options={"task": task, SWAP_OPTION: True})
    assert plain.swapped_target is None  # without the option, the episode is as before
    named, original = swapped.layout.target, swapped.swapped_target
    assert original == plain.layout.target and named == next(p for p in plain.layout.props if p.shape != "plate")
    assert (named.shape, named.color) != (original.shape, original.color)
    # the same template, task and direction, naming the distractor; the env's info says what is named
    template = _template(observation["instruction"], task, info["color"], info["object"], plain.meta.direction)
    words = DIRECTION_WORDS.get(plain.meta.direction, "")
    assert swapped_observation["instruction"] == template.format(color=named.color, object=named.shape,
                                                                 direction=words)
    assert (swapped_info["task"], swapped_info["object"], swapped_info["color"]) == (task, named.shape, named.color)
    assert swapped.meta.direction == plain.meta.direction and swapped.layout.plate == plain.layout.plate
    # the original target stays where it was, as scenery; the scene looks the same
    assert swapped.layout.props == tuple(original if prop == named else prop for prop in plain.layout.props)
    for camera in CAMERAS:
        difference = np.abs(swapped_observation["images"][camera].astype(int) - observation["images"][camera])
        assert difference.mean() < 2.0, camera
    np.testing.assert_array_equal(swapped_observation["state"], observation["state"])


def test_a_scene_with_one_object_is_left_as_it_is():
    env = TabletopEnv(cameras={})
    env.reset(seed=1, options={"task": "pick"})
    alone = dataclasses.replace(env.layout, props=())
    assert swap_instruction(env.meta, alone) == (env.meta, alone, None)


def test_where_the_tool_went():
    named, original = np.array([0.5, 0.1]), np.array([0.5, -0.1])

    def went_to(*points) -> str:
        return Approach("blue cube", named, "red prism", original, [np.array(p) for p in points]).went_to()

    home = (0.35, 0.0, 0.25)
    assert went_to(home, (0.5, 0.1, 0.03)) == "went_to_named"
    assert went_to(home, (0.5, -0.1 + REACH - 0.005, 0.03)) == "went_to_original"
    assert went_to(home, (0.5, 0.1, REACH_HEIGHT + 0.03)) == "neither"  # hovering above it is not going to it
    assert went_to(home, (0.5, 0.0, 0.03)) == "neither"  # low between them, within reach of neither
    # passing low near the original on the way, it went to the one it came nearest
    assert went_to(home, (0.5, -0.1 + 0.04, 0.05), (0.5, 0.1, 0.03)) == "went_to_named"


class InstructionBlindExpert:
    """The scripted expert hard-wired to each scene's original target: it follows the
    unswapped episode (a twin env reset in step with the one it acts in) and ignores the
    instruction it is given."""

    def __init__(self, tasks: list[str], seed: int):
        self.twin = TabletopEnv(cameras={})
        self.expert = ScriptedPolicy(self.twin)
        self.tasks, self.seed, self.episodes = tasks, seed, 0

    def reset(self) -> None:
        options = {"task": self.tasks[self.episodes % len(self.tasks)]}
        self.twin.reset(seed=self.seed if self.episodes == 0 else None, options=options)
        self.episodes += 1
        self.expert.reset()

    def act(self, observation: dict) -> np.ndarray:
        return self.expert.act(observation)


def _check(policy_for) -> dict:
    env = TabletopEnv(cameras=CAMERAS)
    return instruction_swap(policy_for(env), env, SCENES, TASKS, seed=1, max_steps=80, show_progress=False)


def test_the_check_tells_a_policy_that_reads_the_instruction_from_one_that_ignores_it():
    reading = _check(ScriptedPolicy)  # the expert of the env's episode: the object the instruction names
    blind = _check(lambda env: InstructionBlindExpert(TASKS, seed=1))
    for summary in (reading, blind):
        assert summary["scenes"] == summary["scenes_with_two_or_more_objects"] == summary["rollouts"] == SCENES
        assert summary["per_task"].keys() == set(TASKS)
        for name in ("went_to_named", "went_to_original", "neither", "succeeded_on_named"):
            share = summary[name]
            assert share["rate"] == share["count"] / SCENES
            assert share["ci"] == list(wilson_interval(share["count"], SCENES))
        assert sum(summary[name]["count"] for name in ("went_to_named", "went_to_original", "neither")) == SCENES
        assert [row["episode"] for row in summary["episodes"]] == list(range(SCENES))
    assert reading["went_to_named"]["count"] == reading["succeeded_on_named"]["count"] == SCENES
    assert blind["went_to_named"]["count"] == blind["succeeded_on_named"]["count"] == 0
    assert blind["went_to_original"]["count"] == SCENES
    assert blind["went_to_named"]["ci"][1] < reading["went_to_named"]["ci"][0]  # apart beyond their intervals
    for row in blind["episodes"]:
        assert row["named"] in row["instruction"] and row["original"] not in row["instruction"]
        assert row["went_to"] == "went_to_original" and not row["success"]


@pytest.fixture(scope="module")
def trained(robomimic_raw, tmp_path_factory) -> tuple[Path, Path]:
    """A lake with train and test splits, and a run trained on it for a few steps."""
    return trained_run(robomimic_raw, tmp_path_factory.mktemp("swap"), steps=4)


def test_evaluate_reports_the_check_in_eval_json_and_eval_html(trained, capsys):
    lake, run = trained
    out = run / "eval_swap"
    assert main(["evaluate", str(run), "--lake", str(lake), "--out", str(out), "--rollouts", "3",
                 "--max-steps", "3"]) == 0
    assert "instruction swap: went to the named object " in capsys.readouterr().out
    document = json.loads((out / "eval.json").read_text())
    swap = document["instruction_swap"]  # by default on every closed-loop scene
    assert swap["scenes"] == swap["rollouts"] == 3 and len(swap["episodes"]) == 3
    assert swap["per_task"].keys() == document["rollouts"]["per_task"].keys()
    assert swap["succeeded_on_named"]["count"] == 0  # 3 steps are too few for any task
    page = (out / "eval.html").read_text()
    assert 'id="swap"' in page and "instruction swap: went to the named object" in page
    assert page.count(swap["episodes"][0]["instruction"]) >= 1

    assert main(["evaluate", str(run), "--lake", str(lake), "--out", str(out), "--rollouts", "2", "--max-steps", "3",
                 "--swap-rollouts", "1"]) == 0
    assert json.loads((out / "eval.json").read_text())["instruction_swap"]["rollouts"] == 1
    assert main(["evaluate", str(run), "--lake", str(lake), "--out", str(out), "--rollouts", "2", "--max-steps", "3",
                 "--swap-rollouts", "0"]) == 0
    assert "instruction_swap" not in json.loads((out / "eval.json").read_text())
    assert "Not run (--swap-rollouts 0)." in (out / "eval.html").read_text()


def test_a_negative_swap_count_is_one_clear_line(tmp_path):
    line = error_line(robolake("evaluate", str(tmp_path / "run"), "--rollouts", "4", "--swap-rollouts", "-1"))
    assert line == "robolake evaluate: error: --swap-rollouts -1: expected 0 (off) or more"
