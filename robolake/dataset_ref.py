"""`NAME[:VERSION]` on the command line -> a published gold version and its files."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

from robolake.errors import RobolakeError
from robolake.lake import Lake
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


def _read(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resolve(lake: Lake, reference: str) -> DatasetVersion:
    """The version named, or the dataset's latest published one (highest semver)."""
    dataset, _, version = reference.partition(":")
    published = sorted((os.path.basename(os.path.dirname(path))
                        for path in glob.glob(os.path.join(lake.gold(dataset, "*"), "manifest.json"))), key=_semver)
    if not published:
        known = sorted({os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(lake.gold_root(), "*", "*"))})
        raise RobolakeError(f"{dataset}: no published version in {lake.gold_root()} (datasets there: {known or 'none'})")
    version = version or published[-1]
    if version not in published:
        raise RobolakeError(f"{dataset}:{version}: not published; versions: {', '.join(published)}")
    gold_dir = lake.gold(dataset, version)
    manifest = _read(os.path.join(gold_dir, "manifest.json"))
    statistics = _read(os.path.join(gold_dir, "dataset_statistics.json"))
    spec = parse_spec(manifest["spec"], origin=f"{gold_dir}/manifest.json")
    return DatasetVersion(dataset, version, gold_dir, manifest, statistics, spec)
