"""What every benchmark here shares: its parser's common options, the parent's frame
around its measurements (clock, scratch folder, heading, clean-up), running a
configuration in a child process while sampling the peak RSS of its process tree, the
child's result line, PASS/MISS targets, and the commands and Markdown tables of the
benchmarks that drive the demo pipeline. Benchmarks run as scripts
(`python benchmarks/<name>.py`), so they import this module by its plain name."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from robolake.arguments import ArgumentParser

MB = 1e6


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser, described by the first paragraph of its docstring."""
    return ArgumentParser(description=doc.split("\n\n")[0])


def add_run_arguments(parser: argparse.ArgumentParser, children: Iterable[str], keeps: str,
                      workdir: bool = True) -> None:
    """The options that follow a benchmark's own: --workdir (where it takes one), --keep
    (`keeps` says what the workdir holds), and the hidden --child, what a child measures."""
    if workdir:
        parser.add_argument("--workdir", help="scratch folder, new or empty (default: a fresh temporary folder)")
    parser.add_argument("--keep", action="store_true", help=f"keep the workdir ({keeps})")
    parser.add_argument("--child", choices=children, help=argparse.SUPPRESS)


def child_command(script: str, child: str, *options: str) -> list[str]:
    """The command that runs `script` (a benchmark's __file__) as a child measuring `child`."""
    return [sys.executable, os.path.abspath(script), "--child", child, *options]


def tree_rss(root: psutil.Process) -> int:
    """RSS of a process and all its descendants, summed (shared pages count once per process)."""
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def wait_sampling_rss(child: subprocess.Popen, interval_s: float) -> int:
    """Wait for the child to exit, sampling every interval_s; returns the peak RSS of its process tree."""
    root, peak = psutil.Process(child.pid), 0
    while True:
        peak = max(peak, tree_rss(root))
        try:
            child.wait(timeout=interval_s)
            return peak
        except subprocess.TimeoutExpired:
            continue


RESULT_PREFIX = "BENCH_RESULT "


def print_result(result: dict) -> None:
    """What a child prints last: its measured figures as one JSON line (numpy scalars
    allowed), with `max_rss`, the kernel's high-water mark of its RSS (ru_maxrss)."""
    result = {**result, "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # KiB on Linux
    print(RESULT_PREFIX + json.dumps(result, default=lambda x: x.item()), flush=True)


def run_measured(command: list[str], log_path: str, label: str, interval_s: float = 0.1) -> tuple[dict, int]:
    """Run `command` with its output in log_path, sampling its tree's RSS every interval_s;
    returns the result the child printed last (print_result) and the peak RSS. Exits with
    the log's tail if the child failed."""
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        peak = wait_sampling_rss(child, interval_s)
    with open(log_path) as log:
        lines = log.read().splitlines()
    results = [line[len(RESULT_PREFIX):] for line in lines if line.startswith(RESULT_PREFIX)]
    if child.returncode != 0 or not results:
        tail = "\n".join(lines[-30:])
        raise SystemExit(f"{label}: the child failed (exit {child.returncode}); end of {log_path}:\n{tail}")
    return json.loads(results[-1]), peak


def prepare_workdir(path: str | None, prefix: str) -> str:
    """The scratch folder: a new temporary one, or `path` if it is new or empty (it is
    deleted at the end, so a folder holding anything is refused)."""
    if path is None:
        return tempfile.mkdtemp(prefix=prefix)
    if os.path.isdir(path) and os.listdir(path):
        raise SystemExit(f"--workdir {path} is not empty (it is deleted at the end); name a new or empty folder")
    os.makedirs(path, exist_ok=True)
    return path


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def keep_or_remove(workdir: str, keep: bool) -> None:
    """The scratch folder is deleted at the end unless --keep."""
    if keep:
        print(f"\nkept {workdir}")
    else:
        shutil.rmtree(workdir)


@dataclass(frozen=True)
class Run:
    """The parent's run: its scratch folder and when it started."""

    workdir: str
    started: float

    @property
    def seconds(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started


@contextmanager
def parent_run(heading: str, prefix: str, keep: bool, workdir: str | None = None) -> Iterator[Run]:
    """The parent's frame around its measurements: the clock starts, the scratch folder is
    prepared (prepare_workdir: `workdir`, or a new one named by `prefix`), the heading and
    the machine are printed; when the block ends the folder is deleted unless `keep`. A
    block that raises leaves the folder, with the child logs its message names."""
    started = time.perf_counter()
    run = Run(prepare_workdir(workdir, prefix), started)
    print(heading)
    print_machine(run.workdir)
    yield run
    keep_or_remove(run.workdir, keep)


@dataclass(frozen=True)
class Throughput:
    """Steps and bytes written in `seconds` (base of a benchmark's measurement)."""

    steps: int
    bytes: int
    seconds: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    goal: str
    met: bool
    short: str = ""  # for a summary line

    @property
    def verdict(self) -> str:
        return "PASS" if self.met else "MISS"


def print_targets(targets: list[Target], heading: str = "target") -> None:
    """One aligned row per target: name, measured, goal, PASS/MISS."""
    widths = [max(len(heading), *(len(t.name) for t in targets)), max(8, *(len(t.measured) for t in targets)),
              max(4, *(len(t.goal) for t in targets))]
    print(f"\n{heading:<{widths[0]}} {'measured':<{widths[1]}} {'goal':<{widths[2]}} result")
    for t in targets:
        print(f"{t.name:<{widths[0]}} {t.measured:<{widths[1]}} {t.goal:<{widths[2]}} {t.verdict}")


def print_machine(workdir: str) -> None:
    """The machine a benchmark ran on, and its scratch folder."""
    print(f"{psutil.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, workdir {workdir}\n")


def targets_met(targets: list[Target]) -> str:
    """The summary line's opening: how many targets were met, and each one's verdict."""
    verdicts = ", ".join(f"{t.short} {t.verdict}" for t in targets)
    return f"{sum(t.met for t in targets)}/{len(targets)} targets met: {verdicts}"


# ---------------------------------------------------------------- benchmarks that drive the demo pipeline


def run_command(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with `env` on top of this process's environment, printing it first;
    with `check`, a failure ends the benchmark with the ends of its output."""
    print("$", " ".join(args), flush=True)
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env})
    if check and done.returncode:
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def markdown_table(rows: list[dict]) -> str:
    """Rows of the same keys as a Markdown table, the keys as its header."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows])


def write_measured_doc(path: Path, title: str, doc: str, body: str) -> None:
    """A docs/ page of measured results: the title, the benchmark's docstring after its
    first paragraph, then `body`."""
    path.write_text(f"# {title}\n\n" + doc.split("\n\n", 1)[1] + "\n\n" + body)
