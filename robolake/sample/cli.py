"""`robolake sample OUT_DIR`: write the built-in sample dataset with a progress bar."""

from __future__ import annotations

import collections
import time

from rich.progress import Progress

from robolake.arguments import ArgumentParser, positive_int
from robolake.errors import RobolakeError
from robolake.progress import console
from robolake.sample.faults import DEFAULT_SHARES
from robolake.sample.generate import write_sample


def _share(text: str) -> tuple[str, float]:
    """KIND=SHARE of --fault-share (the kind and the share's range are checked by write_sample)."""
    kind, _, share = text.partition("=")
    try:
        return kind.strip(), float(share)
    except ValueError:
        raise RobolakeError(f"--fault-share takes KIND=SHARE, e.g. idle=0.1; got {text!r}") from None


def run(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog="robolake sample",
        description="write the built-in sample dataset: HDF5 files and ROS 2 mcap bags, with seeded faults",
    )
    parser.add_argument("out_dir")
    parser.add_argument("--episodes", type=positive_int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bag-fraction", type=float, default=0.5, help="share of episodes written as mcap bags")
    parser.add_argument("--steps", type=positive_int, help="exact steps per episode (default: 30 to 60, by task)")
    parser.add_argument("--no-faults", dest="faults", action="store_false", help="leave out the seeded faults")
    parser.add_argument(
        "--fault-share", action="append", default=[], metavar="KIND=SHARE",
        help=f"share of the episodes with behaviour fault KIND (repeatable; kinds left out keep their default): "
             f"{', '.join(f'{k}={v:g}' for k, v in DEFAULT_SHARES.items())}; timestamp_jitter and dropped_steps "
             f"are shares of the bags. 0 leaves a kind out")
    parser.add_argument("--workers", type=positive_int, default=1, help="processes rendering episodes")
    args = parser.parse_args(argv)
    if args.episodes < 1 or not 0 <= args.bag_fraction <= 1 or args.workers < 1:
        raise RobolakeError("--episodes and --workers must be >= 1 and --bag-fraction within [0, 1]")
    shares = {**DEFAULT_SHARES, **dict(_share(text) for text in args.fault_share)}
    started = time.time()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"sample {args.out_dir}", total=args.episodes)
        manifest = write_sample(
            args.out_dir, episodes=args.episodes, seed=args.seed, bag_fraction=args.bag_fraction, steps=args.steps,
            faults=args.faults, fault_shares=shares, workers=args.workers,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    containers = [e["container"] for e in manifest["episodes"]]
    kinds = collections.Counter(f["kind"] for f in manifest["faults"])
    faults = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) or "none"
    print(
        f"wrote {len(containers)} episodes ({containers.count('hdf5')} HDF5, {containers.count('mcap')} mcap) "
        f"to {args.out_dir} in {time.time() - started:.1f} s; seeded faults (sample_manifest.json lists them): {faults}"
    )
