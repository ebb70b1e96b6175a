"""File operations through Beam's FileSystems (and fsspec where Beam has no call for it),
so that a gs:// or s3:// path works the same as a local one. Every read and write of the
lake goes through here; robolake/lake.py says which path holds what."""

from __future__ import annotations

import json
import os
import posixpath

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


def tree_bytes(path: str) -> int:
    """Bytes of every file under a folder (0 when it does not exist)."""
    result = FileSystems.match([join(path, "**")])[0]
    return sum(m.size_in_bytes for m in result.metadata_list)


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
