"""lake/raw/manifest.parquet: every registered source file with its sha256.

Hashing raw camera data is a large share of a conversion's cost (uncompressed
frames are ~1 MB a step), so a file whose path, size and modification time match
its registered entry keeps its hash, as DVC does. `--rehash` ignores the entries."""

from __future__ import annotations

import pyarrow as pa

from robolake.lake import Lake
from robolake.staging import staged
from robolake.storage import exists, read_table, write_table
from schemas.tables import RAW_MANIFEST_SCHEMA


def registered(lake: Lake) -> dict[str, dict]:
    """path -> its registered row ({} when nothing is registered yet)."""
    path = lake.raw_manifest()
    if not exists(path):
        return {}
    return {row["path"]: row for row in read_table(path).to_pylist()}


def known_sha256(entry: dict | None, size: int, mtime: float) -> str | None:
    """The registered hash when the file still has the registered size and mtime."""
    if entry is None or entry["bytes"] != size or entry["mtime"] != mtime:
        return None
    return entry["sha256"]


def register(lake: Lake, rows: list[dict]) -> None:
    """Add or update rows (path, sha256, bytes, mtime, format), replacing the file in one step."""
    merged = {**registered(lake), **{row["path"]: row for row in rows}}
    table = pa.Table.from_pylist(sorted(merged.values(), key=lambda r: r["path"]), schema=RAW_MANIFEST_SCHEMA)
    with staged(lake.raw_manifest()) as staging:
        write_table(staging, table)
