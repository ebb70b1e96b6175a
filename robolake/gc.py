"""`robolake gc`: remove the builds nothing needs any more, saying what it keeps and why.

Kept: each version's published build; a build being written (live lease); a replaced
build that a provenance still names (a checkpoint's, an export's, or a derived
version's member). Removed: replaced builds nothing names, builds a killed process
left, and rejected builds (every episode quarantined)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict

from robolake import progress
from robolake.errors import RobolakeError
from robolake.lake import Build, Lake, new_build_id
from robolake.lease import Lease, live_build
from robolake.publish import build_state
from robolake.staging import write_atomic
from robolake.storage import delete_tree, is_remote, join, list_files, read_json, tree_bytes


def _key(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(path)


def provenance_references(lake: Lake, run_roots: list[str]) -> dict[str, list[str]]:
    """gold folder -> the artifacts whose provenance names it: every provenance.json under
    the run folders, and the members of every build's own provenance."""
    found = [p for root in run_roots for p in list_files(join(root, "**", "provenance.json"))]
    found += list_files(join(lake.versions_root(), "*", "*", "builds", "*", "rlds", "*", "*", "provenance.json"))
    named: dict[str, list[str]] = defaultdict(list)
    for path in found:
        document = read_json(path)
        artifact = document.get("artifact", {}).get("path", os.path.dirname(path))
        datasets = [document["dataset"]] if document.get("artifact", {}).get("kind") != "dataset" else []
        for dataset in [*datasets, *document.get("members", [])]:
            named[_key(dataset["gold_dir"])].append(artifact)
    return named


def decide(lake: Lake, build: Build, named: dict[str, list[str]]) -> tuple[bool, str]:
    """(keep, why) for one build folder."""
    pointer = lake.current(build.dataset, build.version) or {"build": None, "replaced": []}
    replaced = {r["build"]: r["replaced_at"] for r in pointer["replaced"]}
    if build.id == pointer["build"]:
        return True, "published"
    if build.id == live_build(lake, build.dataset, build.version):
        return True, "being built (its lease is live)"
    if build.id in replaced:
        names = named.get(_key(build.gold), [])
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            return True, f"replaced {replaced[build.id]}, still named by {names[0]}{more}"
        return False, f"replaced {replaced[build.id]}, named by no checkpoint or version"
    if build_state(build) == "rejected":
        return False, f"rejected: {read_json(build.status_path).get('reason', 'every episode quarantined')}"
    return False, "left by a killed build"


def _forget(lake: Lake, dataset: str, version: str, removed: set[str]) -> None:
    """Drop removed builds from the version's list of replaced builds, under its lease."""
    with Lease(lake, dataset, version, new_build_id(), "gc"):
        pointer = lake.current(dataset, version)
        if pointer is None:
            return
        pointer["replaced"] = [r for r in pointer["replaced"] if r["build"] not in removed]
        write_atomic(lake.pointer(dataset, version), (json.dumps(pointer, indent=2) + "\n").encode())


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="robolake gc", description=__doc__.splitlines()[0])
    parser.add_argument("--lake", default="lake", help="lake root (default: lake)")
    parser.add_argument("--runs", action="append", default=[],
                        help="a folder of checkpoints whose provenance keeps builds (default: <lake>/runs); repeatable")
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    args = parser.parse_args(argv)
    started = time.time()
    lake = Lake(args.lake)
    named = provenance_references(lake, args.runs or [lake.runs_root()])
    kept, removed, freed = 0, defaultdict(set), 0
    for build in lake.build_dirs():
        keep, why = decide(lake, build, named)
        verb = "keep  " if keep else ("would remove" if args.dry_run else "remove")
        print(f"{verb} {build.dataset}:{build.version} build {build.id}: {why}")
        if keep:
            kept += 1
            continue
        freed += tree_bytes(build.dir)
        removed[(build.dataset, build.version)].add(build.id)
        if not args.dry_run:
            delete_tree(build.dir)
    if not args.dry_run:
        for (dataset, version), ids in removed.items():
            try:
                _forget(lake, dataset, version, ids)
            except RobolakeError as exc:  # a build holds the lease: the pointer lists them until the next gc
                progress.console.print(f"left {dataset}:{version}'s list of replaced builds as it is: {exc}")
    count = sum(len(ids) for ids in removed.values())
    action = "would remove" if args.dry_run else "removed"
    print(f"gc {lake.root}: kept {kept} builds, {action} {count} ({freed / 1e6:.1f} MB) in {time.time() - started:.1f} s")
    return 0
