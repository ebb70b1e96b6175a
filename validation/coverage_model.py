"""What a coverage report holds: the DuckDB query results of `robolake report`, ready to
render (validation/html_report.py) or to write as coverage.json and Parquet tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from robolake.coverage_rule import UnderSampled


@dataclass
class Histogram:
    """Counts per bin; `edges` has one more entry than `counts`."""

    edges: list[float]
    counts: list[int]


@dataclass
class CoverageReport:
    dataset: str
    version: str
    generated_at: str  # ISO 8601 UTC
    threshold: float  # share below which a value is flagged
    fields: list[str]  # the metadata fields crossed (task, object, color, scene, lighting, operator, ...)
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
    notes: list[str] = field(default_factory=list)  # anything the reader should know (skipped parts)
