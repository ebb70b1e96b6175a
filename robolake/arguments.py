"""The command-line parser that every robolake command builds its options with."""

from __future__ import annotations

import argparse


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser without prefix matching: `--overwrit` is not taken for the
    destructive `--overwrite`, and a build command refuses it instead of handing it on to
    Beam. The parsers of subcommands (add_subparsers) are of this class too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def positive_int(text: str) -> int:
    """An argparse type: a whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return value
