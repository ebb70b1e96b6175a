"""Offline action metrics of a policy against a dataset's recorded actions.

Everything is in physical units (the policy's normalized outputs denormalized with
the statistics bundled in its checkpoint) except the action-token accuracy, which
compares bins. Inputs are per-episode arrays in step order, so that smoothness (the
sum of squared differences of consecutive actions within an episode) is defined.

`wilson_interval` gives closed-loop success rates their confidence interval, and
`paired_comparison` tells whether one policy beats another on the same scenes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class EpisodePrediction:
    """One episode's predicted and recorded actions, (steps, D) each, in physical units,
    and the predicted and recorded action-token ids, (steps, D)."""

    episode_id: str
    task: str
    predicted: np.ndarray
    recorded: np.ndarray
    predicted_tokens: np.ndarray
    recorded_tokens: np.ndarray


def smoothness(actions: np.ndarray) -> float:
    """Sum over consecutive steps of the squared action change (lower is smoother)."""
    return float(np.sum(np.diff(np.asarray(actions, dtype=np.float64), axis=0) ** 2))


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a success rate (95% for the default z). Unlike the normal
    approximation it stays inside [0, 1] and is not zero-width at 0 or all successes,
    which is what small rollout counts give. No trials: (0.0, 1.0)."""
    if not 0 <= successes <= trials:
        raise ValueError(f"expected 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    rate, z2 = successes / trials, z * z
    denominator = 1.0 + z2 / trials
    centre = (rate + z2 / (2 * trials)) / denominator
    half_width = z / denominator * np.sqrt(rate * (1.0 - rate) / trials + z2 / (4 * trials * trials))
    # Exactly 0 with no successes and 1 with no failures, where rounding would leave ~1e-17.
    low = 0.0 if successes == 0 else float(centre - half_width)
    high = 1.0 if successes == trials else float(centre + half_width)
    return low, high


def paired_comparison(successes: Sequence[bool], baseline: Sequence[bool]) -> dict:
    """Two policies rolled out on the same scenes, scene by scene: the scenes only one of them
    succeeds on decide (exact McNemar test, two-sided). `verdict` is "better" or "worse" than the
    baseline where p < 0.05, else "no measurable difference"."""
    if len(successes) != len(baseline):
        raise ValueError(f"expected the same scenes, got {len(successes)} and {len(baseline)} rollouts")
    only_this = sum(a and not b for a, b in zip(successes, baseline))
    only_baseline = sum(b and not a for a, b in zip(successes, baseline))
    discordant = only_this + only_baseline
    tail = sum(math.comb(discordant, k) for k in range(min(only_this, only_baseline) + 1)) / 2 ** discordant
    p_value = min(1.0, 2 * tail)
    verdict = ("no measurable difference" if p_value >= 0.05 or only_this == only_baseline
               else "better" if only_this > only_baseline else "worse")
    return {"scenes": len(successes), "both": sum(a and b for a, b in zip(successes, baseline)),
            "only_this": only_this, "only_baseline": only_baseline, "p_value": p_value, "verdict": verdict}


def gripper_side(values: np.ndarray, threshold: float) -> np.ndarray:
    """Which side of `threshold` (the midpoint between the open and closed commands) each
    gripper command falls on: the open/close decision, whatever the sign convention."""
    return np.asarray(values) > threshold


@dataclass
class ActionMetrics:
    """Metrics over a set of episodes (see `action_metrics`)."""

    episodes: int
    steps: int
    mse: list[float]
    l1: list[float]
    gripper_accuracy: float | None
    action_token_accuracy: float
    smoothness: float  # mean per episode, predicted actions
    recorded_smoothness: float  # the same of the recorded actions, for reference
    names: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        per_dimension = {name: {"mse": m, "l1": a} for name, m, a in zip(self.names, self.mse, self.l1)}
        return {
            "episodes": self.episodes, "steps": self.steps,
            "mse": float(np.mean(self.mse)), "l1": float(np.mean(self.l1)), "per_dimension": per_dimension,
            "gripper_accuracy": self.gripper_accuracy, "action_token_accuracy": self.action_token_accuracy,
            "smoothness": self.smoothness, "recorded_smoothness": self.recorded_smoothness,
        }


def action_metrics(episodes: Iterable[EpisodePrediction], names: list[str], gripper_dim: int | None,
                   gripper_threshold: float) -> ActionMetrics:
    """Per-dimension MSE and L1 over all steps, gripper open/close accuracy (None without
    a gripper dimension), token accuracy over all steps and dimensions, and the mean
    per-episode smoothness of predicted and recorded actions."""
    episodes = list(episodes)
    if not episodes:
        raise ValueError("no episodes to evaluate")
    predicted = np.concatenate([e.predicted for e in episodes]).astype(np.float64)
    recorded = np.concatenate([e.recorded for e in episodes]).astype(np.float64)
    tokens_equal = np.concatenate([e.predicted_tokens == e.recorded_tokens for e in episodes])
    error = predicted - recorded
    gripper = None
    if gripper_dim is not None:
        gripper = float(np.mean(gripper_side(predicted[:, gripper_dim], gripper_threshold)
                                == gripper_side(recorded[:, gripper_dim], gripper_threshold)))
    return ActionMetrics(
        episodes=len(episodes),
        steps=len(predicted),
        mse=np.mean(error ** 2, axis=0).tolist(),
        l1=np.mean(np.abs(error), axis=0).tolist(),
        gripper_accuracy=gripper,
        action_token_accuracy=float(np.mean(tokens_equal)),
        smoothness=float(np.mean([smoothness(e.predicted) for e in episodes])),
        recorded_smoothness=float(np.mean([smoothness(e.recorded) for e in episodes])),
        names=list(names),
    )


def grouped_metrics(episodes: list[EpisodePrediction], names: list[str], gripper_dim: int | None,
                    gripper_threshold: float, seen_tasks: set[str]) -> dict:
    """`action_metrics` overall, per task, and for the tasks seen in training apart from
    the held-out ones (a group is left out when it has no episode)."""
    def metrics(subset: list[EpisodePrediction]) -> dict:
        return action_metrics(subset, names, gripper_dim, gripper_threshold).as_dict()

    groups = {
        "seen_tasks": [e for e in episodes if e.task in seen_tasks],
        "held_out_tasks": [e for e in episodes if e.task not in seen_tasks],
    }
    return {
        "overall": metrics(episodes),
        "per_task": {task: metrics([e for e in episodes if e.task == task])
                     for task in sorted({e.task for e in episodes})},
        **{name: metrics(subset) for name, subset in groups.items() if subset},
    }
