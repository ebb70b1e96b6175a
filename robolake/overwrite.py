"""The proof a command gives before it replaces a path the user named (DESIGN.md: anything
that replaces or deletes first proves that what it removes is its own and that nothing
still needs it). Every command that replaces such a path (a LeRobot export, a run's
checkpoints, a TorchScript export, an evaluation folder) calls `check_replace` first.

A path is refused, in one line naming it, when it:
- is, or holds, one of `keep` (the lake root, the files the command reads), --overwrite or not;
- lies inside one of `keep_out` (the lake, for outputs that have no place in it);
- exists and --overwrite was not given;
- exists, is not an empty folder, and is not what the command writes (`is_own`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from robolake.errors import RobolakeError
from robolake.storage import exists, is_remote, join, read_json, tree_files


def _normal(path: str) -> str:
    return path.rstrip("/") if is_remote(path) else os.path.realpath(path)


def _within(inner: str, outer: str) -> bool:
    """`inner` is `outer` or lies under it (both normalized)."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _empty_folder(path: str) -> bool:
    if is_remote(path):
        return not tree_files(path)
    return os.path.isdir(path) and not os.listdir(path)


def artifact_kind(folder: str) -> str | None:
    """The artifact kind of the provenance.json robolake wrote in `folder` ("checkpoint",
    "lerobot_export", ...); None when there is none or it is unreadable."""
    path = join(folder, "provenance.json")
    try:
        document = read_json(path) if exists(path) else None
    except (OSError, ValueError):
        return None
    artifact = document.get("artifact") if isinstance(document, dict) else None
    return artifact.get("kind") if isinstance(artifact, dict) else None


def check_replace(path: str, what: str, overwrite: bool, is_own: Callable[[str], bool],
                  keep: Mapping[str, str] | None = None, keep_out: Mapping[str, str] | None = None,
                  retry: str = "pass --overwrite to replace it") -> None:
    """Raise a RobolakeError unless `path` may be written, replacing what is there (see the
    module docstring). `what`: what the command writes, e.g. "a LeRobot export";
    `keep` and `keep_out`: {label: path}, e.g. {"the lake": lake.root}; `retry`: what to do
    about an existing path."""
    target = _normal(path)
    for label, kept in (keep or {}).items():
        if _within(_normal(kept), target):
            raise RobolakeError(f"{path} is or holds {label} ({kept}), which this command needs; "
                                f"choose another output path")
    for label, kept in (keep_out or {}).items():
        if _within(target, _normal(kept)):
            raise RobolakeError(f"{path} is inside {label} ({kept}); choose an output path outside it")
    if not exists(path):
        return
    if not overwrite:
        raise RobolakeError(f"{path} already exists; {retry}")
    if not _empty_folder(path) and not is_own(path):
        raise RobolakeError(f"{path} is not {what} that robolake wrote, so it is left as it is; choose another "
                            f"path, or remove it yourself if it is no longer needed")
