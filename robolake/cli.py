"""The `robolake` command. User errors end in one message and exit code 2."""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import time

from robolake.errors import RobolakeError

COMMANDS = {
    "sample": "write the built-in sample dataset: HDF5 files and ROS 2 mcap bags, with seeded faults",
    "convert": "convert raw demonstrations into a versioned RLDS dataset (Beam flags pass through)",
    "lineage": "print the chain from a checkpoint or dataset version back to each raw file's sha256",
    "validate": "run the quality gate (Great Expectations) on a dataset version; exit 1 on an error",
    "report": "write a dataset version's coverage report (DuckDB): HTML, coverage.json, Parquet tables",
    "query": "run DuckDB SQL over the lake's views (episodes, steps, episode_stats, filtered, quarantine, ...)",
    "stats": "statistics of any selection of a version's episodes (--where SQL), merged from stored rows",
    "train": "fine-tune a VLA policy (LoRA or full) on a gold dataset version; torchrun runs it as DDP",
    "evaluate": "measure a checkpoint on a dataset's test split (physical-unit errors, per task) and in closed loop",
    "export": "export a checkpoint's merged policy to TorchScript (optionally int8), checked against PyTorch",
    "lerobot": "export a gold dataset version as a LeRobotDataset (v3.0: Parquet frames, MP4 videos, meta/)",
    "mix": "build a versioned mixture of gold versions: sampling weights, aligned actions, merged statistics",
    "edit": "derive a new version from a gold version: drop episodes by query, retask, rename, resplit",
    "gc": "remove replaced and abandoned builds that no checkpoint or version names; says what it keeps and why",
}


def _sample(argv: list[str]) -> None:
    from rich.progress import Progress

    from robolake.progress import console
    from robolake.sample import write_sample

    parser = argparse.ArgumentParser(prog="robolake sample", description=COMMANDS["sample"])
    parser.add_argument("out_dir")
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bag-fraction", type=float, default=0.5, help="share of episodes written as mcap bags")
    parser.add_argument("--steps", type=int, help="exact steps per episode (default: 30 to 60, by task)")
    parser.add_argument("--no-faults", dest="faults", action="store_false", help="leave out the seeded faults")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering episodes")
    args = parser.parse_args(argv)
    if args.episodes < 1 or not 0 <= args.bag_fraction <= 1 or args.workers < 1:
        raise RobolakeError("--episodes and --workers must be >= 1 and --bag-fraction within [0, 1]")
    started = time.time()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"sample {args.out_dir}", total=args.episodes)
        manifest = write_sample(
            args.out_dir, episodes=args.episodes, seed=args.seed, bag_fraction=args.bag_fraction, steps=args.steps,
            faults=args.faults, workers=args.workers, progress=lambda done, total: bar.update(task, completed=done),
        )
    containers = [e["container"] for e in manifest["episodes"]]
    faults = ", ".join(f"{f['kind']} in {f['episode_id']}" for f in manifest["faults"]) or "none"
    print(
        f"wrote {len(containers)} episodes ({containers.count('hdf5')} HDF5, {containers.count('mcap')} mcap) "
        f"to {args.out_dir} in {time.time() - started:.1f} s; seeded faults: {faults}"
    )


def _convert(argv: list[str]) -> None:
    from pipelines.build import run

    run(argv)


def _lineage(argv: list[str]) -> int:
    from robolake.lineage import run

    return run(argv)


def _validate(argv: list[str]) -> int:
    from validation.gate import run

    return run(argv)


def _report(argv: list[str]) -> int:
    from validation.coverage import run

    return run(argv)


def _query(argv: list[str]) -> int:
    from validation.query import run

    return run(argv)


def _stats(argv: list[str]) -> int:
    from validation.selection_stats import run

    return run(argv)


def _train(argv: list[str]) -> int:
    from training.train import run

    return run(argv)


def _evaluate(argv: list[str]) -> int:
    from training.evaluate import run

    return run(argv)


def _export(argv: list[str]) -> int:
    from training.export import run

    return run(argv)


def _lerobot(argv: list[str]) -> int:
    from pipelines.lerobot_export import run

    return run(argv)


def _gc(argv: list[str]) -> int:
    from robolake.gc import run

    return run(argv)


def _mix(argv: list[str]) -> None:
    from pipelines.derive import run_mix

    run_mix(argv)


def _edit(argv: list[str]) -> None:
    from pipelines.derive import run_edit

    run_edit(argv)


HANDLERS = {
    "sample": _sample, "convert": _convert, "lineage": _lineage, "validate": _validate, "report": _report,
    "query": _query, "stats": _stats, "train": _train, "evaluate": _evaluate, "export": _export, "lerobot": _lerobot,
    "mix": _mix, "edit": _edit, "gc": _gc,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"did you mean {close[0]}?" if close else "robolake --help lists the commands"
        print(f"robolake: error: unknown command {argv[0]!r} ({hint})", file=sys.stderr)
        return 2
    if not argv or argv[0] not in COMMANDS:
        listing = "\n".join(f"  {name:<10} {text}" for name, text in COMMANDS.items())
        print(f"usage: robolake <command> [options]\n\ncommands:\n{listing}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Beam logs this on import when the optional GCP client is absent; it concerns only gs:// lakes
    logging.getLogger().addFilter(lambda record: "apitools not found" not in record.getMessage())
    try:
        return HANDLERS[argv[0]](argv[1:]) or 0
    except RobolakeError as exc:
        print(f"robolake {argv[0]}: error: {exc}", file=sys.stderr)
        return 2


def run_and_exit() -> None:
    """The console script: run the command, flush, and end without interpreter teardown.

    Beam's local runner leaves gRPC event-engine threads running, and TensorFlow and gloo
    keep native thread pools; their static destructors can race those threads at exit and
    abort a run that has finished ("terminate called without an active exception", exit
    134, seen in CI). Every command closes what it writes before it returns, so nothing
    is lost by skipping the teardown. An unexpected exception still ends normally, with
    its traceback."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run_and_exit()
