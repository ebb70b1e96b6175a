"""Project the cost of an Open X-Embodiment-size conversion from rates measured here.

Converts N synthetic robomimic episodes (the inputs of benchmarks/convert.py: front
480x640 and wrist 240x320 cameras -> 256x256 JPEG q95, 100 steps per episode) as a
first conversion (sha256 of every raw file included), each run in a fresh child process:

1. Beam's FnApiRunner, `--direct_running_mode=multi_processing`, with 1 and 2 workers;
2. Beam's DaskRunner (`--runner=DaskRunner`, a LocalCluster of `--direct_num_workers`),
   with 1 and 2 workers; a run that fails is reported with its reason, and the
   projection then stands on FnApiRunner alone;
3. FnApiRunner with 1 worker on N/4 episodes: does a worker's memory grow with the data?
4. benchmarks/convert.py's ceiling (the image work alone, in 1 process and split over 2):
   what this machine gives 2 processes, the bound on any 2-worker speedup here.

Measured per run: steps/s, steps/s per worker, CPU seconds per step (the child and
every process under it), gold bytes per step, and peak RSS: of the busiest worker
process (each process under the child sampled every 0.1 s by the child; Dask's nannies
included, the largest one counts), of the driver (the child itself) and of the whole
tree (summed, sampled by the parent as benchmarks/convert.py does).

From these it projects the job whose constants open this file (about 1e8 steps, 1M
episodes, two cameras): worker-hours, core-hours, wall time on 100 and 1000 workers
(ideal linear scaling, and the measured 1 -> 2 efficiency compounded per doubling),
peak memory per worker and the gold size. The text is printed and written to
docs/scale.md between the markers `<!-- scale-projection:start -->` and
`<!-- scale-projection:end -->` (the section is appended when they are absent; the
rest of the page is left as it is).

    make bench                          # runs: python benchmarks/scale.py
    python benchmarks/scale.py --quick  # ~1 minute check; its figures are not a projection
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads; the children inherit it

import psutil  # noqa: E402

import convert as convert_bench  # noqa: E402  benchmarks/convert.py: its inputs, spec and ceiling
from harness import (  # noqa: E402
    MB, Throughput, add_run_arguments, benchmark_parser, child_command, cpu_seconds, markdown_table, parent_run,
    print_result, run_measured,
)
from pipelines.build import convert  # noqa: E402
from robolake.lake import Lake  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs/scale.md"
START_MARKER, END_MARKER = "<!-- scale-projection:start -->", "<!-- scale-projection:end -->"

# --- The job projected: an Open X-Embodiment-size conversion ------------------------------
# Open X-Embodiment (Open X-Embodiment Collaboration, arXiv:2310.08864): "more than 1M
# real robot trajectories" from 22 embodiments. The step count is an assumption: ~100
# steps per episode (the length converted here), so ~1e8 steps. Every episode is assumed
# to carry two cameras encoded like the sample's (256x256 JPEG q95), so the per-step
# rate and bytes measured here carry over; real datasets differ in camera count, source
# resolution and episode length, and the projection scales linearly with each.
OXE_EPISODES = 1_000_000
OXE_STEPS = 100_000_000
OXE_CAMERAS = 2
PROJECTED_WORKERS = (100, 1000)

RUNNERS = {
    "fnapi": ("FnApiRunner, multi_processing",
              lambda workers: ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]),
    "dask": ("DaskRunner, LocalCluster", lambda workers: ["--runner=DaskRunner", f"--direct_num_workers={workers}"]),
}
OPTIONAL_RUNNERS = {"dask"}  # a failed run is reported and left out of the projection; any other ends the benchmark
QUICK = {"episodes": 4, "steps": 20}


# --- What a child measures ------------------------------------------------------------------


class DescendantSampler:
    """Every interval_s, in a thread: each process under this one, its peak RSS and its
    latest CPU time (a process's CPU time is lost from this count only for its last interval)."""

    def __init__(self, interval_s: float = 0.1):
        self.interval_s = interval_s
        self.peak_rss: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DescendantSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        for process in psutil.Process().children(recursive=True):
            try:
                rss, times = process.memory_info().rss, process.cpu_times()
            except psutil.Error:  # it exited meanwhile
                continue
            self.peak_rss[process.pid] = max(self.peak_rss.get(process.pid, 0), rss)
            self.cpu[process.pid] = times.user + times.system


def own_cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def child_convert(runner: str, input_dir: str, out_dir: str, workers: int, timeout_s: int) -> None:
    """One first conversion of input_dir on `runner` with `workers`; prints its figures."""
    def give_up(*_) -> None:
        raise TimeoutError(f"no result after {timeout_s} s (--child-timeout)")

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(timeout_s)  # a hung runner ends this child, and the parent reports it
    spec, beam_args = convert_bench.tabletop_spec(input_dir), RUNNERS[runner][1](workers)
    rusage_before, own_before, started = cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    with DescendantSampler() as sampler:
        counts = convert(spec, Lake(out_dir), beam_args).manifest["counts"]
    seconds = time.perf_counter() - started
    sampled_cpu = own_cpu_seconds() - own_before + sum(sampler.cpu.values())
    print_result({
        "episodes": counts["episodes_written"], "steps": counts["steps_written"], "bytes": counts["bytes_written"],
        "seconds": seconds,
        # waited-for children count in the rusage figure, every sampled one in the other: the larger
        "cpu_seconds": max(cpu_seconds() - rusage_before, sampled_cpu),
        "worker_peak_rss": max(sampler.peak_rss.values(), default=0),
        "processes": len(sampler.peak_rss),
    })


# --- The parent: measure ----------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One configuration: a runner (a RUNNERS key) with this many workers on this many episodes."""

    runner: str
    workers: int
    episodes: int

    @property
    def label(self) -> str:
        return f"{RUNNERS[self.runner][0]}, {self.workers} worker{'s' * (self.workers > 1)}"


@dataclass(frozen=True)
class Measurement(Throughput):
    run: Run
    episodes: int
    cpu_seconds: float
    worker_peak_rss: int  # the largest process under the driver
    driver_peak_rss: int  # the child itself (ru_maxrss)
    tree_peak_rss: int  # the child and everything under it, summed
    processes: int

    @property
    def per_worker(self) -> float:
        return self.steps_per_s / self.run.workers

    @property
    def cores(self) -> float:
        """CPU seconds over wall seconds: the cores the run kept busy."""
        return self.cpu_seconds / self.seconds

    @property
    def cpu_per_step(self) -> float:
        return self.cpu_seconds / self.steps

    @property
    def bytes_per_step(self) -> float:
        return self.bytes / self.steps


def measure(run: Run, input_dir: str, workdir: str, timeout_s: int) -> Measurement | str:
    """Run one configuration in a fresh child. A failed child of an optional runner gives the
    reason, as a string; any other ends the benchmark with its log's tail (the workdir is kept)."""
    out_dir = tempfile.mkdtemp(prefix=f"{run.runner}{run.workers}-{run.episodes}-", dir=workdir)
    command = child_command(__file__, run.runner, "--input", input_dir, "--out", out_dir,
                            "--workers", str(run.workers), "--child-timeout", str(timeout_s))
    try:
        result, tree_peak = run_measured(command, f"{out_dir}.log", run.label)
    except SystemExit as failed:  # run_measured ends with the log's tail
        if run.runner not in OPTIONAL_RUNNERS:
            raise
        return failure_reason(str(failed))
    return Measurement(run=run, driver_peak_rss=result.pop("max_rss"), tree_peak_rss=tree_peak, **result)


def failure_reason(message: str, limit: int = 300) -> str:
    """From run_measured's message (the child's exit status, then its log's tail): the log's
    last error line, else the exit status."""
    first, *tail = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [line for line in tail if "Error" in line or "Exception" in line]
    reason = errors[-1] if errors else first.split(";")[0]
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


@dataclass(frozen=True)
class Ceiling:
    """benchmarks/convert.py's ceiling: the image work alone, 1 process and 2."""

    one: float  # steps/s
    two: float

    @property
    def speedup(self) -> float:
        return self.two / self.one


def measure_ceiling(episodes: int, input_dir: str, workdir: str) -> Ceiling:
    rates = []
    for workers in (1, 2):
        config = convert_bench.Config(f"ceiling{workers}", f"ceiling, {workers} process(es)", "ceiling", episodes,
                                      workers=workers)
        rates.append(convert_bench.measure(config, input_dir, workdir).steps_per_s)
    return Ceiling(*rates)


def add_growth_input(inputs: dict[int, str], episodes: int, workdir: str) -> int | None:
    """A quarter of the input's files, linked into a folder of their own and added to `inputs`
    (nothing written again); its episode count, or None where the input is a single file."""
    files = convert_bench.input_files(inputs[episodes])
    if len(files) < 2:
        return None
    count = max(1, len(files) // 4)
    folder = os.path.join(workdir, f"input-first-{count}-files")
    os.makedirs(folder)
    for path in files[:count]:
        os.symlink(path, os.path.join(folder, os.path.basename(path)))
    inputs[count * convert_bench.EPISODES_PER_FILE] = folder  # every file but the last is full
    return count * convert_bench.EPISODES_PER_FILE


# --- The projection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """The OXE-size job on one runner, from its 1- and 2-worker measurements."""

    one: Measurement
    two: Measurement

    @property
    def speedup(self) -> float:
        return self.two.steps_per_s / self.one.steps_per_s

    @property
    def per_doubling(self) -> float:
        """Parallel efficiency per doubling of workers: the 2-worker speedup over 2, at most 1."""
        return min(1.0, self.speedup / 2)

    def efficiency(self, workers: int) -> float:
        return self.per_doubling ** math.log2(workers)

    @property
    def worker_hours(self) -> float:
        """One worker's hours for the whole job at the 1-worker rate."""
        return OXE_STEPS / self.one.steps_per_s / 3600

    @property
    def core_hours(self) -> float:
        return OXE_STEPS * self.one.cpu_per_step / 3600

    def wall_hours(self, workers: int, efficiency: float = 1.0) -> float:
        return self.worker_hours / (workers * efficiency)


def projection(one: Measurement | str, two: Measurement | str) -> Projection | str:
    """The runner's projection, or the reason its 1- or 2-worker run gave no figures."""
    failed = [m for m in (one, two) if isinstance(m, str)]
    return failed[0] if failed else Projection(one, two)


def duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days" if hours < 2400 else f"{hours / 24:,.0f} days"


def size(n_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes / 1e3:.1f} kB"


def measured_rows(measurements: list[Measurement | str], runs: list[Run]) -> list[dict]:
    rows = []
    for run, m in zip(runs, measurements):
        if isinstance(m, str):
            rows.append({"run": f"{run.label}, {run.episodes} episodes", "steps/s": "not available", **dict.fromkeys(
                ["steps/s per worker", "cores", "CPU s/step", "gold kB/step", "worker peak RSS", "driver peak RSS",
                 "tree peak RSS"], "")})
            continue
        rows.append({
            "run": f"{run.label}, {run.episodes} episodes", "steps/s": f"{m.steps_per_s:.1f}",
            "steps/s per worker": f"{m.per_worker:.1f}", "cores": f"{m.cores:.2f}",
            "CPU s/step": f"{m.cpu_per_step:.3f}",
            "gold kB/step": f"{m.bytes_per_step / 1e3:.1f}", "worker peak RSS": f"{m.worker_peak_rss / MB:.0f} MB",
            "driver peak RSS": f"{m.driver_peak_rss / MB:.0f} MB", "tree peak RSS": f"{m.tree_peak_rss / MB:.0f} MB",
        })
    return rows


def projection_rows(projections: dict[str, Projection | str]) -> list[dict]:
    """One column per runner; a runner without figures says why."""
    labels = {runner: RUNNERS[runner][0].split(",")[0] for runner in projections}
    lines: list[tuple[str, callable]] = [
        ("1 -> 2 workers: speedup, efficiency per doubling",
         lambda p: f"{p.speedup:.2f}x, {p.per_doubling:.2f}"),
        ("worker-hours (1-worker rate)", lambda p: f"{p.worker_hours:,.0f}"),
        ("core-hours (measured CPU s/step)", lambda p: f"{p.core_hours:,.0f}"),
    ]
    for workers in PROJECTED_WORKERS:
        lines += [
            (f"wall, {workers} workers, ideal linear", lambda p, w=workers: duration(p.wall_hours(w))),
            (f"wall, {workers} workers, measured efficiency",
             lambda p, w=workers: f"{duration(p.wall_hours(w, p.efficiency(w)))} (efficiency {p.efficiency(w):.2g})"),
        ]
    lines += [
        (f"worker-hours billed on {PROJECTED_WORKERS[-1]} workers, measured efficiency",
         lambda p: f"{p.worker_hours / p.efficiency(PROJECTED_WORKERS[-1]):,.0f}"),
        ("peak RSS per worker (largest at 1 or 2 workers)",
         lambda p: f"{max(p.one.worker_peak_rss, p.two.worker_peak_rss) / MB:.0f} MB"),
        ("gold size", lambda p: size(OXE_STEPS * p.one.bytes_per_step)),
    ]
    rows = []
    for name, value in lines:
        row = {"projected": name}
        for runner, p in projections.items():
            row[labels[runner]] = value(p) if isinstance(p, Projection) else "not available"
        rows.append(row)
    return rows


def memory_note(base: Measurement | str, growth: Measurement | str | None) -> str:
    if growth is None:
        return ("Peak memory per worker at 1M episodes is *assumed* flat (the pipeline streams episodes); "
                "there was no growth run (--quick, or an input of one file).")
    if isinstance(base, str) or isinstance(growth, str):
        return "Peak memory per worker at 1M episodes is *assumed* flat: the growth runs did not both finish."
    worker = base.worker_peak_rss / growth.worker_peak_rss - 1
    driver = base.driver_peak_rss / growth.driver_peak_rss - 1
    return (
        f"Peak memory per worker, *measured* here from {growth.episodes} to {base.episodes} episodes on 1 "
        f"FnApiRunner worker: worker {growth.worker_peak_rss / MB:.0f} -> {base.worker_peak_rss / MB:.0f} MB "
        f"({worker:+.0%}), driver {growth.driver_peak_rss / MB:.0f} -> {base.driver_peak_rss / MB:.0f} MB "
        f"({driver:+.0%}). Flat at 1M episodes is an *assumption* resting on that (the workers stream "
        f"episodes); FnApiRunner's driver also holds the data between stages, which on a cluster runner is "
        f"the shuffle service's."
    )


def report(args: argparse.Namespace, runs: list[Run], measurements: list[Measurement | str],
           projections: dict[str, Projection | str], growth: Measurement | str | None,
           ceiling: Ceiling | None) -> str:
    """The measured inputs, the projection and its assumptions, as Markdown."""
    cameras = " + ".join(f"{name} {h}x{w}" for name, (h, w) in convert_bench.CAMERAS.items())
    options = "--quick" if args.quick else f"--episodes {args.episodes} --steps {args.steps}"
    lines = [
        "## Cost model: an Open X-Embodiment-size conversion",
        "",
        f"Written by `python benchmarks/scale.py {options}` (benchmarks/scale.py; [benchmarks.md](benchmarks.md)) on "
        f"{psutil.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM. Measured: "
        f"{args.episodes} synthetic episodes x {args.steps} steps, {cameras} -> 256x256 JPEG q95, first "
        "conversions (sha256 of the raw files included), one run per row, each in a fresh process.",
        "",
    ]
    if args.quick:
        lines += ["**--quick: a check of the script. Start-up dominates runs this small; the figures below are "
                  "not a projection.**", ""]
    lines += [markdown_table(measured_rows(measurements, runs)), ""]
    failed = [f"- {run.label}: {m}" for run, m in zip(runs, measurements) if isinstance(m, str)]
    if failed:
        lines += ["Runs that failed (their runner is left out of the projection):", "", *failed, ""]
    if ceiling:
        lines += [f"This machine gave the image work alone {ceiling.speedup:.2f}x on 2 processes "
                  f"({ceiling.one:.0f} -> {ceiling.two:.0f} steps/s, benchmarks/convert.py's ceiling): the bound "
                  f"on any 2-worker speedup measured here.", ""]
    lines += [
        f"Projected: {OXE_STEPS:,} steps, {OXE_EPISODES:,} episodes, {OXE_CAMERAS} cameras each "
        f"(Open X-Embodiment: >1M trajectories, arXiv:2310.08864; ~100 steps per episode is assumed).",
        "",
        markdown_table(projection_rows(projections)),
        "",
        "Assumptions:",
        "",
        "- A worker is one process converting at the measured 1-worker rate (it includes Beam's start-up and the "
        "driver's work, a fixed cost that a larger job spreads thinner). Core-hours use the CPU time of the "
        "driver and every worker process per step (the `cores` column: a 1-worker run also keeps its driver busy).",
        "- Ideal linear: N workers convert N times as fast. Measured efficiency: the 1 -> 2 worker speedup over 2 "
        "(at most 1) is taken as the efficiency of every doubling, compounded over log2(N) doublings; on "
        "this machine's shared cores the 1 -> 2 step is bounded by the machine (the ceiling, where measured), so the "
        "truth on a cluster of separate machines is likely between the two.",
        "- The same cameras, resolution and JPEG quality as measured: the rate and the bytes scale linearly "
        "with camera count and steps.",
        f"- {memory_note(measurements[0], growth)}",
        "- Gold size: the measured gold bytes per step (TFRecord shards) x the projected steps.",
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace the text between the markers in `path`, or append the marked section."""
    page = path.read_text()
    section = f"{START_MARKER}\n{text}{END_MARKER}\n"
    start, end = page.find(START_MARKER), page.find(END_MARKER)
    if start >= 0 and end > start:
        page = page[:start] + section + page[end + len(END_MARKER):].lstrip("\n")
    else:
        page = page.rstrip("\n") + "\n\n" + section
    path.write_text(page)


# --- Main -------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--episodes", type=int, default=120, help="N, episodes per run (default: 120)")
    parser.add_argument("--steps", type=int, default=100, help="steps per episode (default: 100, as convert.py)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['episodes']} episodes x {QUICK['steps']} steps, no growth or ceiling run")
    parser.add_argument("--doc", type=Path, default=DOC, help="the page whose marked section is written "
                        "(default: docs/scale.md)")
    parser.add_argument("--child-timeout", type=int, help="seconds before a run is given up "
                        "(default: 3600; with --quick, 300)")
    add_run_arguments(parser, sorted(RUNNERS), "inputs, outputs, child logs")
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.steps = QUICK["episodes"], QUICK["steps"]
    if args.child_timeout is None:
        args.child_timeout = 300 if args.quick else 3600
    return args


def measure_runs(runs: list[Run], inputs: dict[int, str], workdir: str, timeout_s: int) -> list[Measurement | str]:
    measurements = []
    for i, run in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {run.label}, {run.episodes} episodes ...", flush=True)
        m = measure(run, inputs[run.episodes], workdir, timeout_s)
        measurements.append(m)
        print(f"      {m}" if isinstance(m, str) else
              f"      {m.steps} steps in {m.seconds:.1f} s: {m.steps_per_s:.1f} steps/s, "
              f"worker peak RSS {m.worker_peak_rss / MB:.0f} MB", flush=True)
    return measurements


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child:
        child_convert(args.child, args.input, args.out, args.workers, args.child_timeout)
        return
    heading = f"robolake scale benchmark: {args.episodes} episodes x {args.steps} steps -> an OXE-size projection"
    with parent_run(heading, "robolake-scale-", args.keep, args.workdir) as parent:
        inputs = convert_bench.generate_inputs(parent.workdir, [args.episodes], args.steps)
        growth_episodes = None if args.quick else add_growth_input(inputs, args.episodes, parent.workdir)
        runs = [Run(runner, workers, args.episodes) for runner in RUNNERS for workers in (1, 2)]
        if growth_episodes:
            runs.append(Run("fnapi", 1, growth_episodes))
        measurements = measure_runs(runs, inputs, parent.workdir, args.child_timeout)
        ceiling = None
        if not args.quick:
            print("ceiling: the image work alone, 1 and 2 processes ...", flush=True)
            ceiling = measure_ceiling(args.episodes, inputs[args.episodes], parent.workdir)
        by_run = dict(zip(runs, measurements))
        projections = {runner: projection(by_run[Run(runner, 1, args.episodes)], by_run[Run(runner, 2, args.episodes)])
                       for runner in RUNNERS}
        growth = by_run.get(Run("fnapi", 1, growth_episodes)) if growth_episodes else None
        text = report(args, runs, measurements, projections, growth, ceiling)
        print("\n" + text)
        write_section(args.doc, text)
        print(f"written to {args.doc} between {START_MARKER} and {END_MARKER}; {parent.seconds:.0f} s in all")


if __name__ == "__main__":
    main(sys.argv[1:])
