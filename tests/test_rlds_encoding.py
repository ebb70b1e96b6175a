"""robolake's column-wise episode encoding serializes to exactly what TFDS's own
step-by-step `FeaturesDict.encode_example` gives."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.episode import Episode, EpisodeRef
from pipelines.images import FramePreprocessor
from pipelines.rlds_writer import EpisodeSerializer, encoded_episode
from pipelines.silver_writer import steps_table
from robolake.spec import parse_spec
from schemas.rlds import RESOLUTION_CHANGE, TRUNCATED, metadata_fields, rlds_features
from schemas.tables import steps_schema
from tests.helpers import robomimic_spec


def _tfds_example(steps: pa.Table, metadata: dict, cameras: list[str]) -> dict:
    """The per-step nested dict of the public RLDS builder template."""
    rows = steps.to_pylist()
    return {
        "steps": [
            {
                "observation": {**{c: row[f"image_{c}"] for c in cameras}, "state": np.array(row["state"], np.float32)},
                "action": np.array(row["action"], np.float32),
                "action_raw": np.array(row["action_raw"], np.float32),
                **{k: row[k] for k in ("reward", "discount", "is_first", "is_last", "is_terminal")},
                "language_instruction": row["language_instruction"],
            }
            for row in rows
        ],
        "episode_metadata": metadata,
    }


def test_columnwise_encoding_matches_tfds(tmp_path):
    spec = parse_spec(robomimic_spec(tmp_path))
    rng = np.random.default_rng(0)
    steps = 7
    images = {
        cam.name: [FramePreprocessor(cam).encode(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(steps)]
        for cam in spec.cameras
    }
    metadata = {**{field: f"value of {field}" for field in metadata_fields(spec)}, TRUNCATED: True,
                RESOLUTION_CHANGE: "camera front changes resolution at step 3: 40x50 -> 80x100"}
    ref = EpisodeRef("f/data/demo_1", "f.hdf5", "0" * 64, "data/demo_1", steps, "pick up the cube", {"task": "pick"})
    episode = Episode(
        ref,
        rng.normal(size=(steps, 7)).astype(np.float32),
        rng.normal(size=(steps, 9)).astype(np.float32),
        np.eye(1, steps, steps - 1, dtype=np.float32).reshape(-1),
        images,
        cameras={},  # pixel summaries go to the episodes table, not the steps
    )
    table = steps_table(episode, spec, steps_schema(spec, 9))
    features = rlds_features(spec, state_dim=9)
    serializer = EpisodeSerializer(features)
    ours = serializer.serialize(encoded_episode(table, metadata, spec))
    theirs = serializer.serialize(features.encode_example(_tfds_example(table, metadata, [c.name for c in spec.cameras])))
    assert ours == theirs
    decoded = features.deserialize_example_np(ours)
    np.testing.assert_array_equal(np.stack([s["action"] for s in decoded["steps"]]), episode.actions)


def test_tfrecord_framing_matches_tensorflow(tmp_path):
    import tensorflow as tf

    from pipelines.tfrecord import write_tfrecord

    records = [b"", b"episode", bytes(range(256)) * 1000]
    ours = tmp_path / "ours.tfrecord"
    assert write_tfrecord(str(ours), records) == (3, ours.stat().st_size)
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    assert ours.read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
