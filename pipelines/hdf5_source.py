"""HDF5 demonstrations: robomimic, robosuite (raw), ALOHA/ACT and generic layouts.

A layout only supplies defaults (where episodes are inside a file, which datasets
hold actions, state, cameras, rewards); every key can be set in the spec. An episode
ends in a terminal state where its `dones` dataset marks the last step. Files are
read one episode at a time and camera frames a few at a time, so a file's images
are never all in memory."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass

import h5py
import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipelines.episode import (
    Episode,
    EpisodeRef,
    EpisodeRejected,
    QuarantineRecord,
    check_finite,
    check_length,
    check_step_bounds,
    ends_terminal,
    read_failure,
    terminal_rewards,
)
from pipelines.images import FramePreprocessor, preprocess_frames
from pipelines.state_layout import layout_of_parts
from pipelines.stats import CameraSummary
from robolake.camera_frames import decode
from robolake.errors import SpecError
from robolake.spec import DatasetSpec, ValueSource
from robolake.spec.fields import StateSpec
from robolake.storage import is_remote

FRAMES_PER_READ = 16
ROOT_EPISODE = "/"
DONES_KEY = "dones"  # per-step done flags in the episode's group (robomimic writes them; any layout may)


@dataclass(frozen=True)
class Layout:
    episodes: str
    action_keys: list[str] | None
    state_keys: list[str] | None
    camera_key: str | None  # template with {name}
    reward_key: str | None


LAYOUTS = {
    "robomimic": Layout(
        episodes="data/demo_*",
        action_keys=["actions"],
        state_keys=["obs/robot0_eef_pos", "obs/robot0_eef_quat", "obs/robot0_gripper_qpos"],
        camera_key="obs/{name}_image",
        reward_key="rewards",
    ),
    "robosuite": Layout(
        episodes="data/demo_*", action_keys=["actions"], state_keys=["states"], camera_key=None, reward_key=None
    ),
    "aloha": Layout(
        episodes=ROOT_EPISODE,
        action_keys=["action"],
        state_keys=["observations/qpos"],
        camera_key="observations/images/{name}",
        reward_key=None,
    ),
    "generic": Layout(episodes=ROOT_EPISODE, action_keys=None, state_keys=None, camera_key=None, reward_key=None),
}


@dataclass(frozen=True)
class SourceKeys:
    """The HDF5 paths of one dataset, layout defaults filled in from the spec."""

    episodes: str
    action_keys: list[str]
    state_keys: list[str]
    camera_keys: dict[str, str]
    reward_key: str | None


def resolve_keys(spec: DatasetSpec) -> SourceKeys:
    layout = LAYOUTS[spec.source.layout]
    where = f"for layout {spec.source.layout!r}"
    action_keys = spec.action.keys or layout.action_keys
    state_keys = spec.state.keys or layout.state_keys
    if not action_keys:
        raise SpecError(f"action.keys: required {where} (the datasets holding the actions)")
    if not state_keys:
        raise SpecError(f"state.keys: required {where} (the datasets holding the robot state)")
    camera_keys = {}
    for i, cam in enumerate(spec.cameras):
        if cam.key is None and layout.camera_key is None:
            raise SpecError(f"cameras.{i}.key: required {where} (the dataset holding camera {cam.name!r})")
        camera_keys[cam.name] = cam.key or layout.camera_key.format(name=cam.name)
    return SourceKeys(
        episodes=spec.source.episodes or layout.episodes,
        action_keys=list(action_keys),
        state_keys=list(state_keys),
        camera_keys=camera_keys,
        reward_key=spec.reward.key or layout.reward_key,
    )


def open_hdf5(path: str) -> h5py.File:
    """Open a local path directly, anything else (gs://, s3://) as a file object."""
    if not is_remote(path):
        return h5py.File(path, "r")
    return h5py.File(FileSystems.open(path, compression_type="uncompressed"), "r")


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def episode_groups(h5: h5py.File, pattern: str) -> list[str]:
    """Paths of the groups matching a '/'-separated glob, in natural order (demo_2 < demo_10)."""
    if pattern.strip("/") == "":
        return [ROOT_EPISODE]
    groups = [""]
    for part in pattern.strip("/").split("/"):
        matched = []
        for parent in groups:
            node = h5[parent] if parent else h5
            if isinstance(node, h5py.Group):
                matched += [f"{parent}/{k}".lstrip("/") for k in node if fnmatch.fnmatchcase(k, part)]
        groups = matched
    return sorted((g for g in groups if isinstance(h5[g], h5py.Group)), key=_natural_key)


def _node(h5: h5py.File, group: str) -> h5py.Group:
    return h5 if group == ROOT_EPISODE else h5[group]


def read_text(h5: h5py.File, group: str, source: ValueSource, field: str) -> str:
    """A text value from the spec, a file attribute or an episode attribute."""
    if source.value is not None:
        return source.value
    base, path = (h5, source.file_attr) if source.file_attr is not None else (_node(h5, group), source.episode_attr)
    holder_path, _, attr = path.rpartition("/")
    try:
        holder = base[holder_path] if holder_path else base
        value = holder.attrs[attr]
    except KeyError:
        kind = "file" if source.file_attr is not None else "episode"
        raise EpisodeRejected("missing_key", f"{field}: {kind} attribute {path!r} not found") from None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    return str(value)


def plan_file(
    path: str, relative_id: str, sha256: str, spec: DatasetSpec, keys: SourceKeys
) -> Iterator[EpisodeRef | QuarantineRecord]:
    """Every episode of one file as an EpisodeRef (split unset), or a quarantine
    record when the file or the episode's text attributes cannot be read."""
    try:
        h5 = open_hdf5(path)
    except (OSError, ValueError) as exc:
        yield QuarantineRecord(relative_id, path, sha256, "unreadable_file", f"cannot open as HDF5: {exc}")
        return
    with h5:
        try:
            groups = episode_groups(h5, keys.episodes)
        except (OSError, KeyError, ValueError) as exc:
            yield QuarantineRecord(relative_id, path, sha256, "unreadable_file", f"cannot list episodes: {exc}")
            return
        if not groups:
            yield QuarantineRecord(
                relative_id, path, sha256, "missing_key", f"no episode group matches {keys.episodes!r}"
            )
        for group in groups:
            episode_id = relative_id if group == ROOT_EPISODE else f"{relative_id}/{group}"
            try:
                instruction = read_text(h5, group, spec.instruction, "instruction")
                metadata = {name: read_text(h5, group, src, f"metadata.{name}") for name, src in spec.metadata.items()}
                action = _node(h5, group).get(keys.action_keys[0])
                num_steps = len(action) if isinstance(action, h5py.Dataset) else 0
            except EpisodeRejected as exc:
                yield QuarantineRecord(episode_id, path, sha256, exc.code, exc.reason)
                continue
            except Exception as exc:  # one episode's attributes, whatever fails: that episode is quarantined
                yield read_failure(episode_id, path, sha256, exc)
                continue
            metadata.setdefault("task", instruction)
            yield EpisodeRef(episode_id, path, sha256, group, num_steps, instruction, metadata)


def _dataset(node: h5py.Group, key: str) -> h5py.Dataset:
    item = node.get(key)
    if not isinstance(item, h5py.Dataset):
        raise EpisodeRejected("missing_key", f"dataset {key!r} not found")
    return item


def _vectors(node: h5py.Group, keys_: list[str], name: str, num_steps: int | None = None) -> np.ndarray:
    """Datasets of shape (T,) or (T, k) concatenated into a (T, sum k) float32 array;
    every one must have `num_steps` rows (default: as many as the first)."""
    parts = []
    for key in keys_:
        data = _dataset(node, key)[()]
        if data.ndim == 1:
            data = data[:, None]
        if data.ndim != 2:
            raise EpisodeRejected("bad_shape", f"{name} dataset {key!r} has shape {data.shape}, expected (T,) or (T, k)")
        num_steps = len(data) if num_steps is None else num_steps
        check_length(f"{name} dataset {key!r}", len(data), num_steps)
        parts.append(data.astype(np.float32))
    return np.concatenate(parts, axis=1)


def _source_frames(dataset: h5py.Dataset, key: str) -> Iterator[np.ndarray]:
    """A camera dataset's frames, a few at a time: raw uint8 (T, H, W, 3), or each step's image file
    (JPEG, PNG) as bytes: variable-length uint8 (T,), or uint8 (T, N) zero-padded (ALOHA's compressed
    images). Encoded frames are decoded to their channels in RGB order."""
    vlen_bytes = dataset.ndim == 1 and h5py.check_vlen_dtype(dataset.dtype) == np.uint8
    encoded = vlen_bytes or (dataset.ndim == 2 and dataset.dtype == np.uint8)
    if not encoded and (dataset.ndim != 4 or dataset.shape[-1] != 3 or dataset.dtype != np.uint8):
        raise EpisodeRejected("bad_shape", f"camera dataset {key!r} is {dataset.dtype} {dataset.shape}, expected "
                                           "uint8 (T, H, W, 3) or encoded images (T,) / (T, N)")
    for start in range(0, len(dataset), FRAMES_PER_READ):
        for step, frame in enumerate(dataset[start : start + FRAMES_PER_READ], start):
            if encoded:
                data = np.asarray(frame).tobytes()
                frame = decode(data) if data.strip(b"\0") else None
                if frame is None:
                    raise EpisodeRejected("bad_shape", f"camera dataset {key!r}: step {step} is not a JPEG or PNG image")
            yield frame


def _frames(dataset: h5py.Dataset, key: str, preprocessor: FramePreprocessor) -> tuple[list[bytes], CameraSummary]:
    return preprocess_frames(_source_frames(dataset, key), preprocessor)


def _ends_done(node: h5py.Group, num_steps: int) -> bool:
    """Whether the episode's `dones` dataset marks its last step done (False without one)."""
    dones = node.get(DONES_KEY)
    if not isinstance(dones, h5py.Dataset):
        return False
    values = dones[()].reshape(-1)
    check_length(f"dones ({DONES_KEY})", len(values), num_steps)
    return bool(values[-1])


def read_episode(
    h5: h5py.File,
    ref: EpisodeRef,
    spec: DatasetSpec,
    keys: SourceKeys,
    state_dim: int,
    preprocessors: dict[str, FramePreprocessor],
) -> Episode:
    """Decode and check one episode; raises EpisodeRejected with the reason to quarantine it."""
    node = _node(h5, ref.group)
    actions = _vectors(node, keys.action_keys, "action")
    num_steps = len(actions)
    if actions.shape[1] != len(spec.action.names):
        raise EpisodeRejected(
            "bad_shape",
            f"actions have {actions.shape[1]} dimensions but action.names lists {len(spec.action.names)}",
        )
    state = _vectors(node, keys.state_keys, "state", num_steps)
    if state.shape[1] != state_dim:
        raise EpisodeRejected("bad_shape", f"state has {state.shape[1]} dimensions, the dataset has {state_dim}")
    for cam, key in keys.camera_keys.items():
        check_length(f"camera {cam!r} ({key})", len(_dataset(node, key)), num_steps)
    if keys.reward_key:
        rewards = _dataset(node, keys.reward_key)[()].astype(np.float32).reshape(-1)
        check_length(f"rewards ({keys.reward_key})", len(rewards), num_steps)
    else:
        rewards = terminal_rewards(num_steps)
    check_step_bounds(num_steps, spec)
    check_finite("action", actions)
    check_finite("state", state)
    check_finite("reward", rewards)
    terminal = ends_terminal(spec, _ends_done(node, num_steps))
    frames = {cam: _frames(_dataset(node, key), key, preprocessors[cam]) for cam, key in keys.camera_keys.items()}
    images = {cam: encoded for cam, (encoded, _) in frames.items()}
    return Episode(ref, actions, state, rewards, images, {cam: summary for cam, (_, summary) in frames.items()},
                   terminal=terminal)


def state_width(path: str, spec: DatasetSpec, keys: SourceKeys) -> int | None:
    """Width of the state vector in the first readable episode of a file, or None."""
    try:
        with open_hdf5(path) as h5:
            for group in episode_groups(h5, keys.episodes):
                node = _node(h5, group)
                try:
                    shapes = [_dataset(node, key).shape for key in keys.state_keys]
                    return sum(int(np.prod(shape[1:])) for shape in shapes)  # (T,) has width 1
                except EpisodeRejected:
                    continue
    except (OSError, ValueError, KeyError):
        return None
    return None


class Hdf5Source:
    """HDF5 files as the conversion pipeline sees any source: plan a file's episodes,
    read one episode, tell the state width. Picklable (spec and resolved keys only)."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.keys = resolve_keys(spec)

    def find(self, pattern: str) -> list[tuple[str, int, float]]:
        """(path, bytes, mtime) of the files a glob matches, local or remote."""
        return [(m.path, m.size_in_bytes, m.last_updated_in_seconds)
                for m in FileSystems.match([pattern])[0].metadata_list]

    def companions(self, path: str) -> tuple[str, ...]:
        return ()

    def plan(self, path: str, relative_id: str, sha256: str) -> Iterator[EpisodeRef | QuarantineRecord]:
        return plan_file(path, relative_id, sha256, self.spec, self.keys)

    def read(self, ref: EpisodeRef, state_dim: int, preprocessors: dict[str, FramePreprocessor]) -> Episode:
        with open_hdf5(ref.source_path) as h5:
            return read_episode(h5, ref, self.spec, self.keys, state_dim, preprocessors)

    def state_width(self, path: str) -> int | None:
        return state_width(path, self.spec, self.keys)

    def state_layout(self, path: str, state_dim: int) -> list[dict] | None:
        """One part per state dataset (pipelines/state_layout.py)."""
        parts = [(key, StateSpec(keys=[key])) for key in resolve_keys(self.spec).state_keys]
        return layout_of_parts(Hdf5Source, self.spec, parts, path, state_dim)

    def state_source(self) -> str:
        return f"state.keys {self.keys.state_keys}"

    def manifest_extras(self) -> dict:
        return {}
