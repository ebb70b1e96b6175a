"""`robolake sample OUT_DIR`: write the built-in sample dataset with a progress bar."""

from __future__ import annotations

import time

from rich.progress import Progress

from robolake.arguments import ArgumentParser, positive_int
from robolake.errors import RobolakeError
from robolake.progress import console
from robolake.sample.generate import write_sample


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
    parser.add_argument("--workers", type=positive_int, default=1, help="processes rendering episodes")
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
