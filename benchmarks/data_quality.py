"""Does data quality matter? The demo's pretrained policy, closed loop, with each of
robolake's safeguards taken away: one DVC experiment per variant, the same training
recipe (training/configs/pretrain.yaml), seeds and rollout scenes.

Variants (the first three are params.yaml overrides, `dvc exp run -S ...`):
- default pipeline;
- no outlier filtering: the robust z-score and single-step jump rules set so high that
  nothing is flagged, so the sample's seeded action spikes reach training;
- saturating normalization: `mean_std` with std_bound 1, the old default that clipped
  10-25% of every action dimension;
- under-sampled values dropped: `robolake edit drop` removes the episodes of every value
  the coverage report flags as under-sampled (the task field aside: dropping a task is
  not a coverage question) into version EDITED_VERSION; the pretrain and evaluate stages'
  own commands then run on it (into RUNS), since the pipeline trains on the version it
  converts.

Each DVC variant runs `dvc exp run <params> evaluate@pretrain` in this workspace (the
stages upstream of the pretrained policy's evaluation), reads its eval.json and restores
params.yaml; the edit runs first (it derives from the default build), the default last,
so the workspace ends as `make demo` leaves it. It
prints one row per variant (closed-loop success with its 95% Wilson interval, per task,
offline action MSE and gripper accuracy) and writes the same table to
docs/data_quality.md. Several minutes a variant on 2 cores. Run from the repository
root after `make demo` (the edit reads the default build's coverage report)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robolake.lake import Lake  # noqa: E402
from validation.coverage import under_sampled  # noqa: E402

DATASET = "sample_tabletop"
EDITED_VERSION = "1.1.0"
PIPELINE_RUN = Path("lake/runs/pretrain")
RUNS = Path("lake/runs/data_quality")
DOC = Path("docs/data_quality.md")
NOT_DROPPED = {"task", "env"}  # a task is not a coverage gap to drop; env holds the simulator's arguments

VARIANTS = {  # in the order they run: the edit first, from the default build; the default last
    "under-sampled values dropped (robolake edit drop)": None,  # not a params change: see train_on_edited_version
    "no outlier filtering (seeded spikes kept)": {"statistics.zscore_threshold": "1e12", "statistics.jump_ratio": "1e12"},
    "saturating normalization (mean_std, clip 1)": {"statistics.normalization": "mean_std", "statistics.std_bound": "1"},
    "default pipeline": {},
}


def run(args: list[str]) -> str:
    print("$", " ".join(args), flush=True)
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def under_sampled_condition(lake: Lake, version: str, threshold: float) -> str:
    """A DuckDB condition selecting the episodes of every under-sampled value (report's rule)."""
    marginals = pd.read_parquet(Path(lake.reports(DATASET, version)) / "coverage" / "marginals.parquet")
    flags = [flag for flag in under_sampled(marginals, threshold) if flag.field not in NOT_DROPPED]
    if not flags:
        sys.exit(f"{DATASET}:{version} has no under-sampled value to drop")
    values: dict[str, list[str]] = {}
    for flag in flags:
        values.setdefault(flag.field, []).append(flag.value.replace("'", "''"))
    return " OR ".join(f"{field} IN ({', '.join(repr(v) for v in vals)})" for field, vals in values.items())


def train_on_edited_version(params: dict) -> tuple[Path, str]:
    """`robolake edit drop` of the under-sampled values of the default build, its gate, then
    the pretrain and evaluate stages' commands on it; returns the run folder and the condition."""
    version = params["datasets"][DATASET]["version"]
    condition = under_sampled_condition(Lake("lake"), version, params["report"]["threshold"])
    run(["robolake", "edit", "drop", f"{DATASET}:{version}", "--where", condition, "--version", EDITED_VERSION,
         "--lake", "lake", "--overwrite"])
    run(["robolake", "validate", f"{DATASET}:{EDITED_VERSION}", "--lake", "lake"])
    run_dir = RUNS / "under_sampled_dropped"
    shutil.rmtree(run_dir, ignore_errors=True)
    run(["robolake", "train", "--dataset", f"{DATASET}:{EDITED_VERSION}", "--config", "training/configs/pretrain.yaml",
         "--lake", "lake", "--run-dir", str(run_dir)])
    evaluate = params["evaluate"]
    run(["robolake", "evaluate", str(run_dir), "--lake", "lake", "--split", evaluate["split"], "--batch-size",
         str(evaluate["batch_size"]), "--rollouts", str(evaluate["rollouts"]), "--max-steps", str(evaluate["max_steps"]),
         "--seed", str(evaluate["seed"])])
    return run_dir, condition


def row(name: str, run_dir: Path, seconds: float) -> dict:
    evaluation = json.loads((run_dir / "eval" / "eval.json").read_text())
    rollouts = evaluation["rollouts"]
    low, high = rollouts["success_ci"]
    per_task = ", ".join(f"{task} {s['successes']}/{s['episodes']}" for task, s in rollouts["per_task"].items())
    return {
        "variant": name,
        "success": f"{rollouts['successes']}/{rollouts['episodes']} ({rollouts['success_rate']:.0%})",
        "95% CI": f"{low:.0%}-{high:.0%}",
        "per task": per_task,
        "action MSE (test)": f"{evaluation['overall']['mse']:.4g}",
        "gripper accuracy (test)": f"{evaluation['overall']['gripper_accuracy']:.0%}",
        "minutes": f"{seconds / 60:.1f}",
    }


def markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    original = Path("params.yaml").read_text()
    params = yaml.safe_load(original)
    rows, notes = [], []
    for index, name in enumerate(args.variants, 1):
        print(f"[{index}/{len(args.variants)}] {name}", flush=True)
        started = time.time()
        overrides = VARIANTS[name]
        if overrides is None:
            run_dir, condition = train_on_edited_version(params)
            notes.append(f"dropped: {condition}")
        else:
            set_params = [arg for key, value in overrides.items() for arg in ("-S", f"{key}={value}")]
            try:
                run(["dvc", "exp", "run", *set_params, "evaluate@pretrain"])
            finally:
                Path("params.yaml").write_text(original)
            run_dir = PIPELINE_RUN
        rows.append(row(name, run_dir, time.time() - started))
        print(f"    {rows[-1]['success']} (95% CI {rows[-1]['95% CI']})", flush=True)
    rows.sort(key=lambda r: r["variant"] != "default pipeline")
    table = markdown_table(rows)
    DOC.write_text("# Does data quality matter? Measured\n\n" + __doc__.split("\n\n", 1)[1] + "\n\n" + table + "\n\n"
                   + "".join(f"- {note}\n" for note in notes))
    print(table)
    print(f"{len(rows)} variants, closed-loop success of the pretrained policy -> {DOC}")


if __name__ == "__main__":
    main()
