"""Pieces of robolake's self-contained HTML pages (the coverage report, eval.html): the
inline CSS, escaped and shortened text, compact numbers and tables. Every data string goes
through html.escape."""

from __future__ import annotations

import html
import math
import numbers

import numpy as np
import pandas as pd

MAX_TABLE_ROWS = 200  # rows shown per table; the pages' Parquet/JSON files hold them all

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
  max-width:1100px;margin:0 auto;padding:0 16px 48px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:6px 0}
nav a{margin-right:14px;color:#2a5d8f;text-decoration:none}
section{margin-top:28px}
h2{border-bottom:2px solid #4a7fb5;padding-bottom:2px}
.meta,.empty,.note{color:#666}
.empty,.note{font-style:italic}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8}
.num{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}
dt{color:#666}
dd{margin:0}
.totals{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}
.stat{border:1px solid #ddd;border-radius:4px;padding:6px 12px;min-width:90px}
.stat b{display:block;font-size:20px}
.stat span{color:#666;font-size:12px}
ul.flags{padding:0}
ul.flags li{list-style:none;background:#fdecea;border-left:4px solid #d9534f;margin:6px 0;padding:6px 10px}
ul.flags strong{font-size:15px}
.ok{background:#e8f5e9;border-left:4px solid #4caf50;padding:6px 10px}
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
svg{background:#fafafa;border:1px solid #eee;max-width:100%;height:auto}
svg text{font-size:10px;fill:#333}
.swatch{display:inline-block;width:14px;height:10px;margin:0 3px 0 8px;border:1px solid #999;vertical-align:middle}
pre.command{white-space:pre-wrap;overflow-wrap:anywhere;background:#f3f5f8;padding:6px 10px}
figure.sheet{margin:0;max-width:340px}
figure.sheet figcaption{font-size:12px;color:#444}
"""


def dataframe_table(df: pd.DataFrame, max_rows: int) -> str:
    """An HTML table of the first `max_rows` rows of `df`, cells escaped, numeric columns
    right-aligned, None and NaN cells empty."""
    aligns = [' class="num"' if pd.api.types.is_numeric_dtype(dtype) else "" for dtype in df.dtypes]
    head = "".join(f"<th{align}>{escape_html(column)}</th>" for column, align in zip(df.columns, aligns))
    rows = "".join(
        "<tr>"
        + "".join(f"<td{align}>{escape_html(cell_text(cell))}</td>" for cell, align in zip(row, aligns))
        + "</tr>"
        for row in df.head(max_rows).itertuples(index=False, name=None)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def table_section(df: pd.DataFrame, empty: str, kept_in: str = "") -> str:
    """`df` as a table of at most MAX_TABLE_ROWS rows, with a note on the rows left out
    (and on `kept_in`, the file that has them all), or the `empty` message."""
    if df.empty:
        return empty_note(empty)
    table = dataframe_table(df, MAX_TABLE_ROWS)
    left_out = len(df) - MAX_TABLE_ROWS
    if left_out <= 0:
        return table
    where = f"; {kept_in} has them all" if kept_in else ""
    note = f"Showing the first {MAX_TABLE_ROWS:,} of {len(df):,} rows, {left_out:,} left out{where}."
    return f'{table}<p class="note">{escape_html(note)}</p>'


def empty_note(message: str) -> str:
    return f'<p class="empty">{escape_html(message)}</p>'


def escape_html(value: object) -> str:
    return html.escape(str(value))


def shorten(text: str, chars: int) -> str:
    """`text` cut to at most `chars` characters, an ellipsis marking the cut."""
    return text if len(text) <= chars else text[: chars - 1] + "…"


def shortened_html(text: str, chars: int) -> str:
    """`text` escaped and shortened to `chars` characters; when cut, the full text is the
    tooltip."""
    if len(text) <= chars:
        return escape_html(text)
    return f'<span title="{escape_html(text)}">{escape_html(shorten(text, chars))}</span>'


def is_missing(value: object) -> bool:
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, numbers.Real) and math.isnan(value))
    )


def cell_text(value: object, missing: str = "") -> str:
    """A cell or label as text: numbers compact, booleans yes/no, None/NaN as `missing`."""
    if is_missing(value):
        return missing
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Real):
        return format_number(value)
    return str(value)


def format_number(value: float) -> str:
    """Compact number: integers (and whole floats below a million) in full with thousands
    separators, others to 3 significant digits (0.0123, 45.7, 1.23e+05)."""
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value):,}"
    return f"{value:.3g}"


def format_share(fraction: float) -> str:
    """0.025 -> "2.5%"."""
    return f"{fraction * 100:.3g}%"
