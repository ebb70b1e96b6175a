"""The source formats of a dataset spec (`source.format`): one spec class each, saying
where its inputs are and which fields of the rest of the dataset spec it can fill.

A format is one class here and one entry in SOURCE_SPECS, from which the `SourceSpec`
union is built; its reader is in pipelines/ (pipelines/sources.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from robolake.names import NAME, VERSION
from robolake.spec.fields import StrictModel, Terminal, ValueSource

if TYPE_CHECKING:
    from robolake.spec.dataset import DatasetSpec

RLDS_FILE_ATTRS = ("split", "dataset", "version")
LANGUAGE_INSTRUCTION = "steps/language_instruction"
ROS_DISTROS = ("ros1_noetic", "ros2_foxy", "ros2_humble", "ros2_iron", "ros2_jazzy")
MEMBER_REF = f"^{NAME}:{VERSION}$"


class BaseSourceSpec(StrictModel):
    """What every source spec shares (each adds its `format` literal and its fields):
    class attributes saying what the dataset spec may ask of it, and `check`, which
    refuses the rest. By default cameras, state, action and reward are named by keys."""

    value_kinds: ClassVar[tuple[str, ...]]  # ValueSource kinds it reads, besides a fixed `value`
    has_splits: ClassVar[bool] = False  # its episodes come with a split (`splits.by: keep`)
    uses_feature_paths: ClassVar[bool] = False  # keys are RLDS feature paths: steps/..., episode_metadata/...

    def check(self, spec: DatasetSpec) -> None:
        """Raise ValueError, naming the field, where `spec` asks for what this source cannot give."""
        texts = {"instruction": spec.instruction, **{f"metadata.{k}": v for k, v in spec.metadata.items()}}
        for where, value in texts.items():
            self.check_value(where, value)
        self.check_mapping(spec)
        if spec.splits.by == "keep" and not self.has_splits:
            raise ValueError(f"splits.by: keep takes the source's splits, and {self.format} sources have none")

    def check_value(self, where: str, value: ValueSource) -> None:
        """An instruction or metadata value: of a kind this source reads, feature paths well formed."""
        if value.kind not in ("value", *self.value_kinds):
            raise ValueError(f"{where}: {value.kind} is not available for {self.format} sources "
                             f"(use value or one of {', '.join(self.value_kinds)})")
        if not self.uses_feature_paths:
            return
        if value.file_attr is not None and value.file_attr not in RLDS_FILE_ATTRS:
            raise ValueError(f"{where}.file_attr: an {self.format} source file has {', '.join(RLDS_FILE_ATTRS)}, "
                             f"got {value.file_attr!r}")
        if value.feature is not None and not value.feature.startswith(("steps/", "episode_metadata/")):
            raise ValueError(f"{where}.feature: a feature path starts with steps/ or episode_metadata/, "
                             f"got {value.feature!r}")

    def check_mapping(self, spec: DatasetSpec) -> None:
        """Cameras, state, action and reward named by keys (HDF5 dataset paths, or step
        feature paths where `uses_feature_paths`), never by topics."""
        rlds = self.uses_feature_paths
        label = "rlds" if rlds else "HDF5"
        for i, cam in enumerate(spec.cameras):
            if cam.topic is not None or cam.max_age_s is not None:
                raise ValueError(f"cameras.{i}: topic and max_age_s are for rosbag sources; {label} uses key")
            if rlds and cam.key is not None and not cam.key.startswith("steps/"):
                raise ValueError(f"cameras.{i}.key: an rlds camera is a step feature path such as "
                                 f"steps/observation/image_0, got {cam.key!r}")
        for section in ("state", "action"):
            part = getattr(spec, section)
            if part.topics:
                raise ValueError(f"{section}.topics is for rosbag sources; {label} uses {section}.keys")
            bad = [key for key in part.keys or [] if rlds and not key.startswith("steps/")]
            if bad:
                raise ValueError(f"{section}.keys: an rlds key is a step feature path such as steps/observation/state "
                                 f"(optionally sliced: steps/observation/state[0:6]), got {bad[0]!r}")
        if rlds and spec.reward.key is not None and not spec.reward.key.startswith("steps/"):
            raise ValueError(f"reward.key: an rlds key is a step feature path such as steps/reward, "
                             f"got {spec.reward.key!r}")


class Hdf5SourceSpec(BaseSourceSpec):
    """HDF5 files; specs name datasets and attributes."""

    value_kinds: ClassVar[tuple[str, ...]] = ("file_attr", "episode_attr")

    format: Literal["hdf5"] = "hdf5"
    layout: Literal["robomimic", "robosuite", "aloha", "generic"] = "generic"
    paths: list[str] = Field(min_length=1, description="file globs, relative to the working directory or URLs")
    episodes: str | None = Field(
        default=None,
        description="glob of episode groups inside a file ('data/demo_*'); '/' for one episode per file",
    )
    terminal: Terminal = "from_source"


class EpisodeSplitSpec(StrictModel):
    """Where one bag is cut into several episodes (unset: one bag is one episode)."""

    marker_topic: str | None = Field(default=None, description="every message on this topic starts an episode")
    gap_s: float | None = Field(default=None, gt=0, description="a pause longer than this between messages")

    @model_validator(mode="after")
    def _one(self) -> EpisodeSplitSpec:
        if (self.marker_topic is None) == (self.gap_s is None):
            raise ValueError("give exactly one of: marker_topic, gap_s")
        return self


class RosbagSourceSpec(BaseSourceSpec):
    """ROS 1 .bag files, ROS 2 bag folders, or ROS 2 .db3/.mcap storage files; specs
    name topics and sidecar keys."""

    value_kinds: ClassVar[tuple[str, ...]] = ("topic", "sidecar")

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

    def check_mapping(self, spec: DatasetSpec) -> None:
        """Cameras, state and action are topics, never keys; deltas derive actions only."""
        for i, cam in enumerate(spec.cameras):
            if cam.topic is None or cam.key is not None:
                raise ValueError(f"cameras.{i}: a rosbag camera needs topic (and no key)")
        for section in ("state", "action"):
            part = getattr(spec, section)
            if not part.topics or part.keys:
                raise ValueError(f"{section}: a rosbag source needs {section}.topics (and no keys)")
        if any(t.delta for t in spec.state.topics):
            raise ValueError("state.topics: delta derives actions; set it on action.topics")


class RldsSourceSpec(BaseSourceSpec):
    """RLDS datasets as TFDS writes them: builder folders `<root>/<name>/<version>/`
    (dataset_info.json, features.json, TFRecord shards). Every source episode is one
    episode; every shard file is one input, hashed with the two JSON files. Specs name
    feature paths (`steps/...`, `episode_metadata/...`)."""

    value_kinds: ClassVar[tuple[str, ...]] = ("feature", "file_attr")
    has_splits: ClassVar[bool] = True
    uses_feature_paths: ClassVar[bool] = True

    format: Literal["rlds"] = "rlds"
    paths: list[str] = Field(min_length=1, description="TFDS builder folders (globs allowed), local or URLs")
    splits: list[str] | None = Field(
        default=None, min_length=1, description="source splits to read (default: every split of dataset_info.json)"
    )
    terminal: Terminal = "from_source"


class LerobotSourceSpec(BaseSourceSpec):
    """LeRobot dataset folders (codebase v3.0: meta/info.json, meta/tasks.parquet,
    meta/episodes, data Parquet, MP4 videos or images in Parquet). Every data Parquet
    file is one input, hashed with the folder's meta files and the videos its episodes
    use. Specs name LeRobot features (`observation.images.front`, `observation.state`,
    `action`); instruction and metadata take `{feature: task}` (the episode's task), a
    meta/episodes column (`{feature: episode_index}`) or an info.json key (`{file_attr:
    robot_type}`). LeRobot has no terminal flag: episodes are truncated unless `terminal:
    last_step`. A path `hf://datasets/ORG/NAME[@REVISION]` is a dataset on the Hugging Face
    Hub, resolved to a commit when the build starts."""

    value_kinds: ClassVar[tuple[str, ...]] = ("feature", "file_attr")

    format: Literal["lerobot"] = "lerobot"
    paths: list[str] = Field(min_length=1, description="LeRobot dataset folders (globs allowed), local, or Hub "
                             "datasets: hf://datasets/ORG/NAME[@REVISION]")
    terminal: Terminal = "from_source"

    def check_mapping(self, spec: DatasetSpec) -> None:
        """Cameras, state, action and reward are LeRobot feature names, never topics or paths."""
        named = [(f"cameras.{i}.key", cam.key) for i, cam in enumerate(spec.cameras)]
        named += [(f"{section}.keys", key) for section in ("state", "action") for key in getattr(spec, section).keys or []]
        named += [("reward.key", spec.reward.key)]
        if any(cam.topic is not None or cam.max_age_s is not None for cam in spec.cameras):
            raise ValueError("cameras: topic and max_age_s are for rosbag sources; a lerobot camera names its key")
        if spec.state.topics or spec.action.topics:
            raise ValueError("state.topics and action.topics are for rosbag sources; lerobot uses keys")
        bad = [(field, key) for field, key in named if key is not None and "/" in key]
        if bad:
            raise ValueError(f"{bad[0][0]}: a lerobot key is a feature name of meta/info.json such as "
                             f"observation.state, got {bad[0][1]!r}")


class RetaskRule(StrictModel):
    """New instruction and/or task for the member's episodes a DuckDB WHERE selects."""

    where: str = Field(min_length=1, description="DuckDB condition over the member's episodes view")
    instruction: str | None = Field(default=None, min_length=1)
    task: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _something(self) -> RetaskRule:
        if self.instruction is None and self.task is None:
            raise ValueError("give instruction, task or both")
        return self


class TrimRule(StrictModel):
    """Cut each episode's idle head and tail, idle as robolake/episode_quality.py defines it
    (`robolake edit trim`); an episode idle throughout is quarantined (idle_throughout)."""

    keep_s: float = Field(default=0.2, ge=0, description="seconds of the idle head and tail kept next to the "
                                                         "first and last motion")
    min_idle_s: float = Field(default=0.5, ge=0, description="an idle head or tail shorter than this is kept whole")


class LakeMember(StrictModel):
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
    trim: TrimRule | None = Field(default=None, description="cut idle heads and tails of the kept episodes")

    @property
    def name(self) -> str:
        return self.dataset.split(":")[0]

    @property
    def version(self) -> str:
        return self.dataset.split(":")[1]


class LakeSourceSpec(BaseSourceSpec):
    """Published gold versions of a lake as the source of a new version: a mixture of
    several, or an edit of one. Each member's shard files are inputs (read as RLDS);
    instructions, metadata and splits come from the member's episodes table. Specs name
    the members' features and map cameras, state and action per member."""

    value_kinds: ClassVar[tuple[str, ...]] = ("feature", "file_attr")
    has_splits: ClassVar[bool] = True
    uses_feature_paths: ClassVar[bool] = True  # a member is read as an RLDS builder folder

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

    def check_mapping(self, spec: DatasetSpec) -> None:
        """Cameras, state and actions are mapped per member, not named by keys."""
        mapped = [name for name, given in (("cameras.key", any(c.key for c in spec.cameras)),
                                           ("state.keys", spec.state.keys), ("action.keys", spec.action.keys),
                                           ("reward.key", spec.reward.key)) if given]
        if mapped:
            raise ValueError(f"{mapped[0]}: a lake source maps each member in source.members "
                             f"(cameras, state, action), not by keys")
        if spec.instruction.feature not in (None, LANGUAGE_INSTRUCTION):
            raise ValueError(f"instruction.feature: a lake source has {LANGUAGE_INSTRUCTION}")
        for i, member in enumerate(self.members):
            unknown = set(member.action) - set(spec.action.names)
            if unknown:
                raise ValueError(f"source.members.{i}.action: {sorted(unknown)} are not action names "
                                 f"{spec.action.names}")
            unknown = set(member.cameras) - {c.name for c in spec.cameras}
            if unknown:
                raise ValueError(f"source.members.{i}.cameras: {sorted(unknown)} are not camera names "
                                 f"{[c.name for c in spec.cameras]}")
        super().check_mapping(spec)


SOURCE_SPECS: dict[str, type[BaseSourceSpec]] = {
    "hdf5": Hdf5SourceSpec, "rosbag": RosbagSourceSpec, "rlds": RldsSourceSpec, "lake": LakeSourceSpec,
    "lerobot": LerobotSourceSpec,
}


def _source_format(data: object) -> str:
    """The union's tag: `format`, hdf5 where a spec leaves it out."""
    return data.get("format", "hdf5") if isinstance(data, dict) else data.format


def source_union(specs: dict[str, type[BaseSourceSpec]]) -> object:
    """The pydantic union of the given spec classes, told apart by `format`."""
    return Annotated[Union[tuple(Annotated[model, Tag(fmt)] for fmt, model in specs.items())],
                     Discriminator(_source_format)]


SourceSpec = source_union(SOURCE_SPECS)
