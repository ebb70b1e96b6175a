"""The lake's DuckDB views of one published version, for the commands that read its
silver tables (validate, report, stats): a version whose silver tables are gone is
refused in one message instead of failing on a missing view halfway through."""

from __future__ import annotations

import duckdb

from robolake.dataset_ref import DatasetVersion
from robolake.errors import RobolakeError
from robolake.lake import Lake
from validation.lake_views import available_views, connect


def connect_version(lake: Lake, target: DatasetVersion, needed: tuple[str, ...] = ("episodes", "steps"),
                    materialize: bool = True) -> duckdb.DuckDBPyConnection:
    """lake_views.connect limited to `target`, once it has every view in `needed`."""
    con = connect(lake, target.dataset, target.version, materialize)
    missing = [view for view in needed if view not in available_views(con)]
    if missing:
        con.close()
        raise RobolakeError(
            f"{target.dataset}:{target.version}: published, but no silver table holds its {', '.join(missing)} "
            f"in {lake.root}; rebuild it with robolake convert --overwrite")
    return con
