"""Publication of a dataset version: the single commit point.

A build writes everything (gold RLDS, silver tables, quarantine) into its own folder,
versions/<dataset>/<version>/builds/<build-id>/, invisible to readers. Publishing is one
atomic replace of versions/<dataset>/<version>/current.json naming that build: a build
killed at any moment leaves the old build published or the new one, each whole. A
replaced build stays on disk, listed in current.json's `replaced`, until `robolake gc`.

A build that stalls can lose its lease and wake up later, after the next build of the
version took over and set out to delete its folder. Two things keep the pointer from ever
naming a deleted build, on local disk and on S3 alike:
- the build's claim (claims/<build>.json beside builds/) is created exactly once, with an
  exclusive create: by the build committing itself, or by whoever fences it off before
  deleting its folder (`fence`); the loser of that race publishes nothing, or keeps the
  folder (and a build whose claim succeeds checks that its folder is still there);
- the pointer is replaced by a compare-and-swap on the bytes the build read
  (storage.replace_if: a flock'd compare locally, If-Match on S3): a build that stalled
  while another published fails instead of overwriting it.

ROBOLAKE_KILL_AT=<point> makes the process kill itself (SIGKILL) at that point of
publication: the fault-injection tests' hook, so a crash lands where they ask."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

from robolake import progress
from robolake.errors import RobolakeError
from robolake.lake import Build, DamagedPointer, GoldVersion, Lake, new_build_id, parse_pointer
from robolake.lease import Lease, live_build
from robolake.storage import create_exclusive, delete_tree, exists, join, list_files, read_json, replace_if, write_json

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


def _sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _claim_path(lake: Lake, build: Build) -> str:
    return join(lake.claims_dir(build.dataset, build.version), f"{build.id}.json")


def _claim(lake: Lake, build: Build, by: str, pointer: bytes | None = None) -> bool:
    """Create the build's claim (`by`: commit or removal); False if it existed."""
    document = {"by": by, "pointer_sha256": _sha256(pointer), "at": _now()}
    return create_exclusive(_claim_path(lake, build), (json.dumps(document) + "\n").encode())


def prune_claims(lake: Lake, dataset: str, version: str, on_disk: set[str]) -> None:
    """Delete the claims of builds no longer on disk (a build that claims after its claim
    was pruned finds its folder gone and publishes nothing)."""
    for path in list_files(join(lake.claims_dir(dataset, version), "*.json")):
        if path.rsplit("/", 1)[1].removesuffix(".json") not in on_disk:
            delete_tree(path)


def fence(lake: Lake, build: Build) -> bool:
    """Make sure an unpublished build can never be published, so that its folder may be
    deleted; False when it may still publish (it claimed its commit against the pointer
    as it is now)."""
    if _claim(lake, build, "removal"):
        return True
    try:
        claimed = read_json(_claim_path(lake, build))
    except (OSError, ValueError):
        return False
    if claimed.get("by") != "commit":
        return True
    return _sha256(lake.pointer_bytes(build.dataset, build.version)) != claimed.get("pointer_sha256")


def remove_abandoned_builds(lake: Lake) -> list[str]:
    """Delete the folders of killed builds, of any version: neither published, nor
    replaced, nor rejected, nor held by a live lease, and fenced off first. A version whose
    pointer is damaged keeps every build (which one is published is unknown); says so.
    Returns the folders removed."""
    removed, damaged = [], set()
    for build in lake.build_dirs():
        try:
            pointer = lake.current(build.dataset, build.version) or {"build": None, "replaced": []}
        except DamagedPointer as exc:
            if exc.path not in damaged:
                damaged.add(exc.path)
                progress.console.print(f"left the builds of {build.dataset}:{build.version} as they are: {exc}")
            continue
        known = {pointer["build"], *(r["build"] for r in pointer["replaced"])}
        if build.id in known or build.id == live_build(lake, build.dataset, build.version):
            continue
        if build_state(build) != "rejected" and fence(lake, build):
            delete_tree(build.dir)
            removed.append(build.dir)
    return removed


def commit(lake: Lake, build: Build, lease: Lease, manifest: dict) -> dict | None:
    """Make `build` the published one; returns the pointer it replaced (None if fresh).
    When it cannot, its folder goes (it was never published) and RobolakeError says why."""
    crash_point("before-commit")
    try:
        previous = _swap_pointer(lake, build, lease, manifest)
    except RobolakeError:
        delete_tree(build.dir)
        raise
    crash_point("after-commit")
    if previous is not None:
        progress.console.print(f"replaced build {previous['build']} of {build.dataset}:{build.version} "
                               f"(kept until `robolake gc`)")
    return previous


def _swap_pointer(lake: Lake, build: Build, lease: Lease, manifest: dict) -> dict | None:
    lease.assert_held()
    path = lake.pointer(build.dataset, build.version)
    stored = lake.pointer_bytes(build.dataset, build.version)
    previous = parse_pointer(path, stored)
    replaced = []
    if previous is not None:
        replaced = [*previous["replaced"], {k: previous.get(k) for k in ("build", "fingerprint", "statistics_sha256",
                                                                        "committed_at")} | {"replaced_at": _now()}]
    pointer = {
        "dataset": build.dataset, "version": build.version, "build": build.id,
        "fingerprint": manifest["fingerprint"], "statistics_sha256": manifest["statistics_sha256"],
        "committed_at": _now(), "replaced": replaced,
    }
    write_json(build.status_path, {**read_json(build.status_path), "state": "committed"})
    crash_point("pointer-staged")
    if not _claim(lake, build, "commit", stored) or not exists(build.status_path):
        raise RobolakeError(f"{build.dataset}:{build.version}: build {build.id} was fenced off for removal (it lost "
                            f"its lease while it stalled); nothing published")
    lease.assert_held()
    if not replace_if(path, (json.dumps(pointer, indent=2) + "\n").encode(), stored):
        raise RobolakeError(f"{path} changed while build {build.id} committed (another build published); "
                            f"nothing published")
    return previous


def restore_pointer(lake: Lake, dataset: str, version: str) -> str:
    """Rewrite a damaged current.json from the builds on disk, under the version's lease:
    the newest committed build (per build.json, its gold manifest present) is published,
    the older committed ones are listed as replaced. Returns what it did; RobolakeError
    when no build can be restored."""
    path = lake.pointer(dataset, version)
    with Lease(lake, dataset, version, new_build_id(), "gc --repair"):
        stored = lake.pointer_bytes(dataset, version)
        committed = [b for b in lake.build_dirs() if (b.dataset, b.version) == (dataset, version)
                     and build_state(b) == "committed" and exists(GoldVersion.at(b.gold).manifest_path)]
        if not committed:
            raise RobolakeError(f"{path}: no committed build of {dataset}:{version} on disk to restore it from; "
                                f"delete it and convert the version again")
        *older, newest = committed  # build ids sort by start time

        def entry(build: Build) -> dict:
            manifest = GoldVersion.at(build.gold).manifest
            return {"build": build.id, "fingerprint": manifest["fingerprint"],
                    "statistics_sha256": manifest["statistics_sha256"], "committed_at": None}

        pointer = {"dataset": dataset, "version": version, **entry(newest), "restored_at": _now(),
                   "replaced": [entry(b) | {"replaced_at": _now()} for b in older]}
        if not replace_if(path, (json.dumps(pointer, indent=2) + "\n").encode(), stored):
            raise RobolakeError(f"{path} changed while gc restored it; run `robolake gc --repair` again")
    return (f"restored {path}: it names build {newest.id}, the newest committed of {len(committed)} on disk"
            + (f" ({', '.join(b.id for b in older)} listed as replaced)" if older else ""))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
