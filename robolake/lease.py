"""One writer per dataset version: a lease file in versions/<dataset>/<version>/.

A build takes the lease before it plans anything (an exclusive create of lease.json,
holding host, pid, start time and a heartbeat), refreshes the heartbeat while it runs,
and gives it back when it ends. A second build of the version ends with one message
naming the holder. A lease is stale when its process is gone (same host) or its
heartbeat is older than STALE_AFTER_S; the next build takes it over and says so."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from robolake import progress
from robolake.errors import RobolakeError
from robolake.lake import Lake
from robolake.staging import write_atomic
from robolake.storage import create_exclusive, delete_tree, exists, is_remote, read_json

HEARTBEAT_S = 10.0
STALE_AFTER_S = float(os.environ.get("ROBOLAKE_LEASE_STALE_AFTER_S", 120))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_reason(holder: dict, now: float | None = None) -> str | None:
    """Why a lease no longer protects anything (its process is gone, or silent), or None."""
    if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1))):
        return f"its process {holder.get('pid')} on {holder.get('host')} is gone"
    silent = (now or time.time()) - float(holder.get("heartbeat", 0))
    if silent > STALE_AFTER_S:
        return f"its heartbeat is {silent:.0f} s old (stale after {STALE_AFTER_S:.0f} s)"
    return None


def describe(holder: dict) -> str:
    return (f"build {holder.get('build')} ({holder.get('command', 'robolake')}, pid {holder.get('pid')} on "
            f"{holder.get('host')}, started {holder.get('started_at')})")


def read_holder(lake: Lake, dataset: str, version: str) -> dict | None:
    path = lake.lease(dataset, version)
    try:
        return read_json(path) if exists(path) else None
    except (OSError, ValueError):  # removed or being replaced between the two calls
        return None


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
        now = time.time()
        self.holder = {
            "build": self.build, "command": self.command, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "heartbeat": now,
        }
        data = json.dumps(self.holder, indent=2).encode()
        for _ in range(3):
            if create_exclusive(self.path, data):
                self._beater = threading.Thread(target=self._beat, daemon=True, name="robolake-lease")
                self._beater.start()
                return self
            holder = read_holder(self.lake, self.dataset, self.version)
            if holder is None:
                continue  # released between our try and our read: try again
            reason = stale_reason(holder)
            if reason is None:
                raise RobolakeError(
                    f"{self.dataset}:{self.version} is being built by {describe(holder)}; one build per version "
                    f"at a time: wait for it, or build another version")
            self._take_over(holder, reason)
        raise RobolakeError(f"{self.path}: could not take the lease (it keeps changing hands)")

    def _take_over(self, holder: dict, reason: str) -> None:
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
        progress.console.print(f"took over the lease of {self.dataset}:{self.version} from {describe(holder)}: {reason}")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.check()
            if self.lost_to is not None:
                return
            self.holder["heartbeat"] = time.time()
            write_atomic(self.path, json.dumps(self.holder, indent=2).encode())

    def check(self) -> None:
        """Notice when another build took the lease over (this one was thought dead)."""
        current = read_holder(self.lake, self.dataset, self.version)
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
    holder = read_holder(lake, dataset, version)
    return holder.get("build") if holder and stale_reason(holder) is None else None
