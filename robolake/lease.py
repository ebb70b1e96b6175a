"""One writer per dataset version: a lease file in versions/<dataset>/<version>/.

A build takes the lease before it plans anything (an exclusive create of lease.json,
holding host, pid, start time and a heartbeat), refreshes the heartbeat while it runs,
and gives it back when it ends. A second build of the version ends with one message
naming the holder. A lease is stale when its process is gone (same host) or its
heartbeat is older than STALE_AFTER_S (robolake/holders.py); the next build takes it over
and says so. An empty, corrupt or wrong-shaped lease.json (a full disk, a hand edit) is
taken over the same way once its file is older than STALE_AFTER_S, naming the file."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field

from robolake import progress
from robolake.errors import RobolakeError
from robolake.holders import HEARTBEAT_S, STALE_AFTER_S, new_holder, stale_reason, well_formed
from robolake.lake import Lake
from robolake.staging import write_atomic
from robolake.storage import create_exclusive, delete_tree, exists, is_remote, modified_at, read_json


class UnreadableLease(RobolakeError):
    """A lease.json that is empty, not JSON, or JSON without a lease's fields."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: unreadable lease ({problem})")
        self.path, self.problem = path, problem


def describe(holder: dict) -> str:
    return (f"build {holder.get('build')} ({holder.get('command', 'robolake')}, pid {holder.get('pid')} on "
            f"{holder.get('host')}, started {holder.get('started_at')})")


def read_holder(lake: Lake, dataset: str, version: str) -> dict | None:
    """The lease's holder, None when there is no lease; UnreadableLease for a damaged one."""
    path = lake.lease(dataset, version)
    try:
        holder = read_json(path) if exists(path) else None
    except OSError:  # removed or being replaced between the two calls
        return None
    except ValueError:
        raise UnreadableLease(path, "empty or not JSON") from None
    if holder is not None and not well_formed(holder):
        raise UnreadableLease(path, "JSON without a lease's build, host, pid and heartbeat")
    return holder


@dataclass
class Lease:
    """The held lease of one version; a context manager that heartbeats and releases."""

    lake: Lake
    dataset: str
    version: str
    build: str
    command: str
    holder: dict = field(default_factory=dict)
    lost_to: dict | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _beater: threading.Thread | None = None

    @property
    def path(self) -> str:
        return self.lake.lease(self.dataset, self.version)

    def acquire(self) -> Lease:
        self.holder = new_holder(self.build, self.command)
        data = json.dumps(self.holder, indent=2).encode()
        for _ in range(3):
            if create_exclusive(self.path, data):
                self._beater = threading.Thread(target=self._beat, daemon=True, name="robolake-lease")
                self._beater.start()
                return self
            try:
                holder = read_holder(self.lake, self.dataset, self.version)
            except UnreadableLease as exc:
                self._take_over_unreadable(exc)
                continue
            if holder is None:
                continue  # released between our try and our read: try again
            reason = stale_reason(holder)
            if reason is None:
                raise RobolakeError(
                    f"{self.dataset}:{self.version} is being built by {describe(holder)}; one build per version "
                    f"at a time: wait for it, or build another version")
            self._take_over(f"{describe(holder)}: {reason}")
        raise RobolakeError(f"{self.path}: could not take the lease (it keeps changing hands)")

    def _take_over_unreadable(self, exc: UnreadableLease) -> None:
        """Take a damaged lease over once it is older than a stale heartbeat (its writer
        wrote it whole, so only damage makes one unreadable: a full disk, a hand edit)."""
        try:
            age = time.time() - modified_at(exc.path)
        except FileNotFoundError:
            return  # released meanwhile
        if age <= STALE_AFTER_S:
            raise RobolakeError(f"{exc}; it is taken over once it is {STALE_AFTER_S:.0f} s old ({age:.0f} s now), "
                                f"or delete it if no build of {self.dataset}:{self.version} runs") from None
        self._take_over(f"{exc.path}, unreadable ({exc.problem}) and {age:.0f} s old")

    def _take_over(self, whom: str) -> None:
        """Move a stale lease aside (a rename: of two builds taking over, one wins)."""
        aside = f"{self.path}.{uuid.uuid4().hex[:8]}.stale"
        if is_remote(self.path):
            delete_tree(self.path)
        else:
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return
            os.remove(aside)
        progress.console.print(f"took over the lease of {self.dataset}:{self.version} from {whom}")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.check()
            if self.lost_to is not None:
                return
            self.holder["heartbeat"] = time.time()
            write_atomic(self.path, json.dumps(self.holder, indent=2).encode())

    def check(self) -> None:
        """Notice when another build took the lease over (this one was thought dead)."""
        try:
            current = read_holder(self.lake, self.dataset, self.version)
        except UnreadableLease:
            current = None
        if current is None or current.get("build") != self.build:
            self.lost_to = current or {"build": None}

    def assert_held(self) -> None:
        self.check()
        if self.lost_to is not None:
            raise RobolakeError(
                f"{self.dataset}:{self.version}: this build lost its lease to {describe(self.lost_to)} "
                f"(its heartbeat stalled past {STALE_AFTER_S:.0f} s); nothing published")

    def release(self) -> None:
        """Stop the heartbeat (waiting out a write in flight, which would re-create the file) and delete the lease."""
        self._stop.set()
        if self._beater is not None:
            self._beater.join()
        self.check()
        if self.lost_to is None:
            delete_tree(self.path)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def live_build(lake: Lake, dataset: str, version: str) -> str | None:
    """The build id holding a live lease on the version, or None."""
    try:
        holder = read_holder(lake, dataset, version)
    except UnreadableLease:
        return None
    return holder["build"] if holder and stale_reason(holder) is None else None
