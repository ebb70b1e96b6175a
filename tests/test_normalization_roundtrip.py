"""Closed-loop cost of action normalization: the scripted expert replays its own
demonstration episodes in the tabletop env with every action passed through
denormalize(normalize(action)) under statistics computed from those demonstrations, as
a policy trained on the normalized dataset would at best reproduce them. The round trip
loses only what clipping to [-1, 1] cuts off, so bounds_q99, min_max and mean_std with
std_bound 3 must keep every success of the plain expert, while mean_std with the old
std_bound 1 clips about a sixth of the translation and yaw values and turns episodes
into failures."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from robolake.normalization import denormalize, normalize
from robolake.spec import DEFAULT_ACTION_NAMES
from robolake.statistics import VectorStats
from training.sim_env import ScriptedPolicy, TabletopEnv

TASKS = ["pick", "place", "push"]
EPISODES = [(seed, TASKS[seed % len(TASKS)]) for seed in range(12)]
ACTION_MASK = ["gripper" not in name for name in DEFAULT_ACTION_NAMES]


def replay(transform: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[int, np.ndarray]:
    """The expert over EPISODES, each action passed through `transform` before the env
    steps: the number of successes and the expert's actions, stacked."""
    env = TabletopEnv(cameras={})  # the expert steers from the state alone: render nothing
    expert = ScriptedPolicy(env)
    successes, actions = 0, []
    for seed, task in EPISODES:
        observation, _ = env.reset(seed=seed, options={"task": task})
        expert.reset()
        done = False
        while not done:
            action = expert.act(observation)
            actions.append(action)
            observation, _, terminated, truncated, info = env.step(action if transform is None else transform(action))
            done = terminated or truncated
        successes += info["success"]
    env.close()
    return successes, np.stack(actions)


def action_statistics(actions: np.ndarray, mode: str, std_bound: float) -> dict:
    """dataset_statistics.json's action part and normalization settings for `actions`."""
    stats = VectorStats(actions.shape[1])
    stats.add(actions)
    return {
        "action": {**stats.result(), "mask": ACTION_MASK},
        "robolake": {"normalization": {"mode": mode, "std_bound": std_bound, "mask": ACTION_MASK, "state": False}},
    }


@pytest.fixture(scope="module")
def demonstrations() -> tuple[int, np.ndarray]:
    return replay()


def test_the_expert_succeeds_on_every_episode(demonstrations):
    successes, actions = demonstrations
    assert successes == len(EPISODES)
    assert actions.shape[1] == len(DEFAULT_ACTION_NAMES)


@pytest.mark.parametrize(("mode", "std_bound", "keeps_successes"), [
    pytest.param("bounds_q99", 3.0, True, id="bounds_q99"),
    pytest.param("min_max", 3.0, True, id="min_max"),
    pytest.param("mean_std", 3.0, True, id="mean_std-3std"),
    pytest.param("mean_std", 1.0, False, id="mean_std-1std"),
])
def test_round_trip_success(demonstrations, mode, std_bound, keeps_successes):
    expert_successes, actions = demonstrations
    statistics = action_statistics(actions, mode, std_bound)
    successes, _ = replay(lambda action: denormalize(normalize(action, statistics), statistics))
    if keeps_successes:
        assert successes == expert_successes
    else:
        assert successes < expert_successes
