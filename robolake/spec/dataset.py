"""Dataset spec: the YAML file in datasets/ that says how raw files become an RLDS dataset.

`DatasetSpec` is the whole spec, validated with pydantic; `parse_spec` turns any
problem into one `SpecError` naming the origin, the field and what is allowed."""

from __future__ import annotations

import hashlib
import json
import re
import typing

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from robolake.errors import SpecError
from robolake.names import IDENTIFIER, SEMVER, VERSION, VERSION_RULE
from robolake.spec.fields import (
    ActionSpec,
    CameraSpec,
    EpisodeLength,
    FilterSpec,
    NormalizationSpec,
    OutputSpec,
    RewardSpec,
    SplitPolicy,
    StateSpec,
    StrictModel,
    ValueSource,
)
from robolake.spec.sources import SOURCE_SPECS, SourceSpec


class DatasetSpec(StrictModel):
    """A whole dataset spec; its source checks the fields it fills (`source.check`)."""

    name: str = Field(pattern=IDENTIFIER)
    version: str = Field(pattern=SEMVER)
    description: str = ""
    source: SourceSpec
    control_rate_hz: float = Field(gt=0)
    cameras: list[CameraSpec] = Field(default_factory=list)
    state: StateSpec = Field(default_factory=StateSpec)
    action: ActionSpec = Field(default_factory=ActionSpec)
    reward: RewardSpec = Field(default_factory=RewardSpec)
    instruction: ValueSource
    metadata: dict[str, ValueSource] = Field(default_factory=dict)
    episode_length: EpisodeLength = Field(default_factory=EpisodeLength)
    splits: SplitPolicy = Field(default_factory=SplitPolicy)
    output: OutputSpec = Field(default_factory=OutputSpec)
    filters: FilterSpec = Field(default_factory=FilterSpec)
    normalization: NormalizationSpec = Field(default_factory=NormalizationSpec)

    @field_validator("version", mode="before")
    @classmethod
    def _semver(cls, version: object) -> object:
        """A version is a string: YAML reads `version: 1.0` as a float."""
        if not isinstance(version, str) or not re.fullmatch(VERSION, version):
            raise PydanticCustomError("semver", f"{VERSION_RULE} (got {{got}})", {"got": repr(version)})
        return version

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        """Names unique, per-dimension lists as wide as the action, fields the source can fill."""
        cams = [c.name for c in self.cameras]
        if len(cams) != len(set(cams)):
            raise ValueError(f"camera names must be unique, got {cams}")
        for field in self.metadata:
            if not re.match(IDENTIFIER, field) or field in ("episode_id", "source_path", "source_sha256",
                                                            "truncated", "resolution_change"):
                raise ValueError(f"metadata field {field!r} must match {IDENTIFIER} and not be a reserved name")
        width = len(self.action.names)
        for name, values in (("normalization.mask", self.normalization.mask),
                             ("filters.bounds.min", self.filters.bounds and self.filters.bounds.min),
                             ("filters.bounds.max", self.filters.bounds and self.filters.bounds.max)):
            if values is not None and len(values) != width:
                raise ValueError(f"{name} needs one value per action dimension ({width}), got {len(values)}")
        unknown = set(self.filters.dims or []) - set(self.action.names)
        if unknown:
            raise ValueError(f"filters.dims {sorted(unknown)} are not action names {self.action.names}")
        self.source.check(self)
        return self

    def action_mask(self) -> list[bool]:
        """Which action dimensions are normalized: the spec's mask, or all but gripper ones."""
        return self.normalization.mask or ["gripper" not in name for name in self.action.names]

    def filtered_dims(self) -> list[int]:
        """Indices of the action dimensions the zscore and jump rules look at."""
        names = self.filters.dims or [name for name in self.action.names if "gripper" not in name]
        return [self.action.names.index(name) for name in names]

    def fingerprint(self) -> str:
        """sha256 of the spec's canonical JSON: equal specs give equal hashes."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The spec model inside an annotation such as `list[CameraSpec]` or `dict[str, ValueSource]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if model := _model_in(arg):
            return model
    return None


def _allowed_fields(loc: tuple) -> list[str]:
    """Field names allowed where an unknown field was found."""
    model: type[BaseModel] | None = DatasetSpec
    for part in loc[:-1]:
        if model is None:
            return []
        if isinstance(part, str) and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
        elif part in SOURCE_SPECS:  # the tag of the source union in the error location
            model = SOURCE_SPECS[part]
    return list(model.model_fields) if model else []


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"] if part not in SOURCE_SPECS) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field (allowed: {', '.join(_allowed_fields(error['loc']))})"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    if error["type"] == "union_tag_invalid":
        return f"{where}.format: must be one of {error['ctx']['expected_tags']}, got {error['ctx']['tag']!r}"
    return f"{where}: {error['msg']}"


def parse_spec(data: object, origin: str = "<spec>") -> DatasetSpec:
    """Validate an already-loaded spec mapping; errors name `origin` and the field."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a dataset spec must be a YAML mapping, got {type(data).__name__}")
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise SpecError(f"{origin}: invalid dataset spec: {problems}") from None
