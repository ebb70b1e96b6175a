"""The lake's one owner: which path holds what, and the objects that read it.

`Lake(root)` knows the layout (raw manifest, versions/<dataset>/<version>/ with their
builds and pointer, reports/, runs/); `Build` is one build's folder; `GoldVersion` is a
published gold RLDS version with its manifest, statistics, spec, TFDS builder and
episodes. Every read and write goes through robolake/storage.py (Beam's FileSystems), so
a gs:// or s3:// root works the same as a local folder; TFDS, which cannot open object
stores here, reads a remote gold version through its local copy (`GoldVersion.local`).
Layout: docs/versions.md."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time
import uuid
from dataclasses import dataclass
from functools import cached_property

from robolake import pins
from robolake.errors import RobolakeError
from robolake.names import parse_reference
from robolake.spec import DatasetSpec, parse_spec
from robolake.staging import staged
from robolake.storage import cache_dir, copy_tree, exists, is_remote, join, list_files, read_bytes, read_json


def new_build_id() -> str:
    """Sortable by start time, unique across hosts: 20261205T163012Z-1a2b3c4d."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


EPISODE_QUALITY = "episode_quality"  # the silver table of each episode's behaviour metrics


@dataclass(frozen=True)
class Build:
    """One build of a dataset version: its gold RLDS folder, silver tables and quarantine,
    all under one folder that only the version's pointer (current.json) makes visible."""

    dir: str
    dataset: str
    version: str

    @property
    def id(self) -> str:
        return posixpath.basename(self.dir.rstrip("/"))

    @property
    def data_dir(self) -> str:
        """The `data_dir` that `tfds.builder(dataset, data_dir=...)` takes."""
        return join(self.dir, "rlds")

    @property
    def gold(self) -> str:
        return join(self.data_dir, self.dataset, self.version)

    def silver(self, table: str) -> str:
        return join(self.dir, "silver", table)

    @property
    def episode_quality(self) -> str:
        """The silver episode_quality table: each episode's behaviour metrics (robolake/episode_quality.py)."""
        return self.silver(EPISODE_QUALITY)

    def silver_glob(self, table: str, split: str = "*") -> str:
        """The Parquet files of a silver table (hive-partitioned by split), as a glob."""
        return join(self.silver(table), f"split={split}", "*.parquet")

    @property
    def quarantine(self) -> str:
        return join(self.dir, "quarantine")

    @property
    def quarantine_table(self) -> str:
        """quarantine.parquet: every rejected episode with its reason."""
        return join(self.quarantine, "quarantine.parquet")

    @property
    def filtered_actions(self) -> str:
        """The folder of the Parquet files of every action value the outlier rules flagged."""
        return join(self.quarantine, "filtered_actions")

    @property
    def filtered_actions_glob(self) -> str:
        return join(self.filtered_actions, "*.parquet")

    @property
    def progress(self) -> str:
        """The workers' progress counters while the build runs."""
        return join(self.dir, "_progress")

    @property
    def summary(self) -> str:
        """_summary.json: what the pipeline's workers report to the driver."""
        return join(self.dir, "_summary.json")

    @property
    def status_path(self) -> str:
        """build.json: who builds it and its state (building, rejected, committed)."""
        return join(self.dir, "build.json")

    @property
    def lake_root(self) -> str:
        return self.dir.rstrip("/").rsplit("/", 5)[0]

    @classmethod
    def of_gold(cls, gold_dir: str) -> Build | None:
        """The build a gold folder belongs to, or None for a folder outside a lake."""
        parts = gold_dir.rstrip("/").split("/")
        if len(parts) < 8 or parts[-3] != "rlds" or parts[-5] != "builds":
            return None
        return cls("/".join(parts[:-3]), parts[-2], parts[-1])


@dataclass(frozen=True)
class Lake:
    """Paths of one lake root. A dataset version lives in versions/<dataset>/<version>/:
    builds/<build-id>/ holds each build, current.json names the published one (the single
    commit point), lease.json is held by the one build running (robolake/lease.py), pins/
    holds a file per command reading one of its builds (robolake/pins.py)."""

    root: str

    def __post_init__(self) -> None:
        if not is_remote(self.root) and os.path.exists(self.root) and not os.path.isdir(self.root):
            raise RobolakeError(f"--lake {self.root}: is a file, not a lake folder")

    def is_lake(self) -> bool:
        """Whether the root holds a lake: the raw manifest that a convert writes, or a
        version's pointer, lease or build (a build that published nothing writes no manifest)."""
        return exists(self.raw_manifest()) or any(
            list_files(join(self.versions_root(), "*", "*", pattern)) for pattern in ("*.json", "builds/*/build.json"))

    def existing(self) -> Lake:
        """This lake, for a command that reads one; a folder that holds none (a mistyped
        --lake) is refused by name, rather than read as an empty lake."""
        if not self.is_lake():
            raise RobolakeError(f"no lake at {self.root} (no raw/ manifest, no versions/): check --lake")
        return self

    def raw_manifest(self) -> str:
        return join(self.root, "raw", "manifest.parquet")

    def versions_root(self) -> str:
        return join(self.root, "versions")

    def version_root(self, dataset: str, version: str) -> str:
        return join(self.versions_root(), dataset, version)

    def pointer(self, dataset: str, version: str) -> str:
        return join(self.version_root(dataset, version), "current.json")

    def lease(self, dataset: str, version: str) -> str:
        return join(self.version_root(dataset, version), "lease.json")

    def claims_dir(self, dataset: str, version: str) -> str:
        """claims/<build-id>.json: created once per build, by the build committing itself or
        by whoever fences it off to delete it (robolake/publish.py); outlives the build's folder."""
        return join(self.version_root(dataset, version), "claims")

    def pins_dir(self, dataset: str, version: str) -> str:
        """The folder of the pins of the commands reading the version's builds (robolake/pins.py)."""
        return join(self.version_root(dataset, version), "pins")

    def new_build(self, dataset: str, version: str) -> Build:
        return Build(join(self.version_root(dataset, version), "builds", new_build_id()), dataset, version)

    def build(self, dataset: str, version: str, build_id: str) -> Build:
        return Build(join(self.version_root(dataset, version), "builds", build_id), dataset, version)

    def pointer_bytes(self, dataset: str, version: str) -> bytes | None:
        """current.json as stored (what a compare-and-swap of it compares), None if unpublished."""
        path = self.pointer(dataset, version)
        try:
            return read_bytes(path) if exists(path) else None
        except OSError:  # removed between the two calls
            return None

    def current(self, dataset: str, version: str) -> dict | None:
        """The version's pointer document (build, fingerprint, replaced builds), None if
        unpublished; DamagedPointer when it is not one."""
        return parse_pointer(self.pointer(dataset, version), self.pointer_bytes(dataset, version))

    def current_build(self, dataset: str, version: str) -> Build:
        pointer = self.current(dataset, version)
        if pointer is None:
            raise RobolakeError(f"{dataset}:{version}: not published in {self.root}")
        build = self.build(dataset, version, pointer["build"])
        if not exists(join(build.gold, "manifest.json")):
            raise DamagedPointer(self.pointer(dataset, version), f"names build {build.id}, which is not on disk")
        return build

    def gold(self, dataset: str, version: str) -> str:
        """The published build's gold RLDS folder (a TFDS builder folder)."""
        return self.current_build(dataset, version).gold

    def silver_partition(self, dataset: str, table: str, version: str) -> str:
        return self.current_build(dataset, version).silver(table)

    def quarantine(self, dataset: str, version: str) -> str:
        return self.current_build(dataset, version).quarantine

    def reports(self, dataset: str, version: str) -> str:
        return join(self.root, "reports", dataset, version)

    def runs_root(self) -> str:
        return join(self.root, "runs")

    def run_dir(self, name: str) -> str:
        """A training run's folder: checkpoints, logs, metrics, evaluations."""
        return join(self.runs_root(), name)

    def published(self, dataset: str = "*", version: str = "*") -> list[tuple[str, str]]:
        """(dataset, version) of every published version matching the globs, sorted."""
        pointers = list_files(join(self.versions_root(), dataset, version, "current.json"))
        return sorted((p.split("/")[-3], p.split("/")[-2]) for p in pointers)

    def build_dirs(self) -> list[Build]:
        """Every build folder in the lake, published or not."""
        found = list_files(join(self.versions_root(), "*", "*", "builds", "*", "**"))
        prefix = self.versions_root().rstrip("/") + "/"
        dirs = {"/".join(p[len(prefix):].split("/")[:4]) for p in found if p.startswith(prefix)}
        return [Build(prefix + d, d.split("/")[0], d.split("/")[1]) for d in sorted(dirs)]

    def resolve(self, reference: str) -> GoldVersion:
        """The published version `NAME[:VERSION]` names: the version given, or the
        dataset's latest published one (highest semver)."""
        dataset, version = parse_reference(reference)
        published = sorted((v for _, v in self.published(dataset)), key=_semver)
        if not published:
            self.existing()
            known = sorted({d for d, _ in self.published()})
            older = ("; its gold/rlds/ has the layout before versions/ (docs/versions.md): convert again"
                     if exists(join(self.root, "gold", "rlds")) else "")
            raise RobolakeError(
                f"{dataset}: no published version in {self.root} (datasets there: {known or 'none'}){older}")
        version = version or published[-1]
        if version not in published:
            raise RobolakeError(f"{dataset}:{version}: not published; versions: {', '.join(published)}")
        return self._pinned(dataset, version)

    def _pinned(self, dataset: str, version: str) -> GoldVersion:
        """The published build, pinned when a command reads under `pins.reading` (the pin
        is written before the pointer is read again: see robolake/pins.py)."""
        for _ in range(3):
            build = self.current_build(dataset, version)
            pin = pins.pin(self.pins_dir(dataset, version), build.id)
            if pin is None or self.current(dataset, version)["build"] == build.id:
                return GoldVersion(dataset, version, build.gold)
            pins.unpin(pin)
        raise RobolakeError(f"{dataset}:{version}: rebuilt three times while being opened; run the command again")


class DamagedPointer(RobolakeError):
    """A current.json that is empty, not JSON, not a pointer, or names a build not on disk."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}; `robolake gc --repair` restores it from the builds on disk")
        self.path = path


def parse_pointer(path: str, data: bytes | None) -> dict | None:
    """The pointer document stored at `path` (None when `data` is None); DamagedPointer
    when it is not one."""
    if data is None:
        return None
    try:
        pointer = json.loads(data)
    except ValueError:
        raise DamagedPointer(path, "not JSON" if data.strip() else "empty") from None
    if not (isinstance(pointer, dict) and isinstance(pointer.get("build"), str) and "/" not in pointer["build"]
            and isinstance(pointer.get("replaced"), list)
            and all(isinstance(r, dict) and isinstance(r.get("build"), str) for r in pointer["replaced"])):
        raise DamagedPointer(path, "JSON but not a version pointer (a build id and a list of replaced builds)")
    return pointer


def _semver(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class GoldVersion:
    """A gold RLDS version: the TFDS builder folder `gold_dir` and the documents the
    build wrote beside its shards. Read through TFDS here, and only here."""

    dataset: str
    version: str
    gold_dir: str

    @classmethod
    def at(cls, gold_dir: str) -> GoldVersion:
        """The gold version in a TFDS builder folder `.../<dataset>/<version>/`."""
        parts = gold_dir.rstrip("/").split("/")
        return cls(parts[-2], parts[-1], gold_dir)

    @property
    def build(self) -> Build | None:
        """The lake build holding this folder; None for a folder outside a lake."""
        return Build.of_gold(self.gold_dir)

    @property
    def manifest_path(self) -> str:
        return join(self.gold_dir, "manifest.json")

    @cached_property
    def manifest(self) -> dict:
        """manifest.json: the spec, counts, sources and their sha256, fingerprint."""
        return read_json(self.manifest_path)

    @cached_property
    def statistics(self) -> dict:
        """dataset_statistics.json: the train split's statistics that normalized it."""
        return read_json(self.statistics_path)

    @property
    def statistics_path(self) -> str:
        return join(self.gold_dir, "dataset_statistics.json")

    @cached_property
    def spec(self) -> DatasetSpec:
        return parse_spec(self.manifest["spec"], origin=f"{self.gold_dir}/manifest.json")

    def provenance(self) -> dict:
        """provenance.json: how the version was built, from which inputs."""
        return read_json(join(self.gold_dir, "provenance.json"))

    def local(self) -> GoldVersion:
        """This version in a local folder: itself when `gold_dir` is local; else its copy
        in the cache (storage.cache_dir()/gold/<build>/<dataset>/<version>/), downloaded
        whole on first use. A build never changes once written, so a copy keyed by its
        build id is always valid (a folder outside a lake is keyed by its path instead).
        `gold_dir` stays the lake's path: provenance names that one."""
        if not is_remote(self.gold_dir):
            return self
        build = self.build
        key = build.id if build else hashlib.sha256(self.gold_dir.encode()).hexdigest()[:16]
        folder = os.path.join(cache_dir(), "gold", key, self.dataset, self.version)
        if not os.path.isdir(folder):
            with staged(folder) as staging:  # whole or absent: a killed download leaves no partial copy
                if not copy_tree(self.gold_dir, staging):
                    raise RobolakeError(f"{self.gold_dir}: no files there")
        return GoldVersion(self.dataset, self.version, folder)

    def builder(self):
        """The TFDS builder of the folder (`tfds.builder_from_directory`), read from the
        local copy of a remote version."""
        import tensorflow_datasets as tfds  # here: TensorFlow loads only for readers of shards

        return tfds.builder_from_directory(self.local().gold_dir)

    def layout(self, builder=None) -> dict:
        """cameras (sorted), image_shapes, state_dim, action_dim, episodes per split
        (train, val, test first) and shard files per split, from the TFDS metadata."""
        import tensorflow_datasets as tfds

        builder = builder or self.builder()
        step = builder.info.features["steps"]
        observation = step["observation"]
        cameras = sorted(name for name, f in observation.items() if isinstance(f, tfds.features.Image))
        splits = {name: split.num_examples for name, split in builder.info.splits.items()}
        ordered = [s for s in SPLIT_ORDER if s in splits] + sorted(set(splits) - set(SPLIT_ORDER))
        return {"cameras": cameras, "image_shapes": {c: tuple(observation[c].shape) for c in cameras},
                "state_dim": observation["state"].shape[0], "action_dim": step["action"].shape[0],
                "splits": {name: splits[name] for name in ordered},
                "shards": {name: split.num_shards for name, split in builder.info.splits.items()}}

    def episodes(self, split: str, builder=None, read_config=None, shuffle_files: bool = False):
        """A split's episodes as a tf.data.Dataset, every camera's images left as their
        encoded JPEG/PNG bytes (decoding is the reader's choice)."""
        import tensorflow_datasets as tfds

        builder = builder or self.builder()
        cameras = self.layout(builder)["cameras"]
        decoders = {"steps": {"observation": {name: tfds.decode.SkipDecoding() for name in cameras}}}
        return builder.as_dataset(split=split, decoders=decoders, read_config=read_config,
                                  shuffle_files=shuffle_files)

    def silver_files(self, table: str, split: str | None = None) -> list[str]:
        """The Parquet files of one of the build's silver tables (one split's, if given);
        [] for a folder outside a lake."""
        build = self.build
        return list_files(build.silver_glob(table, split or "*")) if build else []
