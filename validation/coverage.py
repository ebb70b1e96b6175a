"""`robolake report <dataset>[:<version>]`: diversity coverage of a dataset version,
from DuckDB queries over the lake's views.

Writes into lake/reports/<dataset>/<version>/: coverage.html (self-contained, plots as
inline SVG), coverage.json (DVC metrics) and coverage/*.parquet (every table in full)."""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from collections import Counter, defaultdict
import itertools
import re
import shlex
import time

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from rich.progress import Progress

from robolake import progress
from robolake.arguments import ArgumentParser
from robolake.coverage_rule import THRESHOLD, UnderSampled, field_column, marginals, quoted, under_sampled
from robolake.lake import GoldVersion, Lake
from robolake.lake_views import available_views, connect_version
from robolake.names import dataset_argument
from robolake.provenance import utc_now
from robolake.storage import join, write_bytes, write_json, write_table
from validation.instruction_meaning import INSTRUCTIONS_SQL, instruction_meaning, meaning_figures
from validation.contact_sheets import contact_sheets
from validation.coverage_model import (
    MAX_VALUE_CHARS,
    MAX_VALUES,
    PATH,
    SHOWN_FLAGGED,
    STRUCTURED,
    CoverageReport,
    EpisodeQuality,
    Histogram,
)
from validation.quality_flags import Flags, drop_condition, quality_flags, quality_rows

GAP_RATIO = 0.25  # a pair of values is a gap below this fraction of its count under independence
BINS = 20
ARTICLES = {"a", "an", "the"}
TYPO = 0.6  # two words this similar (difflib ratio) are one word misspelled or inflected


def uncrossed_reason(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """Why the crossing rule (validation/coverage_model.py) leaves field `name` out, or None
    to cross it."""
    distinct, longest, structured, paths = con.execute(f"""
        SELECT count(DISTINCT v), coalesce(max(length(v)), 0), coalesce(bool_or(regexp_matches(v, ?)), false),
               coalesce(bool_or(regexp_matches(v, ?)), false)
        FROM (SELECT {field_column(name)}::VARCHAR AS v FROM episodes)""", [STRUCTURED, PATH]).fetchone()
    if structured:
        return "JSON values"
    if paths:
        return "file paths or URLs"
    if longest > MAX_VALUE_CHARS:
        return f"values up to {longest} characters long (over {MAX_VALUE_CHARS})"
    if distinct > MAX_VALUES:
        return f"{distinct} distinct values (over {MAX_VALUES})"
    return None


def field_summary(con: duckdb.DuckDBPyConnection, name: str, reason: str) -> dict:
    """A field left out of the crossings in one row: its distinct values and the most common."""
    distinct, most_common, episodes = con.execute(f"""
        SELECT count(DISTINCT v) OVER (), v, count(*) FROM (SELECT {field_column(name)}::VARCHAR AS v FROM episodes)
        GROUP BY v ORDER BY count(*) DESC, v NULLS LAST LIMIT 1""").fetchone()
    return {"field": name, "reason": reason, "distinct_values": distinct, "most_common": most_common,
            "most_common_episodes": episodes}


def metadata_fields(con: duckdb.DuckDBPyConnection, target: GoldVersion) -> tuple[list[str], pd.DataFrame]:
    """The spec's metadata fields (task first) that the crossing rule crosses, and a summary
    row for each of the others."""
    fields, summaries = [], []
    for name in dict.fromkeys(["task", *target.spec.metadata]):
        reason = uncrossed_reason(con, name)
        if reason is None:
            fields.append(name)
        else:
            summaries.append(field_summary(con, name, reason))
    columns = ["field", "reason", "distinct_values", "most_common", "most_common_episodes"]
    return fields, pd.DataFrame(summaries, columns=columns)


def cube(con: duckdb.DuckDBPyConnection, fields: list[str]) -> pd.DataFrame:
    """Episodes and steps for every combination of the fields and every subtotal (CUBE)."""
    columns = ", ".join(field_column(f) for f in fields)
    named = ", ".join(f"{field_column(f)} AS {quoted(f)}" for f in fields)
    return con.execute(f"""
        SELECT {named}, count(*) AS episodes, sum(num_steps)::BIGINT AS steps
        FROM episodes GROUP BY CUBE ({columns}) ORDER BY ALL NULLS FIRST""").df()


def gaps(con: duckdb.DuckDBPyConnection, fields: list[str], ratio: float) -> pd.DataFrame:
    """Pairs of observed values of two fields with fewer episodes than `ratio` times their
    count under independence (empty ones included), where that count is at least 1."""
    total = con.execute("SELECT count(*) FROM episodes").fetchone()[0]
    frames = []
    for a, b in itertools.combinations(fields, 2):
        frames.append(con.execute(f"""
            WITH va AS (SELECT {field_column(a)}::VARCHAR AS value, count(*) AS n FROM episodes GROUP BY ALL),
                 vb AS (SELECT {field_column(b)}::VARCHAR AS value, count(*) AS n FROM episodes GROUP BY ALL),
                 pairs AS (SELECT {field_column(a)}::VARCHAR AS value_a, {field_column(b)}::VARCHAR AS value_b, count(*) AS n
                           FROM episodes GROUP BY ALL)
            SELECT '{a}' AS field_a, va.value AS value_a, '{b}' AS field_b, vb.value AS value_b,
                   coalesce(pairs.n, 0) AS episodes, round(va.n * vb.n / {total}, 1) AS expected
            FROM va CROSS JOIN vb
            LEFT JOIN pairs ON pairs.value_a = va.value AND pairs.value_b = vb.value
            WHERE va.n * vb.n / {total} >= 1 AND coalesce(pairs.n, 0) < {ratio} * va.n * vb.n / {total}
            """).df())
    columns = ["field_a", "value_a", "field_b", "value_b", "episodes", "expected"]
    found = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return found.sort_values(["episodes", "expected"], ascending=[True, False], ignore_index=True)


def _words(text: str) -> tuple[str, ...]:
    """Lower-case words without punctuation."""
    return tuple(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _core(words: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(w for w in words if w not in ARTICLES)


def _is_typo(u: str, v: str, vocabulary: Counter) -> bool:
    """A misspelled or inflected word: it looks like the other and is rare (in one
    instruction of the dataset) while the other is not ("teh" / "the", "cubes" / "cube").
    Two look-alike words that are both in use ("cube" / "tube") are different words."""
    rare, common = sorted((vocabulary[u], vocabulary[v]))
    return rare <= 1 < common and difflib.SequenceMatcher(None, u, v).ratio() >= TYPO


def near_duplicate_pairs(texts: list[str], vocabulary: Counter) -> set[tuple[str, str]]:
    """Pairs of different texts that say the same: equal once case, punctuation and
    articles go, or equal but for one misspelled or inflected word. Texts are bucketed by
    their normalized words and by their words with one position masked, so the cost
    grows with the number of texts, not its square."""
    pairs: set[tuple[str, str]] = set()
    by_core: dict[tuple, list[str]] = defaultdict(list)
    masked: dict[tuple, list[tuple[str, str]]] = defaultdict(list)
    for text in texts:
        words = _words(text)
        by_core[_core(words)].append(text)
        for variant in {words, _core(words)}:
            for i, word in enumerate(variant):
                masked[i, variant[:i] + variant[i + 1:]].append((word, text))
    for group in by_core.values():
        pairs.update(itertools.combinations(sorted(set(group)), 2))
    for bucket in masked.values():
        for (u, x), (v, y) in itertools.combinations(bucket, 2):
            if x != y and u != v and _is_typo(u, v, vocabulary):
                pairs.add(tuple(sorted((x, y))))
    return pairs


def instruction_diversity(texts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per task: episodes, distinct instructions, their ratio; and near-duplicate pairs,
    from the rows of INSTRUCTIONS_SQL (task, instruction, episodes)."""
    vocabulary = Counter(word for text in set(texts["instruction"]) for word in set(_words(text)))
    pairs, per_task = [], []
    for task, rows in texts.groupby("task", sort=True):
        found = sorted(near_duplicate_pairs(rows["instruction"].tolist(), vocabulary))
        for x, y in found:
            similarity = difflib.SequenceMatcher(None, x.lower(), y.lower()).ratio()
            pairs.append({"task": task, "instruction_a": x, "instruction_b": y, "similarity": round(similarity, 3)})
        episodes = int(rows["episodes"].sum())
        per_task.append({"task": task, "episodes": episodes, "distinct_instructions": len(rows),
                         "paraphrase_ratio": round(len(rows) / episodes, 3), "near_duplicate_pairs": len(found)})
    near_duplicates = pd.DataFrame(pairs, columns=["task", "instruction_a", "instruction_b", "similarity"])
    return pd.DataFrame(per_task), near_duplicates


def instruction_flags(table: pd.DataFrame) -> list[UnderSampled]:
    """Tasks taught with a single wording (a policy then learns the string, not the task)."""
    flags = []
    for row in table.itertuples():
        if row.distinct_instructions == 1 and row.episodes > 1:
            label = f"task={row.task}"
            flags.append(UnderSampled(
                "instructions", str(row.task), label, int(row.episodes), int(row.episodes), 1 / row.episodes, 2,
                f"{label}: 1 distinct instruction over {row.episodes} episodes; "
                f"add paraphrases (at least 2-3 wordings)",
            ))
    return flags


def histogram(values: np.ndarray, bins: int = BINS) -> Histogram:
    values = values[np.isfinite(values)]
    if not len(values):
        return Histogram([], [])
    counts, edges = np.histogram(values, bins=bins)
    return Histogram([float(e) for e in edges], [int(c) for c in counts])


def action_histograms(con: duckdb.DuckDBPyConnection, names: list[str], bins: int = BINS
                      ) -> dict[str, dict[str, Histogram]]:
    """Equal-width histograms of every train action dimension, raw and normalized, computed
    inside DuckDB in two scans (ranges, then counts); no column leaves the database."""
    expressions = [(name, kind, f"{column}[{i + 1}]") for i, name in enumerate(names)
                   for kind, column in (("raw", "action_raw"), ("normalized", "action"))]
    where = "split = 'train' AND " + " AND ".join(f"isfinite({e})" for _, _, e in expressions)
    ranges = con.execute("SELECT " + ", ".join(f"min({e}), max({e})" for _, _, e in expressions)
                         + f" FROM steps WHERE {where}").fetchone()
    bounds = [(ranges[2 * k], ranges[2 * k + 1]) for k in range(len(expressions))]
    if bounds[0][0] is None:
        return {name: {"raw": Histogram([], []), "normalized": Histogram([], [])} for name in names}
    widths = [(high - low) / bins or 1.0 for low, high in bounds]
    counted = con.execute("SELECT " + ", ".join(
        f"histogram(least(floor(({e} - {low}) / {width}), {bins - 1})::INT)"
        for (_, _, e), (low, _), width in zip(expressions, bounds, widths)) + f" FROM steps WHERE {where}").fetchone()
    result: dict[str, dict[str, Histogram]] = {name: {} for name in names}
    for (name, kind, _), (low, _), width, counts in zip(expressions, bounds, widths, counted):
        result[name][kind] = Histogram([low + i * width for i in range(bins + 1)],
                                       [int(counts.get(i, 0)) for i in range(bins)])
    return result


def camera_histograms(con: duckdb.DuckDBPyConnection, cameras: list[str]) -> dict[str, dict[str, Histogram]]:
    result = {}
    for camera in cameras:
        table = con.execute(
            f"SELECT camera_{camera}_brightness AS brightness, camera_{camera}_contrast AS contrast FROM episodes").df()
        result[camera] = {key: histogram(table[key].to_numpy(float)) for key in ("brightness", "contrast")}
    return result


def saturation_table(statistics: dict) -> pd.DataFrame:
    """dataset_statistics.json's share of train values at the +-1 bound per mode, one row
    per action and state dimension; `normalized` says whether gold normalizes it."""
    settings, shares = statistics["robolake"]["normalization"], statistics["robolake"].get("saturation")
    if shares is None:  # statistics schema 1.0.0 did not measure it
        return pd.DataFrame(columns=["dimension", "normalized"])
    names = {"action": statistics["robolake"]["action_names"],
             "proprio": [f"state[{i}]" for i in range(len(statistics["proprio"]["mean"]))]}
    normalized = {"action": settings["mask"], "proprio": [settings["state"]] * len(names["proprio"])}
    return pd.DataFrame([
        {"dimension": name, "normalized": normalized[key][i],
         **{f"{mode}{' (used)' if mode == settings['mode'] else ''}": round(values[i], 4)
            for mode, values in shares[key].items()}}
        for key in ("action", "proprio") for i, name in enumerate(names[key])])


def _table_or_empty(con: duckdb.DuckDBPyConnection, view: str, query: str, columns: list[str]) -> pd.DataFrame:
    return con.execute(query).df() if view in available_views(con) else pd.DataFrame(columns=columns)


def _sheet_camera(check: Flags, row: pd.Series, cameras: list[str]) -> str:
    """The camera a flagged episode's contact sheet shows: the one whose value broke the
    limit of a camera check, else the first."""
    over = [column for column, limit in check.limits.items() if column.startswith("camera_") and row[column] > limit]
    return next((camera for camera in cameras for column in over if column.startswith(f"camera_{camera}_")), cameras[0])


def _lake_flag(lake: Lake) -> str:
    return f" --lake {shlex.quote(lake.root)}" if lake.root != "lake" else ""


def drop_command(lake: Lake, target: GoldVersion, condition: str) -> str:
    """The `robolake edit drop` command line (shell-quoted) that applies `condition`."""
    quoted_condition = '"' + re.sub(r'([\\"$`])', r"\\\1", condition) + '"'
    return f"robolake edit drop {target.dataset}:{target.version} --where {quoted_condition}{_lake_flag(lake)}"


def view_command(lake: Lake, target: GoldVersion, check: str, episode_ids: list[str]) -> str:
    """The `robolake view` command line that writes `episode_ids` as one Rerun recording."""
    episodes = " ".join(f"--episode {shlex.quote(episode_id)}" for episode_id in episode_ids)
    return f"robolake view {target.dataset}:{target.version} {episodes} -o {check}.rrd{_lake_flag(lake)}"


def episode_quality(con: duckdb.DuckDBPyConnection, lake: Lake, target: GoldVersion, settings: dict) -> EpisodeQuality:
    """Each behaviour check's flags under `settings` (gate.yaml's episode_quality for the
    dataset), the distribution of every value column, contact sheets of the SHOWN_FLAGGED
    worst episodes per check and the drop command of every flagged episode."""
    cameras = [cam.name for cam in target.spec.cameras]
    flags = quality_flags(quality_rows(con), settings, target.spec.action.names, cameras, target.spec.control_rate_hz)
    histograms = {column: histogram(check.table[column].to_numpy(float))
                  for check in flags if not check.skipped and not check.by_id for column in check.limits}
    shown = {row.episode_id: _sheet_camera(check, row, cameras)
             for check in flags for _, row in check.flagged.head(SHOWN_FLAGGED).iterrows()} if cameras else {}
    sheets = contact_sheets(lake, target.dataset, target.version, shown)
    condition = drop_condition(flags)
    views = {check.name: view_command(lake, target, check.name, check.flagged.head(SHOWN_FLAGGED)["episode_id"].tolist())
             for check in flags if not check.skipped and len(check.flagged)}
    return EpisodeQuality(flags, histograms, sheets, drop_command(lake, target, condition) if condition else None,
                          views)


def build_report(lake: Lake, target: GoldVersion, quality_settings: dict, threshold: float = THRESHOLD,
                 gap_ratio: float = GAP_RATIO) -> CoverageReport:
    con = connect_version(lake, target)
    with Progress(console=progress.console, transient=True) as bar:
        task = bar.add_task(f"report {target.dataset} {target.version}", total=8)
        fields, uncrossed = metadata_fields(con, target)
        full_cube = cube(con, fields)
        bar.advance(task)
        values = marginals(con, fields)
        found_gaps = gaps(con, fields, gap_ratio)
        bar.advance(task)
        texts = con.execute(INSTRUCTIONS_SQL).df()
        instructions, near_duplicates = instruction_diversity(texts)
        meaning = instruction_meaning(texts)
        bar.advance(task)
        lengths = histogram(con.execute("SELECT num_steps FROM episodes").df()["num_steps"].to_numpy(float))
        actions = action_histograms(con, target.spec.action.names)
        bar.advance(task)
        cameras = camera_histograms(con, [cam.name for cam in target.spec.cameras])
        bar.advance(task)
        filtered = _table_or_empty(
            con, "filtered", "SELECT rule, policy, dimension, count(*) AS items FROM filtered GROUP BY ALL ORDER BY ALL",
            ["rule", "policy", "dimension", "items"])
        quarantined = _table_or_empty(
            con, "quarantine", "SELECT reason_code, count(*) AS episodes FROM quarantine GROUP BY ALL ORDER BY ALL",
            ["reason_code", "episodes"])
        splits = con.execute("""
            SELECT split, count(*) AS episodes, sum(num_steps)::BIGINT AS steps FROM episodes
            GROUP BY split ORDER BY split""").df()
        bar.advance(task)
        totals = {
            "episodes": int(splits["episodes"].sum()),
            "steps": int(target.manifest["counts"]["steps_written"]),
            "tasks": int(instructions["task"].nunique()) if len(instructions) else 0,
            "instructions": int(instructions["distinct_instructions"].sum()) if len(instructions) else 0,
            "quarantined": int(quarantined["episodes"].sum()) if len(quarantined) else 0,
            "filtered_items": int(filtered["items"].sum()) if len(filtered) else 0,
        }
        bar.advance(task)
        quality = episode_quality(con, lake, target, quality_settings)
        bar.advance(task)
    return CoverageReport(
        target.dataset, target.version, utc_now(), threshold, fields, uncrossed, totals, full_cube, values, found_gaps,
        under_sampled(values, threshold) + instruction_flags(instructions), instructions, near_duplicates, meaning,
        lengths, actions, cameras, filtered, quarantined, splits, saturation_table(target.statistics), quality,
    )


def coverage_document(report: CoverageReport) -> dict:
    """coverage.json: figures for DVC metrics and the flags with their recommendations."""
    values = report.marginals
    return {
        "totals": report.totals,
        "under_sampled": len(report.flags),
        "gaps": len(report.gaps),
        "empty_combinations": int((report.gaps["episodes"] == 0).sum()) if len(report.gaps) else 0,
        "min_share_per_field": {f: round(float(values.loc[values["field"] == f, "share"].min()), 4)
                                for f in report.fields},
        "not_crossed": dict(zip(report.uncrossed["field"], report.uncrossed["reason"])),
        "near_duplicate_instruction_pairs": len(report.near_duplicates),
        "instruction_meaning": meaning_figures(report.meaning),
        "flags": [flag.recommendation for flag in report.flags],
        "flagged": [flag.label for flag in report.flags],  # what each flag is about: "lighting=side"
        "threshold": report.threshold,
        "episode_quality": quality_document(report.quality),
    }


def quality_document(quality: EpisodeQuality) -> dict:
    """coverage.json's episode_quality: per check its flagged episodes worst first, each
    with its values ("episode_0042 (2.10 toggles/s)"), or why it was skipped; the drop command."""
    flagged = {check.name: check.flagged for check in quality.flags}
    return {
        "checks": {check.name: {"skipped": check.skipped} if check.skipped else {
            "rule": check.description, "flagged": len(flagged[check.name]),
            "episodes": flagged[check.name]["episode"].tolist(), "view_command": quality.view_commands.get(check.name)}
            for check in quality.flags},
        "flagged_episodes": len({i for table in flagged.values() for i in table["episode_id"]}),
        "drop_command": quality.drop_command,
    }


def quality_table(quality: EpisodeQuality) -> pd.DataFrame:
    """Every flagged episode of every check, worst first per check: check, episode_id, finding, worst."""
    frames = [check.flagged.assign(check=check.name)[["check", "episode_id", "episode", "worst"]]
              for check in quality.flags if len(check.flagged)]
    columns = ["check", "episode_id", "finding", "worst"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).rename(columns={"episode": "finding"})[columns]


def write_report(lake: Lake, report: CoverageReport) -> str:
    from validation.html_report import render_html

    reports = lake.reports(report.dataset, report.version)
    write_bytes(join(reports, "coverage.html"), render_html(report).encode())
    write_json(join(reports, "coverage.json"), coverage_document(report))
    tables = {"cube": report.cube, "uncrossed": report.uncrossed, "marginals": report.marginals, "gaps": report.gaps,
              "instructions": report.instructions, "near_duplicates": report.near_duplicates,
              "meaning_per_task": report.meaning.per_task, "meaning_clusters": report.meaning.clusters,
              "meaning_cross_task": report.meaning.cross_task,
              "filtered": report.filtered_by_rule, "quarantined": report.quarantined_by_reason,
              "splits": report.splits, "saturation": report.saturation,
              "episode_quality_flags": quality_table(report.quality)}
    for name, table in tables.items():
        write_table(join(reports, "coverage", f"{name}.parquet"), pa.Table.from_pandas(table, preserve_index=False))
    return reports


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="robolake report", description="Write a dataset version's coverage report.")
    parser.add_argument("dataset", type=dataset_argument, help="NAME or NAME:VERSION (default: the latest version)")
    parser.add_argument("--lake", default="lake", help="lake root folder (default: lake)")
    parser.add_argument("--config", help="gate settings YAML whose episode_quality thresholds flag episodes "
                                         "(default: validation/gate.yaml)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"flag values below this fraction of an even share (default: {THRESHOLD})")
    parser.add_argument("--gap-ratio", type=float, default=GAP_RATIO,
                        help=f"list value pairs below this fraction of their count under independence "
                             f"(default: {GAP_RATIO})")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.time()
    lake = Lake(args.lake)
    target = lake.resolve(args.dataset)
    from validation.gate import CONFIG, load_config  # the gate's settings module loads Great Expectations

    config = load_config(target.dataset, Path(args.config) if args.config else CONFIG)
    report = build_report(lake, target, config["episode_quality"], args.threshold, args.gap_ratio)
    reports = write_report(lake, report)
    for flag in report.flags:
        print(f"under-sampled: {flag.recommendation}")
    flagged = quality_document(report.quality)["flagged_episodes"]
    print(
        f"report {target.dataset} {target.version}: {report.totals['episodes']} episodes, {report.totals['steps']} "
        f"steps, {len(report.fields)} fields crossed, {len(report.flags)} under-sampled, {len(report.gaps)} gaps, "
        f"{len(report.near_duplicates)} near-duplicate instruction pairs, {flagged} episodes flagged by the "
        f"behaviour checks in {time.time() - started:.1f} s "
        f"-> {reports}/coverage.html"
    )
    return 0
