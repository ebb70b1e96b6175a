"""The coverage rule: a metadata value is under-sampled when its share of the episodes
is below THRESHOLD of an even share. The coverage report (validation/coverage.py) flags
values with it, and the closed-loop report (training/eval_report.py) joins rollout
failures to the same flags."""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
import pandas as pd

from robolake.lake_views import metadata_column

THRESHOLD = 0.5  # a value is under-sampled below this fraction of an even share (1 / number of values)


@dataclass(frozen=True)
class UnderSampled:
    """A metadata value (or a whole combination) below the report's share threshold."""

    field: str  # "lighting", or "task x lighting" for a combination
    value: str  # "side", or "push x side"
    label: str  # the finding's subject as users read it: "lighting=side" ("task=push" for a task's wordings)
    episodes: int
    total: int
    share: float  # episodes / total
    needed: int  # episodes to collect to reach the threshold share
    recommendation: str  # "lighting=side: 3 of 120 episodes (2.5%); collect ~20 more"


def quoted(name: str) -> str:
    """A DuckDB identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def field_column(field: str) -> str:
    """The `episodes` view's column of a metadata field, quoted for DuckDB."""
    return quoted(metadata_column(field))


def marginals(con: duckdb.DuckDBPyConnection, fields: list[str]) -> pd.DataFrame:
    """Episodes and steps per value of each field of the `episodes` view, with its share."""
    parts = [f"""SELECT '{f}' AS field, {field_column(f)}::VARCHAR AS value, count(*) AS episodes,
                        sum(num_steps)::BIGINT AS steps FROM episodes GROUP BY ALL""" for f in fields]
    table = con.execute(" UNION ALL ".join(parts) + " ORDER BY field, episodes DESC, value").df()
    table["share"] = table["episodes"] / table.groupby("field")["episodes"].transform("sum")
    return table


def under_sampled(table: pd.DataFrame, threshold: float) -> list[UnderSampled]:
    """Values whose share is below `threshold` of an even share, with how many episodes
    would bring them up to it."""
    flags = []
    for field, rows in table.groupby("field", sort=False):
        total, limit = int(rows["episodes"].sum()), threshold / len(rows)
        for row in rows.itertuples():
            if len(rows) > 1 and row.share < limit:
                needed = math.ceil((limit * total - row.episodes) / (1 - limit))
                label = f"{field}={row.value}"
                flags.append(UnderSampled(
                    field, str(row.value), label, int(row.episodes), total, float(row.share), needed,
                    f"{label}: {row.episodes} of {total} episodes ({row.share:.1%}); "
                    f"collect ~{needed} more (an even share would be {1 / len(rows):.0%})",
                ))
    return flags
