"""Which episodes of a version the behaviour metrics flag: the silver episode_quality table
(robolake/episode_quality.py, docs/quality.md) held against the thresholds of gate.yaml's
`episode_quality` settings. The gate (validation/checks.py) validates these tables, the
coverage report lists their flagged episodes worst first, and `drop_condition` gives the
`robolake edit drop --where` condition that removes exactly those episodes.

Each check gives one row per episode: `episode` (the id with the values that break a
limit, e.g. "episode_0042 (2.10 toggles/s)"), `episode_id`, the value columns and `worst`
(the largest value / limit, to rank by). An episode is flagged when a value is over its
limit; a null value (a metric that could not be computed) flags nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from robolake import episode_quality
from robolake.lake_views import available_views
from robolake.lake import EPISODE_QUALITY

REPEAT = re.compile(r"#\d+$")  # a mixture's planned repeat of an episode: "<id>#<k>"
NOT_BUILT = "built before the episode_quality table existed (rebuild it with robolake convert --overwrite)"


@dataclass(frozen=True)
class Limit:
    """One value column of a check and the gate.yaml setting that caps it."""

    column: str  # the episode_quality column; "{camera}" stands for each camera's name
    setting: str  # its maximum in gate.yaml's episode_quality settings
    label: str  # how a finding states the value, a format string
    per_period: bool = False  # the setting is a share of the nominal step period, the column in ms


@dataclass(frozen=True)
class QualityCheck:
    name: str  # the gate check (gate.yaml severity key)
    description: str  # the rule, with "{setting}" placeholders
    limits: tuple[Limit, ...]
    reason: str  # the metric group's *_reason column, why a value is null ("": never null)


PER_EPISODE = (
    QualityCheck("idle_episodes", "idle share at most {idle_share_max}, idle head and tail at most "
                 "{idle_head_max_s} s and {idle_tail_max_s} s",
                 (Limit("idle_share", "idle_share_max", "{:.0%} idle"),
                  Limit("idle_head_s", "idle_head_max_s", "idle head {:.1f} s"),
                  Limit("idle_tail_s", "idle_tail_max_s", "idle tail {:.1f} s")), "idle_reason"),
    QualityCheck("frozen_actions", "no identical consecutive actions for over {frozen_action_max_s} s",
                 (Limit("frozen_action_s", "frozen_action_max_s", "actions frozen {:.1f} s"),), ""),
    QualityCheck("action_spikes", "at most {spike_steps_max} action spike steps (10x the typical size off both neighbours)",
                 (Limit("spike_steps", "spike_steps_max", "{:.0f} spike steps"),), "spike_reason"),
    QualityCheck("gripper_chatter", "gripper toggles at most {gripper_toggles_max_per_s}/s, at most "
                 "{gripper_reversals_max} reversals within 0.5 s",
                 (Limit("gripper_toggles_per_s", "gripper_toggles_max_per_s", "{:.2f} toggles/s"),
                  Limit("gripper_reversals", "gripper_reversals_max", "{:.0f} reversals")), "gripper_reason"),
    QualityCheck("step_timing", "step intervals within {step_deviation_max_share} of the nominal period, "
                 "at most {timing_gaps_max} gaps over 1.5 periods",
                 (Limit("step_interval_max_deviation_ms", "step_deviation_max_share", "interval off by {:.0f} ms",
                        per_period=True),
                  Limit("timing_gaps", "timing_gaps_max", "{:.0f} gaps")), "timing_reason"),
    QualityCheck("camera_freeze", "no camera frozen (near-identical frames) for over {camera_freeze_max_s} s",
                 (Limit("camera_{camera}_freeze_s", "camera_freeze_max_s", "{camera} frozen {:.1f} s"),),
                 "camera_{camera}_reason"),
    QualityCheck("camera_exposure", "at most {camera_blackout_frames_max} black and "
                 "{camera_overexposed_frames_max} overexposed frames per camera",
                 (Limit("camera_{camera}_blackout_frames", "camera_blackout_frames_max", "{camera} {:.0f} black frames"),
                  Limit("camera_{camera}_overexposed_frames", "camera_overexposed_frames_max",
                        "{camera} {:.0f} overexposed frames")), "camera_{camera}_reason"),
    QualityCheck("path_efficiency", "end-effector path at most {path_length_ratio_max}x its displacement",
                 (Limit("path_length_ratio", "path_length_ratio_max", "path {:.1f}x its displacement"),), "path_reason"),
)
PER_DATASET = ("stuck_dimensions", "duplicate_episodes")
CHECK_NAMES = (*(check.name for check in PER_EPISODE), *PER_DATASET)
EMPTY = pd.DataFrame(columns=["episode", "episode_id", "worst"])


@dataclass
class Flags:
    """One check's table over a version's episodes."""

    name: str
    description: str
    table: pd.DataFrame  # episode, episode_id, the value columns, worst; worst first
    limits: dict[str, float]  # value column -> its maximum
    by_id: bool = False  # a per-dataset check: its episodes are dropped by id, not by a column condition
    skipped: str | None = None  # why the check does not apply

    @property
    def flagged(self) -> pd.DataFrame:
        """The rows over a limit, worst first."""
        if self.skipped or self.table.empty:
            return EMPTY
        over = np.zeros(len(self.table), bool)
        for column, limit in self.limits.items():
            over |= (self.table[column] > limit).fillna(False).to_numpy(bool)
        return self.table[over]


def quality_rows(con: duckdb.DuckDBPyConnection) -> pd.DataFrame | None:
    """The version's episode_quality rows in episode id order; None for a version built before the table."""
    if EPISODE_QUALITY not in available_views(con):
        return None
    return con.execute(f"SELECT * EXCLUDE (dataset, version) FROM {EPISODE_QUALITY} ORDER BY episode_id").df()


def _per_episode(check: QualityCheck, rows: pd.DataFrame, settings: dict, cameras: list[str],
                 rate_hz: float) -> Flags:
    limits, labels = {}, {}
    for limit in check.limits:
        for camera in cameras if "{camera}" in limit.column else [""]:
            maximum = settings[limit.setting] * (1000.0 / rate_hz if limit.per_period else 1.0)
            column = limit.column.format(camera=camera)
            limits[column], labels[column] = round(float(maximum), 6), limit.label.replace("{camera}", camera)
    description = check.description.format(**settings)
    present = [column for column in limits if column in rows.columns]
    if not present:
        return Flags(check.name, description, EMPTY, limits, skipped="the dataset has no camera")
    values = rows[["episode_id", *present]].astype({column: float for column in present})
    if values[present].isna().all().all():
        reasons = [rows[c] for c in (check.reason.format(camera=camera) for camera in cameras or [""]) if c in rows]
        why = pd.concat(reasons).dropna().mode() if reasons else pd.Series(dtype=str)
        return Flags(check.name, description, EMPTY, limits,
                     skipped=f"no episode has the metric: {why.iloc[0] if len(why) else 'every value is null'}")
    texts, worst = [], []
    for row in values.to_dict("records"):
        over = [(row[c] / limits[c] if limits[c] > 0 else row[c], labels[c].format(row[c]))
                for c in present if row[c] > limits[c]]  # NaN > x is False
        texts.append(f"{row['episode_id']} ({', '.join(text for _, text in over)})" if over else row["episode_id"])
        worst.append(max((ratio for ratio, _ in over), default=0.0))
    table = values.assign(episode=texts, worst=worst)[["episode", "episode_id", *present, "worst"]]
    return Flags(check.name, description, _worst_first(table), {c: limits[c] for c in present})


def _worst_first(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(["worst", "episode_id"], ascending=[False, True], ignore_index=True)


def _per_dataset(rows: pd.DataFrame, names: list[str], settings: dict) -> list[Flags]:
    """Stuck action dimensions and near-duplicate episodes, as episode_quality.dataset_columns finds them."""
    ids = rows["episode_id"].tolist()
    static = np.array(rows["action_static_share"].tolist(), np.float64).reshape(len(rows), len(names))
    stuck = episode_quality.stuck_dimensions(static, names, settings["stuck_static_share"],
                                             settings["stuck_moving_episodes"])
    stuck_texts = [f"{i} (stuck: {', '.join(f'{d} static {static[k, names.index(d)]:.0%}' for d in s)})" if s else i
                   for k, (i, s) in enumerate(zip(ids, stuck))]
    stuck_table = pd.DataFrame({"episode": stuck_texts, "episode_id": ids,
                                "stuck_dimensions": [len(s) for s in stuck], "worst": [float(len(s)) for s in stuck]})
    duplicates = episode_quality.near_duplicates(ids, rows["action_fingerprint"].tolist(),
                                                 [REPEAT.sub("", i) for i in ids])
    duplicate_table = pd.DataFrame({"episode": [f"{i} (= {d})" if d else i for i, d in zip(ids, duplicates)],
                                    "episode_id": ids, "duplicate": [int(d is not None) for d in duplicates],
                                    "worst": [float(d is not None) for d in duplicates]})
    return [
        Flags("stuck_dimensions", f"no action dimension static in over {settings['stuck_static_share']:.0%} of an "
              f"episode's steps while it moves in over {settings['stuck_moving_episodes']:.0%} of the others",
              _worst_first(stuck_table), {"stuck_dimensions": 0}, by_id=True),
        Flags("duplicate_episodes", "no episode repeats another's actions (equal action fingerprints)",
              _worst_first(duplicate_table), {"duplicate": 0}, by_id=True),
    ]


def quality_flags(rows: pd.DataFrame | None, settings: dict, action_names: list[str], cameras: list[str],
                  rate_hz: float) -> list[Flags]:
    """Every check's Flags (CHECK_NAMES order); each skipped with NOT_BUILT when `rows` is None."""
    if rows is None:
        return [Flags(name, name, EMPTY, {}, skipped=NOT_BUILT) for name in CHECK_NAMES]
    return ([_per_episode(check, rows, settings, cameras, rate_hz) for check in PER_EPISODE]
            + _per_dataset(rows, list(action_names), settings))


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def drop_condition(flags: list[Flags]) -> str | None:
    """The `edit drop --where` condition over the episodes view joined with episode_quality
    that selects exactly the flagged episodes: each per-episode check that flagged one as
    `column > limit`, the per-dataset ones by id; None when nothing is flagged."""
    terms, ids = [], []
    for check in flags:
        flagged = check.flagged
        if flagged.empty:
            continue
        if check.by_id:
            ids += flagged["episode_id"].tolist()
        else:
            terms += [f"{column} > {_sql_number(limit)}" for column, limit in check.limits.items()
                      if (flagged[column] > limit).any()]
    if ids:
        terms.append(f"episode_id IN ({', '.join(_sql_text(i) for i in sorted(set(ids)))})")
    return " OR ".join(dict.fromkeys(terms)) or None
