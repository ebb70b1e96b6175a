"""Benchmark `robolake view`: the time to write one 100-step, two-camera episode into a Rerun recording.

The parent writes one sample episode of --steps 10 Hz ticks in robomimic HDF5
(robolake.sample.write_robomimic_dataset, the sample's cameras: front 480x640, wrist
240x320) and converts it with the demo's spec (datasets/sample_tabletop.yaml: both
cameras stored 256x256 JPEG quality 95; the outlier filters off, so gold keeps every
step). A child process (benchmarks/harness.py) then reads the episode from the lake once,
untimed (exports/rerun_view.py: the choice in DuckDB, the silver facts, the gold episode
through TFDS), and times `write_episode` into a fresh .rrd file --repeats times, each a
whole recording opened, written and closed (robolake/rerun_recording.recording): frames
logged as their JPEG bytes, 7 action and 7 normalized action series, 9 state series, the
documents and the quality annotations. It prints the first and the best write, the
file's size and the child's peak RSS; the parent also times the whole `robolake view`
command (Python start, TensorFlow import, lake reads and the write). Target: the best
write under 0.5 s ("well under a second", issue 34).

    python benchmarks/view.py               # 100 steps, 5 writes; about a minute on 2 cores
    python benchmarks/view.py --steps 300
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import yaml

from harness import (MB, Target, add_run_arguments, benchmark_parser, child_command, parent_run, print_result,
                     print_targets, run_command, run_measured, targets_met)

REPO = Path(__file__).resolve().parents[1]
NAME = "view_bench"
CAMERAS = {"front": (480, 640), "wrist": (240, 320)}  # the sample's camera frames (height, width)
WRITE_GOAL_S = 0.5


def parse_args():
    parser = benchmark_parser(__doc__)
    parser.add_argument("--steps", type=int, default=100, help="ticks of the episode (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed writes (default 5)")
    add_run_arguments(parser, ("write",), "the raw episode, the lake and the recordings")
    return parser.parse_args()


def write_lake(workdir: str, steps: int) -> str:
    """One sample episode of `steps` ticks, converted with the demo spec; the lake's path."""
    from robolake.sample import write_robomimic_dataset

    raw, lake = os.path.join(workdir, "raw"), os.path.join(workdir, "lake")
    write_robomimic_dataset(raw, episodes=1, steps=steps, seed=0, per_file=1, cameras=CAMERAS)
    spec = yaml.safe_load((REPO / "datasets" / "sample_tabletop.yaml").read_text())
    spec.update(name=NAME, source={**spec["source"], "paths": [os.path.join(raw, "*.hdf5")]},
                filters={"zscore": None, "jump": None})
    spec_path = os.path.join(workdir, "spec.yaml")
    Path(spec_path).write_text(yaml.safe_dump(spec))
    run_command([sys.executable, "-m", "cli.main", "convert", spec_path, "--lake", lake], {})
    return lake


def child_write(workdir: str, repeats: int) -> None:
    """Read the episode once, then time --repeats whole recordings of it."""
    from exports import rerun_view
    from robolake import rerun_recording
    from robolake.lake import Lake
    from robolake.lake_views import connect_version

    lake = Lake(os.path.join(workdir, "lake"))
    target = lake.resolve(NAME)
    con = connect_version(lake, target)
    ids = rerun_view.choose_episodes(con, target, [], None, 1)
    silver = rerun_view.SilverFacts(con, ids)
    con.close()
    [episode] = rerun_view.gold_episodes(target, {silver.episodes[ids[0]]["split"]: ids})
    names, state = list(target.spec.action.names), rerun_view.state_names(target.manifest)
    seconds = []
    for k in range(repeats):
        path = os.path.join(workdir, f"write_{k}.rrd")
        started = time.perf_counter()
        with rerun_recording.recording(path, f"bench {k}") as stream:
            annotations = rerun_view.write_episode(stream, episode, silver, target, names, state)
        seconds.append(time.perf_counter() - started)
    print_result({"steps": len(episode["action"]), "cameras": len(episode["images"]), "annotations": annotations,
                  "first_s": seconds[0], "best_s": min(seconds), "bytes": os.path.getsize(path),
                  "frame_bytes": sum(len(f) for frames in episode["images"].values() for f in frames)})


def main() -> None:
    args = parse_args()
    if args.child == "write":
        child_write(args.workdir, args.repeats)
        return
    with parent_run(f"robolake view: one {args.steps}-step, two-camera episode into a Rerun recording", "view_bench",
                    args.keep, args.workdir) as run:
        lake = write_lake(run.workdir, args.steps)
        result, rss = run_measured(child_command(__file__, "write", "--workdir", run.workdir, "--repeats",
                                                 str(args.repeats)), os.path.join(run.workdir, "write.log"), "write")
        out = os.path.join(run.workdir, "command.rrd")
        started = time.perf_counter()
        run_command([sys.executable, "-m", "cli.main", "view", NAME, "--limit", "1", "--lake", lake, "-o", out], {})
        command_s = time.perf_counter() - started
        print(f"\n{result['steps']} steps, {result['cameras']} cameras ({result['frame_bytes'] / MB:.2f} MB of JPEG), "
              f"{result['annotations']} annotations: write first {result['first_s']:.3f} s, best "
              f"{result['best_s']:.3f} s of {args.repeats}; recording {result['bytes'] / MB:.2f} MB; child peak RSS "
              f"{rss / MB:.0f} MB; the whole `robolake view` command {command_s:.1f} s")
        targets = [Target("write of the episode", f"{result['best_s']:.3f} s", f"< {WRITE_GOAL_S} s",
                          result["best_s"] < WRITE_GOAL_S, "write")]
        print_targets(targets)
        print(f"\n{targets_met(targets)}; {run.seconds:.0f} s in all")


if __name__ == "__main__":
    main()
