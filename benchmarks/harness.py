"""What every benchmark here shares: running a configuration in a child process while
sampling the peak RSS of its process tree, the child's result line, and PASS/MISS
targets. Benchmarks run as scripts (`python benchmarks/<name>.py`), so they import this
module by its plain name."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import psutil

MB = 1e6


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
