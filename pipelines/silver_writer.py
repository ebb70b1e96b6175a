"""Silver Parquet tables: one steps file and one episodes file per shard, one row
group per episode (so readers can stream an episode at a time)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.episode import Episode, EpisodeRef
from pipelines.stats import CameraSummary
from robolake.spec import DatasetSpec
from robolake.storage import join, makedirs, open_write
from schemas.rlds import RESOLUTION_CHANGE, TRUNCATED, metadata_fields
from schemas.tables import episodes_schema, steps_schema


def part_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def partition_dir(table_root: str, split: str) -> str:
    return join(table_root, f"split={split}")


def vectors(table: pa.Table, column: str) -> np.ndarray:
    """A fixed-size list column as a (rows, width) array (the inverse of fixed_list)."""
    values = table.column(column).combine_chunks()
    return values.flatten().to_numpy().reshape(len(values), -1)


def fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), values.shape[1])


def steps_table(episode: Episode, spec: DatasetSpec, schema: pa.Schema) -> pa.Table:
    n = episode.num_steps
    index = np.arange(n, dtype=np.int32)
    last = index == n - 1
    columns = {
        "episode_id": pa.array([episode.ref.episode_id] * n, pa.string()),
        "step_index": pa.array(index),
        "timestamp": pa.array(episode.timestamps if episode.timestamps is not None else index / spec.control_rate_hz,
                              pa.float64()),
        "is_first": pa.array(index == 0),
        "is_last": pa.array(last),
        "is_terminal": pa.array(last & episode.terminal),
        "reward": pa.array(episode.rewards, pa.float32()),
        "discount": pa.array(np.ones(n, np.float32)),
        "action": fixed_list(episode.actions),
        "action_raw": fixed_list(episode.actions),
        "state": fixed_list(episode.state),
        "language_instruction": pa.array([episode.ref.instruction] * n, pa.string()),
    }
    for cam, frames in episode.images.items():
        columns[f"image_{cam}"] = pa.array(frames, pa.binary())
    return pa.Table.from_pydict(columns, schema=schema)


class EpisodeRow(NamedTuple):
    """What the episodes table keeps of an episode (no arrays, no images)."""

    ref: EpisodeRef
    num_steps: int
    cameras: dict[str, CameraSummary]
    dropped_ticks: int
    truncated: bool
    resolution_change: str


def episode_row(episode: Episode) -> EpisodeRow:
    return EpisodeRow(episode.ref, episode.num_steps, episode.cameras, sum(episode.dropped_ticks.values()),
                      not episode.terminal, episode.resolution_change)


def episodes_table(rows: list[EpisodeRow], spec: DatasetSpec) -> pa.Table:
    """One row per written episode: metadata, length, ticks dropped in alignment, the
    episode flags (schemas/rlds.py) and camera pixel statistics."""
    refs = [row.ref for row in rows]
    columns = {
        "episode_id": [r.episode_id for r in refs],
        "num_steps": [row.num_steps for row in rows],
        "dropped_ticks": [row.dropped_ticks for row in rows],
        TRUNCATED: [row.truncated for row in rows],
        RESOLUTION_CHANGE: [row.resolution_change for row in rows],
        "language_instruction": [r.instruction for r in refs],
        "source_path": [r.source_path for r in refs],
        "source_sha256": [r.source_sha256 for r in refs],
    }
    for name in metadata_fields(spec)[3:]:
        columns[name] = [r.metadata[name] for r in refs]
    for cam in spec.cameras:
        summaries = [row.cameras[cam.name].row() for row in rows]
        for key in ("mean", "std", "brightness", "contrast"):
            columns[f"camera_{cam.name}_{key}"] = [summary[key] for summary in summaries]
    return pa.Table.from_pydict(columns, schema=episodes_schema(spec))


class ShardStepsWriter:
    """Appends one decoded episode at a time (a row group each) to a silver shard's steps file."""

    def __init__(self, path: str, spec: DatasetSpec, state_dim: int):
        makedirs(path.rsplit("/", 1)[0])
        self.spec = spec
        self.schema = steps_schema(spec, state_dim)
        self._file = open_write(path)
        # Images are already JPEG/PNG: compressing them again, dictionary-encoding them or
        # keeping min/max statistics of them costs time (reads 2-3x slower) and saves nothing.
        images = [name for name in self.schema.names if name.startswith("image_")]
        others = [name for name in self.schema.names if name not in images]
        self._writer = pq.ParquetWriter(
            self._file,
            self.schema,
            compression={name: ("none" if name in images else "zstd") for name in self.schema.names},
            use_dictionary=others,
            write_statistics=others,
        )

    def write(self, episode: Episode) -> None:
        self._writer.write_table(steps_table(episode, self.spec, self.schema), row_group_size=1 << 30)

    def close(self) -> None:
        self._writer.close()
        self._file.close()
