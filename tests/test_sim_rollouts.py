"""Closed-loop rollouts in the built-in tabletop env: the interface, kinematics, each failure
mode produced by hand-steered episodes, the scripted expert (100%) against random actions
(~0%), per-metadata summaries with Wilson intervals, saved failures with contact sheets,
determinism."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from robolake.errors import RobolakeError
from robolake.sample.episode import build_episode
from robolake.sample.motion import CONTROL_HZ, MAX_STEPS, OPEN_WIDTH
from robolake.sample.scenario import INSTRUCTIONS
from training.rollout import FAILURES_TABLE, load_failed_rollout, run_rollouts
from training.sim_env import (
    FAILURE_MODES,
    STATE_NAMES,
    RandomPolicy,
    RuntimePolicyAdapter,
    ScriptedPolicy,
    TabletopEnv,
    make_env,
)

CAMERAS = {"front": (48, 64), "wrist": (24, 32)}  # the sample's aspect ratios, small enough to be quick
TASKS = ["pick", "place", "push"]
METADATA_FIELDS = {"task", "object", "color", "scene", "lighting", "operator"}  # and direction for push


def _action(dx=0.0, dy=0.0, dz=0.0, dyaw=0.0, gripper=-1.0) -> np.ndarray:
    return np.array([dx, dy, dz, 0.0, 0.0, dyaw, gripper])


def test_reset_and_step_follow_the_gymnasium_shape():
    env = TabletopEnv(cameras=CAMERAS, max_steps=4)
    observation, info = env.reset(seed=3, options={"task": "place", "lighting": "dim"})
    assert env.action_dim == 7 and env.camera_names == ["front", "wrist"]
    assert set(observation) == {"images", "state", "instruction"}
    for camera, (height, width) in CAMERAS.items():
        image = observation["images"][camera]
        assert image.dtype == np.uint8 and image.shape == (height, width, 3)
    state = observation["state"]
    assert state.dtype == np.float32 and state.shape == (len(STATE_NAMES),) == (9,)
    np.testing.assert_allclose(state[:3], env.layout.home[:3], atol=1e-6)
    assert np.linalg.norm(state[3:7]) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(state[7:], [OPEN_WIDTH / 2, -OPEN_WIDTH / 2], atol=1e-6)
    assert info["task"] == "place" and info["lighting"] == "dim" and env.layout.plate is not None
    templates = [t.format(color=info["color"], object=info["object"]) for t in INSTRUCTIONS["place"]]
    assert observation["instruction"] in templates

    observation, reward, terminated, truncated, info = env.step(_action(dx=0.01, dz=-0.02, gripper=1.0))
    assert isinstance(reward, float) and reward == 0.0 and terminated is False and truncated is False
    assert info["success"] is False and info["task"] == "place" and info["failure_mode"] is None
    np.testing.assert_allclose(observation["state"][:3] - state[:3], [0.01, 0.0, -0.02], atol=1e-6)
    assert observation["state"][7] < state[7]  # the fingers close
    for _ in range(3):
        observation, reward, terminated, truncated, info = env.step(_action())
    assert truncated is True and terminated is False
    assert info["success"] is False and info["failure_mode"] == "missed grasp"
    with pytest.raises(RuntimeError, match="reset"):
        env.step(_action())
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(RobolakeError, match="task"):
        env.reset(options={"task": "stack"})
    env.close()


def test_scripted_policy_succeeds_on_every_task():
    env = TabletopEnv(cameras=CAMERAS)
    report = run_rollouts(ScriptedPolicy(env), env, episodes=6, tasks=TASKS, seed=1, show_progress=False)
    summary = report.summary()
    assert summary["success_rate"] == 1.0 and summary["episodes"] == 6 and summary["failure_modes"] == {}
    assert {task: s["success_rate"] for task, s in summary["per_task"].items()} == dict.fromkeys(TASKS, 1.0)
    assert all(10 < r.length <= MAX_STEPS and r.failure_mode is None for r in report.records)
    assert [r.task for r in report.records] == TASKS * 2
    assert summary["successes"] == 6 and summary["success_ci"][1] == 1.0 and 0.5 < summary["success_ci"][0] < 1.0
    assert "success 100% (95% CI 61-100%)" in report.line()


def test_episodes_are_the_sample_generators_and_the_expert_replays_its_motion():
    env = TabletopEnv(cameras=CAMERAS)
    expert = ScriptedPolicy(env)
    for index in range(2):
        observation, info = env.reset(seed=9) if index == 0 else env.reset()
        expert.reset()
        demo = build_episode(9, index, cameras={})
        assert (env.meta, env.layout.target, info["index"]) == (demo.meta, demo.layout.target, index)
        states = [observation["state"]]
        for _ in range(demo.steps):
            observation, _, terminated, truncated, info = env.step(expert.act(observation))
            states.append(observation["state"])
            if terminated:
                break
        assert info["success"]
        # Closed loop, noise free: the end effector follows the demonstration's scripted path.
        path = demo.trajectory.tool(np.arange(len(states)) / CONTROL_HZ)
        np.testing.assert_allclose(np.stack(states)[:, :3], path[:, :3], atol=1e-4)


@pytest.fixture(scope="module")
def random_rollouts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("failures")
    env = TabletopEnv(cameras=CAMERAS)
    report = run_rollouts(RandomPolicy(seed=0), env, episodes=10, seed=2, max_steps=40,
                          failures_dir=folder, show_progress=False)
    return report, folder


def test_random_policy_rarely_succeeds(random_rollouts):
    report, _ = random_rollouts
    assert len(report.records) == 10 and report.success_rate <= 0.1
    assert all(r.length <= 40 for r in report.records)
    assert {r.failure_mode for r in report.records if not r.success} <= set(FAILURE_MODES)
    # Random actions are far less smooth than the expert's min-jerk motion.
    assert report.summary()["mean_smoothness"] > 1.0


def test_records_carry_the_episode_metadata_and_the_summary_groups_by_it(random_rollouts):
    report, _ = random_rollouts
    env = TabletopEnv(cameras=CAMERAS)
    for record in report.records:
        _, info = env.reset(seed=2) if record.episode == 0 else env.reset()
        expected = METADATA_FIELDS | ({"direction"} if record.task == "push" else set())
        assert set(record.metadata) == expected and record.metadata["task"] == record.task
        assert record.metadata == {name: info[name] for name in expected}
    summary = report.summary()
    low, high = summary["success_ci"]
    assert low <= summary["success_rate"] <= high and summary["successes"] == sum(r.success for r in report.records)
    assert set(summary["by_field"]) == METADATA_FIELDS | {"direction"}
    for name, groups in summary["by_field"].items():
        # An episode without the field (a pick's direction) is in none of its groups.
        assert sum(g["episodes"] for g in groups.values()) == sum(name in r.metadata for r in report.records)
        for value, group in groups.items():
            assert group["success_ci"][0] <= group["success_rate"] <= group["success_ci"][1]
            assert sum(group["failure_modes"].values()) == group["episodes"] - group["successes"]
    assert summary["by_field"]["task"] == {task: {k: s[k] for k in summary["by_field"]["task"][task]}
                                           for task, s in summary["per_task"].items()}
    assert f"success {summary['success_rate']:.0%} (95% CI {100 * low:.0f}-{100 * high:.0f}%)" in report.line()


def test_failed_rollouts_are_saved_and_listed(random_rollouts):
    report, folder = random_rollouts
    failed = [r for r in report.records if not r.success]
    with open(folder / FAILURES_TABLE) as f:
        rows = list(csv.DictReader(f))
    assert [int(row["episode"]) for row in rows] == [r.episode for r in failed]
    for row, record in zip(rows, failed):
        assert row["failure_mode"] == record.failure_mode and int(row["length"]) == record.length
        saved = load_failed_rollout(row["saved_to"])
        assert saved["failure_mode"] == record.failure_mode and saved["task"] == record.task
        assert saved["actions"].shape == (record.length, 7)
        assert saved["states"].shape == (record.length + 1, 9)
        assert saved["frames"].shape == (record.length + 1, *CAMERAS["front"], 3)
        assert saved["frames"].dtype == np.uint8 and saved["frames"].std() > 5  # a scene, not a blank
        # The contact sheet: up to 12 frames, 4 to a row, 2 px apart.
        assert row["contact_sheet"] == record.contact_sheet == str(Path(record.saved_to).with_suffix(".png"))
        sheet = cv2.imread(record.contact_sheet)
        tiles = min(12, record.length + 1)
        rows, columns = -(-tiles // 4), min(4, tiles)
        height, width = CAMERAS["front"]
        assert sheet.shape == (rows * (height + 2) - 2, columns * (width + 2) - 2, 3) and sheet.std() > 5


def test_grasped_object_moves_with_the_tool_until_dropped():
    env = TabletopEnv(cameras=CAMERAS)
    expert = ScriptedPolicy(env)
    observation, _ = env.reset(seed=4, options={"task": "pick", "max_steps": 45})
    while not env.holding:
        observation, *_ = env.step(expert.act(observation))
    offset = env.scene.object_pose[:3] - env.scene.tool_pose[:3]
    for _ in range(2):
        observation, *_ = env.step(_action(dx=0.02, dz=0.03, gripper=1.0))
    assert env.holding and env.scene.object_pose[2] > 0.05
    np.testing.assert_allclose(env.scene.object_pose[:3] - observation["state"][:3], offset, atol=1e-6)
    carried_to = env.scene.object_pose[:2].copy()
    observation, reward, terminated, truncated, info = env.step(_action(gripper=-1.0))
    assert not env.holding and env.scene.object_pose[2] == 0.0  # falls onto the table
    np.testing.assert_allclose(env.scene.object_pose[:2], carried_to)
    while not (terminated or truncated):
        observation, reward, terminated, truncated, info = env.step(_action(dz=0.01, gripper=-1.0))
    assert truncated and not info["success"] and info["failure_mode"] == "dropped"


class HandDriver:
    """Steers the tabletop tool by hand through one episode; every step checks that an
    episode still running names no failure mode."""

    max_steps = 40

    def __init__(self, task: str):
        self.env = TabletopEnv(cameras=CAMERAS)
        self.env.reset(seed=0, options={"task": task, "max_steps": self.max_steps})
        self.terminated = self.truncated = False
        self.info: dict = {}

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    @property
    def object_xy(self) -> np.ndarray:
        return self.env.scene.object_pose[:2].copy()

    @property
    def push_direction(self) -> np.ndarray:
        """Unit vector from the object towards the push goal."""
        away = self.env.goal[:2] - self.object_xy
        return away / np.linalg.norm(away)

    def step(self, delta=(0.0, 0.0, 0.0), gripper: float = -1.0) -> None:
        _, _, self.terminated, self.truncated, self.info = self.env.step(_action(*delta, gripper=gripper))
        assert self.done or self.info["failure_mode"] is None

    def to(self, xy, z: float, gripper: float = -1.0) -> None:
        """Full speed to (x, y, z), or until the episode ends."""
        goal = np.array([*xy, z])
        while not self.done and not np.allclose(self.env.scene.tool_pose[:3], goal, atol=1e-9):
            self.step(goal - self.env.scene.tool_pose[:3], gripper)

    def hold(self, gripper: float, steps: int | None = None) -> None:
        """Stay put `steps` steps, or (None) until the episode ends."""
        while not self.done and (steps is None or (steps := steps - 1) >= 0):
            self.step(gripper=gripper)

    def grasp(self) -> None:
        """Down around the object from above, close, and check it is held."""
        half_height = self.env.layout.target.size[1] / 2
        self.to(self.object_xy, half_height + 0.1)
        self.to(self.object_xy, half_height)
        self.hold(gripper=1.0, steps=3)
        assert self.env.holding

    def lift_to(self, base_height: float) -> None:
        """Carry the held object up until its base is `base_height` above the table."""
        self.to(self.env.scene.tool_pose[:2], base_height + self.env.layout.target.size[1] / 2, gripper=1.0)

    def closed_beside_object(self, offset: float) -> None:
        """Closed fingers low on the table `offset` m from the object towards the push goal
        (negative: behind it), clear of it."""
        xy = self.object_xy + offset * self.push_direction
        self.to(xy, 0.1, gripper=1.0)
        self.to(xy, 0.01, gripper=1.0)


def _fly_out(d: HandDriver) -> None:
    d.to((1.0, 0.0), 0.3)


def _close_in_the_air(d: HandDriver) -> None:
    d.hold(gripper=1.0)


def _close_beside_the_object(d: HandDriver) -> None:
    d.to(d.object_xy + [0.06, 0.0], 0.02)
    d.hold(gripper=1.0)


def _stay_away(d: HandDriver) -> None:
    d.hold(gripper=-1.0)


def _open_at_low_height(d: HandDriver) -> None:
    d.grasp()
    d.lift_to(0.05)  # below the pick's LIFT_HEIGHT
    d.hold(gripper=-1.0)


def _open_high_off_the_plate(d: HandDriver) -> None:
    d.grasp()
    d.lift_to(0.08)  # the object starts well off the plate
    d.hold(gripper=-1.0)


def _set_down_off_the_plate(d: HandDriver) -> None:
    d.grasp()
    plate = np.array([d.env.layout.plate.x, d.env.layout.plate.y])
    away = (d.object_xy - plate) / np.linalg.norm(d.object_xy - plate)
    d.to(d.env.scene.tool_pose[:2] + 0.03 * away, d.env.scene.tool_pose[2], gripper=1.0)  # slid along the table
    d.hold(gripper=-1.0)


def _push_the_wrong_way_and_retreat(d: HandDriver) -> None:
    d.closed_beside_object(0.08)
    d.to(d.env.scene.tool_pose[:2] - 0.06 * d.push_direction, 0.01, gripper=1.0)
    d.to(d.env.scene.tool_pose[:2], 0.15, gripper=1.0)
    d.hold(gripper=1.0)


def _hold_near_the_table(d: HandDriver) -> None:
    d.grasp()
    d.lift_to(0.03)
    d.hold(gripper=1.0)


def _carry_without_releasing(d: HandDriver) -> None:
    d.grasp()
    d.lift_to(0.08)
    d.to([d.env.layout.plate.x, d.env.layout.plate.y], d.env.scene.tool_pose[2], gripper=1.0)
    d.hold(gripper=1.0)


def _push_partway_and_stay_in_contact(d: HandDriver) -> None:
    d.closed_beside_object(-0.08)
    d.to(d.env.scene.tool_pose[:2] + 0.05 * d.push_direction, 0.01, gripper=1.0)
    d.hold(gripper=1.0)


FAILURE_CASES = [
    ("left workspace", "pick", _fly_out),
    ("missed grasp", "pick", _close_in_the_air),
    ("missed grasp", "place", _close_beside_the_object),
    ("missed contact", "push", _stay_away),
    ("dropped", "pick", _open_at_low_height),
    ("dropped", "place", _open_high_off_the_plate),
    ("wrong place", "place", _set_down_off_the_plate),
    ("wrong place", "push", _push_the_wrong_way_and_retreat),
    ("timeout", "pick", _hold_near_the_table),
    ("timeout", "place", _carry_without_releasing),
    ("timeout", "push", _push_partway_and_stay_in_contact),
]


def test_failure_cases_cover_every_mode():
    assert FAILURE_MODES == ("left workspace", "missed grasp", "missed contact", "dropped", "wrong place", "timeout")
    assert {mode for mode, *_ in FAILURE_CASES} == set(FAILURE_MODES)


@pytest.mark.parametrize(("mode", "task", "drive"), FAILURE_CASES,
                         ids=[f"{mode}-{task}-{drive.__name__.strip('_')}" for mode, task, drive in FAILURE_CASES])
def test_each_failure_mode_names_its_cause(mode, task, drive):
    driver = HandDriver(task)
    drive(driver)
    assert driver.done and not driver.info["success"] and driver.info["failure_mode"] == mode
    # Only leaving the workspace ends an episode early; the other failures run out of steps.
    assert driver.terminated == (mode == "left workspace") == (driver.env.steps < driver.max_steps)


def test_rollouts_are_deterministic_for_a_seed():
    def trajectory(seed):
        env, policy = TabletopEnv(cameras=CAMERAS), RandomPolicy(seed=3)
        observation, _ = env.reset(seed=seed, options={"task": "push"})
        policy.reset()
        frames, states = [observation["images"]["front"]], [observation["state"]]
        for _ in range(8):
            observation, *_ = env.step(policy.act(observation))
            frames.append(observation["images"]["front"])
            states.append(observation["state"])
        return np.stack(frames), np.stack(states), observation["instruction"]

    first, again, other = trajectory(11), trajectory(11), trajectory(12)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]
    assert not np.array_equal(first[1], other[1])


def test_runtime_policy_adapter_drives_a_closed_loop_run():
    class FakeRuntime:
        """The learned runtime's call shape: act(images, instruction, state) -> .actions (1, 7), .entropy (1,)."""

        def __init__(self):
            self.calls, self.resets = [], 0

        def act(self, images, instruction, state):
            self.calls.append((sorted(images), instruction, state.shape))
            return SimpleNamespace(actions=np.array([[0.0, 0.0, -0.01, 0.0, 0.0, 0.0, -1.0]]), entropy=np.array([0.5]))

        def reset(self):
            self.resets += 1

    runtime, env = FakeRuntime(), TabletopEnv(cameras=CAMERAS)
    adapter = RuntimePolicyAdapter(runtime)
    report = run_rollouts(adapter, env, episodes=2, tasks=["pick"], max_steps=5, show_progress=False)
    assert runtime.resets == 2 and len(runtime.calls) == 10 and adapter.last_entropy == 0.5
    assert runtime.calls[0][0] == ["front", "wrist"] and runtime.calls[0][2] == (9,)
    assert report.success_rate == 0.0 and [r.length for r in report.records] == [5, 5]
    assert report.records[0].smoothness == 0.0  # constant actions
    assert report.summary()["per_task"]["pick"]["mean_length"] == 5.0


def test_make_env():
    assert isinstance(make_env("tabletop", cameras=CAMERAS), TabletopEnv)
    with pytest.raises(RobolakeError, match="unknown environment"):
        make_env("gazebo")
    if importlib.util.find_spec("robosuite") is None:
        with pytest.raises(RobolakeError, match="'robosuite' package"):
            make_env("robosuite")
