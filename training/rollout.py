"""Closed-loop rollouts of a policy in an environment (training/sim_env.py): per-episode
records with the metadata the env drew, success rate (with its Wilson interval) / episode
length / smoothness overall, per task and per metadata value, and the failed rollouts
saved for inspection (actions, states, video and a contact sheet, and with `record_failures` a Rerun
recording of the frames beside the policy's actions and entropies).

`python -m training.rollout --policy scripted --episodes 30` runs the built-in tabletop
env and ends with a one-line summary."""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robolake import progress
from robolake import rerun_recording as rec
from robolake.arguments import ArgumentParser, positive_int
from robolake.sample.motion import CONTROL_HZ
from training.metrics import smoothness, wilson_interval
from training.sim_env import EnvPolicy, RandomPolicy, ScriptedPolicy, TabletopEnv

FAILURES_TABLE = "failures.csv"
# Reset info entries that are not metadata the env varied for the episode.
NOT_METADATA = frozenset({"language_instruction", "seed", "index", "success", "failure_mode"})
CONTACT_SHEET_FRAMES = 12
CONTACT_SHEET_COLUMNS = 4
CONTACT_SHEET_GAP = 2  # px between tiles
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")  # the tabletop env's action (sim_env.py)


@dataclasses.dataclass(frozen=True)
class RolloutRecord:
    episode: int
    task: str
    instruction: str
    success: bool
    length: int  # steps taken
    smoothness: float  # sum of squared differences of consecutive actions (lower is smoother)
    failure_mode: str | None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)  # see episode_metadata
    saved_to: str | None = None  # the failed rollout's .npz, when saved
    contact_sheet: str | None = None  # the failed rollout's .png, when saved
    recording: str | None = None  # the failed rollout's Rerun recording (.rrd), when recorded


def episode_metadata(reset_info: dict) -> dict[str, str]:
    """What the env varied for an episode (tabletop: task, object, color, scene, lighting,
    operator, and direction for push): the non-empty string entries of `reset`'s info."""
    return {name: value for name, value in reset_info.items()
            if name not in NOT_METADATA and isinstance(value, str) and value}


def _outcomes(records: Sequence[RolloutRecord]) -> dict:
    """Episodes, successes, success rate with its 95% Wilson interval, failure mode counts."""
    successes = sum(r.success for r in records)
    return {
        "episodes": len(records),
        "successes": successes,
        "success_rate": successes / len(records) if records else 0.0,
        "success_ci": list(wilson_interval(successes, len(records))),
        "failure_modes": dict(Counter(r.failure_mode for r in records if not r.success)),
    }


def _summary(records: Sequence[RolloutRecord]) -> dict:
    return {
        **_outcomes(records),
        "mean_length": float(np.mean([r.length for r in records])) if records else 0.0,
        "mean_smoothness": float(np.mean([r.smoothness for r in records])) if records else 0.0,
    }


@dataclasses.dataclass(frozen=True)
class RolloutReport:
    records: list[RolloutRecord]

    @property
    def success_rate(self) -> float:
        return _outcomes(self.records)["success_rate"]

    def summary(self) -> dict:
        """Overall metrics (_summary), the same "per_task", and "by_field": for every
        metadata field, the outcomes (_outcomes) of the episodes with each value (an
        episode without the field, e.g. a pick's direction, is in none of its groups)."""
        fields = list(dict.fromkeys(name for r in self.records for name in r.metadata))
        by_field = {}
        for name in fields:
            values = sorted({r.metadata[name] for r in self.records if name in r.metadata})
            by_field[name] = {value: _outcomes([r for r in self.records if r.metadata.get(name) == value])
                              for value in values}
        tasks = sorted({r.task for r in self.records})
        return {**_summary(self.records),
                "per_task": {task: _summary([r for r in self.records if r.task == task]) for task in tasks},
                "by_field": by_field}

    def line(self) -> str:
        summary = self.summary()
        low, high = summary["success_ci"]
        per_task = ", ".join(f"{task} {s['success_rate']:.0%}" for task, s in summary["per_task"].items())
        return (f"{summary['episodes']} rollouts: success {summary['success_rate']:.0%} "
                f"(95% CI {100 * low:.0f}-{100 * high:.0f}%) ({per_task}), "
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


def _write_contact_sheet(path: Path, frames: list[np.ndarray]) -> None:
    """Up to CONTACT_SHEET_FRAMES RGB frames evenly spaced over the rollout (the first and
    last included), tiled CONTACT_SHEET_COLUMNS wide, each labelled with its step number."""
    steps = np.unique(np.linspace(0, len(frames) - 1, min(CONTACT_SHEET_FRAMES, len(frames))).round().astype(int))
    height, width = frames[0].shape[:2]
    columns = min(CONTACT_SHEET_COLUMNS, len(steps))
    rows = -(-len(steps) // columns)
    gap = CONTACT_SHEET_GAP
    sheet = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    font_scale = max(0.3, height / 300)
    for tile, step in enumerate(steps):
        top, left = (tile // columns) * (height + gap), (tile % columns) * (width + gap)
        image = np.ascontiguousarray(frames[step])
        (_, text_height), _ = cv2.getTextSize(str(step), cv2.FONT_HERSHEY_SIMPLEX, font_scale, 2)
        origin = (2, 2 + text_height)
        for color, thickness in (((0, 0, 0), 2), ((255, 255, 255), 1)):  # white on a dark outline
            cv2.putText(image, str(step), origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, color, thickness, cv2.LINE_AA)
        sheet[top:top + height, left:left + width] = image
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def _write_recording(path: Path, record: RolloutRecord, camera: str, frames: list[np.ndarray], actions: np.ndarray,
                     states: list, entropies: list[float | None]) -> None:
    """A failed rollout as a Rerun recording under /rollout: the camera's frames (JPEG), the
    executed actions and the state as scalars, the policy's action entropy where it reports
    one, the instruction and the outcome; frame and state k at step k, action k at step k."""
    root = rec.entity("rollout")
    seconds = np.arange(len(frames)) / CONTROL_HZ
    frame_index = rec.timelines(np.arange(len(frames)), seconds)
    action_index = rec.timelines(np.arange(len(actions)), seconds[:len(actions)])
    with rec.recording(str(path), f"{path.stem}: {record.instruction}") as stream:
        rec.send_frames(stream, f"{root}/cameras/{camera}",
                        [cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes() for frame in frames],
                        frame_index)
        rec.send_series(stream, f"{root}/action", ACTION_NAMES[:actions.shape[1]], actions, action_index)
        rec.send_series(stream, f"{root}/state", [str(i) for i in range(len(states[0]))], np.stack(states),
                        frame_index)
        if entropies and all(entropy is not None for entropy in entropies):
            rec.send_series(stream, root, ["entropy"], np.asarray(entropies, np.float64), action_index)
        rec.log_document(stream, f"{root}/instruction", record.instruction)
        rec.log_document(stream, f"{root}/outcome", rec.markdown_table(
            [("task", record.task), ("failure mode", record.failure_mode), ("steps", record.length),
             *record.metadata.items()]))


def _save_failure(folder: Path, record: RolloutRecord, camera: str, frames: list, actions: np.ndarray,
                  states: list, entropies: list[float | None] | None) -> RolloutRecord:
    """<name>.npz (actions, states, failure mode, task, instruction), the frames as
    <name>.mp4 (~20x smaller than raw, or inside the .npz where no encoder is available),
    and their contact sheet <name>.png; with `entropies` (recording) also <name>.rrd
    (_write_recording); the record with the paths."""
    path = folder / f"rollout_{record.episode:04d}_{record.task}.npz"
    video = {} if _write_video(path.with_suffix(".mp4"), frames) else {"frames": np.stack(frames)}
    np.savez_compressed(path, actions=actions, states=np.stack(states), failure_mode=record.failure_mode,
                        task=record.task, instruction=record.instruction, **video)
    _write_contact_sheet(path.with_suffix(".png"), frames)
    recording = None
    if entropies is not None:
        recording = str(path.with_suffix(".rrd"))
        _write_recording(Path(recording), record, camera, frames, actions, states, entropies)
    return dataclasses.replace(record, saved_to=str(path), contact_sheet=str(path.with_suffix(".png")),
                               recording=recording)


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
    columns = ["episode", "task", "instruction", "length", "smoothness", "failure_mode", "saved_to", "contact_sheet",
               "recording"]
    with open(folder / FAILURES_TABLE, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for record in records:
            if not record.success:
                writer.writerow({name: getattr(record, name) for name in columns})


def run_rollouts(policy: EnvPolicy, env, episodes: int, tasks: Sequence[str] | None = None, seed: int = 0,
                 max_steps: int | None = None, failures_dir: str | Path | None = None,
                 show_progress: bool = True, options: dict | None = None,
                 record_failures: bool = False) -> RolloutReport:
    """`episodes` closed-loop episodes: episode k is the env's episode k after reset(seed),
    with task tasks[k % len(tasks)] (default: the env's own task mix), at most `max_steps`
    steps (default: the env's) and any further reset `options` (e.g. the tabletop's
    swap_instruction). Failed rollouts go to `failures_dir` (frames of
    the front camera, or the first, actions, states, failure mode and a contact sheet: see
    _save_failure and load_failed_rollout), listed in failures.csv; with `record_failures`, each also
    as a Rerun recording with the policy's action entropies (a policy that reports them has a
    `last_entropy` attribute, e.g. sim_env.RuntimePolicyAdapter).

    The seed fixes the episodes (for the tabletop env: metadata, layouts, render noise),
    so policies run with the same seed, tasks and max_steps face the same scenes; a
    stochastic policy seeds itself (e.g. RandomPolicy(seed))."""
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
            reset_options = {**(options or {}), **({"task": tasks[episode % len(tasks)]} if tasks else {})}
            if max_steps is not None:
                reset_options["max_steps"] = max_steps
            observation, info = env.reset(seed=seed if episode == 0 else None, options=reset_options)
            metadata = episode_metadata(info)
            policy.reset()
            instruction = observation["instruction"]
            frames, states, actions, entropies = [observation["images"][camera]], [observation["state"]], [], []
            done = False
            while not done:
                action = np.asarray(policy.act(observation), dtype=np.float64)
                observation, _, terminated, truncated, info = env.step(action)
                actions.append(action)
                entropies.append(getattr(policy, "last_entropy", None))
                if folder is not None:
                    frames.append(observation["images"][camera])
                    states.append(observation["state"])
                done = terminated or truncated
            actions = np.stack(actions)
            failure = None if info["success"] else info.get("failure_mode") or ("timeout" if truncated else "failed")
            record = RolloutRecord(episode, info["task"], instruction, bool(info["success"]), len(actions),
                                   smoothness(actions), failure, metadata)
            if folder is not None and not record.success:
                record = _save_failure(folder, record, camera, frames, actions, states,
                                       entropies if record_failures else None)
            records.append(record)
            bar.update(bar_task, advance=1, rate=f"{np.mean([r.success for r in records]):.0%}")
    if folder is not None:
        _write_failures_table(folder, records)
    return RolloutReport(records)


def main(argv: list[str] | None = None) -> RolloutReport:
    parser = ArgumentParser(description="Roll out the scripted or a random policy in the tabletop env.")
    parser.add_argument("--policy", choices=["scripted", "random"], default="scripted")
    parser.add_argument("--episodes", type=positive_int, default=30)
    parser.add_argument("--tasks", default=None,
                        help="comma-separated tasks cycled over episodes (default: the sample's mix)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=positive_int, default=None)
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
