"""`robolake mix` and `robolake edit`: new versions derived from published gold versions.

Both write a lake-source spec (`source.format: lake`, pipelines/lake_source.py) and
build it with `robolake convert`'s pipeline, so a derived version is an ordinary
version: fresh statistics of its own train split, quality gate, reports, lineage to
every member version. Nothing is changed in place; a version that exists is refused.

- mix SPEC: a mixture spec names its members with weights, `where` filters and
  action/state/camera maps; what it leaves out is filled from its members (see
  `complete`).
- edit drop|retask|rename|resplit|trim NAME[:VERSION]: a one-member spec, the member's own
  spec sections kept (cameras, actions, normalization, output), its episode ids kept."""

from __future__ import annotations

import argparse

from pipelines.beam_options import beam_flags
from pipelines.build import BuildOutcome, convert
from robolake.arguments import ArgumentParser
from robolake.errors import RobolakeError, SpecError
from robolake.lake import GoldVersion, Lake
from robolake.names import dataset_argument
from robolake.pins import reading
from robolake.spec import LANGUAGE_INSTRUCTION, DatasetSpec, apply_override, parse_spec, read_yaml_mapping
from robolake.spec.sources import TrimRule
from robolake.sql import excluding, parse_condition

NO_FILTERS = {"zscore": None, "bounds": None, "jump": None}  # members' actions are already curated
KEPT_SECTIONS = ("control_rate_hz", "normalization", "episode_length", "output")


def inherited(spec: DatasetSpec) -> dict:
    """The sections a derived version takes from a member, as a lake source declares
    them: cameras by name, size and encoding; actions by name."""
    return {
        **spec.model_dump(mode="json", include=set(KEPT_SECTIONS)),
        "cameras": [cam.model_dump(mode="json", include={"name", "size", "encoding", "jpeg_quality"})
                    for cam in spec.cameras],
        "action": {"names": spec.action.names},
    }


def _metadata(versions: list[GoldVersion]) -> dict:
    """Every member metadata field, read from its episodes, and the member's name as `dataset`."""
    fields = sorted({field for v in versions for field in v.spec.metadata if field != "task"})
    metadata = {field: {"feature": f"episode_metadata/{field}"} for field in fields}
    metadata.setdefault("dataset", {"file_attr": "dataset"})
    return metadata


def complete(data: dict, lake: Lake, origin: str = "<mixture spec>") -> dict:
    """A lake-source spec with member versions pinned (NAME alone takes the latest) and
    what it leaves out taken from the first member: control rate, cameras, action
    names, normalization, episode length and shard size; instructions from the members,
    every member metadata field, the members' own splits, no outlier filters."""
    source = data.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("members"), list) or not source["members"]:
        raise SpecError(f"{origin}: source: a mixture spec needs source.members, "
                        f"a list of {{dataset: NAME[:VERSION], weight}}")
    source.setdefault("format", "lake")
    source["lake"] = lake.root
    versions = []
    for i, member in enumerate(source["members"]):
        if not isinstance(member, dict) or "dataset" not in member:
            raise SpecError(f"{origin}: source.members.{i}: give dataset: NAME[:VERSION]")
        version = lake.resolve(str(member["dataset"]))
        member["dataset"] = f"{version.dataset}:{version.version}"
        versions.append(version)
    for section, value in inherited(versions[0].spec).items():
        data.setdefault(section, value)
    data.setdefault("instruction", {"feature": LANGUAGE_INSTRUCTION})
    data.setdefault("metadata", _metadata(versions))
    data.setdefault("splits", {"by": "keep"})
    data.setdefault("filters", NO_FILTERS)
    return data


def build(data: dict, lake: Lake, beam_args: list[str], origin: str, overwrite: bool = False) -> BuildOutcome:
    """Validate a completed spec, build it, print the members' selection and the summary."""
    spec = parse_spec(data, origin=origin)
    outcome = convert(spec, lake, beam_args, overwrite=overwrite)
    for member in outcome.manifest["members"]:
        splits = ", ".join(f"{s} {n}" for s, n in member["episodes_by_split"].items())
        where = f", where {member['where']}" if member["where"] else ""
        retasked = f", {member['retasked']} retasked" if member["retasked"] else ""
        print(f"  {member['dataset']}:{member['version']} weight {member['weight']}{where}: "
              f"{member['kept']} of {member['episodes']} episodes kept, written {splits}{retasked}{_trimmed(member)}")
    print(outcome.summary_line())
    return outcome


def _trimmed(member: dict) -> str:
    """What a member's `trim` cut, for the summary (nothing without one)."""
    cut = member.get("trim")
    if cut is None:
        return ""
    quarantined = cut["episodes_idle_throughout"]
    idle = f", {quarantined} idle throughout (quarantined)" if quarantined else ""
    return f", {cut['episodes_trimmed']} trimmed: {cut['steps_kept']} of {cut['steps_in']} steps kept{idle}"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", default="lake", help="lake root (default: lake)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")


# -- robolake mix ---------------------------------------------------------------------------


@reading("mix")
def run_mix(argv: list[str]) -> BuildOutcome:
    parser = ArgumentParser(
        prog="robolake mix", description="Build a versioned mixture of published gold versions: per-member "
        "sampling weights, aligned action spaces, statistics computed on the mixture. Other flags go to Beam.")
    parser.add_argument("spec", help="mixture spec YAML (source.members), e.g. datasets/mixes/sample_tabletop_mix.yaml")
    parser.add_argument("--version", help="version to build (default: the spec's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one spec field, e.g. --set source.members.1.weight=0.5; repeatable")
    _common(parser)
    args, beam_args = parser.parse_known_args(argv)
    beam_args = beam_flags(parser, beam_args)
    data = read_yaml_mapping(args.spec, "mixture spec")
    for assignment in args.overrides:
        apply_override(data, assignment)
    if args.version:
        data["version"] = args.version
    lake = Lake(args.lake)
    return build(complete(data, lake, args.spec), lake, beam_args, origin=args.spec, overwrite=args.overwrite)


# -- robolake edit --------------------------------------------------------------------------


def next_minor(version: str) -> str:
    major, minor, _ = (int(part) for part in version.split("."))
    return f"{major}.{minor + 1}.0"


def edit_spec(source: GoldVersion, member: dict, name: str, version: str, splits: dict | None) -> dict:
    """A one-member spec deriving `name:version` from `source`, its sections kept."""
    return {
        **inherited(source.spec), "name": name, "version": version, "description": source.spec.description,
        "source": {"format": "lake", "members": [{"dataset": f"{source.dataset}:{source.version}", **member}]},
        "instruction": {"feature": LANGUAGE_INSTRUCTION},
        "metadata": {field: {"feature": f"episode_metadata/{field}"} for field in source.spec.metadata},
        "splits": splits or {"by": "keep"},
        "filters": NO_FILTERS,
    }


def _fractions(text: str) -> dict:
    try:
        return {"by": "episode_hash", "fractions": {k: float(v) for k, v in (p.split("=") for p in text.split(","))}}
    except ValueError:
        raise RobolakeError(f"--fractions {text!r}: expected SPLIT=FRACTION,..., e.g. train=0.8,val=0.1,test=0.1") from None


def _held_out(items: list[str]) -> dict:
    held_out = {}
    for item in items:
        split, sep, tasks = item.partition("=")
        if not sep or not tasks:
            raise RobolakeError(f"--held-out {item!r}: expected SPLIT=TASK[,TASK...], e.g. test=stack_blocks")
        held_out[split] = tasks.split(",")
    return {"by": "task", "held_out_tasks": held_out}


EDITS = {
    "drop": "drop the episodes a DuckDB condition over the episodes view selects",
    "retask": "give the episodes a condition selects a new instruction and/or task",
    "rename": "copy a version under a new dataset name",
    "resplit": "assign splits again: by episode-id hash in --fractions, or hold out tasks",
    "trim": "cut each episode's idle head and tail (idle as docs/quality.md defines it)",
}


def _edit_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="robolake edit", description="Derive a new version from a published one; the source is never changed. "
        "Other flags go to Beam.")
    operations = parser.add_subparsers(dest="operation", required=True, metavar="{" + ",".join(EDITS) + "}")
    for operation, text in EDITS.items():
        sub = operations.add_parser(operation, help=text, description=text)
        sub.add_argument("dataset", type=dataset_argument, help="NAME[:VERSION] to edit (default version: the latest)")
        if operation == "rename":
            sub.add_argument("new_name", help="the new dataset's name")
        sub.add_argument("--version", help="version to write (default: the next minor version; rename: the same)")
        if operation in ("drop", "retask"):
            sub.add_argument("--where", required=True, help="one DuckDB expression over the episodes view and its "
                                                            "episode_quality columns, e.g. \"lighting = 'side' AND "
                                                            "operator = 'operator_2'\" or \"idle_share > 0.6\"")
        if operation == "retask":
            sub.add_argument("--instruction", help="the new language instruction")
            sub.add_argument("--task", help="the new task label")
        if operation == "resplit":
            how = sub.add_mutually_exclusive_group(required=True)
            how.add_argument("--fractions", help="SPLIT=FRACTION,..., e.g. train=0.8,val=0.1,test=0.1")
            how.add_argument("--held-out", action="append", metavar="SPLIT=TASKS",
                             help="hold tasks out wholly, e.g. test=stack_blocks; repeatable")
        if operation == "trim":
            for flag, field in (("--keep-s", "keep_s"), ("--min-idle-s", "min_idle_s")):
                rule = TrimRule.model_fields[field]
                sub.add_argument(flag, type=float, help=f"{rule.description} (default: {rule.default})")
        _common(sub)
    return parser


@reading("edit")
def run_edit(argv: list[str]) -> BuildOutcome:
    parser = _edit_parser()
    args, beam_args = parser.parse_known_args(argv)
    beam_args = beam_flags(parser, beam_args)
    lake = Lake(args.lake)
    source = lake.resolve(args.dataset)
    name, splits, member = source.dataset, None, {}
    if args.operation == "drop":
        member["where"] = excluding(args.where, "--where")
    elif args.operation == "retask":
        if args.instruction is None and args.task is None:
            raise RobolakeError("edit retask: give --instruction, --task or both")
        parse_condition(args.where, "--where")  # refused as the flag, not as the spec's retask.0.where
        rule = {"where": args.where, "instruction": args.instruction, "task": args.task}
        member["retask"] = [{k: v for k, v in rule.items() if v is not None}]
    elif args.operation == "rename":
        name = args.new_name
    elif args.operation == "trim":
        member["trim"] = {k: v for k, v in (("keep_s", args.keep_s), ("min_idle_s", args.min_idle_s)) if v is not None}
    elif args.operation == "resplit":
        splits = _fractions(args.fractions) if args.fractions else _held_out(args.held_out)
    version = args.version or (source.version if args.operation == "rename" else next_minor(source.version))
    data = edit_spec(source, member, name, version, splits)
    data["source"]["lake"] = lake.root
    return build(data, lake, beam_args, origin=f"robolake edit {args.operation} {args.dataset}",
                 overwrite=args.overwrite)
