"""Closed-loop rollouts of a policy in an environment (training/sim_env.py): per-episode
records, success rate / episode length / smoothness overall and per task, and the failed
rollouts saved for inspection.

`python -m training.rollout --policy scripted --episodes 30` runs the built-in tabletop
env and ends with a one-line summary."""

from __future__ import annotations

import argparse
import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robolake import progress
from robolake.sample.motion import CONTROL_HZ
from training.metrics import smoothness
from training.sim_env import EnvPolicy, RandomPolicy, ScriptedPolicy, TabletopEnv

FAILURES_TABLE = "failures.csv"


@dataclasses.dataclass(frozen=True)
class RolloutRecord:
    episode: int
    task: str
    instruction: str
    success: bool
    length: int  # steps taken
    smoothness: float  # sum of squared differences of consecutive actions (lower is smoother)
    failure_mode: str | None
    saved_to: str | None = None  # the failed rollout's .npz, when saved


def _summary(records: Sequence[RolloutRecord]) -> dict:
    return {
        "episodes": len(records),
        "success_rate": float(np.mean([r.success for r in records])) if records else 0.0,
        "mean_length": float(np.mean([r.length for r in records])) if records else 0.0,
        "mean_smoothness": float(np.mean([r.smoothness for r in records])) if records else 0.0,
    }


@dataclasses.dataclass(frozen=True)
class RolloutReport:
    records: list[RolloutRecord]

    @property
    def success_rate(self) -> float:
        return _summary(self.records)["success_rate"]

    def summary(self) -> dict:
        """Overall metrics, "per_task" metrics and "failure_modes" counts."""
        tasks = sorted({r.task for r in self.records})
        modes: dict[str, int] = {}
        for record in self.records:
            if not record.success:
                modes[record.failure_mode] = modes.get(record.failure_mode, 0) + 1
        return {**_summary(self.records), "failure_modes": modes,
                "per_task": {task: _summary([r for r in self.records if r.task == task]) for task in tasks}}

    def line(self) -> str:
        summary = self.summary()
        per_task = ", ".join(f"{task} {s['success_rate']:.0%}" for task, s in summary["per_task"].items())
        return (f"{summary['episodes']} rollouts: success {summary['success_rate']:.0%} ({per_task}), "
                f"mean length {summary['mean_length']:.1f} steps, mean smoothness {summary['mean_smoothness']:.3g}")


def _write_video(path: Path, frames: list[np.ndarray]) -> bool:
    """RGB frames as an MPEG-4 video at the control rate; False where cv2 has no such encoder."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), CONTROL_HZ, (width, height))
    if not writer.isOpened():
        return False
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return True


def _save_failure(folder: Path, record: RolloutRecord, frames: list, actions: np.ndarray, states: list) -> str:
    """<name>.npz (actions, states, failure mode, task, instruction) and the frames as
    <name>.mp4 (~20x smaller than raw), or inside the .npz where no encoder is available."""
    path = folder / f"rollout_{record.episode:04d}_{record.task}.npz"
    video = {} if _write_video(path.with_suffix(".mp4"), frames) else {"frames": np.stack(frames)}
    np.savez_compressed(path, actions=actions, states=np.stack(states), failure_mode=record.failure_mode,
                        task=record.task, instruction=record.instruction, **video)
    return str(path)


def load_failed_rollout(path: str | Path) -> dict:
    """A saved failed rollout: frames (T+1, H, W, 3) RGB (lossy when from the .mp4),
    actions (T, 7), states (T+1, state_dim), failure_mode, task, instruction."""
    with np.load(path) as saved:
        rollout = {key: saved[key] if saved[key].ndim else saved[key].item() for key in saved.files}
    if "frames" not in rollout:
        video, frames = cv2.VideoCapture(str(Path(path).with_suffix(".mp4"))), []
        while (frame := video.read()[1]) is not None:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        video.release()
        rollout["frames"] = np.stack(frames)
    return rollout


def _write_failures_table(folder: Path, records: list[RolloutRecord]) -> None:
    columns = ["episode", "task", "instruction", "length", "smoothness", "failure_mode", "saved_to"]
    with open(folder / FAILURES_TABLE, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for record in records:
            if not record.success:
                writer.writerow({name: getattr(record, name) for name in columns})


def run_rollouts(policy: EnvPolicy, env, episodes: int, tasks: Sequence[str] | None = None, seed: int = 0,
                 max_steps: int | None = None, failures_dir: str | Path | None = None,
                 show_progress: bool = True) -> RolloutReport:
    """`episodes` closed-loop episodes: episode k is the env's episode k after reset(seed),
    with task tasks[k % len(tasks)] (default: the env's own task mix) and at most
    `max_steps` steps (default: the env's). Failed rollouts go to `failures_dir` (frames of
    the front camera, or the first, actions, states, failure mode: see _save_failure and
    load_failed_rollout), listed in failures.csv."""
    folder = Path(failures_dir) if failures_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    camera = "front" if "front" in env.camera_names else env.camera_names[0]
    records: list[RolloutRecord] = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("success {task.fields[rate]}"), TimeElapsedColumn()]
    with Progress(*columns, console=progress.console, disable=not show_progress, transient=True) as bar:
        bar_task = bar.add_task("rollouts", total=episodes, rate="-")
        for episode in range(episodes):
            options = {"task": tasks[episode % len(tasks)]} if tasks else {}
            if max_steps is not None:
                options["max_steps"] = max_steps
            observation, info = env.reset(seed=seed if episode == 0 else None, options=options)
            policy.reset()
            instruction = observation["instruction"]
            frames, states, actions = [observation["images"][camera]], [observation["state"]], []
            done = False
            while not done:
                action = np.asarray(policy.act(observation), dtype=np.float64)
                observation, _, terminated, truncated, info = env.step(action)
                actions.append(action)
                if folder is not None:
                    frames.append(observation["images"][camera])
                    states.append(observation["state"])
                done = terminated or truncated
            actions = np.stack(actions)
            failure = None if info["success"] else info.get("failure_mode") or ("timeout" if truncated else "failed")
            record = RolloutRecord(episode, info["task"], instruction, bool(info["success"]), len(actions),
                                   smoothness(actions), failure)
            if folder is not None and not record.success:
                record = dataclasses.replace(record, saved_to=_save_failure(folder, record, frames, actions, states))
            records.append(record)
            bar.update(bar_task, advance=1, rate=f"{np.mean([r.success for r in records]):.0%}")
    if folder is not None:
        _write_failures_table(folder, records)
    return RolloutReport(records)


def main(argv: list[str] | None = None) -> RolloutReport:
    parser = argparse.ArgumentParser(description="Roll out the scripted or a random policy in the tabletop env.")
    parser.add_argument("--policy", choices=["scripted", "random"], default="scripted")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--tasks", default=None,
                        help="comma-separated tasks cycled over episodes (default: the sample's mix)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--front-size", default="480x640", help="front camera render size HxW (the wrist gets half)")
    parser.add_argument("--failures-dir", default=None)
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.front_size.split("x"))
    env = TabletopEnv(cameras={"front": (height, width), "wrist": (height // 2, width // 2)})
    policy = ScriptedPolicy(env) if args.policy == "scripted" else RandomPolicy(args.seed)
    report = run_rollouts(policy, env, args.episodes, args.tasks.split(",") if args.tasks else None, args.seed,
                          args.max_steps, args.failures_dir)
    env.close()
    progress.console.print(report.line())
    return report


if __name__ == "__main__":
    main()
