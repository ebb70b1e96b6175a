"""The source reader for a spec's `source.format`.

Every reader offers the same small interface to the pipeline: `find(glob)` lists inputs
as (path, bytes, mtime); `companions(path)` names files hashed with an input;
`plan(path, relative_id, sha256)` lists an input's episodes (or quarantine records);
`read(ref, state_dim, preprocessors)` decodes one episode; `state_width(path)` and
`state_source()` size and describe the state vector."""

from __future__ import annotations

from pipelines.hdf5_source import Hdf5Source
from pipelines.lake_source import LakeSource
from pipelines.rlds_source import RldsSource
from pipelines.rosbag_source import RosbagSource
from robolake.spec import DatasetSpec

SourceReader = Hdf5Source | RosbagSource | RldsSource | LakeSource

READERS = {"hdf5": Hdf5Source, "rosbag": RosbagSource, "rlds": RldsSource, "lake": LakeSource}


def source_reader(spec: DatasetSpec) -> SourceReader:
    return READERS[spec.source.format](spec)
