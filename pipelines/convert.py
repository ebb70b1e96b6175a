"""The conversion pipeline: discover -> plan (list, split, shard) -> ingest (read,
preprocess, write silver Parquet; sha256 of each source file on a background thread
meanwhile) -> curate (statistics of the train split, outlier-action filtering) -> write
gold RLDS shards (filtered, normalized). Each step reports its seconds of work into the
summary (`TIMINGS`), so every runner tells where the time went.

Every labelled step is a small composite PTransform. Only episode references and
counters cross a shuffle; images stay inside the shard that reads them, so memory
is flat in the dataset size on every runner."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa

from pipelines import primitives
from pipelines.curation import CurateActions, SilverShardFiles, curate_steps, robust_stats
from pipelines.episode import EpisodeRef, EpisodeRejected, QuarantineRecord, stable_hash
from pipelines.images import FramePreprocessor
from pipelines.rlds_writer import EpisodeSerializer, shard_filename, silver_episodes
from pipelines.silver_writer import ShardStepsWriter, episode_row, episodes_table, part_name, partition_dir
from pipelines.sources import SourceReader
from pipelines.splits import assign_shards, assign_split
from pipelines.tfrecord import write_tfrecord
from robolake import progress
from robolake.hashing import sha256_source
from robolake.lake import Build
from robolake.spec import DatasetSpec
from robolake.storage import join, read_table, write_json, write_table
from schemas.rlds import EPISODE_FLAGS, rlds_features
from schemas.tables import curated_steps_schema

QUARANTINE = "quarantine"
SOURCES = "sources"
SILVER_SHARDS = "silver_shards"
GOLD_SHARDS = "gold_shards"
FILTER_TOTALS = "filter_totals"
STATISTICS = "statistics"
HASHES = "hashes"  # (path, sha256) of every source file
HASH_OWNERS = "hash_owners"  # (episode id, SourceFile): the file is hashed where that episode is ingested
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
    is hashed where its first episode is ingested (`HASH_OWNERS`), beside the frame work,
    and only a file with no episode to ingest is hashed here. Until then the records
    carry an empty sha256, filled in from `HASHES` downstream."""

    def __init__(self, ctx: BuildContext):
        self.ctx = ctx

    def process(self, source: SourceFile):
        started = time.perf_counter()
        episodes = quarantined = 0
        for item in self.ctx.source.plan(source.path, source.relative_id, source.known_sha256 or ""):
            if isinstance(item, QuarantineRecord):
                quarantined += 1
                yield beam.pvalue.TaggedOutput(QUARANTINE, item)
            else:
                if not episodes and not source.known_sha256:
                    yield beam.pvalue.TaggedOutput(HASH_OWNERS, (item.episode_id, source))
                episodes += 1
                yield item
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


def _with_split(ref: EpisodeRef, spec: DatasetSpec) -> tuple[str, EpisodeRef]:
    split = assign_split(ref, spec.splits)
    return split, dataclasses.replace(ref, split=split)


def _shard_split(keyed: tuple[str, list[EpisodeRef]], steps_per_shard: int):
    for ref in assign_shards(list(keyed[1]), steps_per_shard):
        yield (ref.split, ref.shard), ref


class PlanEpisodes(beam.PTransform):
    """Source files -> ((split, shard), EpisodeRef), plus quarantine and source records,
    the hashes known (or computed) while planning, the files left to hash in ingest, and timings."""

    def __init__(self, ctx: BuildContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, sources):
        planned = sources | "List" >> primitives.ParDo(_PlanFile(self.ctx)).with_outputs(
            QUARANTINE, SOURCES, HASHES, HASH_OWNERS, TIMINGS, main="refs"
        )
        placed = (
            planned["refs"]
            | "AssignSplit" >> beam.Map(_with_split, self.ctx.spec)
            | "GroupBySplit" >> beam.GroupByKey()
            | "AssignShards" >> beam.FlatMap(_shard_split, self.ctx.spec.output.steps_per_shard)
        )
        return {"placed": placed, **{tag: planned[tag] for tag in (QUARANTINE, SOURCES, HASHES, HASH_OWNERS, TIMINGS)}}


class _IngestShard(beam.DoFn):
    """Read, check and preprocess one shard's episodes; write its silver Parquet files.
    Meanwhile a background thread hashes the source files this shard owns (`HASH_OWNERS`):
    hashlib releases the GIL, so the sha256 of the raw bytes runs beside the frame work
    instead of before it."""

    def __init__(self, ctx: BuildContext):
        self.ctx = ctx

    def setup(self):
        self.preprocessors = {cam.name: FramePreprocessor(cam) for cam in self.ctx.spec.cameras}
        self.hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")

    def teardown(self):
        self.hasher.shutdown()

    def process(self, keyed: tuple[tuple[str, int], list[EpisodeRef]], owners: dict[str, SourceFile]):
        (split, shard), refs = keyed
        ctx = self.ctx
        refs = sorted(refs, key=lambda r: r.order_key)
        hashing = [self.hasher.submit(hash_source, owners[ref.episode_id]) for ref in refs if ref.episode_id in owners]
        started = time.perf_counter()
        steps_path = join(partition_dir(ctx.steps_root, split), part_name(shard))
        writer, written, quarantined, dropped_ticks = None, [], 0, {}
        for ref in refs:
            try:
                episode = ctx.source.read(ref, ctx.state_dim, self.preprocessors)
            except EpisodeRejected as exc:
                record = QuarantineRecord(ref.episode_id, ref.source_path, ref.source_sha256, exc.code, exc.reason)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                record = QuarantineRecord(
                    ref.episode_id, ref.source_path, ref.source_sha256, "read_error", f"{type(exc).__name__}: {exc}"
                )
            else:
                writer = writer or ShardStepsWriter(steps_path, ctx.spec, ctx.state_dim)
                writer.write(episode)
                written.append(episode_row(episode))
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
        if writer is not None:
            writer.close()
            table = episodes_table(written, ctx.spec)
            write_table(join(partition_dir(ctx.episodes_root, split), part_name(shard)), table)
        yield beam.pvalue.TaggedOutput(TIMINGS, StageSeconds("ingest", time.perf_counter() - started))
        for future in hashing:
            path_sha256, seconds = future.result()
            yield beam.pvalue.TaggedOutput(HASHES, path_sha256)
            yield beam.pvalue.TaggedOutput(TIMINGS, seconds)
        yield ShardResult(split, shard, len(written), sum(row.num_steps for row in written), dropped_ticks)


def shard_files(ctx: BuildContext, result: ShardResult) -> SilverShardFiles:
    return SilverShardFiles(
        result.split,
        join(partition_dir(ctx.steps_root, result.split), part_name(result.shard)),
        join(partition_dir(ctx.episodes_root, result.split), part_name(result.shard)),
    )


class IngestShards(beam.PTransform):
    """((split, shard), EpisodeRef) -> ShardResult, plus quarantine records, the hashes of
    the files owned (`owners`: a side input of HASH_OWNERS) and timings."""

    def __init__(self, ctx: BuildContext, owners):
        super().__init__()
        self.ctx = ctx
        self.owners = owners

    def expand(self, placed):
        return (
            placed
            | "GroupByShard" >> beam.GroupByKey()
            | "ReadPreprocessWrite" >> primitives.ParDo(_IngestShard(self.ctx), self.owners).with_outputs(
                QUARANTINE, HASHES, TIMINGS, main="shards"
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


class _WriteGoldShard(beam.DoFn):
    """Curate and encode one silver shard's episodes as TFDS examples into one TFRecord
    shard (the sha256 of their sources filled into silver first)."""

    def __init__(self, ctx: BuildContext):
        self.ctx = ctx

    def setup(self):
        self.serializer = EpisodeSerializer(rlds_features(self.ctx.spec, self.ctx.state_dim))

    def process(self, result: ShardResult, all_results: list[ShardResult], raw, statistics: Statistics,
                hashes: dict[str, str]):
        if result.episodes == 0:
            return
        started, curating = time.perf_counter(), [0.0]
        ctx = self.ctx
        filled = sorted(r.shard for r in all_results if r.split == result.split and r.episodes > 0)
        index = filled.index(result.shard)
        robust, steps = robust_stats(raw), []
        curated_schema, curated_tables = curated_steps_schema(ctx.spec, ctx.state_dim), []

        def curate(table):
            curate_started = time.perf_counter()
            curated = curate_steps(table, ctx.spec, robust, statistics.document)
            curating[0] += time.perf_counter() - curate_started
            steps.append(curated.num_rows if curated is not None else 0)
            if curated is not None:
                curated_tables.append(curated.select(curated_schema.names))
            return curated

        flagged = Counter()

        def serialized(episodes):
            for episode in episodes:
                flagged.update(flag for flag in EPISODE_FLAGS if episode["episode_metadata"][flag])
                yield self.serializer.serialize(episode)

        files = shard_files(ctx, result)
        fill_source_sha256(files.episodes_path, hashes)
        episodes = silver_episodes(files.steps_path, files.episodes_path, ctx.spec, curate)
        path = join(ctx.gold_dir, shard_filename(ctx.spec.name, result.split, index, len(filled)))
        count, size = write_tfrecord(path, serialized(episodes))
        # the shard's numeric steps in one row group: readers scan them, never one episode
        curated_path = join(partition_dir(ctx.curated_root, result.split), part_name(result.shard))
        write_table(curated_path, pa.concat_tables(curated_tables) if curated_tables else curated_schema.empty_table())
        yield beam.pvalue.TaggedOutput(TIMINGS, StageSeconds("curate", curating[0]))
        yield beam.pvalue.TaggedOutput(TIMINGS, StageSeconds("write_rlds", time.perf_counter() - started - curating[0]))
        yield GoldShard(result.split, index, count, sum(steps), size, dict(flagged))


class WriteRlds(beam.PTransform):
    """Silver shards -> GoldShard records, plus timings; `hashes` is a side input of HASHES."""

    def __init__(self, ctx: BuildContext, raw, statistics, hashes):
        super().__init__()
        self.ctx = ctx
        self.raw = raw
        self.statistics = statistics
        self.hashes = hashes

    def expand(self, shards):
        return shards | "CurateEncodeWrite" >> primitives.ParDo(
            _WriteGoldShard(self.ctx), beam.pvalue.AsList(shards),
            beam.pvalue.AsSingleton(self.raw), beam.pvalue.AsSingleton(self.statistics), self.hashes,
        ).with_outputs(TIMINGS, main="shards")


class WriteSummary(beam.PTransform):
    """Collect small PCollections of dataclasses, by name, into one JSON file for the driver.
    The pipeline's last step, and every other step leads into it: Beam's DaskRunner
    computes only the last step's bag (and what that needs)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, named: dict):
        return named | "Collect" >> primitives.Gather() | "Write" >> beam.Map(_write_summary, self.path)


def _write_summary(gathered: dict[str, list], path: str) -> None:
    write_json(path, {name: [dataclasses.asdict(row) for row in rows] for name, rows in gathered.items()})


def _with_source_sha256(record: QuarantineRecord, hashes: dict[str, str]) -> QuarantineRecord:
    """A quarantine record with its file's sha256 (records made before the file was hashed have none)."""
    return record if record.source_sha256 else dataclasses.replace(record, source_sha256=hashes[record.source_path])


def build_pipeline(pipeline: beam.Pipeline, ctx: BuildContext, sources: list[SourceFile]) -> None:
    planned = (
        pipeline
        | "Discover" >> beam.Create(sources)
        | "Spread" >> beam.Reshuffle()
        | "Plan" >> PlanEpisodes(ctx)
    )
    ingested = planned["placed"] | "Ingest" >> IngestShards(ctx, beam.pvalue.AsDict(planned[HASH_OWNERS]))
    hashes = beam.pvalue.AsDict((planned[HASHES], ingested[HASHES]) | "AllHashes" >> beam.Flatten())
    curated = (
        ingested["shards"]
        | "FilledShards" >> beam.Filter(lambda r: r.episodes > 0)
        | "ShardFiles" >> beam.Map(lambda r, ctx: (r.shard, shard_files(ctx, r)), ctx)
        | "Curate" >> CurateActions(ctx.spec, ctx.state_dim, ctx.filtered_actions_dir, ctx.episode_stats_root)
    )
    statistics = curated["statistics"] | "Wrap" >> beam.Map(Statistics)
    gold = ingested["shards"] | "WriteRLDS" >> WriteRlds(ctx, curated["raw"], statistics, hashes)
    quarantine = (
        (planned[QUARANTINE], ingested[QUARANTINE], curated[QUARANTINE])
        | "AllQuarantined" >> beam.Flatten()
        | "QuarantinedSha256" >> primitives.Map(_with_source_sha256, hashes)
    )
    source_records = planned[SOURCES] | "SourcesSha256" >> primitives.Map(
        lambda record, hashes: dataclasses.replace(record, sha256=hashes[record.path]), hashes
    )
    timings = (planned[TIMINGS], ingested[TIMINGS], gold[TIMINGS]) | "AllTimings" >> beam.Flatten()
    summary = {
        QUARANTINE: quarantine, SOURCES: source_records, SILVER_SHARDS: ingested["shards"], GOLD_SHARDS: gold["shards"],
        FILTER_TOTALS: curated["totals"], STATISTICS: statistics, TIMINGS: timings,
    }
    summary | "Summarize" >> WriteSummary(ctx.summary_path)
