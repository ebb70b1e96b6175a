"""Publication of a dataset version: the single commit point.

A build writes everything (gold RLDS, silver tables, quarantine) into its own folder,
versions/<dataset>/<version>/builds/<build-id>/, invisible to readers. Publishing is one
atomic replace of versions/<dataset>/<version>/current.json naming that build: a build
killed at any moment leaves the old build published or the new one, each whole. A
replaced build stays on disk, listed in current.json's `replaced`, until `robolake gc`.

ROBOLAKE_KILL_AT=<point> makes the process kill itself (SIGKILL) at that point of
publication: the fault-injection tests' hook, so a crash lands where they ask."""

from __future__ import annotations

import json
import os
import signal
import time

from robolake import progress
from robolake.errors import RobolakeError
from robolake.lake import Build, Lake
from robolake.lease import Lease, live_build
from robolake.staging import write_atomic
from robolake.storage import delete_tree, exists, read_json, write_json

KILL_POINTS = ("before-commit", "pointer-staged", "after-commit")


def crash_point(point: str) -> None:
    """The test hook: SIGKILL here when ROBOLAKE_KILL_AT names this point."""
    if os.environ.get("ROBOLAKE_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def refuse_existing(lake: Lake, dataset: str, version: str, overwrite: bool) -> None:
    pointer = lake.current(dataset, version)
    if pointer is not None and not overwrite:
        raise RobolakeError(
            f"{dataset}:{version} is already published (build {pointer['build']}) and published versions are "
            "immutable: bump `version` in the dataset spec, or pass --overwrite to replace it")


def start_build(lake: Lake, lease: Lease) -> Build:
    """The new build's folder, with build.json saying who builds it."""
    build = lake.build(lease.dataset, lease.version, lease.build)
    write_json(build.status_path, {**lease.holder, "state": "building"})
    return build


def mark_rejected(build: Build, reason: str) -> None:
    """Keep a build whose every episode was quarantined, for its reasons; `gc` removes it."""
    write_json(build.status_path, {**read_json(build.status_path), "state": "rejected", "reason": reason})


def build_state(build: Build) -> str:
    return read_json(build.status_path).get("state", "building") if exists(build.status_path) else "building"


def remove_abandoned_builds(lake: Lake) -> list[str]:
    """Delete the folders of killed builds, of any version: neither published, nor
    replaced, nor rejected, nor held by a live lease. Returns the folders removed."""
    removed = []
    for build in lake.build_dirs():
        pointer = lake.current(build.dataset, build.version) or {"build": None, "replaced": []}
        known = {pointer["build"], *(r["build"] for r in pointer["replaced"])}
        if build.id in known or build.id == live_build(lake, build.dataset, build.version):
            continue
        if build_state(build) != "rejected":
            delete_tree(build.dir)
            removed.append(build.dir)
    return removed


def commit(lake: Lake, build: Build, lease: Lease, manifest: dict) -> dict | None:
    """Make `build` the published one; returns the pointer it replaced (None if fresh)."""
    crash_point("before-commit")
    lease.assert_held()
    previous = lake.current(build.dataset, build.version)
    replaced = []
    if previous is not None:
        replaced = [*previous["replaced"], {k: previous[k] for k in ("build", "fingerprint", "statistics_sha256",
                                                                    "committed_at")} | {"replaced_at": _now()}]
    pointer = {
        "dataset": build.dataset, "version": build.version, "build": build.id,
        "fingerprint": manifest["fingerprint"], "statistics_sha256": manifest["statistics_sha256"],
        "committed_at": _now(), "replaced": replaced,
    }
    write_json(build.status_path, {**read_json(build.status_path), "state": "committed"})
    crash_point("pointer-staged")
    write_atomic(lake.pointer(build.dataset, build.version), (json.dumps(pointer, indent=2) + "\n").encode())
    crash_point("after-commit")
    if previous is not None:
        progress.console.print(f"replaced build {previous['build']} of {build.dataset}:{build.version} "
                               f"(kept until `robolake gc`)")
    return previous


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
