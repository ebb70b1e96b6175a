"""HDF5 containers: robomimic sessions (data/demo_K) and single-episode ALOHA files.

Observations at each 10 Hz tick are the latest sample of each stream at or before it:
the camera captures (15 / 30 Hz, so frames lag the tick a little) and the 100 Hz robot
state. Nothing time-dependent is stored, so the same episodes give the same bytes."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from robolake.sample.episode import DEFAULT_CAMERAS, Episode, build_episode, camera_hz
from robolake.sample.motion import CONTROL_HZ
from robolake.sample.scenario import EpisodeMeta

# How the sample stores camera frames: "jpeg" (the sample's sessions), each step's frame as the
# camera's JPEG bytes in a variable-length uint8 dataset (T,); or "raw", uint8 (T, H, W, 3), one
# frame per gzip-1 chunk. Measured per 480x640 frame with the sample's sensor noise: JPEG 90 43 KB
# in ~0.8 ms, gzip 1 630 KB in ~13 ms. JPEG is what makes a 1,000-episode sample fit (~2 GB).
RAW_COMPRESSION = {"compression": "gzip", "compression_opts": 1}


def env_args(cameras: dict[str, tuple[int, int]]) -> str:
    return json.dumps({
        "env_name": "SampleTabletop", "type": 1,
        "env_kwargs": {
            "control_freq": CONTROL_HZ, "camera_names": list(cameras),
            "camera_heights": [h for h, _ in cameras.values()], "camera_widths": [w for _, w in cameras.values()],
            "camera_rates_hz": [camera_hz(name) for name in cameras],
        },
    }, sort_keys=True)


def _write_frames(group: h5py.Group, key: str, episode: Episode, camera: str, storage: str) -> None:
    captures = [int(capture) for capture in episode.tick_captures(camera)]
    if storage == "jpeg":
        data = group.create_dataset(key, shape=(episode.steps,), dtype=h5py.vlen_dtype(np.uint8))
        for tick, capture in enumerate(captures):
            data[tick] = episode.jpeg(camera, capture)
        return
    height, width = episode.cameras[camera]
    data = group.create_dataset(key, shape=(episode.steps, height, width, 3), dtype=np.uint8,
                                chunks=(1, height, width, 3), **RAW_COMPRESSION)
    for tick, capture in enumerate(captures):
        data[tick] = episode.frame(camera, capture)


def write_demo(group: h5py.Group, episode: Episode, frames: str) -> None:
    """One robomimic demo: metadata attributes, actions, rewards, dones and obs/*."""
    steps, state = episode.steps, episode.tick_states()
    group.attrs.update(episode.meta.attrs())
    group.attrs["num_samples"] = steps
    group["actions"] = episode.actions
    group["rewards"] = np.eye(1, steps, steps - 1).reshape(-1)
    group["dones"] = np.eye(1, steps, steps - 1, dtype=np.int64).reshape(-1)
    group["obs/robot0_eef_pos"] = episode.tool[state, :3]
    group["obs/robot0_eef_quat"] = episode.eef_quat[state]
    group["obs/robot0_gripper_qpos"] = episode.gripper_qpos[state]
    group["obs/robot0_joint_pos"] = episode.joints[state, :7]
    for camera in episode.cameras:
        _write_frames(group, f"obs/{camera}_image", episode, camera, frames)


def write_session(path: str, episodes: list[Episode], frames: str = "raw") -> list[str]:
    """A robomimic file holding `episodes` as data/demo_1, demo_2, ...; returns the group names.
    `frames`: how camera frames are stored, "jpeg" or "raw" (above)."""
    groups = [f"demo_{k}" for k in range(1, len(episodes) + 1)]
    with h5py.File(path, "w") as h5:
        data = h5.create_group("data")
        data.attrs["env_args"] = env_args(episodes[0].cameras)
        data.attrs["total"] = sum(e.steps for e in episodes)
        for name, episode in zip(groups, episodes):
            write_demo(data.create_group(name), episode, frames)
    return groups


def write_robomimic_file(
    path: str, episodes: int, steps: int, seed: int, cameras: dict[str, tuple[int, int]] = DEFAULT_CAMERAS
) -> list[EpisodeMeta]:
    """Episodes 0..episodes-1 of `seed`, `steps` ticks each, in one robomimic file."""
    content = [build_episode(seed, index, steps, cameras) for index in range(episodes)]
    write_session(path, content)
    return [e.meta for e in content]


def write_robomimic_dataset(
    out_dir: str, episodes: int, steps: int, seed: int = 0, per_file: int = 4,
    cameras: dict[str, tuple[int, int]] = DEFAULT_CAMERAS,
) -> list[str]:
    """Episodes 0..episodes-1 of `seed` in files tabletop_NNN.hdf5 of up to `per_file` demos."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for number, start in enumerate(range(0, episodes, per_file)):
        path = os.path.join(out_dir, f"tabletop_{number:03d}.hdf5")
        indices = range(start, min(start + per_file, episodes))
        write_session(path, [build_episode(seed, i, steps, cameras) for i in indices])
        paths.append(path)
    return paths


def write_aloha_file(
    path: str, steps: int, seed: int, cameras: dict[str, tuple[int, int]] = DEFAULT_CAMERAS
) -> EpisodeMeta:
    """ALOHA/ACT layout, one episode per file: /observations/{images/<cam>, qpos, qvel}, /action.

    Two arms, the second mirroring the first; per arm 6 joints and the gripper opening.
    qpos/qvel are the follower arms at the tick, action the leader arms' target (the
    follower's position at the next tick)."""
    episode = build_episode(seed, 0, steps, cameras)
    state = episode.tick_states()
    mirror = np.array([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0])
    arm = np.c_[episode.joints[:, :6], episode.joints[:, 7:8] * 2]
    arm_velocity = np.c_[episode.joint_velocities[:, :6], episode.joint_velocities[:, 7:8] * 2]
    qpos = np.concatenate([arm, arm * mirror], axis=1)[state]
    qvel = np.concatenate([arm_velocity, arm_velocity * mirror], axis=1)[state]
    with h5py.File(path, "w") as h5:
        h5.attrs.update(episode.meta.attrs())
        h5.attrs["sim"] = False
        h5["action"] = np.concatenate([qpos[1:], qpos[-1:]])
        h5["observations/qpos"] = qpos
        h5["observations/qvel"] = qvel
        for camera in cameras:
            _write_frames(h5, f"observations/images/{camera}", episode, camera, "raw")
    return episode.meta
