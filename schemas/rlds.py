"""The RLDS feature spec (TFDS FeaturesDict) built from a dataset spec."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from robolake.spec import DatasetSpec

RLDS_SCHEMA_VERSION = "1.1.0"
EPISODE_METADATA_FIXED = ("episode_id", "source_path", "source_sha256", "task")
# Facts about how an episode was recorded, kept beside its text metadata (episode_metadata
# and the silver episodes table): no terminal state at its end, a camera's size changing.
TRUNCATED = "truncated"
RESOLUTION_CHANGE = "resolution_change"
EPISODE_FLAGS = (TRUNCATED, RESOLUTION_CHANGE)


def metadata_fields(spec: DatasetSpec) -> list[str]:
    """episode_metadata text fields, in a fixed order: the fixed ones, then the spec's."""
    return list(EPISODE_METADATA_FIXED) + sorted(f for f in spec.metadata if f != "task")


def rlds_features(spec: DatasetSpec, state_dim: int) -> tfds.features.FeaturesDict:
    action_dim = len(spec.action.names)
    observation = {
        cam.name: tfds.features.Image(
            shape=(*cam.size, 3), dtype=np.uint8, encoding_format=cam.encoding, doc=f"camera {cam.name}, RGB"
        )
        for cam in spec.cameras
    }
    observation["state"] = tfds.features.Tensor(shape=(state_dim,), dtype=np.float32, doc="robot state")
    step = {
        "observation": tfds.features.FeaturesDict(observation),
        "action": tfds.features.Tensor(
            shape=(action_dim,), dtype=np.float32, doc=f"action, dimensions {spec.action.names}"
        ),
        "action_raw": tfds.features.Tensor(
            shape=(action_dim,), dtype=np.float32, doc="action in source units, after filtering"
        ),
        "reward": tfds.features.Scalar(dtype=np.float32),
        "discount": tfds.features.Scalar(dtype=np.float32),
        "is_first": tfds.features.Scalar(dtype=np.bool_),
        "is_last": tfds.features.Scalar(dtype=np.bool_),
        "is_terminal": tfds.features.Scalar(dtype=np.bool_),
        "language_instruction": tfds.features.Text(),
    }
    return tfds.features.FeaturesDict(
        {
            "steps": tfds.features.Dataset(step),
            "episode_metadata": tfds.features.FeaturesDict({
                **{field: tfds.features.Text() for field in metadata_fields(spec)},
                TRUNCATED: tfds.features.Scalar(
                    dtype=np.bool_, doc="the episode ends without a terminal state (no step is_terminal)"
                ),
                RESOLUTION_CHANGE: tfds.features.Text(
                    doc="rosbag, source.on_resolution_change: flag: the camera whose frame size changed, "
                    "at which step, from and to (empty if none did)"
                ),
            }),
        }
    )
