"""The sample's seeded faults: which episodes get which, and how each gets into the data.

Two families:

- data faults, as a recording goes wrong: action spikes, a NaN action, a truncated HDF5
  session. Fixed counts, planned over the whole sample.
- behaviour faults, as a demonstration goes wrong: an idle head or tail, gripper chatter,
  a frozen camera, a failed grasp, a duplicated episode and, in the mcap bags (the only
  container with timestamps), late control ticks and dropped ones. Each kind has a share.
  Whether episode i gets one depends on (seed, i, its container, shares) only: with r the
  number of episodes before i in the same container, u = frac(offset(seed) + r * golden
  ratio) falls in one kind's interval of [0, 1) or in none. The counts in each container
  follow the shares closely (within about 2 episodes), and episode i is the same whatever
  the number of episodes.

A sample of fewer than MIN_EPISODES_FOR_FAULTS episodes gets no faults at all.

A fault changes the motion an episode is built with (robolake.sample.episode.Motion) and/or
the built episode; `faulty_episode` builds episode i with its fault. Unfaulted episodes are
exactly build_episode's (the closed-loop environment draws the same scenes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from robolake.errors import RobolakeError
from robolake.sample import exact
from robolake.sample.episode import Episode, build_episode, scripted_motion
from robolake.sample.motion import CONTROL_HZ, GRIPPER_MOVE_S, OPEN_WIDTH, Trajectory, min_jerk
from robolake.sample.scenario import PUSH_DIRECTIONS, EpisodeMeta, Layout

MIN_EPISODES_FOR_FAULTS = 8
SPIKE_SCALE = (12.0, 18.0)  # times the episode's median |delta| in that dimension
FAULT_SALT = 0xFA17
BEHAVIOUR_SALT = 0xBE4A
GOLDEN = 0.6180339887498949  # frac of the golden ratio: the most evenly spreading step

# Behaviour faults in any container, then those only bags can carry (HDF5 stores no times).
ANY_CONTAINER = ("idle", "gripper_chatter", "frozen_camera", "failed_demo", "duplicate_episode")
BAG_ONLY = ("timestamp_jitter", "dropped_steps")
BEHAVIOUR_KINDS = ANY_CONTAINER + BAG_ONLY
# A few episodes of each in the demo's 200 (160 HDF5, 40 bags); the bag-only shares are of the bags.
DEFAULT_SHARES = {"idle": 0.035, "gripper_chatter": 0.035, "frozen_camera": 0.035, "failed_demo": 0.035,
                  "duplicate_episode": 0.035, "timestamp_jitter": 0.075, "dropped_steps": 0.075}

IDLE_STEPS = (10, 30)  # 1-3 s held still
CHATTER_MARGIN = 5  # ticks of steady command kept before the first toggle and after the last
FROZEN_STEPS = (8, 12)  # ~1 s of control ticks that see the same frame
MISS_OFFSET = (0.05, 0.07)  # m between the grasp (or the push line) and the object
LATE_S = (0.02, 0.045)  # the most a jittered tick runs late, drawn per episode
DROPPED_GAPS = (2, 4)  # gaps of 1-3 consecutive ticks whose commands were not recorded


# ---- the faults ----


@dataclass(frozen=True)
class Fault:
    """Base: what a fault does to an episode (nothing, here) and how the manifest lists it."""

    kind: ClassVar[str]

    def source(self, index: int) -> int:
        """The episode whose content is written as episode `index`."""
        return index

    def motion(self, meta: EpisodeMeta, layout: Layout, steps: int) -> tuple[Trajectory, np.ndarray]:
        return scripted_motion(meta, layout, steps)

    def apply(self, episode: Episode) -> None:
        """Changes the built episode in place."""

    def manifest(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class TruncatedFile(Fault):
    kind: ClassVar[str] = "truncated_file"

    def manifest(self) -> dict:
        return {"kind": self.kind, "step": None, "dim": None}


@dataclass(frozen=True)
class NanAction(Fault):
    step: int
    dim: int
    kind: ClassVar[str] = "nan_action"

    def apply(self, episode: Episode) -> None:
        episode.actions[self.step, self.dim] = np.nan


@dataclass(frozen=True)
class ActionSpike(Fault):
    step: int
    dim: int
    scale: float
    kind: ClassVar[str] = "action_spike"

    def apply(self, episode: Episode) -> None:
        column = episode.actions[:, self.dim]
        typical = max(float(np.median(np.abs(column))), 0.005)
        column[self.step] = np.sign(column[self.step] or 1.0) * self.scale * typical

    def manifest(self) -> dict:
        return {"kind": self.kind, "step": self.step, "dim": self.dim}


class Held:
    """A trajectory that waits `head` seconds before it starts and holds its end pose after."""

    def __init__(self, trajectory: Trajectory, head: float):
        self.trajectory, self.head = trajectory, head

    def _t(self, t: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(t, np.float64) - self.head, 0.0, self.trajectory.times[-1])

    def tool(self, t: np.ndarray) -> np.ndarray:
        return self.trajectory.tool(self._t(t))

    def object(self, t: np.ndarray) -> np.ndarray:
        return self.trajectory.object(self._t(t))

    def gripper(self, t: np.ndarray) -> np.ndarray:
        return self.trajectory.gripper(self._t(t))

    def width(self, t: np.ndarray) -> np.ndarray:
        return self.trajectory.width(self._t(t))


@dataclass(frozen=True)
class Idle(Fault):
    """The robot holds still (zero motion commanded, the gripper command held) for
    `head_steps` ticks before the scripted motion and `tail_steps` after it."""

    head_steps: int
    tail_steps: int
    kind: ClassVar[str] = "idle"

    def motion(self, meta: EpisodeMeta, layout: Layout, steps: int) -> tuple[Held, np.ndarray]:
        trajectory, _ = scripted_motion(meta, layout, steps)
        total = self.head_steps + steps + self.tail_steps
        return Held(trajectory, self.head_steps / CONTROL_HZ), np.arange(total) / CONTROL_HZ

    def apply(self, episode: Episode) -> None:
        """No operator noise while nobody moves: the idle commands are exactly zero."""
        episode.actions[: self.head_steps, :6] = 0.0
        episode.actions[episode.steps - self.tail_steps :, :6] = 0.0


def follow_gripper(t: np.ndarray, start_width: float, changes: list[tuple[float, float]]) -> np.ndarray:
    """Finger opening from `start_width`, each (time, target) change starting a min-jerk move
    of GRIPPER_MOVE_S from wherever the fingers are then (a change may cut the last one short)."""
    width = np.full(np.shape(t), start_width, np.float64)
    begin, previous = start_width, None
    for start, target in changes:
        if previous is not None:
            (was_start, was_target), was_begin = previous
            blend = float(min_jerk(np.clip((start - was_start) / GRIPPER_MOVE_S, 0.0, 1.0)))
            begin = was_begin + (was_target - was_begin) * blend
        blend = min_jerk(np.clip((t - start) / GRIPPER_MOVE_S, 0.0, 1.0))
        width = np.where(t >= start, begin + (target - begin) * blend, width)
        previous = (start, target), begin
    return width


class Chattering:
    """A trajectory whose gripper command flips at each of `toggles` (seconds, an even
    number, within a span of steady command); the fingers follow the flips."""

    def __init__(self, trajectory: Trajectory, toggles: np.ndarray):
        self.trajectory, self.toggles = trajectory, toggles
        self.tool, self.object = trajectory.tool, trajectory.object
        steady = float(trajectory.gripper(toggles[:1])[0])
        self.steady_width = float(trajectory.width(toggles[:1])[0])
        # Closing on nothing (or opening): the other end of the fingers' travel.
        other = 0.0 if steady < 0 else OPEN_WIDTH
        targets = [other if k % 2 == 0 else self.steady_width for k in range(len(toggles))]
        self.changes = list(zip(toggles.tolist(), targets))

    def gripper(self, t: np.ndarray) -> np.ndarray:
        flips = np.searchsorted(self.toggles, t, side="right")
        return self.trajectory.gripper(t) * np.where(flips % 2 == 1, -1.0, 1.0)

    def width(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, np.float64)
        inside = (t >= self.toggles[0]) & (t < self.toggles[-1] + GRIPPER_MOVE_S)
        return np.where(inside, follow_gripper(t, self.steady_width, self.changes), self.trajectory.width(t))


@dataclass(frozen=True)
class GripperChatter(Fault):
    """The gripper command toggles open/closed at each of `steps` (ticks) while it should be steady."""

    steps: tuple[int, ...]
    kind: ClassVar[str] = "gripper_chatter"

    def motion(self, meta: EpisodeMeta, layout: Layout, steps: int) -> tuple[Chattering, np.ndarray]:
        trajectory, ticks = scripted_motion(meta, layout, steps)
        return Chattering(trajectory, np.array(self.steps) / CONTROL_HZ), ticks

    def manifest(self) -> dict:
        return {"kind": self.kind, "steps": list(self.steps)}


@dataclass(frozen=True)
class FrozenCamera(Fault):
    """`camera` repeats one capture: the ticks `step`..`step + steps - 1` all see the same image."""

    camera: str
    step: int
    steps: int
    kind: ClassVar[str] = "frozen_camera"

    def apply(self, episode: Episode) -> None:
        if self.camera not in episode.cameras:
            return
        seen = episode.tick_captures(self.camera)
        first, last = int(seen[self.step]), int(seen[self.step + self.steps - 1])
        source = np.arange(len(episode.capture_times[self.camera]))
        source[first : last + 1] = first
        episode.repeats[self.camera] = source


class Missed(Trajectory):
    """The scripted motion aimed `offset` (x, y metres) off the object: the fingers close on
    nothing (or the push passes beside it), and the object stays where it stands."""

    def __init__(self, meta: EpisodeMeta, layout: Layout, duration: float, offset: tuple[float, float]):
        target = layout.target
        aimed = dataclasses.replace(target, x=target.x + offset[0], y=target.y + offset[1])
        super().__init__(meta, dataclasses.replace(layout, target=aimed), duration)
        self.object_poses = np.tile([target.x, target.y, 0.0, target.yaw], (len(self.poses), 1))
        self.attached = np.zeros_like(self.attached)
        self.widths = np.where(self.commands > 0, 0.0, OPEN_WIDTH)


@dataclass(frozen=True)
class FailedDemo(Fault):
    """The grasp (or the push) misses the object by `offset` metres; the instruction still names the task."""

    offset: tuple[float, float]
    kind: ClassVar[str] = "failed_demo"

    def motion(self, meta: EpisodeMeta, layout: Layout, steps: int) -> tuple[Missed, np.ndarray]:
        return Missed(meta, layout, steps / CONTROL_HZ, self.offset), np.arange(steps) / CONTROL_HZ

    def manifest(self) -> dict:
        return {"kind": self.kind, "offset_m": [round(v, 4) for v in self.offset]}


@dataclass(frozen=True)
class DuplicateEpisode(Fault):
    """An exact copy of episode `of`, written again under this episode's name."""

    of: int
    kind: ClassVar[str] = "duplicate_episode"

    def source(self, index: int) -> int:
        return self.of


@dataclass(frozen=True)
class TimestampJitter(Fault):
    """The control loop runs late: tick k comes `late[k]` seconds after k / 10 Hz (its
    observation and its command's stamp with it)."""

    late: tuple[float, ...]
    kind: ClassVar[str] = "timestamp_jitter"

    def motion(self, meta: EpisodeMeta, layout: Layout, steps: int) -> tuple[Trajectory, np.ndarray]:
        trajectory, ticks = scripted_motion(meta, layout, steps)
        return trajectory, ticks + np.array(self.late)

    def manifest(self) -> dict:
        return {"kind": self.kind, "late_ms_max": round(1000 * max(self.late), 3)}


@dataclass(frozen=True)
class DroppedSteps(Fault):
    """The commands of these ticks were lost: the robot moved on, the recording has gaps."""

    steps: tuple[int, ...]
    kind: ClassVar[str] = "dropped_steps"

    def apply(self, episode: Episode) -> None:
        kept = np.setdiff1d(np.arange(episode.steps), self.steps)
        episode.ticks, episode.actions = episode.ticks[kept], episode.actions[kept]

    def manifest(self) -> dict:
        return {"kind": self.kind, "steps": list(self.steps)}


def faulty_episode(seed: int, index: int, steps: int | None, cameras: dict[str, tuple[int, int]],
                   fault: Fault | None) -> Episode:
    """Episode `index` as the sample writes it: with its fault, if it has one."""
    if fault is None:
        return build_episode(seed, index, steps, cameras)
    episode = build_episode(seed, fault.source(index), steps, cameras, fault.motion)
    fault.apply(episode)
    return episode


# ---- planning ----


def check_shares(shares: dict[str, float]) -> dict[str, float]:
    """Every kind's share (missing kinds 0); a clear error for an unknown kind or a bad share."""
    unknown = sorted(set(shares) - set(BEHAVIOUR_KINDS))
    if unknown:
        raise RobolakeError(f"unknown fault kind {', '.join(unknown)}: use {', '.join(BEHAVIOUR_KINDS)}")
    bad = {kind: share for kind, share in shares.items() if not 0.0 <= share <= 1.0}
    if bad:
        raise RobolakeError(f"a fault share is within [0, 1], got {bad}")
    if sum(shares.values()) > 1.0:
        raise RobolakeError(f"the fault shares add up to {sum(shares.values()):g}: at most 1")
    return {kind: float(shares.get(kind, 0.0)) for kind in BEHAVIOUR_KINDS}


def behaviour_kind(seed: int, rank: int, bag: bool, shares: dict[str, float]) -> str | None:
    """The behaviour fault kind (None: none) of the episode with `rank` episodes before it in its container."""
    offset = float(np.random.default_rng([seed, BEHAVIOUR_SALT]).random())
    u = (offset + rank * GOLDEN) % 1.0
    start = 0.0
    for kind in BEHAVIOUR_KINDS:
        end = start + shares.get(kind, 0.0)
        if start <= u < end:
            return kind if bag or kind not in BAG_ONLY else None
        start = end
    return None


def _plan_behaviour(kind: str, rng: np.random.Generator, base: Episode, cameras: list[str],
                    originals: list[int]) -> Fault | None:
    """Kind `kind` fitted to this episode (from its unfaulted build `base`), or None where it
    does not fit (the episode is too short, no camera, nothing to copy)."""
    steps = base.steps
    if kind == "idle":
        head, tail = (int(rng.integers(IDLE_STEPS[0], IDLE_STEPS[1] + 1)) for _ in range(2))
        where = int(rng.integers(3))  # head, tail or both
        return Idle(head if where != 1 else 0, tail if where != 0 else 0)
    if kind == "gripper_chatter":
        command = base.actions[:, 6]
        run = int(np.argmax(command != command[0])) if (command != command[0]).any() else steps
        for toggles in (6, 4):  # an even number: the command ends where it was
            gaps = rng.integers(1, 3, toggles - 1)
            room = run - 2 * CHATTER_MARGIN - int(gaps.sum())
            if room > 0:
                first = CHATTER_MARGIN + int(rng.integers(room))
                return GripperChatter(tuple(int(s) for s in first + np.concatenate([[0], np.cumsum(gaps)])))
        return None
    if kind == "frozen_camera":
        length = int(rng.integers(FROZEN_STEPS[0], FROZEN_STEPS[1] + 1))
        if not cameras or steps < length + 4:
            return None
        camera = cameras[int(rng.integers(len(cameras)))]
        return FrozenCamera(camera, int(rng.integers(2, steps - length - 1)), length)
    if kind == "failed_demo":
        distance = float(rng.uniform(*MISS_OFFSET))
        if base.meta.task == "push":  # beside the push line, either side
            dx, dy = PUSH_DIRECTIONS[base.meta.direction]
            side = float(rng.choice([-1.0, 1.0])) * distance
            return FailedDemo((-dy * side, dx * side))
        angle = float(rng.uniform(0.0, 2 * np.pi))
        return FailedDemo((distance * float(exact.cos(angle)), distance * float(exact.sin(angle))))
    if kind == "duplicate_episode":
        return DuplicateEpisode(originals[int(rng.integers(len(originals)))]) if originals else None
    if kind == "timestamp_jitter":
        return TimestampJitter(tuple(float(v) for v in rng.uniform(0.0, rng.uniform(*LATE_S), steps)))
    if kind == "dropped_steps":
        gaps = int(rng.integers(DROPPED_GAPS[0], DROPPED_GAPS[1] + 1))
        edges = np.linspace(2, steps - 2, gaps + 1).astype(int)
        dropped = []
        for low, high in zip(edges[:-1], edges[1:]):
            length = min(int(rng.integers(1, 4)), int(high - low) - 1)  # a kept tick between gaps
            if length >= 1:
                start = int(rng.integers(low, high - length))
                dropped += range(start, start + length)
        return DroppedSteps(tuple(dropped)) if dropped else None
    raise ValueError(f"unknown behaviour fault kind {kind!r}")


def plan_behaviour_faults(seed: int, episodes: int, is_bag: Callable[[int], bool], steps: int | None,
                          shares: dict[str, float], cameras: list[str]) -> dict[int, Fault]:
    """Behaviour faults by episode index; `is_bag(i)` says whether episode i is written as a
    bag. A duplicate copies an earlier unfaulted episode of the same container."""
    kinds, ranks = {}, {True: 0, False: 0}
    for i in range(episodes):
        bag = bool(is_bag(i))
        kinds[i] = behaviour_kind(seed, ranks[bag], bag, shares)
        ranks[bag] += 1
    planned: dict[int, Fault] = {}
    for index, kind in kinds.items():
        if kind is None:
            continue
        rng = np.random.default_rng([seed, index, BEHAVIOUR_SALT])
        originals = [j for j in range(index) if kinds[j] is None and is_bag(j) == is_bag(index)]
        fault = _plan_behaviour(kind, rng, build_episode(seed, index, steps, {}), cameras, originals)
        if fault is not None:
            planned[index] = fault
    return planned


def _fault_step(rng: np.random.Generator, steps: int) -> int:
    return int(rng.integers(steps // 4, max(steps // 4 + 1, (3 * steps) // 4)))


def plan_data_faults(seed: int, episodes: int, hdf5: list[int], bags: list[int],
                     lengths: dict[int, int]) -> dict[int, Fault]:
    """Which of the episodes `hdf5` and `bags` (those free of other faults) get data faults:
    the last 1-2 HDF5 episodes (they go in the last session, which gets truncated), one NaN
    action in another HDF5 episode, and action spikes in three more, at least one HDF5 and
    one bag when both exist. `episodes`: the sample's size."""
    rng = np.random.default_rng([seed, episodes, FAULT_SALT])
    faults: dict[int, Fault] = {}
    healthy = list(hdf5)
    if len(hdf5) >= 3:
        for index in hdf5[-(2 if len(hdf5) >= 6 else 1):]:
            faults[index] = TruncatedFile()
            healthy.remove(index)
    if healthy:
        index = healthy.pop(int(rng.integers(len(healthy))))
        faults[index] = NanAction(_fault_step(rng, lengths[index]), int(rng.integers(6)))
    for preferred in (healthy, bags, []):  # spikes: one in HDF5, one in a bag, one anywhere
        pool = [i for i in (preferred or healthy + bags) if i not in faults]
        if not pool:
            break
        index = pool[int(rng.integers(len(pool)))]
        faults[index] = ActionSpike(_fault_step(rng, lengths[index]), int(rng.integers(3)),
                                    float(rng.uniform(*SPIKE_SCALE)))
    return faults


def plan_faults(seed: int, episodes: int, is_bag: Callable[[int], bool], steps: int | None,
                shares: dict[str, float], cameras: list[str]) -> dict[int, Fault]:
    """Every episode's fault (at most one each): behaviour faults first, data faults among
    the rest (not on an episode a duplicate copies)."""
    if episodes < MIN_EPISODES_FOR_FAULTS:
        return {}
    planned = plan_behaviour_faults(seed, episodes, is_bag, steps, shares, cameras)
    copied = {f.of for f in planned.values() if isinstance(f, DuplicateEpisode)}
    free = [i for i in range(episodes) if i not in planned and i not in copied]
    lengths = {i: build_episode(seed, i, steps, {}).steps for i in free}
    hdf5, bags = [i for i in free if not is_bag(i)], [i for i in free if is_bag(i)]
    return {**planned, **plan_data_faults(seed, episodes, hdf5, bags, lengths)}
