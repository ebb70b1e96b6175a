"""Flags a build command hands to Apache Beam: the ones robolake's parser left over.

Beam only logs a flag it does not know ("Unparseable argument") and builds anyway, so a
misspelt robolake flag (`--verison 2.0.0`), a single-dash one (`-lake DIR`) or a second
spec would be ignored. Every leftover must be one of Beam's pipeline options (those of
every PipelineOptions subclass: runner, direct, Dataflow, Flink, Spark, Dask, ...) as Beam
reads them, `--name=value`, `--name value` or a `--name` that takes no value; anything
else is refused, a misspelt flag with the closest one."""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib

from apache_beam.options.pipeline_options import PipelineOptions

from robolake.arguments import ArgumentParser
from robolake.errors import RobolakeError


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


@functools.cache
def beam_option_flags() -> dict[str, int | str | None]:
    """Every --flag that Beam's PipelineOptions subclasses define, with its argparse
    nargs: 0 takes no value, None one, "?" an optional one."""
    importlib.import_module("apache_beam.runners.dask.dask_runner")  # defines DaskOptions: --dask_client_address, ...

    parser = ArgumentParser(add_help=False, conflict_handler="resolve")
    for options in _subclasses(PipelineOptions):
        options._add_argparse_args(parser)
    return {flag: action.nargs for action in parser._actions for flag in action.option_strings}


def _own_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The --flags of a parser and of its subcommands' parsers."""
    flags = set()
    for action in parser._actions:
        flags.update(flag for flag in action.option_strings if flag.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _own_flags(sub)
    return flags


def beam_flags(parser: ArgumentParser, leftovers: list[str]) -> list[str]:
    """`leftovers` of `parser.parse_known_args`, once each is a Beam option or its value."""
    known = beam_option_flags()
    items = iter(enumerate(leftovers))
    for index, item in items:
        flag, equals, _ = item.partition("=")
        if not flag.startswith("--"):
            what = "option" if item.startswith("-") else "argument"
            raise RobolakeError(f"unexpected {what} {item!r} ({parser.prog} --help lists its arguments; options, "
                                "Apache Beam's too, start with two dashes: --lake DIR, --runner=NAME)")
        if flag not in known:
            close = difflib.get_close_matches(flag, sorted(_own_flags(parser) | set(known)), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ": not robolake's, nor an Apache Beam pipeline option"
            raise RobolakeError(f"unknown option {flag}{hint}")
        if equals or known[flag] == 0:
            continue
        following = leftovers[index + 1] if index + 1 < len(leftovers) else "--"
        if not following.startswith("--"):
            next(items)  # `--name value`: the value is the next item
        elif known[flag] is None:
            raise RobolakeError(f"option {flag} needs a value: {flag}=VALUE")
    return leftovers
