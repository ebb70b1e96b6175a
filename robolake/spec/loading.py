"""Reading dataset spec YAML files: duplicate keys refused, `--set` overrides applied,
every problem one `SpecError` naming the file."""

from __future__ import annotations

import typing

import yaml

from robolake.errors import SpecError
from robolake.spec.dataset import DatasetSpec, parse_spec


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (SafeLoader keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base`: the keys given beside it override the merged ones
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # SafeLoader refuses it with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: where, then what."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + " ".join(str(getattr(exc, "problem", None) or exc).split())


def apply_override(data: dict, assignment: str) -> None:
    """Apply one `dotted.key=value` override (value parsed as YAML) to a spec mapping,
    e.g. `splits.fractions.train=0.7` or `cameras.0.size=[128,128]`."""
    key, sep, raw_value = assignment.partition("=")
    if not sep or not key:
        raise SpecError(f"--set {assignment!r}: expected KEY=VALUE, e.g. splits.fractions.train=0.7")
    try:
        value = yaml.load(raw_value, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {assignment!r}: value is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise SpecError(f"--set {assignment!r}: value is nested too deeply to read") from None
    *parents, last = key.split(".")
    node: object = data
    for part in parents:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise SpecError(f"--set {assignment!r}: {part!r} is not a section of the spec")
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SpecError(f"--set {assignment!r}: cannot set {last!r} there")


def read_yaml_mapping(path: str, what: str = "dataset spec") -> dict:
    """The mapping a spec YAML file holds; one SpecError naming the file when it is
    missing, a folder, not UTF-8 text, not YAML, nested too deeply, gives a key twice or
    is not a mapping."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise SpecError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, not a {what} YAML file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file; a {what} is UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:  # PyYAML builds nested collections recursively
        raise SpecError(f"{path}: nested too deeply to read; a {what} is a few levels of mappings and lists") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a {what} must be a YAML mapping of fields, got {type(data).__name__}")
    return data


def load_spec(path: str, overrides: list[str] = ()) -> DatasetSpec:
    """Read a spec YAML file, apply `--set` overrides, validate."""
    data = read_yaml_mapping(path)
    if overrides:
        for assignment in overrides:
            apply_override(data, assignment)
        path = f"{path} (with --set {' '.join(overrides)})"
    return parse_spec(data, origin=path)
