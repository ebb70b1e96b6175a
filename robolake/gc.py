"""`robolake gc`: remove the builds nothing needs any more, saying what it keeps and why.

Kept: each version's published build; a build being written (live lease); a build a
running command reads (a live reader pin, robolake/pins.py); a replaced build that a
provenance still names (a checkpoint's, an export's, or a derived version's member),
matched by dataset, version and build id, so a moved or copied lake keeps its own.
Removed: replaced builds nothing names, builds a killed process left (fenced off first:
robolake/publish.py), rejected builds, and stale pins. A version whose current.json is
damaged keeps every build; `--repair` restores its pointer from the builds on disk."""

from __future__ import annotations

import json
import time
from collections import defaultdict

from robolake import progress
from robolake.arguments import ArgumentParser
from robolake.errors import RobolakeError
from robolake.lake import Build, DamagedPointer, Lake, new_build_id, parse_pointer
from robolake.lease import Lease, live_build
from robolake.pins import live_pins
from robolake.publish import build_state, fence, prune_claims, restore_pointer
from robolake.storage import delete_tree, join, list_files, read_json, replace_if, tree_bytes

BuildKey = tuple[str, str, str]  # dataset, version, build id


def provenance_references(lake: Lake, run_roots: list[str]) -> dict[BuildKey, list[str]]:
    """(dataset, version, build id) -> the artifacts whose provenance names that build's
    gold folder: every provenance.json under the run folders, and the members of every
    build's own provenance."""
    found = {p for root in run_roots for p in list_files(join(root, "**", "provenance.json"))}
    found |= set(list_files(join(lake.versions_root(), "*", "*", "builds", "*", "rlds", "*", "*", "provenance.json")))
    named: dict[BuildKey, list[str]] = defaultdict(list)
    for path in sorted(found):
        document = read_json(path)
        artifact = document.get("artifact", {}).get("path", path.rsplit("/", 1)[0])
        datasets = [document["dataset"]] if document.get("artifact", {}).get("kind") != "dataset" else []
        for dataset in [*datasets, *document.get("members", [])]:
            build = Build.of_gold(dataset["gold_dir"])
            if build is not None:
                named[(build.dataset, build.version, build.id)].append(artifact)
    return named


def decide(build: Build, pointer: dict, live: str | None, readers: dict[str, list[dict]],
           named: dict[BuildKey, list[str]]) -> tuple[bool, str]:
    """(keep, why) for one build folder, given its version's pointer, lease holder and pins."""
    replaced = {r["build"]: r.get("replaced_at") for r in pointer["replaced"]}
    if build.id == pointer["build"]:
        return True, "published"
    if build.id == live:
        return True, "being built (its lease is live)"
    if build.id in readers:
        reader = readers[build.id][0]
        return True, f"read by {reader.get('command')} (pid {reader['pid']} on {reader['host']})"
    if build.id in replaced:
        names = named.get((build.dataset, build.version, build.id), [])
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
        path = lake.pointer(dataset, version)
        stored = lake.pointer_bytes(dataset, version)
        pointer = parse_pointer(path, stored)
        if pointer is None:
            return
        pointer["replaced"] = [r for r in pointer["replaced"] if r["build"] not in removed]
        if not replace_if(path, (json.dumps(pointer, indent=2) + "\n").encode(), stored):
            raise RobolakeError(f"{path} changed meanwhile")


def _pointer(lake: Lake, dataset: str, version: str) -> dict:
    """The version's pointer ({build: None} if unpublished); DamagedPointer if damaged,
    or if it names a build that is not on disk."""
    pointer = lake.current(dataset, version)
    if pointer is None:
        return {"build": None, "replaced": []}
    lake.current_build(dataset, version)
    return pointer


def run(argv: list[str]) -> int:
    parser = ArgumentParser(prog="robolake gc", description=__doc__.splitlines()[0])
    parser.add_argument("--lake", default="lake", help="lake root (default: lake)")
    parser.add_argument("--runs", action="append", default=[],
                        help="another folder of checkpoints whose provenance keeps builds, besides <lake>/runs; "
                             "repeatable")
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    parser.add_argument("--repair", action="store_true",
                        help="restore a damaged current.json from the builds on disk (the newest committed build)")
    args = parser.parse_args(argv)
    started = time.time()
    lake = Lake(args.lake).existing()
    named = provenance_references(lake, [lake.runs_root(), *args.runs])
    builds: dict[tuple[str, str], list[Build]] = defaultdict(list)
    for build in lake.build_dirs():
        builds[(build.dataset, build.version)].append(build)
    kept, removed, freed = 0, defaultdict(set), 0
    for dataset, version in sorted(set(builds) | set(lake.published())):
        versions_builds = builds[(dataset, version)]
        try:
            pointer = _pointer(lake, dataset, version)  # read before the pins: see robolake/pins.py
        except DamagedPointer as exc:
            kept += len(versions_builds)
            if args.repair and not args.dry_run:
                try:
                    print(f"{restore_pointer(lake, dataset, version)}; its {len(versions_builds)} builds are kept "
                          f"until the next gc")
                except RobolakeError as failed:
                    print(f"keep   {dataset}:{version}'s {len(versions_builds)} builds: {failed}")
            else:
                print(f"keep   {dataset}:{version}'s {len(versions_builds)} builds: {exc}")
            continue
        live = live_build(lake, dataset, version)
        readers = live_pins(lake.pins_dir(dataset, version), remove_stale=not args.dry_run)
        for build in versions_builds:
            keep, why = decide(build, pointer, live, readers, named)
            unpublished = build.id not in {pointer["build"], *(r["build"] for r in pointer["replaced"])}
            if not keep and unpublished and not args.dry_run and not fence(lake, build):
                keep, why = True, "claimed its commit, and may still publish"
            verb = "keep  " if keep else ("would remove" if args.dry_run else "remove")
            print(f"{verb} {dataset}:{version} build {build.id}: {why}")
            if keep:
                kept += 1
                continue
            freed += tree_bytes(build.dir)
            removed[(dataset, version)].add(build.id)
            if not args.dry_run:
                delete_tree(build.dir)
        if not args.dry_run:
            gone = removed.get((dataset, version), set())
            prune_claims(lake, dataset, version, {b.id for b in versions_builds} - gone)
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
