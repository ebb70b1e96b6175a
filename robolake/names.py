"""Dataset names and versions, as specs and the command line give them (`NAME[:VERSION]`).

A name or version is a path component of the lake, so anything else (`..`, `/`,
an empty part) is refused before it reaches a path."""

from __future__ import annotations

import re

from robolake.errors import RobolakeError

NAME = r"[a-z][a-z0-9_]*"
VERSION = r"\d+\.\d+\.\d+"
IDENTIFIER = f"^{NAME}$"
SEMVER = f"^{VERSION}$"
VERSION_RULE = "versions are MAJOR.MINOR.PATCH strings, e.g. '1.0.0'"


def parse_reference(text: str) -> tuple[str, str | None]:
    """`NAME` or `NAME:VERSION` -> (name, version or None); RobolakeError naming the bad part."""
    name, colon, version = text.partition(":")
    if not re.fullmatch(NAME, name):
        raise RobolakeError(f"{text!r}: dataset name {name!r} must match {IDENTIFIER} "
                            f"(a lowercase letter, then lowercase letters, digits or _)")
    if colon and not re.fullmatch(VERSION, version):
        raise RobolakeError(f"{text!r}: version {version!r}: {VERSION_RULE}")
    return name, version if colon else None


def dataset_argument(text: str) -> str:
    """An argparse `type`: a NAME[:VERSION] argument, checked by parse_reference and kept as given."""
    parse_reference(text)
    return text
