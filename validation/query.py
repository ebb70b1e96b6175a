"""`robolake query "<SQL>"`: ad-hoc DuckDB SQL over the lake's views (validation/lake_views.py),
printed as a table or written as CSV, JSON or Parquet."""

from __future__ import annotations

import argparse
import sys
import time

import duckdb

from robolake import progress
from robolake.errors import RobolakeError
from robolake.lake import Lake
from validation.lake_views import VIEWS, available_views, connect

FORMATS = ("table", "csv", "json", "parquet")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="robolake query",
        description=f"Run DuckDB SQL over the lake's views: {', '.join(VIEWS)}.",
        epilog='e.g. robolake query "SELECT task, lighting, count(*) FROM episodes GROUP BY ALL ORDER BY 3"',
    )
    parser.add_argument("sql", help="one DuckDB SQL statement")
    parser.add_argument("--lake", default="lake", help="lake root folder (default: lake)")
    parser.add_argument("--dataset", help="NAME or NAME:VERSION to limit every view to (default: the whole lake)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--output", "-o", help="write to this file (parquet needs one; else stdout)")
    parser.add_argument("--max-rows", type=int, default=100, help="rows printed as a table (default: 100)")
    return parser.parse_args(argv)


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyRelation:
    """The query's relation; a DuckDB error becomes DuckDB's own message (and the views there are)."""
    try:
        return con.sql(sql)
    except duckdb.Error as exc:
        raise RobolakeError(f"{exc}\n(views: {', '.join(available_views(con)) or 'none: the lake is empty'})") from None


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
    dataset, _, version = (args.dataset or "*").partition(":")
    con = connect(Lake(args.lake), dataset, version or "*")
    rows = write(run_query(con, args.sql), args.format, args.output, args.max_rows)
    where = f" -> {args.output}" if args.output else ""
    progress.console.print(f"query: {rows} rows in {time.time() - started:.2f} s{where}")
    return 0
