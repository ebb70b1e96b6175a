"""Closed-loop rollouts in the built-in tabletop env: the interface, kinematics and failure
modes, the scripted expert (100%) against random actions (~0%), saved failures, determinism."""

from __future__ import annotations

import csv
import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from robolake.errors import RobolakeError
from robolake.sample.episode import build_episode
from robolake.sample.motion import CONTROL_HZ, MAX_STEPS, OPEN_WIDTH
from robolake.sample.scenario import INSTRUCTIONS
from training.rollout import FAILURES_TABLE, load_failed_rollout, run_rollouts
from training.sim_env import (
    STATE_NAMES,
    RandomPolicy,
    RuntimePolicyAdapter,
    ScriptedPolicy,
    TabletopEnv,
    make_env,
)

CAMERAS = {"front": (48, 64), "wrist": (24, 32)}  # the sample's aspect ratios, small enough to be quick
TASKS = ["pick", "place", "push"]
FAILURE_MODES = {"never grasped", "dropped", "missed target", "timeout", "left workspace", "never touched"}


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
    assert info["success"] is False and info["failure_mode"] == "never grasped"
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
    assert "success 100%" in report.line()


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
    assert {r.failure_mode for r in report.records if not r.success} <= FAILURE_MODES
    # Random actions are far less smooth than the expert's min-jerk motion.
    assert report.summary()["mean_smoothness"] > 1.0


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


def test_leaving_the_workspace_ends_the_episode():
    env = TabletopEnv(cameras=CAMERAS)
    env.reset(seed=5, options={"task": "push"})
    for steps in range(1, 30):
        _, _, terminated, truncated, info = env.step(_action(dx=0.05))
        if terminated:
            break
    assert terminated and not truncated and info["failure_mode"] == "left workspace" and steps < 15


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
        """The learned runtime's call shape: act(images, instruction, state) -> .actions (1, 7)."""

        def __init__(self):
            self.calls, self.resets = [], 0

        def act(self, images, instruction, state):
            self.calls.append((sorted(images), instruction, state.shape))
            return SimpleNamespace(actions=np.array([[0.0, 0.0, -0.01, 0.0, 0.0, 0.0, -1.0]]))

        def reset(self):
            self.resets += 1

    runtime, env = FakeRuntime(), TabletopEnv(cameras=CAMERAS)
    report = run_rollouts(RuntimePolicyAdapter(runtime), env, episodes=2, tasks=["pick"], max_steps=5,
                          show_progress=False)
    assert runtime.resets == 2 and len(runtime.calls) == 10
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
