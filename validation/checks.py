"""The quality gate's checks: each one a DuckDB query over the lake's views that gives a
pandas table, and the Great Expectations expectations that table must meet.

Tables hold one row per thing that can be wrong (an episode, a dimension, a split), with
an id column, so a failed expectation names the offending ones."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import duckdb
import great_expectations as gx
import jsonschema
import numpy as np
import pandas as pd

from robolake.lake import Lake
from robolake.normalization import AT_BOUND, MODES, affine
from robolake.spec import DatasetSpec
from robolake.storage import join, list_files, parquet_file, read_json
from schemas.documents import schema
from validation.quality_flags import CHECK_NAMES as QUALITY_CHECK_NAMES
from validation.quality_flags import Flags, quality_flags, quality_rows


@dataclass
class GateInputs:
    """What every check may read: the lake views of one version and its gold files."""

    con: duckdb.DuckDBPyConnection
    lake: Lake
    spec: DatasetSpec
    manifest: dict
    statistics: dict
    gold_dir: str
    config: dict

    @cached_property
    def normalized_dims(self) -> list[int]:
        mask = self.statistics["action"].get("mask") or [True] * len(self.spec.action.names)
        return [i for i, normalized in enumerate(mask) if normalized]

    @cached_property
    def train_dimensions(self) -> pd.DataFrame:
        """Per normalized dimension (see `_normalized_columns`) over the train split: the
        share of values at the +-1 bound and the number of distinct raw values (None for
        state, whose raw values gold does not keep once normalized)."""
        columns = _normalized_columns(self)
        selects = ", ".join(
            f"count_if(abs({column}[{i + 1}]) >= {AT_BOUND}) / count(*), "
            + (f"count(DISTINCT {raw}[{i + 1}])" if raw != column else "NULL")
            for _, column, raw, i in columns)
        values = self.con.execute(f"SELECT {selects} FROM steps WHERE split = 'train'").fetchone() if columns else ()
        return pd.DataFrame({"dimension": [name for name, *_ in columns],
                             "share_at_bound": [round(values[2 * k], 4) for k in range(len(columns))],
                             "distinct_values": [np.nan if values[2 * k + 1] is None else values[2 * k + 1]
                                                 for k in range(len(columns))]})

    @cached_property
    def per_episode(self) -> pd.DataFrame:
        """Everything the per-episode checks need, from one scan of the curated steps."""
        dims = self.normalized_dims
        largest = "greatest(" + ", ".join(f"abs(action[{i + 1}])" for i in dims) + ")" if dims else "NULL"
        return self.con.execute(f"""
            SELECT episode_id, count(*) AS num_steps,
                   sum({_non_finite('action')} + {_non_finite('action_raw')} + {_non_finite('state')}) AS non_finite,
                   max({largest}) AS max_abs, count_if(is_first) AS firsts, count_if(is_last) AS lasts,
                   count_if(is_first) = 1 AND count_if(is_last) = 1
                   AND arg_min(is_first, step_index) AND arg_max(is_last, step_index) AS flags_ok
            FROM steps GROUP BY episode_id ORDER BY episode_id""").df()

    @cached_property
    def quality(self) -> dict[str, Flags]:
        """Each episode-behaviour check's table (validation/quality_flags.py) by check name."""
        flags = quality_flags(quality_rows(self.con), self.config["episode_quality"], self.spec.action.names,
                              [cam.name for cam in self.spec.cameras], self.spec.control_rate_hz)
        return {check.name: check for check in flags}


@dataclass
class Check:
    name: str
    description: str
    table: pd.DataFrame
    expectations: list = field(default_factory=list)
    id_column: str = "episode_id"
    skipped: str | None = None  # why the check does not apply to this dataset


def _df(inputs: GateInputs, query: str) -> pd.DataFrame:
    return inputs.con.execute(query).df()


def _non_finite(column: str) -> str:
    return f"len(list_filter({column}, lambda x: x IS NULL OR isnan(x) OR isinf(x)))"


def episode_length(inputs: GateInputs) -> Check:
    bounds = inputs.spec.episode_length
    return Check(
        "episode_length", f"steps per episode within [{bounds.min_steps}, {bounds.max_steps or 'inf'}]",
        inputs.per_episode[["episode_id", "num_steps"]],
        [gx.expectations.ExpectColumnValuesToBeBetween(
            column="num_steps", min_value=bounds.min_steps, max_value=bounds.max_steps)],
    )


def finite_values(inputs: GateInputs) -> Check:
    return Check("finite_values", "no NaN, inf or null in action, action_raw or state",
                 inputs.per_episode[["episode_id", "non_finite"]],
                 [gx.expectations.ExpectColumnValuesToBeBetween(column="non_finite", min_value=0, max_value=0)])


def normalized_range(inputs: GateInputs) -> Check:
    name, description = "normalized_range", "normalized action dimensions within [-1, 1]"
    if not inputs.normalized_dims:
        return Check(name, description, pd.DataFrame(), skipped="no dimension is normalized")
    return Check(name, description, inputs.per_episode[["episode_id", "max_abs"]],
                 [gx.expectations.ExpectColumnValuesToBeBetween(column="max_abs", min_value=0, max_value=1.0 + 1e-6)])


def normalized_moments(inputs: GateInputs) -> Check:
    name, description = "normalized_moments", "train split: z-scores (normalized x std_bound) have mean near 0 and std near 1"
    if inputs.spec.normalization.mode != "mean_std":
        return Check(name, description, pd.DataFrame(), skipped=f"normalization mode {inputs.spec.normalization.mode}")
    dims = inputs.normalized_dims
    if not dims:
        return Check(name, description, pd.DataFrame(), skipped="no dimension is normalized")
    k = inputs.spec.normalization.std_bound
    moments = ", ".join(f"avg({k} * action[{i + 1}]), stddev_pop({k} * action[{i + 1}])" for i in dims)
    values = inputs.con.execute(f"SELECT {moments} FROM steps WHERE split = 'train'").fetchone()
    table = pd.DataFrame({
        "dimension": [inputs.spec.action.names[i] for i in dims],
        "mean": [values[2 * k] for k in range(len(dims))],
        "std": [values[2 * k + 1] for k in range(len(dims))],
    })
    tolerance, (low, high) = inputs.config["mean_tolerance"], inputs.config["std_range"]
    return Check(name, f"{description} (|mean| <= {tolerance}, std in [{low}, {high}])", table, [
        gx.expectations.ExpectColumnValuesToBeBetween(column="mean", min_value=-tolerance, max_value=tolerance),
        gx.expectations.ExpectColumnValuesToBeBetween(column="std", min_value=low, max_value=high),
    ], id_column="dimension")


def _normalized_columns(inputs: GateInputs) -> list[tuple[str, str, str, int]]:
    """(name, normalized column, raw column, index) of every normalized dimension: the
    unmasked actions, and the state when the spec normalizes it."""
    columns = [(inputs.spec.action.names[i], "action", "action_raw", i) for i in inputs.normalized_dims]
    if inputs.spec.normalization.state:
        width = len(inputs.statistics["proprio"]["mean"])
        columns += [(f"state[{i}]", "state", "state", i) for i in range(width)]
    return columns


def dimension_spread(inputs: GateInputs) -> Check:
    """A normalized dimension that is constant (it normalizes to 0) or takes two values
    (a gripper left unmasked sits at +-1 by construction) is reported on its own, not as
    saturation."""
    name, description = "dimension_spread", "normalized action dimensions take more than two values in train"
    if not inputs.normalized_dims:
        return Check(name, description, pd.DataFrame(), skipped="no action dimension is normalized")
    table = inputs.train_dimensions.dropna(subset=["distinct_values"]).astype({"distinct_values": int})
    findings = {1: "constant: it normalizes to 0 and carries nothing",
                2: "binary: it sits at +-1 by construction; mask it (normalization.mask) to pass it through as is"}
    table = table.assign(finding=[
        f"{d}: {findings[n]}" if n in findings else d for d, n in zip(table.dimension, table.distinct_values)])
    return Check(name, description, table[["finding", "distinct_values"]],
                 [gx.expectations.ExpectColumnValuesToBeBetween(column="distinct_values", min_value=3)],
                 id_column="finding")


def normalization_saturation(inputs: GateInputs) -> Check:
    """The share of train values that normalization clips onto +-1, per continuous
    normalized dimension; a failure names the modes whose share on the same data is
    within the limit (dataset_statistics.json's `saturation`)."""
    limit = inputs.config["saturation_max"]
    name = "normalization_saturation"
    description = f"train split: at most {limit:.0%} of a continuous normalized dimension's values at the +-1 bound"
    dimensions = inputs.train_dimensions
    table = dimensions[dimensions.distinct_values.isna() | (dimensions.distinct_values > 2)]
    if table.empty:
        return Check(name, description, pd.DataFrame(), skipped="no continuous dimension is normalized")
    by_mode = inputs.statistics["robolake"].get("saturation", {})

    def finding(dimension: str, share: float) -> str:
        key, index = ("proprio", int(dimension[6:-1])) if dimension.startswith("state[") else (
            "action", inputs.spec.action.names.index(dimension))
        avoiding = [f"{mode} {by_mode[key][mode][index]:.1%}" for mode in MODES
                    if mode in by_mode.get(key, {}) and by_mode[key][mode][index] <= limit]
        return f"{dimension} {share:.1%} at the bound" + (f" (would be: {', '.join(avoiding)})" if avoiding else "")

    table = table.assign(finding=[finding(d, s) for d, s in zip(table.dimension, table.share_at_bound)])
    return Check(name, description, table[["finding", "share_at_bound"]],
                 [gx.expectations.ExpectColumnValuesToBeBetween(column="share_at_bound", min_value=0, max_value=limit)],
                 id_column="finding")


def normalization_roundtrip(inputs: GateInputs) -> Check:
    """What normalization loses, per normalized action dimension over every split: the
    share of values clipped, the largest and the mean |denormalize(normalize(x)) - x| in
    the action's own units, and the signal lost: mean error / mean |x|. (The largest
    error alone cannot tell a mode apart: bounds_q99 cuts the 1% tails by design.)"""
    tolerance = inputs.config["roundtrip_tolerance"]
    name = "normalization_roundtrip"
    description = f"round trip loses at most {tolerance:.0%} of a dimension's mean magnitude"
    dims = inputs.normalized_dims
    if not dims:
        return Check(name, description, pd.DataFrame(), skipped="no action dimension is normalized")
    a = affine(inputs.statistics, "action")
    errors = [f"abs(action[{i + 1}] * {float(a.scale[i])!r} + {float(a.center[i])!r} - action_raw[{i + 1}])"
              for i in dims]
    selects = ", ".join(
        f"count_if(abs(action[{i + 1}]) >= {AT_BOUND}) / count(*), max({error}), avg({error}), "
        f"avg({error}) / nullif(avg(abs(action_raw[{i + 1}])), 0)" for i, error in zip(dims, errors))
    values = inputs.con.execute(f"SELECT {selects} FROM steps").fetchone()
    table = pd.DataFrame({
        "dimension": [inputs.spec.action.names[i] for i in dims],
        "clipped_share": [round(values[4 * k], 4) for k in range(len(dims))],
        "max_error": [values[4 * k + 1] for k in range(len(dims))],
        "mean_error": [values[4 * k + 2] for k in range(len(dims))],
        "signal_lost": [values[4 * k + 3] or 0.0 for k in range(len(dims))],
    })
    return Check(name, description, table, [gx.expectations.ExpectColumnValuesToBeBetween(
        column="signal_lost", min_value=0, max_value=tolerance)], id_column="dimension")


def step_flags(inputs: GateInputs) -> Check:
    return Check("step_flags", "exactly one is_first, at the first step, and one is_last, at the last",
                 inputs.per_episode[["episode_id", "firsts", "lasts", "flags_ok"]],
                 [gx.expectations.ExpectColumnValuesToBeInSet(column="flags_ok", value_set=[True])])


def truncated_episodes(inputs: GateInputs) -> Check:
    """Episodes that end without a terminal state (a subset cut short, a recording without
    done flags): training code that reads is_terminal as success should know which."""
    name, description = "truncated_episodes", "episodes end in a terminal state (is_terminal on the last step)"
    if "truncated" not in {row[0] for row in inputs.con.execute("DESCRIBE episodes").fetchall()}:
        return Check(name, description, pd.DataFrame(), skipped="built before episodes recorded truncation")
    return Check(name, description, _df(inputs, "SELECT episode_id, truncated FROM episodes ORDER BY episode_id"),
                 [gx.expectations.ExpectColumnValuesToBeInSet(column="truncated", value_set=[False])])


def _frame_size(data: bytes) -> tuple[int, int] | None:
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return None if frame is None else frame.shape[:2]


def image_shape(inputs: GateInputs) -> Check:
    """The shapes features.json declares, and the first frame of a sample of episodes per
    camera (every frame was checked by TFDS when gold was written)."""
    name, description = "image_shape", "camera frames have the spec's size"
    if not inputs.spec.cameras:
        return Check(name, description, pd.DataFrame(), skipped="the dataset has no camera")
    declared = _declared_image_shapes(inputs.gold_dir)
    rows = []
    for cam in inputs.spec.cameras:
        expected = f"{cam.size[0]}x{cam.size[1]}"
        found = declared.get(cam.name, "missing")
        rows.append({"episode_id": "(features.json)", "camera": cam.name, "expected": expected, "found": found,
                     "shape_ok": found == expected})
    files = _first_frames(inputs, [cam.name for cam in inputs.spec.cameras])
    for episode_id, frames in files:
        for cam in inputs.spec.cameras:
            size = _frame_size(frames[cam.name])
            found = "undecodable" if size is None else f"{size[0]}x{size[1]}"
            expected = f"{cam.size[0]}x{cam.size[1]}"
            rows.append({"episode_id": episode_id, "camera": cam.name, "expected": expected, "found": found,
                         "shape_ok": found == expected})
    return Check(name, f"{description} (features.json and the first frame of {len(files)} episodes)",
                 pd.DataFrame(rows), [gx.expectations.ExpectColumnValuesToBeInSet(column="shape_ok", value_set=[True])])


def _declared_image_shapes(gold_dir: str) -> dict[str, str]:
    """Camera name -> "HxW" of every Image feature of the steps' observation in features.json."""
    features = read_json(join(gold_dir, "features.json"))
    observation = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"][
        "observation"]["featuresDict"]["features"]
    return {name: "x".join(feature["image"]["shape"]["dimensions"][:2])
            for name, feature in observation.items() if "image" in feature}


def _first_frames(inputs: GateInputs, cameras: list[str]) -> list[tuple[str, dict[str, bytes]]]:
    """(episode id, {camera: encoded first frame}) of an evenly spaced sample of episodes,
    read from the silver steps files (the same bytes gold stores; one row group per episode)."""
    silver = inputs.lake.silver_partition(inputs.spec.name, "steps", inputs.spec.version)
    files = list_files(join(silver, "split=*", "*.parquet"))
    groups = []
    for path in files:
        with parquet_file(path) as parquet:
            groups += [(path, group) for group in range(parquet.num_row_groups)]
    columns = ["episode_id", *(f"image_{c}" for c in cameras)]
    frames = []
    for path, group in groups[::max(1, math.ceil(len(groups) / inputs.config["image_sample_episodes"]))]:
        with parquet_file(path) as parquet:
            table = parquet.read_row_group(group, columns=columns)
        frames.append((table.column("episode_id")[0].as_py(),
                       {c: table.column(f"image_{c}")[0].as_py() for c in cameras}))
    return frames


def instructions(inputs: GateInputs) -> Check:
    table = _df(inputs, "SELECT episode_id, language_instruction FROM episodes ORDER BY episode_id")
    return Check("instructions", "instructions are not empty and not generic labels such as task_17", table, [
        gx.expectations.ExpectColumnValuesToNotMatchRegex(
            column="language_instruction", regex=inputs.config["generic_instruction"]),
    ])


def unique_episode_ids(inputs: GateInputs) -> Check:
    table = _df(inputs, "SELECT episode_id FROM episodes ORDER BY episode_id")
    return Check("unique_episode_ids", "every episode id appears once", table,
                 [gx.expectations.ExpectColumnValuesToBeUnique(column="episode_id")])


def split_fractions(inputs: GateInputs) -> Check:
    name, description = "split_fractions", "split shares close to the spec's fractions"
    policy = inputs.spec.splits
    if policy.by != "episode_hash":
        reason = {"task": "splits by task (held-out tasks set the shares)", "keep": "splits kept from the source"}
        return Check(name, description, pd.DataFrame(), skipped=reason[policy.by])
    counts = dict(inputs.con.execute("SELECT split, count(*) FROM episodes GROUP BY split").fetchall())
    total = sum(counts.values())
    rows = []
    for split, fraction in sorted(policy.fractions.items()):
        observed = counts.get(split, 0) / total
        allowed = inputs.config["split_tolerance"] + 3 * math.sqrt(fraction * (1 - fraction) / total)
        rows.append({"split": split, "expected": fraction, "observed": round(observed, 4),
                     "excess": round(max(0.0, abs(observed - fraction) - allowed), 4)})
    return Check(name, f"{description} (within {inputs.config['split_tolerance']} + 3 binomial std)",
                 pd.DataFrame(rows), [gx.expectations.ExpectColumnValuesToBeBetween(
                     column="excess", min_value=0, max_value=0)], id_column="split")


def split_leakage(inputs: GateInputs) -> Check:
    query = "SELECT 'episode' AS kind, episode_id AS key, count(DISTINCT split) AS splits FROM episodes GROUP BY ALL"
    held_out = [task for tasks in inputs.spec.splits.held_out_tasks.values() for task in tasks]
    if inputs.spec.splits.by == "task" and held_out:
        listed = ", ".join(f"'{task}'" for task in held_out)
        query += (f" UNION ALL SELECT 'task', task, count(DISTINCT split) FROM episodes "
                  f"WHERE task IN ({listed}) GROUP BY ALL")
    table = _df(inputs, f"SELECT kind || ' ' || key AS item, splits FROM ({query}) ORDER BY item")
    return Check("split_leakage", "no episode, and no held-out task, in two splits", table,
                 [gx.expectations.ExpectColumnValuesToBeBetween(column="splits", min_value=1, max_value=1)],
                 id_column="item")


def statistics_schema(inputs: GateInputs) -> Check:
    errors = sorted(jsonschema.Draft202012Validator(schema("dataset_statistics")).iter_errors(inputs.statistics), key=str)
    table = pd.DataFrame([{"file": "dataset_statistics.json", "valid": not errors,
                           "error": errors[0].message if errors else ""}])
    return Check("statistics_schema", "dataset_statistics.json is valid against its JSON Schema", table,
                 [gx.expectations.ExpectColumnValuesToBeInSet(column="valid", value_set=[True])], id_column="file")


def quarantine_share(inputs: GateInputs) -> Check:
    counts = inputs.manifest["counts"]
    share = counts["episodes_quarantined"] / max(1, counts["episodes_found"])
    limit = inputs.config["quarantine_share_max"]
    table = pd.DataFrame([{"dataset": inputs.spec.name, "quarantined": counts["episodes_quarantined"],
                           "found": counts["episodes_found"], "share": round(share, 4)}])
    return Check("quarantine_share", f"quarantined episodes at most {limit:.0%} of those found", table,
                 [gx.expectations.ExpectColumnValuesToBeBetween(column="share", min_value=0, max_value=limit)],
                 id_column="dataset")


def _behaviour_check(name: str):
    """The gate check of one episode-behaviour table: each value column at most its limit;
    its ids name the episode with the values over a limit, worst first."""
    def check(inputs: GateInputs) -> Check:
        flags = inputs.quality[name]
        if flags.skipped:
            return Check(name, flags.description, pd.DataFrame(), skipped=flags.skipped)
        return Check(name, flags.description, flags.table[["episode", *flags.limits]], [
            gx.expectations.ExpectColumnValuesToBeBetween(column=column, max_value=limit)
            for column, limit in flags.limits.items()], id_column="episode")
    check.__name__ = name
    return check


CHECKS = [episode_length, finite_values, normalized_range, normalized_moments, dimension_spread,
          normalization_saturation, normalization_roundtrip, step_flags, truncated_episodes, image_shape,
          instructions, unique_episode_ids, split_fractions, split_leakage, statistics_schema, quarantine_share,
          *(_behaviour_check(name) for name in QUALITY_CHECK_NAMES)]
