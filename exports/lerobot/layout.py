"""LeRobot's codebase v3.0 folder layout (from lerobot 0.4's `lerobot/datasets/utils.py`
and `lerobot_dataset.py`):

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

Data files roll over at 100 MB and video files at 200 MB as LeRobot's writer does (1000
files per chunk)."""

from __future__ import annotations

import pyarrow as pa

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")


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
