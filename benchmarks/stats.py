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
   q99 per dimension against numpy's np.quantile (its default, linear interpolation,
   which the sketch reproduces), as error over the bound robolake/statistics.py
   documents, ALPHA * max(|x_(k)|, |x_(k+1)|) + ZERO_WIDTH with k = floor(q (n - 1));
   its MAD (which the filter uses) against the exact one, and mean / std against numpy;
5. `quantiles` at each of --quantile-sizes values: two columns, a heavy-tailed one
   (Student-t with 1.5 degrees of freedom, times 0.01) and a bimodal one (an even mixture
   of N(1, 0.05) and N(4, 0.2), its median interpolated across the gap), fed to a
   VectorStats --batch-rows rows per add (its memory does not grow with the count);
   q01 / median / q99 against np.quantile: largest absolute error, largest error over
   |np.quantile| and over the bound above, and the time of the sketch (adds and result)
   against np.quantile's (both columns together);
6. `stats --where` on synthetic lakes (benchmarks/synthetic_lake.py, --episodes-sizes
   episodes of --lake-steps steps, written by a child beforehand): (a) what the command
   runs, validation/selection_stats.selection_statistics over the train episodes that
   meet --where (about half of them by default), merged from their episode_stats rows,
   against (b) the same statistics recomputed from the curated steps: DuckDB streams
   the action_raw and state of the same episodes (selected in the silver episodes
   table) into VectorStats, --batch-rows rows per add. Each side runs in its own child,
   --repeats calls: the first call and the best one, the speedup (b) / (a) of the best
   calls, the peak RSS of each child, and whether they agree (episode and step counts,
   min, max equal; mean and std within 1e-9 relative; quantiles identical or within the
   sketch's bound of each other);
7. the targets and checks, each PASS or MISS (printed only: the exit code is 0 either way):
   peak RSS independent of the step count, RSS(--steps) / RSS(--small-steps) <= 1.20;
   every quantile within its bound; (a) == (b); the first (a) call at the largest lake of
   at most 10,000 episodes under 0.5 s.

Each configuration runs in a fresh child process (this script with the hidden --child
flag). Peak RSS is the child's ru_maxrss (getrusage): the kernel's high-water mark of
its resident memory, which no sampling interval can miss; the parent also samples the
RSS of the child's process tree with psutil every 50 ms, as a cross-check (the
FnApiRunner runs its SDK harness in the child's own process, so there is no tree). Both
include the interpreter, numpy and Beam (pipelines.stats imports Beam); `base` is the
child's RSS after its imports, just before the measured work, so peak - base is what
the work itself added. A child starts with ru_maxrss at its parent's peak (Linux keeps
it across fork and exec), so the parent does no heavy work itself (it does not even
write the lakes) and stays at about a child's base; the `stats --where` children also
report their own VmHWM (/proc/self/status), which counts their address space alone.
Rates use the child's own clock around the measured work and include generating the
synthetic steps (shown apart). "cores" is the CPU time of that work over its wall time.
MB are 10^6 bytes.

    python benchmarks/stats.py            # about 7 minutes on 2 cores, 4.5 of them writing the 100k-episode lake
    python benchmarks/stats.py --quick    # 100k and 10k steps, 10k and 100k values, a 2k-episode lake: under a minute
    python benchmarks/stats.py --quick --episodes-sizes 10000 --lake-steps 100   # (a) vs (b) on longer episodes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import duckdb
import numpy as np
import psutil
import pyarrow as pa

from pipelines.curation import robust_stats
from pipelines.filters import filter_episode
from pipelines.silver_writer import vectors
from pipelines.stats import DatasetStats, DatasetStatsFn
from robolake.lake import Lake
from robolake.statistics import ALPHA, ZERO_WIDTH, VectorStats
from robolake.spec import DatasetSpec, parse_spec
from validation.selection_stats import selection_statistics

from harness import (
    MB, Target, add_run_arguments, benchmark_parser, child_command, cpu_seconds, parent_run, print_result,
    print_targets, run_measured, targets_met,
)

ACTION_DIM = 7  # six arm dimensions and the gripper (the spec's default action names)
STATE_DIM = 9  # eef position 3, quaternion 4, finger positions 2
ARM_DIMS = 6
SAMPLE_S = 0.05
RSS_GROWTH_LIMIT = 1.20
QUANTILES = {"q01": 0.01, "median": 0.5, "q99": 0.99}
DISTRIBUTIONS = ("Student-t(1.5) x 0.01", "bimodal N(1, .05) | N(4, .2)")
BOUND_SLACK = 1 + 1e-9  # float rounding of the bound's own arithmetic
AGREE_REL = 1e-9  # (a) vs (b): largest relative difference of mean and std
WHERE_SECONDS = 0.5  # target: `robolake stats --where` at up to WHERE_TARGET_EPISODES episodes
WHERE_TARGET_EPISODES = 10_000

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


def summary(result: dict) -> dict:
    """What the parent compares between children: count, moments and quantiles of a
    VectorStats.result()."""
    return {key: result[key] for key in ("count", "mean", "std", "min", "max", *QUANTILES)}


def rss() -> int:
    return psutil.Process().memory_info().rss


def own_peak_rss() -> int:
    """This process's peak RSS since its exec (VmHWM). Unlike ru_maxrss, which a child
    starts with at its parent's peak (Linux keeps it across fork and exec), it counts this
    process alone."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


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
        "counts": counts, "raw_action": summary(raw.action.result()),
        "raw_state": summary(raw.state.result()),
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
        json.dump({"action": summary(stats.action.result()), "state": summary(stats.state.result()),
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
        "sketch_equal": bool(np.array_equal(sa.counts, sb.counts)),
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
        errors = quantile_errors(values, np.quantile(values, list(QUANTILES.values()), axis=0), stats.result())
        mean, std = values.mean(axis=0), values.std(axis=0)
        report[field] = {
            "quantile": largest_error(errors, "rel_err"), "bound": largest_error(errors, "bound_ratio"),
            "mean_max_rel_err": float(np.max(np.abs(stats.moments.mean - mean) / np.maximum(np.abs(mean), 1e-300))),
            "std_max_rel_err": float(np.max(np.abs(stats.moments.std() - std) / np.maximum(std, 1e-300))),
        }
    # MAD of the arm dimensions (what the filter's robust scale uses): no documented bound.
    median, mad = streamed["action"].robust()
    exact_median = np.quantile(actions[:, :ARM_DIMS], 0.5, axis=0)
    exact_mad = np.quantile(np.abs(actions[:, :ARM_DIMS] - exact_median), 0.5, axis=0)
    report["mad_max_rel_err"] = float(np.max(np.abs(mad[:ARM_DIMS] - exact_mad) / exact_mad))
    report["data_bytes"] = actions.nbytes + state.nbytes
    return {"steps": n, "episodes": episodes, "seconds": time.perf_counter() - started, "base_rss": base,
            "report": report}


# --- Quantiles against numpy ----------------------------------------------------------------


def heavy_tailed_and_bimodal(seed: int, n: int) -> np.ndarray:
    """n rows, a column per DISTRIBUTIONS entry: Student-t with 1.5 degrees of freedom (no
    variance) times 0.01, and an even mixture of N(1, 0.05) and N(4, 0.2), whose median
    np.quantile interpolates across the gap between the modes."""
    rng = np.random.default_rng([seed, n])
    values = np.empty((n, len(DISTRIBUTIONS)))
    values[:, 0] = 0.01 * rng.standard_t(1.5, n)
    values[:, 1] = np.where(rng.random(n) < 0.5, rng.normal(1.0, 0.05, n), rng.normal(4.0, 0.2, n))
    return values


def interpolated_ranks(q: float, n: int) -> tuple[int, int]:
    """The ranks np.quantile(x, q) interpolates between: k = floor(q (n - 1)) and k + 1 (at most n - 1)."""
    k = math.floor(q * (n - 1))
    return k, min(k + 1, n - 1)


def quantile_errors(values: np.ndarray, exact: np.ndarray, sketched: dict) -> list[dict]:
    """Each column's QUANTILES from the sketch (`sketched`, a VectorStats.result()) against
    `exact`, np.quantile(values, q) per q: the absolute error, the error over |exact|, and
    the error over the documented bound ALPHA * max(|x_(k)|, |x_(k+1)|) + ZERO_WIDTH."""
    ranks = {q: interpolated_ranks(q, len(values)) for q in QUANTILES.values()}
    ordered = np.partition(values, sorted({r for pair in ranks.values() for r in pair}), axis=0)
    errors = []
    for (name, q), expected in zip(QUANTILES.items(), exact):
        low, high = ranks[q]
        bound = ALPHA * np.maximum(np.abs(ordered[low]), np.abs(ordered[high])) + ZERO_WIDTH
        for d, (value, truth) in enumerate(zip(sketched[name], expected.tolist())):
            error = abs(value - truth)
            errors.append({"quantile": name, "dim": d, "sketch": value, "exact": truth, "abs_err": error,
                           "rel_err": error / max(abs(truth), ZERO_WIDTH), "bound_ratio": error / bound[d]})
    return errors


def largest_error(errors: list[dict], key: str) -> dict:
    return max(errors, key=lambda error: error[key])


def child_quantiles(args: argparse.Namespace) -> dict:
    """The sketch, fed --batch-rows rows per add, against np.quantile on --values values of each distribution."""
    values = heavy_tailed_and_bimodal(args.seed, args.values)
    base = rss()
    started = time.perf_counter()
    stats = VectorStats(len(DISTRIBUTIONS))
    for start in range(0, len(values), args.batch_rows):
        stats.add(values[start:start + args.batch_rows])
    sketched = stats.result()
    sketch_seconds = time.perf_counter() - started
    exact = np.quantile(values, list(QUANTILES.values()), axis=0)
    numpy_seconds = time.perf_counter() - started - sketch_seconds
    errors = quantile_errors(values, exact, sketched)
    largest = {name: {key: largest_error([e for e in errors if e["dim"] == d], key)
                      for key in ("abs_err", "rel_err", "bound_ratio")}
               for d, name in enumerate(DISTRIBUTIONS)}
    return {"steps": len(values), "seconds": time.perf_counter() - started, "base_rss": base,
            "sketch_seconds": sketch_seconds, "numpy_seconds": numpy_seconds, "data_bytes": values.nbytes,
            "sketch_bytes": stats.sketch.counts.nbytes, "errors": largest}


# --- `robolake stats --where`: merged episode_stats rows vs the curated steps ----------------


def selected_from_episode_stats(lake: Lake, reference: str, where: str) -> dict:
    """(a) `robolake stats --where`: the train episodes that meet `where`, merged from their episode_stats rows."""
    statistics = selection_statistics(lake, reference, where, "train")
    return {"episodes": statistics["num_trajectories"], "action": summary(statistics["action"]),
            "state": summary(statistics["proprio"])}


def selected_from_steps(lake: Lake, reference: str, where: str, batch_rows: int) -> dict:
    """(b) The same statistics recomputed: DuckDB streams the curated action_raw and state
    of the train episodes that meet `where` (a condition over the silver episodes table)
    into VectorStats, batch_rows rows per add."""
    target = lake.resolve(reference)
    files = {table: f"{lake.silver_partition(target.dataset, table, target.version)}/split=train/*.parquet"
             for table in ("episodes", "curated_steps")}
    query = (f"SELECT episode_id, action_raw, state FROM read_parquet('{files['curated_steps']}') WHERE episode_id "
             f"IN (SELECT episode_id FROM read_parquet('{files['episodes']}') WHERE {where})")
    action, state = VectorStats(len(target.spec.action.names)), VectorStats(target.manifest["state_dim"])
    episodes = set()
    with duckdb.connect() as con:
        for batch in con.sql(query).to_arrow_reader(batch_rows):
            table = pa.Table.from_batches([batch])
            action.add(vectors(table, "action_raw"))
            state.add(vectors(table, "state"))
            episodes.update(table.column("episode_id").unique().to_pylist())
    return {"episodes": len(episodes), "action": summary(action.result()), "state": summary(state.result())}


def timed_calls(work: Callable[[], dict], repeats: int) -> dict:
    """`work()` called `repeats` times in this process: what it returns (the last call's),
    each call's seconds and this process's RSS before the first."""
    base = rss()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        selected = work()
        seconds.append(time.perf_counter() - started)
    return {**selected, "steps": selected["action"]["count"], "seconds": seconds[0], "calls": seconds,
            "base_rss": base, "own_peak_rss": own_peak_rss()}


def child_lake(args: argparse.Namespace) -> dict:
    """A synthetic lake of --episodes episodes of --lake-steps steps at --lake; its summary."""
    from synthetic_lake import write_synthetic_lake  # imports TensorFlow (schemas.rlds): this child only

    lake = write_synthetic_lake(args.lake, args.episodes, args.lake_steps, seed=args.seed)
    train = Lake(args.lake).resolve(lake.reference).manifest["counts"]["by_split"]["train"]["episodes"]
    return {**asdict(lake), "reference": lake.reference, "line": lake.line(), "train_episodes": train}


def child_selection(args: argparse.Namespace) -> dict:
    return timed_calls(lambda: selected_from_episode_stats(Lake(args.lake), args.dataset, args.where), args.repeats)


def child_recompute(args: argparse.Namespace) -> dict:
    return timed_calls(lambda: selected_from_steps(Lake(args.lake), args.dataset, args.where, args.batch_rows),
                       args.repeats)


CHILD_MODES = {"stats": child_stats, "beam": child_beam, "merge": child_merge, "exact": child_exact,
               "quantiles": child_quantiles, "lake": child_lake, "selection": child_selection,
               "recompute": child_recompute}


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


def measure(config: Config, options: list[str], workdir: str) -> Measurement:
    """Run the child `config.mode` with `options` in a fresh process."""
    out_dir = tempfile.mkdtemp(prefix=f"{config.key}-", dir=workdir)
    command = child_command(__file__, config.mode, "--out", out_dir, *options)
    result, sampled = run_measured(command, f"{out_dir}.log", config.label, SAMPLE_S)
    return Measurement(config, result, sampled)


def synthetic_options(config: Config, args: argparse.Namespace) -> list[str]:
    """A child's options over the synthetic steps."""
    return ["--steps", str(config.steps), "--episode-steps", str(args.episode_steps), "--seed", str(args.seed),
            "--spike-rate", str(args.spike_rate)]


def measure_quantiles(args: argparse.Namespace, workdir: str) -> list[Measurement]:
    """The `quantiles` child at each of --quantile-sizes."""
    measurements = []
    for n in args.quantile_sizes:
        print(f"[quantiles] {n:,} values of each distribution ...", flush=True)
        config = Config(f"quantiles_{n}", "quantiles: sketch vs np.quantile", "quantiles", n)
        options = ["--values", str(n), "--batch-rows", str(args.batch_rows), "--seed", str(args.seed)]
        measurements.append(measure(config, options, workdir))
        r = measurements[-1].result
        print(f"      sketch {r['sketch_seconds']:.2f} s, np.quantile {r['numpy_seconds']:.2f} s", flush=True)
    return measurements


@dataclass(frozen=True)
class Selection:
    """`stats --where` over one synthetic lake: (a) merged from episode_stats rows, (b)
    recomputed from the curated steps."""

    lake: dict  # the `lake` child's result: synthetic_lake.LakeSummary's fields and train_episodes
    merged: Measurement
    recomputed: Measurement

    @property
    def episodes(self) -> int:
        return self.lake["episodes"]

    @property
    def speedup(self) -> float:
        """(b) / (a), the best call of each."""
        return min(self.recomputed.result["calls"]) / min(self.merged.result["calls"])

    @property
    def agreement(self) -> dict:
        return agreement(self.merged.result, self.recomputed.result)


def measure_selection(episodes: int, args: argparse.Namespace, workdir: str) -> Selection:
    """Write a synthetic lake of `episodes` episodes, then (a) and (b) over it, each in its own child."""
    print(f"[stats --where] writing a lake of {episodes:,} episodes x {args.lake_steps} steps ...", flush=True)
    root = os.path.join(workdir, f"lake-{episodes}")
    options = ["--lake", root, "--episodes", str(episodes), "--lake-steps", str(args.lake_steps),
               "--seed", str(args.seed)]
    lake = measure(Config(f"lake_{episodes}", "synthetic lake", "lake", episodes), options, workdir).result
    print(f"      {lake['line']}", flush=True)
    options = ["--lake", root, "--dataset", lake["reference"], "--where", args.where, "--repeats", str(args.repeats),
               "--batch-rows", str(args.batch_rows)]
    sides = []
    for mode, label in (("selection", "(a) merge episode_stats rows"), ("recompute", "(b) recompute from steps")):
        print(f"[stats --where] {label}, {episodes:,} episodes ...", flush=True)
        sides.append(measure(Config(f"{mode}_{episodes}", label, mode, episodes), options, workdir))
        print(f"      {', '.join(f'{s:.2f}' for s in sides[-1].result['calls'])} s", flush=True)
    return Selection(lake, *sides)


def agreement(a: dict, b: dict) -> dict:
    """(a) against (b): equal episode and step counts, min and max; the largest relative
    difference of mean and std; the quantiles identical, or their largest difference over
    the sketch's bound."""
    equal = a["episodes"] == b["episodes"]
    moments_rel = bound_ratio = 0.0
    identical = total = 0
    for field in ("action", "state"):
        x, y = a[field], b[field]
        equal &= all(x[key] == y[key] for key in ("count", "min", "max"))
        for key in ("mean", "std"):
            diff = np.abs(np.subtract(x[key], y[key])) / np.maximum(np.abs(y[key]), ZERO_WIDTH)
            moments_rel = max(moments_rel, float(diff.max()))
        for name in QUANTILES:
            u, v = np.array(x[name]), np.array(y[name])
            identical, total = identical + int((u == v).sum()), total + u.size
            bound = ALPHA * np.maximum(np.abs(u), np.abs(v)) + ZERO_WIDTH
            bound_ratio = max(bound_ratio, float(np.max(np.abs(u - v) / bound)))
    return {"equal": equal, "moments_rel": moments_rel, "identical": identical, "quantiles": total,
            "bound_ratio": bound_ratio,
            "agree": equal and moments_rel <= AGREE_REL and bound_ratio <= BOUND_SLACK}


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


BOUND_TEXT = (f"bound ALPHA * max(|x_(k)|, |x_(k+1)|) + ZERO_WIDTH, k = floor(q (n - 1)), ALPHA = {ALPHA}, "
              f"ZERO_WIDTH = {ZERO_WIDTH:g}")


def print_exact(m: Measurement) -> None:
    report = m.result["report"]
    print(f"\nexact, {m.steps:,} steps ({report['data_bytes'] / MB:.0f} MB of float64 held), sketch vs numpy "
          f"(np.quantile, linear); {BOUND_TEXT}:")
    for field in ("action", "state"):
        q, b = report[field]["quantile"], report[field]["bound"]
        print(f"  {field:<7} quantile max rel err {q['rel_err']:.2e} ({q['quantile']}, dim {q['dim']}: "
              f"{q['sketch']:.6g} vs {q['exact']:.6g}), max err/bound {b['bound_ratio']:.3f} ({b['quantile']}, "
              f"dim {b['dim']}); mean max rel err {report[field]['mean_max_rel_err']:.1e}, "
              f"std max rel err {report[field]['std_max_rel_err']:.1e}")
    print(f"  arm MAD (robust scale of the filter; no documented bound) max rel err {report['mad_max_rel_err']:.2e}")


def print_quantiles(measurements: list[Measurement], batch_rows: int) -> None:
    sketch_mb = measurements[0].result["sketch_bytes"] / MB
    print(f"\nquantiles (q01, median, q99) vs np.quantile (linear), the sketch fed {batch_rows:,} rows per add "
          f"({sketch_mb:.2f} MB of counts whatever the count); {BOUND_TEXT}:")
    print(f"  {'values':>10} {'distribution':<30} {'max |err|':<16} {'max |err|/|np|':<16} {'max err/bound':<16} "
          f"{'sketch s':>8} {'np s':>6}")
    for m in measurements:
        r = m.result
        for i, (name, largest) in enumerate(r["errors"].items()):
            cells = " ".join(f"{largest[key][key]:>9.{digits}} {largest[key]['quantile']:<6}"
                             for key, digits in (("abs_err", "2e"), ("rel_err", "2e"), ("bound_ratio", "3f")))
            first = i == 0  # the size and the times (of both columns together) once per size
            size = f"{m.steps:,}" if first else ""
            times = f"{r['sketch_seconds']:>8.3f} {r['numpy_seconds']:>6.3f}" if first else ""
            print(f"  {size:>10} {name:<30} {cells} {times}")


def print_selections(selections: list[Selection], args: argparse.Namespace) -> None:
    print(f"\nstats --where \"{args.where}\" over the train split, {args.lake_steps}-step episodes: (a) "
          f"validation/selection_stats.selection_statistics (merges episode_stats rows) vs (b) DuckDB over "
          f"curated_steps -> VectorStats ({args.batch_rows:,} rows per add); each side in a fresh child, "
          f"{args.repeats} calls; peak RSS = the child's ru_maxrss (its own VmHWM beside it), base = its RSS "
          f"after imports:")
    for s in selections:
        a, check = s.merged.result, s.agreement
        lake = s.lake
        print(f"  {s.episodes:,} episodes ({lake['bytes'] / MB:.0f} MB, {lake['files']} files, written in "
              f"{lake['seconds']:.0f} s): {a['episodes']:,} of {lake['train_episodes']:,} train episodes selected "
              f"({a['episodes'] / lake['train_episodes']:.0%}), {a['steps']:,} steps")
        for m in (s.merged, s.recomputed):
            r = m.result
            print(f"    {m.config.label:<30} first {r['calls'][0]:>6.2f} s, best {min(r['calls']):>6.2f} s; "
                  f"peak RSS {r['max_rss'] / MB:>5.0f} MB (VmHWM {r['own_peak_rss'] / MB:.0f} MB), "
                  f"{(r['max_rss'] - r['base_rss']) / MB:+.0f} MB over base {r['base_rss'] / MB:.0f} MB")
        print(f"    (b)/(a) = {s.speedup:.1f}x (best calls); (a) vs (b): episodes, steps, min/max "
              f"{'equal' if check['equal'] else 'DIFFER'}, mean/std max rel diff {check['moments_rel']:.1e}, "
              f"quantiles {check['identical']}/{check['quantiles']} identical (max diff/bound "
              f"{check['bound_ratio']:.2g}) -> {'agree' if check['agree'] else 'DISAGREE'}")


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
                f"<= {RSS_GROWTH_LIMIT:.2f}x", ratio <= RSS_GROWTH_LIMIT, f"{mode} RSS {ratio:.2f}x",
            ))
    if "exact" in results:
        report = results["exact"].result["report"]
        ratio = max(report["action"]["bound"]["bound_ratio"], report["state"]["bound"]["bound_ratio"])
        targets.append(Target("quantiles vs exact (median, q01, q99)", f"max err/bound {ratio:.3f}", "<= 1",
                              ratio <= BOUND_SLACK, "exact quantiles"))
    if "merge" in results:
        checks = results["merge"].result["checks"].values()
        same = all(c["count_equal"] and c["min_max_equal"] and c["sketch_equal"] and c["quantiles_equal"] for c in checks)
        worst = max(max(c["mean_max_abs_diff"], c["std_max_abs_diff"]) for c in checks)
        targets.append(Target("merge(halves) == whole", f"quantiles {'identical' if same else 'DIFFER'}, "
                              f"mean/std max|diff| {worst:.1e}", "identical, < 1e-9", same and worst < 1e-9,
                              "merge"))
    for mode in ("beam_small", "beam_large"):
        beam = results.get(mode)
        stats = results.get(mode.replace("beam", "stats"))
        if beam and stats and beam.steps == stats.steps:
            diffs = [compare(beam.result[k], stats.result[k]) for k in ("raw_action", "raw_state")]
            diff, same = max(d for d, _ in diffs), all(s for _, s in diffs)
            targets.append(Target(f"Beam raw stats == in-process, {beam.steps:,} steps",
                                  f"quantiles {'identical' if same else 'DIFFER'}, mean/std max|diff| {diff:.1e}",
                                  "identical, < 1e-9", same and diff < 1e-9,
                                  f"Beam == in-process {short(beam.steps)}"))
    return targets


def evaluate_quantiles(measurements: list[Measurement]) -> list[Target]:
    ratio = max(largest["bound_ratio"]["bound_ratio"] for m in measurements for largest in m.result["errors"].values())
    sizes = ", ".join(short(m.steps) for m in measurements)
    return [Target(f"quantiles vs np.quantile, {sizes} values", f"max err/bound {ratio:.3f}", "<= 1",
                   ratio <= BOUND_SLACK, "quantile bound")]


def evaluate_selections(selections: list[Selection]) -> list[Target]:
    targets = []
    for s in selections:
        check = s.agreement
        targets.append(Target(
            f"stats --where == recomputed, {s.episodes:,} episodes",
            f"counts {'equal' if check['equal'] else 'DIFFER'}, mean/std rel {check['moments_rel']:.1e}, "
            f"quantiles {check['identical']}/{check['quantiles']} identical",
            f"equal, <= {AGREE_REL:g}, within bound", check["agree"], f"--where == steps {short(s.episodes)}",
        ))
    timed = [s for s in selections if s.episodes <= WHERE_TARGET_EPISODES]
    if timed:
        s = max(timed, key=lambda s: s.episodes)
        first = s.merged.result["calls"][0]
        targets.append(Target(f"stats --where at {s.episodes:,} episodes, first call", f"{first:.2f} s",
                              f"< {WHERE_SECONDS} s", first < WHERE_SECONDS, f"--where {first:.2f} s"))
    return targets


# The sizes of a full run and of --quick (a check in about a minute).
SIZES = {
    "full": {"steps": 1_000_000, "small_steps": 100_000, "quantile_sizes": [10_000, 1_000_000, 10_000_000],
             "episodes_sizes": [10_000, 100_000]},
    "quick": {"steps": 100_000, "small_steps": 10_000, "quantile_sizes": [10_000, 100_000],
              "episodes_sizes": [2_000]},
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a check in about a minute: the --quick sizes below unless given")
    parser.add_argument("--steps", type=int, help="the large step count (default: 1000000; --quick: 100000)")
    parser.add_argument("--small-steps", type=int,
                        help="the small step count, RSS baseline of the target (default: 100000; --quick: 10000)")
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
    parser.add_argument("--quantile-sizes", type=int, nargs="+", metavar="N",
                        help="value counts of the quantile check (default: 10000 1000000 10000000; "
                             "--quick: 10000 100000)")
    parser.add_argument("--batch-rows", type=int, default=1_000_000,
                        help="rows per VectorStats.add in the quantile check and in the recomputation from the "
                             "curated steps (default: 1000000)")
    parser.add_argument("--episodes-sizes", type=int, nargs="+", metavar="N",
                        help="episodes of the synthetic lakes of the `stats --where` check (default: 10000 100000; "
                             "--quick: 2000)")
    parser.add_argument("--lake-steps", type=int, default=20,
                        help="steps per episode of those lakes (default: 20; at least 12)")
    parser.add_argument("--where", default="object = 'cube'",
                        help="the selection, a condition over the episodes (default: \"object = 'cube'\", "
                             "about half of them)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="calls of (a) and of (b) in each child, the first one included (default: 3)")
    add_run_arguments(parser, sorted(CHILD_MODES), "child logs, lakes", workdir=False)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--values", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--episodes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in SIZES["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.episode_steps < 5:
        parser.error("--episode-steps must be at least 5")
    if args.lake_steps < 12:
        parser.error("--lake-steps must be at least 12")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return
    merge_steps = args.merge_steps or args.small_steps
    heading = (f"robolake statistics benchmark: {args.small_steps:,} and {args.steps:,} synthetic steps, "
               f"{args.episode_steps}-step episodes, {ACTION_DIM}-d actions, {STATE_DIM}-d state, "
               f"spikes in {args.spike_rate:.0%} of episodes, seed {args.seed}")
    with parent_run(heading, "robolake-stats-bench-", args.keep) as run:
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
            results[config.key] = measure(config, synthetic_options(config, args), run.workdir)
            print_progress(results[config.key])
        quantiles = measure_quantiles(args, run.workdir)
        selections = [measure_selection(episodes, args, run.workdir) for episodes in args.episodes_sizes]
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
        print_quantiles(quantiles, args.batch_rows)
        print_selections(selections, args)
        targets = evaluate(results) + evaluate_quantiles(quantiles) + evaluate_selections(selections)
        print_targets(targets, "target / check")
    large, small = results.get("stats_large"), results.get("stats_small")
    throughput = ", ".join(
        f"{m.config.key} {m.steps_per_s:,.0f} steps/s" for m in results.values() if m.config.mode in ("stats", "beam")
    )
    rss_target = next((t for t in targets if t.name.startswith("stats: peak RSS")), None)
    verdict = (f"peak RSS {small.peak_rss / MB:.0f} -> {large.peak_rss / MB:.0f} MB "
               f"({large.peak_rss / small.peak_rss:.3f}x, goal <= {RSS_GROWTH_LIMIT:.2f}x) {rss_target.verdict}"
               if rss_target else "no RSS target (a stats run is missing)")
    speedups = ", ".join(f"{short(s.episodes)} episodes {s.speedup:.1f}x" for s in selections)
    print(f"\nsummary: {targets_met(targets)}; {verdict}; {throughput}; stats --where (b)/(a): {speedups}; "
          f"{run.seconds:.0f} s in all")


if __name__ == "__main__":
    main(sys.argv[1:])
