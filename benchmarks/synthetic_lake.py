"""Write a synthetic published dataset version straight into a lake folder, in the layout
`robolake convert` gives, without converting anything: input for benchmarks of the
commands that read a lake (`robolake validate`, `robolake report`, `robolake query`) at
sizes that would take hours to convert.

What is written (one spec: an HDF5 robomimic dataset like datasets/sample_tabletop.yaml,
two 256x256 JPEG cameras front and wrist, 7-d delta end-effector actions with a gripper,
a 9-d state, splits by episode hash 80/10/10; lake paths as robolake/lake.py gives them):

- silver episodes, steps, curated steps and episode stats, `silver/<name>/<table>/
  version=<v>/split=<s>/part-NNNNN.parquet`, with the schemas of schemas/tables.py: splits
  from the episode id's hash and shards of about `output.steps_per_shard` steps in
  stable-hash order (pipelines/splits.py itself), one row group per episode as
  pipelines/silver_writer.py writes them (curated steps and episode stats one row group
  per shard file, as convert writes them);
- episodes: metadata (task, object, color, scene, lighting, operator) with the skew of
  the sample generator (robolake/sample/scenario.py), its paraphrased instruction
  templates plus a few near-duplicate variants (case and punctuation, a typo), camera
  pixel summaries that follow the lighting;
- steps: raw actions N(mu, sigma) per dimension with a scripted gripper (+-1), the
  end-effector position integrating the deltas, a quaternion and two finger joints; every
  frame of a camera is the same real 256x256 JPEG (cv2.imencode of a constant frame),
  dictionary-encoded in Parquet, so the frames take next to no room (1M steps: ~170 MB
  of silver steps and ~130 MB of curated steps, nearly all random floats);
- episode stats: one row per written episode, built by convert's own code
  (pipelines.curation.episode_stats_row) from the episode's curated `action_raw` and
  `state` and its cameras' pixel moments over every silver frame, so that `robolake stats
  --where` merges exactly what a pass over the curated steps computes;
- outlier filtering as convert's rules would leave it: ~1.5% of episodes hold a 15-sigma
  single-step spike (flagged by zscore/clip and jump/drop_step: the step is left out of
  the curated steps, is_first/is_last follow the kept steps), ~1% a 9.5-sigma value
  (zscore/clip: clipped to 8 sigma); their records in `quarantine/<name>/<v>/
  filtered_actions/part-<split>-NNNNN.parquet`, one file per shard that has any;
- about 0.5% more episodes found but quarantined (non_finite, too_short,
  unreadable_file) in `quarantine/<name>/<v>/quarantine.parquet`;
- gold `gold/rlds/<name>/<v>/`: `dataset_statistics.json` computed from the curated train
  steps by the pipeline's own statistics code (pipelines/stats.py, pipelines/curation.py,
  the saturation shares counted over the same steps while the tables are written,
  checked against its JSON Schema), `features.json` from schemas/rlds.py (TFDS), and
  `manifest.json` (counts per split, filter totals, quarantine reasons, sources,
  fingerprint, the spec) written last. The curated `action` is normalized with that
  file (robolake.normalization), so the lake is self-consistent.
- `raw/manifest.parquet`: the (fictitious) source sessions.

Not written: TFRecord shards, dataset_info.json, provenance.json and reports/ (no
command that reads the lake's tables needs them; `manifest.json` counts the silver steps
files' bytes as `bytes_written`).

Numbers are generated shard by shard from a seeded generator per (split, shard): a
first pass over the train shards computes the statistics, a second generates the same
numbers again and writes every table, so memory stays flat whatever the size (10k
episodes / 1M steps: ~50 s and ~950 MB peak RSS on 2 cores, most of it the TensorFlow
that schemas.rlds imports; ~45% of the time builds the episode_stats rows, a VectorStats
per episode whose sketch costs about 1.5 ms whatever the episode's length, most of the
rest writes one row group per episode).

    python benchmarks/synthetic_lake.py /tmp/lake --episodes 10000 --steps 100
    python -c "from robolake.lake import Lake; \\
               print(Lake('/tmp/lake').resolve('synthetic_tabletop:1.0.0').manifest['counts'])"
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.build import split_totals
from pipelines.curation import NumericEpisode, SaturationCountsFn, _rounded, episode_stats_row, statistics_document
from pipelines.episode import EpisodeRef, stable_hash
from pipelines.silver_writer import fixed_list, part_name
from pipelines.splits import assign_shards, assign_split
from pipelines.stats import DatasetStats, PixelStats, pixel_stats_from_row
from robolake.arguments import ArgumentParser
from robolake.lake import Build, Lake, new_build_id
from robolake.storage import join, read_json
from robolake.lease import Lease
from robolake.normalization import normalize
from robolake.publish import commit, start_build
from robolake.sample.scenario import (
    COLORS, DIRECTION_WORDS, INSTRUCTIONS, LIGHTINGS, OBJECTS, OPERATORS, PUSH_DIRECTIONS, SCENES, TASKS,
)
from robolake.spec import DatasetSpec, parse_spec
from schemas.documents import check
from schemas.rlds import RESOLUTION_CHANGE, TRUNCATED, rlds_features
from schemas.tables import (
    FILTERED_ACTIONS_SCHEMA, QUARANTINE_SCHEMA, RAW_MANIFEST_SCHEMA, curated_steps_schema, episode_stats_schema,
    episodes_schema, steps_schema,
)

NAME, VERSION = "synthetic_tabletop", "1.0.0"
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
STATE_DIM = 9  # eef position (3), quaternion (4), finger joints (2)
FIELDS = {"task": TASKS, "object": OBJECTS, "color": COLORS, "scene": SCENES, "lighting": LIGHTINGS,
          "operator": OPERATORS}
CAMERAS = {"front": (168, 150, 128), "wrist": (96, 104, 112)}  # name -> RGB of its constant frame
FRAME_SIZE = (256, 256)
DEMOS_PER_SESSION = 5
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}
ACTION_MEAN = np.array([0.002, 0.0, -0.001, 0.0, 0.0, 0.0])
ACTION_STD = np.array([0.010, 0.010, 0.012, 0.030, 0.030, 0.050])
SPIKE_SHARE, SPIKE_SIGMA = 0.015, 15.0  # episodes with a single-step spike (zscore clip + jump drop_step)
CLIP_SHARE, CLIP_SIGMA, CLIP_TO = 0.010, 9.5, 8.0  # episodes with one value clipped by zscore (threshold 8)
QUARANTINE_SHARE = 0.005
VARIANT_SHARE = 0.03  # instructions with a surface variant (case and period, or a typo)
BRIGHTNESS = {"bright": 0.62, "dim": 0.34, "warm": 0.55, "side": 0.45}
TINT = {"bright": (1.0, 1.0, 1.0), "dim": (0.95, 1.0, 1.08), "warm": (1.12, 1.0, 0.85), "side": (1.0, 1.0, 1.0)}
QUARANTINE_REASONS = [
    ("non_finite", "{path}: {group}/actions holds 1 NaN/inf values, first at step {step}"),
    ("too_short", "{path}: {group}: 6 steps, fewer than min_steps=10"),
    ("unreadable_file", "{path}: cannot read {group}/obs/front_image: truncated chunk at step {step}"),
]


def spec_dict(name: str = NAME, version: str = VERSION, steps_per_shard: int = 1000, max_steps: int = 500) -> dict:
    """A dataset spec like datasets/sample_tabletop.yaml (without its file-level env field)."""
    return {
        "name": name,
        "version": version,
        "description": "Synthetic tabletop demonstrations written by benchmarks/synthetic_lake.py (no raw files).",
        "source": {"format": "hdf5", "layout": "robomimic", "paths": [f"lake/raw/{name}/hdf5/*.hdf5"]},
        "control_rate_hz": 10,
        "cameras": [{"name": cam, "size": list(FRAME_SIZE), "encoding": "jpeg", "jpeg_quality": 95} for cam in CAMERAS],
        "state": {"keys": ["obs/robot0_eef_pos", "obs/robot0_eef_quat", "obs/robot0_gripper_qpos"]},
        "action": {"keys": ["actions"], "names": ACTION_NAMES},
        "instruction": {"episode_attr": "language_instruction"},
        "metadata": {f: {"episode_attr": f} for f in FIELDS},
        "episode_length": {"min_steps": 10, "max_steps": max_steps},
        "splits": {"by": "episode_hash", "fractions": dict(SPLITS)},
        "output": {"steps_per_shard": steps_per_shard},
    }


# --- Planning: every episode's id, metadata, instruction, length, split and shard --------


def _draw(rng: np.random.Generator, weights: dict[str, float], n: int) -> np.ndarray:
    names = np.array(list(weights), dtype=object)
    p = np.array(list(weights.values()), float)
    return names[rng.choice(len(names), size=n, p=p / p.sum())]


def _variant(text: str, rng: np.random.Generator) -> str:
    """A near-duplicate of an instruction: capitalized with a period, or one word misspelled."""
    if rng.random() < 0.5:
        return text[0].upper() + text[1:] + "."
    words = text.split()
    i = int(rng.integers(len(words)))
    word = words[i]
    if len(word) > 3:
        j = int(rng.integers(len(word) - 1))
        words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2:]
    else:
        words[i] = word + word[-1]
    return " ".join(words)


def instructions(rng: np.random.Generator, meta: dict[str, np.ndarray]) -> list[str]:
    n = len(meta["task"])
    directions = rng.choice(list(PUSH_DIRECTIONS), size=n)
    choice = rng.random(n)
    variant = rng.random(n) < VARIANT_SHARE
    texts = []
    for i in range(n):
        templates = INSTRUCTIONS[meta["task"][i]]
        text = templates[int(choice[i] * len(templates))].format(
            color=meta["color"][i], object=meta["object"][i], direction=DIRECTION_WORDS[directions[i]])
        texts.append(_variant(text, rng) if variant[i] else text)
    return texts


@dataclass
class Plan:
    spec: DatasetSpec
    shards: dict[tuple[str, int], list[EpisodeRef]]  # (split, shard) -> its episodes, in shard order
    cameras: dict[str, dict]  # episode id -> camera summary columns
    quarantined: list[dict]  # QUARANTINE_SCHEMA rows
    sessions: dict[str, dict]  # source path -> {sha256, episodes, quarantined, steps}


def plan(spec: DatasetSpec, episodes: int, steps: int, seed: int, length_jitter: float) -> Plan:
    rng = np.random.default_rng([seed, 0])
    quarantine_count = max(1, round(episodes * QUARANTINE_SHARE))
    found = episodes + quarantine_count
    meta = {f: _draw(rng, weights, found) for f, weights in FIELDS.items()}
    texts = instructions(rng, meta)
    if length_jitter:
        low = max(spec.episode_length.min_steps + 2, round(steps * (1 - length_jitter)))
        lengths = rng.integers(low, round(steps * (1 + length_jitter)) + 1, size=found)
    else:
        lengths = np.full(found, steps)
    quarantined_index = set(rng.choice(found, size=quarantine_count, replace=False).tolist())
    root = spec.source.paths[0].rsplit("/", 1)[0]
    refs, quarantined, sessions = [], [], {}
    for i in range(found):
        session, demo = divmod(i, DEMOS_PER_SESSION)
        path = f"{root}/session_{session:05d}.hdf5"
        entry = sessions.setdefault(path, {"relative_id": f"session_{session:05d}", "episodes": 0, "quarantined": 0,
                                           "steps": 0, "sha256": stable_hash(f"{seed}/{path}")})
        episode_id, group = f"session_{session:05d}/demo_{demo}", f"data/demo_{demo}"
        entry["steps"] += int(lengths[i])
        if i in quarantined_index:
            code, reason = QUARANTINE_REASONS[len(quarantined) % len(QUARANTINE_REASONS)]
            quarantined.append({"episode_id": episode_id, "source_path": path, "source_sha256": entry["sha256"],
                                "reason_code": code, "reason": reason.format(path=path, group=group, step=17 + i % 50)})
            entry["quarantined"] += 1
            continue
        entry["episodes"] += 1
        metadata = {f: str(meta[f][i]) for f in FIELDS}
        refs.append(EpisodeRef(episode_id, path, entry["sha256"], group, int(lengths[i]), texts[i], metadata))
    by_split: dict[str, list[EpisodeRef]] = defaultdict(list)
    for ref in refs:
        split = assign_split(ref, spec.splits)
        by_split[split].append(dataclasses.replace(ref, split=split))
    shards: dict[tuple[str, int], list[EpisodeRef]] = {}
    for split in sorted(by_split):
        for ref in assign_shards(by_split[split], spec.output.steps_per_shard):
            shards.setdefault((split, ref.shard), []).append(ref)
    cameras = camera_summaries(rng, refs)
    return Plan(spec, dict(sorted(shards.items())), cameras, quarantined, sessions)


def camera_summaries(rng: np.random.Generator, refs: list[EpisodeRef]) -> dict[str, dict]:
    """Per episode and camera: mean/std RGB, brightness and contrast, following the lighting."""
    result = {}
    for ref in refs:
        lighting = ref.metadata["lighting"]
        row = {}
        for k, cam in enumerate(CAMERAS):
            brightness = float(np.clip(BRIGHTNESS[lighting] * (1.05 if k else 1.0) + rng.normal(0, 0.03), 0.05, 0.95))
            mean = np.clip(brightness * np.array(TINT[lighting]) + rng.normal(0, 0.01, 3), 0, 1)
            std = np.clip(rng.uniform(0.17, 0.25) + rng.normal(0, 0.01, 3), 0.01, 0.5)
            row[cam] = {"mean": mean.tolist(), "std": std.tolist(), "brightness": brightness,
                        "contrast": float(std.mean() * 0.95)}
        result[ref.episode_id] = row
    return result


# --- One shard's numbers (the same in both passes) ---------------------------------------


@dataclass
class ShardNumbers:
    refs: list[EpisodeRef]
    lengths: np.ndarray  # silver steps per episode
    step_index: np.ndarray  # (T,) int32
    raw: np.ndarray  # (T, 7) float32: silver action and action_raw (before filtering)
    state: np.ndarray  # (T, 9) float32
    keep: np.ndarray  # (T,) bool: steps the filter keeps
    curated_raw: np.ndarray  # (kept, 7) float32: filtered action_raw
    records: list[dict] = field(default_factory=list)  # FILTERED_ACTIONS_SCHEMA rows
    by_rule: Counter = field(default_factory=Counter)
    clipped: int = 0
    episodes_with_flags: int = 0

    @property
    def curated_lengths(self) -> np.ndarray:
        episode = np.repeat(np.arange(len(self.lengths)), self.lengths)
        return np.bincount(episode[self.keep], minlength=len(self.lengths))

    @property
    def curated_state(self) -> np.ndarray:
        return self.state[self.keep]


SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}
SILVER_TABLES = ("episodes", "steps", "curated_steps", "episode_stats")


def shard_numbers(seed: int, split: str, shard: int, refs: list[EpisodeRef]) -> ShardNumbers:
    rng = np.random.default_rng([seed, 1, SPLIT_INDEX.get(split, 3), shard])
    lengths = np.array([r.num_steps for r in refs])
    total, count = int(lengths.sum()), len(refs)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    episode = np.repeat(np.arange(count), lengths)
    step_index = (np.arange(total) - starts[episode]).astype(np.int32)
    phase = step_index / lengths[episode]
    raw = np.empty((total, 7), np.float64)
    raw[:, :6] = ACTION_MEAN + ACTION_STD * rng.standard_normal((total, 6))
    close, release = rng.uniform(0.2, 0.4, count), rng.uniform(0.6, 0.85, count)
    grasped = (phase >= close[episode]) & (phase < release[episode])
    raw[:, 6] = np.where(grasped, 1.0, -1.0)

    state = np.empty((total, STATE_DIM), np.float64)
    home = rng.uniform([0.32, -0.05, 0.22], [0.38, 0.05, 0.27], (count, 3))
    travel = np.cumsum(raw[:, :3] * 0.5, axis=0)
    state[:, :3] = home[episode] + travel - (travel[starts] - raw[starts, :3] * 0.5)[episode]
    quat = np.array([0.0, 1.0, 0.0, 0.0]) + rng.normal(0, 0.02, (total, 4))
    state[:, 3:7] = quat / np.linalg.norm(quat, axis=1, keepdims=True)
    fingers = np.where(grasped, 0.024, 0.04) + rng.normal(0, 0.0005, total)
    state[:, 7], state[:, 8] = fingers, -fingers

    numbers = ShardNumbers(refs, lengths, step_index, raw.astype(np.float32), state.astype(np.float32),
                           np.ones(total, bool), np.empty(0))
    curated = raw.copy()
    spike = rng.random(count) < SPIKE_SHARE
    clip = ~spike & (rng.random(count) < CLIP_SHARE)
    names = ACTION_NAMES
    for e in np.nonzero(spike | clip)[0]:
        ref, n = refs[e], int(lengths[e])
        step, dim, sign = int(rng.integers(5, max(6, n - 5))), int(rng.integers(6)), float(rng.choice([-1.0, 1.0]))
        row = starts[e] + step
        sigmas = SPIKE_SIGMA if spike[e] else CLIP_SIGMA
        value = float(np.float32(ACTION_MEAN[dim] + sign * sigmas * ACTION_STD[dim]))
        numbers.raw[row, dim] = value
        curated[row, dim] = value
        record = {"episode_id": ref.episode_id, "split": ref.split, "step_index": step, "dimension": names[dim],
                  "value": value}
        if spike[e]:
            numbers.keep[row] = False
            numbers.records += [record | {"rule": "zscore", "policy": "clip", "replacement": None},
                                record | {"rule": "jump", "policy": "drop_step", "replacement": None}]
            numbers.by_rule.update(["zscore", "jump"])
        else:
            replacement = float(np.float32(ACTION_MEAN[dim] + sign * CLIP_TO * ACTION_STD[dim]))
            curated[row, dim] = replacement
            numbers.records.append(record | {"rule": "zscore", "policy": "clip", "replacement": replacement})
            numbers.by_rule.update(["zscore"])
        numbers.clipped += 1
        numbers.episodes_with_flags += 1
    numbers.curated_raw = curated[numbers.keep].astype(np.float32)
    return numbers


# --- Pass 1: statistics of the train split -----------------------------------------------


def episode_pixels(plan_: Plan, ref: EpisodeRef) -> dict[str, PixelStats]:
    """Per camera, an episode's PixelStats from its episodes row, over every silver frame
    (as pipelines.curation.numeric_episodes reads them back)."""
    return {cam: pixel_stats_from_row(row["mean"], row["std"], ref.num_steps * FRAME_SIZE[0] * FRAME_SIZE[1])
            for cam, row in plan_.cameras[ref.episode_id].items()}


def _camera_pixels(plan_: Plan, refs: list[EpisodeRef]) -> dict[str, PixelStats]:
    """Per camera, the PixelStats of a shard's episodes, merged."""
    merged = {cam: PixelStats() for cam in CAMERAS}
    for ref in refs:
        for cam, pixels in episode_pixels(plan_, ref).items():
            merged[cam].merge(pixels)
    return merged


def statistics(plan_: Plan, seed: int) -> tuple[dict, dict]:
    """dataset_statistics.json (train split, after filtering) without its saturation
    shares (pass 2 counts them), and the filter totals (all splits)."""
    spec = plan_.spec
    raw = DatasetStats(len(ACTION_NAMES), STATE_DIM, list(CAMERAS))
    final = DatasetStats(len(ACTION_NAMES), STATE_DIM, list(CAMERAS))
    totals = {"episodes_with_flags": 0, "items_flagged": 0, "items_clipped": 0, "steps_dropped": 0,
              "episodes_quarantined": 0, "by_rule": Counter()}
    for (split, shard), refs in plan_.shards.items():
        numbers = shard_numbers(seed, split, shard, refs)
        totals["episodes_with_flags"] += numbers.episodes_with_flags
        totals["items_flagged"] += len(numbers.records)
        totals["items_clipped"] += numbers.clipped
        totals["steps_dropped"] += int((~numbers.keep).sum())
        totals["by_rule"].update(numbers.by_rule)
        if split != "train":
            continue
        cameras = _camera_pixels(plan_, refs)
        for stats, actions, state in ((raw, numbers.raw, numbers.state),
                                      (final, numbers.curated_raw, numbers.curated_state)):
            stats.action.add(actions)
            stats.state.add(state)
            for cam, pixels in cameras.items():
                stats.cameras[cam].merge(pixels)
            stats.trajectories += len(refs)
    totals["by_rule"] = dict(sorted(totals["by_rule"].items()))
    document = statistics_document(final, raw, spec)
    document["robolake"]["filter"]["summary"] = totals
    return document, totals


# --- Pass 2: the tables ------------------------------------------------------------------


def episode_stats_table(plan_: Plan, numbers: ShardNumbers, split: str) -> pa.Table:
    """The shard's silver episode_stats rows, each built by pipelines.curation.episode_stats_row
    from the episode's curated actions and state, as convert builds them."""
    starts = np.concatenate([[0], np.cumsum(numbers.lengths)])
    kept = np.concatenate([[0], np.cumsum(numbers.curated_lengths)])
    actions, state = numbers.curated_raw.astype(np.float64), numbers.curated_state
    rows = []
    for i, ref in enumerate(numbers.refs):
        silver = slice(starts[i], starts[i + 1])
        episode = NumericEpisode(split, ref.episode_id, ref.source_path, ref.source_sha256, numbers.raw[silver],
                                 numbers.state[silver], episode_pixels(plan_, ref))
        curated = slice(kept[i], kept[i + 1])
        rows.append(episode_stats_row(episode, actions[curated], state[curated]))
    return pa.Table.from_pylist(rows, schema=episode_stats_schema(plan_.spec, STATE_DIM))


def constant_jpeg(rgb: tuple[int, int, int], quality: int = 95) -> bytes:
    frame = np.empty((*FRAME_SIZE, 3), np.uint8)
    frame[:] = rgb[::-1]  # OpenCV writes BGR
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


class ShardWriter:
    """One Parquet file, written a table at a time (each table one row group)."""

    def __init__(self, path: str, schema: pa.Schema):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        images = [name for name in schema.names if name.startswith("image_")]
        others = [name for name in schema.names if name not in images]
        # As pipelines/silver_writer.py, but the (repeated) frames dictionary-encoded.
        self.writer = pq.ParquetWriter(
            path, schema, compression={name: ("none" if name in images else "zstd") for name in schema.names},
            use_dictionary=True, write_statistics=others)

    def write(self, table: pa.Table, lengths: np.ndarray | None) -> None:
        """One row group per episode (lengths), or the whole table as one (None)."""
        if lengths is None:
            self.writer.write_table(table, row_group_size=1 << 30)
            return
        offset = 0
        for n in lengths:
            self.writer.write_table(table.slice(offset, int(n)), row_group_size=1 << 30)
            offset += int(n)

    def close(self) -> None:
        self.writer.close()


def _repeat(values: list[str], lengths: np.ndarray) -> pa.Array:
    return pa.array(np.repeat(np.array(values, dtype=object), lengths), pa.string())


def _step_columns(refs: list[EpisodeRef], lengths: np.ndarray, step_index: np.ndarray, rate: float) -> dict:
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    last = np.zeros(total, bool)
    last[ends - 1] = True
    first = np.zeros(total, bool)
    first[ends - lengths] = True
    silver_last = np.repeat(np.array([r.num_steps for r in refs]) - 1, lengths) == step_index
    return {
        "episode_id": _repeat([r.episode_id for r in refs], lengths),
        "step_index": pa.array(step_index, pa.int32()),
        "timestamp": pa.array(step_index / rate, pa.float64()),
        "is_first": pa.array(first),
        "is_last": pa.array(last),
        "is_terminal": pa.array(last),
        "reward": pa.array(silver_last.astype(np.float32)),
        "discount": pa.array(np.ones(total, np.float32)),
    }


def write_shard(build: Build, plan_: Plan, numbers: ShardNumbers, split: str, shard: int, statistics_: dict,
                frames: dict[str, bytes]) -> dict:
    spec, refs = plan_.spec, numbers.refs
    part = f"split={split}/{part_name(shard)}"
    rate = spec.control_rate_hz
    paths = {table: f"{build.silver(table)}/{part}" for table in SILVER_TABLES}

    episodes = {
        "episode_id": [r.episode_id for r in refs],
        "num_steps": numbers.lengths.astype(np.int32),
        "dropped_ticks": np.zeros(len(refs), np.int32),
        TRUNCATED: np.zeros(len(refs), bool),  # every episode ends in a terminal state (is_terminal on its last step)
        RESOLUTION_CHANGE: [""] * len(refs),
        "language_instruction": [r.instruction for r in refs],
        "source_path": [r.source_path for r in refs],
        "source_sha256": [r.source_sha256 for r in refs],
    }
    schema = episodes_schema(spec)
    for f in schema.names:
        if f in FIELDS:
            episodes[f] = [r.metadata[f] for r in refs]
    for cam in CAMERAS:
        rows = [plan_.cameras[r.episode_id][cam] for r in refs]
        for key in ("mean", "std"):
            episodes[f"camera_{cam}_{key}"] = pa.FixedSizeListArray.from_arrays(
                pa.array(np.array([row[key] for row in rows]).ravel(), pa.float64()), 3)
        for key in ("brightness", "contrast"):
            episodes[f"camera_{cam}_{key}"] = [row[key] for row in rows]
    writer = ShardWriter(paths["episodes"], schema)
    writer.write(pa.Table.from_pydict(episodes, schema=schema), None)
    writer.close()

    total = int(numbers.lengths.sum())
    columns = _step_columns(refs, numbers.lengths, numbers.step_index, rate)
    instructions_ = _repeat([r.instruction for r in refs], numbers.lengths)
    raw = fixed_list(numbers.raw)
    columns |= {"action": raw, "action_raw": raw, "state": fixed_list(numbers.state),
                "language_instruction": instructions_}
    for cam, data in frames.items():
        columns[f"image_{cam}"] = pa.array([data] * total, pa.binary())
    schema = steps_schema(spec, STATE_DIM)
    writer = ShardWriter(paths["steps"], schema)
    writer.write(pa.Table.from_pydict(columns, schema=schema), numbers.lengths)
    writer.close()

    kept = numbers.curated_lengths
    columns = _step_columns(refs, kept, numbers.step_index[numbers.keep], rate)
    columns["reward"] = pa.array(
        (numbers.step_index[numbers.keep] == np.repeat(numbers.lengths - 1, kept)).astype(np.float32))
    columns |= {
        "action": fixed_list(normalize(numbers.curated_raw, statistics_, "action").astype(np.float32)),
        "action_raw": fixed_list(numbers.curated_raw),
        "state": fixed_list(numbers.state[numbers.keep]),
        "language_instruction": _repeat([r.instruction for r in refs], kept),
    }
    schema = curated_steps_schema(spec, STATE_DIM)
    writer = ShardWriter(paths["curated_steps"], schema)
    writer.write(pa.Table.from_pydict(columns, schema=schema), None)  # one row group per shard, as convert
    writer.close()

    table = episode_stats_table(plan_, numbers, split)
    writer = ShardWriter(paths["episode_stats"], table.schema)
    writer.write(table, None)
    writer.close()

    if numbers.records:
        path = f"{build.quarantine}/filtered_actions/part-{split}-{shard:05d}.parquet"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(pa.Table.from_pylist(numbers.records, schema=FILTERED_ACTIONS_SCHEMA), path, compression="zstd")
    return {"split": split, "episodes": len(refs), "silver_steps": total, "steps": int(kept.sum()),
            "bytes": os.path.getsize(paths["steps"]),
            "files_bytes": sum(os.path.getsize(p) for p in paths.values())}


# --- The whole version -------------------------------------------------------------------


@dataclass(frozen=True)
class LakeSummary:
    root: str
    dataset: str
    version: str
    episodes: int  # written
    quarantined: int
    silver_steps: int
    curated_steps: int
    filtered_items: int
    files: int
    bytes: int  # on disk, everything written
    seconds: float

    @property
    def reference(self) -> str:
        return f"{self.dataset}:{self.version}"

    def line(self) -> str:
        return (f"{self.dataset} {self.version}: {self.episodes} episodes ({self.quarantined} quarantined), "
                f"{self.silver_steps} silver steps, {self.curated_steps} curated, {self.filtered_items} filtered "
                f"items, {self.files} files, {self.bytes / 1e6:.0f} MB in {self.seconds:.1f} s -> {self.root}")


def _remove_version(lake: Lake, name: str, version: str) -> None:
    for path in [lake.version_root(name, version), lake.reports(name, version)]:
        shutil.rmtree(path, ignore_errors=True)


def _write_raw_manifest(lake: Lake, sessions: dict[str, dict]) -> None:
    rows = [{"path": path, "sha256": s["sha256"], "bytes": s["bytes"], "mtime": s["mtime"], "format": "hdf5"}
            for path, s in sorted(sessions.items())]
    table = pa.Table.from_pylist(rows, schema=RAW_MANIFEST_SCHEMA)
    path = lake.raw_manifest()
    if os.path.exists(path):
        old = pq.read_table(path)
        old = old.filter(pc.invert(pc.is_in(old.column("path"), value_set=table.column("path"))))
        table = pa.concat_tables([old.cast(RAW_MANIFEST_SCHEMA), table])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def write_synthetic_lake(
    root: str, episodes: int = 1000, steps: int = 100, *, name: str = NAME, version: str = VERSION, seed: int = 0,
    steps_per_shard: int = 1000, length_jitter: float = 0.0,
    overwrite: bool = False,
) -> LakeSummary:
    """Write `episodes` episodes of about `steps` steps as dataset `name` `version` into
    the lake at `root`; see the module docstring."""
    if steps < 12:
        raise ValueError("steps must be at least 12 (min_steps 10, and a spike needs room)")
    started = time.perf_counter()
    lake = Lake(root)
    if lake.current(name, version) is not None and not overwrite:
        raise FileExistsError(f"{name}:{version} exists in {root} (overwrite=True replaces it)")
    _remove_version(lake, name, version)
    with Lease(lake, name, version, new_build_id(), "synthetic_lake") as lease:
        build = start_build(lake, lease)
        summary = _write_build(lake, build, episodes, steps, seed, steps_per_shard, length_jitter, started)
        commit(lake, build, lease, read_json(join(build.gold, "manifest.json")))
    return summary


def _write_build(lake: Lake, build: Build, episodes: int, steps: int, seed: int, steps_per_shard: int,
                 length_jitter: float, started: float) -> LakeSummary:
    name, version = build.dataset, build.version
    spec = parse_spec(spec_dict(name, version, steps_per_shard, max(500, 2 * steps)), origin="synthetic_lake.py")
    plan_ = plan(spec, episodes, steps, seed, length_jitter)
    statistics_, totals = statistics(plan_, seed)
    frames = {cam: constant_jpeg(rgb, spec.cameras[0].jpeg_quality) for cam, rgb in CAMERAS.items()}

    saturation = SaturationCountsFn(len(ACTION_NAMES), STATE_DIM)
    at_bound = saturation.create_accumulator()
    shards = []
    for (split, shard), refs in plan_.shards.items():
        numbers = shard_numbers(seed, split, shard, refs)
        shards.append(write_shard(build, plan_, numbers, split, shard, statistics_, frames))
        if split == "train":
            curated = (numbers.curated_raw.astype(np.float64), numbers.curated_state, None)
            at_bound = saturation.add_input(at_bound, (curated, statistics_))
    statistics_["robolake"]["saturation"] = _rounded(saturation.extract_output(at_bound))
    check(statistics_, "dataset_statistics", "dataset_statistics.json")
    quarantine_dir = build.quarantine
    os.makedirs(quarantine_dir, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(plan_.quarantined, schema=QUARANTINE_SCHEMA),
                   os.path.join(quarantine_dir, "quarantine.parquet"), compression="zstd")

    now = time.time()
    for path, session in plan_.sessions.items():
        session |= {"bytes": session["steps"] * 61_000, "mtime": now}
    _write_raw_manifest(lake, plan_.sessions)
    gold = build.gold
    os.makedirs(gold, exist_ok=True)
    rlds_features(spec, STATE_DIM).save_config(gold)
    data = (json.dumps(statistics_, indent=2, sort_keys=True) + "\n").encode()
    with open(os.path.join(gold, "dataset_statistics.json"), "wb") as f:
        f.write(data)
    manifest = _manifest(spec, plan_, shards, totals, hashlib.sha256(data).hexdigest(), time.perf_counter() - started)
    manifest["build"] = build.id
    with open(os.path.join(gold, "manifest.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    ours = [os.path.join(d, f) for d, _, fs in os.walk(build.dir) for f in fs]
    return LakeSummary(
        lake.root, name, version, sum(s["episodes"] for s in shards), len(plan_.quarantined),
        sum(s["silver_steps"] for s in shards), sum(s["steps"] for s in shards), totals["items_flagged"], len(ours),
        sum(os.path.getsize(p) for p in ours), time.perf_counter() - started,
    )


def _manifest(spec: DatasetSpec, plan_: Plan, shards: list[dict], totals: dict, statistics_sha256: str,
              seconds: float) -> dict:
    by_split = split_totals(shards)
    written = sum(s["episodes"] for s in shards)
    sources = [
        {"bytes": s["bytes"], "companions": [], "episodes": s["episodes"], "mtime": s["mtime"], "path": path,
         "quarantined": s["quarantined"], "relative_id": s["relative_id"], "sha256": s["sha256"]}
        for path, s in sorted(plan_.sessions.items())
    ]
    code = "robolake-synthetic/benchmarks.synthetic_lake"
    content = {"inputs": sorted((s["relative_id"], s["sha256"]) for s in sources), "spec": spec.fingerprint(),
               "code": code}
    return {
        "schema_version": "1.0.0",
        "dataset": spec.name,
        "version": spec.version,
        "fingerprint": hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest(),
        "code_version": code,
        "spec_sha256": spec.fingerprint(),
        "spec": spec.model_dump(mode="json"),
        "state_dim": STATE_DIM,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "counts": {
            "source_files": len(sources),
            "episodes_found": written + len(plan_.quarantined),
            "episodes_ingested": written,
            "episodes_written": written,
            "episodes_quarantined": len(plan_.quarantined),
            "episodes_truncated": 0,
            "episodes_resolution_changed": 0,
            "steps_written": sum(s["steps"] for s in shards),
            "bytes_written": sum(s["bytes"] for s in shards),
            "by_split": dict(sorted(by_split.items())),
        },
        "quarantine_reasons": dict(sorted(Counter(q["reason_code"] for q in plan_.quarantined).items())),
        "alignment": {"dropped_ticks": {}},
        "filter": totals,
        "statistics_sha256": statistics_sha256,
        "sources": sources,
        "beam_options": [],
        "timings": {"pipeline_s": round(seconds, 3), "total_s": round(seconds, 3)},
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lake", help="lake root folder (created if missing)")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes written (default: 1000)")
    parser.add_argument("--steps", type=int, default=100, help="steps per episode (default: 100)")
    parser.add_argument("--length-jitter", type=float, default=0.0,
                        help="episode lengths uniform in steps x (1 +- this) (default: 0, all equal)")
    parser.add_argument("--name", default=NAME, help=f"dataset name (default: {NAME})")
    parser.add_argument("--version", default=VERSION, help=f"dataset version (default: {VERSION})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-per-shard", type=int, default=1000,
                        help="the spec's output.steps_per_shard (default: 1000, the spec default)")
    parser.add_argument("--overwrite", action="store_true", help="replace the version if it exists")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    try:
        summary = write_synthetic_lake(
            args.lake, args.episodes, args.steps, name=args.name, version=args.version, seed=args.seed,
            steps_per_shard=args.steps_per_shard,
            length_jitter=args.length_jitter, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        raise SystemExit(f"synthetic_lake.py: {exc}") from None
    print(summary.line())


if __name__ == "__main__":
    main(sys.argv[1:])
