"""`robolake lineage`: follow provenance.json from an artifact back to the raw files.

A checkpoint's provenance names the gold dataset version it was trained on; that
version's provenance names every raw file with its sha256. `--verify` hashes the raw
files again and reports any that changed or disappeared since."""

from __future__ import annotations

import argparse
import json

from robolake.errors import RobolakeError
from robolake.hashing import sha256_source
from robolake.lake import Lake, exists, join, read_json

PROVENANCE_FILE = "provenance.json"


def load_provenance(artifact: str) -> dict:
    """The provenance document of an artifact folder (or of the provenance.json given)."""
    path = artifact if artifact.endswith(".json") else join(artifact.rstrip("/"), PROVENANCE_FILE)
    if not exists(path):
        raise RobolakeError(
            f"{artifact}: no {PROVENANCE_FILE} there; give a gold dataset version folder "
            f"(lake/gold/rlds/<name>/<version>) or a checkpoint folder (lake/runs/<run>/...)"
        )
    try:
        document = read_json(path)
    except json.JSONDecodeError as exc:
        raise RobolakeError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(document, dict) or "artifact" not in document or "inputs" not in document:
        raise RobolakeError(f"{path}: not a robolake provenance file (no artifact or inputs)")
    return document


def chain(artifact: str) -> list[dict]:
    """Provenance documents from `artifact` down to the dataset built from raw files."""
    links = [load_provenance(artifact)]
    while links[-1]["artifact"]["kind"] != "dataset":
        links.append(load_provenance(links[-1]["dataset"]["gold_dir"]))
        if len(links) > 8:
            raise RobolakeError(f"{artifact}: provenance chain does not end in a dataset")
    return links


def verify_inputs(document: dict) -> list[dict]:
    """Each raw input with `status`: ok, changed (sha256 differs) or missing."""
    checked = []
    for item in document["inputs"]:
        companions = item.get("companions", [])
        if not all(exists(path) for path in (item["path"], *companions)):
            status = "missing"
        else:
            status = "ok" if sha256_source(item["path"], companions) == item["sha256"] else "changed"
        checked.append({**item, "status": status})
    return checked


def _describe(document: dict) -> list[str]:
    artifact, dataset, git = document["artifact"], document["dataset"], document["git"]
    if artifact["kind"] == "dataset":
        head = f"dataset {dataset['name']} {dataset['version']}  {artifact['path']}"
    else:
        head = f"{artifact['kind']} {artifact.get('name', '')}  {artifact['path']}"
    commit = git["commit"][:12] if git["commit"] else "none"
    state = {True: "dirty: " + ", ".join(git.get("changed_files", [])), False: "clean", None: "no git"}[git["dirty"]]
    lines = [
        head,
        f"  built       {document['started_at']} -> {document['finished_at']}, git {commit} ({state})",
        f"  dataset     {dataset['name']} {dataset['version']} fingerprint {dataset['fingerprint']}",
        f"  statistics  {dataset['statistics_sha256'] or 'none'}",
    ]
    stages = (document["dvc"] or {}).get("stages", {})
    for name, stage in stages.items():
        outs = ", ".join(f"{o['path']} md5 {o['md5']}" for o in stage["outs"])
        lines.append(f"  dvc stage   {name}: {outs}")
    if document["dvc"] is None:
        lines.append("  dvc stage   none (not built by dvc repro)")
    return lines


def render(links: list[dict], verified: list[dict] | None = None) -> str:
    """The chain as text, ending with every raw file and its sha256."""
    lines = []
    for depth, document in enumerate(links):
        prefix = "  " * depth + ("<- " if depth else "")
        lines.extend(prefix + line if i == 0 else "  " * depth + line for i, line in enumerate(_describe(document)))
    raw = verified if verified is not None else links[-1]["inputs"]
    lines.append("  " * len(links) + f"<- raw files ({len(raw)}):")
    for item in raw:
        status = f"  [{item['status']}]" if "status" in item else ""
        episodes = f"  {item['episodes']} episodes" if "episodes" in item else ""
        lines.append("  " * (len(links) + 1) + f"sha256 {item['sha256']}  {item['path']}{episodes}{status}")
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="robolake lineage", description="print the chain from a checkpoint or dataset back to its raw files"
    )
    parser.add_argument("artifact", help="gold version folder, checkpoint folder, or NAME/VERSION of a gold dataset")
    parser.add_argument("--lake", default="lake", help="lake root used to resolve NAME/VERSION (default: lake)")
    parser.add_argument("--verify", action="store_true", help="hash the raw files again and compare")
    parser.add_argument("--json", action="store_true", help="print the chain as JSON")
    args = parser.parse_args(argv)
    artifact = args.artifact
    if not exists(artifact) and artifact.count("/") == 1:
        artifact = Lake(args.lake).gold(*artifact.split("/"))
    links = chain(artifact)
    verified = verify_inputs(links[-1]) if args.verify else None
    bad = [v for v in verified or [] if v["status"] != "ok"]
    if args.json:
        print(json.dumps({"chain": links, "raw_files": verified or links[-1]["inputs"]}, indent=2))
        return 1 if bad else 0
    print(render(links, verified))
    if verified is None:
        print(f"{len(links[-1]['inputs'])} raw files behind {args.artifact}")
    else:
        print(f"{len(verified) - len(bad)} of {len(verified)} raw files unchanged" + (f", {len(bad)} changed or missing" if bad else ""))
    return 1 if bad else 0
