"""The fields of a dataset spec that every source format shares: cameras, state,
action, reward, text values, episode length, splits, output, filters, normalization."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from robolake.names import IDENTIFIER

DEFAULT_ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


class StrictModel(BaseModel):
    """A frozen spec section that refuses unknown fields and infinite or NaN numbers
    (a spec travels as JSON, in manifest.json and provenance, and JSON has neither)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ValueSource(StrictModel):
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


class TopicSpec(StrictModel):
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


class CameraSpec(StrictModel):
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


class StateSpec(StrictModel):
    keys: list[str] | None = Field(
        default=None, description="HDF5: datasets concatenated into the state vector; RLDS: step feature paths, "
        "each optionally sliced (steps/observation/state[0:6]; default steps/observation/state)"
    )
    topics: list[TopicSpec] | None = Field(default=None, description="rosbag: streams concatenated into the state")


class ActionSpec(StrictModel):
    keys: list[str] | None = Field(
        default=None, description="HDF5: datasets concatenated into the action vector; RLDS: step feature paths, "
        "each optionally sliced (default steps/action)"
    )
    topics: list[TopicSpec] | None = Field(default=None, description="rosbag: streams concatenated into the action")
    names: list[str] = Field(default_factory=lambda: list(DEFAULT_ACTION_NAMES), min_length=1)


class RewardSpec(StrictModel):
    key: str | None = Field(
        default=None, description="dataset (RLDS: step feature) of per-step rewards; unset: RLDS steps/reward, "
        "else 1.0 on the last step, 0 elsewhere"
    )


class EpisodeLength(StrictModel):
    min_steps: int = Field(default=2, ge=1)
    max_steps: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> EpisodeLength:
        if self.max_steps is not None and self.max_steps < self.min_steps:
            raise ValueError("max_steps must be >= min_steps")
        return self


class SplitPolicy(StrictModel):
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


class OutputSpec(StrictModel):
    steps_per_shard: int = Field(default=1000, ge=1, description="target steps per shard (TFRecord and Parquet)")


Policy = Literal["clip", "drop_step", "quarantine"]


class RobustZRule(StrictModel):
    """|x - median| / (1.4826 * MAD) above `threshold` (train-split median and MAD per dimension)."""

    threshold: float = Field(default=8.0, gt=0)
    policy: Policy = "clip"


class BoundsRule(StrictModel):
    """Absolute per-dimension bounds, one value per action dimension (null: unbounded)."""

    min: list[float | None] | None = None
    max: list[float | None] | None = None
    policy: Policy = "clip"


class JumpRule(StrictModel):
    """A step whose value jumps away from and back to its neighbours by more than `ratio`
    times the typical step-to-step change nearby (median over `window` steps each side)."""

    ratio: float = Field(default=10.0, gt=1)
    window: int = Field(default=5, ge=1)
    policy: Policy = "drop_step"


class FilterSpec(StrictModel):
    """Outlier-action rules; each may be null to turn it off."""

    zscore: RobustZRule | None = Field(default_factory=RobustZRule)
    bounds: BoundsRule | None = None
    jump: JumpRule | None = Field(default_factory=JumpRule)
    dims: list[str] | None = Field(
        default=None, description="action names the zscore and jump rules look at (default: all but gripper)"
    )


class NormalizationSpec(StrictModel):
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
