"""The instruction-swap check: does a policy go to the object the words name?

A policy that ignores the instruction can still score on scenes where the named object
is the obvious one to take. So each closed-loop scene with two or more objects is rolled
out again with the instruction naming another object: the scene's first distractor, in
the same template ("pick up the red cube" -> "pick up the blue cylinder"; TabletopEnv's
swap_instruction reset option). The scene, its render noise, the task (and a push's
direction) and the step limit stay the same; the named object becomes the one the env
moves and judges success on, with its unchanged criteria (succeeded_on_named), and the
original target stays where it was as scenery.

Where the tool went (GOES_TO_RULE): of the named object and the original target, the one
whose starting position the tool centre came nearest (in x-y) while it was low enough to
touch an object (z <= REACH_HEIGHT), if that was within REACH; otherwise neither. A
policy that follows the words scores high on went_to_named; one that ignores them goes
to the original target."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from training.metrics import wilson_interval
from training.rollout import RolloutRecord, run_rollouts
from training.sim_env import SWAP_OPTION, EnvPolicy, TabletopEnv

REACH = 0.055  # m in x-y: half the 0.11 m the sample keeps between objects, so within it of one object only
REACH_HEIGHT = 0.10  # m of the tool centre above the table: the tallest object (0.06 m) plus the fingers' reach
OUTCOMES = ("went_to_named", "went_to_original", "neither")
GOES_TO_RULE = (f"went to an object: of the named object and the original target, the tool centre came nearest "
                f"(x-y) to its starting position while at most {REACH_HEIGHT:.2f} m above the table, and within "
                f"{REACH:.3f} m; neither: within that of neither")


@dataclasses.dataclass
class Approach:
    """One swapped episode: where the named object and the original target stood (x, y;
    original None for a scene with one object) and the tool centre's path (x, y, z)."""

    named: str
    named_xy: np.ndarray
    original: str | None
    original_xy: np.ndarray | None
    path: list[np.ndarray]

    def went_to(self) -> str:
        """One of OUTCOMES (GOES_TO_RULE)."""
        path = np.stack(self.path)
        low = path[path[:, 2] <= REACH_HEIGHT, :2]
        if not len(low):
            return "neither"
        nearest = {outcome: float(np.min(np.linalg.norm(low - xy, axis=1)))
                   for outcome, xy in (("went_to_named", self.named_xy), ("went_to_original", self.original_xy))}
        closest = min(nearest, key=nearest.get)
        return closest if nearest[closest] <= REACH else "neither"


class _Tracked:
    """A TabletopEnv that records each episode's Approach as run_rollouts drives it."""

    def __init__(self, env: TabletopEnv):
        self.env = env
        self.camera_names = env.camera_names
        self.approaches: list[Approach] = []

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        observation, info = self.env.reset(seed=seed, options=options)
        named, original = self.env.layout.target, self.env.swapped_target
        self.approaches.append(Approach(
            f"{named.color} {named.shape}", np.array([named.x, named.y]),
            None if original is None else f"{original.color} {original.shape}",
            None if original is None else np.array([original.x, original.y]), [observation["state"][:3]]))
        return observation, info

    def step(self, action: np.ndarray) -> tuple:
        observation, *rest = self.env.step(action)
        self.approaches[-1].path.append(observation["state"][:3])
        return (observation, *rest)


def _share(count: int, total: int) -> dict:
    return {"count": count, "rate": count / total if total else 0.0, "ci": list(wilson_interval(count, total))}


def _outcomes(rows: Sequence[dict]) -> dict:
    """Rollouts, the OUTCOMES and succeeded_on_named, each a count, rate and 95% Wilson interval."""
    return {"rollouts": len(rows),
            **{outcome: _share(sum(row["went_to"] == outcome for row in rows), len(rows)) for outcome in OUTCOMES},
            "succeeded_on_named": _share(sum(row["success"] for row in rows), len(rows))}


def swap_summary(records: Sequence[RolloutRecord], approaches: Sequence[Approach]) -> dict:
    """The check's figures: scenes, those with two or more objects (the rollouts counted),
    the outcomes overall and per task, the rule, and one row per counted rollout."""
    rows = [{"episode": record.episode, "task": record.task, "instruction": record.instruction,
             "named": approach.named, "original": approach.original, "went_to": approach.went_to(),
             "success": record.success}
            for record, approach in zip(records, approaches) if approach.original is not None]
    tasks = sorted({row["task"] for row in rows})
    return {"scenes": len(records), "scenes_with_two_or_more_objects": len(rows), **_outcomes(rows),
            "per_task": {task: _outcomes([row for row in rows if row["task"] == task]) for task in tasks},
            "rule": GOES_TO_RULE, "episodes": rows}


def instruction_swap(policy: EnvPolicy, env: TabletopEnv, episodes: int, tasks: Sequence[str] | None = None,
                     seed: int = 0, max_steps: int | None = None, show_progress: bool = True) -> dict:
    """The check (module docstring) on the scenes run_rollouts(policy, env, episodes, tasks,
    seed, max_steps) rolls out: swap_summary's figures."""
    tracked = _Tracked(env)
    report = run_rollouts(policy, tracked, episodes, tasks, seed, max_steps, show_progress=show_progress,
                          options={SWAP_OPTION: True})
    return swap_summary(report.records, tracked.approaches)

