"""The `robolake` command. User errors, and the machine's (no permission, a full disk), end in one
message and exit code 2."""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
from typing import NamedTuple

from robolake.errors import RobolakeError, machine_error


class Command(NamedTuple):
    """A command's group in --help, its function by module and name (imported when the
    command runs), and its --help line."""

    group: str
    module: str
    function: str
    help: str


BUILD, CHECK, EXPORT, TRAIN, OVERVIEW = (
    "build data", "check data", "export data", "train and evaluate", "overview and housekeeping")

# In data-flow order, grouped as --help lists them. Each function takes the command's
# arguments and returns its exit code; anything else it returns (a build's outcome, None)
# means success.
COMMANDS = {
    "sample": Command(
        BUILD, "robolake.sample.cli", "run",
        "write the built-in sample dataset: HDF5 files and ROS 2 mcap bags, with seeded faults"),
    "convert": Command(
        BUILD, "pipelines.build", "run",
        "convert raw demonstrations into a versioned RLDS dataset (Beam flags pass through)"),
    "mix": Command(
        BUILD, "pipelines.derive", "run_mix",
        "mix gold versions into a version: sampling weights, aligned actions, merged statistics"),
    "edit": Command(
        BUILD, "pipelines.derive", "run_edit",
        "derive a version from a gold version: drop by query, retask, rename, resplit, trim idle"),
    "validate": Command(
        CHECK, "validation.gate", "run",
        "run the quality gate (Great Expectations) on a dataset version; exit 1 on an error"),
    "report": Command(
        CHECK, "validation.coverage", "run",
        "write a dataset version's coverage report (DuckDB): HTML, coverage.json, Parquet tables"),
    "query": Command(
        CHECK, "validation.query", "run",
        "run DuckDB SQL over the lake's views (episodes, steps, episode_stats, quarantine, ...)"),
    "stats": Command(
        CHECK, "validation.selection_stats", "run",
        "statistics of a selection of episodes (--where SQL), merged from stored rows"),
    "lerobot": Command(
        EXPORT, "exports.lerobot", "run",
        "export a version as a LeRobotDataset (v3.0: Parquet frames, MP4 videos, meta/)"),
    "view": Command(
        EXPORT, "exports.rerun_view", "run",
        "chosen episodes as a Rerun recording (.rrd): frames, actions, state, quality findings"),
    "train": Command(
        TRAIN, "training.train", "run",
        "fine-tune a VLA policy (LoRA or full) on a dataset version; torchrun runs it as DDP"),
    "evaluate": Command(
        TRAIN, "training.evaluate", "run",
        "score a checkpoint on a test split (physical-unit errors, per task) and in closed loop"),
    "export": Command(
        TRAIN, "training.export", "run",
        "a checkpoint's merged policy as TorchScript (optionally int8), checked against PyTorch"),
    "summary": Command(
        OVERVIEW, "cli.summary", "run",
        "a lake on one screen: each version's episodes, gate and coverage; each run's results"),
    "lineage": Command(
        OVERVIEW, "robolake.lineage", "run",
        "the chain from a checkpoint, run or dataset version back to each raw file's sha256"),
    "gc": Command(
        OVERVIEW, "robolake.gc", "run",
        "remove builds that no checkpoint or version names; says what it keeps and why"),
}


def usage() -> str:
    """The command list of `robolake --help`, by group."""
    lines = ["usage: robolake <command> [options]"]
    for group in dict.fromkeys(command.group for command in COMMANDS.values()):
        lines += ["", f"{group}:"] + [f"  {name:<10} {command.help}" for name, command in COMMANDS.items()
                                      if command.group == group]
    return "\n".join(lines + ["", "robolake <command> --help: the command's options; docs/<command>.md: its page"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"did you mean {close[0]}?" if close else "robolake --help lists the commands"
        print(f"robolake: error: unknown command {argv[0]!r} ({hint})", file=sys.stderr)
        return 2
    command = COMMANDS[argv[0]]
    try:
        result = getattr(importlib.import_module(command.module), command.function)(argv[1:])
    except RobolakeError as exc:
        print(f"robolake {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # no permission, a read-only or full disk: the machine's, not a bug
        if (line := machine_error(exc)) is None:
            raise
        print(f"robolake {argv[0]}: error: {line}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


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
