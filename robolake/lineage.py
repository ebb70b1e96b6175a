"""`robolake lineage`: follow provenance.json from an artifact back to the raw files.

A checkpoint's provenance names the gold dataset version it was trained on; that
version's provenance names every raw file with its sha256. A training run's folder
stands for its best checkpoint. `--verify` hashes the raw files again and reports any
that changed or disappeared since."""

from __future__ import annotations

import json
from dataclasses import dataclass

from robolake.arguments import ArgumentParser
from robolake.errors import RobolakeError
from robolake.hashing import sha256_source
from robolake.lake import Build, Lake
from robolake.names import parse_reference
from robolake.storage import exists, join, list_files, read_json

PROVENANCE_FILE = "provenance.json"
BEST = "best"  # the checkpoint bundle a run folder stands for


def load_provenance(artifact: str) -> dict:
    """The provenance document of an artifact folder (or of the provenance.json given)."""
    path = artifact if artifact.endswith(".json") else join(artifact.rstrip("/"), PROVENANCE_FILE)
    if not exists(path):
        raise RobolakeError(
            f"{artifact}: no {PROVENANCE_FILE} there; give NAME/VERSION of a published dataset, a gold "
            f"folder (lake/versions/<name>/<version>/builds/<build>/rlds/<name>/<version>), a training run's "
            f"folder (lake/runs/<run>) or one of its checkpoints (lake/runs/<run>/best)"
        )
    try:
        document = read_json(path)
    except json.JSONDecodeError as exc:
        raise RobolakeError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(document, dict) or "artifact" not in document or "inputs" not in document:
        raise RobolakeError(f"{path}: not a robolake provenance file (no artifact or inputs)")
    return document


def run_checkpoint(path: str) -> str:
    """`path` itself, or for a training run's folder its best checkpoint (`path`/best). A
    run folder without best/ is an error that lists the checkpoint bundles it holds."""
    folder = path.rstrip("/")
    if path.endswith(".json") or exists(join(folder, PROVENANCE_FILE)):
        return path
    if exists(join(folder, BEST, PROVENANCE_FILE)):
        return join(folder, BEST)
    bundles = [found.rsplit("/", 1)[0] for found in list_files(join(folder, "*", PROVENANCE_FILE))]
    if bundles:
        raise RobolakeError(f"{folder}: a run folder without a {BEST}/ checkpoint; give one of its checkpoint "
                            f"bundles: {', '.join(bundles)}")
    return path


def chain(artifact: str) -> list[dict]:
    """Provenance documents from `artifact` down to the dataset built from raw files."""
    links = [load_provenance(artifact)]
    while links[-1]["artifact"]["kind"] != "dataset":
        links.append(load_provenance(links[-1]["dataset"]["gold_dir"]))
        if len(links) > 8:
            raise RobolakeError(f"{artifact}: provenance chain does not end in a dataset")
    return links


@dataclass
class Lineage:
    """An artifact's chain down to its dataset version and, for a version derived from
    gold versions (a mixture, an edit), the lineage of each member."""

    links: list[dict]
    members: list[Lineage]

    @property
    def inputs(self) -> list[dict]:
        return self.links[-1]["inputs"]

    def all_inputs(self) -> list[dict]:
        """Every input file of the tree: members' gold shards and, at the leaves, raw files."""
        return self.inputs + [item for member in self.members for item in member.all_inputs()]

    def raw_files(self) -> list[dict]:
        return self.inputs if not self.members else [item for m in self.members for item in m.raw_files()]

    def as_json(self) -> dict:
        return {"chain": self.links, "members": [m.as_json() for m in self.members]}


def lineage(artifact: str) -> Lineage:
    links = chain(artifact)
    return Lineage(links, [lineage(member["gold_dir"]) for member in links[-1].get("members", [])])


def dataset_change(dataset: dict, current: dict | None) -> str | None:
    """How a provenance's dataset version (`dataset`) differs from the build published
    now (`current`: build, fingerprint, statistics_sha256; None when unpublished), naming
    both fingerprints; None when they are the same."""
    name = f"{dataset['name']}:{dataset['version']}"
    then = (f"build {dataset.get('build', '(unknown)')} fingerprint {dataset['fingerprint']} "
            f"(statistics {dataset['statistics_sha256']})")
    if current is None:
        return f"{name} is no longer published; provenance names {then}"
    if (current["fingerprint"], current["statistics_sha256"]) == (dataset["fingerprint"], dataset["statistics_sha256"]):
        return None
    return (f"{name} changed: provenance names {then}, the lake now publishes build {current['build']} "
            f"fingerprint {current['fingerprint']} (statistics {current['statistics_sha256']})")


def _published_now(dataset: dict) -> dict | None:
    """The pointer of the version in the lake its gold folder sits in."""
    build = Build.of_gold(dataset["gold_dir"])
    return Lake(build.lake_root).current(dataset["name"], dataset["version"])


def dataset_changes(node: Lineage) -> list[str]:
    """dataset_change of every dataset the tree names (a mixture's members included)."""
    found = [dataset_change(document["dataset"], _published_now(document["dataset"]))
             for document in node.links if Build.of_gold(document["dataset"]["gold_dir"])]
    found += [change for member in node.members for change in dataset_changes(member)]
    return list(dict.fromkeys(change for change in found if change))


def verify_inputs(items: list[dict]) -> dict[str, str]:
    """Each input's status by path: ok, changed (sha256 differs) or missing."""
    statuses = {}
    for item in items:
        companions = item.get("companions", [])
        if not all(exists(path) for path in (item["path"], *companions)):
            statuses[item["path"]] = "missing"
        else:
            statuses[item["path"]] = "ok" if sha256_source(item["path"], companions) == item["sha256"] else "changed"
    return statuses


def _describe(document: dict) -> list[str]:
    artifact, dataset, git = document["artifact"], document["dataset"], document["git"]
    if artifact["kind"] == "dataset":
        head = f"dataset {dataset['name']} {dataset['version']}  {artifact['path']}"
    else:
        head = " ".join(filter(None, [artifact["kind"], artifact.get("name")])) + f"  {artifact['path']}"
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
    for remote in document.get("remote_datasets", []):
        lines.append(f"  hub dataset {remote['reference']} -> commit {remote['commit']} ({remote['pinned']})")
    for member in document.get("members", []):
        if "trim" in member:  # robolake edit trim: per episode kept and cut steps in --json
            trim = member["trim"]
            lines.append(f"  trimmed     {member['dataset']}:{member['version']}: {trim['episodes_trimmed']} of "
                         f"{len(trim['episodes'])} episodes cut, {trim['steps_kept']} of {trim['steps_in']} steps "
                         f"kept, {trim['episodes_idle_throughout']} idle throughout (quarantined)")
    return lines


def render(node: Lineage, statuses: dict[str, str] | None = None, depth: int = 0) -> str:
    """The tree as text: each chain, its input files with their sha256, then its members."""
    lines = []
    for step, document in enumerate(node.links):
        indent = "  " * (depth + step)
        prefix = indent + ("<- " if depth + step else "")
        lines.extend(prefix + line if i == 0 else indent + line for i, line in enumerate(_describe(document)))
    indent = "  " * (depth + len(node.links))
    kind = f"gold files of {len(node.members)} member versions" if node.members else "raw files"
    lines.append(indent + f"<- {kind} ({len(node.inputs)}):")
    for item in node.inputs:
        status = f"  [{statuses[item['path']]}]" if statuses else ""
        episodes = f"  {item['episodes']} episodes" if "episodes" in item else ""
        lines.append(indent + f"  sha256 {item['sha256']}  {item['path']}{episodes}{status}")
    lines.extend(render(member, statuses, depth + len(node.links)) for member in node.members)
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="robolake lineage", description="print the chain from a checkpoint or dataset back to its raw files"
    )
    parser.add_argument("artifact", help="gold version folder, checkpoint folder, training run folder (its best "
                                         "checkpoint), or NAME/VERSION of a gold dataset")
    parser.add_argument("--lake", default="lake", help="lake root used to resolve NAME/VERSION (default: lake)")
    parser.add_argument("--verify", action="store_true", help="hash the raw files again and compare")
    parser.add_argument("--json", action="store_true", help="print the chain as JSON")
    args = parser.parse_args(argv)
    artifact = args.artifact
    if not exists(artifact) and artifact.count("/") == 1:
        dataset, version = parse_reference(artifact.replace("/", ":"))
        artifact = Lake(args.lake).existing().gold(dataset, version)
    tree = lineage(run_checkpoint(artifact))
    statuses = verify_inputs(tree.all_inputs()) if args.verify else None
    bad = [path for path, status in (statuses or {}).items() if status != "ok"]
    changes = dataset_changes(tree)
    failed = bool(bad or (args.verify and changes))
    if args.json:
        raw = [{**item, **({"status": statuses[item["path"]]} if statuses else {})} for item in tree.raw_files()]
        print(json.dumps({**tree.as_json(), "raw_files": raw, "dataset_changes": changes}, indent=2))
        return 1 if failed else 0
    print(render(tree, statuses))
    for change in changes:
        print(f"dataset changed since: {change}")
    if statuses is None:
        print(f"{len(tree.raw_files())} raw files behind {args.artifact}")
    else:
        files = "gold and raw files" if tree.members else "raw files"
        print(f"{len(statuses) - len(bad)} of {len(statuses)} {files} unchanged"
              + (f", {len(bad)} changed or missing" if bad else "")
              + (f", {len(changes)} dataset versions changed since" if changes else ""))
    return 1 if failed else 0
