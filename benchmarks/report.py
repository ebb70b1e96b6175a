"""Benchmark `robolake validate` (the quality gate) and `robolake report` (the coverage
report) on synthetic lakes of two sizes, and how their time and memory grow with the data.

Writes two synthetic published versions with benchmarks/synthetic_lake.py (no
conversion: silver episodes, steps and curated steps, quarantine, filtered actions and
the gold manifest, statistics and features.json, in convert's layout), by default 1,000
episodes x 100 steps (100k steps) and 10,000 x 100 (1M steps), each in its own lake.
Each command then runs on each lake in a fresh child process (this script with the
hidden --child flag), through the function the CLI calls, and the child's own clock
covers only that call, after the imports (Great Expectations, DuckDB, Beam, pandas):

- validate: validation.gate.run: resolve the version, load the gate settings, run_gate
  (every check's DuckDB query and its Great Expectations validation, Data Docs
  included), write validate.json (and what else the gate writes), print the summary;
- report: validation.coverage.run: resolve, build_report (DuckDB queries, instruction
  diversity), write_report (coverage.html, coverage.json, coverage/*.parquet).

It prints figures from one run of each configuration:

1. seconds and peak RSS of each command at each size (RSS of the child's process tree,
   sampled every 0.1 s by the parent, benchmarks/harness.py, so it includes the
   interpreter and the imports: the child's RSS after its imports is shown beside it);
2. the growth from the small to the large lake: time and peak RSS ratios, against the
   data ratio (10x by default). Target: near-linear, time ratio <= 1.2x the data ratio
   (12x for 10x data) for each command;
3. where the time goes: the child times the checks' queries (validation.checks), the GX
   validations, the lake views' set-up and each step of build_report and write_report by
   wrapping those functions (a few microseconds each), largest first;
4. the targets, each PASS or MISS (printed only: the exit code is 0 either way):
   report under 60 s at the large size (the goal is set for 1M steps), and near-linear
   growth of both commands.

The lakes are read right after they are written, so from the page cache (a warm read).
One run of each: on a 2-core machine shared with other work, two default runs gave the
report at 1M steps 65 s and 43 s, so compare ratios and the breakdown rather than
absolute seconds near the 60 s line. The lakes take ~35 MB per 100k steps (frames are one repeated JPEG,
dictionary-encoded) and are deleted at the end unless --keep. Curated steps are one
row group per shard file, as convert writes them.

    python benchmarks/report.py                    # 100k and 1M steps: ~3 min on 2 cores
    python benchmarks/report.py --quick            # 200 x 50 and 2,000 x 50 steps: ~1 min
    python benchmarks/report.py --episodes 2000 --large-episodes 20000 --steps 50
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import psutil

from harness import (
    MB, Target, add_run_arguments, benchmark_parser, child_command, parent_run, print_result, print_targets,
    run_measured, targets_met,
)

COMMANDS = ("validate", "report")
REPORT_LIMIT_S = 60.0
LINEAR_SLACK = 1.2  # time ratio allowed per unit of data ratio (12x for 10x data)
QUICK = {"episodes": 200, "large_episodes": 2000, "steps": 50}
BREAKDOWN_ROWS = 8


# --- What the children measure ------------------------------------------------------------

TIMES: dict[str, float] = defaultdict(float)


def _timed(function, label: str):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - started
    return wrapper


def _wrap(module, name: str, label: str) -> None:
    """Time every call of module.name under `label` (left alone if the name is gone)."""
    function = getattr(module, name, None)
    if callable(function):
        setattr(module, name, _timed(function, label))


def _instrument_gate() -> None:
    from validation import gate

    gate.CHECKS = [_timed(build, f"query {build.__name__}") for build in gate.CHECKS]
    _wrap(gate, "connect", "lake views (connect)")
    _wrap(gate, "resolve", "resolve")
    runner = getattr(gate, "GxRunner", None)
    if runner is None:
        return
    runner.__init__ = _timed(runner.__init__, "GX context set-up")
    validate = runner.validate

    @functools.wraps(validate)
    def timed_validate(self, check, *args, **kwargs):
        started = time.perf_counter()
        try:
            return validate(self, check, *args, **kwargs)
        finally:
            TIMES[f"GX {check.name}"] += time.perf_counter() - started
    runner.validate = timed_validate


# validation.coverage's functions timed inside build_report and write_report
BUILD_FUNCTIONS = ("connect", "metadata_fields", "cube", "marginals", "gaps", "instruction_diversity",
                   "action_histograms", "camera_histograms", "under_sampled", "instruction_flags", "_table_or_empty")
WRITE_FUNCTIONS = ("coverage_document",)
BUILD_PARTS = (*BUILD_FUNCTIONS[1:-1], "lake views (connect)", "filtered / quarantine tables")
WRITE_PARTS = ("render_html", "coverage_document")


def _instrument_report() -> None:
    from validation import coverage, html_report

    labels = {"connect": "lake views (connect)", "_table_or_empty": "filtered / quarantine tables"}
    for name in (*BUILD_FUNCTIONS, *WRITE_FUNCTIONS, "build_report", "write_report", "resolve"):
        _wrap(coverage, name, labels.get(name, name))
    _wrap(html_report, "render_html", "render_html")


def _read_json(path: str) -> dict:
    import json

    with open(path, encoding="utf-8") as f:
        return json.load(f)


def child_validate(root: str, reference: str) -> dict:
    """validation.gate.run, the function behind `robolake validate`, timed whole."""
    from robolake.lake import Lake
    from validation import gate

    _instrument_gate()
    rss = psutil.Process().memory_info().rss
    started = time.perf_counter()
    gate.run([reference, "--lake", root])  # exit code 1 (gate failed) is an outcome, not an error
    seconds = time.perf_counter() - started
    name, _, version = reference.partition(":")
    document = _read_json(os.path.join(Lake(root).reports(name, version), "validate.json"))
    return {"seconds": seconds, "rss_after_imports": rss, "times": dict(TIMES),
            "outcome": f"{'PASSED' if document.get('passed') else 'FAILED'}, {document.get('expectations')} "
                       f"expectations, {document.get('failed_errors')} failed errors, "
                       f"{document.get('failed_warnings')} failed warnings"}


def child_report(root: str, reference: str) -> dict:
    """validation.coverage.run, the function behind `robolake report`, timed whole."""
    from robolake.lake import Lake
    from validation import coverage

    _instrument_report()
    rss = psutil.Process().memory_info().rss
    started = time.perf_counter()
    coverage.run([reference, "--lake", root])
    seconds = time.perf_counter() - started
    _subtract_nested(TIMES)
    name, _, version = reference.partition(":")
    document = _read_json(os.path.join(Lake(root).reports(name, version), "coverage.json"))
    totals = document.get("totals", {})
    return {"seconds": seconds, "rss_after_imports": rss, "times": dict(TIMES),
            "outcome": f"{totals.get('episodes')} episodes, {totals.get('steps')} steps, "
                       f"{document.get('under_sampled')} under-sampled, {document.get('gaps')} gaps, "
                       f"{document.get('near_duplicate_instruction_pairs')} near-duplicate pairs"}


def _subtract_nested(times: dict[str, float]) -> None:
    """build_report and write_report less the wrapped steps inside them."""
    for outer, parts in (("build_report", BUILD_PARTS), ("write_report", WRITE_PARTS)):
        if outer in times:
            times[f"{outer} (rest)"] = times.pop(outer) - sum(times.get(k, 0.0) for k in parts)


def run_child(command: str, root: str, reference: str) -> None:
    print_result((child_validate if command == "validate" else child_report)(root, reference))


# --- The parent: generate, measure, report ------------------------------------------------


@dataclass(frozen=True)
class SyntheticLake:
    key: str  # small / large
    root: str
    reference: str
    episodes: int
    steps: int  # silver steps
    curated_steps: int
    files: int
    mb: float


@dataclass(frozen=True)
class Measurement:
    command: str
    lake: SyntheticLake
    seconds: float
    peak_rss: int
    rss_after_imports: int
    times: dict
    outcome: str


def generate(workdir: str, key: str, episodes: int, steps: int, args: argparse.Namespace) -> SyntheticLake:
    from synthetic_lake import write_synthetic_lake

    root = os.path.join(workdir, f"lake-{key}")
    print(f"writing the {key} lake: {episodes} episodes x {steps} steps ...", flush=True)
    s = write_synthetic_lake(root, episodes, steps, seed=args.seed, steps_per_shard=args.steps_per_shard)
    print(f"  {s.line()}", flush=True)
    return SyntheticLake(key, root, s.reference, s.episodes, s.silver_steps, s.curated_steps, s.files, s.bytes / MB)


def measure(command: str, lake: SyntheticLake, workdir: str) -> Measurement:
    argv = child_command(__file__, command, "--lake", lake.root, "--dataset", lake.reference)
    result, peak = run_measured(argv, os.path.join(workdir, f"{command}-{lake.key}.log"), f"{command} {lake.key}")
    return Measurement(command, lake, result["seconds"], peak, result["rss_after_imports"], result["times"],
                       result["outcome"])


def print_table(measurements: list[Measurement]) -> None:
    print(f"\n{'command':<9} {'episodes':>8} {'steps':>9} {'files':>6} {'lake MB':>7} {'seconds':>8} "
          f"{'steps/s':>9} {'peak RSS':>9} {'after imports':>13}  outcome")
    for m in measurements:
        print(f"{m.command:<9} {m.lake.episodes:>8} {m.lake.steps:>9} {m.lake.files:>6} {m.lake.mb:>7.0f} "
              f"{m.seconds:>8.2f} {m.lake.steps / m.seconds:>9,.0f} {m.peak_rss / MB:>6.0f} MB "
              f"{m.rss_after_imports / MB:>10.0f} MB  {m.outcome}")


def growth(results: dict[tuple[str, str], Measurement], command: str) -> tuple[float, float, float]:
    small, large = results[command, "small"], results[command, "large"]
    return (large.lake.steps / small.lake.steps, large.seconds / small.seconds, large.peak_rss / small.peak_rss)


def print_growth(results: dict[tuple[str, str], Measurement]) -> None:
    print(f"\n{'growth small -> large':<22} {'data':>6} {'time':>7} {'peak RSS':>9}")
    for command in COMMANDS:
        data, seconds, rss = growth(results, command)
        print(f"{command:<22} {data:>5.1f}x {seconds:>6.2f}x {rss:>8.2f}x")


def print_breakdown(results: dict[tuple[str, str], Measurement]) -> None:
    """The largest timed parts at the large size, with the small size's figure beside."""
    for command in COMMANDS:
        small, large = results[command, "small"], results[command, "large"]
        rows = sorted(large.times.items(), key=lambda kv: -kv[1])
        print(f"\n{command}: where the time goes ({large.seconds:.2f} s at {large.lake.steps} steps, "
              f"{small.seconds:.2f} s at {small.lake.steps})")
        print(f"  {'part':<34} {'small s':>8} {'large s':>8} {'ratio':>6} {'share':>6}")
        for name, seconds in rows[:BREAKDOWN_ROWS]:
            before = small.times.get(name, 0.0)
            ratio = f"{seconds / before:>5.1f}x" if before > 1e-4 else f"{'-':>6}"
            print(f"  {name:<34} {before:>8.2f} {seconds:>8.2f} {ratio} {seconds / large.seconds:>6.0%}")
        for prefix, what in (("query ", "all check queries (DuckDB)"), ("GX ", "all GX validations + Data Docs")):
            parts = [k for k in large.times if k.startswith(prefix)]
            if parts:
                before, after = (sum(m.times.get(k, 0.0) for k in parts) for m in (small, large))
                print(f"  {what:<34} {before:>8.2f} {after:>8.2f} {after / max(before, 1e-9):>5.1f}x "
                      f"{after / large.seconds:>6.0%}")
        rest = large.seconds - sum(large.times.values())
        shown = sum(seconds for _, seconds in rows[BREAKDOWN_ROWS:])
        print(f"  {'other timed parts':<34} {'':>8} {shown:>8.2f}")
        print(f"  {'not wrapped':<34} {'':>8} {rest:>8.2f}")


def evaluate(results: dict[tuple[str, str], Measurement]) -> list[Target]:
    report = results["report", "large"]
    targets = [Target(
        f"report at {report.lake.steps:,} steps", f"{report.seconds:.1f} s", f"< {REPORT_LIMIT_S:.0f} s",
        report.seconds < REPORT_LIMIT_S, f"report {report.seconds:.1f} s",
    )]
    for command in COMMANDS:
        data, seconds, _ = growth(results, command)
        limit = LINEAR_SLACK * data
        targets.append(Target(
            f"{command} near-linear growth", f"{seconds:.2f}x time for {data:.0f}x data", f"<= {limit:.0f}x",
            seconds <= limit, f"{command} {seconds:.1f}x",
        ))
    return targets


def summary_line(results: dict[tuple[str, str], Measurement], targets: list[Target], seconds: float) -> str:
    large = {command: results[command, "large"] for command in COMMANDS}
    steps = large["report"].lake.steps
    return (f"summary: {targets_met(targets)}; at {steps:,} steps "
            f"validate {large['validate'].seconds:.1f} s / {large['validate'].peak_rss / MB:.0f} MB, report "
            f"{large['report'].seconds:.1f} s / {large['report'].peak_rss / MB:.0f} MB; {seconds:.0f} s in all")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--episodes", type=int, help="episodes of the small lake (default: 1000; --quick 200)")
    parser.add_argument("--large-episodes", type=int, help="episodes of the large lake (default: 10000; --quick 2000)")
    parser.add_argument("--steps", type=int, help="steps per episode, both lakes (default: 100; --quick 50)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['episodes']} and {QUICK['large_episodes']} episodes x {QUICK['steps']} steps")
    parser.add_argument("--steps-per-shard", type=int, default=1000, help="the spec's output.steps_per_shard (1000)")
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser, COMMANDS, "lakes, reports, child logs")
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else {"episodes": 1000, "large_episodes": 10000, "steps": 100}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steps < 12:
        parser.error("--steps must be at least 12 (the spec's min_steps is 10)")
    if not 1 <= args.episodes < args.large_episodes:
        parser.error("--episodes must be at least 1 and below --large-episodes")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.lake, args.dataset)
        return
    heading = (f"robolake validate and report: {args.episodes} and {args.large_episodes} episodes x {args.steps} "
               f"steps, {args.steps_per_shard} steps per shard")
    with parent_run(heading, "robolake-report-bench-", args.keep, args.workdir) as run:
        lakes = {key: generate(run.workdir, key, episodes, args.steps, args)
                 for key, episodes in (("small", args.episodes), ("large", args.large_episodes))}
        results: dict[tuple[str, str], Measurement] = {}
        plan = [(command, key) for key in lakes for command in COMMANDS]
        for i, (command, key) in enumerate(plan, 1):
            lake = lakes[key]
            print(f"[{i}/{len(plan)}] {command}, {lake.episodes} episodes, {lake.steps} steps ...", flush=True)
            m = results[command, key] = measure(command, lake, run.workdir)
            print(f"      {m.seconds:.2f} s, peak RSS {m.peak_rss / MB:.0f} MB: {m.outcome}", flush=True)
        print_table(list(results.values()))
        print_growth(results)
        print_breakdown(results)
        targets = evaluate(results)
        print_targets(targets)
    print("\n" + summary_line(results, targets, run.seconds))


if __name__ == "__main__":
    main(sys.argv[1:])
