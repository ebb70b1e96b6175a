"""`robolake evaluate <run>`: a checkpoint measured on data it never trained on.

Offline, on a gold version's test split (by default the checkpoint's own dataset):
the policy predicts each step's action from the step's cameras and instruction; the
predictions are denormalized with the statistics bundled in the checkpoint and
compared with the recorded actions (`training/metrics.py`), overall, per task, and
for tasks seen in training apart from held-out ones. Closed loop (`--rollouts N`):
N episodes in all, cycled over the split's tasks, in the built-in tabletop environment
(`training/sim_env.py`; episode k is the sample generator's episode (seed, k)), acting
through the safe runtime (`training/runtime.py`); failed rollouts are saved with their
frames, actions and failure mode. The instruction-swap check (`--swap-rollouts`, by default
all of them; training/instruction_swap.py) rolls the checkpoint out again on the same
scenes with another object named. `--baseline` rolls another checkpoint out on the same
scenes and tasks and compares the two scene by scene (better, worse or no measurable
difference: exact McNemar test). The rollouts are joined to the training data (training/eval_report.py):
length and smoothness against the demonstrations, success per metadata value against
its train coverage, and the values the policy is weak on.

A remote run (s3://, gs://) is read through a local copy of its bundle, and its eval/ is
written locally and uploaded. Writes `<run>/eval/eval.json` (DVC metrics), `per_dimension.csv` (DVC plots), with
rollouts `eval.html` and `rollouts/` (failed rollouts and `failures.csv`)."""

from __future__ import annotations

import argparse
import csv
import json
import posixpath
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.progress import Progress

from robolake import progress
from robolake.arguments import ArgumentParser, positive_int
from robolake.errors import RobolakeError
from robolake.lake import GoldVersion, Lake
from robolake.lineage import dataset_change
from robolake.names import dataset_argument
from robolake.normalization import denormalize, load_statistics
from robolake.overwrite import check_replace
from robolake.pins import reading
from robolake.staging import staged
from robolake.storage import exists, is_remote, join, read_json
from training.checkpoint import bundle_location, local_bundle
from training.config import DataConfig
from training.data import RldsSteps, collate
from training.eval_report import (baseline_text, compare_with_demonstrations, coverage_join, success_text, swap_text, weak_lines,
                                   write_eval_html)
from robolake.lake_views import connect
from training.metrics import EpisodePrediction, grouped_metrics, paired_comparison
from training.model import load_pretrained
from training.runtime import checkpoint_cameras, checkpoint_crop_scale

if TYPE_CHECKING:
    from training.rollout import RolloutReport

GRIPPER_NAME = "gripper"


def seen_tasks(lake: Lake, dataset: str, version: str) -> set[str]:
    """Tasks of the train split of the dataset version a checkpoint was trained on."""
    con = connect(lake, dataset, version)
    return {row[0] for row in con.sql("SELECT DISTINCT task FROM episodes WHERE split = 'train'").fetchall()}


def predict_episodes(bundle: Path, target: GoldVersion, split: str, batch_size: int,
                     on_steps=lambda n: None) -> list[EpisodePrediction]:
    """Every step of `split` predicted by the checkpoint, grouped by episode in step order."""
    model, _ = load_pretrained(bundle)
    statistics = load_statistics(str(bundle / "dataset_statistics.json"))
    config = DataConfig(image_size=model.config.image_size, cameras=checkpoint_cameras(bundle, statistics),
                        crop_scale=checkpoint_crop_scale(bundle))
    steps = RldsSteps(target.gold_dir, split, config, train=False)
    tokenizer = model.action_tokenizer
    by_episode: dict[str, dict] = {}
    with torch.inference_mode():
        for batch in torch.utils.data.DataLoader(steps, batch_size=batch_size, collate_fn=collate):
            out = model.predict_actions(batch["images"], batch["instruction"], state=batch["state"])
            predicted = denormalize(out["actions"].cpu().numpy(), statistics)
            predicted_bins = (out["tokens"] - model.config.instruction_vocab_size).cpu().numpy()
            recorded_bins = tokenizer.encode(batch["action"]).numpy()
            for i, episode_id in enumerate(batch["episode_id"]):
                episode = by_episode.setdefault(episode_id, {"task": batch["task"][i], "rows": []})
                episode["rows"].append((int(batch["step_index"][i]), predicted[i], batch["action_raw"][i].numpy(),
                                        predicted_bins[i], recorded_bins[i]))
            on_steps(len(batch["episode_id"]))
    episodes = []
    for episode_id, episode in sorted(by_episode.items()):
        rows = sorted(episode["rows"], key=lambda row: row[0])
        columns = [np.stack([row[k] for row in rows]) for k in range(1, 5)]
        episodes.append(EpisodePrediction(episode_id, episode["task"], *columns))
    return episodes


def _gripper(statistics: dict) -> tuple[int | None, float]:
    """The gripper dimension (by name) and the midpoint between its closed and open values."""
    names = statistics["robolake"]["action_names"]
    if GRIPPER_NAME not in names:
        return None, 0.0
    dim = names.index(GRIPPER_NAME)
    return dim, (statistics["action"]["min"][dim] + statistics["action"]["max"][dim]) / 2


def trained_on(bundle: Path) -> dict:
    """The dataset version a checkpoint was trained on (its provenance's `dataset`)."""
    return json.loads((bundle / "provenance.json").read_text())["dataset"]


def _dataset_change(own: dict, target: GoldVersion) -> str | None:
    """The change of the checkpoint's own dataset version since training, if evaluated on it."""
    if (own["name"], own["version"]) != (target.dataset, target.version):
        return None
    current = {"build": target.manifest.get("build"), "fingerprint": target.manifest["fingerprint"],
               "statistics_sha256": target.manifest.get("statistics_sha256")}
    return dataset_change(own, current)


def evaluate_offline(bundle: Path, target: GoldVersion, split: str, lake: Lake, batch_size: int = 32) -> dict:
    """Offline metrics of the checkpoint on `split` of `target` (see the module docstring)."""
    available = target.manifest["counts"]["by_split"]
    if not available.get(split, {}).get("episodes"):
        counts = ", ".join(f"{name} {count['episodes']}" for name, count in available.items())
        raise RobolakeError(f"{target.dataset}:{target.version} has no {split} episodes (episodes by split: {counts})")
    statistics = load_statistics(str(bundle / "dataset_statistics.json"))
    names = statistics["robolake"]["action_names"]
    if target.statistics["robolake"]["action_names"] != names:
        raise RobolakeError(f"{target.dataset}:{target.version} actions {target.statistics['robolake']['action_names']}"
                            f" differ from the checkpoint's {names}")
    training_dataset = trained_on(bundle)
    with Progress(console=progress.console, transient=True) as bar:
        task = bar.add_task(f"evaluate {bundle} on {target.dataset} {split}", total=available[split].get("steps"))
        episodes = predict_episodes(bundle, target, split, batch_size, lambda n: bar.advance(task, n))
    gripper_dim, threshold = _gripper(statistics)
    return {
        "checkpoint": str(bundle),
        "dataset": {"name": target.dataset, "version": target.version, "split": split},
        "trained_on": {"name": training_dataset["name"], "version": training_dataset["version"]},
        **grouped_metrics(episodes, names, gripper_dim, threshold,
                          seen_tasks(lake, training_dataset["name"], training_dataset["version"])),
    }


@contextmanager
def _tabletop(bundle: Path):
    """The checkpoint acting through the safe runtime, and the built-in tabletop environment."""
    from training.runtime import Policy
    from training.sim_env import RuntimePolicyAdapter, TabletopEnv

    env = TabletopEnv()
    try:
        yield RuntimePolicyAdapter(Policy.from_checkpoint(bundle)), env
    finally:
        env.close()


def closed_loop(bundle: Path, tasks: list[str], episodes: int, failures_dir: Path | None, max_steps: int | None,
                seed: int, record: bool = False) -> RolloutReport:
    """`episodes` episodes cycled over `tasks` in the built-in tabletop environment (the
    sample generator's episodes (seed, k)), the checkpoint acting through the safe
    runtime; failed rollouts are saved in `failures_dir` (when given), with `record` also
    as Rerun recordings."""
    from training.rollout import run_rollouts

    with _tabletop(bundle) as (policy, env):
        return run_rollouts(policy, env, episodes, tasks=tasks, seed=seed, max_steps=max_steps,
                            failures_dir=failures_dir, record_failures=record)


def swap_check(bundle: Path, tasks: list[str], episodes: int, max_steps: int | None, seed: int) -> dict:
    """The instruction-swap check (training/instruction_swap.py) on closed_loop's first
    `episodes` scenes."""
    from training.instruction_swap import instruction_swap

    with _tabletop(bundle) as (policy, env):
        return instruction_swap(policy, env, episodes, tasks, seed, max_steps)


def evaluate_closed_loop(bundle: Path, baseline: Path | None, metrics: dict, lake: Lake, out: Path,
                         episodes: int, max_steps: int | None, seed: int, swap_episodes: int,
                         record: bool = False) -> list[str]:
    """Rollouts of the checkpoint over the offline split's tasks into `metrics["rollouts"]`,
    joined to its training data, the instruction-swap check on the first `swap_episodes`
    of its scenes into `metrics["instruction_swap"]`, the rollouts of `baseline` on the
    same scenes into `metrics["baseline_rollouts"]`, and `out`/eval.html (with `record`, each
    failed rollout also as a Rerun recording, linked there); returns the weak-value lines."""
    tasks = sorted(metrics["per_task"])
    report = closed_loop(bundle, tasks, episodes, out / "rollouts", max_steps, seed, record)
    summary = report.summary()
    training = metrics["trained_on"]
    summary["seed"] = seed
    summary["demonstrations"] = compare_with_demonstrations(report.records, lake, training["name"],
                                                            training["version"])
    rows = coverage_join(lake, training["name"], training["version"], summary["by_field"])
    summary["weak_values"] = weak_lines(rows, summary["success_rate"])
    metrics["rollouts"] = summary
    if swap_episodes:
        started = time.time()
        metrics["instruction_swap"] = swap_check(bundle, tasks, swap_episodes, max_steps, seed)
        print(f"instruction swap: {swap_text(metrics['instruction_swap'])}; "
              f"{swap_episodes} rollouts in {time.time() - started:.1f} s")
    if baseline is not None:
        baseline_report = closed_loop(baseline, tasks, episodes, None, max_steps, seed)
        metrics["baseline_rollouts"] = {
            "checkpoint": str(baseline), **baseline_report.summary(),
            "paired": paired_comparison([r.success for r in report.records],
                                        [r.success for r in baseline_report.records])}
    write_eval_html(out / "eval.html", metrics, rows, summary["weak_values"], report.records)
    return summary["weak_values"]


def _is_evaluation(folder: str) -> bool:
    """A folder this command wrote: its eval.json names the checkpoint evaluated."""
    path = join(folder, "eval.json")
    try:
        document = read_json(path) if exists(path) else None
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "checkpoint" in document and "overall" in document


def write_per_dimension(metrics: dict, path: Path) -> None:
    """One row per action dimension: mse and l1 overall (a DVC bar plot)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dimension", "mse", "l1"])
        for name, values in metrics["overall"]["per_dimension"].items():
            writer.writerow([name, values["mse"], values["l1"]])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="robolake evaluate", description="Evaluate a checkpoint on held-out data.")
    parser.add_argument("run", help="a run folder (its best/ bundle is evaluated) or a checkpoint bundle folder")
    parser.add_argument("--dataset", type=dataset_argument,
                        help="NAME[:VERSION] to evaluate on (default: the checkpoint's own dataset)")
    parser.add_argument("--split", default="test", help="split to evaluate on (default: test)")
    parser.add_argument("--lake", default="lake", help="lake root folder (default: lake)")
    parser.add_argument("--out", help="output folder (default: <run>/eval)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--rollouts", type=int, default=0,
                        help="closed-loop episodes in all, cycled over the split's tasks, in the built-in "
                             "tabletop environment (per-task results in eval.json)")
    parser.add_argument("--swap-rollouts", type=int, metavar="N",
                        help="the instruction-swap check on the first N closed-loop scenes (at most --rollouts): "
                             "each rolled out again with another object named, counting how often the policy goes "
                             "to it (default: all of them; 0: off)")
    parser.add_argument("--seed", type=int, default=1,
                        help="the rollouts' scenes are the sample generator's episodes (seed, k); the demo's data "
                             "uses seed 0, so the default 1 gives scenes never trained on")
    parser.add_argument("--baseline", metavar="RUN",
                        help="another run folder or bundle rolled out on the same scenes and tasks, reported "
                             "next to this one (e.g. the pretrained policy beside its fine-tune)")
    parser.add_argument("--max-steps", type=positive_int, help="closed-loop episode limit (default: the environment's)")
    parser.add_argument("--record", action="store_true",
                        help="also write each failed rollout as a Rerun recording (.rrd: frames, the policy's "
                             "actions and entropies), linked from eval.html")
    parser.add_argument("--allow-dataset-change", action="store_true",
                        help="evaluate even if the checkpoint's dataset version was rebuilt since training "
                             "(the change is recorded in eval.json)")
    return parser.parse_args(argv)


@reading("evaluate")
def run(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.time()
    if args.record and not args.rollouts:
        raise RobolakeError("--record writes the closed-loop rollouts: give --rollouts N too")
    if args.swap_rollouts is not None and args.swap_rollouts < 0:
        raise RobolakeError(f"--swap-rollouts {args.swap_rollouts}: expected 0 (off) or more")
    # the check reuses the closed loop's scenes: at most --rollouts of them
    swap_episodes = args.rollouts if args.swap_rollouts is None else min(args.swap_rollouts, args.rollouts)
    location = bundle_location(args.run)
    bundle = local_bundle(location)  # a remote one downloaded
    baseline = local_bundle(args.baseline) if args.baseline else None
    lake = Lake(args.lake)
    own = trained_on(bundle)
    target = lake.resolve(args.dataset or f"{own['name']}:{own['version']}")
    change = _dataset_change(own, target)
    if change and not args.allow_dataset_change:
        raise RobolakeError(f"{change}; the {args.split} split is not the one held out from training. Pass "
                            f"--allow-dataset-change to evaluate anyway (recorded in eval.json)")
    out_location = args.out or join(posixpath.dirname(location) or ".", "eval")  # the run folder's eval/
    # an earlier evaluation is replaced (`dvc repro` re-runs it), nothing else
    check_replace(out_location, "an evaluation folder", True, _is_evaluation,
                  keep={"the lake": lake.root, "the checkpoint": location,
                        **({"the baseline": args.baseline} if args.baseline else {})})
    # a remote eval/ is written locally and uploaded at the end
    with staged(out_location) if is_remote(out_location) else nullcontext(out_location) as out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        metrics = evaluate_offline(bundle, target, args.split, lake, args.batch_size)
        if change:
            metrics["dataset_change"] = change
            progress.console.print(f"warning: {change}")
        if args.rollouts:
            for line in evaluate_closed_loop(bundle, baseline, metrics, lake, out, args.rollouts, args.max_steps,
                                             args.seed, swap_episodes, args.record):
                print(f"weak: {line}")
        (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_per_dimension(metrics, out / "per_dimension.csv")
    overall = metrics["overall"]
    gripper = "n/a" if overall["gripper_accuracy"] is None else f"{overall['gripper_accuracy']:.1%}"
    print(f"evaluate {location} on {target.dataset} {target.version} {args.split}: {overall['episodes']} episodes, "
          f"{overall['steps']} steps, action MSE {overall['mse']:.3g}, L1 {overall['l1']:.3g}, gripper {gripper}, "
          f"token accuracy {overall['action_token_accuracy']:.1%}"
          + (f", closed-loop success {success_text(metrics['rollouts'])}" if args.rollouts else "")
          + (f", baseline {baseline_text(metrics['baseline_rollouts'])}" if "baseline_rollouts" in metrics else "")
          + f" in {time.time() - started:.1f} s -> {out_location}")
    if args.rollouts:
        print(f"closed-loop report: {join(out_location, 'eval.html')}")
    return 0
