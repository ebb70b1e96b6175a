"""`robolake query "<SQL>"`: ad-hoc DuckDB SQL over the lake's views (robolake/lake_views.py),
printed as a table or written as CSV, JSON or Parquet.

The SQL runs with the local user's rights: it can read and write any file they can
(COPY, read_csv, ATTACH, ...). `--read-only`, for SQL from others, runs one SELECT with
file access limited to the lake folder and DuckDB's settings locked."""

from __future__ import annotations

import argparse
import os
import sys
import time

import duckdb

from robolake import progress
from robolake.arguments import ArgumentParser, positive_int
from robolake.errors import RobolakeError
from robolake.lake import Lake
from robolake.storage import is_remote
from robolake.lake_views import VIEWS, available_views, connect
from robolake.names import dataset_argument
from robolake.sql import one_line

FORMATS = ("table", "csv", "json", "parquet")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="robolake query",
        description=f"Run DuckDB SQL over the lake's views: {', '.join(VIEWS)}. The SQL runs as the local "
        "user and may read and write any of their files (COPY, read_csv, ATTACH); use --read-only for SQL "
        "from others.",
        epilog='e.g. robolake query "SELECT task, lighting, count(*) FROM episodes GROUP BY ALL ORDER BY 3"',
    )
    parser.add_argument("sql", help="one DuckDB SQL statement")
    parser.add_argument("--lake", default="lake", help="lake root folder (default: lake)")
    parser.add_argument("--dataset", type=dataset_argument,
                        help="NAME or NAME:VERSION to limit every view to (default: the whole lake)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--output", "-o", help="write to this file (parquet needs one; else stdout)")
    parser.add_argument("--max-rows", type=positive_int, default=100, help="rows printed as a table (default: 100)")
    parser.add_argument("--read-only", action="store_true",
                        help="one SELECT only; no COPY, ATTACH, INSTALL/LOAD, SET, nor files outside the lake")
    return parser.parse_args(argv)


def scope(lake: Lake, reference: str | None) -> tuple[str, str]:
    """The dataset and version (`*`: every one) that --dataset limits the views to;
    a dataset or version the lake has not published is refused, named."""
    if reference is None:
        return "*", "*"
    target = lake.resolve(reference)
    return target.dataset, target.version if ":" in reference else "*"


def check_statement(sql: str, read_only: bool) -> None:
    """Refuse SQL without a statement and, under --read-only, anything but one SELECT."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise RobolakeError(one_line(exc)) from None
    if not statements:
        raise RobolakeError("no SQL statement given (the text is empty or only a comment)")
    if read_only and len(statements) > 1:
        raise RobolakeError(f"--read-only runs one statement, got {len(statements)}")
    if read_only and statements[0].type != duckdb.StatementType.SELECT:
        raise RobolakeError(f"--read-only runs a SELECT (or DESCRIBE, SHOW, SUMMARIZE), got {statements[0].type.name}")


def lock_down(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """--read-only, once the views exist: files only inside the lake folder (the views
    read them; a remote lake's are read through registered datasets, so no folder), no
    extensions, and the settings locked so the SQL cannot undo it."""
    folders = [] if is_remote(lake.root) else [os.path.abspath(lake.root) + os.sep]
    con.execute("SET allowed_directories = $folders", {"folders": folders})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def check_output(path: str) -> None:
    """Refuse an --output that cannot be written, before the query runs."""
    if os.path.isdir(path):
        raise RobolakeError(f"--output {path}: is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise RobolakeError(f"--output {path}: folder {folder} does not exist")


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyRelation:
    """The query's relation; a DuckDB error becomes DuckDB's own message (and the views there are)."""
    try:
        return con.sql(sql)
    except duckdb.Error as exc:
        views = ", ".join(available_views(con)) or "none: the lake is empty"
        raise RobolakeError(f"{one_line(exc)} (views: {views})") from None


def write(relation: duckdb.DuckDBPyRelation, fmt: str, output: str | None, max_rows: int) -> int:
    """Print or write the result; returns its number of rows."""
    table = relation.to_arrow_table()
    if fmt == "table":
        text = str(relation.limit(max_rows))  # DuckDB's own box rendering, with column types
        if table.num_rows > max_rows:
            text += f"\n... {table.num_rows - max_rows} more rows (--max-rows, or --format csv -o FILE)"
    elif fmt == "parquet":
        if not output:
            raise RobolakeError("--format parquet needs --output FILE")
        import pyarrow.parquet as pq

        pq.write_table(table, output)
        return table.num_rows
    else:
        frame = table.to_pandas()
        text = frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", lines=True)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return table.num_rows


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.time()
    if args.output:
        check_output(args.output)
    check_statement(args.sql, args.read_only)
    lake = Lake(args.lake).existing()
    con = connect(lake, *scope(lake, args.dataset))
    if args.read_only:
        lock_down(con, lake)
    rows = write(run_query(con, args.sql), args.format, args.output, args.max_rows)
    where = f" -> {args.output}" if args.output else ""
    progress.console.print(f"query: {rows} rows in {time.time() - started:.2f} s{where}")
    return 0
