"""Gold RLDS: TFDS examples encoded from silver Parquet, written as TFRecord shards,
then TFDS metadata (dataset_info.json, features.json) so that
`tfds.builder_from_directory` and `tfds.builder(name, data_dir=...)` read them."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer, naming

from pipelines.silver_writer import vectors
from robolake.spec import DatasetSpec
from robolake.storage import copy_file, is_remote, join, list_files, open_read
from schemas.rlds import EPISODE_FLAGS, metadata_fields

FILE_FORMAT = "tfrecord"
TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


def shard_filename(dataset: str, split: str, index: int, num_shards: int) -> str:
    return f"{dataset}-{split}.{FILE_FORMAT}-{index:05d}-of-{num_shards:05d}"


def encoded_episode(steps: pa.Table, metadata: dict[str, str | bool], spec: DatasetSpec) -> dict:
    """One RLDS episode in the form TFDS's `FeaturesDict.encode_example` returns,
    built column-wise from its silver rows (TFDS encodes step by step in Python,
    which costs more than the rest of the gold write). A test checks that the
    serialized bytes equal TFDS's own encoding."""
    text = lambda column: [s.encode() for s in steps.column(column).to_pylist()]  # noqa: E731
    return {
        "steps": {
            "observation": {
                **{cam.name: steps.column(f"image_{cam.name}").to_pylist() for cam in spec.cameras},
                "state": vectors(steps, "state"),
            },
            "action": vectors(steps, "action"),
            "action_raw": vectors(steps, "action_raw"),
            **{c: steps.column(c).to_numpy() for c in ("reward", "discount", "is_first", "is_last", "is_terminal")},
            "language_instruction": text("language_instruction"),
        },
        "episode_metadata": {key: value.encode() if isinstance(value, str) else value
                             for key, value in metadata.items()},
    }


class EpisodeSerializer:
    """Serializes encoded episodes into deterministic tf.train.Example bytes."""

    def __init__(self, features: tfds.features.FeaturesDict):
        self.serializer = example_serializer.ExampleSerializer(features.get_serialized_info())

    def serialize(self, encoded: dict) -> bytes:
        return self.serializer.get_tf_example(encoded).SerializeToString(deterministic=True)


def silver_episodes(
    steps_path: str, episodes_path: str, spec: DatasetSpec, curate: Callable[[pa.Table], pa.Table | None]
) -> Iterator[dict]:
    """Encoded episodes of one silver shard, one row group (episode) at a time, each
    passed through `curate` first (which returns None to leave an episode out)."""
    with open_read(episodes_path) as f:
        episodes = pq.read_table(f)
    fields = [*metadata_fields(spec), *EPISODE_FLAGS]
    rows = {row["episode_id"]: {k: row[k] for k in fields} for row in episodes.to_pylist()}
    with open_read(steps_path) as f:
        steps_file = pq.ParquetFile(f)
        for group in range(steps_file.num_row_groups):
            steps = steps_file.read_row_group(group)
            episode_id = steps.column("episode_id")[0].as_py()
            curated = curate(steps)
            if curated is not None:
                yield encoded_episode(curated, rows[episode_id], spec)


def write_dataset_info(
    gold_dir: str,
    spec: DatasetSpec,
    features: tfds.features.FeaturesDict,
    shard_lengths: dict[str, list[int]],
    split_bytes: dict[str, int],
) -> None:
    """dataset_info.json and features.json for the shards already in gold_dir. TFDS
    writes no object store here: for a remote gold_dir they are written in a local
    folder holding empty stand-ins of the shards (TFDS reads their names), then uploaded."""
    if is_remote(gold_dir):
        local = tempfile.mkdtemp(prefix="robolake-metadata-")
        try:
            shards = {path.rsplit("/", 1)[-1] for path in list_files(join(gold_dir, "*"))}
            for name in shards:
                open(os.path.join(local, name), "wb").close()
            write_dataset_info(local, spec, features, shard_lengths, split_bytes)
            for name in sorted(set(os.listdir(local)) - shards):
                copy_file(os.path.join(local, name), join(gold_dir, name))
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return
    template = naming.ShardedFileTemplate(
        data_dir=gold_dir, template=TEMPLATE, dataset_name=spec.name, filetype_suffix=FILE_FORMAT
    )
    split_infos = [
        tfds.core.SplitInfo(
            name=split,
            shard_lengths=lengths,
            num_bytes=split_bytes[split],
            filename_template=template.replace(split=split),
        )
        for split, lengths in sorted(shard_lengths.items())
    ]
    tfds.folder_dataset.write_metadata(
        data_dir=gold_dir,
        features=features,
        split_infos=split_infos,
        version=spec.version,
        filename_template=template,
        check_data=False,
        description=spec.description or f"{spec.name}: RLDS episodes converted by robolake",
    )
