"""Behaviour metrics of one episode (idle, frozen actions, spikes, gripper chatter, timing,
camera freeze and exposure, path efficiency) and of a dataset's episodes (noise floor,
stuck dimensions, near-duplicates, control delay, chunk length): pure numpy, no Beam and
no lake paths. The conversion pipeline writes one `episode_row` per episode into the
silver `episode_quality` table; docs/quality.md gives each metric's formula, units,
default threshold and where the threshold comes from.

A metric that cannot be computed (no timestamps, one step, no gripper dimension, no
frames) is None with a reason in its group's `*_reason` column, never an exception."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAD_SCALE = 1.4826  # MAD -> standard deviation of a normal distribution
IDLE_NOISE_SIGMAS = 3.5  # idle: command magnitude below this many noise sigmas (chosen: ~99% of 3-D noise)
SPIKE_K = 10.0  # a spike stands this many typical sizes apart from its neighbours' mean (chosen: 0 of 300 clean
# sample episodes, 97% of its seeded spikes (12-18x the typical size); 7.5% of episodes squeezed to 24 steps)
SPIKE_FLOOR = 0.005  # the smallest typical size (action units): a dimension that barely moves is not all spikes
GRIPPER_HYSTERESIS = 0.1  # share of the gripper command's range around its midpoint (chosen)
GRIPPER_REVERSAL_S = 0.5  # a toggle undone within this many seconds is a reversal (issue 32)
GAP_FACTOR = 1.5  # a step interval over this many nominal periods is a gap (issue 32)
FREEZE_CHANGE = 1 / 1024  # frame change (mean |d thumbnail|, [0, 1] scale) at or below it: near-identical (chosen)
BLACKOUT_BRIGHTNESS = 0.05  # mean luma at or below it: black frame (chosen)
OVEREXPOSED_BRIGHTNESS = 0.95  # mean luma at or above it: overexposed frame (chosen)
STUCK_STATIC_SHARE = 0.8  # a dimension static in more than this share of an episode's steps (issue 32)
STUCK_MOVING_EPISODES = 0.5  # ... while it moves in more than this share of the other episodes (issue 32)
FINGERPRINT_DECIMALS = 4  # actions rounded to this many decimals before hashing (chosen)
MAX_LAG_STEPS = 10  # control delay searched over lags 0..MAX_LAG_STEPS (chosen)
CHUNK_AUTOCORRELATION = 0.5  # chunk length: the first lag where the action autocorrelation falls below (chosen)
POSITION_PARTS = ("eef_pos", "ee_pos", "tcp_pos", "end_effector_pos", "eef_position")

TRANSLATION = re.compile(r"^d?(x|y|z)$|^(delta_|d_)?(pos|position)_?(x|y|z)$")
ROTATION = re.compile(r"^d?(roll|pitch|yaw|rx|ry|rz)$|^(delta_|d_)?rot(ation)?_?(x|y|z)$")


@dataclass(frozen=True)
class ActionLayout:
    """Which action dimensions translate, rotate and drive the gripper (by name)."""

    translation: tuple[int, ...]
    rotation: tuple[int, ...]
    gripper: int | None

    @classmethod
    def from_names(cls, names: Sequence[str]) -> ActionLayout:
        """Named translation/rotation dimensions (dx, dy, dz, droll, ...); without them every
        non-gripper dimension counts as translation. The gripper: the first name holding "gripper"."""
        lowered = [name.lower() for name in names]
        gripper = next((i for i, name in enumerate(lowered) if "gripper" in name), None)
        translation = tuple(i for i, name in enumerate(lowered) if TRANSLATION.match(name))
        rotation = tuple(i for i, name in enumerate(lowered) if ROTATION.match(name))
        if not translation and not rotation:
            translation = tuple(i for i in range(len(names)) if i != gripper)
        return cls(translation, rotation, gripper)

    @property
    def motion(self) -> tuple[int, ...]:
        return self.translation + self.rotation


def position_columns(state_layout: list[dict] | None) -> tuple[int, int] | None:
    """[start, start + 3) of the end-effector position in the state, from the manifest's
    state layout ([{"name", "start", "end"}]); None where no part is named like one."""
    for part in state_layout or []:
        name = part["name"].lower().rsplit("/", 1)[-1]
        if any(key in name for key in POSITION_PARTS) and part["end"] - part["start"] >= 3:
            return part["start"], part["start"] + 3
    return None


# -- per-episode pieces ---------------------------------------------------------------------


def longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a boolean vector."""
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def noise_floor(motion: np.ndarray) -> float | None:
    """An episode's command noise floor: IDLE_NOISE_SIGMAS robust sigmas of the noise, the
    noise sigma estimated from the MAD of step-to-step differences (smooth motion barely
    changes between steps, noise does; so the estimate does not depend on how long the
    episode idles). None with fewer than 3 steps."""
    if len(motion) < 3 or motion.shape[1] == 0:
        return None
    diffs = np.diff(motion, axis=0).ravel()
    sigma = MAD_SCALE * float(np.median(np.abs(diffs - np.median(diffs)))) / np.sqrt(2)
    return IDLE_NOISE_SIGMAS * sigma


def dataset_noise_floor(episode_floors: Sequence[float | None]) -> float | None:
    """A dataset's noise floor: the median of its episodes' floors (None where none has one)."""
    floors = [f for f in episode_floors if f is not None and np.isfinite(f)]
    return float(np.median(floors)) if floors else None


def idle_steps(actions: np.ndarray, layout: ActionLayout, floors: tuple[float | None, float | None] | None = None
               ) -> tuple[np.ndarray | None, tuple[float | None, float | None]]:
    """Per step, whether it is idle: its translation and its rotation magnitudes both at or
    below their noise floors (`floors`, translation and rotation; default: the episode's
    own, `noise_floor`); and the floors used. None for the steps where the translation
    floor cannot be estimated (fewer than 3 steps)."""
    parts = [np.asarray(actions[:, list(dims)], np.float64) for dims in (layout.translation, layout.rotation)]
    floors = floors or tuple(noise_floor(part) if part.shape[1] else None for part in parts)
    if parts[0].shape[1] and floors[0] is None:
        return None, floors
    idle = np.ones(len(actions), bool)
    for part, floor in zip(parts, floors):
        if part.shape[1]:
            idle &= np.linalg.norm(part, axis=1) <= floor
    return idle, floors


def idle_ends(idle: np.ndarray) -> tuple[int, int]:
    """The idle steps before the first and after the last moving step (an episode that
    never moves: all of its steps for both)."""
    moving = np.flatnonzero(~idle)
    if not len(moving):
        return len(idle), len(idle)
    return int(moving[0]), int(len(idle) - 1 - moving[-1])


def idle_metrics(actions: np.ndarray, layout: ActionLayout, period: float,
                 floors: tuple[float | None, float | None] | None = None) -> dict:
    """Share of idle steps (`idle_steps`) and the idle head and tail (s, `idle_ends`)."""
    idle, floors = idle_steps(actions, layout, floors)
    if idle is None:
        return {"idle_share": None, "idle_head_s": None, "idle_tail_s": None, "idle_floor_translation": None,
                "idle_floor_rotation": None, "idle_reason": f"{len(actions)} steps: too few to estimate a noise floor"}
    head, tail = idle_ends(idle)
    return {"idle_share": float(idle.mean()), "idle_head_s": head * period, "idle_tail_s": tail * period,
            "idle_floor_translation": floors[0], "idle_floor_rotation": floors[1], "idle_reason": None}


def frozen_action_metrics(actions: np.ndarray, period: float) -> dict:
    """The longest run of identical consecutive actions (every dimension equal), in steps
    (a run of n equal actions counts n) and seconds."""
    same = np.all(np.diff(actions, axis=0) == 0, axis=1) if len(actions) > 1 else np.zeros(0, bool)
    steps = longest_run(same) + 1 if len(actions) else 0
    return {"frozen_action_steps": steps, "frozen_action_s": steps * period}


def spike_ratios(actions: np.ndarray, layout: ActionLayout) -> np.ndarray:
    """(T - 2, motion dimensions): how far each inner step's action stands from the mean of its two
    neighbours, in that dimension's typical sizes (median |a| in the episode, at least SPIKE_FLOOR);
    row r is step r + 1."""
    motion = np.asarray(actions[:, list(layout.motion)], np.float64)
    apart = np.abs(motion[1:-1] - 0.5 * (motion[:-2] + motion[2:]))
    return apart / np.maximum(np.median(np.abs(motion), axis=0), SPIKE_FLOOR)


def spike_runs(flagged: np.ndarray) -> list[np.ndarray]:
    """The runs of consecutive flagged steps (indices): one per spike, whose neighbours stand out
    half as much as the spike itself."""
    return [run for run in np.split(np.flatnonzero(flagged), np.flatnonzero(np.diff(np.flatnonzero(flagged)) > 1) + 1)
            if len(run)]


def spike_metrics(actions: np.ndarray, layout: ActionLayout, k: float = SPIKE_K) -> dict:
    """Spikes: runs of steps that stand out from their neighbours' mean by more than `k` typical
    sizes in some motion dimension (`spike_ratios`, `spike_runs`). A move that starts or stops is a
    jump its neighbours share, so it is no spike. And jerk: mean |delta^2 a| over the motion
    dimensions (action units per step^2)."""
    motion = np.asarray(actions[:, list(layout.motion)], np.float64)
    if len(motion) < 3 or not motion.shape[1]:
        return {"spike_steps": None, "jerk": None, "spike_reason": f"{len(motion)} steps and "
                f"{motion.shape[1]} motion dimensions: spikes need 3 steps and one dimension"}
    spikes = len(spike_runs(np.any(spike_ratios(actions, layout) > k, axis=1)))
    jerk = float(np.abs(np.diff(motion, n=2, axis=0)).mean())
    return {"spike_steps": spikes, "jerk": jerk, "spike_reason": None}


def gripper_toggle_times(command: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Times of the gripper's open/close toggles: the command binarized about the midpoint
    of its range, with a hysteresis band of GRIPPER_HYSTERESIS of the range."""
    low, high = float(command.min()), float(command.max())
    if high - low <= 0:
        return np.zeros(0)
    middle, band = (low + high) / 2, GRIPPER_HYSTERESIS * (high - low)
    state, toggles = command[0] > middle, []
    for value, t in zip(command[1:], times[1:]):
        if (not state and value > middle + band) or (state and value < middle - band):
            state = not state
            toggles.append(t)
    return np.asarray(toggles)


def gripper_metrics(actions: np.ndarray, layout: ActionLayout, times: np.ndarray, duration: float) -> dict:
    """Gripper toggles per second, and reversals: toggles undone within GRIPPER_REVERSAL_S."""
    if layout.gripper is None:
        return {"gripper_toggles_per_s": None, "gripper_reversals": None,
                "gripper_reason": "no action dimension is named like a gripper"}
    if duration <= 0:
        return {"gripper_toggles_per_s": None, "gripper_reversals": None,
                "gripper_reason": f"{len(actions)} steps: no duration"}
    toggles = gripper_toggle_times(np.asarray(actions[:, layout.gripper], np.float64), times)
    reversals = int((np.diff(toggles) <= GRIPPER_REVERSAL_S + 1e-9).sum()) if len(toggles) > 1 else 0
    return {"gripper_toggles_per_s": len(toggles) / duration, "gripper_reversals": reversals,
            "gripper_reason": None}


def timing_metrics(timestamps: np.ndarray | None, rate_hz: float) -> dict:
    """Step-interval jitter against the nominal period: std and max |deviation| (ms), and
    the number of gaps (intervals over GAP_FACTOR nominal periods)."""
    empty = {"step_interval_jitter_ms": None, "step_interval_max_deviation_ms": None, "timing_gaps": None}
    if timestamps is None:
        return empty | {"timing_reason": "the source records no timestamps (steps at the nominal rate)"}
    timestamps = np.asarray(timestamps, np.float64)
    bad = int((~np.isfinite(timestamps)).sum())
    if bad:
        return empty | {"timing_reason": f"{bad} of {len(timestamps)} timestamps are NaN or infinite"}
    if len(timestamps) < 2:
        return empty | {"timing_reason": f"{len(timestamps)} step: no step interval"}
    period = 1.0 / rate_hz
    intervals = np.diff(timestamps)
    deviation = intervals - period
    return {"step_interval_jitter_ms": float(intervals.std() * 1000),
            "step_interval_max_deviation_ms": float(np.abs(deviation).max() * 1000),
            "timing_gaps": int((intervals > GAP_FACTOR * period).sum()), "timing_reason": None}


def camera_metrics(name: str, brightness: Sequence[float], change: Sequence[float], num_steps: int,
                   period: float) -> dict:
    """One camera's longest run of near-identical consecutive frames (freeze: a run of n
    frames, n - 1 changes at or below FREEZE_CHANGE; steps and s), and its black and
    overexposed frames. `brightness` is each frame's mean luma ([0, 1]); `change` each
    frame's mean absolute thumbnail difference from the previous one (the first frame's
    is NaN). A frame missing (NaN, or fewer frames than steps) breaks a freeze run."""
    prefix = f"camera_{name}_"
    brightness, change = np.asarray(brightness, np.float64), np.asarray(change, np.float64)
    if not len(brightness):
        return {prefix + key: None for key in ("freeze_steps", "freeze_s", "blackout_frames", "overexposed_frames")} | {
            prefix + "reason": "no frame summaries (frames kept as stored, not decoded)"}
    seen = np.isfinite(brightness[:len(change)])
    still = (np.nan_to_num(change[1:len(seen)], nan=np.inf) <= FREEZE_CHANGE) & seen[1:] & seen[:-1]
    run = longest_run(still)
    steps = run + 1 if run else 0
    missing = num_steps - int(np.isfinite(brightness).sum())
    return {prefix + "freeze_steps": steps, prefix + "freeze_s": steps * period,
            prefix + "blackout_frames": int((brightness <= BLACKOUT_BRIGHTNESS).sum()),
            prefix + "overexposed_frames": int((brightness >= OVEREXPOSED_BRIGHTNESS).sum()),
            prefix + "reason": f"{missing} of {num_steps} frames missing" if missing else None}


def path_metrics(state: np.ndarray, position: tuple[int, int] | None) -> dict:
    """End-effector path length and start-to-end displacement (state units, metres for
    the usual eef_pos), and their ratio path / displacement (1: a straight line)."""
    empty = {"path_length": None, "path_displacement": None, "path_length_ratio": None}
    if position is None:
        return empty | {"path_reason": "the state layout names no end-effector position"}
    if len(state) < 2:
        return empty | {"path_reason": f"{len(state)} step: no path"}
    points = np.asarray(state[:, position[0]:position[1]], np.float64)
    length = float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
    displacement = float(np.linalg.norm(points[-1] - points[0]))
    ratio = length / displacement if displacement > 1e-9 else None
    return {"path_length": length, "path_displacement": displacement, "path_length_ratio": ratio,
            "path_reason": None if ratio is not None else "the end effector ends where it started"}


def static_shares(actions: np.ndarray) -> list[float]:
    """Per action dimension, the share of steps whose value equals the previous step's."""
    if len(actions) < 2:
        return [1.0] * actions.shape[1]
    return (np.diff(actions, axis=0) == 0).mean(axis=0).astype(float).tolist()


def action_fingerprint(actions: np.ndarray) -> str:
    """A cheap fingerprint of the action sequence: the sha256 (16 hex digits) of its shape
    and its values rounded to FINGERPRINT_DECIMALS; equal for exact or near-identical copies."""
    rounded = np.round(np.asarray(actions, np.float64), FINGERPRINT_DECIMALS) + 0.0  # -0.0 -> 0.0
    digest = hashlib.sha256(str(rounded.shape).encode() + rounded.tobytes())
    return digest.hexdigest()[:16]


def control_delay_steps(actions: np.ndarray, state: np.ndarray, position: tuple[int, int] | None,
                        layout: ActionLayout) -> int | None:
    """The lag k (0..MAX_LAG_STEPS) that best correlates the translation command at step t
    with the change of the end-effector position from t + k to t + k + 1, summed over axes;
    None without a position in the state, named translation axes or enough steps."""
    if position is None or len(layout.translation) < 1 or len(actions) < MAX_LAG_STEPS + 4:
        return None
    command = np.asarray(actions[:, list(layout.translation)][:, :3], np.float64)
    moved = np.diff(np.asarray(state[:, position[0]:position[1]], np.float64), axis=0)[:, :command.shape[1]]
    scores = []
    for lag in range(MAX_LAG_STEPS + 1):
        a, s = command[:len(moved) - lag], moved[lag:]
        scores.append(sum(_correlation(a[:, i], s[:, i]) for i in range(a.shape[1])))
    return int(np.nanargmax(scores)) if np.isfinite(scores).any() else None


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])


def chunk_length_steps(actions: np.ndarray, layout: ActionLayout) -> int | None:
    """The first lag at which the mean autocorrelation of the translation dimensions (pure
    noise dimensions, such as a fixed roll, would pull it to 0 at once) falls below
    CHUNK_AUTOCORRELATION: how many steps ahead actions stay predictable from the current
    one. None where no dimension varies or it never falls that low within half the episode."""
    motion = np.asarray(actions[:, list(layout.translation or layout.motion)], np.float64)
    motion = motion[:, motion.std(axis=0) > 0] if len(motion) else motion
    if len(motion) < 4 or not motion.shape[1]:
        return None
    centred = (motion - motion.mean(axis=0)) / motion.std(axis=0)
    for lag in range(1, len(motion) // 2 + 1):
        if float((centred[:-lag] * centred[lag:]).mean()) < CHUNK_AUTOCORRELATION:
            return lag
    return None


def episode_row(actions: np.ndarray, action_names: Sequence[str], state: np.ndarray,
                timestamps: np.ndarray | None, rate_hz: float, cameras: dict[str, tuple[list, list]],
                position: tuple[int, int] | None = None,
                idle_floors: tuple[float | None, float | None] | None = None) -> dict:
    """Every per-episode metric of one episode as a row of the episode_quality table (without
    its episode_id and the dataset-relative columns: `dataset_columns`). `cameras`: per
    camera (brightness per frame, change per frame); `position`: the end-effector position
    columns of the state (`position_columns`); `idle_floors`: the dataset's translation and
    rotation noise floors (default: the episode's own)."""
    actions = np.asarray(actions, np.float64)
    layout = ActionLayout.from_names(action_names)
    period = 1.0 / rate_hz
    times = np.arange(len(actions)) * period
    row = {"num_steps": len(actions), "duration_s": len(actions) * period}
    row |= idle_metrics(actions, layout, period, idle_floors)
    row |= frozen_action_metrics(actions, period)
    row |= spike_metrics(actions, layout)
    row |= gripper_metrics(actions, layout, times, len(actions) * period)
    row |= timing_metrics(timestamps, rate_hz)
    for name, (brightness, change) in cameras.items():
        row |= camera_metrics(name, brightness, change, len(actions), period)
    row |= path_metrics(state, position)
    delay, chunk = control_delay_steps(actions, state, position, layout), chunk_length_steps(actions, layout)
    row |= {"action_static_share": static_shares(actions), "action_fingerprint": action_fingerprint(actions),
            "control_delay_steps": delay, "chunk_length_steps": chunk}
    return row


# -- per dataset ----------------------------------------------------------------------------


def stuck_dimensions(static: np.ndarray, names: Sequence[str], static_share: float = STUCK_STATIC_SHARE,
                     moving_episodes: float = STUCK_MOVING_EPISODES) -> list[list[str]]:
    """Per episode, its stuck action dimensions: static (value unchanged from the previous
    step) in more than `static_share` of its steps while moving (static in at most that
    share) in more than `moving_episodes` of the other episodes. `static` is
    (episodes, dims) of `static_shares`."""
    static = np.asarray(static, np.float64).reshape(len(static), len(names))
    stuck_here = static > static_share
    others = len(static) - 1
    if others < 1:
        return [[] for _ in range(len(static))]
    moving = (~stuck_here).sum(axis=0)
    result = []
    for row in stuck_here:
        moving_elsewhere = (moving - (~row)) / others  # this episode left out
        result.append([names[d] for d in np.flatnonzero(row & (moving_elsewhere > moving_episodes))])
    return result


def near_duplicates(episode_ids: Sequence[str], fingerprints: Sequence[str],
                    copies_of: Sequence[str] | None = None) -> list[str | None]:
    """Per episode, the id of the first episode (in id order) with the same action
    fingerprint, None for the first of each group and for unique ones. `copies_of`: per
    episode the id it is a planned copy of (a mixture's repeats), so copies are no duplicates."""
    copies_of = copies_of or episode_ids
    first: dict[str, str] = {}
    for index in sorted(range(len(episode_ids)), key=lambda i: episode_ids[i]):
        first.setdefault(fingerprints[index], copies_of[index])
    return [None if first[f] == original else first[f] for f, original in zip(fingerprints, copies_of)]


def dataset_estimate(per_episode: Sequence[int | None]) -> int | None:
    """A dataset's control delay or chunk length: the median of its episodes' estimates."""
    values = [v for v in per_episode if v is not None]
    return int(round(float(np.median(values)))) if values else None


def dataset_columns(rows: list[dict], action_names: Sequence[str],
                    copies_of: Sequence[str] | None = None) -> list[dict]:
    """The dataset-relative columns of each row: stuck_dimensions, duplicate_of, and the
    dataset's control delay and chunk length."""
    stuck = stuck_dimensions(np.array([r["action_static_share"] for r in rows]), action_names) if rows else []
    duplicates = near_duplicates([r["episode_id"] for r in rows], [r["action_fingerprint"] for r in rows], copies_of)
    delay = dataset_estimate([r["control_delay_steps"] for r in rows])
    chunk = dataset_estimate([r["chunk_length_steps"] for r in rows])
    return [{"stuck_dimensions": s, "duplicate_of": d, "dataset_control_delay_steps": delay,
             "dataset_chunk_length_steps": chunk} for s, d in zip(stuck, duplicates)]
