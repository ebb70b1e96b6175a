"""File operations through Beam's FileSystems, and through fsspec for s3://, so that a
gs:// or s3:// path works the same as a local one. Every read and write of the lake goes
through here; robolake/lake.py says which path holds what.

s3:// goes through fsspec (s3fs) here: Beam's S3 filesystem builds a new boto3 client for
every call (about 0.4 s each on two cores, a minute for one `validate`), while one s3fs
instance serves them all. s3fs and Beam's boto3 client (the pipelines' workers write
shards through Beam's FileSystems) both take the endpoint, credentials and region from
the AWS_* environment (AWS_ENDPOINT_URL for MinIO, moto or another S3-compatible store;
Beam's --s3_endpoint_url flag works too inside a pipeline). Beam builds its S3 client
from pipeline options only, so this module hands FileSystems empty ones when no pipeline
has set any. s3fs's listing cache is off: Beam's workers write behind its back.

An object store has no folders: `delete_tree` deletes every object under the prefix,
`copy_tree` copies object by object (there is no rename). DuckDB and pyarrow read the
lake through `arrow_filesystem`, TFDS through a local copy (`GoldVersion.local`, kept
under `cache_dir`)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import posixpath
import shutil
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.value_provider import RuntimeValueProvider

if FileSystems._pipeline_options is None and RuntimeValueProvider.runtime_options is None:
    FileSystems.set_options(PipelineOptions([]))  # Beam's S3 client is built from options (the AWS_* env fills them)

COPY_CHUNK = 16 << 20


def is_remote(path: str) -> bool:
    """An object-store path (gs://, s3://), not a local one."""
    return "://" in path


def _s3(path: str):
    """(s3fs filesystem, path without s3://) for an s3:// path; None for any other."""
    return arrow_filesystem(path) if path.startswith("s3://") else None


def arrow_filesystem(path: str):
    """(filesystem, path without its scheme) that pyarrow.dataset and pq.ParquetFile take:
    fsspec's for a remote path (s3fs's endpoint from AWS_ENDPOINT_URL), (None, path) for
    a local one."""
    if not is_remote(path):
        return None, path
    import fsspec

    scheme, bare = path.split("://", 1)
    options = {"use_listings_cache": False}
    if scheme == "s3" and os.environ.get("AWS_ENDPOINT_URL"):
        options["client_kwargs"] = {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}
    return fsspec.filesystem(scheme, **options), bare


def join(*parts: str) -> str:
    return FileSystems.join(*parts) if is_remote(parts[0]) else posixpath.join(*parts)


def exists(path: str) -> bool:
    s3 = _s3(path)
    return s3[0].exists(s3[1]) if s3 else FileSystems.exists(path)


def open_read(path: str):
    """A binary file object to read `path` (no decompression)."""
    s3 = _s3(path)
    return s3[0].open(s3[1], "rb") if s3 else FileSystems.open(path, compression_type="uncompressed")


def open_write(path: str):
    """A binary file object that writes (replaces) `path`; local parents are created."""
    makedirs(posixpath.dirname(path))
    s3 = _s3(path)
    return s3[0].open(s3[1], "wb") if s3 else FileSystems.create(
        path, mime_type="application/octet-stream", compression_type="uncompressed")


def write_bytes(path: str, data: bytes) -> None:
    with open_write(path) as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def write_json(path: str, obj: object) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str) -> object:
    return json.loads(read_bytes(path))


def write_table(path: str, table: pa.Table) -> None:
    """Write a Parquet file (zstd)."""
    with open_write(path) as f:
        pq.write_table(table, f, compression="zstd")


def read_table(path: str) -> pa.Table:
    with open_read(path) as f:
        return pq.read_table(f)


def parquet_file(path: str) -> pq.ParquetFile:
    """A Parquet file opened for reading row groups, in the lake's file system."""
    filesystem, bare = arrow_filesystem(path)
    return pq.ParquetFile(bare, filesystem=filesystem)


def makedirs(path: str) -> None:
    """Create a local folder and its parents; object stores have no folders."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def delete_tree(path: str) -> None:
    """Delete a file or a folder; on an object store, every object under the prefix."""
    s3 = _s3(path)
    if s3:
        if s3[0].exists(s3[1]):
            s3[0].rm(s3[1], recursive=True)
    elif not is_remote(path):
        if FileSystems.exists(path):
            FileSystems.delete([path])
    else:
        objects = ([path] if FileSystems.exists(path) else []) + tree_files(path)
        if objects:
            FileSystems.delete(objects)


def _matches(pattern: str) -> dict[str, int]:
    """Path -> size of every file matching a glob (`*` within a path segment, `**` across)."""
    s3 = _s3(pattern)
    if s3:
        found = s3[0].glob(s3[1], detail=True)
        return {f"s3://{name}": info["size"] for name, info in found.items() if info["type"] == "file"}
    return {m.path: m.size_in_bytes for m in FileSystems.match([pattern])[0].metadata_list}


def list_files(pattern: str) -> list[str]:
    """Paths matching a glob, sorted; [] when nothing matches."""
    return sorted(_matches(pattern))


def tree_files(path: str) -> list[str]:
    """Every file under a folder, sorted; [] when it does not exist."""
    return list_files(join(path, "**"))


def tree_bytes(path: str) -> int:
    """Bytes of every file under a folder (0 when it does not exist)."""
    return sum(_matches(join(path, "**")).values())


def copy_file(source: str, target: str) -> None:
    """Copy one file between any two places (local, gs://, s3://), streamed."""
    with open_read(source) as src, open_write(target) as dst:
        shutil.copyfileobj(src, dst, COPY_CHUNK)


def copy_tree(source: str, target: str) -> list[str]:
    """Copy every file under the folder `source` to the same relative path under `target`
    (a download, an upload or a copy within a store); returns the files written."""
    prefix = source.rstrip("/") + "/"
    written = []
    for path in tree_files(source):
        destination = join(target, *path[len(prefix):].split("/"))
        copy_file(path, destination)
        written.append(destination)
    return written


def cache_dir() -> str:
    """The local folder of copies of remote objects ($ROBOLAKE_CACHE, default ~/.cache/robolake)."""
    return os.environ.get("ROBOLAKE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "robolake")


def create_exclusive(path: str, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists; False when it already did. The file
    appears whole or not at all: locally `data` is written to a hidden sibling first and
    hard-linked into place (a link fails if the name exists); on an object store it is a
    conditional PUT (if-none-match)."""
    if is_remote(path):
        filesystem, bare = arrow_filesystem(path)
        try:  # s3fs and gcsfs honour mode "xb" as if-none-match
            with filesystem.open(bare, "xb") as f:
                f.write(data)
        except FileExistsError:
            return False
        return True
    makedirs(posixpath.dirname(path))
    staging = _hidden_sibling(path)
    try:
        with open(staging, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(staging, path)
    except FileExistsError:
        return False
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return True


def replace_if(path: str, data: bytes, expected: bytes | None) -> bool:
    """Compare-and-swap: replace `path` with `data` only while it still holds `expected`
    (None: only while it does not exist); False, writing nothing, when it holds anything
    else. Locally the compare and the rename run under an exclusive lock (flock) on a hidden
    sibling lock file; on S3 it is one conditional PUT: If-Match the ETag of `expected` (the
    MD5 of a single-part object, as every robolake pointer is) or If-None-Match. Other
    object stores compare, then write: not atomic."""
    if path.startswith("s3://"):
        return _s3_replace_if(path, data, expected)
    if is_remote(path):
        current = read_bytes(path) if exists(path) else None
        if current != expected:
            return False
        write_bytes(path, data)
        return True
    makedirs(posixpath.dirname(path))
    parent, name = posixpath.split(path)
    with open(posixpath.join(parent, f".{name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path, "rb") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != expected:
            return False
        staging = _hidden_sibling(path)
        with open(staging, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    return True


def _s3_replace_if(path: str, data: bytes, expected: bytes | None) -> bool:
    filesystem, bare = arrow_filesystem(path)
    bucket, key = bare.split("/", 1)
    condition = ({"IfNoneMatch": "*"} if expected is None
                 else {"IfMatch": '"' + hashlib.md5(expected, usedforsecurity=False).hexdigest() + '"'})
    try:
        filesystem.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
    except (FileExistsError, FileNotFoundError):  # If-None-Match failed; If-Match on a missing object
        return False
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # s3fs's PreconditionFailed (If-Match)
            return False
        raise
    return True


def modified_at(path: str) -> float:
    """When the file at `path` was last written (seconds since the epoch)."""
    if not is_remote(path):
        return os.path.getmtime(path)
    filesystem, bare = arrow_filesystem(path)
    return filesystem.modified(bare).timestamp()


def _hidden_sibling(path: str) -> str:
    parent, name = posixpath.split(path)
    return posixpath.join(parent, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
