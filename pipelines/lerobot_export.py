"""Gold RLDS version -> LeRobotDataset, codebase v3.0 layout (`robolake lerobot`).

The layout (from lerobot 0.4's `lerobot/datasets/utils.py` and `lerobot_dataset.py`):

    meta/info.json                      codebase_version "v3.0", fps, features, totals, path templates, splits
    meta/stats.json                     per feature: min, max, mean, std, count (+ q01, q50, q99 where known)
    meta/tasks.parquet                  index `task` (the language instruction), column task_index
    meta/episodes/chunk-000/file-000.parquet
                                        one row per episode: episode_index, tasks, length, data/chunk_index,
                                        data/file_index, dataset_from_index, dataset_to_index,
                                        videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp},
                                        meta/episodes/{chunk_index, file_index}, stats/<feature>/<stat>,
                                        and robolake's episode_id and split
    data/chunk-000/file-000.parquet     one row per frame
    videos/observation.images.<camera>/chunk-000/file-000.mp4
                                        the camera's episodes back to back (video mode)
    provenance.json                     robolake's lineage: the gold version it came from

Actions are the gold steps' `action_raw` (physical units): LeRobot normalizes with
meta/stats.json itself. stats.json for `action` and `observation.state` is the
version's dataset_statistics.json (`action`, `proprio`; the train split, as every
statistic in robolake; its `median` becomes q50); images' stats are exact per-channel
histograms of the train split's frames; the other features' are merged quantile sketches
of the train split (quantiles as np.quantile gives them over all frames, not LeRobot's
count-weighted average of per-episode quantiles).

Splits: episodes are written train first, then val, test (then any other split, by
name), each in the gold shards' order, so each split is one `start:end` range of
episode indices in info.json; the episode rows carry the gold `episode_id` and `split`.

Images: "video" writes one MP4 per camera and file (OpenCV's FFmpeg: the first of H.264,
AV1, MPEG-4 part 2, VP9 it can encode here; all are decoded by LeRobot's torchcodec /
PyAV readers; lossy). "image" keeps each frame's gold JPEG/PNG bytes in the data Parquet
as a LeRobot `image` feature (lossless: the exact gold bytes). "auto" takes video when a
codec is available and the frame sizes are even, else image.

Streaming: one episode is held in memory at a time; Parquet row groups are one episode;
data files roll over at 100 MB and video files at 200 MB as LeRobot's writer does (1000
files per chunk). The export is written beside `out_dir` and renamed into place."""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # quiet: probing codecs makes FFmpeg log each one it lacks

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from robolake import provenance  # noqa: E402
from robolake.dataset_ref import resolve  # noqa: E402
from robolake.errors import RobolakeError  # noqa: E402
from robolake.hashing import sha256_file  # noqa: E402
from robolake.lake import Lake  # noqa: E402
from robolake.names import dataset_argument  # noqa: E402
from robolake.progress import console  # noqa: E402
from robolake.spec import parse_spec  # noqa: E402
from robolake.statistics import VectorStats, interpolated_quantile  # noqa: E402
from schemas.documents import check  # noqa: E402

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
SPLIT_ORDER = ("train", "val", "test")
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
# (fourcc, codec name as FFmpeg reports it), preferred first: MPEG-4 part 2 before VP9, which OpenCV
# encodes at libvpx defaults, about 10x slower (sample_tabletop: > 5 min against seconds)
CODECS = (("avc1", "h264"), ("av01", "av1"), ("mp4v", "mpeg4"), ("vp09", "vp9"))
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
EPISODE_BATCH = 1000  # episode rows buffered before a row group of meta/episodes


@dataclass
class ExportOutcome:
    out_dir: str
    dataset: str
    version: str
    episodes: int
    frames: int
    tasks: int
    splits: dict[str, str]
    image_mode: str
    codec: str | None
    seconds: float
    problems: list[str] = field(default_factory=list)

    def summary_line(self) -> str:
        images = f"videos ({self.codec})" if self.image_mode == "video" else "images in Parquet"
        ranges = ", ".join(f"{name} {span}" for name, span in self.splits.items())
        return (f"exported {self.dataset}:{self.version} to {self.out_dir} as LeRobot {CODEBASE_VERSION}: "
                f"{self.episodes} episodes, {self.frames} frames, {self.tasks} tasks ({ranges}); {images}; "
                f"actions in physical units; {self.seconds:.1f} s")


# ---------------------------------------------------------------- statistics

def _vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-feature stats of (frames, dim) values: min, max, mean, std, count, quantiles."""
    values = values.astype(np.float64)
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
             "count": np.array([len(values)])}
    for key, q in QUANTILES.items():
        stats[key] = np.quantile(values, q, axis=0)
    return stats


def _merged_stats(merged: VectorStats) -> dict[str, np.ndarray]:
    """LeRobot's stats of a split from its merged sketch: quantiles as np.quantile over all of
    its frames (within the sketch's bound), not LeRobot's count-weighted average of the
    episodes' quantiles, which is not a quantile of the data."""
    result = merged.result()
    stats = {key: np.asarray(result[key], np.float64) for key in ("min", "max", "mean", "std")}
    stats["count"] = np.array([merged.count])
    for key, q in QUANTILES.items():
        stats[key] = np.array([merged.quantile(d, q) for d in range(merged.dims)])
    return stats


def _histogram_stats(histogram: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel stats in [0, 1], shaped (3, 1, 1) as LeRobot's image stats, from
    (3, 256) counts of uint8 values: exact mean, std, min, max and quantiles (np.quantile's)."""
    levels = np.arange(256) / 255.0
    total = histogram.sum(1)
    mean = histogram @ levels / total
    std = np.sqrt(np.maximum(histogram @ levels**2 / total - mean**2, 0))
    stats = {"min": np.array([levels[np.flatnonzero(h)[0]] for h in histogram]),
             "max": np.array([levels[np.flatnonzero(h)[-1]] for h in histogram]),
             "mean": mean, "std": std}
    for key, q in QUANTILES.items():
        stats[key] = np.array([interpolated_quantile(levels, h, q) for h in histogram])
    stats = {k: v.reshape(3, 1, 1) for k, v in stats.items()}
    stats["count"] = np.array([frames])
    return stats


def _listed(stats: dict[str, np.ndarray]) -> dict:
    return {key: np.asarray(value).tolist() for key, value in stats.items()}


def _from_statistics(entry: dict) -> dict[str, np.ndarray]:
    """A dataset_statistics.json entry (`action`, `proprio`) as LeRobot stats."""
    stats = {key: np.asarray(entry[key], np.float64) for key in ("min", "max", "mean", "std")}
    stats["count"] = np.array([int(entry["count"])])
    for source, key in (("q01", "q01"), ("median", "q50"), ("q99", "q99")):
        if source in entry:
            stats[key] = np.asarray(entry[source], np.float64)
    return stats


# ---------------------------------------------------------------- images

def _probe_codec(workdir: str) -> tuple[str, str] | None:
    """The first of CODECS this OpenCV build encodes into MP4 and reads back, or None."""
    frame = np.zeros((16, 16, 3), np.uint8)
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return _first_codec(workdir, frame)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _first_codec(workdir: str, frame: np.ndarray) -> tuple[str, str] | None:
    for fourcc, name in CODECS:
        path = os.path.join(workdir, f"probe-{fourcc}.mp4")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 10, (16, 16))
        opened = writer.isOpened()
        if opened:
            for _ in range(2):
                writer.write(frame)
        writer.release()
        readable = opened and os.path.exists(path) and cv2.VideoCapture(path).read()[0]
        if os.path.exists(path):
            os.remove(path)
        if readable:
            return fourcc, name
    return None


def _decode(encoded: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise ValueError("undecodable image in the gold records")
    return image


def _channel_histogram(frames: np.ndarray) -> np.ndarray:
    """(3, 256) counts of (frames, H, W, 3) uint8 RGB values."""
    return np.stack([np.bincount(frames[..., c].ravel(), minlength=256) for c in range(3)])


class _VideoFiles:
    """One camera's MP4 files: episodes appended back to back, rolling over at VIDEO_FILE_MB."""

    def __init__(self, root: str, key: str, fourcc: str, fps: float, size: tuple[int, int]):
        self.root, self.key, self.fourcc, self.fps, self.size = root, key, fourcc, fps, size
        self.chunk = self.file = 0
        self.frames_in_file = 0
        self.writer = None

    def _path(self) -> str:
        return os.path.join(self.root, VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk,
                                                         file_index=self.file))

    def append(self, frames: np.ndarray) -> dict:
        if self.writer is not None and os.path.getsize(self._path()) >= VIDEO_FILE_MB * 2**20:
            self.writer.release()
            self.writer = None
            self.chunk, self.file = (self.chunk + 1, 0) if self.file == CHUNKS_SIZE - 1 else (self.chunk, self.file + 1)
            self.frames_in_file = 0
        if self.writer is None:
            os.makedirs(os.path.dirname(self._path()), exist_ok=True)
            height, width = self.size
            self.writer = cv2.VideoWriter(self._path(), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
            if not self.writer.isOpened():
                raise RuntimeError(f"OpenCV could not open a {self.fourcc} writer for {self._path()}")
        for frame in frames:
            self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        start = self.frames_in_file
        self.frames_in_file += len(frames)
        prefix = f"videos/{self.key}/"
        return {prefix + "chunk_index": self.chunk, prefix + "file_index": self.file,
                prefix + "from_timestamp": start / self.fps, prefix + "to_timestamp": self.frames_in_file / self.fps}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


# ---------------------------------------------------------------- data files

class _RollingParquet:
    """Parquet files of a path template, one row group per write, a new file past `limit_mb`."""

    def __init__(self, root: str, template: str, schema: pa.Schema, limit_mb: float):
        self.root, self.template, self.schema, self.limit = root, template, schema, limit_mb * 2**20
        self.chunk = self.file = 0
        self.writer = None

    def _path(self) -> str:
        return os.path.join(self.root, self.template.format(chunk_index=self.chunk, file_index=self.file))

    def write(self, table: pa.Table) -> tuple[int, int]:
        if self.writer is not None and os.path.getsize(self._path()) >= self.limit:
            self.writer.close()
            self.writer = None
            self.chunk, self.file = (self.chunk + 1, 0) if self.file == CHUNKS_SIZE - 1 else (self.chunk, self.file + 1)
        if self.writer is None:
            os.makedirs(os.path.dirname(self._path()), exist_ok=True)
            self.writer = pq.ParquetWriter(self._path(), self.schema, compression="snappy")
        self.writer.write_table(table.cast(self.schema))
        return self.chunk, self.file

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _arrow_type(feature: dict) -> pa.DataType:
    """The Arrow type `datasets` gives a LeRobot feature (get_hf_features_from_features)."""
    if feature["dtype"] == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    value = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}[feature["dtype"]]
    shape = feature["shape"]
    return value if list(shape) == [1] else pa.list_(value, shape[0])


def _column(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_list(dtype):
        flat = pa.array(np.ascontiguousarray(values).reshape(-1), dtype.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, dtype.list_size)
    return pa.array(values, dtype)


# ---------------------------------------------------------------- gold reading

def _gold_episodes(gold_dir: str, split: str, cameras: list[str]):
    """A split's episodes in the shards' order, one at a time, as numpy (images encoded)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(gold_dir)
    decoders = {"steps": {"observation": {name: tfds.decode.SkipDecoding() for name in cameras}}}
    episodes = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)

    def unpack(episode):
        steps = episode["steps"].batch(episode["steps"].cardinality()).get_single_element()
        return {"images": {name: steps["observation"][name] for name in cameras},
                "state": steps["observation"]["state"], "action_raw": steps["action_raw"],
                "reward": steps["reward"], "is_last": steps["is_last"], "is_terminal": steps["is_terminal"],
                "instruction": steps["language_instruction"], "metadata": episode["episode_metadata"]}

    yield from episodes.map(unpack).prefetch(1).as_numpy_iterator()


def _gold_layout(gold_dir: str) -> dict:
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(gold_dir)
    step = builder.info.features["steps"]
    observation = step["observation"]
    cameras = sorted(name for name, f in observation.items() if isinstance(f, tfds.features.Image))
    splits = {name: split.num_examples for name, split in builder.info.splits.items()}
    ordered = [s for s in SPLIT_ORDER if s in splits] + sorted(set(splits) - set(SPLIT_ORDER))
    return {"cameras": cameras, "image_shapes": {c: tuple(observation[c].shape) for c in cameras},
            "state_dim": observation["state"].shape[0], "action_dim": step["action_raw"].shape[0],
            "splits": {name: splits[name] for name in ordered}}


# ---------------------------------------------------------------- export

def _features(layout: dict, action_names: list[str], image_mode: str, fps: float) -> dict:
    features = {}
    for camera in layout["cameras"]:
        height, width, channels = layout["image_shapes"][camera]
        feature = {"dtype": image_mode, "shape": [height, width, channels], "names": ["height", "width", "channels"]}
        features[f"observation.images.{camera}"] = feature
    features["observation.state"] = {"dtype": "float32", "shape": [layout["state_dim"]],
                                     "names": [f"state_{i}" for i in range(layout["state_dim"])]}
    names = action_names if len(action_names) == layout["action_dim"] else [f"action_{i}" for i in range(layout["action_dim"])]
    features["action"] = {"dtype": "float32", "shape": [layout["action_dim"]], "names": list(names)}
    features["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in INDEX_FEATURES[1:]:
        features[key] = {"dtype": "int64", "shape": [1], "names": None}
    return features


def _fps_value(rate: float) -> float | int:
    return int(rate) if float(rate).is_integer() else float(rate)


def export(gold_dir: str, out_dir: str, overwrite: bool = False, images: str = "auto",
           progress=None) -> ExportOutcome:
    """Write the gold version in `gold_dir` to `out_dir` as a LeRobot v3.0 dataset.
    `progress(done, total)` is called after each episode."""
    started, started_at = time.time(), provenance.utc_now()
    if "://" in out_dir:
        raise RobolakeError(f"{out_dir}: LeRobot datasets are local folders; give a local output path")
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise RobolakeError(f"{out_dir} already exists; pass --overwrite to replace it")
    if images not in ("auto", "video", "image"):
        raise RobolakeError(f"--images must be auto, video or image, not {images!r}")
    with open(os.path.join(gold_dir, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    with open(os.path.join(gold_dir, "dataset_statistics.json"), encoding="utf-8") as f:
        statistics = json.load(f)
    spec = parse_spec(manifest["spec"], origin=f"{gold_dir}/manifest.json")
    layout = _gold_layout(gold_dir)
    fps = _fps_value(spec.control_rate_hz)

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(out_dir)}.lerobot-{uuid.uuid4().hex[:12]}")
    os.makedirs(staging)
    try:
        codec = _probe_codec(staging) if images in ("auto", "video") else None
        even = all(h % 2 == 0 and w % 2 == 0 for h, w, _ in layout["image_shapes"].values())
        if images == "video" and codec is None:
            raise RobolakeError(f"OpenCV here encodes none of {', '.join(n for _, n in CODECS)}; use --images image")
        image_mode = "video" if codec is not None and (images == "video" or even) else "image"
        if image_mode == "image":
            codec = None
        features = _features(layout, spec.action.names, image_mode, fps)
        outcome = _write(staging, gold_dir, manifest, statistics, layout, features, fps, image_mode, codec, progress)
        _write_provenance(staging, out_dir, gold_dir, manifest, started_at, image_mode, codec)
        problems = validate_export(staging)
        if problems:
            raise RuntimeError("the export breaks the LeRobot v3.0 layout:\n  " + "\n  ".join(problems))
        if os.path.exists(out_dir):
            if not overwrite:
                raise RobolakeError(f"{out_dir} appeared while exporting; pass --overwrite to replace it")
            old = f"{staging}.old"
            os.replace(out_dir, old)
            os.replace(staging, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportOutcome(out_dir, manifest["dataset"], manifest["version"], outcome["episodes"], outcome["frames"],
                         outcome["tasks"], outcome["splits"], image_mode, codec[1] if codec else None,
                         time.time() - started)


def _write(root: str, gold_dir: str, manifest: dict, statistics: dict, layout: dict, features: dict, fps: float,
           image_mode: str, codec: tuple[str, str] | None, progress) -> dict:
    cameras = layout["cameras"]
    image_keys = {camera: f"observation.images.{camera}" for camera in cameras}
    data_schema = pa.schema([(key, _arrow_type(f)) for key, f in features.items() if f["dtype"] != "video"])
    data = _RollingParquet(root, DATA_PATH, data_schema, DATA_FILE_MB)
    videos = ({camera: _VideoFiles(root, image_keys[camera], codec[0], fps, layout["image_shapes"][camera][:2])
               for camera in cameras} if image_mode == "video" else {})
    episodes_writer = None
    rows: list[dict] = []
    tasks: dict[str, int] = {}
    splits: dict[str, str] = {}
    train_stats: dict[str, VectorStats] = {}
    train_histograms = {camera: np.zeros((3, 256), np.int64) for camera in cameras}
    train_frames = 0
    total = sum(layout["splits"].values())
    episode_index = frame_count = 0
    robot_type = None

    def flush_rows() -> None:
        nonlocal episodes_writer
        if not rows:
            return
        table = pa.Table.from_pylist(rows)
        if episodes_writer is None:
            path = os.path.join(root, EPISODES_PATH.format(chunk_index=0, file_index=0))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            episodes_writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        episodes_writer.write_table(table.cast(episodes_writer.schema))
        rows.clear()

    try:
        for split in layout["splits"]:
            first = episode_index
            for episode in _gold_episodes(gold_dir, split, cameras):
                length = len(episode["action_raw"])
                metadata = {k: v.decode() if isinstance(v, bytes) else v for k, v in episode["metadata"].items()}
                robot_type = robot_type or metadata.get("robot")
                instructions = [text.decode() for text in episode["instruction"]]
                episode_tasks = list(dict.fromkeys(instructions))
                for text in episode_tasks:
                    tasks.setdefault(text, len(tasks))
                frame_index = np.arange(length, dtype=np.int64)
                columns = {
                    "observation.state": episode["state"].astype(np.float32),
                    "action": episode["action_raw"].astype(np.float32),
                    "next.reward": episode["reward"].astype(np.float32),
                    "next.done": episode["is_last"].astype(bool),
                    "timestamp": (frame_index / fps).astype(np.float32),
                    "frame_index": frame_index,
                    "episode_index": np.full(length, episode_index, np.int64),
                    "index": np.arange(frame_count, frame_count + length, dtype=np.int64),
                    "task_index": np.array([tasks[text] for text in instructions], np.int64),
                }
                episode_stats = {key: _vector_stats(values.reshape(length, -1)) for key, values in columns.items()}
                row: dict = {}
                for camera in cameras:
                    encoded = episode["images"][camera]
                    frames = np.stack([_decode(bytes(b)) for b in encoded])
                    histogram = _channel_histogram(frames)
                    episode_stats[image_keys[camera]] = _histogram_stats(histogram, length)
                    if split == "train":
                        train_histograms[camera] += histogram
                    if image_mode == "video":
                        row.update(videos[camera].append(frames))
                    else:
                        columns[image_keys[camera]] = [{"bytes": bytes(b), "path": None} for b in encoded]
                    del frames
                table = pa.table({name: (_column(columns[name], data_schema.field(name).type)
                                         if isinstance(columns[name], np.ndarray)
                                         else pa.array(columns[name], data_schema.field(name).type))
                                  for name in data_schema.names})
                chunk, file = data.write(table)
                if split == "train":
                    train_frames += length
                    for key, values in columns.items():
                        if isinstance(values, np.ndarray):
                            train_stats.setdefault(key, VectorStats(values.reshape(length, -1).shape[1])).add(
                                values.reshape(length, -1))
                row = {"episode_index": episode_index, "tasks": episode_tasks, "length": length,
                       "data/chunk_index": chunk, "data/file_index": file,
                       "dataset_from_index": frame_count, "dataset_to_index": frame_count + length,
                       **row, "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                       "episode_id": metadata.get("episode_id"), "split": split,
                       **{f"stats/{key}/{name}": np.asarray(value).tolist()
                          for key, stats in episode_stats.items() for name, value in stats.items()}}
                rows.append(row)
                if len(rows) >= EPISODE_BATCH:
                    flush_rows()
                episode_index += 1
                frame_count += length
                if progress:
                    progress(episode_index, total)
            splits[split] = f"{first}:{episode_index}"
        flush_rows()
    finally:
        data.close()
        for video in videos.values():
            video.close()
        if episodes_writer is not None:
            episodes_writer.close()
    if not episode_index:
        raise RobolakeError(f"{gold_dir}: the version has no episodes to export")

    # meta/stats.json: the dataset's statistics for action and state; the rest from the train split
    stats = {key: _merged_stats(merged) for key, merged in train_stats.items()}
    for camera in cameras:
        if train_frames:
            stats[image_keys[camera]] = _histogram_stats(train_histograms[camera], train_frames)
    for key, source in (("action", "action"), ("observation.state", "proprio")):
        if source in statistics:
            stats[key] = _from_statistics(statistics[source])
    with open(os.path.join(root, "meta", "stats.json"), "w", encoding="utf-8") as f:
        json.dump({key: _listed(value) for key, value in stats.items()}, f, indent=4)

    import pandas as pd

    table = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
    table.to_parquet(os.path.join(root, "meta", "tasks.parquet"))

    if image_mode == "video":
        for camera in cameras:
            height, width, channels = layout["image_shapes"][camera]
            features[image_keys[camera]]["info"] = {
                "video.height": height, "video.width": width, "video.codec": codec[1], "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False, "video.fps": fps, "video.channels": channels, "has_audio": False}
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": episode_index,
        "total_frames": frame_count,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_MB,
        "video_files_size_in_mb": VIDEO_FILE_MB,
        "fps": fps,
        "splits": splits,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if image_mode == "video" else None,
        "features": features,
    }
    with open(os.path.join(root, "meta", "info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=4)
    return {"episodes": episode_index, "frames": frame_count, "tasks": len(tasks), "splits": splits}


def _write_provenance(root: str, out_dir: str, gold_dir: str, manifest: dict, started_at: str, image_mode: str,
                      codec: tuple[str, str] | None) -> None:
    """provenance.json in `root` (the staging folder that becomes `out_dir`): `robolake lineage
    <out_dir>` follows it to the gold version and its raw files."""
    inputs = [{"path": os.path.join(gold_dir, name), "sha256": sha256_file(os.path.join(gold_dir, name))}
              for name in ("manifest.json", "dataset_statistics.json")]
    document = provenance.collect(
        artifact={"kind": "lerobot_export", "path": out_dir, "format": f"LeRobot {CODEBASE_VERSION}",
                  "image_mode": image_mode, "codec": codec[1] if codec else None, "action": "action_raw"},
        dataset={"name": manifest["dataset"], "version": manifest["version"], "fingerprint": manifest["fingerprint"],
                 "gold_dir": gold_dir, "statistics_sha256": manifest.get("statistics_sha256")},
        inputs=inputs, started_at=started_at)
    check(document, "provenance", f"{out_dir}/provenance.json")
    with open(os.path.join(root, "provenance.json"), "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)


# ---------------------------------------------------------------- validator

INFO_KEYS = ("codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
             "fps", "splits", "data_path", "video_path", "features")
EPISODE_COLUMNS = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                   "dataset_from_index", "dataset_to_index", "meta/episodes/chunk_index", "meta/episodes/file_index")
STAT_KEYS = ("min", "max", "mean", "std", "count")


def validate_export(root: str) -> list[str]:
    """Problems with a LeRobot v3.0 dataset folder, checked against what LeRobotDataset
    reads: info.json keys and features, tasks, episode rows, data rows and index columns,
    video files and timestamps, stats shapes, split ranges. [] when it is consistent."""
    problems: list[str] = []
    try:
        with open(os.path.join(root, "meta", "info.json"), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        return [f"meta/info.json: {exc}"]
    problems += [f"meta/info.json: no {key}" for key in INFO_KEYS if key not in info]
    if problems:
        return problems
    if info["codebase_version"] != CODEBASE_VERSION:
        problems.append(f"meta/info.json: codebase_version {info['codebase_version']!r}, not {CODEBASE_VERSION!r}")
    features = info["features"]
    for key in INDEX_FEATURES:
        if key not in features:
            problems.append(f"meta/info.json: feature {key} missing")
    for key, feature in features.items():
        if "/" in key or not {"dtype", "shape", "names"} <= set(feature):
            problems.append(f"meta/info.json: feature {key}: bad name or no dtype/shape/names")
        elif feature["dtype"] in ("image", "video") and len(feature["shape"]) != 3:
            problems.append(f"meta/info.json: feature {key}: image shape {feature['shape']} is not (h, w, c)")
    video_keys = [k for k, f in features.items() if f.get("dtype") == "video"]
    if video_keys and not info["video_path"]:
        problems.append("meta/info.json: video features but no video_path")
    fps, total_frames, total_episodes = info["fps"], info["total_frames"], info["total_episodes"]

    # tasks
    try:
        tasks = pq.read_table(os.path.join(root, "meta", "tasks.parquet"))
        task_names = tasks.column("task").to_pylist()
        task_index = tasks.column("task_index").to_pylist()
        if sorted(task_index) != list(range(len(task_index))) or len(set(task_names)) != len(task_names):
            problems.append("meta/tasks.parquet: task_index is not 0..n-1 over distinct tasks")
        if len(task_names) != info["total_tasks"]:
            problems.append(f"meta/tasks.parquet: {len(task_names)} tasks, info.json says {info['total_tasks']}")
        tasks_by_index = dict(zip(task_index, task_names))
    except (OSError, KeyError, pa.ArrowException) as exc:
        return problems + [f"meta/tasks.parquet: {exc}"]

    # episodes
    episode_files = sorted(glob.glob(os.path.join(root, "meta", "episodes", "*", "*.parquet")))
    if not episode_files:
        return problems + ["meta/episodes: no parquet file"]
    episodes = pa.concat_tables([pq.read_table(p) for p in episode_files]).to_pylist()
    required = list(EPISODE_COLUMNS) + [f"videos/{k}/{c}" for k in video_keys
                                        for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    missing = [c for c in required if c not in (episodes[0] if episodes else {})]
    if missing:
        return problems + [f"meta/episodes: columns missing: {missing}"]
    if [e["episode_index"] for e in episodes] != list(range(total_episodes)):
        problems.append(f"meta/episodes: episode_index is not 0..{total_episodes - 1} in order")
    expected_from = 0
    for e in episodes:
        where = f"meta/episodes: episode {e['episode_index']}"
        if e["dataset_from_index"] != expected_from or e["dataset_to_index"] - e["dataset_from_index"] != e["length"]:
            problems.append(f"{where}: dataset_from/to_index not contiguous or not matching length {e['length']}")
        expected_from = e["dataset_to_index"]
        if not set(e["tasks"]) <= set(task_names):
            problems.append(f"{where}: tasks {e['tasks']} not in meta/tasks.parquet")
        if not os.path.exists(os.path.join(root, info["data_path"].format(chunk_index=e["data/chunk_index"],
                                                                         file_index=e["data/file_index"]))):
            problems.append(f"{where}: its data file is missing")
        for key in video_keys:
            prefix = f"videos/{key}/"
            path = os.path.join(root, info["video_path"].format(
                video_key=key, chunk_index=e[prefix + "chunk_index"], file_index=e[prefix + "file_index"]))
            span = e[prefix + "to_timestamp"] - e[prefix + "from_timestamp"]
            if not os.path.exists(path):
                problems.append(f"{where}: video {path} is missing")
            elif abs(span - e["length"] / fps) > 1e-6:
                problems.append(f"{where}: {key} spans {span} s for {e['length']} frames at {fps} fps")
    if expected_from != total_frames:
        problems.append(f"meta/episodes: frames add up to {expected_from}, info.json says {total_frames}")
    for key in video_keys:  # each video file holds at least the frames its episodes point into
        ends: dict[str, float] = {}
        for e in episodes:
            path = info["video_path"].format(video_key=key, chunk_index=e[f"videos/{key}/chunk_index"],
                                             file_index=e[f"videos/{key}/file_index"])
            ends[path] = max(ends.get(path, 0.0), e[f"videos/{key}/to_timestamp"])
        for path, end in ends.items():
            capture = cv2.VideoCapture(os.path.join(root, path))
            frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            capture.release()
            if frames < round(end * fps):
                problems.append(f"{path}: {frames} frames, episodes need {round(end * fps)}")

    # splits
    spans = sorted(tuple(int(x) for x in span.split(":")) for span in info["splits"].values())
    if not spans or spans[0][0] != 0 or spans[-1][1] != total_episodes or any(
            a[1] != b[0] for a, b in zip(spans, spans[1:])):
        problems.append(f"meta/info.json: splits {info['splits']} do not cover 0:{total_episodes} contiguously")

    # data rows
    columns = [k for k, f in features.items() if f["dtype"] != "video"]
    bounds = {e["episode_index"]: (e["dataset_from_index"], e["length"]) for e in episodes}
    rows = 0
    for path in sorted(glob.glob(os.path.join(root, "data", "*", "*.parquet"))):
        name = os.path.relpath(path, root)
        schema = pq.read_schema(path)
        if sorted(schema.names) != sorted(columns):
            problems.append(f"{name}: columns {sorted(schema.names)}, features say {sorted(columns)}")
            continue
        for key in columns:
            if schema.field(key).type != _arrow_type(features[key]):
                problems.append(f"{name}: {key} is {schema.field(key).type}, not {_arrow_type(features[key])}")
        table = pq.read_table(path, columns=list(INDEX_FEATURES))
        rows += table.num_rows
        episode = table.column("episode_index").to_numpy()
        index = table.column("index").to_numpy()
        frame = table.column("frame_index").to_numpy()
        for ep in np.unique(episode):
            start, length = bounds.get(int(ep), (None, None))
            mine = episode == ep
            if start is None or not np.array_equal(index[mine], np.arange(start, start + length)):
                problems.append(f"{name}: episode {ep}: index is not dataset_from..to_index")
            elif not np.array_equal(frame[mine], np.arange(length)):
                problems.append(f"{name}: episode {ep}: frame_index is not 0..length-1")
        if np.abs(table.column("timestamp").to_numpy() - frame / fps).max(initial=0) > 1e-4:
            problems.append(f"{name}: timestamp is not frame_index / fps")
        if not set(np.unique(table.column("task_index").to_numpy()).tolist()) <= set(tasks_by_index):
            problems.append(f"{name}: task_index outside meta/tasks.parquet")
    if rows != total_frames:
        problems.append(f"data: {rows} rows, info.json says total_frames {total_frames}")

    # stats
    try:
        with open(os.path.join(root, "meta", "stats.json"), encoding="utf-8") as f:
            stats = json.load(f)
    except (OSError, ValueError) as exc:
        return problems + [f"meta/stats.json: {exc}"]
    for key, feature in features.items():
        if key not in stats or not set(STAT_KEYS) <= set(stats[key]):
            problems.append(f"meta/stats.json: {key} lacks {list(STAT_KEYS)}")
            continue
        for stat, value in stats[key].items():
            shape = np.shape(value)
            want = (1,) if stat == "count" else (3, 1, 1) if feature["dtype"] in ("image", "video") else tuple(
                feature["shape"])
            if shape != want:
                problems.append(f"meta/stats.json: {key}/{stat} has shape {shape}, not {want}")
    return problems


# ---------------------------------------------------------------- CLI

def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="robolake lerobot", description="export a gold dataset version as a "
                                     "LeRobotDataset (codebase v3.0): Parquet frames, MP4 videos, meta/")
    parser.add_argument("dataset", type=dataset_argument, help="NAME[:VERSION] (default: the latest published version)")
    parser.add_argument("out_dir", help="folder to create: LeRobotDataset(repo_id, root=OUT_DIR) loads it")
    parser.add_argument("--lake", default="lake")
    parser.add_argument("--overwrite", action="store_true", help="replace out_dir if it exists")
    parser.add_argument("--images", choices=("auto", "video", "image"), default="auto",
                        help="video: MP4 per camera (lossy); image: the gold JPEG/PNG bytes in Parquet; "
                             "auto: video where OpenCV can encode it")
    args = parser.parse_args(argv)
    target = resolve(Lake(args.lake), args.dataset)
    if os.path.exists(args.out_dir) and not args.overwrite:
        raise RobolakeError(f"{args.out_dir} already exists; pass --overwrite to replace it")
    with Progress(TextColumn(f"lerobot {target.dataset}:{target.version}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("episodes"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("export", total=None)
        outcome = export(target.gold_dir, args.out_dir, overwrite=args.overwrite, images=args.images,
                         progress=lambda done, total: bar.update(task, completed=done, total=total))
    print(outcome.summary_line())
    return 0
