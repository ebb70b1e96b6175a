"""Does data quality matter? The demo's pretrained policy, closed loop, with each of
robolake's safeguards taken away: one DVC experiment per variant, the same training
recipe (training/configs/pretrain.yaml), seeds and rollout scenes.

Variants (the first three are params of the dataset's spec, datasets/sample_tabletop.yaml,
set with `dvc exp run -S datasets/sample_tabletop.yaml:...`):
- default pipeline;
- no outlier filtering: the robust z-score and single-step jump rules set so high that
  nothing is flagged, so the sample's seeded action spikes reach training;
- saturating normalization: `mean_std` with std_bound 1, the old default that clipped
  10-25% of every action dimension;
- under-sampled values dropped: `robolake edit drop` removes the episodes of every value
  the coverage report flags as under-sampled (the task field aside: dropping a task is
  not a coverage question) into version EDITED_VERSION; the pretrain and evaluate stages'
  own commands then run on it, since the pipeline trains on the version it converts.

A variant the quality gate stops (its error-severity checks fail) is trained and
evaluated past the gate with the same commands, to measure what the gate kept out.

Each DVC variant runs `dvc exp run <params> evaluate@pretrain` in this workspace (the
stages upstream of the pretrained policy's evaluation), reads its eval.json and restores
the spec; the edit runs first (it derives from the default build), the default last,
so the workspace ends as `make demo` leaves it. Each variant's eval.json is kept under
RUNS/<variant>/, and the table covers every variant measured so far. It
prints one row per variant (closed-loop success with its 95% Wilson interval, per task,
offline action MSE and gripper accuracy) and writes the same table to
docs/data_quality.md. Several minutes a variant on 2 cores. Run from the repository
root after `make demo` (the edit reads the default build's coverage report)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robolake.lake import Lake  # noqa: E402
from robolake.coverage_rule import under_sampled  # noqa: E402
from harness import benchmark_parser, markdown_table, run_command, write_measured_doc  # noqa: E402

DATASET = "sample_tabletop"
EDITED_VERSION = "1.1.0"
PIPELINE_RUN = Path("lake/runs/pretrain")
RUNS = Path("lake/runs/data_quality")  # one folder per variant
DOC = Path("docs/data_quality.md")
SPEC = Path("datasets/sample_tabletop.yaml")  # DATASET's spec: the DVC variants set its params
NOT_DROPPED = {"task", "env"}  # a task is not a coverage gap to drop; env holds the simulator's arguments

VARIANTS = {  # name -> (folder under RUNS, SPEC params set); in the order they run: the edit first, the default last
    "under-sampled values dropped (robolake edit drop)": ("under_sampled_dropped", None),  # see train_on_edited_version
    "no outlier filtering (seeded spikes kept)": (
        "no_outlier_filtering", {"filters.zscore.threshold": "1.0e+12", "filters.jump.ratio": "1.0e+12"}),
    "saturating normalization (mean_std, clip 1)": (
        "saturating_normalization", {"normalization.mode": "mean_std", "normalization.std_bound": "1.0"}),
    "default pipeline": ("default", {}),
}
GATE_STOP = "gate_stop.txt"  # in a variant's folder: the gate's verdict when it stopped the pipeline


run = partial(run_command, env={"DVC_NO_ANALYTICS": "1"})


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


def train_and_evaluate(dataset: str, run_dir: Path, params: dict) -> None:
    """The pretrain and evaluate stages' commands, on `dataset` into `run_dir`."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run(["robolake", "train", dataset, "--config", "training/configs/pretrain.yaml",
         "--lake", "lake", "--run-dir", str(run_dir)])
    evaluate = params["evaluate"]
    run(["robolake", "evaluate", str(run_dir), "--lake", "lake", "--split", evaluate["split"], "--batch-size",
         str(evaluate["batch_size"]), "--rollouts", str(evaluate["rollouts"]), "--max-steps", str(evaluate["max_steps"]),
         "--seed", str(evaluate["seed"])])


def train_on_edited_version(params: dict, run_dir: Path) -> None:
    """`robolake edit drop` of the under-sampled values of the default build, its gate, then
    the pretrain and evaluate stages' commands on it."""
    version = params["datasets"][DATASET]["version"]
    condition = under_sampled_condition(Lake("lake"), version, params["report"]["threshold"])
    run(["robolake", "edit", "drop", f"{DATASET}:{version}", "--where", condition, "--version", EDITED_VERSION,
         "--lake", "lake", "--overwrite"])
    run(["robolake", "validate", f"{DATASET}:{EDITED_VERSION}", "--lake", "lake"])
    train_and_evaluate(f"{DATASET}:{EDITED_VERSION}", run_dir, params)
    (run_dir / "dropped.txt").write_text(condition + "\n")


def run_experiment(overrides: dict, params: dict, run_dir: Path) -> None:
    """`dvc exp run` of the variant up to the pretrained policy's evaluation, its eval.json kept in
    `run_dir`; SPEC is restored after (`-S` rewrites the file). When the quality gate stops the
    pipeline, its verdict is kept and the pretrain and evaluate commands run on the published
    version anyway, to measure what the gate kept out."""
    set_params = [arg for key, value in overrides.items() for arg in ("-S", f"{SPEC}:{key}={value}")]
    original = SPEC.read_text()
    try:
        done = run(["dvc", "exp", "run", *set_params, "evaluate@pretrain"], check=False)
    finally:
        SPEC.write_text(original)
    verdicts = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("gate ") and "FAILED" in line]
    if done.returncode and not verdicts:
        sys.exit(f"dvc exp run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if verdicts:
        train_and_evaluate(f"{DATASET}:{params['datasets'][DATASET]['version']}", run_dir, params)
        (run_dir / GATE_STOP).write_text(verdicts[0] + "\n")
        return
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    shutil.copy(PIPELINE_RUN / "eval" / "eval.json", run_dir / "eval" / "eval.json")


def row(name: str, run_dir: Path) -> dict:
    evaluation = json.loads((run_dir / "eval" / "eval.json").read_text())
    rollouts = evaluation["rollouts"]
    low, high = rollouts["success_ci"]
    per_task = ", ".join(f"{task} {s['successes']}/{s['episodes']}" for task, s in rollouts["per_task"].items())
    gate = run_dir / GATE_STOP
    return {
        "variant": name,
        "quality gate": "stopped the pipeline" if gate.exists() else "passed",
        "closed-loop success": f"{rollouts['successes']}/{rollouts['episodes']} ({rollouts['success_rate']:.0%})",
        "95% CI": f"{low:.0%}-{high:.0%}",
        "per task": per_task,
        "action MSE (test)": f"{evaluation['overall']['mse']:.4g}",
        "gripper accuracy (test)": f"{evaluation['overall']['gripper_accuracy']:.0%}",
    }


def notes(run_dir: Path) -> list[str]:
    return [f"{run_dir.name}: {path.stem.replace('_', ' ')}: {path.read_text().strip()}"
            for path in (run_dir / "dropped.txt", run_dir / GATE_STOP) if path.exists()]


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS),
                        help="variants to run (default: all); the table shows every variant measured so far")
    args = parser.parse_args(argv)
    params = yaml.safe_load(Path("params.yaml").read_text())
    for index, name in enumerate(args.variants, 1):
        print(f"[{index}/{len(args.variants)}] {name}", flush=True)
        started = time.time()
        folder, overrides = VARIANTS[name]
        run_dir = RUNS / folder
        if overrides is None:
            train_on_edited_version(params, run_dir)
        else:
            run_experiment(overrides, params, run_dir)
        measured = row(name, run_dir)
        print(f"    {measured['closed-loop success']} (95% CI {measured['95% CI']}) in "
              f"{(time.time() - started) / 60:.1f} min", flush=True)
    measured = {name: RUNS / folder for name, (folder, _) in VARIANTS.items() if (RUNS / folder / "eval").exists()}
    order = ["default pipeline", *[name for name in VARIANTS if name != "default pipeline"]]
    rows = [row(name, measured[name]) for name in order if name in measured]
    table = markdown_table(rows)
    write_measured_doc(DOC, "Does data quality matter? Measured", __doc__,
                       table + "\n\n" + "".join(f"- {note}\n" for path in measured.values() for note in notes(path)))
    print(table)
    print(f"{len(rows)} variants, closed-loop success of the pretrained policy -> {DOC}")


if __name__ == "__main__":
    main()
