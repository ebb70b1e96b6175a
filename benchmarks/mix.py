"""Benchmark `robolake mix` and `robolake edit` against converting the same data from raw.

Writes two sets of N synthetic HDF5 episodes (robolake.sample.write_sample, robomimic
sessions, no seeded faults, --steps 10 Hz ticks each, 480x640 front and wrist cameras,
two seeds) and measures, each in a fresh child process in one shared lake:

1. `convert` of each set with datasets/sample_tabletop.yaml (256x256 JPEG q95,
   statistics, outlier filters): members `alpha` and `beta`;
2. `mix` of both at weights 1 and 0.5 with the members' cameras (the frames keep their
   JPEG bytes: decoded once for the pixel statistics, never encoded again);
3. the same mixture at 128x128 (every frame decoded, resized and encoded again);
4. `edit drop` of about a tenth of alpha's episodes (a one-member derived version).

It prints steps/s written and peak RSS of each, and the targets (printed only; exit 0):
a mixture or an edit costs no more per step than converting from raw, so that
re-deriving versions is cheap: mix rate / convert rate >= 1 for the kept-bytes mixture.
Rates use the child's own clock around the build call only. Compare ratios, not
absolutes: one run of each configuration on a shared machine.

    python benchmarks/mix.py                    # 2 x 20 episodes x 50 steps, ~2 min on 2 cores
    python benchmarks/mix.py --episodes 4 --steps 20   # quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads; the children inherit it

import psutil  # noqa: E402

from harness import (  # noqa: E402
    MB, Target, Throughput, add_run_arguments, benchmark_parser, child_command, parent_run, print_result,
    print_targets, run_measured, targets_met,
)

REPO = Path(__file__).resolve().parents[1]
CAMERAS = {"front": (480, 640), "wrist": (480, 640)}
MEMBERS = {"alpha": 0, "beta": 1}  # name: generator seed
CONFIGS = {
    "convert_alpha": "convert alpha (HDF5 -> RLDS)",
    "convert_beta": "convert beta (HDF5 -> RLDS)",
    "mix_kept": "mix alpha 1 + beta 0.5, frames kept",
    "mix_resized": "mix alpha 1 + beta 0.5, 128x128",
    "edit_drop": "edit drop ~10% of alpha",
}


# --- What the children measure ------------------------------------------------------------


def child_build(config: str, input_dir: str, lake_dir: str) -> dict:
    from pipelines.build import convert
    from pipelines.derive import complete, edit_spec
    from robolake.lake import Lake
    from robolake.spec import load_spec, parse_spec

    lake = Lake(lake_dir)
    if config.startswith("convert_"):
        name = config.removeprefix("convert_")
        pattern = os.path.join(input_dir, name, "hdf5", "*.hdf5")
        spec = load_spec(str(REPO / "datasets" / "sample_tabletop.yaml"), [f"name={name}", f"source.paths=['{pattern}']"])
    elif config.startswith("mix_"):
        members = [{"dataset": "alpha", "weight": 1.0}, {"dataset": "beta", "weight": 0.5}]
        data = {"name": config, "version": "1.0.0", "source": {"members": members}}
        if config == "mix_resized":
            data["cameras"] = [{"name": "front", "size": [128, 128]}, {"name": "wrist", "size": [128, 128]}]
        spec = parse_spec(complete(data, lake))
    else:
        data = edit_spec(lake.resolve("alpha"), {"where": "NOT (hash(episode_id) % 10 = 0)"}, "alpha", "1.1.0", None)
        data["source"]["lake"] = lake_dir
        spec = parse_spec(data)
    started = time.perf_counter()
    counts = convert(spec, lake, []).manifest["counts"]
    return {"episodes": counts["episodes_written"], "steps": counts["steps_written"],
            "bytes": counts["bytes_written"], "seconds": time.perf_counter() - started}


# --- The parent ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement(Throughput):
    key: str
    episodes: int
    peak_rss: int


def measure(key: str, input_dir: str, lake_dir: str, workdir: str) -> Measurement:
    command = child_command(__file__, key, "--input", input_dir, "--out", lake_dir)
    result, peak = run_measured(command, os.path.join(workdir, f"{key}.log"), CONFIGS[key])
    peak = max(peak, result.pop("max_rss"))
    return Measurement(key=key, peak_rss=peak, **result)


def generate(input_dir: str, episodes: int, steps: int) -> None:
    from robolake.sample import write_sample

    for name, seed in MEMBERS.items():
        started = time.perf_counter()
        print(f"generating {name}: {episodes} HDF5 episodes x {steps} steps ...", flush=True)
        write_sample(os.path.join(input_dir, name), episodes=episodes, seed=seed, bag_fraction=0.0, steps=steps,
                     faults=False, workers=psutil.cpu_count() or 1, cameras=CAMERAS)
        print(f"  {time.perf_counter() - started:.1f} s", flush=True)


def evaluate(results: dict[str, Measurement]) -> list[Target]:
    convert_rate = (results["convert_alpha"].steps + results["convert_beta"].steps) / (
        results["convert_alpha"].seconds + results["convert_beta"].seconds)
    targets = []
    for key in ("mix_kept", "mix_resized", "edit_drop"):
        ratio = results[key].steps_per_s / convert_rate
        targets.append(Target(f"{CONFIGS[key]} / convert rate", f"{results[key].steps_per_s:.0f} / "
                              f"{convert_rate:.0f} steps/s = {ratio:.2f}x", ">= 1.0x", ratio >= 1.0,
                              f"{key} {ratio:.2f}x"))
    return targets


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--episodes", type=int, default=20, help="episodes per member (default: 20)")
    parser.add_argument("--steps", type=int, default=50, help="10 Hz ticks per episode (default: 50)")
    add_run_arguments(parser, sorted(CONFIGS), "inputs, lake, child logs")
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 10 or args.episodes < 2:
        parser.error("--steps must be at least 10 (the spec's min_steps) and --episodes at least 2")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child:
        print_result(child_build(args.child, args.input, args.out))
        return
    heading = (f"robolake mix and edit vs convert: 2 members x {args.episodes} episodes x {args.steps} steps, "
               f"480x640 cameras -> 256x256 JPEG q95")
    with parent_run(heading, "robolake-mix-bench-", args.keep, args.workdir) as run:
        input_dir, lake_dir = os.path.join(run.workdir, "raw"), tempfile.mkdtemp(prefix="lake-", dir=run.workdir)
        generate(input_dir, args.episodes, args.steps)
        results = {}
        for i, key in enumerate(CONFIGS, 1):
            print(f"[{i}/{len(CONFIGS)}] {CONFIGS[key]} ...", flush=True)
            m = results[key] = measure(key, input_dir, lake_dir, run.workdir)
            print(f"      {m.episodes} episodes, {m.steps} steps in {m.seconds:.1f} s: {m.steps_per_s:.0f} steps/s, "
                  f"peak RSS {m.peak_rss / MB:.0f} MB", flush=True)
        print(f"\n{'configuration':<40} {'episodes':>8} {'steps':>6} {'seconds':>8} {'steps/s':>8} {'MB/s':>6} "
              f"{'peak RSS':>9}")
        for m in results.values():
            print(f"{CONFIGS[m.key]:<40} {m.episodes:>8} {m.steps:>6} {m.seconds:>8.1f} {m.steps_per_s:>8.0f} "
                  f"{m.mb_per_s:>6.1f} {m.peak_rss / MB:>6.0f} MB")
        targets = evaluate(results)
        print_targets(targets)
    print(f"\nsummary: {targets_met(targets)}; {run.seconds:.0f} s in all")


if __name__ == "__main__":
    main(sys.argv[1:])
