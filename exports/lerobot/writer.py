"""Write a gold RLDS version as a LeRobot v3.0 dataset folder (layout: layout.py).

Actions are the gold steps' `action_raw` (physical units): LeRobot normalizes with
meta/stats.json itself (statistics.py).

Splits: episodes are written train first, then val, test (then any other split, by
name), each in the gold shards' order, so each split is one `start:end` range of
episode indices in info.json; the episode rows carry the gold `episode_id` and `split`.

Images: "video" writes one MP4 per camera and file, encoded as LeRobot encodes its own
(video.py: AV1, else H.264; lossy, the mean and max error of the decoded frames against
the gold ones are measured and reported). "image" keeps each frame's gold JPEG/PNG bytes
in the data Parquet as a LeRobot `image` feature (lossless: the exact gold bytes). "auto"
takes video when PyAV has an encoder and the frame sizes are even, else image.

`modality=True` also writes GR00T's meta/modality.json (modality.py).

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

from exports.lerobot.modality import modality_document
from exports.lerobot.statistics import TrainStatistics, channel_histogram, episode_statistics
from exports.lerobot.validator import validate_export
from exports.lerobot.video import VideoFiles
from robolake import provenance
from robolake.errors import RobolakeError
from robolake.hashing import sha256_file
from robolake.lerobot_layout import (CHUNKS_SIZE, CODEBASE_VERSION, DATA_FILE_MB, DATA_PATH, EPISODES_PATH,
                                     INDEX_FEATURES, VIDEO_FILE_MB, VIDEO_PATH, arrow_type, next_file)
from robolake.lerobot_video import ENCODERS, PIX_FMT, available_encoder, video_info
from robolake.lake import Build, GoldVersion
from robolake.overwrite import artifact_kind, check_replace
from robolake.staging import staged
from robolake.storage import is_remote
from schemas.documents import check

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
    codec: str | None  # the videos' codec (av1, h264); None in image mode
    encoder: str | None
    pixel_error: dict[str, dict]  # camera -> mean and max |decoded video - gold frame|; {} in image mode
    modality: dict | None  # meta/modality.json, where written
    seconds: float

    def summary_line(self) -> str:
        ranges = ", ".join(f"{name} {span}" for name, span in self.splits.items())
        extra = ""
        if self.modality is not None:
            parts = ", ".join(f"{name} {r['start']}:{r['end']}" for name, r in self.modality["state"].items())
            extra = f"; meta/modality.json (state: {parts})"
        return (f"exported {self.dataset}:{self.version} to {self.out_dir} as LeRobot {CODEBASE_VERSION}: "
                f"{self.episodes} episodes, {self.frames} frames, {self.tasks} tasks ({ranges}); {self._images()}; "
                f"actions in physical units{extra}; {self.seconds:.1f} s")

    def _images(self) -> str:
        if self.image_mode != "video":
            return "images in Parquet"
        options = ENCODERS[self.encoder]
        errors = ", ".join(f"{camera} mean {e['mean']:.2f} max {e['max']}" for camera, e in self.pixel_error.items())
        return (f"videos ({self.codec} by {self.encoder}, crf {options['crf']}, GOP {options['g']}; "
                f"error vs the gold frames: {errors})")


def export(gold_dir: str, out_dir: str, overwrite: bool = False, images: str = "auto", modality: bool = False,
           progress=None) -> ExportOutcome:
    """Write the gold version in `gold_dir` to `out_dir` as a LeRobot v3.0 dataset (with
    GR00T's meta/modality.json if `modality`). `progress(done, total)` is called after each episode."""
    started, started_at = time.time(), provenance.utc_now()
    if is_remote(out_dir):
        raise RobolakeError(f"{out_dir}: LeRobot datasets are local folders; give a local output path")
    out_dir = os.path.abspath(out_dir)
    _check_out_dir(out_dir, gold_dir, overwrite)
    if images not in ("auto", "video", "image"):
        raise RobolakeError(f"--images must be auto, video or image, not {images!r}")
    gold = GoldVersion.at(gold_dir)
    builder = gold.builder()
    layout = gold.layout(builder)
    fps = _fps_value(gold.spec.control_rate_hz)
    image_mode, encoder = _image_mode(images, layout)
    with staged(out_dir) as root:
        os.makedirs(root)
        features = _features(layout, gold.spec.action.names, image_mode)
        writer = _write(root, gold, builder, layout, features, fps, encoder, progress)
        document = modality_document(gold, features, layout["cameras"]) if modality else None
        if document is not None:
            _write_json(os.path.join(root, "meta", "modality.json"), document, indent=4)
        _write_provenance(root, out_dir, gold, started_at, features, writer)
        problems = validate_export(root)
        if problems:
            raise RuntimeError("the export breaks the LeRobot v3.0 layout:\n  " + "\n  ".join(problems))
        _check_out_dir(out_dir, gold_dir, overwrite)  # again: it may have appeared while exporting
    return ExportOutcome(out_dir, gold.dataset, gold.version, writer.episodes, writer.frames, len(writer.tasks),
                         writer.splits, image_mode, _video_codec(features), encoder, writer.pixel_error(), document,
                         time.time() - started)


def _check_out_dir(out_dir: str, gold_dir: str, overwrite: bool) -> None:
    """`out_dir` may be written: never the lake or a folder in it, and replaced only when it
    is an earlier export (robolake/overwrite.py)."""
    build = Build.of_gold(gold_dir)
    lake = {"the lake": build.lake_root} if build else {}
    check_replace(out_dir, "a LeRobot export", overwrite, _is_export,
                  keep={**lake, "the gold version": gold_dir}, keep_out=lake)


def _is_export(folder: str) -> bool:
    """An export this writer wrote: meta/info.json and a provenance.json of kind lerobot_export."""
    return os.path.isfile(os.path.join(folder, "meta", "info.json")) and artifact_kind(folder) == "lerobot_export"


def _fps_value(rate: float) -> float | int:
    return int(rate) if float(rate).is_integer() else float(rate)


# ---------------------------------------------------------------- images

def _image_mode(images: str, layout: dict) -> tuple[str, str | None]:
    """"video" with its encoder, or "image" with None, for `--images`: "auto" takes video
    where PyAV has an encoder and every frame size is even, as yuv420p needs."""
    if images == "image":
        return "image", None
    encoder = available_encoder()
    odd = [camera for camera, (h, w, _) in layout["image_shapes"].items() if h % 2 or w % 2]
    if images == "auto":
        return ("video", encoder) if encoder and not odd else ("image", None)
    if encoder is None:
        raise RobolakeError(f"PyAV here has none of the encoders {', '.join(ENCODERS)}; use --images image")
    if odd:
        raise RobolakeError(f"cameras {', '.join(odd)}: {PIX_FMT} video needs even frame sizes; use --images image")
    return "video", encoder


def _decode(encoded: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise ValueError("undecodable image in the gold records")
    return image


# ---------------------------------------------------------------- files

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


def _features(layout: dict, action_names: list[str], image_mode: str) -> dict:
    """info.json's features: cameras, state, action, reward, done and the index columns
    (a video feature's `info` is added once its files are written: _add_video_info)."""
    features = {}
    for camera in layout["cameras"]:
        features[f"observation.images.{camera}"] = {"dtype": image_mode, "shape": list(layout["image_shapes"][camera]),
                                                    "names": ["height", "width", "channels"]}
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

    def __init__(self, root: str, layout: dict, features: dict, fps: float, encoder: str | None):
        self.fps, self.encoder = fps, encoder
        self.image_keys = {camera: f"observation.images.{camera}" for camera in layout["cameras"]}
        self.schema = pa.schema([(key, arrow_type(f)) for key, f in features.items() if f["dtype"] != "video"])
        self.data = _RollingParquet(root, DATA_PATH, self.schema, DATA_FILE_MB)
        self.videos = ({camera: VideoFiles(root, key, encoder, fps) for camera, key in self.image_keys.items()}
                       if encoder else {})
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
            if self.videos:
                videos.update(self.videos[camera].append(frames))
            else:
                images[key] = [{"bytes": bytes(b), "path": None} for b in encoded[camera]]
        return histograms, images, videos

    def pixel_error(self) -> dict[str, dict]:
        """Each camera's mean and max error of its decoded video frames against the gold frames."""
        return {camera: video.error.summary() for camera, video in self.videos.items()}

    def close(self) -> None:
        self.data.close()
        for video in self.videos.values():
            video.close()
        self.rows.close()


# ---------------------------------------------------------------- the folder

def _write(root: str, gold: GoldVersion, builder, layout: dict, features: dict, fps: float, encoder: str | None,
           progress) -> _Writer:
    """Every episode, split by split (videos by `encoder`; None: images in Parquet), then
    meta/stats.json, tasks.parquet and info.json."""
    writer = _Writer(root, layout, features, fps, encoder)
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
    _add_video_info(root, writer, features)
    _write_json(os.path.join(root, "meta", "info.json"), _info(writer, features, fps), indent=4)
    return writer


def _add_video_info(root: str, writer: _Writer, features: dict) -> None:
    """Each video feature's `info`: its stream as its first file says (codec, pix_fmt, size,
    fps, as LeRobot reads them) and robolake's measured error against the gold frames."""
    errors = writer.pixel_error()
    for camera, key in writer.image_keys.items():
        if features[key]["dtype"] == "video":
            info = video_info(os.path.join(root, VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)))
            features[key]["info"] = {**info, "robolake.pixel_error": errors[camera]}


def _video_codec(features: dict) -> str | None:
    """The videos' codec as their files say (av1, h264); None in image mode."""
    return next((f["info"]["video.codec"] for f in features.values() if f["dtype"] == "video"), None)


def _write_tasks(root: str, tasks: dict[str, int]) -> None:
    import pandas as pd

    table = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
    table.to_parquet(os.path.join(root, "meta", "tasks.parquet"))


def _info(writer: _Writer, features: dict, fps: float) -> dict:
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
        "video_path": VIDEO_PATH if writer.videos else None,
        "features": features,
    }


def _write_provenance(root: str, out_dir: str, gold: GoldVersion, started_at: str, features: dict,
                      writer: _Writer) -> None:
    """provenance.json in `root` (the staging folder that becomes `out_dir`): `robolake lineage
    <out_dir>` follows it to the gold version and its raw files; it records how the videos
    were encoded and their error against the gold frames."""
    manifest = gold.manifest
    inputs = [{"path": path, "sha256": sha256_file(path)} for path in (gold.manifest_path, gold.statistics_path)]
    videos = ({"encoder": writer.encoder, "options": ENCODERS[writer.encoder], "pix_fmt": PIX_FMT,
               "pixel_error": writer.pixel_error()} if writer.encoder else None)
    document = provenance.collect(
        artifact={"kind": "lerobot_export", "path": out_dir, "format": f"LeRobot {CODEBASE_VERSION}",
                  "image_mode": "video" if writer.encoder else "image", "codec": _video_codec(features),
                  "videos": videos, "action": "action_raw"},
        dataset={"name": manifest["dataset"], "version": manifest["version"], "fingerprint": manifest["fingerprint"],
                 "gold_dir": gold.gold_dir, "statistics_sha256": manifest.get("statistics_sha256")},
        inputs=inputs, started_at=started_at)
    check(document, "provenance", f"{out_dir}/provenance.json")
    _write_json(os.path.join(root, "provenance.json"), document, indent=2)


def _write_json(path: str, document: dict, indent: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=indent)

