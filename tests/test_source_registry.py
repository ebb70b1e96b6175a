"""The two registries of source formats agree, every reader fits SourceReader, and a
new format is one spec class checked by its class attributes."""

import inspect
from typing import ClassVar, Literal

import pytest
from pydantic import TypeAdapter, ValidationError

from pipelines.sources import READERS, SourceReader
from robolake.spec import SOURCE_SPECS, parse_spec
from robolake.spec.sources import BaseSourceSpec, source_union

PROTOCOL_METHODS = [name for name, member in vars(SourceReader).items()
                    if inspect.isfunction(member) and not name.startswith("_")]

HDF5_SPEC = {
    "name": "toy", "version": "1.0.0", "control_rate_hz": 10, "source": {"paths": ["raw/*.hdf5"]},
    "instruction": {"episode_attr": "language_instruction"},
}


def test_readers_and_spec_classes_name_the_same_formats():
    assert list(READERS) == list(SOURCE_SPECS)
    for fmt, model in SOURCE_SPECS.items():
        assert model.model_fields["format"].default == fmt


def test_protocol_lists_what_the_pipeline_calls():
    assert PROTOCOL_METHODS == ["find", "companions", "plan", "read", "state_width", "state_source",
                                "state_layout", "manifest_extras"]


@pytest.mark.parametrize("fmt", list(READERS))
def test_every_reader_satisfies_the_protocol(fmt):
    reader = READERS[fmt]
    for name in PROTOCOL_METHODS:
        method = getattr(reader, name, None)
        assert callable(method), f"{reader.__name__} has no {name}"
        wanted = list(inspect.signature(getattr(SourceReader, name)).parameters)
        given = list(inspect.signature(method).parameters)
        assert given == wanted, f"{reader.__name__}.{name}{given} is not {name}{wanted}"


class ToySourceSpec(BaseSourceSpec):
    value_kinds: ClassVar[tuple[str, ...]] = ("sidecar",)

    format: Literal["toy"] = "toy"
    paths: list[str]


def test_a_new_format_is_one_spec_class_in_the_registry():
    union = TypeAdapter(source_union({**SOURCE_SPECS, "toy": ToySourceSpec}))
    assert union.validate_python({"format": "toy", "paths": ["x"]}) == ToySourceSpec(paths=["x"])
    assert union.validate_python({"paths": ["x"]}).format == "hdf5"
    with pytest.raises(ValidationError, match="'hdf5', 'rosbag', 'rlds', 'lake', 'lerobot', 'toy'"):
        union.validate_python({"format": "csv"})


def test_a_new_format_is_checked_by_its_class_attributes():
    spec = parse_spec(HDF5_SPEC)
    with pytest.raises(ValueError, match=r"^instruction: episode_attr is not available for toy sources "
                                         r"\(use value or one of sidecar\)$"):
        ToySourceSpec(paths=["x"]).check(spec)
    keep = parse_spec({**HDF5_SPEC, "instruction": {"value": "pick"}}).model_copy(
        update={"splits": spec.splits.model_copy(update={"by": "keep"})})
    with pytest.raises(ValueError, match="splits.by: keep takes the source's splits, and toy sources have none"):
        ToySourceSpec(paths=["x"]).check(keep)
