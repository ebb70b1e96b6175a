"""Lake layout (see DESIGN.md) and file operations through Beam's FileSystems,
so a gs:// or s3:// lake root works the same as a local folder."""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems


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


def rename_dir(src: str, dst: str, last: str = "manifest.json") -> None:
    """Move a finished folder into place. Atomic on local and POSIX file systems.
    Object stores have no folder rename: files are moved one by one, a file named
    `last` after all others, so its presence marks the move as complete."""
    if "://" not in src:
        makedirs(posixpath.dirname(dst.rstrip("/")))
        FileSystems.rename([src], [dst])
        return
    files = sorted(list_files(join(src, "**")), key=lambda p: p.endswith("/" + last))
    FileSystems.rename(files, [dst.rstrip("/") + p[len(src.rstrip("/")) :] for p in files])


@dataclass(frozen=True)
class Lake:
    """Paths of one lake root."""

    root: str

    def raw_manifest(self) -> str:
        return join(self.root, "raw", "manifest.parquet")

    def gold_root(self) -> str:
        """The `data_dir` that `tfds.builder(name, data_dir=...)` takes."""
        return join(self.root, "gold", "rlds")

    def gold(self, dataset: str, version: str) -> str:
        return join(self.gold_root(), dataset, version)

    def silver(self, dataset: str, table: str) -> str:
        return join(self.root, "silver", dataset, table)

    def silver_partition(self, dataset: str, table: str, version: str) -> str:
        return join(self.silver(dataset, table), f"version={version}")

    def quarantine(self, dataset: str, version: str) -> str:
        return join(self.root, "quarantine", dataset, version)

    def reports(self, dataset: str, version: str) -> str:
        return join(self.root, "reports", dataset, version)

    def staging_root(self) -> str:
        return join(self.root, ".staging")

    def new_staging(self, dataset: str, version: str) -> str:
        return join(self.staging_root(), f"{dataset}-{version}-{uuid.uuid4().hex[:12]}")

    def stale_stagings(self, dataset: str, version: str) -> list[str]:
        """Leftovers of killed builds of this version (builds of one version don't run concurrently)."""
        prefix = join(self.staging_root(), f"{dataset}-{version}-")
        matches = FileSystems.match([prefix + "**"])[0].metadata_list
        return sorted({prefix + m.path[len(prefix):].split("/")[0] for m in matches})
