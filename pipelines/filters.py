"""Outlier-action filtering of one episode, by the rules of the spec's `filters` section.

Every rule looks at the raw actions and flags (step, dimension) items; each flag says
what its rule's policy does. An item flagged by several rules takes the strongest
policy among them. Then, strongest first: any `quarantine` item rejects the episode;
`drop_step` items remove their steps (is_first / is_last follow the remaining steps);
`clip` items clamp the value into the range every clipping rule allows. Each flagged
item becomes one record of the filtered-actions table, with the action taken on it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from robolake.spec import DatasetSpec

POLICIES = ("quarantine", "drop_step", "clip")  # strongest first
MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation
Q01_Q99_TO_STD = 4.6527  # q99 - q01 of a normal distribution, in standard deviations


@dataclass(frozen=True)
class RobustStats:
    """Per-dimension train-split median, MAD, q01 and q99 of the raw actions (before filtering)."""

    median: np.ndarray
    mad: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    def scale(self) -> np.ndarray:
        """Robust standard deviation: 1.4826 MAD, floored by the central 98% spread so that a
        dimension that is still most of the time (MAD near 0) does not flag its own motion.
        Both equal the standard deviation on normal data."""
        return np.maximum(MAD_TO_STD * self.mad, (self.q99 - self.q01) / Q01_Q99_TO_STD)


@dataclass(frozen=True)
class Flag:
    step: int
    dim: int
    value: float
    rule: str
    policy: str
    low: float = -np.inf  # the range a clip brings the value into
    high: float = np.inf


@dataclass
class FilterResult:
    actions: np.ndarray  # filtered raw actions of the kept steps
    keep: np.ndarray  # bool per original step
    flags: list[Flag] = field(default_factory=list)  # what each rule flagged
    taken: list[Flag] = field(default_factory=list)  # one per flagged item: its rule and the action taken on it
    rejected: str | None = None  # why the whole episode goes to quarantine

    @property
    def quarantined(self) -> bool:
        return self.rejected is not None


def _rejection(flags: list[Flag], names: list[str]) -> str:
    first = next(f for f in flags if f.policy == "quarantine")
    count = sum(f.policy == "quarantine" for f in flags)
    return (
        f"outlier action: {first.rule} rule flagged {names[first.dim]}={first.value:.6g} at step {first.step}"
        + (f" and {count - 1} more item(s)" if count > 1 else "")
    )


def _bounds_flags(actions: np.ndarray, spec: DatasetSpec) -> list[Flag]:
    rule = spec.filters.bounds
    if rule is None:
        return []
    width = actions.shape[1]
    low = np.array([-np.inf if v is None else v for v in (rule.min or [None] * width)], np.float64)
    high = np.array([np.inf if v is None else v for v in (rule.max or [None] * width)], np.float64)
    steps, dims = np.nonzero((actions < low) | (actions > high))
    return [Flag(int(t), int(d), float(actions[t, d]), "bounds", rule.policy, low[d], high[d]) for t, d in zip(steps, dims)]


def _zscore_flags(actions: np.ndarray, spec: DatasetSpec, robust: RobustStats) -> list[Flag]:
    rule = spec.filters.zscore
    if rule is None:
        return []
    flags = []
    scales = robust.scale()
    for d in spec.filtered_dims():
        scale = scales[d]
        if not np.isfinite(scale) or scale <= 0:
            continue  # a constant dimension has no spread to measure outliers against
        low, high = robust.median[d] - rule.threshold * scale, robust.median[d] + rule.threshold * scale
        for t in np.nonzero((actions[:, d] < low) | (actions[:, d] > high))[0]:
            flags.append(Flag(int(t), d, float(actions[t, d]), "zscore", rule.policy, low, high))
    return flags


def _local_changes(deltas: np.ndarray, length: int, window: int) -> np.ndarray:
    """Per step t, the median |change| over `window` changes on each side, leaving out
    the two changes that touch t (0 where there are none)."""
    pad = np.full(window + 1, np.nan)
    windows = sliding_window_view(np.concatenate([pad, deltas, pad]), window)
    steps = np.arange(length)
    around = np.sort(np.concatenate([windows[steps], windows[steps + window + 2]], axis=1), axis=1)  # NaNs last
    valid = (~np.isnan(around)).sum(axis=1)
    low = np.take_along_axis(around, np.maximum(valid - 1, 0)[:, None] // 2, axis=1)[:, 0]
    high = np.take_along_axis(around, (valid // 2)[:, None], axis=1)[:, 0]
    return np.where(valid > 0, (low + high) / 2, 0.0)


def _jump_flags(actions: np.ndarray, spec: DatasetSpec, robust: RobustStats) -> list[Flag]:
    """Single-step spikes: the changes into and out of step t both exceed `ratio` times the
    typical change nearby, the value comes back (steps t-1 and t+1 agree within that
    limit), and the changes just outside (into t-1, out of t+1) are `ratio` times
    smaller than those into and out of t; this tells a spike from the ramp or peak of a
    fast motion. At an episode's ends the one change there is used. The typical change
    is floored at 1/ratio of the dimension's robust standard deviation, so a spike must
    also exceed one standard deviation, and the value must lie outside the train split's
    [q01, q99]: a spike is an unusual value, not a control style (sparse spacemouse blips
    and keyboard pulses of ordinary size are not outliers)."""
    rule = spec.filters.jump
    length = len(actions)
    if rule is None or length < 3:
        return []
    flags = []
    scales = robust.scale()
    gap = np.full(2, np.nan)
    for d in spec.filtered_dims():
        column = actions[:, d]
        deltas = np.abs(np.diff(column))  # deltas[i] is the change from step i to step i + 1
        spread = scales[d] / rule.ratio if np.isfinite(scales[d]) else 0.0
        typical = np.maximum(_local_changes(deltas, length, rule.window), max(float(np.median(deltas)), spread, 1e-12))
        limit = rule.ratio * typical
        into, out = np.concatenate([gap[:1], deltas]), np.concatenate([deltas, gap[:1]])
        flank_in, flank_out = np.concatenate([gap, deltas])[:length], np.concatenate([deltas[1:], gap])[:length]
        touching = np.fmin(into, out)  # the smaller of the one or two changes at t
        with np.errstate(invalid="ignore"):
            spikes = (
                (np.isnan(into) | (into > limit)) & (np.isnan(out) | (out > limit))
                & (np.isnan(flank_in) | (flank_in * rule.ratio <= touching))
                & (np.isnan(flank_out) | (flank_out * rule.ratio <= touching))
                & ~((robust.q01[d] <= column) & (column <= robust.q99[d]))
            )
        returns = np.ones(length, bool)
        returns[1:-1] = np.abs(column[2:] - column[:-2]) <= limit[1:-1]
        for t in np.nonzero(spikes & returns)[0]:
            anchor = column[t - 1] if t > 0 else column[t + 1]
            flags.append(Flag(int(t), d, float(column[t]), "jump", rule.policy, anchor - limit[t], anchor + limit[t]))
    return flags


def _per_item(flags: list[Flag]) -> list[Flag]:
    """One flag per flagged (step, dimension), in that order: the one with the strongest
    policy; a clip into the range every clipping rule allows."""
    items: dict[tuple[int, int], list[Flag]] = {}
    for flag in flags:
        items.setdefault((flag.step, flag.dim), []).append(flag)
    merged = []
    for item in sorted(items):
        same = items[item]
        strongest = min(same, key=lambda f: POLICIES.index(f.policy))
        if strongest.policy == "clip":
            strongest = replace(strongest, low=max(f.low for f in same), high=min(f.high for f in same))
        merged.append(strongest)
    return merged


def filter_episode(actions: np.ndarray, spec: DatasetSpec, robust: RobustStats) -> FilterResult:
    """Apply the spec's rules to one episode's raw actions (steps x dims)."""
    actions = np.asarray(actions, np.float64)
    flags = _bounds_flags(actions, spec) + _zscore_flags(actions, spec, robust) + _jump_flags(actions, spec, robust)
    items = _per_item(flags)
    keep = np.ones(len(actions), bool)
    rejected = _rejection(items, spec.action.names) if any(f.policy == "quarantine" for f in items) else None
    if rejected is None:
        for item in items:
            if item.policy == "drop_step":
                keep[item.step] = False
        if keep.sum() < spec.episode_length.min_steps:
            rejected = f"{int(keep.sum())} steps left after dropping outlier steps, fewer than min_steps"
    if rejected is not None:
        taken = [replace(f, policy="quarantine") for f in items]
        return FilterResult(actions, np.zeros(len(actions), bool), flags, taken, rejected)
    taken = [f if keep[f.step] else replace(f, policy="drop_step") for f in items]  # a dropped step's clip
    filtered = actions.copy()
    for item in taken:
        if item.policy == "clip":
            filtered[item.step, item.dim] = np.clip(filtered[item.step, item.dim], item.low, item.high)
    return FilterResult(filtered[keep], keep, flags, taken)
