"""Calibrate the episode-quality metrics against the sample's seeded behaviour faults.

Writes N episodes with `robolake sample` (half HDF5 sessions, half ROS 2 mcap bags) with
the behaviour-fault shares raised so that each kind has about 30 or more episodes at
N = 500, converts both halves with the demo's specs (datasets/sample_tabletop.yaml and
datasets/sample_tabletop_ros.yaml) into a scratch lake with `robolake convert`, and reads
the silver episode_quality table the pipeline wrote. Each episode is joined by id with
its fault kind in sample_manifest.json; clean episodes are those the manifest lists no
fault for (the sample's data faults, spikes, NaN actions and truncated files, are left
out of both groups). The timing kinds exist in the bags only, and are held against the
clean bags (HDF5 records no timestamps).

It prints, and with --write-doc puts between the calibration markers of docs/quality.md:
1. per fault kind, the ROC-AUC of the metric docs/quality.md names for it at separating
   that kind's episodes from clean ones (Mann-Whitney: the chance that a faulty episode
   scores above a clean one, ties counting half; a score null for an episode leaves that
   episode out), the share of the kind's episodes its gate check flags at the default
   thresholds (validation/gate.yaml), and the single metric column that separates it
   best, either way round ("lower" when low values mark the fault);
2. the false-flag rate: the share of clean episodes that each gate check, and any, flags
   at the default thresholds (validation/quality_flags.py, run per dataset as the gate does);
3. the targets: AUC >= 0.9 for every seeded behaviour kind, false flags <= 2%.
The sample's seeded action spikes (a data fault, 3 per sample) get a row too, without a target.

    python benchmarks/quality_calibration.py --write-doc      # 500 episodes, seed 0: about 16 min on 2 busy cores
    python benchmarks/quality_calibration.py --episodes 40    # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robolake import lake_views  # noqa: E402
from robolake.lake import Lake  # noqa: E402
from robolake.sample.faults import BEHAVIOUR_KINDS  # noqa: E402
from robolake.spec import load_spec  # noqa: E402
from validation.gate import load_config  # noqa: E402
from validation.quality_flags import quality_flags, quality_rows  # noqa: E402
from harness import (  # noqa: E402
    Target, add_run_arguments, benchmark_parser, markdown_table, parent_run, print_targets, run_command, targets_met,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs/quality.md"
BEGIN, END = "<!-- quality_calibration.py: begin -->", "<!-- quality_calibration.py: end -->"
ROBOLAKE = str(Path(sys.executable).with_name("robolake"))
# Shares that give each kind >= 30 episodes in 500 (the timing kinds' shares are of the 250 bags).
SHARES = {"idle": 0.08, "gripper_chatter": 0.08, "frozen_camera": 0.08, "failed_demo": 0.08,
          "duplicate_episode": 0.08, "timestamp_jitter": 0.14, "dropped_steps": 0.14}
DATASETS = {"hdf5": ("datasets/sample_tabletop.yaml", "hdf5/*.hdf5"),
            "mcap": ("datasets/sample_tabletop_ros.yaml", "bags/episode_*/")}
VERSION = "1.0.0"
AUC_TARGET, FALSE_FLAG_TARGET = 0.9, 0.02


@dataclass(frozen=True)
class Detector:
    """The metric docs/quality.md names for a fault kind, and the gate check holding it."""

    metric: str  # a column of `scores`
    check: str  # a validation/quality_flags.py check name


DETECTORS = {
    "idle": Detector("idle_end_s", "idle_episodes"),
    "gripper_chatter": Detector("gripper_reversals", "gripper_chatter"),
    "frozen_camera": Detector("camera_freeze_s", "camera_freeze"),
    "failed_demo": Detector("path_length_ratio", "path_efficiency"),
    "duplicate_episode": Detector("duplicate", "duplicate_episodes"),
    "timestamp_jitter": Detector("step_interval_max_deviation_ms", "step_timing"),
    "dropped_steps": Detector("timing_gaps", "step_timing"),
    "action_spike": Detector("spike_steps", "action_spikes"),  # a data fault: 3 per sample, no target
}


def roc_auc(faulty: Sequence[float], clean: Sequence[float]) -> float:
    """ROC-AUC of a score that is higher for faulty episodes, by the Mann-Whitney U
    statistic: P(faulty > clean) + P(faulty == clean) / 2 over all pairs (ties get
    average ranks). NaN when either group is empty."""
    faulty, clean = np.asarray(faulty, np.float64), np.asarray(clean, np.float64)
    if not len(faulty) or not len(clean):
        return float("nan")
    values = np.concatenate([faulty, clean])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, tie_group, counts = np.unique(values, return_inverse=True, return_counts=True)
    rank_sums = np.bincount(tie_group, weights=ranks)
    ranks = (rank_sums / counts)[tie_group]  # each tied value gets its group's mean rank
    u = ranks[:len(faulty)].sum() - len(faulty) * (len(faulty) + 1) / 2
    return float(u / (len(faulty) * len(clean)))


# ---------------------------------------------------------------- the data


def lake_episode_id(entry: dict) -> str:
    """The episode id conversion gives a sample_manifest.json entry: the session file
    (without hdf5/ and .hdf5) and its group under data/, or the bag folder's name."""
    if entry["container"] == "hdf5":
        return f"{entry['path'].removeprefix('hdf5/').removesuffix('.hdf5')}/data/{entry['group']}"
    return entry["path"].removeprefix("bags/")


def generate_and_convert(workdir: str, episodes: int, seed: int, raw: str | None) -> tuple[str, dict]:
    """`robolake sample` into workdir/raw (or the sample already in `raw`), both halves
    converted into workdir/lake; returns the lake and the sample's manifest."""
    lake = os.path.join(workdir, "lake")
    if raw is None:
        raw = os.path.join(workdir, "raw")
        shares = [arg for kind, share in SHARES.items() for arg in ("--fault-share", f"{kind}={share}")]
        done = run_command([ROBOLAKE, "sample", raw, "--episodes", str(episodes), "--seed", str(seed),
                            "--workers", "2", *shares], {})
        print("  " + done.stdout.strip().splitlines()[-1], flush=True)

    def convert(spec_and_glob: tuple[str, str]):
        spec, pattern = spec_and_glob
        return run_command([ROBOLAKE, "convert", str(REPO / spec), "--lake", lake, "--version", VERSION,
                            "--set", f"source.paths=['{raw}/{pattern}']"], {})

    with ThreadPoolExecutor(len(DATASETS)) as pool:  # one core each
        for done in pool.map(convert, DATASETS.values()):
            print("  " + done.stdout.strip().splitlines()[-1][:200], flush=True)
    with open(os.path.join(raw, "sample_manifest.json")) as f:
        return lake, json.load(f)


def episode_table(lake: str, manifest: dict) -> pd.DataFrame:
    """One row per converted episode: its container, fault kind (None: clean; the data
    faults' kinds as written), the scores (every numeric episode_quality column, with
    idle_end_s, camera_freeze_s and duplicate added) and one boolean column per gate check
    (`flag_<check>`) at the default thresholds."""
    kinds = {(e["container"], lake_episode_id(e)): (e["fault"] or {}).get("kind") for e in manifest["episodes"]}
    frames = []
    for container, (spec_path, _) in DATASETS.items():
        spec = load_spec(str(REPO / spec_path))
        rows = quality_rows(lake_views.connect(Lake(lake), spec.name, VERSION))
        cameras = [camera.name for camera in spec.cameras]
        flags = quality_flags(rows, load_config(spec.name)["episode_quality"], spec.action.names, cameras,
                              spec.control_rate_hz)
        table = rows.assign(container=container, kind=[kinds[(container, i)] for i in rows["episode_id"]])
        table["idle_end_s"] = table[["idle_head_s", "idle_tail_s"]].max(axis=1, skipna=False)
        table["camera_freeze_s"] = table[[f"camera_{c}_freeze_s" for c in cameras]].max(axis=1, skipna=False)
        for check in flags:
            extra = check.table.set_index("episode_id").reindex(table["episode_id"])
            for column in ("duplicate", "stuck_dimensions"):
                if column in extra and column not in table:
                    table[column] = extra[column].to_numpy(np.float64)
            table[f"flag_{check.name}"] = table["episode_id"].isin(set(check.flagged["episode_id"]))
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def score_columns(table: pd.DataFrame) -> list[str]:
    """The numeric metric columns (what a best metric is chosen from)."""
    return [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(
        table[c]) and table[c].notna().any()]


# ---------------------------------------------------------------- the figures


def kind_rows(table: pd.DataFrame) -> list[dict]:
    """Per seeded kind: its episodes, the clean ones it is held against, the AUC of its
    documented metric, the share its check flags, and the best-separating metric."""
    clean = table[table["kind"].isna()]
    columns = score_columns(table)
    rows = []
    for kind, detector in DETECTORS.items():
        faulty = table[table["kind"] == kind]
        against = clean[clean["container"].isin(set(faulty["container"]))]

        def auc(column: str) -> float:
            return roc_auc(faulty[column].dropna(), against[column].dropna())

        aucs = {column: auc(column) for column in columns}
        best = max((c for c in columns if not np.isnan(aucs[c])), key=lambda c: abs(aucs[c] - 0.5))
        rows.append({
            "fault kind": kind, "faulty": len(faulty), "clean": len(against),
            "metric (docs/quality.md)": detector.metric, "AUC": f"{aucs[detector.metric]:.3f}",
            "flagged at default": f"{faulty[f'flag_{detector.check}'].mean():.0%} ({detector.check})",
            "best metric": best + (" (lower)" if aucs[best] < 0.5 else ""),
            "its AUC": f"{max(aucs[best], 1 - aucs[best]):.3f}",
        })
    return rows


def false_flag_rows(table: pd.DataFrame) -> list[dict]:
    """Per gate check, and for any of them, the clean episodes it flags at the default thresholds."""
    clean = table[table["kind"].isna()]
    flags = [c for c in table.columns if c.startswith("flag_")]
    rows = [{"check": c.removeprefix("flag_"), "clean flagged": int(clean[c].sum()),
             "rate": f"{clean[c].mean():.1%}"} for c in flags]
    any_flag = clean[flags].any(axis=1)
    return rows + [{"check": f"any (of {len(clean)} clean episodes)", "clean flagged": int(any_flag.sum()),
                    "rate": f"{any_flag.mean():.1%}"}]


def targets(kinds: list[dict], table: pd.DataFrame) -> list[Target]:
    clean = table[table["kind"].isna()]
    rate = float(clean[[c for c in table.columns if c.startswith("flag_")]].any(axis=1).mean())
    found = [Target(f"AUC {row['fault kind']} ({row['metric (docs/quality.md)']})", row["AUC"], f">= {AUC_TARGET}",
                    float(row["AUC"]) >= AUC_TARGET, f"{row['fault kind']} {row['AUC']}") for row in kinds
             if row["fault kind"] in BEHAVIOUR_KINDS]
    return found + [Target("false flags on clean episodes", f"{rate:.1%}", f"<= {FALSE_FLAG_TARGET:.0%}",
                           rate <= FALSE_FLAG_TARGET, f"false flags {rate:.1%}")]


def write_doc(body: str, path: Path = DOC) -> None:
    """Put `body` between the calibration markers of docs/quality.md (the rest of the page,
    the prose around the table included, stays as it is)."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} block for the table")
    head, rest = text.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{body}\n{END}{rest.split(END, 1)[1]}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--episodes", type=int, default=500, help="episodes generated (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default: 0)")
    parser.add_argument("--raw", help="convert the sample in this folder (a kept run's raw/) instead of writing "
                        "one; --episodes and --seed are then read from its manifest")
    parser.add_argument("--write-doc", action="store_true", help=f"put the tables in {DOC.relative_to(REPO)}")
    add_run_arguments(parser, [], "the sample and the lake")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.raw:
        with open(os.path.join(args.raw, "sample_manifest.json")) as f:
            written = json.load(f)
        args.episodes, args.seed = written["num_episodes"], written["seed"]
    heading = f"episode-quality calibration: {args.episodes} sample episodes (seed {args.seed}), faults at {SHARES}"
    with parent_run(heading, "robolake-quality-", args.keep, args.workdir) as run:
        lake, manifest = generate_and_convert(run.workdir, args.episodes, args.seed, args.raw)
        table = episode_table(lake, manifest)
    kinds, false_flags = kind_rows(table), false_flag_rows(table)
    found = targets(kinds, table)
    tables = (f"{len(table)} episodes converted of {args.episodes} generated (seed {args.seed}, generator "
              f"{manifest['generator_version']}); `python benchmarks/quality_calibration.py --episodes {args.episodes} "
              f"--seed {args.seed}`.\n\n{markdown_table(kinds)}\n\n{markdown_table(false_flags)}")
    print("\n" + tables)
    print_targets(found)
    if args.write_doc:
        write_doc(tables)
        print(f"\nwrote the tables into {DOC.relative_to(REPO)}")
    print(f"\nsummary: {targets_met(found)}; {run.seconds:.0f} s in all")


if __name__ == "__main__":
    main(sys.argv[1:])
