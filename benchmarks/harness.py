"""What every benchmark here shares: peak-RSS sampling of a child process tree and
PASS/MISS targets. Benchmarks run as scripts (`python benchmarks/<name>.py`), so they
import this module by its plain name."""

from __future__ import annotations

import subprocess
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
