"""Statistics and outlier-action filtering, reading silver Parquet again instead of
holding the dataset in memory. Each step makes partial results per shard, which the
conversion's barriers merge (pipelines/primitives.Gather):

  train silver shard --shard_statistics--> robust median/MAD parts (before filtering)
  every silver shard --FilterActions (raw stats)--> final statistics parts (kept train),
                       filter totals, quarantine, filtered-actions records, silver episode_stats
  merged parts --statistics_document--> dataset_statistics.json (what normalization uses)
  gold writer --saturation_counts (the statistics)--> share at the bound per mode

The gold writer applies the same (deterministic) filter again per episode, so no
filtered copy of the data is ever written or shuffled."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines import primitives
from pipelines.episode import QuarantineRecord
from pipelines.filters import FilterResult, RobustStats, filter_episode
from pipelines.silver_writer import fixed_list, part_name, partition_dir, vectors
from pipelines.stats import DatasetStats, DatasetStatsFn, PixelStats, pixel_stats_from_row
from robolake.normalization import MODES, at_bound, normalize
from robolake.spec import DatasetSpec
from robolake.statistics import ALPHA, VectorStats
from robolake.storage import join, write_table
from schemas.tables import FILTERED_ACTIONS_SCHEMA, episode_stats_schema

STATISTICS_SCHEMA_VERSION = "1.1.0"
TOTALS = "filter_totals"
QUARANTINE = "quarantine"


@dataclass(frozen=True)
class SilverShardFiles:
    split: str
    steps_path: str
    episodes_path: str


@dataclass(frozen=True)
class NumericEpisode:
    """The numbers of one silver episode: raw actions, state and camera pixel statistics."""

    split: str
    episode_id: str
    source_path: str
    source_sha256: str
    actions: np.ndarray
    state: np.ndarray
    cameras: dict[str, PixelStats]


@dataclass(frozen=True)
class FilterCounts:
    """One episode's filtering outcome, for the manifest and the closing summary."""

    split: str
    episode_id: str
    items_clipped: int
    steps_dropped: int
    quarantined: bool
    by_rule: dict[str, int]


def numeric_episodes(files: SilverShardFiles, spec: DatasetSpec) -> Iterator[NumericEpisode]:
    """Each episode of one silver shard, reading only its numeric columns."""
    with FileSystems.open(files.episodes_path, compression_type="uncompressed") as f:
        rows = {row["episode_id"]: row for row in pq.read_table(f).to_pylist()}
    with FileSystems.open(files.steps_path, compression_type="uncompressed") as f:
        steps_file = pq.ParquetFile(f)
        for group in range(steps_file.num_row_groups):
            steps = steps_file.read_row_group(group, columns=["episode_id", "action_raw", "state"])
            row = rows[steps.column("episode_id")[0].as_py()]
            cameras = {
                cam.name: pixel_stats_from_row(
                    row[f"camera_{cam.name}_mean"], row[f"camera_{cam.name}_std"],
                    steps.num_rows * cam.size[0] * cam.size[1],
                )
                for cam in spec.cameras
            }
            yield NumericEpisode(
                files.split, row["episode_id"], row["source_path"], row["source_sha256"],
                vectors(steps, "action_raw"), vectors(steps, "state"), cameras,
            )


def robust_stats(raw: DatasetStats) -> RobustStats:
    median, mad = raw.action.robust()
    result = raw.action.result()
    return RobustStats(median, mad, np.asarray(result["q01"]), np.asarray(result["q99"]))


def filter_records(episode: NumericEpisode, result: FilterResult, names: list[str]) -> list[dict]:
    """One filtered-actions record per flagged item, with the action taken on it."""
    kept_index = np.cumsum(result.keep) - 1
    replacement = {
        (f.step, f.dim): float(result.actions[kept_index[f.step], f.dim]) for f in result.taken if f.policy == "clip"
    }
    return [
        {
            "episode_id": episode.episode_id, "split": episode.split, "step_index": f.step,
            "dimension": names[f.dim], "value": f.value, "rule": f.rule, "policy": f.policy,
            "replacement": replacement.get((f.step, f.dim)),
        }
        for f in result.taken
    ]


def episode_stats_row(episode: NumericEpisode, actions: np.ndarray, state: np.ndarray) -> dict:
    """One row of the silver episode_stats table: the episode's curated action and state
    statistics and its camera pixel moments, in the form that merges again exactly."""
    row = {"episode_id": episode.episode_id}
    for prefix, values in (("action", actions), ("state", state)):
        stats = VectorStats(values.shape[1])
        stats.add(values)
        row |= stats.row(prefix)
    for name, pixels in episode.cameras.items():
        row |= {f"camera_{name}_pixels": pixels.count, f"camera_{name}_mean": pixels.mean.tolist(),
                f"camera_{name}_m2": pixels.m2.tolist()}
    return row


def dataset_statistics_fn(spec: DatasetSpec, state_dim: int) -> DatasetStatsFn:
    return DatasetStatsFn(len(spec.action.names), state_dim, [cam.name for cam in spec.cameras])


def saturation_counts_fn(spec: DatasetSpec, state_dim: int) -> SaturationCountsFn:
    return SaturationCountsFn(len(spec.action.names), state_dim)


def shard_statistics(files: SilverShardFiles, spec: DatasetSpec, state_dim: int) -> DatasetStats:
    """The statistics of one silver shard's episodes as ingested (before filtering)."""
    fn = dataset_statistics_fn(spec, state_dim)
    stats = fn.create_accumulator()
    for episode in numeric_episodes(files, spec):
        stats = fn.add_input(stats, (episode.actions, episode.state, episode.cameras))
    return stats


class _FilterShard(beam.DoFn):
    """Filter every episode of one silver shard; write its filtered-actions records and
    its episodes' statistics rows. Emits the statistics of its kept train episodes and
    its filter totals, both partial results for the conversion to merge."""

    def __init__(self, spec: DatasetSpec, state_dim: int, records_dir: str, episode_stats_root: str):
        self.spec = spec
        self.state_dim = state_dim
        self.records_dir = records_dir
        self.episode_stats_root = episode_stats_root
        self.statistics = dataset_statistics_fn(spec, state_dim)
        self.totals = FilterTotalsFn()

    def process(self, element: tuple[tuple[int, SilverShardFiles], RobustStats]):
        (shard, files), robust = element
        records, stats_rows = [], []
        final, totals = self.statistics.create_accumulator(), self.totals.create_accumulator()
        for episode in numeric_episodes(files, self.spec):
            result = filter_episode(episode.actions, self.spec, robust)
            records += filter_records(episode, result, self.spec.action.names)
            by_rule: dict[str, int] = {}
            for flag in result.taken:
                by_rule[flag.rule] = by_rule.get(flag.rule, 0) + 1
            clipped = sum(f.policy == "clip" for f in result.taken)
            totals = self.totals.add_input(totals, FilterCounts(
                episode.split, episode.episode_id, clipped, int((~result.keep).sum()) if not result.quarantined else 0,
                result.quarantined, by_rule,
            ))
            if result.quarantined:
                yield beam.pvalue.TaggedOutput(
                    QUARANTINE,
                    QuarantineRecord(episode.episode_id, episode.source_path, episode.source_sha256,
                                     "outlier_action", result.rejected),
                )
            else:
                # statistics of the values gold stores (float32), so that they match a query of them
                actions = result.actions.astype(np.float32).astype(np.float64)
                state = episode.state[result.keep]
                stats_rows.append(episode_stats_row(episode, actions, state))
                if episode.split == "train":
                    final = self.statistics.add_input(final, (actions, state, episode.cameras))
        if records:
            path = f"{self.records_dir}/part-{files.split}-{shard:05d}.parquet"
            write_table(path, pa.Table.from_pylist(records, schema=FILTERED_ACTIONS_SCHEMA))
        if stats_rows:
            schema = episode_stats_schema(self.spec, self.state_dim)
            path = join(partition_dir(self.episode_stats_root, files.split), part_name(shard))
            write_table(path, pa.Table.from_pylist(stats_rows, schema=schema))
        yield beam.pvalue.TaggedOutput(TOTALS, totals)
        if files.split == "train":
            yield final


class FilterActions(beam.PTransform):
    """((shard, SilverShardFiles), robust raw statistics) -> partial final statistics (kept train
    episodes), plus partial filter totals (`TOTALS`) and quarantine records."""

    def __init__(self, spec: DatasetSpec, state_dim: int, records_dir: str, episode_stats_root: str):
        super().__init__()
        self.filter = _FilterShard(spec, state_dim, records_dir, episode_stats_root)

    def expand(self, shards):
        return shards | "FilterShards" >> primitives.ParDo(self.filter, tags=(QUARANTINE, TOTALS), main="final")


@dataclass(frozen=True)
class FilterTotals:
    totals: dict


class FilterTotalsFn(beam.CombineFn):
    """Sums FilterCounts into the totals that the manifest and dataset_statistics.json report."""

    def create_accumulator(self) -> dict:
        return {"episodes_with_flags": 0, "items_flagged": 0, "items_clipped": 0, "steps_dropped": 0,
                "episodes_quarantined": 0, "by_rule": {}}

    def add_input(self, totals: dict, counts: FilterCounts) -> dict:
        flagged = sum(counts.by_rule.values())
        totals["episodes_with_flags"] += int(flagged > 0)
        totals["items_flagged"] += flagged
        totals["items_clipped"] += counts.items_clipped
        totals["steps_dropped"] += counts.steps_dropped
        totals["episodes_quarantined"] += int(counts.quarantined)
        for rule, count in counts.by_rule.items():
            totals["by_rule"][rule] = totals["by_rule"].get(rule, 0) + count
        return totals

    def merge_accumulators(self, accumulators) -> dict:
        merged = self.create_accumulator()
        for totals in accumulators:
            for key, value in totals.items():
                if key == "by_rule":
                    for rule, count in value.items():
                        merged["by_rule"][rule] = merged["by_rule"].get(rule, 0) + count
                else:
                    merged[key] += value
        return merged

    def extract_output(self, totals: dict) -> FilterTotals:
        return FilterTotals(totals)


class SaturationCountsFn(beam.CombineFn):
    """Per normalization mode, how many train values of each action and state dimension
    normalize onto the +-1 bound or beyond it, with the version's own statistics."""

    def __init__(self, action_dim: int, state_dim: int):
        self.dims = {"action": action_dim, "state": state_dim}

    def create_accumulator(self) -> dict:
        return {"count": 0, **{key: {mode: np.zeros(dims, np.int64) for mode in MODES} for key, dims in self.dims.items()}}

    def add_input(self, counts: dict, item: tuple) -> dict:
        (actions, state, _), statistics = item
        counts["count"] += len(actions)
        for key, values in (("action", actions), ("state", state)):
            for mode in MODES:
                counts[key][mode] += at_bound(values, statistics, key, mode).sum(axis=0)
        return counts

    def merge_accumulators(self, accumulators) -> dict:
        merged = self.create_accumulator()
        for counts in accumulators:
            merged["count"] += counts["count"]
            for key in self.dims:
                for mode in MODES:
                    merged[key][mode] += counts[key][mode]
        return merged

    def extract_output(self, counts: dict) -> dict:
        """dataset_statistics.json's `saturation`: shares per mode, action and proprio."""
        total = max(1, counts["count"])
        return {"action" if key == "action" else "proprio": {mode: (counts[key][mode] / total).tolist() for mode in MODES}
                for key in self.dims}


def kept_values(curated: pa.Table, steps: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """An episode's kept raw actions (as gold stores them, float32) and raw state, from its
    curated and silver steps: the values its statistics and saturation describe."""
    return vectors(curated, "action_raw").astype(np.float64), vectors(steps, "state")[curated.column("step_index").to_numpy()]


def with_saturation(document: dict, counts: dict, fn: SaturationCountsFn) -> dict:
    """The statistics document with its train values' shares at the bound, per mode."""
    return document | {"robolake": document["robolake"] | {"saturation": _rounded(fn.extract_output(counts))}}


HISTOGRAM_BINS = 40
SIGNIFICANT_DIGITS = 10  # what dataset_statistics.json keeps of each float


def _rounded(value):
    """Floats to SIGNIFICANT_DIGITS: Chan merges in another order (more workers, other
    bundles) differ in the last bits, and the published file must not."""
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def normalized_action_histogram(final: DatasetStats, document: dict, names: list[str]) -> dict:
    """Counts of normalized train actions per dimension over shared bins of [-1, 1],
    from the quantile sketch (bucket values within ALPHA of the data)."""
    edges = np.linspace(-1, 1, HISTOGRAM_BINS + 1)
    counts = {}
    for d, name in enumerate(names):
        values, weights = final.action.sketch.distribution(d)
        vectors = np.zeros((len(values), len(names)))
        vectors[:, d] = values
        normalized = normalize(vectors, document, "action")[:, d]
        counts[name] = np.histogram(normalized, bins=edges, weights=weights)[0].astype(int).tolist()
    return {"edges": edges.tolist(), "counts": counts}


def statistics_document(final: DatasetStats, raw: DatasetStats, spec: DatasetSpec) -> dict:
    """dataset_statistics.json without its filter summary (the driver adds it):
    OpenVLA/Octo keys first, robolake's own under `robolake`."""
    document = _rounded(_statistics(final, raw, spec))
    if final.action.count:
        document["robolake"]["action_histogram"] = normalized_action_histogram(final, document, spec.action.names)
    return document


def _statistics(final: DatasetStats, raw: DatasetStats, spec: DatasetSpec) -> dict:
    mask = spec.action_mask()
    return {
        "action": {**final.action.result(), "mask": mask},
        "proprio": final.state.result(),
        "num_transitions": final.action.count,
        "num_trajectories": final.trajectories,
        "robolake": {
            "schema_version": STATISTICS_SCHEMA_VERSION,
            "split": "train",
            "action_names": list(spec.action.names),
            "normalization": {
                "mode": spec.normalization.mode, "std_bound": spec.normalization.std_bound, "mask": mask,
                "state": spec.normalization.state,
            },
            "quantile_relative_error": ALPHA,
            "cameras": {name: pixels.result() for name, pixels in final.cameras.items()},
            "action_before_filtering": raw.action.result(),
            "filter": {"rules": spec.filters.model_dump(mode="json")},
        },
    }


def curate_steps(steps: pa.Table, spec: DatasetSpec, robust: RobustStats, statistics: dict) -> pa.Table | None:
    """One silver episode as gold stores it: filtered (None if quarantined), `action_raw`
    the filtered raw actions, `action` normalized, step flags following the kept steps
    (is_terminal on the last kept step if the episode ends in a terminal state)."""
    result = filter_episode(vectors(steps, "action_raw"), spec, robust)
    if result.quarantined:
        return None
    terminal = bool(steps.column("is_terminal").to_numpy(zero_copy_only=False).any())
    kept = steps.filter(pa.array(result.keep))
    last = np.arange(kept.num_rows) == kept.num_rows - 1
    replacements = {
        "action_raw": fixed_list(result.actions),
        "action": fixed_list(normalize(result.actions, statistics, "action")),
        "is_first": pa.array(np.arange(kept.num_rows) == 0),
        "is_last": pa.array(last),
        "is_terminal": pa.array(last & terminal),
    }
    if spec.normalization.state:
        replacements["state"] = fixed_list(normalize(vectors(kept, "state"), statistics, "state"))
    for name, column in replacements.items():
        kept = kept.set_column(kept.schema.get_field_index(name), kept.schema.field(name), column)
    return kept
