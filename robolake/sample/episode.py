"""One episode's content, independent of the container it is written to: metadata,
layout, motion, the 10 Hz actions, the 100 Hz robot state stream, the camera capture
times and a renderer for the frames.

Every sensor runs on its own clock with a random phase, starting at or just before the
first 10 Hz tick (t=0) and ending at the episode's duration."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from robolake.sample.motion import CONTROL_HZ, Trajectory, delta_actions, episode_steps, joint_positions, quat_xyzw
from robolake.sample.render import Renderer, is_wrist
from robolake.sample.scenario import EpisodeMeta, Layout, episode_streams, sample_layout, sample_metadata

DEFAULT_CAMERAS = {"front": (480, 640), "wrist": (240, 320)}
STATE_HZ = 100
JPEG_QUALITY = 90  # the cameras' own compression, in bags and HDF5 sessions alike


def camera_hz(name: str) -> int:
    return 30 if is_wrist(name) else 15


def _stream_times(hz: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Sample times of a sensor with a random phase; the first one is at or before t=0."""
    period = 1.0 / hz
    first = float(rng.uniform(0.0, period)) - period
    return first + period * np.arange(int(np.ceil((duration - first) / period)))


def _latest(times: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """Index of the latest sample at or before each tick."""
    return np.searchsorted(times, ticks, side="right") - 1


@dataclass
class Episode:
    seed: int
    index: int
    meta: EpisodeMeta
    layout: Layout
    trajectory: Trajectory
    cameras: dict[str, tuple[int, int]]
    ticks: np.ndarray  # (T,) seconds of the 10 Hz control ticks
    actions: np.ndarray  # (T, 7)
    state_times: np.ndarray  # (N,) the 100 Hz robot state stream
    tool: np.ndarray  # (N, 4) x, y, z, yaw
    joints: np.ndarray  # (N, 9) positions: 7 arm joints, 2 fingers
    joint_velocities: np.ndarray  # (N, 9)
    capture_times: dict[str, np.ndarray]  # per camera
    # camera -> for each capture, the capture whose image it carries (a frozen camera repeats one)
    repeats: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.ticks)

    @functools.cached_property
    def renderer(self) -> Renderer:
        rng = np.random.default_rng(episode_streams(self.seed, self.index)["render"])
        captures = {name: len(times) for name, times in self.capture_times.items()}
        return Renderer(self.meta, self.layout, self.trajectory, self.cameras, captures, rng)

    def frame(self, camera: str, capture: int) -> np.ndarray:
        """RGB uint8 frame number `capture` of `camera`."""
        if camera in self.repeats:
            capture = int(self.repeats[camera][capture])
        return self.renderer.frame(camera, capture, float(self.capture_times[camera][capture]))

    def jpeg(self, camera: str, capture: int) -> np.ndarray:
        """Frame `capture` of `camera` as a standard JPEG file's bytes (uint8), as the camera sends it."""
        bgr = cv2.cvtColor(self.frame(camera, capture), cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError(f"OpenCV could not encode frame {capture} of camera {camera!r}")
        return encoded.reshape(-1)

    def tick_captures(self, camera: str) -> np.ndarray:
        """The capture each 10 Hz tick observes: the latest at or before it."""
        return _latest(self.capture_times[camera], self.ticks)

    def tick_states(self) -> np.ndarray:
        return _latest(self.state_times, self.ticks)

    @functools.cached_property
    def eef_quat(self) -> np.ndarray:
        return quat_xyzw(self.tool[:, 3])

    @property
    def gripper_qpos(self) -> np.ndarray:
        return gripper_qpos(self.joints)


def gripper_qpos(joints: np.ndarray) -> np.ndarray:
    """Finger positions in robomimic's convention, [+w/2, -w/2], from joint positions (..., 9)."""
    return joints[..., 7:] * [1.0, -1.0]


def scripted_motion(meta: EpisodeMeta, layout: Layout, steps: int) -> tuple[Trajectory, np.ndarray]:
    """The task's scripted motion stretched over `steps` 10 Hz ticks, and the ticks' times."""
    return Trajectory(meta, layout, steps / CONTROL_HZ), np.arange(steps) / CONTROL_HZ


Motion = Callable[[EpisodeMeta, Layout, int], tuple[Trajectory, np.ndarray]]


def build_episode(seed: int, index: int, steps: int | None = None,
                  cameras: dict[str, tuple[int, int]] = DEFAULT_CAMERAS, motion: Motion = scripted_motion) -> Episode:
    """Episode `index` of the sample with this seed: the same whatever else is generated.
    `steps` fixes the number of 10 Hz ticks (the motion is stretched to fit). `motion`
    makes the trajectory and the control ticks (robolake.sample.faults changes them)."""
    streams = {name: np.random.default_rng(seq) for name, seq in episode_streams(seed, index).items()}
    meta = sample_metadata(streams["metadata"])
    layout = sample_layout(meta, streams["layout"])
    steps = episode_steps(meta, layout) if steps is None else steps
    if steps < 1:
        raise ValueError(f"an episode needs at least one step, got steps={steps}")
    trajectory, ticks = motion(meta, layout, steps)
    duration = len(ticks) / CONTROL_HZ
    actions = delta_actions(trajectory, ticks, meta.operator, streams["motion"])
    state_times = _stream_times(STATE_HZ, duration, streams["clock"])
    tool = trajectory.tool(state_times)
    joints = joint_positions(tool, trajectory.width(state_times))
    capture_times = {name: _stream_times(camera_hz(name), duration, streams["clock"]) for name in cameras}
    return Episode(
        seed, index, meta, layout, trajectory, dict(cameras), ticks, actions, state_times, tool, joints,
        np.gradient(joints, 1.0 / STATE_HZ, axis=0), capture_times,
    )
