"""The `robolake` command. User errors end in one message and exit code 2."""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
from typing import NamedTuple

from robolake.errors import RobolakeError


class Command(NamedTuple):
    """A command's function, by module and name (imported when the command runs), and its --help line."""

    module: str
    function: str
    help: str


# In data-flow order. Each function takes the command's arguments and returns its exit
# code; anything else it returns (a build's outcome, None) means success.
COMMANDS = {
    "sample": Command(
        "robolake.sample.cli", "run",
        "write the built-in sample dataset: HDF5 files and ROS 2 mcap bags, with seeded faults"),
    "convert": Command(
        "pipelines.build", "run",
        "convert raw demonstrations into a versioned RLDS dataset (Beam flags pass through)"),
    "mix": Command(
        "pipelines.derive", "run_mix",
        "build a versioned mixture of gold versions: sampling weights, aligned actions, merged statistics"),
    "edit": Command(
        "pipelines.derive", "run_edit",
        "derive a new version from a gold version: drop episodes by query, retask, rename, resplit"),
    "validate": Command(
        "validation.gate", "run",
        "run the quality gate (Great Expectations) on a dataset version; exit 1 on an error"),
    "report": Command(
        "validation.coverage", "run",
        "write a dataset version's coverage report (DuckDB): HTML, coverage.json, Parquet tables"),
    "query": Command(
        "validation.query", "run",
        "run DuckDB SQL over the lake's views (episodes, steps, episode_stats, filtered, quarantine, ...)"),
    "stats": Command(
        "validation.selection_stats", "run",
        "statistics of any selection of a version's episodes (--where SQL), merged from stored rows"),
    "lerobot": Command(
        "exports.lerobot", "run",
        "export a gold dataset version as a LeRobotDataset (v3.0: Parquet frames, MP4 videos, meta/)"),
    "train": Command(
        "training.train", "run",
        "fine-tune a VLA policy (LoRA or full) on a gold dataset version; torchrun runs it as DDP"),
    "evaluate": Command(
        "training.evaluate", "run",
        "measure a checkpoint on a dataset's test split (physical-unit errors, per task) and in closed loop"),
    "export": Command(
        "training.export", "run",
        "export a checkpoint's merged policy to TorchScript (optionally int8), checked against PyTorch"),
    "lineage": Command(
        "robolake.lineage", "run",
        "print the chain from a checkpoint or dataset version back to each raw file's sha256"),
    "gc": Command(
        "robolake.gc", "run",
        "remove replaced and abandoned builds that no checkpoint or version names; says what it keeps and why"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"did you mean {close[0]}?" if close else "robolake --help lists the commands"
        print(f"robolake: error: unknown command {argv[0]!r} ({hint})", file=sys.stderr)
        return 2
    if not argv or argv[0] not in COMMANDS:
        listing = "\n".join(f"  {name:<10} {command.help}" for name, command in COMMANDS.items())
        print(f"usage: robolake <command> [options]\n\ncommands:\n{listing}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Beam logs this on import when the optional GCP client is absent; it concerns only gs:// lakes
    logging.getLogger().addFilter(lambda record: "apitools not found" not in record.getMessage())
    command = COMMANDS[argv[0]]
    try:
        result = getattr(importlib.import_module(command.module), command.function)(argv[1:])
    except RobolakeError as exc:
        print(f"robolake {argv[0]}: error: {exc}", file=sys.stderr)
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
