"""Dataset spec: the YAML file in datasets/ that says how raw files become an RLDS dataset.

Loaded with `load_spec(path)`, validated with pydantic. Any problem ends in one
`SpecError` naming the file, the field and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from robolake.errors import SpecError
from robolake.names import IDENTIFIER, NAME, SEMVER, VERSION, VERSION_RULE

DEFAULT_ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValueSource(_Strict):
    """Where a per-episode text value comes from: exactly one of a fixed value, an
    attribute of the source file or of the episode (HDF5), the first std_msgs/String
    on a topic or a key of the bag's sidecar YAML (rosbag), a feature of the episode
    (RLDS).

    Attribute paths are `attr` or `group/sub/attr`, relative to the file root
    (file_attr) or to the episode's group (episode_attr). For an RLDS source,
    file_attr is one of `split`, `dataset`, `version` (the source shard's split and its
    dataset_info.json name and version), and `feature` is a feature path:
    `steps/language_instruction` (its first step's value) or `episode_metadata/file_path`."""

    value: str | None = None
    file_attr: str | None = None
    episode_attr: str | None = None
    topic: str | None = None
    sidecar: str | None = None
    feature: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ValueSource:
        given = [k for k in VALUE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of: {', '.join(VALUE_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in VALUE_KINDS if getattr(self, k) is not None)


VALUE_KINDS = ("value", "file_attr", "episode_attr", "topic", "sidecar", "feature")
RLDS_FILE_ATTRS = ("split", "dataset", "version")
LANGUAGE_INSTRUCTION = "steps/language_instruction"


class TopicSpec(_Strict):
    """One message stream of a bag, resampled onto the control ticks. Its vector is the
    `fields` given (dotted paths, scalars or sequences) or the standard layout of its
    type: JointState positions (ordered by `joints`), Pose(Stamped) [x y z qx qy qz qw],
    Twist(Stamped) [vx vy vz wx wy wz], Odometry pose + twist, a scalar `data`."""

    topic: str = Field(min_length=1)
    fields: list[str] | None = Field(default=None, min_length=1)
    joints: list[str] | None = Field(default=None, min_length=1, description="JointState joint names, in order")
    max_age_s: float | None = Field(
        default=None, gt=0, description="staleness limit at a tick (default: source.max_age_s; .inf: latched topic)"
    )
    delta: Literal["difference", "pose"] | None = Field(
        default=None,
        description="actions only: derive the value at a tick from this tick's and the next tick's message: "
        "`difference` v[t+1] - v[t]; `pose` position difference + rotation change as roll/pitch/yaw "
        "(from a Pose, PoseStamped or Odometry). The last tick of an episode then has no action and is cut.",
    )


class CameraSpec(_Strict):
    name: str = Field(pattern=IDENTIFIER)
    key: str | None = Field(
        default=None, description="dataset path in the episode (HDF5; layout default if unset) or step feature "
        "path (RLDS, e.g. steps/observation/image_0; default steps/observation/<name>)"
    )
    size: tuple[int, int] = Field(default=(256, 256), description="output (height, width)")
    encoding: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(default=95, ge=1, le=100)
    channel_order: Literal["rgb", "bgr"] = Field(default="rgb", description="channel order of the source frames")
    topic: str | None = Field(default=None, description="rosbag: the Image or CompressedImage topic")
    max_age_s: float | None = Field(default=None, gt=0, description="rosbag: staleness limit (default: source's)")

    @field_validator("size")
    @classmethod
    def _positive(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 8 or max(size) > 4096:
            raise ValueError("height and width must be between 8 and 4096")
        return size


class StateSpec(_Strict):
    keys: list[str] | None = Field(
        default=None, description="HDF5: datasets concatenated into the state vector; RLDS: step feature paths, "
        "each optionally sliced (steps/observation/state[0:6]; default steps/observation/state)"
    )
    topics: list[TopicSpec] | None = Field(default=None, description="rosbag: streams concatenated into the state")


class ActionSpec(_Strict):
    keys: list[str] | None = Field(
        default=None, description="HDF5: datasets concatenated into the action vector; RLDS: step feature paths, "
        "each optionally sliced (default steps/action)"
    )
    topics: list[TopicSpec] | None = Field(default=None, description="rosbag: streams concatenated into the action")
    names: list[str] = Field(default_factory=lambda: list(DEFAULT_ACTION_NAMES), min_length=1)


class RewardSpec(_Strict):
    key: str | None = Field(
        default=None, description="dataset (RLDS: step feature) of per-step rewards; unset: RLDS steps/reward, "
        "else 1.0 on the last step, 0 elsewhere"
    )


class EpisodeLength(_Strict):
    min_steps: int = Field(default=2, ge=1)
    max_steps: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> EpisodeLength:
        if self.max_steps is not None and self.max_steps < self.min_steps:
            raise ValueError("max_steps must be >= min_steps")
        return self


class SplitPolicy(_Strict):
    """`episode_hash`: each episode goes to a split by a stable hash of its id, in the
    given fractions. `task`: every task listed in held_out_tasks goes wholly to its
    split, every other task to train. `keep` (rlds and lake sources): each episode keeps
    the split its source put it in."""

    by: Literal["episode_hash", "task", "keep"] = "episode_hash"
    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    held_out_tasks: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> SplitPolicy:
        for name in list(self.fractions) + list(self.held_out_tasks):
            if not re.match(IDENTIFIER, name):
                raise ValueError(f"split name {name!r} must match {IDENTIFIER}")
        if self.by == "episode_hash":
            if "train" not in self.fractions:
                raise ValueError("fractions must include train")
            if any(f < 0 for f in self.fractions.values()) or abs(sum(self.fractions.values()) - 1) > 1e-6:
                raise ValueError(f"fractions must be >= 0 and sum to 1, got {self.fractions}")
        elif self.by == "task":
            if not self.held_out_tasks:
                raise ValueError("by: task needs held_out_tasks, e.g. {test: [stack_blocks]}")
            if "train" in self.held_out_tasks:
                raise ValueError("held_out_tasks names the held-out splits; train gets every other task")
            tasks = [t for ts in self.held_out_tasks.values() for t in ts]
            if len(tasks) != len(set(tasks)):
                raise ValueError("a task is listed under two splits")
        return self


Terminal = Annotated[Literal["from_source", "last_step"], Field(
    description="is_terminal on an episode's last step: `from_source` (HDF5 `dones`, RLDS `is_terminal`; "
    "a bag has none) or `last_step` (every episode ends in a terminal state, e.g. recordings stopped at "
    "task success). An episode that does not end in one is marked truncated.",
)]


class Hdf5SourceSpec(_Strict):
    format: Literal["hdf5"] = "hdf5"
    layout: Literal["robomimic", "robosuite", "aloha", "generic"] = "generic"
    paths: list[str] = Field(min_length=1, description="file globs, relative to the working directory or URLs")
    episodes: str | None = Field(
        default=None,
        description="glob of episode groups inside a file ('data/demo_*'); '/' for one episode per file",
    )
    terminal: Terminal = "from_source"


class EpisodeSplitSpec(_Strict):
    """Where one bag is cut into several episodes (unset: one bag is one episode)."""

    marker_topic: str | None = Field(default=None, description="every message on this topic starts an episode")
    gap_s: float | None = Field(default=None, gt=0, description="a pause longer than this between messages")

    @model_validator(mode="after")
    def _one(self) -> EpisodeSplitSpec:
        if (self.marker_topic is None) == (self.gap_s is None):
            raise ValueError("give exactly one of: marker_topic, gap_s")
        return self


ROS_DISTROS = ("ros1_noetic", "ros2_foxy", "ros2_humble", "ros2_iron", "ros2_jazzy")


class RosbagSourceSpec(_Strict):
    """ROS 1 .bag files, ROS 2 bag folders, or ROS 2 .db3/.mcap storage files."""

    format: Literal["rosbag"] = "rosbag"
    paths: list[str] = Field(min_length=1, description="globs of bag files or ROS 2 bag folders")
    distro: Literal[ROS_DISTROS] = Field(
        default="ros2_humble", description="typestore for types the bag does not define itself"
    )
    msg_files: dict[str, str] = Field(default_factory=dict, description="custom types: {pkg/msg/Type: path to .msg}")
    stamps: Literal["header", "receive"] = Field(
        default="header", description="header stamps where a message has one, or the bag's receive times"
    )
    reference_topic: str | None = Field(
        default=None, description="ticks at this topic's messages instead of at control_rate_hz"
    )
    max_age_s: float = Field(default=0.2, gt=0, description="default staleness limit of every stream at a tick")
    split: EpisodeSplitSpec | None = None
    sidecar: str = Field(default="{bag}.yaml", description="per-bag metadata YAML; {bag}: the bag path, no suffix")
    on_resolution_change: Literal["quarantine", "flag"] = Field(
        default="quarantine", description="a camera whose frame size changes within an episode: quarantine the "
        "episode (reason resolution_changed), or `flag` it: written (every frame resized to the camera's size), "
        "with the change in its episode_metadata and episodes row, and counted in the manifest",
    )
    terminal: Terminal = "from_source"


class RldsSourceSpec(_Strict):
    """RLDS datasets as TFDS writes them: builder folders `<root>/<name>/<version>/`
    (dataset_info.json, features.json, TFRecord shards). Every source episode is one
    episode; every shard file is one input, hashed with the two JSON files."""

    format: Literal["rlds"] = "rlds"
    paths: list[str] = Field(min_length=1, description="TFDS builder folders (globs allowed), local or URLs")
    splits: list[str] | None = Field(
        default=None, min_length=1, description="source splits to read (default: every split of dataset_info.json)"
    )
    terminal: Terminal = "from_source"


MEMBER_REF = f"^{NAME}:{VERSION}$"


class RetaskRule(_Strict):
    """New instruction and/or task for the member's episodes a DuckDB WHERE selects."""

    where: str = Field(min_length=1, description="DuckDB condition over the member's episodes view")
    instruction: str | None = Field(default=None, min_length=1)
    task: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _something(self) -> RetaskRule:
        if self.instruction is None and self.task is None:
            raise ValueError("give instruction, task or both")
        return self


class LakeMember(_Strict):
    """One published gold version of the lake taken into a derived version."""

    dataset: str = Field(pattern=MEMBER_REF, description="NAME:VERSION of a published gold version")
    weight: float = Field(
        default=1.0, gt=0, description="sampling rate over the member's train episodes: 0.5 takes half of them "
        "(by a stable hash of the id), 2 takes each twice, 1.5 each once and half of them again",
    )
    where: str | None = Field(default=None, description="keep only the episodes this DuckDB condition over "
                                                        "the member's episodes view selects")
    retask: list[RetaskRule] = Field(default_factory=list, description="applied in order; the last match wins")
    action: dict[str, str | float] = Field(
        default_factory=dict, description="target action name -> the member's action name (map) or a number "
        "(pad); unlisted target names take the member's dimension of the same name",
    )
    state: list[int] | None = Field(default=None, description="member state indices kept, in order (default "
                                                             "all); every member is zero-padded to the widest")
    cameras: dict[str, str] = Field(default_factory=dict, description="target camera -> the member's camera "
                                                                      "(default: the same name)")

    @property
    def name(self) -> str:
        return self.dataset.split(":")[0]

    @property
    def version(self) -> str:
        return self.dataset.split(":")[1]


class LakeSourceSpec(_Strict):
    """Published gold versions of a lake as the source of a new version: a mixture of
    several, or an edit of one. Each member's shard files are inputs (read as RLDS);
    instructions, metadata and splits come from the member's episodes table."""

    format: Literal["lake"] = "lake"
    lake: str = Field(default="lake", description="lake root holding the members (a local folder)")
    members: list[LakeMember] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> LakeSourceSpec:
        refs = [m.dataset for m in self.members]
        if len(refs) != len(set(refs)):
            raise ValueError(f"members must be distinct versions, got {refs}")
        return self

    @property
    def paths(self) -> list[str]:
        """The members' gold version folders, as TFDS builder folders."""
        from robolake.lake import Lake  # here, so that reading a spec does not import Beam

        return [Lake(self.lake).gold(member.name, member.version) for member in self.members]


def _source_format(data: object) -> str:
    return data.get("format", "hdf5") if isinstance(data, dict) else data.format


SourceSpec = Annotated[
    Annotated[Hdf5SourceSpec, Tag("hdf5")] | Annotated[RosbagSourceSpec, Tag("rosbag")]
    | Annotated[RldsSourceSpec, Tag("rlds")] | Annotated[LakeSourceSpec, Tag("lake")],
    Discriminator(_source_format),
]


class OutputSpec(_Strict):
    steps_per_shard: int = Field(default=1000, ge=1, description="target steps per shard (TFRecord and Parquet)")


Policy = Literal["clip", "drop_step", "quarantine"]


class RobustZRule(_Strict):
    """|x - median| / (1.4826 * MAD) above `threshold` (train-split median and MAD per dimension)."""

    threshold: float = Field(default=8.0, gt=0)
    policy: Policy = "clip"


class BoundsRule(_Strict):
    """Absolute per-dimension bounds, one value per action dimension (null: unbounded)."""

    min: list[float | None] | None = None
    max: list[float | None] | None = None
    policy: Policy = "clip"


class JumpRule(_Strict):
    """A step whose value jumps away from and back to its neighbours by more than `ratio`
    times the typical step-to-step change nearby (median over `window` steps each side)."""

    ratio: float = Field(default=10.0, gt=1)
    window: int = Field(default=5, ge=1)
    policy: Policy = "drop_step"


class FilterSpec(_Strict):
    """Outlier-action rules; each may be null to turn it off."""

    zscore: RobustZRule | None = Field(default_factory=RobustZRule)
    bounds: BoundsRule | None = None
    jump: JumpRule | None = Field(default_factory=JumpRule)
    dims: list[str] | None = Field(
        default=None, description="action names the zscore and jump rules look at (default: all but gripper)"
    )


class NormalizationSpec(_Strict):
    """Normalized values always lie in [-1, 1]; the mode says what maps onto +-1
    (robolake/normalization.py has the modes and what each clips on the sample)."""

    mode: Literal["bounds_q99", "mean_std", "min_max"] = "bounds_q99"
    std_bound: float = Field(default=3.0, gt=0, description="mean_std only: this many standard deviations map to +-1")
    mask: list[bool] | None = Field(default=None, description="per action dimension; default: all but gripper")
    state: bool = Field(default=False, description="also normalize observation/state")

    @model_validator(mode="before")
    @classmethod
    def _clip_was_replaced(cls, data: object) -> object:
        if isinstance(data, dict) and "clip" in data:
            raise ValueError("normalization.clip was replaced: values are always clipped to [-1, 1]; "
                             "for mean_std set normalization.std_bound (standard deviations that map to +-1)")
        return data


class DatasetSpec(_Strict):
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
    def _unique_names(self) -> DatasetSpec:
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
        self._check_source_fields()
        return self

    def _check_source_fields(self) -> None:
        """HDF5 specs name datasets and attributes; rosbag specs name topics and sidecar
        keys; RLDS specs name feature paths (`steps/...`, `episode_metadata/...`); lake
        specs name the members' features and map the rest per member."""
        fmt = self.source.format
        rosbag, lake = fmt == "rosbag", fmt == "lake"
        rlds = fmt in ("rlds", "lake")  # a lake member is read as an RLDS builder folder
        own = {"hdf5": ("file_attr", "episode_attr"), "rosbag": ("topic", "sidecar")}.get(fmt, ("feature", "file_attr"))
        values = {"instruction": self.instruction, **{f"metadata.{k}": v for k, v in self.metadata.items()}}
        for where, source in values.items():
            if source.kind not in ("value", *own):
                raise ValueError(f"{where}: {source.kind} is not available for {fmt} sources "
                                 f"(use value or one of {', '.join(own)})")
            if rlds and source.file_attr is not None and source.file_attr not in RLDS_FILE_ATTRS:
                raise ValueError(f"{where}.file_attr: an {fmt} source file has {', '.join(RLDS_FILE_ATTRS)}, "
                                 f"got {source.file_attr!r}")
            if rlds and source.feature is not None and not source.feature.startswith(("steps/", "episode_metadata/")):
                raise ValueError(f"{where}.feature: a feature path starts with steps/ or episode_metadata/, "
                                 f"got {source.feature!r}")
        if lake:
            self._check_lake_fields()
        for i, cam in enumerate(self.cameras):
            if rosbag and (cam.topic is None or cam.key is not None):
                raise ValueError(f"cameras.{i}: a rosbag camera needs topic (and no key)")
            if not rosbag and (cam.topic is not None or cam.max_age_s is not None):
                raise ValueError(f"cameras.{i}: topic and max_age_s are for rosbag sources; "
                                 f"{'rlds' if rlds else 'HDF5'} uses key")
            if rlds and cam.key is not None and not cam.key.startswith("steps/"):
                raise ValueError(f"cameras.{i}.key: an rlds camera is a step feature path such as "
                                 f"steps/observation/image_0, got {cam.key!r}")
        for section in ("state", "action"):
            part = getattr(self, section)
            if rosbag and (not part.topics or part.keys):
                raise ValueError(f"{section}: a rosbag source needs {section}.topics (and no keys)")
            if not rosbag and part.topics:
                raise ValueError(f"{section}.topics is for rosbag sources; {'rlds' if rlds else 'HDF5'} uses "
                                 f"{section}.keys")
            bad = [key for key in part.keys or [] if rlds and not key.startswith("steps/")]
            if bad:
                raise ValueError(f"{section}.keys: an rlds key is a step feature path such as steps/observation/state "
                                 f"(optionally sliced: steps/observation/state[0:6]), got {bad[0]!r}")
        if rlds and self.reward.key is not None and not self.reward.key.startswith("steps/"):
            raise ValueError(f"reward.key: an rlds key is a step feature path such as steps/reward, "
                             f"got {self.reward.key!r}")
        if rosbag and any(t.delta for t in self.state.topics):
            raise ValueError("state.topics: delta derives actions; set it on action.topics")
        if self.splits.by == "keep" and not rlds:
            raise ValueError(f"splits.by: keep takes the source's splits, and {fmt} sources have none")

    def _check_lake_fields(self) -> None:
        """A lake source maps cameras, state and actions per member, not by keys."""
        mapped = [name for name, given in (("cameras.key", any(c.key for c in self.cameras)),
                                           ("state.keys", self.state.keys), ("action.keys", self.action.keys),
                                           ("reward.key", self.reward.key)) if given]
        if mapped:
            raise ValueError(f"{mapped[0]}: a lake source maps each member in source.members "
                             f"(cameras, state, action), not by keys")
        if self.instruction.feature not in (None, LANGUAGE_INSTRUCTION):
            raise ValueError(f"instruction.feature: a lake source has {LANGUAGE_INSTRUCTION}")
        for i, member in enumerate(self.source.members):
            unknown = set(member.action) - set(self.action.names)
            if unknown:
                raise ValueError(f"source.members.{i}.action: {sorted(unknown)} are not action names "
                                 f"{self.action.names}")
            unknown = set(member.cameras) - {c.name for c in self.cameras}
            if unknown:
                raise ValueError(f"source.members.{i}.cameras: {sorted(unknown)} are not camera names "
                                 f"{[c.name for c in self.cameras]}")

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
        elif part in SOURCE_MODELS:  # the tag of the source union in the error location
            model = SOURCE_MODELS[part]
    return list(model.model_fields) if model else []


SOURCE_MODELS = {"hdf5": Hdf5SourceSpec, "rosbag": RosbagSourceSpec, "rlds": RldsSourceSpec,
                 "lake": LakeSourceSpec}


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"] if part not in SOURCE_MODELS) or "(top level)"
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
    missing, a folder, not UTF-8 text, not YAML, gives a key twice or is not a mapping."""
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
