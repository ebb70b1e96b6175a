"""Lake layout (see DESIGN.md) and file operations through Beam's FileSystems,
so a gs:// or s3:// lake root works the same as a local folder."""

from __future__ import annotations

import json
import os
import posixpath
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from robolake.errors import RobolakeError


def join(*parts: str) -> str:
    return FileSystems.join(*parts) if "://" in parts[0] else posixpath.join(*parts)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def write_bytes(path: str, data: bytes) -> None:
    makedirs(posixpath.dirname(path))
    with FileSystems.create(path) as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as f:
        return f.read()


def write_json(path: str, obj: object) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str) -> object:
    return json.loads(read_bytes(path))


def write_table(path: str, table: pa.Table) -> None:
    """Write a Parquet file (zstd)."""
    makedirs(posixpath.dirname(path))
    with FileSystems.create(path, mime_type="application/octet-stream") as f:
        pq.write_table(table, f, compression="zstd")


def read_table(path: str) -> pa.Table:
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return pq.read_table(f)


def makedirs(path: str) -> None:
    """Create a local folder and its parents; object stores have no folders."""
    if "://" not in path:
        os.makedirs(path, exist_ok=True)


def delete_tree(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


def list_files(pattern: str) -> list[str]:
    """Paths matching a glob, sorted; [] when nothing matches."""
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def rename_file(src: str, dst: str) -> None:
    """Replace dst with src (atomic on local file systems)."""
    if "://" not in src:
        os.replace(src, dst)
    else:
        delete_tree(dst)
        FileSystems.rename([src], [dst])


def write_atomic(path: str, data: bytes) -> None:
    """Replace the file at `path` in one step: readers see the old bytes or the new,
    never a part. A temporary file renamed over it locally; one object PUT (atomic by
    itself) on an object store."""
    if "://" in path:
        write_bytes(path, data)
        return
    makedirs(posixpath.dirname(path))
    temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def create_exclusive(path: str, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists; False when it already did. An
    O_EXCL create locally; a conditional PUT (if-none-match) on an object store."""
    if "://" in path:
        import fsspec  # the object-store client (s3fs, gcsfs) honours mode "xb" as if-none-match

        try:
            with fsspec.open(path, "xb") as f:
                f.write(data)
        except FileExistsError:
            return False
        return True
    makedirs(posixpath.dirname(path))
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as f:
        f.write(data)
    return True


def new_build_id() -> str:
    """Sortable by start time, unique across hosts: 20261205T163012Z-1a2b3c4d."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


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
    def quarantine(self) -> str:
        return join(self.dir, "quarantine")

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
    commit point), lease.json is held by the one build running (robolake/lease.py)."""

    root: str

    def __post_init__(self) -> None:
        if "://" not in self.root and os.path.exists(self.root) and not os.path.isdir(self.root):
            raise RobolakeError(f"--lake {self.root}: is a file, not a lake folder")

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

    def new_build(self, dataset: str, version: str) -> Build:
        return Build(join(self.version_root(dataset, version), "builds", new_build_id()), dataset, version)

    def build(self, dataset: str, version: str, build_id: str) -> Build:
        return Build(join(self.version_root(dataset, version), "builds", build_id), dataset, version)

    def current(self, dataset: str, version: str) -> dict | None:
        """The version's pointer document (build, fingerprint, replaced builds), None if unpublished."""
        path = self.pointer(dataset, version)
        return read_json(path) if exists(path) else None

    def current_build(self, dataset: str, version: str) -> Build:
        pointer = self.current(dataset, version)
        if pointer is None:
            raise RobolakeError(f"{dataset}:{version}: not published in {self.root}")
        return self.build(dataset, version, pointer["build"])

    def gold(self, dataset: str, version: str) -> str:
        """The published build's gold RLDS folder (a TFDS builder folder)."""
        return self.current_build(dataset, version).gold

    def silver_partition(self, dataset: str, table: str, version: str) -> str:
        return self.current_build(dataset, version).silver(table)

    def quarantine(self, dataset: str, version: str) -> str:
        return self.current_build(dataset, version).quarantine

    def reports(self, dataset: str, version: str) -> str:
        return join(self.root, "reports", dataset, version)

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
