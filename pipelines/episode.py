"""What flows through the pipeline: planned episode references, decoded episodes,
quarantine records, and the checks that decide between the last two."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from pipelines.stats import CameraSummary
from robolake.spec import DatasetSpec


def stable_hash(text: str) -> str:
    """Hex sha256 of a string: the same on every machine, Python version and run."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class EpisodeRef:
    """A planned episode: where it is and what it is, before any step is read."""

    episode_id: str
    source_path: str
    source_sha256: str
    group: str
    num_steps: int
    instruction: str
    metadata: dict[str, str] = field(hash=False)
    split: str = ""
    shard: int = -1
    # Where in the input the episode lies, [start, stop): rosbag, the receive-time span (ns) of a
    # split bag; rlds, the byte range of the episode's record in its shard.
    window: tuple[int, int] | None = None
    source_split: str = ""  # the split the source put the episode in (rlds and lake sources)
    repeat_of: str = ""  # a mixture's repeated copy: the id of the episode it repeats

    @property
    def task(self) -> str:
        return self.metadata["task"]

    @property
    def split_key(self) -> str:
        """Split by this id, so that every copy of an episode lands in one split."""
        return self.repeat_of or self.episode_id

    @property
    def order_key(self) -> str:
        """Episodes are laid out in shards in this order (a stable shuffle)."""
        return stable_hash(self.episode_id)


@dataclass(frozen=True)
class QuarantineRecord:
    episode_id: str
    source_path: str
    source_sha256: str
    reason_code: str
    reason: str


def read_failure(episode_id: str, path: str, sha256: str, exc: Exception) -> QuarantineRecord:
    """The quarantine record of an episode (or a whole input) whose reading raised an
    exception no check anticipated (reason code read_error): its type and text name what
    failed, so that a bug shows in the quarantine instead of ending the build."""
    return QuarantineRecord(episode_id, path, sha256, "read_error",
                            f"reading episode {episode_id} of {path}: {type(exc).__name__}: {exc}")


class EpisodeRejected(Exception):
    """An episode that must be quarantined; `code` is a short machine-readable reason."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Episode:
    """A decoded episode: numeric arrays of T steps, T encoded frames per camera and a
    summary of each camera's pixels."""

    ref: EpisodeRef
    actions: np.ndarray  # (T, A) float32
    state: np.ndarray  # (T, S) float32
    rewards: np.ndarray  # (T,) float32
    images: dict[str, list[bytes]]
    cameras: dict[str, CameraSummary]
    dropped_ticks: dict[str, int] = field(default_factory=dict)  # rosbag: stream -> ticks dropped as stale
    timestamps: np.ndarray | None = None  # seconds since the first step (default: step / control rate)
    terminal: bool = False  # the last step is a terminal state (see `ends_terminal`); if not, the episode is truncated
    resolution_change: str = ""  # rosbag, flagged: the camera whose frame size changed, where, from and to
    quality: dict | None = None  # lake source: the member's episode_quality row, carried (not computed again)

    @property
    def num_steps(self) -> int:
        return len(self.actions)


def terminal_rewards(num_steps: int) -> np.ndarray:
    """The default reward when a source records none: 1.0 on the last step, 0 elsewhere."""
    rewards = np.zeros(num_steps, np.float32)
    rewards[-1:] = 1.0
    return rewards


def ends_terminal(spec: DatasetSpec, source_says: bool) -> bool:
    """Whether an episode's last step is a terminal state: the source says so (HDF5 `dones`,
    RLDS `is_terminal`), or the spec says every episode ends in one (`source.terminal:
    last_step`). Where the stored episode is cut says nothing about it."""
    return source_says or spec.source.terminal == "last_step"


def check_length(name: str, length: int, expected: int) -> None:
    if length != expected:
        raise EpisodeRejected("length_mismatch", f"{name} has {length} steps but the actions have {expected}")


def check_step_bounds(num_steps: int, spec: DatasetSpec) -> None:
    bounds = spec.episode_length
    if num_steps < bounds.min_steps:
        raise EpisodeRejected("too_short", f"{num_steps} steps, fewer than min_steps={bounds.min_steps}")
    if bounds.max_steps is not None and num_steps > bounds.max_steps:
        raise EpisodeRejected("too_long", f"{num_steps} steps, more than max_steps={bounds.max_steps}")


def check_finite(name: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        step, *dim = np.argwhere(bad)[0]
        where = f"step {step}" + (f", dimension {dim[0]}" if dim else "")
        raise EpisodeRejected(
            "non_finite", f"{name} holds {int(bad.sum())} NaN/inf values, first at {where}"
        )
