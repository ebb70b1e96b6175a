"""Scripted motion: end-effector waypoints per task, piecewise min-jerk in between,
the object carried or pushed along, gripper opening, 10 Hz delta actions and a fake
arm inverse kinematics for the joint states.

Poses are [x, y, z, yaw] of the tool centre point (between the finger tips), in metres
and radians, in the robot base frame (x forward, z up, table top at z=0); the gripper
always points down (roll=pi, pitch=0). Trigonometry goes through robolake.sample.exact, so
the stored values are the same bits on every machine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robolake.sample import exact
from robolake.sample.scenario import PUSH_DIRECTIONS, EpisodeMeta, Layout

CONTROL_HZ = 10
MIN_STEPS, MAX_STEPS = 30, 60
OPEN_WIDTH = 0.08  # metres between the fingers
GRIPPER_MOVE_S = 0.4
TRAVEL_SPEED, VERTICAL_SPEED, DWELL_S = 0.22, 0.15, 0.4
# Per-operator noise on the commanded deltas (metres per step; radians per step is twice that).
OPERATOR_NOISE = {"operator_0": 0.0006, "operator_1": 0.0012, "operator_2": 0.0025}
SYMMETRY = {"cube": np.pi / 2, "prism": 2 * np.pi / 3, "cylinder": None}
JOINT_NAMES = [f"joint{i}" for i in range(1, 8)] + ["finger_joint1", "finger_joint2"]


def min_jerk(s: np.ndarray) -> np.ndarray:
    return s * s * s * (10 - 15 * s + 6 * s * s)


@dataclass(frozen=True)
class Segment:
    target: np.ndarray  # [x, y, z, yaw] reached at the end of the segment
    seconds: float  # nominal duration
    gripper: float  # command during the segment: -1 open, +1 closed
    attached: bool  # the object moves with the tool (held or pushed)


def _move(start: np.ndarray, target: np.ndarray, gripper: float, attached: bool = False) -> Segment:
    horizontal = float(exact.hypot(*(target[:2] - start[:2]))) + 0.05 * abs(target[3] - start[3])
    seconds = max(0.4, horizontal / TRAVEL_SPEED + abs(target[2] - start[2]) / VERTICAL_SPEED)
    return Segment(target, seconds, gripper, attached)


def _closest_yaw(current: float, yaw: float, symmetry: float | None) -> float:
    """The grasp yaw equivalent to `yaw` under the object's symmetry that is nearest `current`."""
    if symmetry is None:
        return current
    return yaw + symmetry * np.round((current - yaw) / symmetry)


def _script(meta: EpisodeMeta, layout: Layout) -> list[Segment]:
    obj = layout.target
    width, height = obj.size
    grasp_z = max(0.015, 0.5 * height)
    above = height + 0.08
    pose = layout.home
    segments: list[Segment] = []

    def go(x, y, z, gripper, attached=False, yaw=None, dwell=False):
        nonlocal pose
        target = np.array([x, y, z, pose[3] if yaw is None else yaw])
        segment = Segment(target, DWELL_S, gripper, attached) if dwell else _move(pose, target, gripper, attached)
        segments.append(segment)
        pose = target

    if meta.task == "push":
        dx, dy = PUSH_DIRECTIONS[meta.direction]
        back = 0.5 * width + 0.03
        sx, sy = obj.x - dx * back, obj.y - dy * back
        go(sx, sy, 0.10, +1)
        go(sx, sy, 0.02, +1)
        go(sx + dx * 0.12, sy + dy * 0.12, 0.02, +1, attached=True)
        go(*pose[:2], 0.10, +1)
        return segments
    yaw = _closest_yaw(pose[3], obj.yaw, SYMMETRY[obj.shape])
    go(obj.x, obj.y, above, -1, yaw=yaw)
    go(obj.x, obj.y, grasp_z, -1)
    go(*pose[:3], +1, dwell=True)
    go(obj.x, obj.y, grasp_z + 0.12, +1, attached=True)
    if meta.task == "place":
        plate = layout.plate
        go(plate.x, plate.y, grasp_z + 0.12, +1, attached=True)
        go(plate.x, plate.y, grasp_z + plate.size[1], +1, attached=True)
        go(*pose[:3], -1, dwell=True)
        go(plate.x, plate.y, grasp_z + 0.10, -1)
    return segments


def episode_steps(meta: EpisodeMeta, layout: Layout) -> int:
    """Length at 10 Hz: the script's nominal duration at this operator's speed, within 30-60."""
    seconds = sum(s.seconds for s in _script(meta, layout)) / layout.speed
    return int(np.clip(round(seconds * CONTROL_HZ), MIN_STEPS, MAX_STEPS))


class Trajectory:
    """The scripted motion stretched to `duration` seconds; every method takes an array of times."""

    def __init__(self, meta: EpisodeMeta, layout: Layout, duration: float):
        segments = _script(meta, layout)
        nominal = np.array([s.seconds for s in segments])
        self.times = np.concatenate([[0.0], np.cumsum(nominal * duration / nominal.sum())])
        self.poses = np.stack([layout.home] + [s.target for s in segments])
        self.commands = np.array([s.gripper for s in segments])
        attached = np.array([s.attached for s in segments])
        obj = layout.target
        start = np.array([obj.x, obj.y, 0.0, obj.yaw])
        # The object's pose at each waypoint: it follows the tool's displacement while attached.
        moves = np.where(attached[:, None], np.diff(self.poses, axis=0), 0.0)
        self.object_poses = start + np.concatenate([np.zeros((1, 4)), np.cumsum(moves, axis=0)])
        self.attached = attached
        # Gripper width: moves toward each segment's target over GRIPPER_MOVE_S from its start.
        closed = 0.0 if meta.task == "push" else obj.size[0]
        self.widths = np.where(self.commands > 0, closed, OPEN_WIDTH)

    def _locate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        segment = np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.commands) - 1)
        span = self.times[segment + 1] - self.times[segment]
        return segment, min_jerk(np.clip((t - self.times[segment]) / span, 0.0, 1.0))

    def tool(self, t: np.ndarray) -> np.ndarray:
        segment, blend = self._locate(t)
        start = self.poses[segment]
        return start + (self.poses[segment + 1] - start) * blend[:, None]

    def object(self, t: np.ndarray) -> np.ndarray:
        """[x, y, z of its base, yaw] of the target object."""
        segment, _ = self._locate(t)
        moved = self.tool(t) - self.poses[segment]
        return self.object_poses[segment] + np.where(self.attached[segment][:, None], moved, 0.0)

    def gripper(self, t: np.ndarray) -> np.ndarray:
        """The commanded gripper state, -1 open / +1 closed."""
        return self.commands[self._locate(t)[0]]

    def width(self, t: np.ndarray) -> np.ndarray:
        """Opening between the fingers, lagging the command by a min-jerk move."""
        t = np.asarray(t, dtype=np.float64)
        width = np.full(t.shape, OPEN_WIDTH)
        previous = OPEN_WIDTH
        for start, target in zip(self.times[:-1], self.widths):
            if target != previous:
                span = min(GRIPPER_MOVE_S, max(self.times[-1] - start, 1e-3))
                blend = min_jerk(np.clip((t - start) / span, 0.0, 1.0))
                width = np.where(t >= start, previous + (target - previous) * blend, width)
                previous = target
        return width


def quat_xyzw(yaw: np.ndarray) -> np.ndarray:
    """Orientation of a tool pointing down (roll=pi, pitch=0) with the given yaw, as xyzw."""
    half = 0.5 * np.asarray(yaw, dtype=np.float64)
    return np.stack([exact.cos(half), exact.sin(half), np.zeros_like(half), np.zeros_like(half)], axis=-1)


def joint_positions(tool: np.ndarray, width: np.ndarray) -> np.ndarray:
    """A smooth stand-in for inverse kinematics: 7 arm joints and the 2 finger joints."""
    x, y, z, yaw = tool.T
    reach, base = exact.hypot(x, y) - 0.45, exact.atan2(y, x)
    lift = z - 0.20
    arm = [
        base,
        -0.1 + 0.9 * reach - 1.1 * lift,
        0.15 * exact.sin(base),
        -2.1 + 1.6 * reach + 0.9 * lift,
        0.05 * exact.cos(2 * base),
        1.8 + 0.6 * reach - 1.3 * lift,
        np.pi / 4 + yaw - base,
    ]
    return np.stack(arm + [0.5 * width, 0.5 * width], axis=-1)


def delta_actions(trajectory: Trajectory, ticks: np.ndarray, operator: str, rng: np.random.Generator) -> np.ndarray:
    """7-DoF [dx, dy, dz, droll, dpitch, dyaw, gripper] per tick: the tool's motion until the
    next tick plus the operator's noise; roll and pitch stay fixed, so only noise there."""
    period = 1.0 / CONTROL_HZ
    delta = trajectory.tool(ticks + period) - trajectory.tool(ticks)
    sigma = OPERATOR_NOISE[operator]
    translation = delta[:, :3] + rng.normal(0.0, sigma, (len(ticks), 3))
    rotation = rng.normal(0.0, 2 * sigma, (len(ticks), 3))
    rotation[:, 2] += delta[:, 3]
    return np.concatenate([translation, rotation, trajectory.gripper(ticks)[:, None]], axis=1)
