"""Reader pins: a command that reads a build says so in the lake, so that `robolake gc`
keeps the build while it runs.

mix, edit, train, evaluate and lerobot run under `reading(command)` (a decorator or a
context manager). Every version that `Lake.resolve` opens meanwhile is pinned: a file
versions/<dataset>/<version>/pins/<build>.<pin>.json holding the command, host, pid and a
heartbeat that a background thread refreshes (robolake/holders.py), deleted when the
command ends. gc keeps every build a live pin names and deletes stale pins: a killed
reader does not keep a build forever.

No lock is needed: a reader writes its pin, then reads the pointer again and starts over
if the build was replaced meanwhile; gc reads a version's pointer, then its pins. A build
gc saw replaced was replaced after the reader's second read, so after its pin was written."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from robolake import progress
from robolake.holders import HEARTBEAT_S, new_holder, stale_reason, well_formed
from robolake.staging import write_atomic
from robolake.storage import delete_tree, join, list_files, read_json


class Readers:
    """The pins one command holds, with the thread that heartbeats them."""

    def __init__(self, command: str):
        self.command = command
        self.held: dict[str, dict] = {}  # pin path -> its holder document
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None

    def pin(self, folder: str, build: str) -> str | None:
        """Pin `build` (a pin file in `folder`); None when the lake cannot be written (a
        read-only lake: nothing can remove the build from here either, so read on)."""
        path = join(folder, f"{build}.{uuid.uuid4().hex[:12]}.json")
        holder = new_holder(build, self.command)
        try:
            write_atomic(path, json.dumps(holder).encode())
        except OSError as exc:
            progress.console.print(f"warning: could not pin build {build} ({exc}); `robolake gc` may remove it "
                                   f"while {self.command} reads it")
            return None
        with self._lock:
            self.held[path] = holder
        if self._beater is None:
            self._beater = threading.Thread(target=self._beat, daemon=True, name="robolake-pins")
            self._beater.start()
        return path

    def unpin(self, path: str) -> None:
        with self._lock:
            self.held.pop(path, None)
        delete_tree(path)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                for path, holder in self.held.items():
                    holder["heartbeat"] = time.time()
                    write_atomic(path, json.dumps(holder).encode())

    def close(self) -> None:
        """Stop the heartbeat (waiting out a write in flight) and delete every pin."""
        self._stop.set()
        if self._beater is not None:
            self._beater.join()
        for path in list(self.held):
            self.unpin(path)


_open: list[Readers] = []  # the commands reading in this process, innermost last


@contextmanager
def reading(command: str) -> Iterator[Readers]:
    """While the block (or the decorated function) runs, every build `Lake.resolve`
    opens in this process stays pinned."""
    readers = Readers(command)
    _open.append(readers)
    try:
        yield readers
    finally:
        _open.remove(readers)
        readers.close()


def pin(folder: str, build: str) -> str | None:
    """Pin `build` for the innermost `reading` block; None outside one."""
    return _open[-1].pin(folder, build) if _open else None


def unpin(path: str) -> None:
    _open[-1].unpin(path)


def live_pins(folder: str, remove_stale: bool) -> dict[str, list[dict]]:
    """build id -> the live pins in `folder` naming it. A stale or unreadable pin (its
    writer writes it whole, so only damage makes one unreadable) keeps nothing, and is
    deleted when `remove_stale`."""
    live: dict[str, list[dict]] = defaultdict(list)
    for path in list_files(join(folder, "*.json")):
        try:
            holder = read_json(path)
        except (OSError, ValueError):  # released meanwhile, or damaged
            holder = None
        if well_formed(holder) and stale_reason(holder) is None:
            live[holder["build"]].append(holder)
        elif remove_stale:
            delete_tree(path)
    return live
