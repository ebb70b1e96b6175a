"""`NAME[:VERSION]` on the command line -> a published gold version and its files."""

from __future__ import annotations

from dataclasses import dataclass

from robolake.errors import RobolakeError
from robolake.lake import Lake, exists, join, read_json
from robolake.names import parse_reference
from robolake.spec import DatasetSpec, parse_spec


@dataclass(frozen=True)
class DatasetVersion:
    dataset: str
    version: str
    gold_dir: str
    manifest: dict
    statistics: dict
    spec: DatasetSpec


def _semver(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def resolve(lake: Lake, reference: str) -> DatasetVersion:
    """The version named, or the dataset's latest published one (highest semver),
    through the version's pointer to its published build."""
    dataset, version = parse_reference(reference)
    published = sorted((v for _, v in lake.published(dataset)), key=_semver)
    if not published:
        known = sorted({d for d, _ in lake.published()})
        older = "; its gold/rlds/ has the layout before versions/ (docs/versions.md): convert again" if exists(
            join(lake.root, "gold", "rlds")) else ""
        raise RobolakeError(f"{dataset}: no published version in {lake.root} (datasets there: {known or 'none'}){older}")
    version = version or published[-1]
    if version not in published:
        raise RobolakeError(f"{dataset}:{version}: not published; versions: {', '.join(published)}")
    gold_dir = lake.gold(dataset, version)
    manifest = read_json(join(gold_dir, "manifest.json"))
    statistics = read_json(join(gold_dir, "dataset_statistics.json"))
    spec = parse_spec(manifest["spec"], origin=f"{gold_dir}/manifest.json")
    return DatasetVersion(dataset, version, gold_dir, manifest, statistics, spec)
