"""RLDS datasets, as TFDS writes them, as a conversion source: a builder folder
`<root>/<name>/<version>/` holds dataset_info.json, features.json and TFRecord shards,
each record one episode (a tf.train.Example whose step features are flattened lists
under `steps/...` and whose episode features are under `episode_metadata/...`).

- Inputs: every shard file of the splits read (`source.splits`, default all) is one
  input, hashed with the folder's dataset_info.json and features.json (companions).
- Episode ids: `<shard id>/<index of the record in the shard, 5 digits>`, the shard id
  being its path under the glob's base (e.g. `1.0.0/bridge_dataset-train.tfrecord-00000-of-00001/00003`).
  It is stable while the shard's bytes are; a source's own `episode_metadata` ids are
  not unique in practice (Bridge repeats `episode_id` and `file_path` across episodes
  and splits), so they are kept only as metadata when the spec maps them.
- The source split is not robolake's split: robolake assigns its own by its split
  policy; `metadata: {source_split: {file_attr: split}}` keeps the source's.
- Planning reads the shard's TFRecord framing (pipelines/tfrecord.py: length, CRC32C)
  and remembers each record's byte span; reading one episode seeks to its record,
  parses the Example with protobuf and decodes its frames one at a time with OpenCV
  (images stay encoded until then). At most one episode is in memory; TensorFlow's
  graph ops are never used.
- An episode ends in a terminal state where the source's `steps/is_terminal` marks its
  last step (or the spec says so); a subset cut short (no `is_last`) is truncated.
- A shard that cannot be framed (a broken length, a truncated record) quarantines the
  rest of the file; a record whose data CRC is wrong, or that does not parse, quarantines
  that episode; a feature the spec maps but features.json lacks quarantines the file."""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow_datasets as tfds
from apache_beam.io.filesystems import FileSystems
from google.protobuf.message import DecodeError
from tensorflow_datasets.proto import tf_example_pb2 as example_pb2

from pipelines.episode import (
    Episode,
    EpisodeRef,
    EpisodeRejected,
    QuarantineRecord,
    check_finite,
    check_length,
    check_step_bounds,
    ends_terminal,
    terminal_rewards,
)
from pipelines.images import FramePreprocessor, preprocess_frames
from pipelines.rlds_writer import TEMPLATE
from pipelines.state_layout import layout_of_parts
from pipelines.tfrecord import FramingError, read_record, tfrecords
from robolake.errors import RobolakeError, SpecError
from robolake.spec import DatasetSpec, ValueSource
from robolake.spec.fields import StateSpec

DEFAULT_ACTION = "steps/action"
DEFAULT_STATE = "steps/observation/state"
DEFAULT_REWARD = "steps/reward"
TERMINAL = "steps/is_terminal"
_KEY = re.compile(r"^(?P<path>[^\[\]]+?)(?:\[(?P<start>-?\d*)(?P<colon>:)?(?P<stop>-?\d*)\])?$")
_LISTED = 12  # features named in a missing-feature message


def _join(folder: str, name: str) -> str:
    return FileSystems.join(folder, name)


def _folder(path: str) -> str:
    return posixpath.dirname(path.rstrip("/"))


# -- feature keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureKey:
    """A feature path the spec maps, optionally sliced along its last dimension:
    `steps/observation/state`, `steps/observation/state[0:6]`, `steps/action[-1]`."""

    field: str  # where the spec names it, e.g. state.keys.0
    text: str
    path: str
    part: slice | None


def parse_key(field: str, text: str) -> FeatureKey:
    match = _KEY.match(text.strip())
    if not match:
        raise SpecError(f"{field}: {text!r} is not a feature path with an optional [start:stop] slice")
    start, colon, stop = match["start"], match["colon"], match["stop"]
    if start is None:
        part = None
    elif colon:
        part = slice(int(start) if start else None, int(stop) if stop else None)
    elif start:
        index = int(start)
        part = slice(index, index + 1 if index != -1 else None)
    else:
        raise SpecError(f"{field}: {text!r}: empty index, use [i] or [start:stop]")
    return FeatureKey(field, text, match["path"], part)


@dataclass(frozen=True)
class RldsKeys:
    """The feature paths of one spec, RLDS defaults filled in."""

    actions: list[FeatureKey]
    state: list[FeatureKey]
    cameras: dict[str, FeatureKey]
    reward: FeatureKey | None  # None: the default steps/reward where the dataset has it
    texts: dict[str, ValueSource]


def resolve_keys(spec: DatasetSpec) -> RldsKeys:
    return RldsKeys(
        actions=[parse_key(f"action.keys.{i}", k) for i, k in enumerate(spec.action.keys or [DEFAULT_ACTION])],
        state=[parse_key(f"state.keys.{i}", k) for i, k in enumerate(spec.state.keys or [DEFAULT_STATE])],
        cameras={cam.name: parse_key(f"cameras.{i}.key", cam.key or f"steps/observation/{cam.name}")
                 for i, cam in enumerate(spec.cameras)},
        reward=parse_key("reward.key", spec.reward.key) if spec.reward.key else None,
        texts={"instruction": spec.instruction, **{f"metadata.{k}": v for k, v in spec.metadata.items()}},
    )


# -- the builder folder -------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """One feature of features.json: its class, element shape and serialized dtype."""

    kind: str  # Image, Text, Tensor, Scalar, ...
    shape: tuple  # of one element (one step's value for a step feature)
    dtype: np.dtype  # serialized: object for strings (encoded images, text)

    @property
    def numeric(self) -> bool:
        return self.dtype != np.dtype(object)

    @property
    def width(self) -> int | None:
        """Values per step of a feature of rank 0 or 1 (None otherwise)."""
        if len(self.shape) > 1 or any(d is None for d in self.shape):
            return None
        return int(math.prod(self.shape))


def _leaves(feature, prefix: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(feature, tfds.features.FeaturesDict):
        for key in feature.keys():
            yield from _leaves(feature[key], f"{prefix}{key}/")
    elif isinstance(feature, tfds.features.Sequence):  # tfds.features.Dataset too
        yield from _leaves(feature.feature, prefix)
    else:
        yield prefix[:-1], feature


def _np_dtype(info) -> np.dtype:
    """A serialized TensorInfo's numpy dtype, object for strings."""
    dtype = np.dtype(info.np_dtype)
    return np.dtype(object) if dtype.kind in "OSU" else dtype


@dataclass(frozen=True)
class Builder:
    """What a TFDS builder folder says about itself: name, version, shard files by split,
    and every (flattened) feature."""

    folder: str
    name: str
    version: str
    shards: dict[str, tuple[str, int | None]]  # shard path -> (split, episodes per dataset_info.json)
    splits: tuple[str, ...]
    leaves: dict[str, Leaf]

    def split_files(self, split: str) -> list[str]:
        return [path for path, (s, _) in self.shards.items() if s == split]

    def describe(self, path: str) -> str:
        """A missing feature's context: the features there are."""
        names = sorted(p for p in self.leaves if p.startswith(path.split("/", 1)[0] + "/")) or sorted(self.leaves)
        more = f", ... ({len(names)} in all)" if len(names) > _LISTED else ""
        return f"{', '.join(names[:_LISTED])}{more}"


def _read_json(path: str) -> dict:
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return json.loads(f.read().decode("utf-8"))


def load_builder(folder: str) -> Builder:
    """Read a builder folder's dataset_info.json and features.json; RobolakeError if unusable."""
    info_path, features_path = _join(folder, "dataset_info.json"), _join(folder, "features.json")
    try:
        info = _read_json(info_path)
    except (OSError, ValueError) as exc:
        raise RobolakeError(f"{info_path}: cannot read the TFDS dataset info: {exc}") from None
    file_format = info.get("fileFormat", "tfrecord")
    if file_format != "tfrecord":
        raise RobolakeError(f"{info_path}: fileFormat {file_format!r} is not supported (only tfrecord shards)")
    try:
        features = tfds.features.FeatureConnector.from_json(_read_json(features_path))
        leaves = {}
        for path, leaf in _leaves(features):
            serialized = leaf.get_serialized_info()
            leaves[path] = Leaf(type(leaf).__name__, tuple(getattr(leaf, "shape", ()) or ()), _np_dtype(serialized))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RobolakeError(f"{features_path}: cannot read the TFDS features: {exc}") from None
    shards, splits = {}, []
    for split in info.get("splits", []):
        name, lengths = split["name"], [int(n) for n in split.get("shardLengths", [])]
        count = len(lengths) or int(split.get("numShards", 1))
        template = split.get("filepathTemplate") or TEMPLATE  # TFDS's default, which gold uses too
        splits.append(name)
        for i in range(count):
            filename = (template.replace("{DATASET}", info["name"]).replace("{SPLIT}", name)
                        .replace("{FILEFORMAT}", file_format).replace("{SHARD_X_OF_Y}", f"{i:05d}-of-{count:05d}")
                        .replace("{SHARD_INDEX}", f"{i:05d}").replace("{NUM_SHARDS}", f"{count:05d}"))
            shards[_join(folder, filename)] = (name, lengths[i] if lengths else None)
    return Builder(folder, info.get("name", ""), info.get("version", ""), shards, tuple(splits), leaves)


# -- one episode's features ---------------------------------------------------------------


class EpisodeFeatures:
    """The features of one parsed RLDS episode, read by path as numpy."""

    def __init__(self, record: bytes, where: str, builder: Builder):
        self.where = where
        self.builder = builder
        example = example_pb2.Example()
        try:
            example.ParseFromString(record)
        except DecodeError as exc:
            raise EpisodeRejected("corrupt_record", f"{where}: not a tf.train.Example: {exc}") from None
        self.features = example.features.feature

    def _raw(self, path: str, field: str):
        if path not in self.features:
            raise EpisodeRejected("missing_key", f"{self.where}: feature {path!r} ({field}) is not in the episode")
        feature = self.features[path]
        kind = feature.WhichOneof("kind")
        return getattr(feature, kind).value if kind else []

    def strings(self, path: str, field: str) -> list[bytes]:
        return list(self._raw(path, field))

    def steps(self, key: FeatureKey) -> np.ndarray:
        """A numeric step feature as (T, width) float32, sliced as the key says."""
        leaf = self.builder.leaves[key.path]
        values = np.asarray(self._raw(key.path, key.field), dtype=np.float32)
        width = leaf.width or 1
        if values.size % width:
            raise EpisodeRejected("bad_shape", f"{self.where}: feature {key.path!r} ({key.field}) holds "
                                               f"{values.size} values, not a multiple of its width {width}")
        values = values.reshape(-1, width)
        return values[:, key.part] if key.part is not None else values

    def text(self, path: str, field: str) -> str:
        values = self._raw(path, field)
        if not len(values):
            return ""
        value = values[0]
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        if self.builder.leaves[path].dtype == np.dtype(bool):
            return "true" if value else "false"
        return str(value)


def decode_frames(where: str, encoded: list[bytes]) -> Iterator[np.ndarray]:
    """Encoded frames (JPEG, PNG) decoded one at a time to RGB uint8, as TFDS stores them."""
    for step, data in enumerate(encoded):
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB) if data else None
        if frame is None:
            raise EpisodeRejected("bad_image", f"{where}, step {step}: {len(data)} bytes that are not an image")
        yield frame


# -- the reader ---------------------------------------------------------------------------


class RldsSource:
    """RLDS builder folders as the conversion pipeline sees any source: find the shard
    files, plan a shard's episodes, read one episode, tell the state width. Picklable
    (the spec and parsed keys; builder metadata is read again where needed)."""

    def __init__(self, spec: DatasetSpec, id_feature: str | None = None, passthrough: frozenset[str] = frozenset()):
        self.spec = spec
        self.source = spec.source
        self.keys = resolve_keys(spec)
        self.id_feature = id_feature  # episode ids from this feature (unique ones), not shard and index
        # cameras stored already as the spec asks: their bytes are kept, never decoded, and
        # `read` leaves their CameraSummary None for the caller to fill (the lake source)
        self.passthrough = passthrough
        self._builders: dict[str, Builder] = {}
        self._state_problem = ""

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_builders": {}}

    def builder(self, folder: str) -> Builder:
        if folder not in self._builders:
            self._builders[folder] = load_builder(folder)
        return self._builders[folder]

    # -- finding and planning ------------------------------------------------------------

    def find(self, pattern: str) -> list[tuple[str, int, float]]:
        """(path, bytes, mtime) of the shard files of the builder folders a glob matches."""
        infos = FileSystems.match([_join(pattern.rstrip("/"), "dataset_info.json")])[0].metadata_list
        found = []
        for folder in sorted(_folder(m.path) for m in infos):
            builder = self.builder(folder)
            wanted = self.source.splits or list(builder.splits)
            for split in wanted:
                if split not in builder.splits:
                    raise RobolakeError(f"source.splits: {folder} has no split {split!r} "
                                        f"(it has {', '.join(builder.splits)})")
                for path in builder.split_files(split):
                    matched = FileSystems.match([path])[0].metadata_list
                    if not matched:
                        raise RobolakeError(f"{path}: shard listed in {folder}/dataset_info.json is missing")
                    found.append((path, matched[0].size_in_bytes, matched[0].last_updated_in_seconds))
        return found

    def companions(self, path: str) -> tuple[str, ...]:
        """Files hashed with each shard: its folder's dataset_info.json and features.json."""
        folder = _folder(path)
        return (_join(folder, "dataset_info.json"), _join(folder, "features.json"))

    def mapped_problem(self, builder: Builder) -> str | None:
        """Why the spec's mapping does not fit a builder's features, or None."""
        def check(key: FeatureKey, camera: bool = False) -> str | None:
            leaf = builder.leaves.get(key.path)
            if leaf is None:
                return (f"feature {key.path!r} ({key.field}) is not in {builder.folder}/features.json "
                        f"(it has {builder.describe(key.path)})")
            if camera:
                image = not leaf.numeric or (leaf.dtype == np.uint8 and len(leaf.shape) == 3 and leaf.shape[-1] == 3)
                if not image or key.part is not None:
                    return (f"feature {key.path!r} ({key.field}) is a {leaf.kind} {leaf.dtype} {leaf.shape}, "
                            f"not an image (encoded, or uint8 (H, W, 3))")
                return None
            if not leaf.numeric or leaf.width is None:
                return (f"feature {key.path!r} ({key.field}) is a {leaf.kind} {leaf.dtype} {leaf.shape}; "
                        f"state, action and reward need numbers of rank 0 or 1")
            if key.part is not None and not len(range(leaf.width)[key.part]):
                return f"{key.field}: {key.text!r} selects nothing of a feature of width {leaf.width}"
            return None

        keys = [*self.keys.actions, *self.keys.state, *([self.keys.reward] if self.keys.reward else [])]
        problems = [check(k) for k in keys] + [check(k, camera=True) for k in self.keys.cameras.values()]
        for field, source in self.keys.texts.items():
            if source.feature is not None and source.feature not in builder.leaves:
                problems.append(f"feature {source.feature!r} ({field}.feature) is not in "
                                f"{builder.folder}/features.json "
                                f"(it has {builder.describe(source.feature)})")
        return next((p for p in problems if p), None)

    def plan(self, path: str, relative_id: str, sha256: str) -> Iterator[EpisodeRef | QuarantineRecord]:
        """Every episode (record) of one shard, or quarantine records for what cannot be read."""
        try:
            builder = self.builder(_folder(path))
        except RobolakeError as exc:
            yield QuarantineRecord(relative_id, path, sha256, "unreadable_file", str(exc))
            return
        problem = self.mapped_problem(builder)
        if problem:
            yield QuarantineRecord(relative_id, path, sha256, "missing_key", f"{path}: {problem}")
            return
        split, expected = builder.shards.get(path, ("", None))
        count = 0
        try:
            for index, (start, stop, record) in enumerate(tfrecords(path)):
                count = index + 1
                episode_id = f"{relative_id}/{index:05d}"
                if isinstance(record, FramingError):
                    rest = f"; the rest of the file cannot be read ({expected} episodes expected)"
                    rest = rest if record.fatal else ""
                    yield QuarantineRecord(episode_id, path, sha256, "corrupt_record", f"{path}: {record.reason}{rest}")
                    if record.fatal:
                        return
                    continue
                try:
                    yield self._plan_episode(record, path, episode_id, sha256, index, builder, split, (start, stop))
                except EpisodeRejected as exc:
                    yield QuarantineRecord(episode_id, path, sha256, exc.code, exc.reason)
        except OSError as exc:
            yield QuarantineRecord(f"{relative_id}/{count:05d}", path, sha256, "unreadable_file",
                                   f"{path}: reading record {count}: {exc}")
            return
        if expected is not None and count < expected:
            yield QuarantineRecord(f"{relative_id}/{count:05d}", path, sha256, "missing_records",
                                   f"{path}: {count} episodes, dataset_info.json lists {expected}; "
                                   f"the file is truncated")

    def _plan_episode(self, record: bytes, path: str, episode_id: str, sha256: str, index: int, builder: Builder,
                      split: str, span: tuple[int, int]) -> EpisodeRef:
        where = f"{path}: episode {index}"
        features = EpisodeFeatures(record, where, builder)
        texts = {field: self._text(features, source, field, builder, split)
                 for field, source in self.keys.texts.items()}
        num_steps = len(features.steps(self.keys.actions[0]))
        metadata = {name.removeprefix("metadata."): value for name, value in texts.items() if name != "instruction"}
        metadata.setdefault("task", texts["instruction"])
        if self.id_feature:
            episode_id = features.text(self.id_feature, "episode id")
        return EpisodeRef(episode_id, path, sha256, str(index), num_steps, texts["instruction"], metadata,
                          window=span, source_split=split)

    @staticmethod
    def _text(features: EpisodeFeatures, source: ValueSource, field: str, builder: Builder, split: str) -> str:
        if source.value is not None:
            return source.value
        if source.file_attr is not None:
            return {"split": split, "dataset": builder.name, "version": builder.version}[source.file_attr]
        return features.text(source.feature, f"{field}.feature")

    # -- reading one episode ---------------------------------------------------------------

    def read(self, ref: EpisodeRef, state_dim: int, preprocessors: dict[str, FramePreprocessor]) -> Episode:
        """Decode and check one episode; raises EpisodeRejected with the reason to quarantine it."""
        path = ref.source_path
        builder = self.builder(_folder(path))
        where = f"{path}: episode {ref.group}"
        try:
            record = read_record(path, *ref.window)
        except FramingError as exc:
            raise EpisodeRejected("corrupt_record", f"{path}: {exc.reason}") from None
        features = EpisodeFeatures(record, where, builder)
        actions = np.concatenate([features.steps(k) for k in self.keys.actions], axis=1)
        num_steps = len(actions)
        if actions.shape[1] != len(self.spec.action.names):
            raise EpisodeRejected("bad_shape", f"{where}: actions have {actions.shape[1]} dimensions but "
                                               f"action.names lists {len(self.spec.action.names)}")
        parts = []
        for key in self.keys.state:
            part = features.steps(key)
            check_length(f"{where}: state feature {key.path!r}", len(part), num_steps)
            parts.append(part)
        state = np.concatenate(parts, axis=1)
        if state.shape[1] != state_dim:
            raise EpisodeRejected("bad_shape", f"{where}: state has {state.shape[1]} dimensions, "
                                               f"the dataset has {state_dim}")
        reward = self.keys.reward
        if reward is None and DEFAULT_REWARD in builder.leaves:
            reward = parse_key("reward.key", DEFAULT_REWARD)
        if reward is not None:
            rewards = features.steps(reward)[:, 0]
            check_length(f"{where}: reward feature {reward.path!r}", len(rewards), num_steps)
        else:
            rewards = terminal_rewards(num_steps)
        check_step_bounds(num_steps, self.spec)
        check_finite("action", actions)
        check_finite("state", state)
        check_finite("reward", rewards)
        terminal = ends_terminal(self.spec, self._ends_terminal(features, builder, num_steps, where))
        frames = {}
        for cam, key in self.keys.cameras.items():
            if cam in self.passthrough:  # kept as stored, not decoded: the caller brings their summary
                encoded = features.strings(key.path, key.field)
                check_length(f"{where}: camera feature {key.path!r}", len(encoded), num_steps)
                frames[cam] = (encoded, None)
            else:
                frames[cam] = preprocess_frames(self._frames(features, key, num_steps, where), preprocessors[cam])
        return Episode(ref, actions, state, rewards.astype(np.float32), {cam: enc for cam, (enc, _) in frames.items()},
                       {cam: summary for cam, (_, summary) in frames.items()}, terminal=terminal)

    @staticmethod
    def _ends_terminal(features: EpisodeFeatures, builder: Builder, num_steps: int, where: str) -> bool:
        """Whether the source's `is_terminal` marks the last step (False where it has none;
        `is_last` only says where the stored episode ends)."""
        if TERMINAL not in builder.leaves:
            return False
        flags = features.steps(parse_key("is_terminal", TERMINAL))
        check_length(f"{where}: feature {TERMINAL!r}", len(flags), num_steps)
        return bool(flags[-1, 0])

    @staticmethod
    def _frames(features: EpisodeFeatures, key: FeatureKey, num_steps: int, where: str) -> Iterator[np.ndarray]:
        leaf = features.builder.leaves[key.path]
        if leaf.numeric:  # raw uint8 (H, W, 3) frames
            values = np.asarray(features._raw(key.path, key.field), np.uint8).reshape(-1, *leaf.shape)
            check_length(f"{where}: camera feature {key.path!r}", len(values), num_steps)
            return iter(values)
        encoded = features.strings(key.path, key.field)
        check_length(f"{where}: camera feature {key.path!r}", len(encoded), num_steps)
        return decode_frames(f"{where}, {key.path}", encoded)

    # -- the state width -------------------------------------------------------------------

    def state_width(self, path: str) -> int | None:
        """Width of the state vector from features.json (no record is read), or None."""
        try:
            builder = self.builder(_folder(path))
        except RobolakeError as exc:
            self._state_problem = str(exc)
            return None
        width = 0
        for key in self.keys.state:
            leaf = builder.leaves.get(key.path)
            if leaf is None:
                self._state_problem = (f"feature {key.path!r} is not in {builder.folder}/features.json; "
                                       f"it has {builder.describe(key.path)}")
                return None
            if not leaf.numeric or leaf.width is None:
                self._state_problem = f"feature {key.path!r} is a {leaf.kind} {leaf.dtype} {leaf.shape}, not a vector"
                return None
            width += len(range(leaf.width)[key.part or slice(None)])
        return width

    def state_layout(self, path: str, state_dim: int) -> list[dict] | None:
        """One part per state feature key (pipelines/state_layout.py)."""
        parts = [(key.text, StateSpec(keys=[key.text])) for key in self.keys.state]
        return layout_of_parts(RldsSource, self.spec, parts, path, state_dim)

    def state_source(self) -> str:
        keys = [k.text for k in self.keys.state]
        return f"state.keys {keys}" + (f" ({self._state_problem})" if self._state_problem else "")

    def manifest_extras(self) -> dict:
        return {}
