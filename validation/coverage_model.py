"""What a coverage report holds: the DuckDB query results of `robolake report`, ready to
render (validation/html_report.py) or to write as coverage.json and Parquet tables."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from robolake.coverage_rule import UnderSampled, under_sampled
from validation.contact_sheets import ContactSheet
from validation.instruction_meaning import InstructionMeaning
from validation.quality_flags import Flags

# The crossing rule: a metadata field is crossed (cube, gaps, per-value charts, heatmaps) when
# its values are short labels; the others (ids, file names, simulator arguments) are summarized:
MAX_VALUES = 50  # ... at most this many distinct values
MAX_VALUE_CHARS = 40  # ... none longer than this
STRUCTURED = r"^\s*[\[{]"  # ... none a JSON object or list
PATH = r"^(~?/|\.\.?/|[A-Za-z]:[\\/]|[A-Za-z][A-Za-z0-9+.-]*://)"  # ... none a file path or URL
SHOWN_FLAGGED = 3  # flagged episodes per behaviour check shown with a contact sheet (worst first)


@dataclass
class Histogram:
    """Counts per bin; `edges` has one more entry than `counts`."""

    edges: list[float]
    counts: list[int]


@dataclass
class EpisodeQuality:
    """The report's episode-quality section: each behaviour check's flagged episodes (worst
    first), the distribution of each value column, contact sheets of the episodes shown,
    the `robolake view` command that opens each check's shown episodes in Rerun, and the
    `robolake edit drop` command that removes every flagged episode."""

    flags: list[Flags]  # validation/quality_flags.py, gate.yaml's thresholds for this dataset
    histograms: dict[str, Histogram]  # value column -> histogram over the version's episodes
    contact_sheets: dict[str, ContactSheet]  # episode id -> its sheet (validation/contact_sheets.py)
    drop_command: str | None  # None when nothing is flagged
    view_commands: dict[str, str]  # check name -> the `robolake view` command of its shown episodes


@dataclass
class CoverageReport:
    dataset: str
    version: str
    generated_at: str  # ISO 8601 UTC
    threshold: float  # a value is flagged below this fraction of an even share (robolake/coverage_rule.py)
    fields: list[str]  # the metadata fields crossed (task, object, color, scene, lighting, operator, ...)
    # one row per metadata field left out of the crossings (validation/coverage.py's rule):
    # field, reason, distinct_values, most_common, most_common_episodes
    uncrossed: pd.DataFrame
    totals: dict[str, int]  # episodes, steps, tasks, instructions, quarantined, filtered_items
    # episodes and steps per combination of `fields`, with CUBE subtotals: a None in a field
    # column means "all values" (GROUPING SETS rows); columns: *fields, episodes, steps
    cube: pd.DataFrame
    # one row per field value: field, value, episodes, steps, share
    marginals: pd.DataFrame
    # every combination of observed values of two fields that has fewer episodes than the
    # threshold share of the pair would give it under independence (0 for empty ones):
    # columns field_a, value_a, field_b, value_b, episodes, expected
    gaps: pd.DataFrame
    flags: list[UnderSampled]
    # instruction diversity per task: task, episodes, distinct_instructions, paraphrase_ratio
    # (distinct / episodes), near_duplicate_pairs
    instructions: pd.DataFrame
    # pairs of different instructions of one task that are almost the same text:
    # task, instruction_a, instruction_b, similarity (0-1)
    near_duplicates: pd.DataFrame
    # the instructions' meaning clusters per task and the alike ones across tasks (off
    # without the `meaning` extra)
    meaning: InstructionMeaning
    episode_lengths: Histogram
    # action name -> {"raw": Histogram, "normalized": Histogram} (train split, curated steps)
    action_histograms: dict[str, dict[str, Histogram]]
    # camera name -> {"brightness": Histogram, "contrast": Histogram} (per-episode means, [0, 1])
    camera_histograms: dict[str, dict[str, Histogram]]
    filtered_by_rule: pd.DataFrame  # rule, policy, dimension, items
    quarantined_by_reason: pd.DataFrame  # reason_code, episodes
    splits: pd.DataFrame  # split, episodes, steps
    # per action/state dimension, the share of train values each normalization mode puts at
    # +-1 (dataset_statistics.json): dimension, normalized, <mode>..., with the version's mode
    saturation: pd.DataFrame
    quality: EpisodeQuality

    def crossing(self, a: str, b: str) -> pd.DataFrame:
        """Episodes per pair of values of fields `a` and `b`, read off the cube's (a, b)
        subtotal rows: value_a, value_b (every pair of observed values, in marginal order),
        episodes (0 for an empty pair), share, under_sampled (the coverage rule applied to
        the pairs as the values of one combined field)."""
        values = {f: self.marginals.loc[(self.marginals["field"] == f) & self.marginals["value"].notna(), "value"]
                  for f in (a, b)}
        others = [f for f in self.fields if f not in (a, b)]
        rows = self.cube[self.cube[a].notna() & self.cube[b].notna() & self.cube[others].isna().all(axis=1)]
        # a missing metadata value reads as NULL like a subtotal; the subtotal row is the largest
        counts = rows.astype({a: str, b: str}).groupby([a, b])["episodes"].max()
        table = pd.MultiIndex.from_product([values[a], values[b]], names=["value_a", "value_b"]).to_frame(index=False)
        table["episodes"] = [int(counts.get(pair, 0)) for pair in zip(table["value_a"], table["value_b"])]
        total = table["episodes"].sum()
        table["share"] = table["episodes"] / total if total else 0.0
        pairs = table.assign(field=f"{a} x {b}", value=table["value_a"] + " x " + table["value_b"])
        flagged = {flag.value for flag in under_sampled(pairs, self.threshold)}
        table["under_sampled"] = pairs["value"].isin(flagged) & (table["episodes"] > 0)
        return table
