"""LeRobot's codebase v3.0 folder layout, for both the `robolake lerobot` export and the
`source.format: lerobot` reader (from lerobot 0.4's `lerobot/datasets/utils.py` and
`lerobot_dataset.py`):

    meta/info.json                      codebase_version "v3.0", fps, features, totals, path templates, splits
    meta/stats.json                     per feature: min, max, mean, std, count (+ q01, q50, q99 where known)
    meta/tasks.parquet                  index `task` (the language instruction), column task_index
    meta/episodes/chunk-000/file-000.parquet
                                        one row per episode: episode_index, tasks, length, data/chunk_index,
                                        data/file_index, dataset_from_index, dataset_to_index,
                                        videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp},
                                        meta/episodes/{chunk_index, file_index}, stats/<feature>/<stat>,
                                        and (robolake's exports) episode_id and split
    data/chunk-000/file-000.parquet     one row per frame
    videos/observation.images.<camera>/chunk-000/file-000.mp4
                                        the camera's episodes back to back (video mode)

Data files roll over at 100 MB and video files at 200 MB as LeRobot's writer does (1000
files per chunk). Shards of meta/episodes in different chunk folders may share a file
name: they are told apart by their whole path."""

from __future__ import annotations

import glob
import json
import os

import pyarrow as pa

from robolake.errors import RobolakeError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
INFO_PATH = "meta/info.json"
TASKS_PATH = "meta/tasks.parquet"
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
INFO_KEYS = ("codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
             "fps", "splits", "data_path", "video_path", "features")
EPISODE_COLUMNS = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                   "dataset_from_index", "dataset_to_index", "meta/episodes/chunk_index", "meta/episodes/file_index")
VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
IMAGE_DTYPES = ("image", "video")


def next_file(chunk: int, file: int) -> tuple[int, int]:
    """The (chunk, file) index after a full file: a new chunk every CHUNKS_SIZE files."""
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def arrow_type(feature: dict) -> pa.DataType:
    """The Arrow type `datasets` gives a LeRobot feature (get_hf_features_from_features)."""
    if feature["dtype"] == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    value = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}[feature["dtype"]]
    shape = feature["shape"]
    return value if list(shape) == [1] else pa.list_(value, shape[0])


def video_keys(info: dict) -> list[str]:
    """The features stored as MP4 files."""
    return [key for key, feature in info["features"].items() if feature.get("dtype") == "video"]


def video_file(info: dict, episode: dict, key: str) -> str:
    """The video file (relative to the root) holding `key`'s frames of an episode row."""
    return info["video_path"].format(video_key=key, chunk_index=episode[f"videos/{key}/chunk_index"],
                                     file_index=episode[f"videos/{key}/file_index"])


def data_file(info: dict, episode: dict) -> str:
    """The data Parquet file (relative to the root) holding an episode row's frames."""
    return info["data_path"].format(chunk_index=episode["data/chunk_index"], file_index=episode["data/file_index"])


def read_info(root: str) -> dict:
    """meta/info.json of the dataset folder `root`, with the keys a v3.0 reader needs;
    RobolakeError naming the file and the field otherwise."""
    path = os.path.join(root, INFO_PATH)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        raise RobolakeError(f"{path}: cannot read the LeRobot dataset info: {exc}") from None
    missing = [key for key in ("codebase_version", "fps", "features", "data_path") if key not in info]
    if missing:
        raise RobolakeError(f"{path}: no {', '.join(missing)} (not a LeRobot dataset's info.json)")
    if info["codebase_version"] != CODEBASE_VERSION:
        raise RobolakeError(f"{path}: codebase_version {info['codebase_version']!r}; robolake reads "
                            f"{CODEBASE_VERSION!r} (LeRobot's convert_dataset_v21_to_v30 upgrades older ones)")
    if video_keys(info) and not info.get("video_path"):
        raise RobolakeError(f"{path}: features {video_keys(info)} are videos but video_path is not set")
    return info


def episode_files(root: str) -> list[str]:
    """Every meta/episodes shard, by its whole path (chunk folders may repeat file names)."""
    return sorted(glob.glob(os.path.join(root, "meta", "episodes", "*", "*.parquet")))


def read_tasks(root: str) -> dict[int, str]:
    """meta/tasks.parquet as task_index -> task. The task is the pandas index, named `task`
    (robolake) or not (LeRobot writes `__index_level_0__`), or a column."""
    import pandas as pd

    path = os.path.join(root, TASKS_PATH)
    try:
        table = pd.read_parquet(path)
        texts = table["task"] if "task" in table.columns else table.index
        return {int(index): str(text) for index, text in zip(table["task_index"], texts)}
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise RobolakeError(f"{path}: cannot read the tasks (task, task_index): {exc}") from None
