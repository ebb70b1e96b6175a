"""Write a gold RLDS version as a LeRobot v3.0 dataset folder (layout: layout.py).

Actions are the gold steps' `action_raw` (physical units): LeRobot normalizes with
meta/stats.json itself (statistics.py).

Splits: episodes are written train first, then val, test (then any other split, by
name), each in the gold shards' order, so each split is one `start:end` range of
episode indices in info.json; the episode rows carry the gold `episode_id` and `split`.

Images: "video" writes one MP4 per camera and file (OpenCV's FFmpeg: the first of H.264,
AV1, MPEG-4 part 2, VP9 it can encode here; all are decoded by LeRobot's torchcodec /
PyAV readers; lossy). "image" keeps each frame's gold JPEG/PNG bytes in the data Parquet
as a LeRobot `image` feature (lossless: the exact gold bytes). "auto" takes video when a
codec is available and the frame sizes are even, else image.

Streaming: one episode is held in memory at a time; Parquet row groups are one episode.
The export is written beside `out_dir`, validated, and moved into place (robolake/staging.py)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from exports.lerobot.layout import (CHUNKS_SIZE, CODEBASE_VERSION, DATA_FILE_MB, DATA_PATH, EPISODES_PATH,
                                    INDEX_FEATURES, VIDEO_FILE_MB, VIDEO_PATH, arrow_type, next_file)
from exports.lerobot.statistics import TrainStatistics, channel_histogram, episode_statistics
from exports.lerobot.validator import validate_export
from robolake import provenance
from robolake.errors import RobolakeError
from robolake.hashing import sha256_file
from robolake.lake import GoldVersion
from robolake.staging import staged
from schemas.documents import check

# (fourcc, codec name as FFmpeg reports it), preferred first: MPEG-4 part 2 before VP9, which OpenCV
# encodes at libvpx defaults, about 10x slower (sample_tabletop: > 5 min against seconds)
CODECS = (("avc1", "h264"), ("av01", "av1"), ("mp4v", "mpeg4"), ("vp09", "vp9"))
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

    def summary_line(self) -> str:
        images = f"videos ({self.codec})" if self.image_mode == "video" else "images in Parquet"
        ranges = ", ".join(f"{name} {span}" for name, span in self.splits.items())
        return (f"exported {self.dataset}:{self.version} to {self.out_dir} as LeRobot {CODEBASE_VERSION}: "
                f"{self.episodes} episodes, {self.frames} frames, {self.tasks} tasks ({ranges}); {images}; "
                f"actions in physical units; {self.seconds:.1f} s")


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
    gold = GoldVersion.at(gold_dir)
    builder = gold.builder()
    layout = gold.layout(builder)
    fps = _fps_value(gold.spec.control_rate_hz)
    with staged(out_dir) as root:
        os.makedirs(root)
        image_mode, codec = _image_mode(images, layout, root)
        features = _features(layout, gold.spec.action.names, image_mode, codec, fps)
        writer = _write(root, gold, builder, layout, features, fps, image_mode, codec, progress)
        _write_provenance(root, out_dir, gold, started_at, image_mode, codec)
        problems = validate_export(root)
        if problems:
            raise RuntimeError("the export breaks the LeRobot v3.0 layout:\n  " + "\n  ".join(problems))
        if os.path.exists(out_dir) and not overwrite:
            raise RobolakeError(f"{out_dir} appeared while exporting; pass --overwrite to replace it")
    return ExportOutcome(out_dir, gold.dataset, gold.version, writer.episodes, writer.frames, len(writer.tasks),
                         writer.splits, image_mode, codec[1] if codec else None, time.time() - started)


def _fps_value(rate: float) -> float | int:
    return int(rate) if float(rate).is_integer() else float(rate)


# ---------------------------------------------------------------- images

def _image_mode(images: str, layout: dict, workdir: str) -> tuple[str, tuple[str, str] | None]:
    """"video" with the (fourcc, name) of its codec, or "image" with None, for `--images`."""
    codec = _probe_codec(workdir) if images in ("auto", "video") else None
    if images == "video" and codec is None:
        raise RobolakeError(f"OpenCV here encodes none of {', '.join(n for _, n in CODECS)}; use --images image")
    even = all(h % 2 == 0 and w % 2 == 0 for h, w, _ in layout["image_shapes"].values())
    if codec is not None and (images == "video" or even):
        return "video", codec
    return "image", None


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


# ---------------------------------------------------------------- files

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
        """Write an episode's (frames, H, W, 3) RGB frames; its row's videos/<key>/ columns."""
        if self.writer is not None and os.path.getsize(self._path()) >= VIDEO_FILE_MB * 2**20:
            self.close()
            self.chunk, self.file = next_file(self.chunk, self.file)
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
            self.close()
            self.chunk, self.file = next_file(self.chunk, self.file)
        if self.writer is None:
            os.makedirs(os.path.dirname(self._path()), exist_ok=True)
            self.writer = pq.ParquetWriter(self._path(), self.schema, compression="snappy")
        self.writer.write_table(table.cast(self.schema))
        return self.chunk, self.file

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _EpisodeRows:
    """meta/episodes' one file: rows buffered EPISODE_BATCH at a time into a row group."""

    def __init__(self, root: str):
        self.path = os.path.join(root, EPISODES_PATH.format(chunk_index=0, file_index=0))
        self.rows: list[dict] = []
        self.writer = None

    def append(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= EPISODE_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows)
        if self.writer is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="snappy")
        self.writer.write_table(table.cast(self.writer.schema))
        self.rows.clear()

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _column(values, dtype: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_list(dtype):
        flat = pa.array(np.ascontiguousarray(values).reshape(-1), dtype.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, dtype.list_size)
    return pa.array(values, dtype)


# ---------------------------------------------------------------- episodes

def _gold_episodes(gold: GoldVersion, builder, split: str, cameras: list[str]):
    """A split's episodes in the shards' order, one at a time, as numpy (images encoded)."""

    def unpack(episode):
        steps = episode["steps"].batch(episode["steps"].cardinality()).get_single_element()
        return {"images": {name: steps["observation"][name] for name in cameras},
                "state": steps["observation"]["state"], "action_raw": steps["action_raw"],
                "reward": steps["reward"], "is_last": steps["is_last"], "is_terminal": steps["is_terminal"],
                "instruction": steps["language_instruction"], "metadata": episode["episode_metadata"]}

    yield from gold.episodes(split, builder=builder).map(unpack).prefetch(1).as_numpy_iterator()


def _features(layout: dict, action_names: list[str], image_mode: str, codec: tuple[str, str] | None,
              fps: float) -> dict:
    """info.json's features: cameras, state, action, reward, done and the index columns."""
    features = {}
    for camera in layout["cameras"]:
        height, width, channels = layout["image_shapes"][camera]
        feature = {"dtype": image_mode, "shape": [height, width, channels], "names": ["height", "width", "channels"]}
        if image_mode == "video":
            feature["info"] = {
                "video.height": height, "video.width": width, "video.codec": codec[1], "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False, "video.fps": fps, "video.channels": channels, "has_audio": False}
        features[f"observation.images.{camera}"] = feature
    features["observation.state"] = {"dtype": "float32", "shape": [layout["state_dim"]],
                                     "names": [f"state_{i}" for i in range(layout["state_dim"])]}
    action_dim = layout["action_dim"]
    names = action_names if len(action_names) == action_dim else [f"action_{i}" for i in range(action_dim)]
    features["action"] = {"dtype": "float32", "shape": [action_dim], "names": list(names)}
    features["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in INDEX_FEATURES[1:]:
        features[key] = {"dtype": "int64", "shape": [1], "names": None}
    return features


class _Writer:
    """Streams episodes into a LeRobot folder: data rows, videos, episode rows; keeps the
    tasks, train statistics and split ranges (`start:end`, set by `_write`) for meta/."""

    def __init__(self, root: str, layout: dict, features: dict, fps: float, image_mode: str,
                 codec: tuple[str, str] | None):
        self.fps, self.image_mode = fps, image_mode
        self.image_keys = {camera: f"observation.images.{camera}" for camera in layout["cameras"]}
        self.schema = pa.schema([(key, arrow_type(f)) for key, f in features.items() if f["dtype"] != "video"])
        self.data = _RollingParquet(root, DATA_PATH, self.schema, DATA_FILE_MB)
        self.videos = ({camera: _VideoFiles(root, key, codec[0], fps, layout["image_shapes"][camera][:2])
                        for camera, key in self.image_keys.items()} if image_mode == "video" else {})
        self.rows = _EpisodeRows(root)
        self.tasks: dict[str, int] = {}
        self.splits: dict[str, str] = {}
        self.train = TrainStatistics()
        self.episodes = self.frames = 0
        self.robot_type = None

    def add(self, split: str, episode: dict) -> None:
        """Write one gold episode of `split`: its frames, images and episode row."""
        metadata = {k: v.decode() if isinstance(v, bytes) else v for k, v in episode["metadata"].items()}
        self.robot_type = self.robot_type or metadata.get("robot")
        instructions = [text.decode() for text in episode["instruction"]]
        episode_tasks = list(dict.fromkeys(instructions))
        for text in episode_tasks:
            self.tasks.setdefault(text, len(self.tasks))
        length = len(episode["action_raw"])
        columns = self._columns(episode, instructions, length)
        histograms, images, videos = self._images(episode["images"])
        chunk, file = self.data.write(self._table({**columns, **images}))
        if split == "train":
            self.train.add(columns, histograms, length)
        self.rows.append({
            "episode_index": self.episodes, "tasks": episode_tasks, "length": length,
            "data/chunk_index": chunk, "data/file_index": file,
            "dataset_from_index": self.frames, "dataset_to_index": self.frames + length,
            **videos, "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
            "episode_id": metadata.get("episode_id"), "split": split,
            **episode_statistics(columns, histograms, length)})
        self.episodes += 1
        self.frames += length

    def _columns(self, episode: dict, instructions: list[str], length: int) -> dict[str, np.ndarray]:
        """The episode's numeric data columns, by feature."""
        frame_index = np.arange(length, dtype=np.int64)
        return {
            "observation.state": episode["state"].astype(np.float32),
            "action": episode["action_raw"].astype(np.float32),
            "next.reward": episode["reward"].astype(np.float32),
            "next.done": episode["is_last"].astype(bool),
            "timestamp": (frame_index / self.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(length, self.episodes, np.int64),
            "index": np.arange(self.frames, self.frames + length, dtype=np.int64),
            "task_index": np.array([self.tasks[text] for text in instructions], np.int64),
        }

    def _table(self, columns: dict) -> pa.Table:
        return pa.table({name: _column(columns[name], self.schema.field(name).type) for name in self.schema.names})

    def _images(self, encoded: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
        """Each camera's (3, 256) histogram, by feature; the image columns (image mode) or the
        episode row's videos/ columns (video mode), the camera's frames appended to its MP4."""
        histograms, images, videos = {}, {}, {}
        for camera, key in self.image_keys.items():
            frames = np.stack([_decode(bytes(b)) for b in encoded[camera]])
            histograms[key] = channel_histogram(frames)
            if self.image_mode == "video":
                videos.update(self.videos[camera].append(frames))
            else:
                images[key] = [{"bytes": bytes(b), "path": None} for b in encoded[camera]]
        return histograms, images, videos

    def close(self) -> None:
        self.data.close()
        for video in self.videos.values():
            video.close()
        self.rows.close()


# ---------------------------------------------------------------- the folder

def _write(root: str, gold: GoldVersion, builder, layout: dict, features: dict, fps: float, image_mode: str,
           codec: tuple[str, str] | None, progress) -> _Writer:
    """Every episode, split by split, then meta/stats.json, tasks.parquet and info.json."""
    writer = _Writer(root, layout, features, fps, image_mode, codec)
    total = sum(layout["splits"].values())
    try:
        for split in layout["splits"]:
            first = writer.episodes
            for episode in _gold_episodes(gold, builder, split, layout["cameras"]):
                writer.add(split, episode)
                if progress:
                    progress(writer.episodes, total)
            writer.splits[split] = f"{first}:{writer.episodes}"
    finally:
        writer.close()
    if not writer.episodes:
        raise RobolakeError(f"{gold.gold_dir}: the version has no episodes to export")
    _write_json(os.path.join(root, "meta", "stats.json"), writer.train.document(gold.statistics), indent=4)
    _write_tasks(root, writer.tasks)
    _write_json(os.path.join(root, "meta", "info.json"), _info(writer, features, fps, image_mode), indent=4)
    return writer


def _write_tasks(root: str, tasks: dict[str, int]) -> None:
    import pandas as pd

    table = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
    table.to_parquet(os.path.join(root, "meta", "tasks.parquet"))


def _info(writer: _Writer, features: dict, fps: float, image_mode: str) -> dict:
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": writer.robot_type,
        "total_episodes": writer.episodes,
        "total_frames": writer.frames,
        "total_tasks": len(writer.tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_MB,
        "video_files_size_in_mb": VIDEO_FILE_MB,
        "fps": fps,
        "splits": writer.splits,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if image_mode == "video" else None,
        "features": features,
    }


def _write_provenance(root: str, out_dir: str, gold: GoldVersion, started_at: str, image_mode: str,
                      codec: tuple[str, str] | None) -> None:
    """provenance.json in `root` (the staging folder that becomes `out_dir`): `robolake lineage
    <out_dir>` follows it to the gold version and its raw files."""
    manifest = gold.manifest
    inputs = [{"path": path, "sha256": sha256_file(path)} for path in (gold.manifest_path, gold.statistics_path)]
    document = provenance.collect(
        artifact={"kind": "lerobot_export", "path": out_dir, "format": f"LeRobot {CODEBASE_VERSION}",
                  "image_mode": image_mode, "codec": codec[1] if codec else None, "action": "action_raw"},
        dataset={"name": manifest["dataset"], "version": manifest["version"], "fingerprint": manifest["fingerprint"],
                 "gold_dir": gold.gold_dir, "statistics_sha256": manifest.get("statistics_sha256")},
        inputs=inputs, started_at=started_at)
    check(document, "provenance", f"{out_dir}/provenance.json")
    _write_json(os.path.join(root, "provenance.json"), document, indent=2)


def _write_json(path: str, document: dict, indent: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=indent)

