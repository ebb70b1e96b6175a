"""Arrow schemas of the lake tables (raw manifest, silver episodes and steps, quarantine).

Each schema carries its table name and schema version in the Arrow metadata, so a
reader can tell what it opened."""

from __future__ import annotations

import pyarrow as pa

from robolake.spec import DatasetSpec
from schemas.rlds import RESOLUTION_CHANGE, TRUNCATED, metadata_fields

SILVER_SCHEMA_VERSION = "1.4.0"
QUARANTINE_SCHEMA_VERSION = "1.0.0"
RAW_MANIFEST_SCHEMA_VERSION = "1.0.0"


def _tagged(fields: list[pa.Field], table: str, version: str) -> pa.Schema:
    return pa.schema(fields, metadata={"robolake.table": table, "robolake.schema_version": version})


def episodes_schema(spec: DatasetSpec) -> pa.Schema:
    """One row per written episode; the hive partitions add `version` and `split`."""
    fields = [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("num_steps", pa.int32(), nullable=False),
        pa.field("dropped_ticks", pa.int32(), nullable=False),  # control ticks dropped as stale (rosbag)
        pa.field(TRUNCATED, pa.bool_(), nullable=False),  # ends without a terminal state (schemas/rlds.py)
        pa.field(RESOLUTION_CHANGE, pa.string(), nullable=False),  # a camera's size changed (rosbag, flagged)
        pa.field("language_instruction", pa.string(), nullable=False),
    ]
    fields += [pa.field(name, pa.string(), nullable=False) for name in metadata_fields(spec)[1:]]
    for cam in spec.cameras:  # pixel statistics of the stored (resized) frames, [0, 1] scale
        fields += [
            pa.field(f"camera_{cam.name}_mean", pa.list_(pa.float64(), 3), nullable=False),
            pa.field(f"camera_{cam.name}_std", pa.list_(pa.float64(), 3), nullable=False),
            pa.field(f"camera_{cam.name}_brightness", pa.float64(), nullable=False),
            pa.field(f"camera_{cam.name}_contrast", pa.float64(), nullable=False),
        ]
    return _tagged(fields, "episodes", SILVER_SCHEMA_VERSION)


def steps_schema(spec: DatasetSpec, state_dim: int) -> pa.Schema:
    """One row per step; images as the encoded bytes that gold RLDS stores."""
    action = pa.list_(pa.float32(), len(spec.action.names))
    fields = [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("step_index", pa.int32(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("is_first", pa.bool_(), nullable=False),
        pa.field("is_last", pa.bool_(), nullable=False),
        pa.field("is_terminal", pa.bool_(), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("discount", pa.float32(), nullable=False),
        pa.field("action", action, nullable=False),
        pa.field("action_raw", action, nullable=False),
        pa.field("state", pa.list_(pa.float32(), state_dim), nullable=False),
        pa.field("language_instruction", pa.string(), nullable=False),
    ]
    fields += [pa.field(f"image_{cam.name}", pa.binary(), nullable=False) for cam in spec.cameras]
    return _tagged(fields, "steps", SILVER_SCHEMA_VERSION)


def curated_steps_schema(spec: DatasetSpec, state_dim: int) -> pa.Schema:
    """The numeric steps exactly as gold RLDS stores them (filtered, `action` normalized,
    step flags following the kept steps), without images: what the quality gate and
    queries read instead of decoding TFRecords. `step_index` is the silver step's."""
    fields = [field for field in steps_schema(spec, state_dim) if not field.name.startswith("image_")]
    return _tagged(fields, "curated_steps", SILVER_SCHEMA_VERSION)


def _vector_stats_fields(prefix: str, dims: int) -> list[pa.Field]:
    """robolake.statistics.VectorStats.row: moments, bounds and the sparse quantile sketch."""
    vector = pa.list_(pa.float64(), dims)
    return [
        pa.field(f"{prefix}_count", pa.int64(), nullable=False),
        *(pa.field(f"{prefix}_{name}", vector, nullable=False) for name in ("mean", "m2", "min", "max")),
        pa.field(f"{prefix}_sketch_keys", pa.list_(pa.int32()), nullable=False),  # dimension * SLOTS + slot
        pa.field(f"{prefix}_sketch_counts", pa.list_(pa.int32()), nullable=False),
    ]


def episode_stats_schema(spec: DatasetSpec, state_dim: int) -> pa.Schema:
    """One row per written episode: the mergeable statistics of its curated actions and
    state, and its cameras' pixel moments ([0, 1] scale, over every ingested frame), so
    that the statistics of any selection of episodes merge from rows (`robolake stats`)."""
    fields = [pa.field("episode_id", pa.string(), nullable=False)]
    fields += _vector_stats_fields("action", len(spec.action.names)) + _vector_stats_fields("state", state_dim)
    for cam in spec.cameras:
        fields += [
            pa.field(f"camera_{cam.name}_pixels", pa.int64(), nullable=False),
            pa.field(f"camera_{cam.name}_mean", pa.list_(pa.float64(), 3), nullable=False),
            pa.field(f"camera_{cam.name}_m2", pa.list_(pa.float64(), 3), nullable=False),
        ]
    return _tagged(fields, "episode_stats", SILVER_SCHEMA_VERSION)


EPISODE_QUALITY_SCHEMA_VERSION = "1.0.0"


def episode_quality_schema(spec: DatasetSpec) -> pa.Schema:
    """One row per ingested episode: its behaviour metrics (robolake/episode_quality.py,
    docs/quality.md). A metric that cannot be computed is null, its group's `*_reason` says why."""
    f64, i32, text = pa.float64(), pa.int32(), pa.string()
    columns = [
        ("num_steps", i32), ("duration_s", f64),
        ("idle_share", f64), ("idle_head_s", f64), ("idle_tail_s", f64),
        ("idle_floor_translation", f64), ("idle_floor_rotation", f64), ("idle_reason", text),
        ("frozen_action_steps", i32), ("frozen_action_s", f64),
        ("spike_steps", i32), ("jerk", f64), ("spike_reason", text),
        ("gripper_toggles_per_s", f64), ("gripper_reversals", i32), ("gripper_reason", text),
        ("step_interval_jitter_ms", f64), ("step_interval_max_deviation_ms", f64), ("timing_gaps", i32),
        ("timing_reason", text),
    ]
    for cam in spec.cameras:
        columns += [(f"camera_{cam.name}_freeze_steps", i32), (f"camera_{cam.name}_freeze_s", f64),
                    (f"camera_{cam.name}_blackout_frames", i32), (f"camera_{cam.name}_overexposed_frames", i32),
                    (f"camera_{cam.name}_reason", text)]
    columns += [
        ("path_length", f64), ("path_displacement", f64), ("path_length_ratio", f64), ("path_reason", text),
        ("action_static_share", pa.list_(f64, len(spec.action.names))), ("action_fingerprint", text),
        ("control_delay_steps", i32), ("chunk_length_steps", i32),
    ]
    always = {"num_steps", "duration_s", "frozen_action_steps", "frozen_action_s", "action_static_share",
              "action_fingerprint"}
    fields = [pa.field("episode_id", text, nullable=False)]
    fields += [pa.field(name, kind, nullable=name not in always) for name, kind in columns]
    return _tagged(fields, "episode_quality", EPISODE_QUALITY_SCHEMA_VERSION)


FILTERED_ACTIONS_SCHEMA = _tagged(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("step_index", pa.int32(), nullable=False),
        pa.field("dimension", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("rule", pa.string(), nullable=False),  # zscore / bounds / jump
        pa.field("policy", pa.string(), nullable=False),  # clip / drop_step / quarantine
        pa.field("replacement", pa.float64()),  # the clipped value; null unless clipped
    ],
    "filtered_actions",
    QUARANTINE_SCHEMA_VERSION,
)


QUARANTINE_SCHEMA = _tagged(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("reason_code", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ],
    "quarantine",
    QUARANTINE_SCHEMA_VERSION,
)


RAW_MANIFEST_SCHEMA = _tagged(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("mtime", pa.float64(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
    ],
    "raw_manifest",
    RAW_MANIFEST_SCHEMA_VERSION,
)
