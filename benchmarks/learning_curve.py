"""Closed-loop success of the demo's training recipe against training steps and against the
number of training episodes, with what the policy has and has not learned at each point.

Steps: one run of the recipe (training/configs/pretrain.yaml) on sample_tabletop:1.0.0,
paused every --every steps up to --max-steps (`robolake train --stop-after`, then
`--resume`: one cosine schedule over --max-steps), its last/ checkpoint measured at each
pause. Episodes: the recipe at its own steps on a share of the train split (--shares),
each a version derived with `robolake edit drop` (val and test kept whole).

Each point: closed-loop success over --rollouts scenes of the tabletop env (seed 1, never
trained on) with its 95% Wilson interval and the failure modes; and agreement with the
scripted expert on the states the expert visits (the expert drives, the policy is asked at
every step): the correlation of the policy's dx, dy, dz with the expert's and the share of
gripper commands on the expert's side. dy is where the target lies left or right, so its
correlation says whether the policy localizes the object it was asked for.

Prints a table and writes it to docs/learning_curve.md. Run from the repository root after
`make demo`; about 25 minutes on 2 cores with the defaults."""

from __future__ import annotations

import shutil
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.evaluate import closed_loop  # noqa: E402
from training.runtime import Policy  # noqa: E402
from training.sim_env import ScriptedPolicy, TabletopEnv  # noqa: E402
from harness import benchmark_parser, markdown_table, run_command, write_measured_doc  # noqa: E402

DATASET, VERSION = "sample_tabletop", "1.0.0"
RECIPE = Path("training/configs/pretrain.yaml")
WORK = Path("lake/runs/learning_curve")
DOC = Path("docs/learning_curve.md")
TASKS = ["pick", "place", "push"]
SEED, MAX_STEPS = 1, 80


run = partial(run_command, env={"TF_CPP_MIN_LOG_LEVEL": "2"})


def expert_agreement(bundle: Path, episodes: int = 6) -> dict:
    """The policy's next action against the scripted expert's on the expert's own rollouts."""
    policy = Policy.from_checkpoint(bundle, execute_steps=1)  # asked at every step
    env = TabletopEnv()
    expert = ScriptedPolicy(env)
    predicted, wanted = [], []
    for episode in range(episodes):
        observation, _ = env.reset(seed=SEED if episode == 0 else None,
                                   options={"task": TASKS[episode % len(TASKS)], "max_steps": MAX_STEPS})
        expert.reset()
        policy.reset()
        done = False
        while not done:
            action = expert.act(observation)
            predicted.append(policy.act(observation["images"], observation["instruction"],
                                        observation["state"]).raw_actions[0])
            wanted.append(action)
            observation, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    predicted, wanted = np.array(predicted), np.array(wanted)
    correlation = {name: float(np.corrcoef(predicted[:, d], wanted[:, d])[0, 1]) for name, d in
                   (("dx", 0), ("dy", 1), ("dz", 2))}
    return {**correlation, "gripper": float(np.mean((predicted[:, 6] > 0) == (wanted[:, 6] > 0)))}


def measure(label: str, bundle: Path, rollouts: int) -> dict:
    report = closed_loop(bundle, TASKS, rollouts, None, MAX_STEPS, SEED).summary()
    agreement = expert_agreement(bundle)
    low, high = report["success_ci"]
    modes = ", ".join(f"{mode} {count}" for mode, count in sorted(report["failure_modes"].items()))
    point = {"point": label, "success": f"{report['successes']}/{report['episodes']}", "95% CI": f"{low:.0%}-{high:.0%}",
             **{f"corr {k}": f"{v:.2f}" for k, v in agreement.items() if k != "gripper"},
             "gripper agreement": f"{agreement['gripper']:.0%}", "failure modes": modes}
    print("   ", point, flush=True)
    return point


def train(config: Path, dataset: str, run_dir: Path, *extra: str) -> None:
    run(["robolake", "train", dataset, "--config", str(config), "--lake", "lake",
         "--run-dir", str(run_dir), *extra])


def steps_curve(every: int, max_steps: int, rollouts: int) -> list[dict]:
    recipe = yaml.safe_load(RECIPE.read_text())
    config = WORK / "steps.yaml"
    config.write_text(yaml.safe_dump({**recipe, "steps": max_steps, "val_every": every}))
    run_dir = WORK / "steps"
    shutil.rmtree(run_dir, ignore_errors=True)
    points = []
    for done in range(every, max_steps + 1, every):
        train(config, f"{DATASET}:{VERSION}", run_dir, "--stop-after", str(every), *(["--resume"] if points else []))
        points.append(measure(f"{done} steps, all train episodes", run_dir / "last", rollouts))
    return points


def episodes_curve(shares: list[float], rollouts: int) -> list[dict]:
    points = []
    for index, share in enumerate(shares):
        version = f"1.{90 + index}.0"
        keep = round(share * 100)
        run(["robolake", "edit", "drop", f"{DATASET}:{VERSION}", "--version", version, "--lake", "lake", "--overwrite",
             "--where", f"split = 'train' AND hash(episode_id) % 100 >= {keep}"])
        run_dir = WORK / f"share_{keep}"
        shutil.rmtree(run_dir, ignore_errors=True)
        train(RECIPE, f"{DATASET}:{version}", run_dir)
        steps = yaml.safe_load(RECIPE.read_text())["steps"]
        points.append(measure(f"{steps} steps, {share:.0%} of train episodes", run_dir / "last", rollouts))
    return points


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--max-steps", type=int, default=2500)
    parser.add_argument("--shares", type=float, nargs="*", default=[0.25, 0.5])
    parser.add_argument("--rollouts", type=int, default=30)
    args = parser.parse_args(argv)
    started = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    points = steps_curve(args.every, args.max_steps, args.rollouts) + episodes_curve(args.shares, args.rollouts)
    table = markdown_table(points)
    write_measured_doc(DOC, "Learning curve of the demo's recipe (measured)", __doc__, table + "\n")
    print(table)
    print(f"{len(points)} points in {(time.time() - started) / 60:.1f} min -> {DOC}")


if __name__ == "__main__":
    main()
