"""Write beside, then move into place: the one way robolake replaces a file or a folder
that readers may be looking at (the raw manifest, a version's pointer, a lease, a
checkpoint bundle, a LeRobot export).

Readers see the old content or the new, whole, never a part:
- a file is written to a hidden sibling, flushed to disk and renamed over the target
  (atomic on POSIX); on an object store it is one PUT, atomic by itself;
- a folder is written to a hidden sibling; the old one is renamed aside, the new one
  renamed in, and the old one deleted. A crash between those two renames leaves the old
  folder aside, and the next `staged()` of that path puts it back first.

On an object store a folder has no rename: its objects are copied in and the staging
prefix deleted, which readers can see half-done. Dataset versions do not depend on it:
their commit point is the single pointer object (robolake/publish.py)."""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from apache_beam.io.filesystems import FileSystems

from robolake.storage import delete_tree, makedirs, write_bytes


def _sibling(path: str, kind: str) -> str:
    parent, name = posixpath.split(path.rstrip("/"))
    return posixpath.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.{kind}")


def _aside(path: str) -> list[str]:
    """Old folders of `path` set aside by a swap that did not finish."""
    parent, name = os.path.split(path.rstrip("/"))
    if not os.path.isdir(parent or "."):
        return []
    return sorted(os.path.join(parent, entry) for entry in os.listdir(parent or ".")
                  if entry.startswith(f".{name}.") and entry.endswith(".replaced"))


def _restore_interrupted(path: str) -> None:
    """Put back the old folder of a swap killed between its two renames."""
    aside = _aside(path)
    if aside and not os.path.exists(path):
        os.replace(aside[-1], path)
    for leftover in _aside(path):
        shutil.rmtree(leftover, ignore_errors=True)


def _move_into_place(staging: str, path: str) -> None:
    if os.path.isdir(staging) and os.path.exists(path):
        aside = _sibling(path, "replaced")
        os.replace(path, aside)
        os.replace(staging, path)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, path)


@contextmanager
def staged(path: str) -> Iterator[str]:
    """Yield the path to write `path`'s new content at (a file or a folder: the block
    creates it); on a clean exit it replaces `path`, on an exception it is deleted and
    `path` is left as it was."""
    remote = "://" in path
    if not remote:
        makedirs(os.path.dirname(os.path.abspath(path)))
        _restore_interrupted(path)
    staging = _sibling(path, "staging")
    try:
        yield staging
        if remote:
            delete_tree(path)
            FileSystems.rename([staging], [path])
        else:
            _move_into_place(staging, path)
    except BaseException:
        if remote:
            delete_tree(staging)
        elif os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
        elif os.path.exists(staging):
            os.remove(staging)
        raise


def write_atomic(path: str, data: bytes) -> None:
    """Replace the file at `path` with `data` in one step."""
    if "://" in path:
        write_bytes(path, data)  # one PUT: atomic by itself
        return
    with staged(path) as staging:
        with open(staging, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

