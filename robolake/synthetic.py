"""Synthetic HDF5 demonstrations (robomimic and ALOHA layouts), deterministic by seed.

Used by the tests, the benchmark and `make demo`: a tabletop seen by cameras of
different sizes, a coloured object moving under scripted 7-DoF delta actions, with
per-episode metadata and paraphrased instructions."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

TASKS = {
    "pick_cube": ["pick up the {color} cube", "grasp the {color} cube and lift it"],
    "push_block": ["push the {color} block to the left", "slide the {color} block left"],
    "stack_cups": ["stack the {color} cup on the other cup", "put the {color} cup on top"],
}
COLORS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 200)}
LIGHTING = {"bright": 1.15, "dim": 0.7, "side": 0.95}
DEFAULT_CAMERAS = {"front": (480, 640), "wrist": (240, 320)}


@dataclass(frozen=True)
class EpisodeMeta:
    task: str
    color: str
    lighting: str
    operator: str
    instruction: str

    def attrs(self) -> dict[str, str]:
        return {
            "task": self.task, "object": self.task.split("_")[1], "color": self.color, "scene": "tabletop",
            "lighting": self.lighting, "operator": self.operator, "language_instruction": self.instruction,
        }


def episode_meta(rng: np.random.Generator) -> EpisodeMeta:
    task = str(rng.choice(list(TASKS)))
    color = str(rng.choice(list(COLORS)))
    lighting = str(rng.choice(list(LIGHTING), p=[0.6, 0.3, 0.1]))
    instruction = str(rng.choice(TASKS[task])).format(color=color)
    return EpisodeMeta(task, color, lighting, f"operator_{int(rng.integers(3))}", instruction)


@dataclass
class Scene:
    """One episode's static scene per camera; frames add the moving object and sensor noise."""

    meta: EpisodeMeta
    rng: np.random.Generator
    backgrounds: dict[str, np.ndarray] = field(default_factory=dict)
    noise: np.ndarray = field(init=False)

    def __post_init__(self):
        self.noise = self.rng.integers(-6, 7, size=(512, 700, 3), dtype=np.int16)

    def background(self, height: int, width: int) -> np.ndarray:
        key = f"{height}x{width}"
        if key not in self.backgrounds:
            rows = np.linspace(0.6, 1.0, height, dtype=np.float32)[:, None, None]
            table = np.array([150, 120, 90], np.float32) * rows * LIGHTING[self.meta.lighting]
            image = np.broadcast_to(table, (height, width, 3)).copy()
            image[: height // 3] = np.array([200, 205, 210]) * LIGHTING[self.meta.lighting]  # wall
            self.backgrounds[key] = np.clip(image, 0, 255).astype(np.int16)
        return self.backgrounds[key]

    def frame(self, height: int, width: int, position: np.ndarray) -> np.ndarray:
        image = self.background(height, width).copy()
        size = max(4, height // 8)
        cy = int(np.clip(height * (0.55 + 0.3 * position[1]), size, height - size))
        cx = int(np.clip(width * (0.5 + 0.3 * position[0]), size, width - size))
        image[cy - size : cy + size, cx - size : cx + size] = COLORS[self.meta.color]
        oy, ox = self.rng.integers(0, 512 - height + 1 if height <= 512 else 1), self.rng.integers(0, 61)
        noise = self.noise[oy : oy + height, ox : ox + width]
        image[: noise.shape[0], : noise.shape[1]] += noise
        return np.clip(image, 0, 255).astype(np.uint8)


def scripted_actions(rng: np.random.Generator, steps: int) -> np.ndarray:
    """Smooth delta end-effector motion toward a goal, a gripper close halfway, operator noise."""
    goal = rng.uniform(-0.5, 0.5, size=3)
    t = np.linspace(0, 1, steps)[:, None]
    velocity = goal * np.sin(np.pi * t) * (np.pi / (2 * steps))
    rotation = rng.normal(0, 0.01, size=(steps, 3))
    gripper = np.where(t > 0.5, 1.0, -1.0)
    actions = np.concatenate([velocity + rng.normal(0, 0.002, (steps, 3)), rotation, gripper], axis=1)
    return actions.astype(np.float64)


def _write_cameras(group: h5py.Group, prefix: str, scene: Scene, positions: np.ndarray, cameras: dict) -> None:
    for name, (height, width) in cameras.items():
        data = group.create_dataset(
            prefix.format(name=name), shape=(len(positions), height, width, 3), dtype=np.uint8,
            chunks=(1, height, width, 3),
        )
        for t, position in enumerate(positions):
            data[t] = scene.frame(height, width, position)


def write_robomimic_file(
    path: str, episodes: int, steps: int, seed: int, cameras: dict[str, tuple[int, int]] = DEFAULT_CAMERAS
) -> list[EpisodeMeta]:
    """robomimic layout: data/demo_N/{obs/<cam>_image, obs/robot0_*, actions, rewards, dones}."""
    rng = np.random.default_rng(seed)
    metas = []
    with h5py.File(path, "w") as h5:
        data = h5.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "SyntheticTabletop", "type": 1})
        for i in range(1, episodes + 1):
            meta = episode_meta(rng)
            metas.append(meta)
            demo = data.create_group(f"demo_{i}")
            demo.attrs.update(meta.attrs())
            demo.attrs["num_samples"] = steps
            actions = scripted_actions(rng, steps)
            positions = np.cumsum(actions[:, :3], axis=0)
            demo["actions"] = actions
            demo["rewards"] = np.eye(1, steps, steps - 1).reshape(-1)
            demo["dones"] = np.eye(1, steps, steps - 1, dtype=np.int64).reshape(-1)
            demo["obs/robot0_eef_pos"] = positions
            demo["obs/robot0_eef_quat"] = np.tile([0.0, 0.0, 0.0, 1.0], (steps, 1))
            demo["obs/robot0_gripper_qpos"] = np.repeat(actions[:, 6:7], 2, axis=1) * 0.04
            _write_cameras(demo, "obs/{name}_image", Scene(meta, rng), positions, cameras)
    return metas


def write_aloha_file(
    path: str, steps: int, seed: int, cameras: dict[str, tuple[int, int]] = DEFAULT_CAMERAS
) -> EpisodeMeta:
    """ALOHA/ACT layout, one episode per file: /observations/{images/<cam>, qpos}, /action (14-d)."""
    rng = np.random.default_rng(seed)
    meta = episode_meta(rng)
    arm = scripted_actions(rng, steps)
    action = np.concatenate([arm, arm * -1.0], axis=1)  # two arms, mirrored
    with h5py.File(path, "w") as h5:
        h5.attrs.update(meta.attrs())
        h5.attrs["sim"] = False
        h5["action"] = action
        h5["observations/qpos"] = np.cumsum(action, axis=0)
        h5["observations/qvel"] = action
        _write_cameras(h5, "observations/images/{name}", Scene(meta, rng), np.cumsum(arm[:, :3], axis=0), cameras)
    return meta


def write_robomimic_dataset(
    out_dir: str, episodes: int, steps: int, seed: int = 0, per_file: int = 4,
    cameras: dict[str, tuple[int, int]] = DEFAULT_CAMERAS,
) -> list[str]:
    """`episodes` robomimic episodes in files of up to `per_file` demos; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for index, start in enumerate(range(0, episodes, per_file)):
        path = os.path.join(out_dir, f"tabletop_{index:03d}.hdf5")
        write_robomimic_file(path, min(per_file, episodes - start), steps, seed * 1000 + index, cameras)
        paths.append(path)
    return paths
