"""Content hashes of source files, streamed through Beam's FileSystems."""

from __future__ import annotations

import hashlib

from apache_beam.io.filesystems import FileSystems

CHUNK_BYTES = 4 << 20


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type="uncompressed") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
