"""The conversion pipeline: discover -> plan (list, split, shard) -> ingest (read,
preprocess, write silver Parquet; sha256 of each source file on a background thread
meanwhile) -> filter outlier actions (with the statistics of the train split as
ingested) -> write gold RLDS shards (filtered, normalized with the statistics after
filtering) -> summary. Each step reports its seconds of work into the summary
(`TIMINGS`), so every runner tells where the time went.

The three global steps (statistics before filtering, statistics after it, the summary)
are barriers (pipelines/primitives.py): per-shard partial results are gathered into one
element and the next step's shards scattered again, two shuffles per barrier. Only
episode references, partial statistics and counters cross a shuffle; images stay inside
the shard that reads them, so memory is flat in the dataset size on every runner."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa

from pipelines import primitives
from pipelines.curation import (
    TOTALS, FilterActions, FilterTotalsFn, SilverShardFiles, curate_steps, dataset_statistics_fn, kept_values,
    robust_stats, saturation_counts_fn, shard_statistics, statistics_document, with_saturation,
)
from pipelines.episode import Episode, EpisodeRef, EpisodeRejected, QuarantineRecord, read_failure, stable_hash
from pipelines.images import FramePreprocessor
from pipelines.rlds_writer import EpisodeSerializer, shard_filename, silver_episodes
from pipelines.silver_writer import ShardStepsWriter, episode_row, episodes_table, part_name, partition_dir
from pipelines.sources import SourceReader
from pipelines.filters import RobustStats
from pipelines.splits import assign_shards, assign_split
from pipelines.tfrecord import write_tfrecord
from robolake import episode_quality
from robolake import progress
from robolake.hashing import sha256_source
from robolake.lake import Build
from robolake.spec import DatasetSpec
from robolake.storage import join, read_table, write_json, write_table
from schemas.rlds import EPISODE_FLAGS, rlds_features
from schemas.tables import curated_steps_schema, episode_quality_schema

QUARANTINE = "quarantine"
SOURCES = "sources"
SILVER_SHARDS = "silver_shards"
GOLD_SHARDS = "gold_shards"
FILTER_TOTALS = "filter_totals"
STATISTICS = "statistics"
HASHES = "hashes"  # (path, sha256) of every source file
RAW_STATISTICS = "raw_statistics"  # DatasetStats of a train shard as ingested (before filtering)
FINAL_STATISTICS = "final_statistics"  # DatasetStats of a train shard's kept episodes (after filtering)
SATURATION = "saturation"  # SaturationCountsFn counts of a train shard's gold values
TIMINGS = "timings"


@dataclass(frozen=True)
class SourceFile:
    path: str
    relative_id: str
    bytes: int = 0
    mtime: float = 0.0
    known_sha256: str | None = None  # registered in lake/raw/manifest.parquet for this size and mtime
    companions: tuple[str, ...] = ()  # files hashed with it (a bag's sidecar YAML)


@dataclass(frozen=True)
class PlannedEpisode:
    """An episode to ingest and, for the first episode of a file whose sha256 is not
    registered, that file: hashed where the episode is ingested, beside the frame work."""

    ref: EpisodeRef
    hash_source: SourceFile | None = None


@dataclass(frozen=True)
class SourceRecord:
    path: str
    relative_id: str
    sha256: str
    bytes: int
    mtime: float
    episodes: int  # planned for ingest
    quarantined: int  # quarantined while planning (unreadable file, missing attribute)
    companions: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageSeconds:
    """Seconds of work one step spent on one element (a file, a shard), summed per stage by the driver."""

    stage: str  # plan, hash, ingest, curate or write_rlds
    seconds: float


@dataclass(frozen=True)
class ShardResult:
    split: str
    shard: int
    episodes: int
    steps: int
    dropped_ticks: dict[str, int] = dataclasses.field(default_factory=dict)  # rosbag alignment, by stream
    sources: tuple[str, ...] = ()  # the source files of its written episodes


@dataclass(frozen=True)
class GoldShard:
    split: str
    index: int
    episodes: int
    steps: int
    bytes: int
    flagged: dict[str, int] = dataclasses.field(default_factory=dict)  # episodes per flag (schemas/rlds.py)


@dataclass(frozen=True)
class Statistics:
    document: dict


@dataclass(frozen=True)
class BuildContext:
    """Everything the workers need, picklable: spec, source reader and staging paths."""

    spec: DatasetSpec
    source: SourceReader
    state_dim: int
    staging: str
    position: tuple[int, int] | None = None  # the end-effector position's state columns (episode quality)

    @property
    def build(self) -> Build:
        """The lake build folder being written (`staging`): its layout is the lake's."""
        return Build(self.staging, self.spec.name, self.spec.version)

    @property
    def progress_dir(self) -> str:
        return self.build.progress

    @property
    def steps_root(self) -> str:
        return self.build.silver("steps")

    @property
    def episodes_root(self) -> str:
        return self.build.silver("episodes")

    @property
    def curated_root(self) -> str:
        return self.build.silver("curated_steps")

    @property
    def episode_stats_root(self) -> str:
        return self.build.silver("episode_stats")

    @property
    def episode_quality_root(self) -> str:
        return self.build.episode_quality

    @property
    def gold_dir(self) -> str:
        return self.build.gold

    @property
    def filtered_actions_dir(self) -> str:
        return self.build.filtered_actions

    @property
    def summary_path(self) -> str:
        return self.build.summary


def hash_source(source: SourceFile) -> tuple[tuple[str, str], StageSeconds]:
    """(path, sha256) of one source file (with its companions), and the seconds it took."""
    started = time.perf_counter()
    sha256 = sha256_source(source.path, source.companions)
    return (source.path, sha256), StageSeconds("hash", time.perf_counter() - started)


class _PlanFile(beam.DoFn):
    """List one source file's episodes (attributes only, no arrays; ids and splits never
    depend on the file's hash). A registered sha256 is used as it is; otherwise the file
    is hashed where its first episode is ingested (`PlannedEpisode.hash_source`), and
    only a file with no episode to ingest is hashed here. Until then the records carry
    an empty sha256, filled in from `HASHES` downstream."""

    def __init__(self, ctx: BuildContext):
        self.ctx = ctx

    def process(self, source: SourceFile):
        started = time.perf_counter()
        episodes = quarantined = 0
        try:
            for item in self.ctx.source.plan(source.path, source.relative_id, source.known_sha256 or ""):
                if isinstance(item, QuarantineRecord):
                    quarantined += 1
                    yield beam.pvalue.TaggedOutput(QUARANTINE, item)
                else:
                    yield PlannedEpisode(item, None if episodes or source.known_sha256 else source)
                    episodes += 1
        except Exception as exc:  # the rest of the file cannot be listed: it is quarantined, the build goes on
            quarantined += 1
            failure = read_failure(source.relative_id, source.path, source.known_sha256 or "", exc)
            yield beam.pvalue.TaggedOutput(QUARANTINE, failure)
        progress.report(
            self.ctx.progress_dir, f"plan-{stable_hash(source.path)[:16]}",
            planned=episodes + quarantined, quarantined=quarantined,
        )
        yield beam.pvalue.TaggedOutput(TIMINGS, StageSeconds("plan", time.perf_counter() - started))
        if source.known_sha256:
            yield beam.pvalue.TaggedOutput(HASHES, (source.path, source.known_sha256))
        elif not episodes:
            path_sha256, seconds = hash_source(source)
            yield beam.pvalue.TaggedOutput(HASHES, path_sha256)
            yield beam.pvalue.TaggedOutput(TIMINGS, seconds)
        record = SourceRecord(
            source.path, source.relative_id, "", source.bytes, source.mtime, episodes, quarantined, source.companions
        )
        yield beam.pvalue.TaggedOutput(SOURCES, record)


def _with_split(planned: PlannedEpisode, spec: DatasetSpec) -> tuple[str, PlannedEpisode]:
    split = assign_split(planned.ref, spec.splits)
    return split, dataclasses.replace(planned, ref=dataclasses.replace(planned.ref, split=split))


def _shard_split(keyed: tuple[str, list[PlannedEpisode]], steps_per_shard: int):
    planned = list(keyed[1])
    hash_sources = {p.ref.episode_id: p.hash_source for p in planned if p.hash_source}
    for ref in assign_shards([p.ref for p in planned], steps_per_shard):
        yield (ref.split, ref.shard), PlannedEpisode(ref, hash_sources.get(ref.episode_id))


class PlanEpisodes(beam.PTransform):
    """Source files -> ((split, shard), PlannedEpisode), plus quarantine and source records,
    the hashes known (or computed) while planning, and timings."""

    def __init__(self, ctx: BuildContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, sources):
        planned = sources | "List" >> primitives.ParDo(
            _PlanFile(self.ctx), tags=(QUARANTINE, SOURCES, HASHES, TIMINGS), main="refs"
        )
        placed = (
            planned["refs"]
            | "AssignSplit" >> beam.Map(_with_split, self.ctx.spec)
            | "GroupBySplit" >> beam.GroupByKey()
            | "AssignShards" >> beam.FlatMap(_shard_split, self.ctx.spec.output.steps_per_shard)
        )
        return {"placed": placed, **{tag: planned[tag] for tag in (QUARANTINE, SOURCES, HASHES, TIMINGS)}}


class _IngestShard(beam.DoFn):
    """Read, check and preprocess one shard's episodes; write its silver Parquet files and,
    for a train shard, emit their statistics. Meanwhile a background thread hashes the
    source files this shard's episodes own (`PlannedEpisode.hash_source`): hashlib
    releases the GIL, so the sha256 of the raw bytes runs beside the frame work instead
    of before it."""

    def __init__(self, ctx: BuildContext):
        self.ctx = ctx

    def setup(self):
        self.preprocessors = {cam.name: FramePreprocessor(cam) for cam in self.ctx.spec.cameras}
        self.hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")

    def teardown(self):
        self.hasher.shutdown()

    def process(self, keyed: tuple[tuple[str, int], list[PlannedEpisode]]):
        (split, shard), planned = keyed
        ctx = self.ctx
        planned = sorted(planned, key=lambda p: p.ref.order_key)
        hashing = [self.hasher.submit(hash_source, p.hash_source) for p in planned if p.hash_source]
        refs = [p.ref for p in planned]
        started = time.perf_counter()
        steps_path = join(partition_dir(ctx.steps_root, split), part_name(shard))
        writer, written, quarantined, dropped_ticks, quality = None, [], 0, {}, []
        for ref in refs:
            try:
                episode = ctx.source.read(ref, ctx.state_dim, self.preprocessors)
            except EpisodeRejected as exc:
                record = QuarantineRecord(ref.episode_id, ref.source_path, ref.source_sha256, exc.code, exc.reason)
            except Exception as exc:  # whatever fails in one episode quarantines it, never the build
                record = read_failure(ref.episode_id, ref.source_path, ref.source_sha256, exc)
            else:
                writer = writer or ShardStepsWriter(steps_path, ctx.spec, ctx.state_dim)
                writer.write(episode)
                written.append(episode_row(episode))
                quality.append(quality_row(episode, ctx))
                for stream, count in episode.dropped_ticks.items():
                    dropped_ticks[stream] = dropped_ticks.get(stream, 0) + count
                record = None
            if record is not None:
                quarantined += 1
                yield beam.pvalue.TaggedOutput(QUARANTINE, record)
            progress.report(
                ctx.progress_dir, f"ingest-{split}-{shard}",
                written=len(written), quarantined=quarantined, steps=sum(row.num_steps for row in written),
            )
        result = ShardResult(split, shard, len(written), sum(row.num_steps for row in written), dropped_ticks,
                             tuple(sorted({row.ref.source_path for row in written})))
        if writer is not None:
            writer.close()
            table = episodes_table(written, ctx.spec)
            write_table(join(partition_dir(ctx.episodes_root, split), part_name(shard)), table)
            write_table(join(partition_dir(ctx.episode_quality_root, split), part_name(shard)),
                        pa.Table.from_pylist(quality, schema=episode_quality_schema(ctx.spec)))
            if split == "train":
                yield beam.pvalue.TaggedOutput(RAW_STATISTICS, shard_statistics(shard_files(ctx, result), ctx.spec,
                                                                                ctx.state_dim))
        yield beam.pvalue.TaggedOutput(TIMINGS, StageSeconds("ingest", time.perf_counter() - started))
        for future in hashing:
            path_sha256, seconds = future.result()
            yield beam.pvalue.TaggedOutput(HASHES, path_sha256)
            yield beam.pvalue.TaggedOutput(TIMINGS, seconds)
        yield result


def quality_row(episode: Episode, ctx: BuildContext) -> dict:
    """The episode's row of the silver episode_quality table: carried from a member version
    (lake source), or computed from the arrays and camera summaries ingest holds."""
    row = episode.quality or episode_quality.episode_row(
        episode.actions, ctx.spec.action.names, episode.state, episode.timestamps, ctx.spec.control_rate_hz,
        {name: (summary.brightness, summary.change) for name, summary in episode.cameras.items()}, ctx.position,
    )
    return row | {"episode_id": episode.ref.episode_id}


def shard_files(ctx: BuildContext, result: ShardResult) -> SilverShardFiles:
    return SilverShardFiles(
        result.split,
        join(partition_dir(ctx.steps_root, result.split), part_name(result.shard)),
        join(partition_dir(ctx.episodes_root, result.split), part_name(result.shard)),
    )


class IngestShards(beam.PTransform):
    """((split, shard), PlannedEpisode) -> ShardResult, plus quarantine records, the
    statistics of each train shard as ingested, the hashes of the files its episodes own,
    and timings."""

    def __init__(self, ctx: BuildContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, placed):
        return (
            placed
            | "GroupByShard" >> beam.GroupByKey()
            | "ReadPreprocessWrite" >> primitives.ParDo(
                _IngestShard(self.ctx), tags=(QUARANTINE, RAW_STATISTICS, HASHES, TIMINGS), main="shards"
            )
        )


def fill_source_sha256(episodes_path: str, hashes: dict[str, str]) -> None:
    """Write the source files' sha256 into a silver episodes table, which ingest wrote
    before every file was hashed (a table already holding them is left as it is)."""
    table = read_table(episodes_path)
    sha256 = [hashes[path] for path in table.column("source_path").to_pylist()]
    if table.column("source_sha256").to_pylist() != sha256:
        index = table.schema.get_field_index("source_sha256")
        write_table(episodes_path, table.set_column(index, table.schema.field(index), pa.array(sha256, pa.string())))


@dataclass(frozen=True)
class GoldShardWork:
    """One filled silver shard to write as gold: its index among its split's filled shards,
    and the sha256 of its episodes' source files (only theirs: a shuffle carries each
    file's hash to the shards that hold its episodes, not every hash to every shard)."""

    result: ShardResult
    index: int
    count: int
    hashes: dict[str, str]


@dataclass(frozen=True)
class GoldShared:
    """What every gold shard's writer shares: the filter's robust statistics (of the train
    split as ingested) and the statistics document (normalization's)."""

    robust: RobustStats
    statistics: dict


def _filled(results: list[ShardResult]) -> list[ShardResult]:
    return sorted((r for r in results if r.episodes > 0), key=lambda r: (r.split, r.shard))


def _filter_work(gathered: dict, ctx: BuildContext) -> tuple[list[tuple[int, SilverShardFiles]], RobustStats]:
    """Barrier 1: the filled silver shards to filter, sharing the robust statistics as ingested."""
    files = [(r.shard, shard_files(ctx, r)) for r in _filled(gathered[SILVER_SHARDS])]
    return files, robust_stats(gathered[RAW_STATISTICS])


def _with_statistics(gathered: dict, ctx: BuildContext) -> dict:
    """Barrier 2's element with dataset_statistics.json (without its saturation and filter
    summary) under STATISTICS, computed once for the gold writers and the summary."""
    return gathered | {STATISTICS: statistics_document(gathered[FINAL_STATISTICS], gathered[RAW_STATISTICS], ctx.spec)}


def _document(gathered: dict) -> dict:
    return gathered[STATISTICS]


def _gold_work(gathered: dict) -> tuple[list[GoldShardWork], GoldShared]:
    """Barrier 2: the filled silver shards to write as gold, numbered per split, and what they share."""
    filled = _filled(gathered[SILVER_SHARDS])
    hashes = dict(gathered[HASHES])
    per_split, numbered = Counter(r.split for r in filled), Counter()
    work = []
    for result in filled:
        shard_hashes = {path: hashes[path] for path in result.sources}
        work.append(GoldShardWork(result, numbered[result.split], per_split[result.split], shard_hashes))
        numbered[result.split] += 1
    return work, GoldShared(robust_stats(gathered[RAW_STATISTICS]), gathered[STATISTICS])


class _WriteGoldShard(beam.DoFn):
    """Curate and encode one silver shard's episodes as TFDS examples into one TFRecord
    shard (the sha256 of their sources filled into silver first). A train shard also
    counts its values at the normalization bound (`SATURATION`)."""

    def __init__(self, ctx: BuildContext):
        self.ctx = ctx
        self.saturation = saturation_counts_fn(ctx.spec, ctx.state_dim)

    def setup(self):
        self.serializer = EpisodeSerializer(rlds_features(self.ctx.spec, self.ctx.state_dim))

    def process(self, element: tuple[GoldShardWork, GoldShared]):
        work, shared = element
        result = work.result
        started, curating = time.perf_counter(), [0.0]
        ctx = self.ctx
        steps = []
        curated_schema, curated_tables = curated_steps_schema(ctx.spec, ctx.state_dim), []
        at_bound = [self.saturation.create_accumulator()]

        def curate(table):
            curate_started = time.perf_counter()
            curated = curate_steps(table, ctx.spec, shared.robust, shared.statistics)
            steps.append(curated.num_rows if curated is not None else 0)
            if curated is not None:
                curated_tables.append(curated.select(curated_schema.names))
                if result.split == "train":
                    values = (*kept_values(curated, table), None)
                    at_bound[0] = self.saturation.add_input(at_bound[0], (values, shared.statistics))
            curating[0] += time.perf_counter() - curate_started
            return curated

        flagged = Counter()

        def serialized(episodes):
            for episode in episodes:
                flagged.update(flag for flag in EPISODE_FLAGS if episode["episode_metadata"][flag])
                yield self.serializer.serialize(episode)

        files = shard_files(ctx, result)
        fill_source_sha256(files.episodes_path, work.hashes)
        episodes = silver_episodes(files.steps_path, files.episodes_path, ctx.spec, curate)
        path = join(ctx.gold_dir, shard_filename(ctx.spec.name, result.split, work.index, work.count))
        count, size = write_tfrecord(path, serialized(episodes))
        # the shard's numeric steps in one row group: readers scan them, never one episode
        curated_path = join(partition_dir(ctx.curated_root, result.split), part_name(result.shard))
        write_table(curated_path, pa.concat_tables(curated_tables) if curated_tables else curated_schema.empty_table())
        yield beam.pvalue.TaggedOutput(TIMINGS, StageSeconds("curate", curating[0]))
        yield beam.pvalue.TaggedOutput(TIMINGS, StageSeconds("write_rlds", time.perf_counter() - started - curating[0]))
        if result.split == "train":
            yield beam.pvalue.TaggedOutput(SATURATION, at_bound[0])
        yield GoldShard(result.split, work.index, count, sum(steps), size, dict(flagged))


class WriteRlds(beam.PTransform):
    """(GoldShardWork, GoldShared) -> GoldShard records, plus timings and saturation counts."""

    def __init__(self, ctx: BuildContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, work):
        return work | "CurateEncodeWrite" >> primitives.ParDo(
            _WriteGoldShard(self.ctx), tags=(TIMINGS, SATURATION), main="shards"
        )


def _with_source_sha256(record: QuarantineRecord, hashes: dict[str, str]) -> QuarantineRecord:
    """A quarantine record with its file's sha256 (records made before the file was hashed have none)."""
    return record if record.source_sha256 else dataclasses.replace(record, source_sha256=hashes[record.source_path])


def _write_summary(gathered: dict, ctx: BuildContext) -> None:
    """Barrier 3, the pipeline's last step: everything the driver reports, in one JSON file.
    Records get their files' sha256, and the partial totals and saturation counts are merged."""
    hashes = dict(gathered[HASHES])
    saturation = saturation_counts_fn(ctx.spec, ctx.state_dim)
    [document] = gathered[STATISTICS]
    rows = {
        QUARANTINE: [_with_source_sha256(record, hashes) for record in gathered[QUARANTINE]],
        SOURCES: [dataclasses.replace(record, sha256=hashes[record.path]) for record in gathered[SOURCES]],
        SILVER_SHARDS: gathered[SILVER_SHARDS],
        GOLD_SHARDS: gathered[GOLD_SHARDS],
        FILTER_TOTALS: [FilterTotalsFn().extract_output(gathered[FILTER_TOTALS])],
        STATISTICS: [Statistics(with_saturation(document, gathered[SATURATION], saturation))],
        TIMINGS: gathered[TIMINGS],
    }
    write_json(ctx.summary_path, {name: [dataclasses.asdict(row) for row in values] for name, values in rows.items()})


def build_pipeline(pipeline: beam.Pipeline, ctx: BuildContext, sources: list[SourceFile]) -> None:
    """The conversion graph. Beam's DaskRunner computes only the last step's bag (and what
    it needs), so every step leads into the summary."""
    statistics_fn = dataset_statistics_fn(ctx.spec, ctx.state_dim)
    planned = (
        pipeline
        | "Discover" >> beam.Create(sources)
        | "Spread" >> beam.Reshuffle()
        | "Plan" >> PlanEpisodes(ctx)
    )
    ingested = planned["placed"] | "Ingest" >> IngestShards(ctx)
    hashes = (planned[HASHES], ingested[HASHES]) | "AllHashes" >> beam.Flatten()
    filtered = (
        {SILVER_SHARDS: ingested["shards"], RAW_STATISTICS: ingested[RAW_STATISTICS]}
        | "RawStatistics" >> primitives.Gather(merging={RAW_STATISTICS: statistics_fn})
        | "ToFilter" >> primitives.Scatter(_filter_work, ctx)
        | "FilterActions" >> FilterActions(ctx.spec, ctx.state_dim, ctx.filtered_actions_dir, ctx.episode_stats_root)
    )
    before_gold = (
        {SILVER_SHARDS: ingested["shards"], RAW_STATISTICS: ingested[RAW_STATISTICS],
         FINAL_STATISTICS: filtered["final"], HASHES: hashes}
        | "Statistics" >> primitives.Gather(merging={RAW_STATISTICS: statistics_fn, FINAL_STATISTICS: statistics_fn})
        | "StatisticsDocument" >> beam.Map(_with_statistics, ctx)
    )
    gold = before_gold | "ToWrite" >> primitives.Scatter(_gold_work) | "WriteRLDS" >> WriteRlds(ctx)
    summary = {
        QUARANTINE: (planned[QUARANTINE], ingested[QUARANTINE], filtered[QUARANTINE]) | "AllQuarantined" >> beam.Flatten(),
        SOURCES: planned[SOURCES], SILVER_SHARDS: ingested["shards"], GOLD_SHARDS: gold["shards"],
        FILTER_TOTALS: filtered[TOTALS], STATISTICS: before_gold | "Document" >> beam.Map(_document),
        SATURATION: gold[SATURATION], HASHES: hashes,
        TIMINGS: (planned[TIMINGS], ingested[TIMINGS], gold[TIMINGS]) | "AllTimings" >> beam.Flatten(),
    }
    (
        summary
        | "Summarize" >> primitives.Gather(merging={
            FILTER_TOTALS: FilterTotalsFn(), SATURATION: saturation_counts_fn(ctx.spec, ctx.state_dim),
        })
        | "Write" >> beam.Map(_write_summary, ctx)
    )
