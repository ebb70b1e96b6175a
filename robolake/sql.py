"""SQL that users give: DuckDB's messages about it on one line, and conditions
(`edit --where`, `stats --where`, mixture specs' `where` and `retask.where`) parsed as
exactly one expression and applied as an expression object, never pasted into SQL."""

from __future__ import annotations

import duckdb

from robolake.errors import RobolakeError


def one_line(exc: Exception) -> str:
    """DuckDB's message without its echo of the query (`LINE 1: ...`), on one line."""
    return " ".join(str(exc).split("\nLINE ")[0].split())


def parse_condition(text: str, origin: str) -> duckdb.Expression:
    """`text` as one SQL expression, for `relation.filter(...)`; a RobolakeError naming
    `origin` for anything else (several statements, a clause, SQL that does not parse)."""
    try:
        return duckdb.SQLExpression(text)
    except duckdb.Error as exc:
        raise RobolakeError(f"{origin}: {text!r} is not one SQL expression: {one_line(exc)}") from None


def excluding(text: str, origin: str) -> str:
    """The condition that keeps what `text` does not select (NULL selects nothing), as
    one line of SQL that DuckDB's parser wrote back."""
    kept = ~duckdb.CoalesceOperator(parse_condition(text, origin), duckdb.ConstantExpression(False))
    return duckdb.SQLExpression(str(kept)).get_name()
