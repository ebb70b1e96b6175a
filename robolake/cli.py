"""The `robolake` command. User errors end in one message and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys

from robolake.errors import RobolakeError

COMMANDS = {
    "convert": "convert raw demonstrations into a versioned RLDS dataset (Beam flags pass through)",
    "synth": "write synthetic HDF5 demonstrations (robomimic layout) for demos and benchmarks",
}


def _synth(argv: list[str]) -> None:
    from robolake.synthetic import write_robomimic_dataset

    parser = argparse.ArgumentParser(prog="robolake synth", description=COMMANDS["synth"])
    parser.add_argument("out_dir")
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--per-file", type=int, default=4, help="episodes per HDF5 file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_robomimic_dataset(args.out_dir, args.episodes, args.steps, args.seed, args.per_file)
    print(f"wrote {args.episodes} episodes of {args.steps} steps in {len(paths)} files to {args.out_dir}")


def _convert(argv: list[str]) -> None:
    from pipelines.build import run

    run(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        listing = "\n".join(f"  {name:<10} {text}" for name, text in COMMANDS.items())
        print(f"usage: robolake <command> [options]\n\ncommands:\n{listing}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        {"convert": _convert, "synth": _synth}[argv[0]](argv[1:])
    except RobolakeError as exc:
        print(f"robolake {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
