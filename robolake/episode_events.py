"""Where in an episode its behaviour metrics (robolake/episode_quality.py) come from: the
steps a finding concerns, so a viewer can put a note there. Pure numpy over one episode's
arrays, by the metrics' own rules and thresholds: the idle head and tail, the longest run
of identical actions, each action spike step, each gripper toggle and reversal, each
timing gap, and each camera's longest run of byte-identical frames (the frozen camera
the sample generator seeds; the camera_<name>_freeze metric also counts near-identical
frames, which needs decoded frames). Positions are 0-based rows of the arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robolake import episode_quality as eq

INFO, WARN = "INFO", "WARN"  # rerun's TextLogLevel names


@dataclass(frozen=True)
class Event:
    position: int  # row of the episode's arrays
    level: str  # INFO: what the episode does (idle, toggles); WARN: what a quality check looks for
    text: str


def longest_run(flags: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of True; (0, 0) where there is none."""
    edges = np.diff(np.concatenate([[0], np.asarray(flags, np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return 0, 0
    best = int(np.argmax(ends - starts))
    return int(starts[best]), int(ends[best] - starts[best])


def spike_positions(actions: np.ndarray, layout: eq.ActionLayout, k: float = eq.SPIKE_K
                    ) -> list[tuple[int, int, float]]:
    """(step, action dimension, distance in typical sizes) of each spike episode_quality.spike_metrics
    counts: per run of standing-out steps, the step and dimension that stand out most."""
    if len(actions) < 3 or not layout.motion:
        return []
    ratio = eq.spike_ratios(actions, layout)
    found = []
    for run in eq.spike_runs(np.any(ratio > k, axis=1)):
        row, column = np.unravel_index(np.argmax(ratio[run]), ratio[run].shape)
        found.append((int(run[row]) + 1, layout.motion[column], float(ratio[run][row, column])))
    return found


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


def _idle(actions: np.ndarray, layout: eq.ActionLayout, period: float, floors) -> list[Event]:
    if floors and any(floor is None for floor, dims in zip(floors, (layout.translation, layout.rotation)) if dims):
        floors = None  # the row has no floor for a part: the episode's own
    idle, _ = eq.idle_steps(actions, layout, floors)
    if idle is None:
        return []
    head, tail = eq.idle_ends(idle)
    events = []
    if head:
        events.append(Event(0, INFO, f"idle head: {_steps(head)} ({head * period:.1f} s) before the first move"))
    if tail and head < len(actions):
        events.append(Event(len(actions) - tail, INFO, f"idle tail: {_steps(tail)} ({tail * period:.1f} s) "
                                                       f"after the last move"))
    return events


def _frozen(actions: np.ndarray, period: float) -> list[Event]:
    if len(actions) < 2:
        return []
    start, length = longest_run(np.all(np.diff(actions, axis=0) == 0, axis=1))
    if not length:
        return []
    return [Event(start, WARN, f"frozen actions: {length + 1} identical actions ({(length + 1) * period:.1f} s) "
                               f"from here")]


def _spikes(actions: np.ndarray, layout: eq.ActionLayout, names: Sequence[str]) -> list[Event]:
    return [Event(position, WARN, f"action spike: {names[dimension]} {ratio:.1f} typical sizes from its "
                                  f"neighbours' mean")
            for position, dimension, ratio in spike_positions(actions, layout)]


def _gripper(actions: np.ndarray, layout: eq.ActionLayout, period: float) -> list[Event]:
    if layout.gripper is None or not len(actions):
        return []
    command = np.asarray(actions[:, layout.gripper], np.float64)
    toggles = eq.gripper_toggle_times(command, np.arange(len(actions), dtype=np.float64)).astype(int)
    middle = (command.min() + command.max()) / 2
    events = []
    for k, position in enumerate(toggles):
        direction = "high" if command[position] > middle else "low"
        since = (position - toggles[k - 1]) * period if k else None
        if since is not None and since <= eq.GRIPPER_REVERSAL_S + 1e-9:
            events.append(Event(int(position), WARN, f"gripper reversal: toggled {direction} again "
                                                     f"{since:.1f} s after the last toggle"))
        else:
            events.append(Event(int(position), INFO, f"gripper command toggles {direction}"))
    return events


def _timing(timestamps: np.ndarray | None, period: float) -> list[Event]:
    if timestamps is None or len(timestamps) < 2 or not np.all(np.isfinite(timestamps)):
        return []
    intervals = np.diff(np.asarray(timestamps, np.float64))
    return [Event(int(row) + 1, WARN, f"timing gap: {intervals[row] * 1000:.0f} ms since the previous step "
                                      f"(nominal {period * 1000:.0f} ms)")
            for row in np.flatnonzero(intervals > eq.GAP_FACTOR * period)]


def _repeated_frames(camera: str, frames: Sequence[bytes], period: float) -> list[Event]:
    same = np.array([frames[i] == frames[i - 1] for i in range(1, len(frames))], bool)
    start, length = longest_run(same)
    if not length:
        return []
    return [Event(start, WARN, f"camera {camera}: {length + 1} byte-identical frames ({(length + 1) * period:.1f} s) "
                               f"from here")]


def episode_events(actions: np.ndarray, action_names: Sequence[str], rate_hz: float,
                   timestamps: np.ndarray | None = None, frames: dict[str, Sequence[bytes]] | None = None,
                   idle_floors: tuple[float | None, float | None] | None = None) -> list[Event]:
    """Every located finding of one episode, in step order. `actions` in source units
    (the metrics' input); `idle_floors`: the noise floors its episode_quality row used
    (default: the episode's own); `frames`: each camera's encoded frames."""
    actions = np.asarray(actions, np.float64)
    layout = eq.ActionLayout.from_names(action_names)
    period = 1.0 / rate_hz
    events = (_idle(actions, layout, period, idle_floors) + _frozen(actions, period)
              + _spikes(actions, layout, action_names) + _gripper(actions, layout, period)
              + _timing(timestamps, period))
    for camera, encoded in (frames or {}).items():
        events += _repeated_frames(camera, encoded, period)
    return sorted(events, key=lambda event: event.position)
