"""Benchmark robolake's streaming statistics and outlier-action filtering on synthetic steps.

Synthetic robot steps are generated on the fly, one episode at a time and never the
whole dataset at once: each episode (--episode-steps, default 100) has 7-d actions
(six arm dimensions: sinusoidal motion of random amplitude, frequency and phase plus
Gaussian noise; a gripper that switches from -1 to +1 once) and a 9-d state (eef
position, quaternion, two finger positions, following the actions). A fraction of the
episodes (--spike-rate) gets one injected single-step spike of 1.5 to 2.5 in one arm
dimension, the outlier the filter's `jump` rule is for. Episode i depends only on
(--seed, i), so any pass can regenerate any episode.

It prints figures from one run of each configuration:

1. `stats` at --small-steps and --steps: the pipeline's two passes in one process.
   Raw pass: DatasetStats.add_episode over every episode. Filter pass: the episodes
   regenerated, robust_stats(raw) -> filter_episode per episode (the default filter
   rules of a spec) -> a final DatasetStats over the kept steps. Steps/s of each pass
   and overall, where the time goes (generation, raw statistics, filter, final
   statistics), and how many injected spikes the filter dropped;
2. `beam` at --small-steps and, when 10x the small run's time projects under
   --beam-large-limit seconds (or never with --skip-beam-large), at --steps: the raw
   pass as a Beam pipeline on the FnApiRunner: beam.Create over episode *indices*, a
   Map that generates each episode from its index, beam.CombineGlobally(DatasetStatsFn);
   its result is compared with the `stats` raw pass of the same steps. Create keeps its
   elements and the FnApiRunner materializes them at Create's reshuffle, about 0.6 KB per
   episode index: the one part of this configuration's RSS that grows with the step
   count (the steps themselves never cross a stage; DatasetStatsFn is lifted);
3. `merge` at --merge-steps: statistics of the first and the second half of the
   episodes, merged both ways, against statistics of all of them in one accumulator:
   largest difference of mean / std, and whether counts, min/max, quantile sketches and
   quantiles are identical;
4. `exact` at --steps (a child allowed to hold every step): the sketch's median, q01 and
   q99 per dimension against numpy's np.quantile(..., method="lower") (the order
   statistic at rank floor(q * (n - 1)), the one pipelines/stats.py documents its bound
   ALPHA for), its MAD (which the filter uses) against the exact one, and mean / std
   against numpy;
5. the targets and checks, each PASS or MISS (printed only: the exit code is 0 either way):
   peak RSS independent of the step count, RSS(--steps) / RSS(--small-steps) <= 1.20.

Each configuration runs in a fresh child process (this script with the hidden --child
flag). Peak RSS is the child's ru_maxrss (getrusage): the kernel's high-water mark of
its resident memory, which no sampling interval can miss; the parent also samples the
RSS of the child's process tree with psutil every 50 ms, as a cross-check (the
FnApiRunner runs its SDK harness in the child's own process, so there is no tree). Both
include the interpreter, numpy and Beam (pipelines.stats imports Beam); `base` is the
child's RSS after its imports, just before the measured work, so peak - base is what
the work itself added. Rates use the child's own clock around the measured work and
include generating the synthetic steps (shown apart). "cores" is the CPU time of that
work over its wall time. MB are 10^6 bytes.

    python benchmarks/stats.py      # 1M and 100k steps: about 2 minutes on 2 cores
    python benchmarks/stats.py --steps 100000 --small-steps 10000 --merge-steps 20000   # quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import psutil

from pipelines.curation import robust_stats
from pipelines.filters import filter_episode
from pipelines.stats import DatasetStats, DatasetStatsFn
from robolake.statistics import ALPHA, ZERO_WIDTH, VectorStats
from robolake.spec import DatasetSpec, parse_spec

from harness import (
    MB, Target, cpu_seconds, keep_or_remove, prepare_workdir, print_machine, print_result, print_targets,
    run_measured,
)

ACTION_DIM = 7  # six arm dimensions and the gripper (the spec's default action names)
STATE_DIM = 9  # eef position 3, quaternion 4, finger positions 2
ARM_DIMS = 6
SAMPLE_S = 0.05
RSS_GROWTH_LIMIT = 1.20
QUANTILES = {"q01": 0.01, "median": 0.5, "q99": 0.99}

# A spec with the default filter rules (zscore 8 -> clip, jump ratio 10 -> drop_step,
# every action dimension but the gripper); the source is never read.
BENCH_SPEC = {
    "name": "synthetic_stats",
    "version": "1.0.0",
    "source": {"format": "hdf5", "layout": "robomimic", "paths": ["unused/*.hdf5"]},
    "control_rate_hz": 10,
    "cameras": [],
    "instruction": {"value": "synthetic"},
}


def bench_spec() -> DatasetSpec:
    return parse_spec(BENCH_SPEC, "benchmarks/stats.py")


# --- Synthetic episodes -------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    actions: np.ndarray  # steps x 7, raw
    state: np.ndarray  # steps x 9
    spike: tuple[int, int] | None  # (step, dimension) of the injected spike


def make_episode(seed: int, index: int, steps: int, spike_rate: float) -> Episode:
    """Episode `index` of the synthetic dataset: the same (seed, index) gives the same episode."""
    rng = np.random.default_rng([seed, index])
    t = np.arange(steps)[:, None]
    amplitude = rng.uniform(0.2, 0.6, ARM_DIMS)
    frequency = rng.uniform(0.5, 2.0, ARM_DIMS)  # cycles per episode
    phase = rng.uniform(0.0, 2 * np.pi, ARM_DIMS)
    arm = amplitude * np.sin(2 * np.pi * frequency * t / steps + phase) + rng.normal(0.0, 0.01, (steps, ARM_DIMS))
    closes = int(rng.integers(steps // 4, 3 * steps // 4 + 1))
    gripper = np.where(np.arange(steps) < closes, -1.0, 1.0)
    actions = np.column_stack([arm, gripper])

    position = rng.uniform(-0.3, 0.3, 3) + 0.01 * np.cumsum(arm[:, :3], axis=0)
    yaw = rng.uniform(-np.pi, np.pi) + 0.01 * np.cumsum(arm[:, 5])
    tilt = rng.normal(0.0, 0.01, (steps, 2))
    quaternion = np.column_stack([np.cos(yaw / 2), tilt, np.sin(yaw / 2)])
    quaternion /= np.linalg.norm(quaternion, axis=1, keepdims=True)
    opening = 0.04 / (1 + np.exp(np.arange(steps) - closes - 3.0)) + rng.normal(0.0, 1e-4, steps)
    state = np.column_stack([position, quaternion, opening, -opening])

    spike = None
    if rng.random() < spike_rate and steps >= 5:
        step, dim = int(rng.integers(2, steps - 2)), int(rng.integers(0, ARM_DIMS))
        actions[step, dim] += rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 2.5)
        spike = (step, dim)
    return Episode(actions, state, spike)


def episode_count(steps: int, episode_steps: int) -> int:
    return math.ceil(steps / episode_steps)


def new_stats() -> DatasetStats:
    return DatasetStats(ACTION_DIM, STATE_DIM, [])


def summary(stats: VectorStats) -> dict:
    """What the parent compares between children: count, moments and quantiles."""
    result = stats.result()
    return {key: result[key] for key in ("count", "mean", "std", "min", "max", *QUANTILES)}


def rss() -> int:
    return psutil.Process().memory_info().rss


# --- What the children measure ------------------------------------------------------------


def child_stats(args: argparse.Namespace) -> dict:
    """Raw pass, then the filter pass over the regenerated episodes, as the pipeline does."""
    spec = bench_spec()
    episodes = episode_count(args.steps, args.episode_steps)
    base = rss()
    started = time.perf_counter()
    generate = raw_add = 0.0
    raw = new_stats()
    for i in range(episodes):
        t0 = time.perf_counter()
        episode = make_episode(args.seed, i, args.episode_steps, args.spike_rate)
        t1 = time.perf_counter()
        raw.add_episode(episode.actions, episode.state, {})
        raw_add += time.perf_counter() - t1
        generate += t1 - t0
    raw_seconds = time.perf_counter() - started
    rss_after_raw = rss()

    second = time.perf_counter()
    robust = robust_stats(raw)
    robust_seconds = time.perf_counter() - second
    final = new_stats()
    filter_time = final_add = generate2 = 0.0
    counts = {"injected": 0, "caught": 0, "clipped_only": 0, "missed": 0, "other_steps_dropped": 0,
              "items_clipped": 0, "quarantined": 0, "flags_zscore": 0, "flags_jump": 0, "flags_bounds": 0}
    for i in range(episodes):
        t0 = time.perf_counter()
        episode = make_episode(args.seed, i, args.episode_steps, args.spike_rate)
        t1 = time.perf_counter()
        result = filter_episode(episode.actions, spec, robust)
        t2 = time.perf_counter()
        for flag in result.flags:
            counts[f"flags_{flag.rule}"] += 1
        dropped = set(np.nonzero(~result.keep)[0].tolist()) if not result.quarantined else set()
        if episode.spike is not None:
            counts["injected"] += 1
            step, dim = episode.spike
            if step in dropped:
                counts["caught"] += 1
            elif any(f.step == step and f.dim == dim for f in result.flags):
                counts["clipped_only"] += 1
            else:
                counts["missed"] += 1
        counts["other_steps_dropped"] += len(dropped - ({episode.spike[0]} if episode.spike else set()))
        if result.quarantined:
            counts["quarantined"] += 1
        else:
            counts["items_clipped"] += sum(f.policy == "clip" and bool(result.keep[f.step]) for f in result.flags)
            final.add_episode(result.actions, episode.state[result.keep], {})
        t3 = time.perf_counter()
        generate2 += t1 - t0
        filter_time += t2 - t1
        final_add += t3 - t2  # the flag bookkeeping above is a few microseconds of this
    filter_seconds = time.perf_counter() - second
    return {
        "steps": raw.action.count, "episodes": episodes, "kept_steps": final.action.count,
        "seconds": time.perf_counter() - started, "base_rss": base, "rss_after_raw": rss_after_raw,
        "raw_seconds": raw_seconds, "filter_seconds": filter_seconds,
        "time": {"generate (raw pass)": generate, "raw DatasetStats.add_episode": raw_add,
                 "robust_stats": robust_seconds, "generate (filter pass)": generate2,
                 "filter_episode": filter_time, "final DatasetStats.add_episode": final_add},
        "counts": counts, "raw_action": summary(raw.action), "raw_state": summary(raw.state),
    }


class _Generate:
    """Episode index -> the DatasetStatsFn input (actions, state, cameras), inside Beam."""

    def __init__(self, seed: int, steps: int, spike_rate: float):
        self.seed, self.steps, self.spike_rate = seed, steps, spike_rate

    def __call__(self, index: int) -> tuple:
        episode = make_episode(self.seed, index, self.steps, self.spike_rate)
        return episode.actions, episode.state, {}


def _write_summary(stats: DatasetStats, path: str) -> None:
    with open(path, "w") as f:
        json.dump({"action": summary(stats.action), "state": summary(stats.state),
                   "trajectories": stats.trajectories}, f)


def child_beam(args: argparse.Namespace) -> dict:
    """The raw-statistics pass on Beam's FnApiRunner; only episode indices go into Create."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    episodes = episode_count(args.steps, args.episode_steps)
    path = os.path.join(args.out, "beam-summary.json")
    base = rss()
    started = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        _ = (
            pipeline
            | "EpisodeIndices" >> beam.Create(range(episodes))
            | "Generate" >> beam.Map(_Generate(args.seed, args.episode_steps, args.spike_rate))
            | "RawStats" >> beam.CombineGlobally(DatasetStatsFn(ACTION_DIM, STATE_DIM, []))
            | "Write" >> beam.Map(_write_summary, path)
        )
    seconds = time.perf_counter() - started
    with open(path) as f:
        result = json.load(f)
    return {"steps": result["action"]["count"], "episodes": result["trajectories"], "seconds": seconds,
            "base_rss": base, "raw_action": result["action"], "raw_state": result["state"]}


def _same_stats(a: VectorStats, b: VectorStats) -> dict:
    sa, sb = a.sketch, b.sketch
    ra, rb = a.result(), b.result()
    return {
        "mean_max_abs_diff": float(np.max(np.abs(a.moments.mean - b.moments.mean))),
        "std_max_abs_diff": float(np.max(np.abs(a.moments.std() - b.moments.std()))),
        "count_equal": a.count == b.count,
        "min_max_equal": bool(np.array_equal(a.min, b.min) and np.array_equal(a.max, b.max)),
        "sketch_equal": bool(np.array_equal(sa.negative, sb.negative) and np.array_equal(sa.positive, sb.positive)
                             and np.array_equal(sa.zeros, sb.zeros)),
        "quantiles_equal": all(ra[name] == rb[name] for name in QUANTILES),
        "robust_equal": all(np.array_equal(x, y) for x, y in zip(a.robust(), b.robust())),
    }


def child_merge(args: argparse.Namespace) -> dict:
    """First half and second half of the episodes merged (both ways) against all of them at once."""
    episodes = episode_count(args.steps, args.episode_steps)
    base = rss()
    started = time.perf_counter()
    whole, first, second = new_stats(), new_stats(), new_stats()
    for i in range(episodes):
        episode = make_episode(args.seed, i, args.episode_steps, args.spike_rate)
        whole.add_episode(episode.actions, episode.state, {})
        (first if i < episodes // 2 else second).add_episode(episode.actions, episode.state, {})
    forward, backward = new_stats(), new_stats()
    for stats, parts in ((forward, (first, second)), (backward, (second, first))):
        for part in parts:
            stats.merge(part)
    checks = {}
    for name, merged in (("first+second", forward), ("second+first", backward)):
        for field in ("action", "state"):
            checks[f"{name} {field}"] = _same_stats(getattr(merged, field), getattr(whole, field))
    return {"steps": whole.action.count, "episodes": episodes, "seconds": time.perf_counter() - started,
            "base_rss": base, "halves": [first.action.count, second.action.count], "checks": checks}


def child_exact(args: argparse.Namespace) -> dict:
    """Every step in memory; the sketch (streamed per episode) against numpy on all of them."""
    episodes = episode_count(args.steps, args.episode_steps)
    n = episodes * args.episode_steps
    base = rss()
    started = time.perf_counter()
    actions, state = np.empty((n, ACTION_DIM)), np.empty((n, STATE_DIM))
    streamed = {"action": VectorStats(ACTION_DIM), "state": VectorStats(STATE_DIM)}
    for i in range(episodes):
        episode = make_episode(args.seed, i, args.episode_steps, args.spike_rate)
        rows = slice(i * args.episode_steps, (i + 1) * args.episode_steps)
        actions[rows], state[rows] = episode.actions, episode.state
        streamed["action"].add(episode.actions)
        streamed["state"].add(episode.state)
    report = {}
    for field, values in (("action", actions), ("state", state)):
        stats = streamed[field]
        worst = {"rel_err": 0.0}
        within = True
        for name, q in QUANTILES.items():
            exact = np.quantile(values, q, axis=0, method="lower")
            for d in range(values.shape[1]):
                sketch = stats.sketch.quantile(d, q)
                error = abs(sketch - exact[d])
                rel = error / abs(exact[d]) if abs(exact[d]) >= ZERO_WIDTH else 0.0
                within &= rel <= ALPHA * (1 + 1e-9) if abs(exact[d]) >= ZERO_WIDTH else error <= ZERO_WIDTH
                if rel >= worst["rel_err"]:
                    worst = {"rel_err": rel, "quantile": name, "dim": d, "sketch": sketch, "exact": float(exact[d])}
        mean, std = values.mean(axis=0), values.std(axis=0)
        report[field] = {
            "quantile": worst, "within_bound": bool(within),
            "mean_max_rel_err": float(np.max(np.abs(stats.moments.mean - mean) / np.maximum(np.abs(mean), 1e-300))),
            "std_max_rel_err": float(np.max(np.abs(stats.moments.std() - std) / np.maximum(std, 1e-300))),
        }
    # MAD of the arm dimensions (what the filter's robust scale uses): no documented bound.
    median, mad = streamed["action"].robust()
    exact_median = np.quantile(actions[:, :ARM_DIMS], 0.5, axis=0, method="lower")
    exact_mad = np.quantile(np.abs(actions[:, :ARM_DIMS] - exact_median), 0.5, axis=0, method="lower")
    report["mad_max_rel_err"] = float(np.max(np.abs(mad[:ARM_DIMS] - exact_mad) / exact_mad))
    report["data_bytes"] = actions.nbytes + state.nbytes
    return {"steps": n, "episodes": episodes, "seconds": time.perf_counter() - started, "base_rss": base,
            "report": report}


CHILD_MODES = {"stats": child_stats, "beam": child_beam, "merge": child_merge, "exact": child_exact}


def run_child(args: argparse.Namespace) -> None:
    """Time one configuration and print its result as one JSON line for the parent."""
    cpu_before = cpu_seconds()
    result = CHILD_MODES[args.child](args)
    result["cpu_seconds"] = cpu_seconds() - cpu_before
    print_result(result)


# --- The parent: plan, measure, report ----------------------------------------------------


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    mode: str
    steps: int


@dataclass
class Measurement:
    config: Config
    result: dict
    sampled_rss: int

    @property
    def steps(self) -> int:
        return self.result["steps"]

    @property
    def seconds(self) -> float:
        return self.result["seconds"]

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def peak_rss(self) -> int:
        return max(self.result["max_rss"], self.sampled_rss)

    @property
    def cores(self) -> float:
        return self.result["cpu_seconds"] / self.seconds


def measure(config: Config, args: argparse.Namespace, workdir: str) -> Measurement:
    out_dir = tempfile.mkdtemp(prefix=f"{config.key}-", dir=workdir)
    log_path = f"{out_dir}.log"
    command = [
        sys.executable, os.path.abspath(__file__), "--child", config.mode, "--out", out_dir,
        "--steps", str(config.steps), "--episode-steps", str(args.episode_steps),
        "--seed", str(args.seed), "--spike-rate", str(args.spike_rate),
    ]
    result, sampled = run_measured(command, log_path, config.label, SAMPLE_S)
    return Measurement(config, result, sampled)


def short(steps: int) -> str:
    """1000000 -> 1M, 100000 -> 100k."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if steps >= size and steps % size == 0:
            return f"{steps // size}{unit}"
    return f"{steps:,}"


def compare(a: dict, b: dict) -> tuple[float, bool]:
    """Largest |difference| of mean and std, and whether count, min, max and quantiles are equal."""
    diff = max(float(np.max(np.abs(np.subtract(a[k], b[k])))) for k in ("mean", "std"))
    same = all(a[k] == b[k] for k in ("count", "min", "max", *QUANTILES))
    return diff, same


def print_progress(m: Measurement) -> None:
    print(f"      {m.steps:,} steps in {m.seconds:.1f} s: {m.steps_per_s:,.0f} steps/s, "
          f"peak RSS {m.peak_rss / MB:.0f} MB (base {m.result['base_rss'] / MB:.0f} MB)", flush=True)


def print_table(measurements: list[Measurement]) -> None:
    print(f"\n{'configuration':<44} {'steps':>9} {'seconds':>8} {'steps/s':>9} {'cores':>5} "
          f"{'peak RSS':>9} {'sampled':>8} {'base':>7} {'peak-base':>9}")
    for m in measurements:
        r = m.result
        print(f"{m.config.label:<44} {m.steps:>9,} {m.seconds:>8.1f} {m.steps_per_s:>9,.0f} {m.cores:>5.2f} "
              f"{m.peak_rss / MB:>6.0f} MB {m.sampled_rss / MB:>5.0f} MB {r['base_rss'] / MB:>4.0f} MB "
              f"{(m.peak_rss - r['base_rss']) / MB:>6.1f} MB")


def print_stats_details(m: Measurement) -> None:
    r, c = m.result, m.result["counts"]
    print(f"\n{m.config.label}: raw pass {r['steps'] / r['raw_seconds']:,.0f} steps/s, "
          f"filter pass {r['steps'] / r['filter_seconds']:,.0f} steps/s, overall {m.steps_per_s:,.0f} steps/s "
          f"(two passes over {r['steps']:,} steps); RSS after the raw pass {r['rss_after_raw'] / MB:.0f} MB")
    total = sum(r["time"].values())
    print("  where the time goes: " + ", ".join(
        f"{name} {seconds:.1f} s ({seconds / total:.0%})" for name, seconds in r["time"].items()))
    print(f"  filter: {c['caught']}/{c['injected']} injected spikes dropped (jump rule), {c['clipped_only']} only "
          f"clipped, {c['missed']} missed; {c['other_steps_dropped']} other steps dropped, "
          f"{c['items_clipped']} items clipped, {c['quarantined']} episodes quarantined; flags: "
          f"zscore {c['flags_zscore']}, jump {c['flags_jump']}; {r['kept_steps']:,} steps kept")


def print_merge(m: Measurement) -> None:
    r = m.result
    print(f"\nmerge, {r['steps']:,} steps in halves of {r['halves'][0]:,} + {r['halves'][1]:,} steps, "
          "merged vs one accumulator over all:")
    print(f"  {'merge':<22} {'mean max|diff|':>14} {'std max|diff|':>14} {'count':>6} {'min/max':>8} "
          f"{'sketch':>7} {'quantiles':>10} {'median/MAD':>11}")
    for name, check in r["checks"].items():
        flags = [("same" if check[k] else "DIFF") for k in
                 ("count_equal", "min_max_equal", "sketch_equal", "quantiles_equal", "robust_equal")]
        print(f"  {name:<22} {check['mean_max_abs_diff']:>14.2e} {check['std_max_abs_diff']:>14.2e} "
              f"{flags[0]:>6} {flags[1]:>8} {flags[2]:>7} {flags[3]:>10} {flags[4]:>11}")


def print_exact(m: Measurement) -> None:
    report = m.result["report"]
    print(f"\nexact, {m.steps:,} steps ({report['data_bytes'] / MB:.0f} MB of float64 held), sketch vs numpy "
          f"(np.quantile method='lower'); documented bound ALPHA = {ALPHA}:")
    for field in ("action", "state"):
        q = report[field]["quantile"]
        print(f"  {field:<7} quantile max rel err {q['rel_err']:.2e} ({q['quantile']}, dim {q['dim']}: "
              f"{q['sketch']:.6g} vs {q['exact']:.6g}), within bound: {report[field]['within_bound']}; "
              f"mean max rel err {report[field]['mean_max_rel_err']:.1e}, "
              f"std max rel err {report[field]['std_max_rel_err']:.1e}")
    print(f"  arm MAD (robust scale of the filter; no documented bound) max rel err {report['mad_max_rel_err']:.2e}")


def evaluate(results: dict[str, Measurement]) -> list[Target]:
    targets = []
    for mode in ("stats", "beam"):
        small, large = results.get(f"{mode}_small"), results.get(f"{mode}_large")
        if small and large:
            ratio = large.peak_rss / small.peak_rss
            targets.append(Target(
                f"{mode}: peak RSS {small.steps:,} -> {large.steps:,} steps",
                f"{small.peak_rss / MB:.0f} -> {large.peak_rss / MB:.0f} MB = {ratio:.3f}x "
                f"(work: {(small.peak_rss - small.result['base_rss']) / MB:+.1f} -> "
                f"{(large.peak_rss - large.result['base_rss']) / MB:+.1f} MB over base)",
                f"<= {RSS_GROWTH_LIMIT:.2f}x", ratio <= RSS_GROWTH_LIMIT,
            ))
    if "exact" in results:
        report = results["exact"].result["report"]
        worst = max(report["action"]["quantile"]["rel_err"], report["state"]["quantile"]["rel_err"])
        targets.append(Target("quantiles vs exact (median, q01, q99)", f"max rel err {worst:.2e}",
                              f"<= {ALPHA}", report["action"]["within_bound"] and report["state"]["within_bound"]))
    if "merge" in results:
        checks = results["merge"].result["checks"].values()
        same = all(c["count_equal"] and c["min_max_equal"] and c["sketch_equal"] and c["quantiles_equal"] for c in checks)
        worst = max(max(c["mean_max_abs_diff"], c["std_max_abs_diff"]) for c in checks)
        targets.append(Target("merge(halves) == whole", f"quantiles {'identical' if same else 'DIFFER'}, "
                              f"mean/std max|diff| {worst:.1e}", "identical, < 1e-9", same and worst < 1e-9))
    for mode in ("beam_small", "beam_large"):
        beam = results.get(mode)
        stats = results.get(mode.replace("beam", "stats"))
        if beam and stats and beam.steps == stats.steps:
            diffs = [compare(beam.result[k], stats.result[k]) for k in ("raw_action", "raw_state")]
            diff, same = max(d for d, _ in diffs), all(s for _, s in diffs)
            targets.append(Target(f"Beam raw stats == in-process, {beam.steps:,} steps",
                                  f"quantiles {'identical' if same else 'DIFFER'}, mean/std max|diff| {diff:.1e}",
                                  "identical, < 1e-9", same and diff < 1e-9))
    return targets


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000, help="the large step count (default: 1000000)")
    parser.add_argument("--small-steps", type=int, default=100_000,
                        help="the small step count, RSS baseline of the target (default: 100000)")
    parser.add_argument("--merge-steps", type=int, help="steps of the merge check (default: --small-steps)")
    parser.add_argument("--episode-steps", type=int, default=100, help="steps per episode (default: 100)")
    parser.add_argument("--spike-rate", type=float, default=0.05,
                        help="fraction of episodes with one injected spike (default: 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: 0)")
    parser.add_argument("--skip-beam-large", action="store_true", help="run the Beam pass at --small-steps only")
    parser.add_argument("--beam-large-limit", type=float, default=120.0,
                        help="run Beam at --steps only if the small run's time, scaled, projects under this "
                             "many seconds (default: 120)")
    parser.add_argument("--skip-exact", action="store_true", help="leave out the exact-quantile child")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (child logs)")
    parser.add_argument("--child", choices=sorted(CHILD_MODES), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.episode_steps < 5:
        parser.error("--episode-steps must be at least 5")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return
    started = time.perf_counter()
    workdir = prepare_workdir(None, "robolake-stats-bench-")
    merge_steps = args.merge_steps or args.small_steps
    print(f"robolake statistics benchmark: {args.small_steps:,} and {args.steps:,} synthetic steps, "
          f"{args.episode_steps}-step episodes, {ACTION_DIM}-d actions, {STATE_DIM}-d state, "
          f"spikes in {args.spike_rate:.0%} of episodes, seed {args.seed}")
    print_machine(workdir)
    configs = [
        Config("stats_small", "stats: raw pass + filter pass", "stats", args.small_steps),
        Config("stats_large", "stats: raw pass + filter pass", "stats", args.steps),
        Config("beam_small", "beam: raw pass, FnApiRunner", "beam", args.small_steps),
        Config("beam_large", "beam: raw pass, FnApiRunner", "beam", args.steps),
        Config("merge", "merge: halves vs whole", "merge", merge_steps),
        Config("exact", "exact: every step held, numpy", "exact", args.steps),
    ]
    results: dict[str, Measurement] = {}
    for i, config in enumerate(configs, 1):
        if config.key == "exact" and args.skip_exact:
            continue
        if config.key == "beam_large":
            small = results["beam_small"]
            projected = small.seconds * args.steps / args.small_steps
            if args.skip_beam_large or projected > args.beam_large_limit:
                why = "--skip-beam-large" if args.skip_beam_large else \
                    f"projected {projected:.0f} s > --beam-large-limit {args.beam_large_limit:.0f} s"
                print(f"[{i}/{len(configs)}] {config.label}, {config.steps:,} steps: skipped ({why})", flush=True)
                continue
        print(f"[{i}/{len(configs)}] {config.label}, {config.steps:,} steps ...", flush=True)
        results[config.key] = measure(config, args, workdir)
        print_progress(results[config.key])
    table = [Measurement(Config(m.config.key, f"{m.config.label} ({short(m.steps)})", m.config.mode, m.steps),
                         m.result, m.sampled_rss) for m in results.values()]
    print_table(table)
    for key in ("stats_small", "stats_large"):
        if key in results:
            print_stats_details(next(t for t in table if t.config.key == key))
    if "merge" in results:
        print_merge(results["merge"])
    if "exact" in results:
        print_exact(results["exact"])
    targets = evaluate(results)
    print_targets(targets, "target / check")
    keep_or_remove(workdir, args.keep)
    large, small = results.get("stats_large"), results.get("stats_small")
    throughput = ", ".join(
        f"{m.config.key} {m.steps_per_s:,.0f} steps/s" for m in results.values() if m.config.mode in ("stats", "beam")
    )
    rss_target = next((t for t in targets if t.name.startswith("stats: peak RSS")), None)
    verdict = (f"peak RSS {small.peak_rss / MB:.0f} -> {large.peak_rss / MB:.0f} MB "
               f"({large.peak_rss / small.peak_rss:.3f}x, goal <= {RSS_GROWTH_LIMIT:.2f}x) {rss_target.verdict}"
               if rss_target else "no RSS target (a stats run is missing)")
    met = sum(t.met for t in targets)
    print(f"\nsummary: {met}/{len(targets)} targets met; {verdict}; {throughput}; "
          f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main(sys.argv[1:])
