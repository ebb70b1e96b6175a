"""Atomic publication of a built version: everything is written under a staging
folder, then renamed into place, gold last. A killed build leaves no version."""

from __future__ import annotations

from robolake.errors import RobolakeError
from robolake.lake import Lake, delete_tree, exists, join, rename_dir


def refuse_existing(lake: Lake, dataset: str, version: str, overwrite: bool) -> None:
    path = lake.gold(dataset, version)
    if exists(path) and not overwrite:
        raise RobolakeError(
            f"{path} already exists and published versions are immutable: "
            "bump `version` in the dataset spec, or pass --overwrite to replace it"
        )


def remove_stale_staging(lake: Lake, dataset: str, version: str) -> list[str]:
    """Delete what killed builds of this version left behind; returns the folders removed."""
    stale = lake.stale_stagings(dataset, version)
    for path in stale:
        delete_tree(path)
    return stale


def publish(staging: str, moves: list[tuple[str, str]]) -> None:
    """Rename staged folders into place, in order (put gold last). A folder already
    at a destination (an --overwrite) is first moved aside into staging, so the old
    version stays whole until the new one replaces it; staging is deleted at the end."""
    for i, (src, dst) in enumerate(moves):
        if exists(dst):
            rename_dir(dst, join(staging, "_replaced", str(i)))
        if exists(src):
            rename_dir(src, dst)
    delete_tree(staging)
