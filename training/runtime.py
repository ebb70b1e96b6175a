"""The safe policy runtime: camera frames and an instruction in, robot-executable actions out.

`Policy.act` runs the steps below for one robot or a batch of robots (one row each):

1. preprocessing, cameras in the checkpoint's order: each camera's uint8 RGB frame through the
   gold pipeline's transform of that camera, as the bundle's camera_frames.json records it from the
   dataset's spec (`robolake.camera_frames.FramePreprocessor.as_stored`: centre crop to the stored
   aspect ratio, resize to the stored size, JPEG/PNG encode and decode), then as evaluation reads
   stored frames (`training.frames.eval_frames`: the training centre crop, resized to the model's
   image size, scaled to [0, 1]). A bundle from before camera_frames.json existed warns and skips
   the first part, as the runtime did then;
2. greedy action-token decoding (`predict_actions`), normalized actions in [-1, 1] and the
   entropy of every action dimension's distribution over the action tokens;
3. `denormalize` with the checkpoint's dataset_statistics.json: physical units (the sample's
   meters and radians per step; masked dimensions such as the gripper pass through);
4. `ActionFilter`: a moving average per robot, then the workspace box and the per-step
   translation and rotation limits, so that the executed actions are always within limits.

The mean action-token entropy above `SafetyConfig.entropy_threshold` sets `fallback`: the
model is unsure, and a fallback controller (or a human) should take over. The runtime only
flags it; the actions are returned (and enter the smoothing history) all the same.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from robolake.camera_frames import BUNDLE_FILE as CAMERA_FRAMES_FILE, FramePreprocessor, camera_preprocessors
from robolake.normalization import denormalize, load_statistics
from training.frames import TRAIN_CROP_SCALE, eval_frames
from training.model import CompactVLA, is_lora, load_pretrained, merge_lora

MERGED_DIR = "merged"


@dataclass(frozen=True)
class SafetyConfig:
    """Limits applied to every executed action; the defaults suit 7-DoF end-effector deltas at 10 Hz.

    The default dims follow the standard EEF-delta layout (the sample's action names):
    dx, dy, dz (meters per step), droll, dpitch, dyaw (radians per step), gripper (+1 closed, -1 open).
    """

    # Moving average over the current and the previous N - 1 predicted (denormalized) actions of a
    # robot, fewer while its history fills; 1 turns smoothing off.
    smoothing_window: int = 3
    # Dims that are smoothed; None: translation_dims + rotation_dims. The gripper is left out by
    # default: it is an open/close command, and averaging would only delay the switch.
    smoothed_dims: tuple[int, ...] | None = None
    # Largest translation per step, meters: the norm of the translation dims. A longer delta is
    # scaled down as a vector, keeping its direction (per-axis clipping would bend it and allow
    # sqrt(3) times the limit on a diagonal).
    max_translation: float = 0.05
    # Largest rotation per step, radians: the norm of the rotation dims, scaled as translation is.
    # For per-step deltas (a few degrees) the norm of (droll, dpitch, dyaw) is the rotation angle
    # to first order, so a single-axis rotation is limited exactly.
    max_rotation: float = math.radians(15)
    # Indices of the position deltas in the action vector.
    translation_dims: tuple[int, ...] = (0, 1, 2)
    # Indices of the rotation deltas in the action vector.
    rotation_dims: tuple[int, ...] = (3, 4, 5)
    # Axis-aligned box ((xmin, ymin, zmin), (xmax, ymax, zmax)) the end effector must stay in, in the
    # state's units (meters); None: no box. Applies only when `act` is given the robot's state.
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    # Indices of the end-effector position in the (raw, unnormalized) state vector, in the order of
    # translation_dims. The sample's state is [eef_pos x, y, z (m), eef_quat (4), gripper_qpos (2)],
    # so (0, 1, 2).
    workspace_state_dims: tuple[int, ...] = (0, 1, 2)
    # Mean action-token entropy (nats; at most ln(bins) = 5.55 for 256 bins) above which `fallback` is set.
    entropy_threshold: float = 2.5

    def __post_init__(self) -> None:
        if self.smoothing_window < 1:
            raise ValueError(f"smoothing_window must be at least 1, got {self.smoothing_window}")
        if self.max_translation <= 0 or self.max_rotation <= 0:
            raise ValueError("max_translation and max_rotation must be positive")
        if self.entropy_threshold < 0:
            raise ValueError(f"entropy_threshold must be >= 0 nats, got {self.entropy_threshold}")
        if len(self.workspace_state_dims) != len(self.translation_dims):
            raise ValueError("workspace_state_dims must name one state index per translation dim")
        if self.workspace is not None:
            low, high = (np.asarray(corner, float) for corner in self.workspace)
            if low.shape != high.shape or low.shape != (len(self.translation_dims),) or (low > high).any():
                raise ValueError(f"workspace must be ((mins), (maxes)) with mins <= maxes, got {self.workspace}")

    @property
    def smoothed(self) -> tuple[int, ...]:
        return self.smoothed_dims if self.smoothed_dims is not None else self.translation_dims + self.rotation_dims


def _limit_norm(vectors: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows (B, k) longer than `limit` scaled down to it; also which rows were."""
    norms = np.linalg.norm(vectors, axis=1)
    over = norms > limit
    return vectors * np.where(over, limit / np.where(over, norms, 1.0), 1.0)[:, None], over


class ActionFilter:
    """Per-robot smoothing and safety clipping of physical actions (B robots, one row each), model-free.

    Order: moving average over each robot's history (`SafetyConfig.smoothing_window`), then the
    workspace box (when a state is given), then the translation and rotation norms. The box only
    stops motion that leaves it: per axis, the delta is clipped to [min(0, low - p), max(0, high - p)]
    for the position p, so motion along a wall continues, and an end effector already outside may
    move back in but not further out; it is never moved unasked. The norm limits scale vectors
    towards zero, which keeps a position inside the (convex) box, so both hold at the end.
    """

    def __init__(self, safety: SafetyConfig, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.safety = safety
        self.batch_size = batch_size
        self._history = [deque(maxlen=safety.smoothing_window) for _ in range(batch_size)]

    def reset(self, robot: int | None = None) -> None:
        """Forget the smoothing history of one robot (its row index), or of all."""
        if robot is not None and not 0 <= robot < self.batch_size:
            raise ValueError(f"robot {robot} is not in [0, {self.batch_size})")
        for history in self._history if robot is None else [self._history[robot]]:
            history.clear()

    def __call__(self, actions: np.ndarray, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(filtered actions (B, D) float64, clipped (B,) bool) for actions (B, D) and optional states (B, S)."""
        actions = np.asarray(actions, np.float64)
        if actions.ndim != 2 or len(actions) != self.batch_size:
            raise ValueError(f"actions must be ({self.batch_size}, dims), got {actions.shape}")
        smoothed = self._smoothed(actions)
        clipped = np.zeros(self.batch_size, bool)
        translation = list(self.safety.translation_dims)
        if self.safety.workspace is not None and state is not None:
            smoothed[:, translation], clipped = self._in_workspace(smoothed[:, translation], state)
        for dims, limit in ((translation, self.safety.max_translation),
                            (list(self.safety.rotation_dims), self.safety.max_rotation)):
            smoothed[:, dims], over = _limit_norm(smoothed[:, dims], limit)
            clipped |= over
        return smoothed, clipped

    def _smoothed(self, actions: np.ndarray) -> np.ndarray:
        result = actions.copy()
        dims = list(self.safety.smoothed)
        for history, row, action in zip(self._history, result, actions):
            history.append(action.copy())  # not a view of the caller's array
            row[dims] = np.mean(history, axis=0)[dims]
        return result

    def _in_workspace(self, deltas: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        state = np.asarray(state, np.float64)
        dims = list(self.safety.workspace_state_dims)
        if state.ndim != 2 or len(state) != self.batch_size or state.shape[1] <= max(dims):
            raise ValueError(f"state must be ({self.batch_size}, > {max(dims)}) to hold the end-effector position "
                             f"at {tuple(dims)}, got {state.shape}")
        position = state[:, dims]
        low, high = (np.asarray(corner, np.float64) for corner in self.safety.workspace)
        bounded = np.clip(deltas, np.minimum(0.0, low - position), np.maximum(0.0, high - position))
        return bounded, (bounded != deltas).any(axis=1)


@dataclass
class ActionResult:
    """What `Policy.act` returns; one row per robot (B = 1 for a single-robot call)."""

    actions: np.ndarray  # (B, D) float64: executable, physical units, smoothed and clipped
    raw_actions: np.ndarray  # (B, D) float64: the model's actions denormalized, before smoothing and clipping
    entropy: np.ndarray  # (B,) mean action-token entropy, nats
    fallback: np.ndarray  # (B,) bool: entropy above the threshold, hand over to a fallback controller
    clipped: np.ndarray  # (B,) bool: a workspace, translation or rotation limit changed the action


def load_inference_model(bundle: str | Path, device: str | torch.device = "cpu") -> CompactVLA:
    """A bundle's model for inference, in eval mode: its merged/ weights when it has them, a LoRA
    model's adapters folded in otherwise (merged weights run as fast as the base model)."""
    folder = Path(bundle)
    model, _ = load_pretrained(folder / MERGED_DIR if (folder / MERGED_DIR).is_dir() else folder)
    if is_lora(model):
        model = merge_lora(model)
    return model.requires_grad_(False).to(device).eval()


def quantize_int8(model: CompactVLA) -> CompactVLA:
    """A copy with dynamic int8 quantization of the language model's and projector's nn.Linear layers
    (weights int8, activations quantized per call; CPU only). The vision encoder stays float32: torch's
    TransformerEncoderLayer fast path cannot take quantized linears, and it is a small share of the weights."""
    if model.device.type != "cpu":
        raise ValueError(f"dynamic int8 quantization runs on the CPU; the model is on {model.device}")
    quantized = copy.deepcopy(model)
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices: it is what torch ships here
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        for name in ("language_model", "projector"):
            torch.ao.quantization.quantize_dynamic(getattr(quantized, name), {nn.Linear}, torch.qint8, inplace=True)
    return quantized.eval()


def _data_settings(bundle: str | Path) -> dict:
    """train_config.yaml's `data` section of a bundle (empty without one)."""
    config_path = Path(bundle) / "train_config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    return (config or {}).get("data") or {}


def checkpoint_crop_scale(bundle: str | Path) -> float:
    """The side of the random crops a bundle's model was trained on (training.data's default when
    its config does not set it): evaluation and the runtime centre-crop frames to it."""
    return float(_data_settings(bundle).get("crop_scale", TRAIN_CROP_SCALE))


def checkpoint_cameras(bundle: str | Path, statistics: dict) -> list[str]:
    """The cameras a bundle's model reads, in its order: train_config.yaml's data.cameras when set,
    else every camera of the dataset sorted by name (as training.data picks them)."""
    cameras = _data_settings(bundle).get("cameras")
    if cameras:
        return list(cameras)
    if "cameras" not in statistics.get("robolake", {}):
        raise ValueError(f"{bundle}: dataset_statistics.json has no robolake.cameras to name the model's cameras")
    return sorted(statistics["robolake"]["cameras"])


def _camera_transforms(document: Sequence[dict], cameras: list[str]) -> dict[str, FramePreprocessor]:
    """The transforms of `document` by camera; each of the model's cameras must have one."""
    transforms = camera_preprocessors(list(document))
    missing = [name for name in cameras if name not in transforms]
    if missing:
        raise ValueError(f"no frame transform for cameras {missing}: {CAMERA_FRAMES_FILE} has {sorted(transforms)}")
    return transforms


def checkpoint_camera_frames(bundle: str | Path) -> list[dict] | None:
    """The bundle's camera_frames.json (its dataset's camera transforms); None, with a warning, for a
    bundle trained before bundles recorded them."""
    path = Path(bundle) / CAMERA_FRAMES_FILE
    if not path.is_file():
        warn_frames_as_given(f"{bundle}: no {CAMERA_FRAMES_FILE}")
        return None
    return json.loads(path.read_text())


def warn_frames_as_given(what: str) -> None:
    """The note for a policy saved before camera transforms were recorded: it runs as the runtime did then."""
    warnings.warn(f"{what} (saved before the dataset's camera transforms were recorded): live frames are resized "
                  f"as given, not cropped and encoded as its training frames were; retrain it, or write "
                  f"{CAMERA_FRAMES_FILE} from the dataset's spec cameras (docs/runtime.md)", stacklevel=3)


class Policy:
    """A VLA policy wrapped for execution on one or several robots (see the module docstring).

    `model` needs `config` (a ModelConfig) and `predict_actions` (CompactVLA, or an exported policy);
    `statistics` is the dataset_statistics.json document that normalized its training actions;
    `camera_frames` the transforms of its dataset's cameras (camera_frames.json: each live frame is
    cropped, resized, encoded and decoded as gold stored the training frames), None: frames as given.

    A model that predicts action chunks (`config.action_horizon` > 1) is asked once per
    `execute_steps` calls (default: the whole chunk, as ACT and LeRobot's `n_action_steps`
    execute it); the calls in between return the chunk's next actions, through the same
    smoothing and limits. The entropy of a queued action is that of the chunk's first step.
    """

    def __init__(self, model, statistics: dict, cameras: Sequence[str], safety: SafetyConfig | None = None,
                 execute_steps: int | None = None, crop_scale: float = 1.0,
                 camera_frames: Sequence[dict] | None = None):
        config = model.config
        horizon = config.action_horizon
        if execute_steps is not None and not 1 <= execute_steps <= horizon:
            raise ValueError(f"execute_steps must be in [1, {horizon}] (the model's action horizon), got {execute_steps}")
        self.execute_steps = execute_steps or horizon
        if len(cameras) != config.num_cameras:
            raise ValueError(f"the model reads {config.num_cameras} cameras, {len(cameras)} named: {list(cameras)}")
        action_dims = len(statistics["action"]["mean"])
        if action_dims != config.action_dim:
            raise ValueError(f"the statistics describe {action_dims} action dims, "
                             f"the model predicts {config.action_dim}")
        self.model = model
        self.statistics = statistics
        self.cameras = list(cameras)
        self.crop_scale = crop_scale  # centre crop before resizing, as the model's training data was viewed
        self.camera_frames = None if camera_frames is None else _camera_transforms(camera_frames, self.cameras)
        self.safety = safety or SafetyConfig()
        self._filter: ActionFilter | None = None
        self._queued: list[tuple[np.ndarray, np.ndarray]] = []  # the latest chunk's next (raw actions, entropy)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        safety: SafetyConfig | None = None, int8: bool = False,
                        execute_steps: int | None = None) -> Policy:
        """The policy of a checkpoint bundle (merged weights, its statistics and cameras); `int8`:
        dynamic int8 quantization (`quantize_int8`, CPU only); `execute_steps` as in the constructor."""
        model = load_inference_model(path, device)
        statistics = load_statistics(str(Path(path) / "dataset_statistics.json"))
        return cls(quantize_int8(model) if int8 else model, statistics, checkpoint_cameras(path, statistics), safety,
                   execute_steps=execute_steps, crop_scale=checkpoint_crop_scale(path),
                   camera_frames=checkpoint_camera_frames(path))

    @property
    def action_names(self) -> list[str] | None:
        return self.statistics.get("robolake", {}).get("action_names")

    def reset(self, robot: int | None = None) -> None:
        """Forget one robot's smoothing history, or every robot's (then the next `act` may change the batch
        size). Either way the queued rest of an action chunk is dropped: the next `act` predicts afresh."""
        self._queued = []
        if robot is None:
            self._filter = None
        elif self._filter is not None:
            self._filter.reset(robot)

    def act(self, images: dict[str, np.ndarray], instruction: str | Sequence[str],
            state: np.ndarray | None = None) -> ActionResult:
        """Actions for one robot (`instruction` a str; images camera -> (H, W, 3) uint8 RGB; state (S,)) or
        for B robots (`instruction` B strs; images camera -> (B, H, W, 3); state (B, S)). Frames may have any
        size; cameras beyond the model's are ignored. The state (raw, as recorded) is needed for a model with
        state input and for the workspace box. The result has B rows either way (B = 1 for one robot)."""
        single = isinstance(instruction, str)
        instructions = [instruction] if single else list(instruction)
        frames = self._frames(images, single, len(instructions))
        if state is not None:
            given = np.asarray(state, np.float64)
            state = given[None] if single else given
            if state.ndim != 2 or len(state) != len(instructions):
                expected = "(state dims,)" if single else f"({len(instructions)}, state dims)"
                raise ValueError(f"state must be {expected}, got {given.shape}")
        action_filter = self._action_filter(len(instructions))
        if not self._queued:
            self._queued = self._predict(frames, instructions, state)
        raw, entropy = self._queued.pop(0)
        actions, clipped = action_filter(raw, state)
        return ActionResult(actions, raw, entropy, entropy > self.safety.entropy_threshold, clipped)

    def _predict(self, frames: dict[str, np.ndarray], instructions: list[str],
                 state: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The model's next `execute_steps` actions (B, D) denormalized, each with the mean entropy (B,)."""
        size = self.model.config.image_size
        pixels = torch.stack([eval_frames([self._as_stored(name, frames[name][row]) for name in self.cameras], size,
                                          self.crop_scale) for row in range(len(instructions))])
        model_state = None if state is None else torch.from_numpy(state).float()  # read by a model with state input
        prediction = self.model.predict_actions(pixels, instructions, state=model_state)
        raw = denormalize(prediction["chunk"][:, : self.execute_steps].cpu().numpy(), self.statistics)
        entropy = prediction["entropy"].float().mean(dim=1).cpu().numpy().astype(np.float64)
        return [(raw[:, step], entropy) for step in range(raw.shape[1])]

    def _as_stored(self, camera: str, frame: np.ndarray) -> np.ndarray:
        """A live frame as its camera's training frames were stored (as given without camera_frames)."""
        return frame if self.camera_frames is None else self.camera_frames[camera].as_stored(frame)

    def _frames(self, images: dict[str, np.ndarray], single: bool, robots: int) -> dict[str, np.ndarray]:
        """Each model camera's frames as (robots, H, W, 3) uint8, checked."""
        if robots == 0:
            raise ValueError("no instruction given: pass a str for one robot or one str per robot")
        missing = [name for name in self.cameras if name not in images]
        if missing:
            raise ValueError(f"missing camera images {missing}: the model reads {self.cameras}, got {sorted(images)}")
        frames = {}
        for name in self.cameras:
            frame = np.asarray(images[name])
            frame = frame[None] if single else frame
            if frame.dtype != np.uint8 or frame.ndim != 4 or frame.shape[-1] != 3:
                expected = "(H, W, 3)" if single else "(robots, H, W, 3)"
                raise ValueError(f"camera {name!r}: expected uint8 RGB {expected}, got {frame.dtype} "
                                 f"{np.shape(images[name])}")
            if len(frame) != robots:
                raise ValueError(f"camera {name!r} has {len(frame)} frames for {robots} instructions")
            frames[name] = frame
        return frames

    def _action_filter(self, robots: int) -> ActionFilter:
        if self._filter is None:
            self._filter = ActionFilter(self.safety, robots)
        elif self._filter.batch_size != robots:
            raise ValueError(f"this policy has smoothing histories for {self._filter.batch_size} robots, got "
                             f"{robots}; call reset() before changing the number of robots")
        return self._filter
