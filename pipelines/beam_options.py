"""Flags a build command hands to Apache Beam: the ones robolake's parser left over.

Beam only logs a flag it does not know ("Unparseable argument") and builds anyway, so a
misspelt robolake flag (`--verison 2.0.0`) would be ignored. Every leftover `--flag` must
be one of Beam's pipeline options (those of every PipelineOptions subclass: runner,
direct, Dataflow, Flink, Spark, Dask, ...); anything else is refused with the closest flag."""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib

from apache_beam.options.pipeline_options import PipelineOptions

from robolake.errors import RobolakeError


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


@functools.cache
def beam_option_flags() -> frozenset[str]:
    """Every --flag that Beam's PipelineOptions subclasses define."""
    importlib.import_module("apache_beam.runners.dask.dask_runner")  # defines DaskOptions: --dask_client_address, ...

    parser = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")
    for options in _subclasses(PipelineOptions):
        options._add_argparse_args(parser)
    return frozenset(flag for action in parser._actions for flag in action.option_strings)


def _own_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The --flags of a parser and of its subcommands' parsers."""
    flags = set()
    for action in parser._actions:
        flags.update(flag for flag in action.option_strings if flag.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _own_flags(sub)
    return flags


def beam_flags(parser: argparse.ArgumentParser, leftovers: list[str]) -> list[str]:
    """`leftovers` of `parser.parse_known_args`, once every --flag in them is known to Beam."""
    known = beam_option_flags()
    for item in leftovers:
        flag = item.split("=", 1)[0]
        if flag.startswith("--") and flag != "--" and flag not in known:
            close = difflib.get_close_matches(flag, sorted(_own_flags(parser) | known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ": not robolake's, nor an Apache Beam pipeline option"
            raise RobolakeError(f"unknown option {flag}{hint}")
    return leftovers
