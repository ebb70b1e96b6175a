"""DuckDB views over the lake's tables, for the quality gate, the coverage report and
`robolake query`.

Views (each with `dataset` and `version` columns from the build, `split` where the table
has one; an episode metadata field of either name is `metadata_<name>`):
- episodes: the episodes gold holds (metadata, dropped_ticks, camera pixel summaries),
  `num_steps` counted in the curated steps (after the outlier filter dropped steps or
  quarantined episodes)
- steps: the curated steps exactly as gold RLDS stores them (filtered, `action`
  normalized), without images
- raw_steps: the silver steps as ingested (before filtering), without images
- episode_stats: each written episode's mergeable statistics (curated action and state
  moments, bounds and quantile sketch; camera pixel moments), what `robolake stats` merges
- episode_quality: each written episode's behaviour metrics (idle, frozen actions, spikes,
  gripper chatter, timing, camera freeze and exposure, path; docs/quality.md)
- filtered: every action value the outlier rules flagged
- quarantine: every rejected episode with its reason
- versions: one row per build of a published version: the current one and each replaced
  one kept until `robolake gc` (from its manifest.json)
- sources: every registered raw file (lake/raw/manifest.parquet)

A view is left out when the lake has no file for it yet. For one dataset version the
(small) episodes table is materialized, since the gate and the report read it many
times. Files are found through robolake/storage.py. DuckDB reads a local lake's Parquet
itself (read_parquet); a remote lake's (gs://, s3://) through pyarrow datasets on its
fsspec filesystem (storage.arrow_filesystem), registered on the connection, since
DuckDB's httpfs extension is not installed here."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from robolake import progress
from robolake.errors import RobolakeError
from robolake.lake import EPISODE_QUALITY, Build, DamagedPointer, GoldVersion, Lake
from robolake.storage import arrow_filesystem, exists, is_remote, list_files, read_table

BUILD_COLUMNS = ("dataset", "version")  # what every view adds from the build
VIEWS = ("episodes", "steps", "raw_steps", "episode_stats", EPISODE_QUALITY, "filtered", "quarantine", "versions",
         "sources")


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _union(selects: list[str]) -> str | None:
    """One view over every build's part: columns unioned by name (datasets differ in width)."""
    return "\nUNION ALL BY NAME\n".join(selects) or None


class ParquetRead(NamedTuple):
    sql: str  # what a FROM clause reads
    columns: list[str]


class Sources:
    """What a view reads its Parquet files from: DuckDB's read_parquet of a glob for a
    local lake, or a pyarrow dataset of the glob's files registered on the connection
    for a remote one."""

    def __init__(self, con: duckdb.DuckDBPyConnection, remote: bool):
        self.con, self.remote, self.registered = con, remote, 0

    def parquet(self, pattern: str, partition_root: str | None = None) -> ParquetRead | None:
        """The read of the files matching `pattern` (hive-partitioned below `partition_root`
        when given), None when nothing matches."""
        files = list_files(pattern)
        if not files:
            return None
        if not self.remote:
            hive = ", hive_partitioning = true" if partition_root else ""
            columns = pq.read_schema(files[0]).names  # one build's files share their schema
            return ParquetRead(f"read_parquet({_sql_string(pattern)}{hive})", columns)
        filesystem, _ = arrow_filesystem(pattern)
        partitioning = {}
        if partition_root:
            partitioning = {"partitioning": ds.partitioning(pa.schema([("split", pa.string())]), flavor="hive"),
                            "partition_base_dir": arrow_filesystem(partition_root)[1]}
        dataset = ds.dataset([arrow_filesystem(f)[1] for f in files], filesystem=filesystem, format="parquet",
                             **partitioning)
        self.registered += 1
        name = f"_parquet_{self.registered}"
        self.con.register(name, dataset)
        return ParquetRead(name, dataset.schema.names)


def metadata_column(field: str) -> str:
    """The view column of an episode metadata field: the field's own name, but
    `metadata_<name>` for one named like a column the views add from the build (a
    mixture's member `dataset`)."""
    return f"metadata_{field}" if field in BUILD_COLUMNS else field


def _build_select(build: Build, read: ParquetRead) -> str:
    """One build's rows with its `dataset` and `version`, without image columns (encoded
    frames are no use in SQL); a table's own column of either name as `metadata_<name>`."""
    own = [name for name in BUILD_COLUMNS if name in read.columns]
    rest = f"COLUMNS(lambda c: NOT starts_with(c, 'image_') AND c NOT IN {tuple(BUILD_COLUMNS)})"
    renamed = "".join(f', "{name}" AS "{metadata_column(name)}"' for name in own)
    return (f"SELECT {_sql_string(build.dataset)} AS dataset, {_sql_string(build.version)} AS version, "
            f"{rest}{renamed} FROM {read.sql}")


def _silver_view(sources: Sources, builds: list[Build], table: str) -> str | None:
    """A silver table of the published builds; `split` from the path."""
    reads = [(b, sources.parquet(b.silver_glob(table), partition_root=b.silver(table))) for b in builds]
    return _union([_build_select(b, read) for b, read in reads if read is not None])


def _quarantine_view(sources: Sources, builds: list[Build], glob_of: Callable[[Build], str]) -> str | None:
    reads = [(b, sources.parquet(glob_of(b))) for b in builds]
    return _union([_build_select(b, read) for b, read in reads if read is not None])


def _published_episodes(ingested: str, lengths: str) -> str:
    """Silver episodes that gold holds, with their curated length."""
    return f"""
        SELECT e.* REPLACE (c.num_steps::INTEGER AS num_steps)
        FROM ({ingested}) e
        JOIN ({lengths}) c
        USING (dataset, version, episode_id)"""


def published_builds(lake: Lake, dataset: str = "*", version: str = "*") -> list[tuple[Build, dict]]:
    """(published build, its version's pointer) of each published version matching the
    globs. A version whose pointer is damaged is left out, with a warning, unless it was
    the one asked for."""
    found = []
    for name, number in lake.published(dataset, version):
        try:
            found.append((lake.current_build(name, number), lake.current(name, number)))
        except DamagedPointer as exc:
            if "*" not in (dataset, version):
                raise
            progress.console.print(f"warning: {name}:{number} left out: {exc}")
    return found


def versions_table(lake: Lake, published: list[tuple[Build, dict]]) -> pa.Table:
    """One row per build of the `published` versions: the current one, and each replaced
    one still kept (until `robolake gc`), from its manifest.json."""
    rows = []
    for current, pointer in published:
        name, number = current.dataset, current.version
        replaced = {r["build"]: r["replaced_at"] for r in pointer["replaced"]}
        for build_id in [*replaced, pointer["build"]]:
            build = lake.build(name, number, build_id)
            manifest = GoldVersion.at(build.gold).manifest
            counts = manifest["counts"]
            rows.append({
                "dataset": name, "version": number, "build": build_id, "current": build_id == pointer["build"],
                "created_at": manifest["created_at"], "replaced_at": replaced.get(build_id),
                "fingerprint": manifest["fingerprint"],
                "episodes_found": counts["episodes_found"], "episodes_written": counts["episodes_written"],
                "episodes_quarantined": counts["episodes_quarantined"], "steps_written": counts["steps_written"],
                "bytes_written": counts["bytes_written"], "statistics_sha256": manifest.get("statistics_sha256"),
                "gold_dir": build.gold,
            })
    return pa.Table.from_pylist(rows)


def connect(lake: Lake, dataset: str = "*", version: str = "*", materialize: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views, limited to one dataset and
    version when given (the default `*` takes every one). Views read the published
    builds only (each version's current.json). `materialize=False` keeps one version's
    episodes a view, for a caller that reads it once."""
    remote = is_remote(lake.root)
    lake = lake if remote else Lake(os.path.abspath(lake.root))
    published = published_builds(lake, dataset, version)
    builds = [build for build, _ in published]
    con = duckdb.connect()
    sources = Sources(con, remote)
    views = {
        "steps": _silver_view(sources, builds, "curated_steps"),
        "raw_steps": _silver_view(sources, builds, "steps"),
        "episode_stats": _silver_view(sources, builds, "episode_stats"),
        "filtered": _quarantine_view(sources, builds, lambda build: build.filtered_actions_glob),
        "quarantine": _quarantine_view(sources, builds, lambda build: build.quarantine_table),
    }
    for name, query in views.items():
        if query is not None:
            con.execute(f"CREATE VIEW {name} AS {query}")
    ingested = _silver_view(sources, builds, "episodes")
    if ingested is not None and views["steps"] is not None:
        kind = "TEMP TABLE" if materialize and "*" not in (dataset, version) else "VIEW"
        # curated lengths from the per-episode statistics rows (versions built before them: from the steps)
        lengths = ("SELECT dataset, version, episode_id, action_count AS num_steps FROM episode_stats"
                   if views["episode_stats"] is not None else
                   "SELECT dataset, version, episode_id, count(*) AS num_steps FROM steps GROUP BY ALL")
        con.execute(f"CREATE {kind} episodes AS {_published_episodes(ingested, lengths)}")
        quality = _silver_view(sources, builds, EPISODE_QUALITY)
        if quality is not None:  # the episodes gold holds (ingest wrote a row for each it read)
            con.execute(f"CREATE VIEW {EPISODE_QUALITY} AS SELECT q.* FROM ({quality}) q "
                        f"SEMI JOIN episodes USING (dataset, version, episode_id)")
    versions = versions_table(lake, published)
    if versions.num_rows:
        con.register("versions", versions)
    if remote and exists(lake.raw_manifest()):
        con.register("sources", read_table(lake.raw_manifest()))
    elif exists(lake.raw_manifest()):
        con.execute(f"CREATE VIEW sources AS SELECT * FROM read_parquet({_sql_string(lake.raw_manifest())})")
    return con


def available_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The views of VIEWS this connection has (SHOW TABLES lists views, temp and registered tables)."""
    names = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
    return [name for name in VIEWS if name in names]


def episodes_with_quality(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
    """The episodes view, with each episode's episode_quality columns where the version has
    them (so a condition may name idle_share, camera_front_freeze_s, ...)."""
    if EPISODE_QUALITY not in available_views(con):
        return con.table("episodes")
    return con.sql(f"SELECT e.*, q.* EXCLUDE (dataset, version, split, episode_id, num_steps) FROM episodes e "
                   f"LEFT JOIN {EPISODE_QUALITY} q USING (dataset, version, episode_id)")


def connect_version(lake: Lake, target: GoldVersion, needed: tuple[str, ...] = ("episodes", "steps"),
                    materialize: bool = True) -> duckdb.DuckDBPyConnection:
    """`connect` limited to `target`, once it has every view in `needed`: a version whose
    silver tables are gone is refused in one message, not halfway through a command."""
    con = connect(lake, target.dataset, target.version, materialize)
    missing = [view for view in needed if view not in available_views(con)]
    if missing:
        con.close()
        raise RobolakeError(
            f"{target.dataset}:{target.version}: published, but no silver table holds its {', '.join(missing)} "
            f"in {lake.root}; rebuild it with robolake convert --overwrite")
    return con
