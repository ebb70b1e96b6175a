"""LeRobot datasets (codebase v3.0, robolake/lerobot_layout.py) as a conversion source.

- Inputs: `source.paths` name dataset folders (globs allowed), or Hub datasets
  `hf://datasets/ORG/NAME[@REVISION]` (robolake/hf_hub.py resolves each to a commit and
  fetches meta/, data/ and the spec's cameras' videos into its cache); each data Parquet file
  that meta/episodes points to is one input, hashed with meta/info.json,
  meta/tasks.parquet, every meta/episodes shard and the video files its episodes use.
- Episodes: one LeRobot episode is one episode, id `<input id>/episode_<index, 6 digits>`
  (`pusht/data/chunk-000/file-000/episode_000003`). meta/episodes shards are read by
  their whole path (chunk folders may repeat file names); an episode index listed twice
  is an error naming both shards.
- Mapping: cameras are `observation.images.<name>` (or `key`), video or image features;
  the state is `observation.state` (or `state.keys`, concatenated), the action `action`
  (or `action.keys`); rewards `next.reward` where the dataset has it. The instruction is
  `{feature: task}`: the episode's first task in meta/episodes.
- Reading one episode: its rows of the data file (row groups filtered by episode_index),
  then per camera its frames: the images in the rows, or the frames of its time range
  [from_timestamp, to_timestamp) in the shared MP4 (PyAV seeks to the keyframe before it
  and decodes one frame at a time). One episode is in memory at a time.
- Checks, besides those every source has: `frame_count_mismatch` (decoded frames !=
  rows), `timestamp_drift` (a row's timestamp off frame_index / fps by more than half a
  frame), `frame_index_mismatch` (frame_index not 0..T-1), `missing_video`, `bad_shape`
  (a frame, state or action of another shape than info.json or the spec says),
  `bad_image`, `length_mismatch` (rows != the episode's `length`), and per input
  `missing_key` (a mapped feature info.json lacks) and `rate_mismatch` (fps !=
  control_rate_hz).
- LeRobot has no terminal flag: an episode ends truncated unless `source.terminal: last_step`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.episode import (
    Episode,
    EpisodeRef,
    EpisodeRejected,
    QuarantineRecord,
    check_finite,
    check_step_bounds,
    ends_terminal,
    terminal_rewards,
)
from pipelines.images import FramePreprocessor, preprocess_frames
from robolake import hf_hub, progress
from robolake.errors import RobolakeError
from robolake.lerobot_layout import (INFO_PATH, TASKS_PATH, IMAGE_DTYPES, data_file, episode_files, read_info,
                                     read_tasks, video_file, video_keys)
from robolake.lerobot_video import decode_span
from robolake.spec import DatasetSpec, ValueSource

DEFAULT_STATE = "observation.state"
DEFAULT_ACTION = "action"
DEFAULT_REWARD = "next.reward"
CAMERA_PREFIX = "observation.images."
TASK = "task"  # the `feature` of an instruction or metadata value that is the episode's task


@dataclass(frozen=True)
class LerobotFolder:
    """What a dataset folder's meta/ says: info.json, tasks, and each episode's row of
    meta/episodes (its stats/ columns left out) by episode index."""

    root: str
    info: dict
    tasks: dict[int, str]
    episodes: dict[int, dict]

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    def feature(self, key: str) -> dict | None:
        return self.info["features"].get(key)


def load_folder(root: str) -> LerobotFolder:
    """Read a dataset folder's metadata; RobolakeError naming the file and field if unusable."""
    info = read_info(root)
    shards = episode_files(root)
    if not shards:
        raise RobolakeError(f"{root}/meta/episodes: no parquet shard (chunk-*/file-*.parquet)")
    episodes, where = {}, {}
    for shard in shards:
        try:
            schema = pq.read_schema(shard)
            table = pq.read_table(shard, columns=[n for n in schema.names if not n.startswith("stats/")])
        except (OSError, pa.ArrowException) as exc:
            raise RobolakeError(f"{shard}: cannot read the episode rows: {exc}") from None
        for row in table.to_pylist():
            index = row.get("episode_index")
            if index is None:
                raise RobolakeError(f"{shard}: no episode_index column")
            if index in episodes:
                raise RobolakeError(f"meta/episodes: episode_index {index} is in both {where[index]} and {shard}")
            episodes[index], where[index] = row, shard
    return LerobotFolder(root, info, read_tasks(root), episodes)


def dataset_root(path: str) -> str:
    """The dataset folder a data file lies in: the nearest parent with meta/info.json."""
    folder = os.path.dirname(path)
    while not os.path.exists(os.path.join(folder, INFO_PATH)):
        parent = os.path.dirname(folder)
        if parent == folder:
            raise RobolakeError(f"{path}: no meta/info.json in any parent folder")
        folder = parent
    return folder


def _column(table: pa.Table, key: str) -> np.ndarray:
    """A numeric feature's column as (rows, width) float32."""
    column = table.column(key).combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type):
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        return values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)
    return column.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 1)


def _image_shape(feature: dict) -> tuple[int, int, int]:
    """(height, width, channels) of an image or video feature (shape in `names` order)."""
    shape, names = feature["shape"], feature.get("names") or []
    if list(names[:1]) == ["channels"]:
        return shape[1], shape[2], shape[0]
    return tuple(shape)


def _width(feature: dict) -> int:
    return int(np.prod(feature["shape"]))


class LerobotSource:
    """LeRobot dataset folders as the conversion pipeline sees any source. Picklable (the
    spec; folder metadata is read again where needed)."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.cameras = {cam.name: cam.key or f"{CAMERA_PREFIX}{cam.name}" for cam in spec.cameras}
        self.state_keys = spec.state.keys or [DEFAULT_STATE]
        self.action_keys = spec.action.keys or [DEFAULT_ACTION]
        self.texts = {"instruction": spec.instruction, **{f"metadata.{k}": v for k, v in spec.metadata.items()}}
        self._folders: dict[str, LerobotFolder] = {}
        self.remote_datasets: list[dict] = []  # the Hub references `find` resolved (hf_hub.ResolvedDataset.record)
        self._state_problem = ""

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_folders": {}}

    def folder(self, root: str) -> LerobotFolder:
        if root not in self._folders:
            self._folders[root] = load_folder(root)
        return self._folders[root]

    # -- finding and planning ------------------------------------------------------------

    def find(self, pattern: str) -> list[tuple[str, int, float]]:
        """(path, bytes, mtime) of the data files of the dataset folders a glob matches, or of
        the Hub dataset an `hf://datasets/...` reference names (resolved and fetched first)."""
        reference = hf_hub.parse(pattern)
        if reference is not None:
            pattern = self.fetch(reference)
        infos = FileSystems.match([os.path.join(pattern.rstrip("/"), INFO_PATH)])[0].metadata_list
        found = []
        for root in sorted(os.path.dirname(os.path.dirname(m.path)) for m in infos):
            folder = self.folder(root)
            for relative in sorted({data_file(folder.info, row) for row in folder.episodes.values()}):
                path = os.path.join(root, relative)
                if not os.path.exists(path):
                    raise RobolakeError(f"{path}: data file listed in {root}/meta/episodes is missing")
                stat = os.stat(path)
                found.append((path, stat.st_size, stat.st_mtime))
        return found

    def fetch(self, reference: hf_hub.HubReference) -> str:
        """The local snapshot folder of a Hub dataset: meta/, the data files and the videos of
        the spec's cameras only. The commit it resolved to is printed and kept for the manifest."""
        patterns = ["meta/*", "data/*", *(f"videos/{key}/*" for key in self.cameras.values())]
        resolved = hf_hub.resolve(reference, patterns)
        self.remote_datasets.append(resolved.record())
        pinned = "" if reference.pinned else " (unpinned: pin it with @<commit> to rebuild the same bytes)"
        progress.console.print(f"{reference.text}: revision {reference.revision} is commit {resolved.commit}{pinned}")
        return resolved.folder

    def _episodes_in(self, folder: LerobotFolder, path: str) -> list[dict]:
        relative = os.path.relpath(path, folder.root)
        return [row for _, row in sorted(folder.episodes.items()) if data_file(folder.info, row) == relative]

    def companions(self, path: str) -> tuple[str, ...]:
        """meta/info.json, tasks.parquet, the meta/episodes shards and the existing video
        files the input's episodes use."""
        folder = self.folder(dataset_root(path))
        videos = {os.path.join(folder.root, video_file(folder.info, row, key))
                  for row in self._episodes_in(folder, path) for key in video_keys(folder.info)
                  if f"videos/{key}/chunk_index" in row}
        meta = [os.path.join(folder.root, INFO_PATH), os.path.join(folder.root, TASKS_PATH), *episode_files(folder.root)]
        return (*meta, *sorted(v for v in videos if os.path.exists(v)))

    def mapped_problem(self, folder: LerobotFolder) -> tuple[str, str] | None:
        """(reason code, why) where the spec's mapping does not fit the dataset, or None."""
        if abs(folder.fps - self.spec.control_rate_hz) > 1e-6:
            return "rate_mismatch", (f"{folder.root}/{INFO_PATH}: fps {folder.info['fps']}, the spec's "
                                     f"control_rate_hz is {self.spec.control_rate_hz}; set it to the dataset's fps")
        features = folder.info["features"]
        fields = [("state.keys", k) for k in self.state_keys] + [("action.keys", k) for k in self.action_keys]
        fields += [(f"cameras.{name}.key", key) for name, key in self.cameras.items()]
        fields += [("reward.key", self.spec.reward.key)] if self.spec.reward.key else []
        for field, key in fields:
            feature = features.get(key)
            if feature is None:
                return "missing_key", (f"feature {key!r} ({field}) is not in {folder.root}/{INFO_PATH} "
                                       f"(it has {', '.join(sorted(features))})")
            image = feature["dtype"] in IMAGE_DTYPES
            if field.startswith("cameras") != image:
                kind = "an image or video" if field.startswith("cameras") else "a numeric"
                return "missing_key", f"feature {key!r} ({field}) is a {feature['dtype']}, not {kind} feature"
        first_row = next(iter(folder.episodes.values()), {})
        for field, source in self.texts.items():
            if source.feature not in (None, TASK) and source.feature not in first_row:
                return "missing_key", f"{field}.feature {source.feature!r} is not a column of {folder.root}/meta/episodes"
            if source.file_attr is not None and source.file_attr not in folder.info:
                return "missing_key", f"{field}.file_attr {source.file_attr!r} is not a key of {folder.root}/{INFO_PATH}"
        return None

    def plan(self, path: str, relative_id: str, sha256: str) -> Iterator[EpisodeRef | QuarantineRecord]:
        """The episodes of one data file, or a quarantine record where the folder cannot be read."""
        try:
            folder = self.folder(dataset_root(path))
        except RobolakeError as exc:
            yield QuarantineRecord(relative_id, path, sha256, "unreadable_file", str(exc))
            return
        problem = self.mapped_problem(folder)
        if problem:
            yield QuarantineRecord(relative_id, path, sha256, problem[0], f"{path}: {problem[1]}")
            return
        for row in self._episodes_in(folder, path):
            index = row["episode_index"]
            texts = {field: self._text(source, row, folder) for field, source in self.texts.items()}
            metadata = {name.removeprefix("metadata."): value for name, value in texts.items() if name != "instruction"}
            metadata.setdefault("task", texts["instruction"])
            yield EpisodeRef(f"{relative_id}/episode_{index:06d}", path, sha256, str(index), int(row["length"]),
                             texts["instruction"], metadata,
                             window=(int(row["dataset_from_index"]), int(row["dataset_to_index"])))

    @staticmethod
    def _text(source: ValueSource, row: dict, folder: LerobotFolder) -> str:
        if source.value is not None:
            return source.value
        if source.file_attr is not None:
            return str(folder.info[source.file_attr])
        if source.feature == TASK:
            return (row.get("tasks") or [""])[0]
        return str(row[source.feature])

    # -- reading one episode ---------------------------------------------------------------

    def read(self, ref: EpisodeRef, state_dim: int, preprocessors: dict[str, FramePreprocessor]) -> Episode:
        """Decode and check one episode; raises EpisodeRejected with the reason to quarantine it."""
        folder = self.folder(dataset_root(ref.source_path))
        index = int(ref.group)
        row, where = folder.episodes[index], f"{ref.source_path}: episode {index}"
        image_keys = [key for key in self.cameras.values() if folder.feature(key)["dtype"] == "image"]
        reward_key = self.spec.reward.key or (DEFAULT_REWARD if folder.feature(DEFAULT_REWARD) else None)
        columns = list(dict.fromkeys([*self.action_keys, *self.state_keys, "timestamp", "frame_index", *image_keys,
                                      *([reward_key] if reward_key else [])]))
        table = pq.read_table(ref.source_path, columns=columns, filters=[("episode_index", "=", index)])
        num_steps = table.num_rows
        if num_steps != row["length"]:
            raise EpisodeRejected("length_mismatch", f"{where}: {num_steps} rows in the data file, meta/episodes "
                                                     f"says length {row['length']}")
        actions = self._vector(table, self.action_keys, len(self.spec.action.names), "action.names", where)
        state = self._vector(table, self.state_keys, state_dim, "the dataset's state", where)
        rewards = _column(table, reward_key)[:, 0] if reward_key else terminal_rewards(num_steps)
        self._check_times(table, folder.fps, where)
        check_step_bounds(num_steps, self.spec)
        check_finite("action", actions)
        check_finite("state", state)
        check_finite("reward", rewards)
        frames = {}
        for camera, key in self.cameras.items():
            decoded = (self._images(table, key, where) if key in image_keys
                       else self._video(folder, row, key, num_steps, where))
            frames[camera] = preprocess_frames(self._shaped(decoded, folder.feature(key), key, where),
                                               preprocessors[camera])
        timestamps = table.column("timestamp").to_numpy().astype(np.float64)
        return Episode(ref, actions, state, rewards.astype(np.float32), {cam: enc for cam, (enc, _) in frames.items()},
                       {cam: summary for cam, (_, summary) in frames.items()}, timestamps=timestamps - timestamps[0],
                       terminal=ends_terminal(self.spec, False))

    @staticmethod
    def _vector(table: pa.Table, keys: list[str], width: int, says: str, where: str) -> np.ndarray:
        values = np.concatenate([_column(table, key) for key in keys], axis=1)
        if values.shape[1] != width:
            raise EpisodeRejected("bad_shape", f"{where}: {' + '.join(keys)} has {values.shape[1]} dimensions, "
                                               f"{says} has {width}")
        return values

    @staticmethod
    def _check_times(table: pa.Table, fps: float, where: str) -> None:
        """frame_index 0..T-1 and each timestamp within half a frame of frame_index / fps."""
        frame_index = table.column("frame_index").to_numpy()
        if not np.array_equal(frame_index, np.arange(len(frame_index))):
            step = int(np.argmax(frame_index != np.arange(len(frame_index))))
            raise EpisodeRejected("frame_index_mismatch", f"{where}: frame_index at row {step} is "
                                                          f"{frame_index[step]}, not {step}")
        drift = table.column("timestamp").to_numpy().astype(np.float64) - frame_index / fps
        worst = int(np.argmax(np.abs(drift)))
        if len(drift) and abs(drift[worst]) > 0.5 / fps:
            raise EpisodeRejected("timestamp_drift", f"{where}: frame {worst}'s timestamp is {drift[worst]:+.4f} s "
                                                     f"off frame_index / fps ({fps:g} fps), more than half a frame")

    @staticmethod
    def _images(table: pa.Table, key: str, where: str) -> Iterator[np.ndarray]:
        """The frames of an image feature stored in the rows (PNG/JPEG bytes), decoded one at a time."""
        for step, image in enumerate(table.column(key).to_pylist()):
            data = (image or {}).get("bytes") or b""
            frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB) if data else None
            if frame is None:
                raise EpisodeRejected("bad_image", f"{where}, {key} at step {step}: {len(data)} bytes that are "
                                                   f"not an image")
            yield frame

    @staticmethod
    def _video(folder: LerobotFolder, row: dict, key: str, num_steps: int, where: str) -> Iterator[np.ndarray]:
        """The episode's frames of a video feature: its time range of the shared MP4, exactly
        one frame per row."""
        path = os.path.join(folder.root, video_file(folder.info, row, key))
        if not os.path.exists(path):
            raise EpisodeRejected("missing_video", f"{where}: {key} video {path} is missing")
        start, end = row[f"videos/{key}/from_timestamp"], row[f"videos/{key}/to_timestamp"]
        count = 0
        for _, frame in decode_span(path, start, end, folder.fps):
            count += 1
            if count > num_steps:
                break
            yield frame
        if count != num_steps:
            found = f"more than {num_steps}" if count > num_steps else str(count)
            raise EpisodeRejected("frame_count_mismatch", f"{where}: {path} holds {found} frames in "
                                                          f"[{start:.3f}, {end:.3f}) s, the data file {num_steps} rows")

    @staticmethod
    def _shaped(frames: Iterable[np.ndarray], feature: dict, key: str, where: str) -> Iterator[np.ndarray]:
        """Frames as info.json says they are (height, width, channels), else bad_shape."""
        expected = _image_shape(feature)
        for step, frame in enumerate(frames):
            if frame.shape != expected:
                raise EpisodeRejected("bad_shape", f"{where}, {key} at step {step}: a {frame.shape} frame, "
                                                   f"meta/info.json says {expected}")
            yield frame

    # -- the state -------------------------------------------------------------------------

    def state_width(self, path: str) -> int | None:
        """Width of the state from info.json's feature shapes (no row is read), or None."""
        try:
            folder = self.folder(dataset_root(path))
        except RobolakeError as exc:
            self._state_problem = str(exc)
            return None
        missing = [key for key in self.state_keys if folder.feature(key) is None]
        if missing:
            self._state_problem = f"feature {missing[0]!r} is not in {folder.root}/{INFO_PATH}"
            return None
        return sum(_width(folder.feature(key)) for key in self.state_keys)

    def state_layout(self, path: str, state_dim: int) -> list[dict] | None:
        """One part per state dimension, named by the features' `names`, or one part per
        feature where it lists none; None where the widths do not add up to `state_dim`."""
        try:
            folder = self.folder(dataset_root(path))
        except RobolakeError:
            return None
        layout, start = [], 0
        for key in self.state_keys:
            feature = folder.feature(key)
            if feature is None:
                return None
            width, names = _width(feature), feature.get("names")
            names = names.get("motors", names) if isinstance(names, dict) else names  # v2.0's {"motors": [...]}
            if isinstance(names, list) and len(names) == width and all(isinstance(n, str) for n in names):
                layout += [{"name": name, "start": start + i, "end": start + i + 1} for i, name in enumerate(names)]
            else:
                layout.append({"name": key, "start": start, "end": start + width})
            start += width
        return layout if start == state_dim else None

    def state_source(self) -> str:
        return f"state.keys {self.state_keys}" + (f" ({self._state_problem})" if self._state_problem else "")

    def manifest_extras(self) -> dict:
        """The Hub datasets read, each with the commit its reference resolved to."""
        return {"remote_datasets": self.remote_datasets} if self.remote_datasets else {}
