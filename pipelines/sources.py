"""Source readers: what the pipeline calls on a source, and the reader of each
`source.format`.

Adding a format = a spec class in robolake/spec/sources.py (its fields and `check`) + a
reader module here (a class satisfying SourceReader, built from the DatasetSpec) + one
line in each registry: SOURCE_SPECS there, READERS here (tests/test_source_registry.py
checks that the two name the same formats and that every reader fits the protocol)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from pipelines.episode import Episode, EpisodeRef, QuarantineRecord
from pipelines.hdf5_source import Hdf5Source
from pipelines.images import FramePreprocessor
from pipelines.lake_source import LakeSource
from pipelines.lerobot_source import LerobotSource
from pipelines.rlds_source import RldsSource
from pipelines.rosbag_source import RosbagSource
from robolake.spec import DatasetSpec


class SourceReader(Protocol):
    """One source format as the pipeline sees it. Built on the driver from the spec,
    then pickled to the workers: plan and read run there."""

    def find(self, pattern: str) -> list[tuple[str, int, float]]:
        """(path, bytes, mtime) of every input a `source.paths` glob matches."""

    def companions(self, path: str) -> tuple[str, ...]:
        """Files hashed with an input (its sha256 changes when they do)."""

    def plan(self, path: str, relative_id: str, sha256: str) -> Iterable[EpisodeRef | QuarantineRecord]:
        """An input's episodes (attributes only, no arrays), or quarantine records for
        what cannot be read."""

    def read(self, ref: EpisodeRef, state_dim: int, preprocessors: dict[str, FramePreprocessor]) -> Episode:
        """Decode and check one planned episode; EpisodeRejected says why to quarantine it."""

    def state_width(self, path: str) -> int | None:
        """Width of the state vector an input holds, or None where it cannot tell."""

    def state_source(self) -> str:
        """What the state is read from, for the error when no input tells its width."""

    def state_layout(self, path: str, state_dim: int) -> list[dict] | None:
        """[{"name", "start", "end"}] of each part of the state vector as read from the input
        `path`, for the manifest (GR00T's modality.json is built from it); None where the
        parts' widths cannot be read or don't add up to `state_dim`."""

    def manifest_extras(self) -> dict:
        """Fields this source adds to the version's manifest.json (none for most)."""


READERS: dict[str, Callable[[DatasetSpec], SourceReader]] = {
    "hdf5": Hdf5Source, "rosbag": RosbagSource, "rlds": RldsSource, "lake": LakeSource,
    "lerobot": LerobotSource,
}


def source_reader(spec: DatasetSpec) -> SourceReader:
    """The reader of the spec's `source.format`."""
    return READERS[spec.source.format](spec)
