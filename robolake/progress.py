"""Progress of distributed work: workers drop small JSON counters into a folder,
the driver sums them into a live progress bar (works on any runner whose workers
can write to the lake)."""

from __future__ import annotations

import json
import threading

from apache_beam.io.filesystems import FileSystems
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robolake.storage import join, write_bytes

console = Console(stderr=True, soft_wrap=True)  # messages stay one line in logs, whatever the width


def report(progress_dir: str, key: str, **counters: int) -> None:
    """Record the counters of one unit of work (overwrites its previous report)."""
    write_bytes(join(progress_dir, f"{key}.json"), json.dumps(counters).encode())


def totals(progress_dir: str) -> dict[str, int]:
    """Sum of every counter over all reports so far."""
    summed: dict[str, int] = {}
    for match in FileSystems.match([join(progress_dir, "*.json")])[0].metadata_list:
        try:
            with FileSystems.open(match.path) as f:
                counters = json.loads(f.read())
        except (OSError, ValueError):
            continue  # being rewritten right now; next poll reads it
        for name, value in counters.items():
            summed[name] = summed.get(name, 0) + value
    return summed


class ProgressBar:
    """Context manager: a bar of `done` of `total` episodes read from progress reports."""

    def __init__(self, progress_dir: str, description: str, interval_s: float = 0.5):
        self.progress_dir = progress_dir
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._progress = Progress(
            TextColumn(description),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("episodes  {task.fields[steps]} steps"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(description, total=None, steps=0)
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _update(self) -> None:
        counts = totals(self.progress_dir)
        self._progress.update(
            self._task,
            total=counts.get("planned") or None,
            completed=counts.get("written", 0) + counts.get("quarantined", 0),
            steps=counts.get("steps", 0),
        )

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._update()

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self._progress.stop()
