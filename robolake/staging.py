"""Write beside, then move into place: the one way robolake replaces a file or a folder
that readers may be looking at (the raw manifest, a version's pointer, a lease, a
checkpoint bundle, a LeRobot export).

Readers see the old content or the new, whole, never a part:
- a file is written to a hidden sibling, flushed to disk and renamed over the target
  (atomic on POSIX); on an object store it is one PUT, atomic by itself;
- a folder is written to a hidden sibling; the old one is renamed aside, the new one
  renamed in, and the old one deleted. A crash between those two renames leaves the old
  folder aside, and the next `staged()` of that path puts it back first.

On an object store, `staged()` yields a local path (in a temporary folder), so that any
writer works, and uploads what the block wrote on a clean exit: a file in one PUT, a
folder object by object after deleting the old objects, which readers can see half-done.
Dataset versions do not depend on it: their commit point is the single pointer object
(robolake/publish.py)."""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from robolake.storage import copy_file, copy_tree, delete_tree, is_remote, makedirs, write_bytes


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
    if is_remote(path):
        with _staged_upload(path) as staging:
            yield staging
        return
    makedirs(os.path.dirname(os.path.abspath(path)))
    _restore_interrupted(path)
    staging = _sibling(path, "staging")
    try:
        yield staging
        _move_into_place(staging, path)
    except BaseException:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
        elif os.path.exists(staging):
            os.remove(staging)
        raise


@contextmanager
def _staged_upload(path: str) -> Iterator[str]:
    """`staged` of an object-store path: written locally, uploaded on a clean exit."""
    local = tempfile.mkdtemp(prefix="robolake-upload-")
    try:
        staging = os.path.join(local, posixpath.basename(path.rstrip("/")))
        yield staging
        if os.path.isdir(staging):
            delete_tree(path)
            copy_tree(staging, path)
        else:
            copy_file(staging, path)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def write_atomic(path: str, data: bytes) -> None:
    """Replace the file at `path` with `data` in one step."""
    if is_remote(path):
        write_bytes(path, data)  # one PUT: atomic by itself
        return
    with staged(path) as staging:
        with open(staging, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

