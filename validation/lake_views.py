"""DuckDB views over the lake's tables, for the quality gate, the coverage report and
`robolake query`.

Views (each with `dataset` and `version` columns; `split` where the table has one):
- episodes: the episodes gold holds (metadata, dropped_ticks, camera pixel summaries),
  `num_steps` counted in the curated steps (after the outlier filter dropped steps or
  quarantined episodes)
- steps: the curated steps exactly as gold RLDS stores them (filtered, `action`
  normalized), without images
- raw_steps: the silver steps as ingested (before filtering), without images
- episode_stats: each written episode's mergeable statistics (curated action and state
  moments, bounds and quantile sketch; camera pixel moments), what `robolake stats` merges
- filtered: every action value the outlier rules flagged
- quarantine: every rejected episode with its reason
- versions: one row per published gold version (from its manifest.json)
- sources: every registered raw file (lake/raw/manifest.parquet)

A view is left out when the lake has no file for it yet. For one dataset version the
(small) episodes table is materialized, since the gate and the report read it many
times. The lake must be a local folder (DuckDB reads it directly)."""

from __future__ import annotations

import glob
import json
import os

import duckdb
import pyarrow as pa

from robolake.errors import RobolakeError
from robolake.lake import Lake

VIEWS = ("episodes", "steps", "raw_steps", "episode_stats", "filtered", "quarantine", "versions", "sources")


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _parquet(pattern: str, across_datasets: bool) -> str:
    """read_parquet of a glob; across datasets, schemas are unioned by name and the file
    name kept (both cost time, so only then)."""
    options = ", union_by_name = true, filename = true" if across_datasets else ""
    return f"read_parquet({_sql_string(pattern)}, hive_partitioning = true{options})"


def _silver_view(root: str, table: str, dataset: str, version: str) -> str | None:
    """A silver table without its image columns (encoded frames are no use in SQL)."""
    pattern = f"{root}/silver/{dataset}/{table}/version={version}/split=*/*.parquet"
    if not glob.glob(pattern):
        return None
    columns = "COLUMNS(lambda c: NOT starts_with(c, 'image_') AND c <> 'filename')"
    if dataset != "*":
        return f"SELECT {_sql_string(dataset)} AS dataset, {columns} FROM {_parquet(pattern, False)}"
    name = f"regexp_extract(filename, '/silver/([^/]+)/{table}/', 1)"
    return f"SELECT {name} AS dataset, {columns} FROM {_parquet(pattern, True)}"


def _published_episodes(ingested: str, lengths: str) -> str:
    """Silver episodes that gold holds, with their curated length."""
    return f"""
        SELECT e.* REPLACE (c.num_steps::INTEGER AS num_steps)
        FROM ({ingested}) e
        JOIN ({lengths}) c
        USING (dataset, version, episode_id)"""


def _quarantine_view(root: str, pattern_tail: str, dataset: str, version: str) -> str | None:
    pattern = f"{root}/quarantine/{dataset}/{version}/{pattern_tail}"
    if not glob.glob(pattern):
        return None
    parts = "regexp_extract(filename, '/quarantine/([^/]+)/([^/]+)/', ['dataset', 'version'])"
    return (f"SELECT parts.dataset, parts.version, * EXCLUDE (filename, parts) "
            f"FROM (SELECT {parts} AS parts, * FROM {_parquet(pattern, True)})")


def versions_table(lake: Lake, dataset: str = "*", version: str = "*") -> pa.Table:
    """One row per published gold version, from its manifest.json."""
    rows = []
    for path in sorted(glob.glob(os.path.join(lake.gold_root(), dataset, version, "manifest.json"))):
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        counts = manifest["counts"]
        rows.append({
            "dataset": manifest["dataset"], "version": manifest["version"],
            "created_at": manifest["created_at"], "fingerprint": manifest["fingerprint"],
            "episodes_found": counts["episodes_found"], "episodes_written": counts["episodes_written"],
            "episodes_quarantined": counts["episodes_quarantined"], "steps_written": counts["steps_written"],
            "bytes_written": counts["bytes_written"], "statistics_sha256": manifest.get("statistics_sha256"),
            "gold_dir": os.path.dirname(path),
        })
    return pa.Table.from_pylist(rows)


def connect(lake: Lake, dataset: str = "*", version: str = "*", materialize: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views, limited to one dataset and
    version when given (the default `*` takes every one). `materialize=False` keeps one
    version's episodes a view, for a caller that reads it once."""
    if "://" in lake.root:
        raise RobolakeError(f"--lake {lake.root}: queries read a local lake folder (copy or mount it first)")
    root = os.path.abspath(lake.root)
    con = duckdb.connect()
    views = {
        "steps": _silver_view(root, "curated_steps", dataset, version),
        "raw_steps": _silver_view(root, "steps", dataset, version),
        "episode_stats": _silver_view(root, "episode_stats", dataset, version),
        "filtered": _quarantine_view(root, "filtered_actions/*.parquet", dataset, version),
        "quarantine": _quarantine_view(root, "quarantine.parquet", dataset, version),
    }
    for name, query in views.items():
        if query is not None:
            con.execute(f"CREATE VIEW {name} AS {query}")
    ingested = _silver_view(root, "episodes", dataset, version)
    if ingested is not None and views["steps"] is not None:
        kind = "TEMP TABLE" if materialize and "*" not in (dataset, version) else "VIEW"
        # curated lengths from the per-episode statistics rows (versions built before them: from the steps)
        lengths = ("SELECT dataset, version, episode_id, action_count AS num_steps FROM episode_stats"
                   if views["episode_stats"] is not None else
                   "SELECT dataset, version, episode_id, count(*) AS num_steps FROM steps GROUP BY ALL")
        con.execute(f"CREATE {kind} episodes AS {_published_episodes(ingested, lengths)}")
    versions = versions_table(lake, dataset, version)
    if versions.num_rows:
        con.register("versions", versions)
    if os.path.exists(lake.raw_manifest()):
        con.execute(f"CREATE VIEW sources AS SELECT * FROM read_parquet({_sql_string(lake.raw_manifest())})")
    return con


def available_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The views of VIEWS this connection has (SHOW TABLES lists views, temp and registered tables)."""
    names = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
    return [name for name in VIEWS if name in names]
