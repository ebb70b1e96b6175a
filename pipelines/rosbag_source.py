"""ROS 1 and ROS 2 bags as a conversion source: topics mapped by the spec, every stream
resampled onto control ticks, one bag (or one part of a split bag) per episode.

Planning reads message times only, plus the String topics that carry text. Reading an
episode deserializes its messages (camera messages stay JPEG/raw bytes), aligns the
streams, then builds vectors and decodes frames for the picked messages only, each
frame once. At most one episode is in memory. A camera whose frame size changes within
an episode quarantines it, or flags it (`source.on_resolution_change`); stamps that go
backwards in a stream (a clock stepped back) quarantine it. A bag records no
terminal state: its episodes are truncated unless the spec says otherwise."""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterator

import numpy as np
import yaml

from pipelines import ros_messages
from pipelines.alignment import NS_PER_S, StreamTimes, align, step_back, ticks_at_rate
from pipelines.episode import (
    Episode,
    EpisodeRef,
    EpisodeRejected,
    QuarantineRecord,
    check_finite,
    check_step_bounds,
    ends_terminal,
    terminal_rewards,
)
from pipelines.images import FramePreprocessor, preprocess_frames
from pipelines.rosbag_reader import STORAGE_SUFFIXES, BagError, messages, open_bag
from pipelines.state_layout import layout_of_parts
from robolake.errors import RobolakeError
from robolake.hashing import files_under
from robolake.spec import CameraSpec, DatasetSpec, TopicSpec, ValueSource
from robolake.spec.fields import StateSpec
from robolake.storage import is_remote

BAG_SUFFIXES = (".bag", *STORAGE_SUFFIXES)
Window = tuple[int, int]


def _age_ns(seconds: float) -> int:
    return np.iinfo(np.int64).max if math.isinf(seconds) else int(round(seconds * NS_PER_S))


def bag_stem(path: str) -> str:
    """A bag's path without its suffix (a folder's path as it is)."""
    path = os.path.normpath(path)
    return path if os.path.isdir(path) else os.path.splitext(path)[0]


def _quaternion_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz], axis=-1)


def roll_pitch_yaw(q: np.ndarray) -> np.ndarray:
    """(N, 4) unit quaternions [x y z w] -> (N, 3) roll, pitch, yaw (R = Rz(yaw) Ry(pitch) Rx(roll), as ROS tf)."""
    x, y, z, w = np.moveaxis(q, -1, 0)
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.stack([roll, pitch, yaw], axis=-1)


def pose_deltas(poses: np.ndarray) -> np.ndarray:
    """(T, 7+) poses [x y z qx qy qz qw ...] -> (T-1, 6) [dx dy dz droll dpitch dyaw]: the
    position change and the rotation q[t+1] * q[t]^-1 (in the base frame) as roll/pitch/yaw."""
    q = poses[:, 3:7] / np.linalg.norm(poses[:, 3:7], axis=1, keepdims=True)
    inverse = q[:-1] * np.array([-1.0, -1.0, -1.0, 1.0])
    return np.concatenate([np.diff(poses[:, :3], axis=0), roll_pitch_yaw(_quaternion_product(q[1:], inverse))], axis=1)


class RosbagSource:
    """Bags as the conversion pipeline sees any source: find bags, plan a bag's episodes,
    read one episode, tell the state width. Picklable (the spec only)."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.source = spec.source
        self.use_header = self.source.stamps == "header"
        # aligned streams in the order drops are charged: cameras, state topics, action topics
        self.max_age: dict[str, int] = {}
        uses = [(cam.topic, cam.max_age_s) for cam in spec.cameras]
        uses += [(t.topic, t.max_age_s) for t in spec.state.topics + spec.action.topics]
        for topic, max_age_s in uses:
            age = _age_ns(self.source.max_age_s if max_age_s is None else max_age_s)
            self.max_age[topic] = min(age, self.max_age.get(topic, age))
        self.texts = {"instruction": spec.instruction, **{f"metadata.{k}": v for k, v in spec.metadata.items()}}

    # -- finding and planning ------------------------------------------------------------

    def find(self, pattern: str) -> list[tuple[str, int, float]]:
        """(path, bytes, mtime) of the bags a local glob matches: .bag/.db3/.mcap files and
        ROS 2 bag folders (counted whole); other files (sidecars) are not bags."""
        if is_remote(pattern):
            raise RobolakeError(f"source.paths: {pattern!r}: bags are read from the local file system "
                                f"(copy or mount them first)")
        found = []
        for path in sorted(glob.glob(pattern)):
            path = os.path.normpath(path)
            if os.path.isdir(path):
                files = files_under(path)
                if not any(f.endswith(STORAGE_SUFFIXES) for f in files):
                    continue
                stats = [os.stat(f) for f in files]
                found.append((path, sum(s.st_size for s in stats), max(s.st_mtime for s in stats)))
            elif path.endswith(BAG_SUFFIXES):
                stat = os.stat(path)
                found.append((path, stat.st_size, stat.st_mtime))
        return found

    def sidecar_path(self, path: str) -> str:
        return self.source.sidecar.format(bag=bag_stem(path))

    def companions(self, path: str) -> tuple[str, ...]:
        """Files hashed with the bag: its sidecar, when the spec reads one and it exists."""
        sidecar = self.sidecar_path(path)
        reads_sidecar = any(v.sidecar is not None for v in self.texts.values())
        return (sidecar,) if reads_sidecar and os.path.isfile(sidecar) else ()

    def required_topics(self) -> list[str]:
        topics = list(self.max_age)
        topics += [t for t in (self.source.reference_topic, self.source.split and self.source.split.marker_topic) if t]
        topics += [v.topic for v in self.texts.values() if v.topic is not None]
        return list(dict.fromkeys(topics))

    def plan(self, path: str, relative_id: str, sha256: str) -> list[EpisodeRef | QuarantineRecord]:
        """The episodes of one bag, or one quarantine record saying why it has none."""
        def rejected(code: str, reason: str) -> list[QuarantineRecord]:
            return [QuarantineRecord(relative_id, path, sha256, code, reason)]

        try:
            with open_bag(path, self.source.distro, self.source.msg_files) as reader:
                if not reader.connections or reader.message_count == 0:
                    return rejected("empty_bag", f"{path}: the bag holds no messages")
                present = {c.topic for c in reader.connections}
                missing = [t for t in self.required_topics() if t not in present]
                if missing:
                    return rejected("missing_topic", f"{path}: topic {missing[0]} is not in the bag "
                                                     f"(it has {', '.join(sorted(present))})")
                sidecar = self._sidecar(path)
                windows = self._windows(reader, path)
                return [self._plan_episode(reader, path, relative_id, sha256, sidecar, window, k, len(windows))
                        for k, window in enumerate(windows)]
        except BagError as exc:
            return rejected("unreadable_bag", str(exc))

    def _sidecar(self, path: str) -> dict | None:
        if not any(v.sidecar is not None for v in self.texts.values()):
            return None
        sidecar = self.sidecar_path(path)
        try:
            with open(sidecar, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            return None
        except yaml.YAMLError as exc:
            raise BagError(f"{path}: sidecar {sidecar} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise BagError(f"{path}: sidecar {sidecar} must be a YAML mapping")
        return data

    def _windows(self, reader, path: str) -> list[Window | None]:
        """Receive-time spans of the bag's episodes: the whole bag, or cut at markers or gaps."""
        split = self.source.split
        if split is None:
            return [None]
        if split.marker_topic is not None:
            starts = [ns for _, ns, _ in messages(reader, [split.marker_topic], path, decode=False)]
            return [(start, stop) for start, stop in zip(starts, starts[1:] + [reader.end_time + 1]) if stop > start]
        times = np.array([ns for _, ns, _ in messages(reader, list(self.max_age), path, decode=False)], np.int64)
        after = np.flatnonzero(np.diff(times) > _age_ns(split.gap_s))
        # Cut in the middle of each pause, so what is sent just before a part (an
        # instruction) or just after it belongs to it; the parts cover the whole bag.
        bounds = [reader.start_time, *((times[after] + times[after + 1]) // 2 + 1).tolist(), reader.end_time + 1]
        return [(int(start), int(stop)) for start, stop in zip(bounds, bounds[1:])]

    def _plan_episode(self, reader, path: str, relative_id: str, sha256: str, sidecar: dict | None,
                      window: Window | None, k: int, count: int) -> EpisodeRef | QuarantineRecord:
        episode_id = relative_id if window is None else f"{relative_id}/{k:04d}"
        try:
            texts = {name: self._text(reader, path, source, name, window, sidecar) for name, source in self.texts.items()}
        except EpisodeRejected as exc:
            return QuarantineRecord(episode_id, path, sha256, exc.code, exc.reason)
        start, stop = window or (reader.start_time, reader.end_time)
        metadata = {name.removeprefix("metadata."): value for name, value in texts.items() if name != "instruction"}
        metadata.setdefault("task", texts["instruction"])
        estimated_steps = max(1, int((stop - start) / NS_PER_S * self.spec.control_rate_hz))
        return EpisodeRef(episode_id, path, sha256, f"{k:04d}" if count > 1 else "", estimated_steps,
                          texts["instruction"], metadata, window=window)

    def _text(self, reader, path: str, source: ValueSource, name: str, window: Window | None,
              sidecar: dict | None) -> str:
        if source.value is not None:
            return source.value
        if source.sidecar is not None:
            if sidecar is None:
                raise EpisodeRejected("missing_key", f"{name}: sidecar {self.sidecar_path(path)} not found")
            if source.sidecar not in sidecar:
                raise EpisodeRejected("missing_key", f"{name}: key {source.sidecar!r} not in {self.sidecar_path(path)}")
            return str(sidecar[source.sidecar])
        for topic, receive_ns, message in messages(reader, [source.topic], path, window):
            try:
                return ros_messages.text(message)
            except ros_messages.MessageError as exc:
                raise EpisodeRejected("bad_message", f"{path}: topic {source.topic} at {receive_ns} ns: {exc}") from None
        raise EpisodeRejected("missing_key", f"{name}: no message on {source.topic} in {path} for this episode")

    # -- reading one episode ---------------------------------------------------------------

    def read(self, ref: EpisodeRef, state_dim: int, preprocessors: dict[str, FramePreprocessor]) -> Episode:
        """Align, decode and check one episode; raises EpisodeRejected with the reason to quarantine it."""
        bag = ref.source_path
        recorded = self._record(bag, ref.window)
        for topic in self.max_age:
            if not recorded[topic][0]:
                raise EpisodeRejected("missing_topic", f"{bag}: no message on {topic} in this episode")
        alignment = self._align(bag, recorded)
        if any(t.delta for t in self.spec.action.topics):
            kept = len(alignment.ticks) - 1  # the last tick has no next state to derive its action from
        else:
            kept = len(alignment.ticks)
        check_step_bounds(max(kept, 0), self.spec)
        picked = {topic: index[: kept + 1] for topic, index in alignment.indices.items()}

        def vectors(spec: TopicSpec) -> np.ndarray:
            stamps, found = recorded[spec.topic]
            rows = []
            for i in picked[spec.topic]:
                try:
                    rows.append(ros_messages.vector(found[i], spec.fields, spec.joints))
                except (ros_messages.MessageError, AttributeError, TypeError, ValueError) as exc:
                    raise EpisodeRejected("bad_message", f"{bag}: topic {spec.topic} at {stamps[i]} ns: {exc}") from None
            if len({len(row) for row in rows}) > 1:
                raise EpisodeRejected("bad_message", f"{bag}: topic {spec.topic}: vectors change length "
                                                     f"({sorted({len(row) for row in rows})})")
            return np.stack(rows)

        state = np.concatenate([vectors(t)[:kept] for t in self.spec.state.topics], axis=1).astype(np.float32)
        actions = np.concatenate([self._action_part(t, vectors(t), kept) for t in self.spec.action.topics], axis=1)
        actions = actions.astype(np.float32)
        if actions.shape[1] != len(self.spec.action.names):
            raise EpisodeRejected("bad_shape", f"actions have {actions.shape[1]} dimensions but action.names lists "
                                               f"{len(self.spec.action.names)}")
        if state.shape[1] != state_dim:
            raise EpisodeRejected("bad_shape", f"state has {state.shape[1]} dimensions, the dataset has {state_dim}")
        check_finite("action", actions)
        check_finite("state", state)
        changes: list[str] = []
        frames = {
            cam.name: preprocess_frames(
                self._same_size(bag, cam, self._frames(bag, cam.topic, recorded[cam.topic], picked[cam.topic][:kept]),
                                changes),
                preprocessors[cam.name])
            for cam in self.spec.cameras
        }
        dropped = {topic: n for topic, n in alignment.dropped.items() if n}
        timestamps = (alignment.ticks[:kept] - alignment.ticks[0]) / NS_PER_S if kept else None
        return Episode(ref, actions, state, terminal_rewards(kept), {cam: enc for cam, (enc, _) in frames.items()},
                       {cam: summary for cam, (_, summary) in frames.items()}, dropped, timestamps,
                       terminal=ends_terminal(self.spec, False), resolution_change="; ".join(changes))

    def _record(self, bag: str, window: Window | None) -> dict[str, tuple[list[int], list]]:
        """Stamps and deserialized messages of every aligned topic (and the reference topic)."""
        topics = list(dict.fromkeys([*self.max_age, *filter(None, [self.source.reference_topic])]))
        recorded: dict[str, tuple[list[int], list]] = {topic: ([], []) for topic in topics}
        try:
            with open_bag(bag, self.source.distro, self.source.msg_files) as reader:
                for topic, receive_ns, message in messages(reader, topics, bag, window):
                    stamps, found = recorded[topic]
                    stamps.append(ros_messages.stamp_ns(message, receive_ns, self.use_header))
                    found.append(message)
        except BagError as exc:
            raise EpisodeRejected("unreadable_bag", str(exc)) from None
        return recorded

    def _align(self, bag: str, recorded: dict[str, tuple[list[int], list]]):
        """Ticks over the span where every stream has data: from the latest first message
        to the earliest (last message + its max age), at the control rate or at the
        reference topic's messages. Ticks inside the span with a stale stream are dropped.
        Stamps that go backwards in any stream (a clock stepped back) quarantine the
        episode: around the step no tick can tell which message to take."""
        streams = {topic: StreamTimes(np.asarray(recorded[topic][0], np.int64), age)
                   for topic, age in self.max_age.items()}
        start = max(int(s.stamps.min()) for s in streams.values())
        end = min(int(s.stamps.max()) + min(s.max_age_ns, NS_PER_S * 3600) for s in streams.values())
        reference = self.source.reference_topic
        if reference is None:
            ticks = ticks_at_rate(start, end, self.spec.control_rate_hz)
        else:
            stamps = np.sort(np.asarray(recorded[reference][0], np.int64))
            ticks = stamps[(stamps >= start) & (stamps <= end)]
        for topic, (recorded_stamps, _) in recorded.items():
            back = step_back(np.asarray(recorded_stamps, np.int64), ticks)
            if back is not None:
                raise EpisodeRejected(
                    "stamps_backwards",
                    f"{bag}: the stamps of {topic} go backwards at {back.steps} of its {len(recorded_stamps)} "
                    f"messages, first at message {back.index}: {back.from_ns} -> {back.to_ns} ns "
                    f"({(back.from_ns - back.to_ns) / NS_PER_S:.3f} s back); "
                    f"{back.ticks} of {len(ticks)} ticks fall where messages from before and after overlap")
        return align(ticks, streams)

    @staticmethod
    def _action_part(spec: TopicSpec, values: np.ndarray, kept: int) -> np.ndarray:
        if spec.delta == "difference":
            return np.diff(values, axis=0)[:kept]
        if spec.delta == "pose":
            return pose_deltas(values)[:kept]
        return values[:kept]

    @staticmethod
    def _frames(bag: str, topic: str, recorded: tuple[list[int], list], picked: np.ndarray) -> Iterator[np.ndarray]:
        """The picked frames of one camera, each message decoded once (a slow camera is
        picked at several ticks in a row)."""
        stamps, found = recorded
        last, frame = -1, None
        for i in picked:
            if i != last:
                try:
                    frame = ros_messages.image(found[i])
                except (ros_messages.MessageError, AttributeError) as exc:
                    raise EpisodeRejected("bad_message", f"{bag}: topic {topic} at {stamps[i]} ns: {exc}") from None
                last = i
            yield frame

    def _same_size(self, bag: str, cam: CameraSpec, frames: Iterator[np.ndarray],
                   changes: list[str]) -> Iterator[np.ndarray]:
        """A camera's frames as they come. The first one whose size differs from the first
        frame's quarantines the episode, or (source.on_resolution_change: flag) is noted
        in `changes`; every frame is then resized to the camera's size as usual."""
        first, noted = None, False
        for step, frame in enumerate(frames):
            size = frame.shape[:2]
            first = first or size
            if size != first and not noted:
                change = (f"camera {cam.name} ({cam.topic}) changes resolution at step {step}: "
                          f"{first[0]}x{first[1]} -> {size[0]}x{size[1]}")
                if self.source.on_resolution_change == "quarantine":
                    raise EpisodeRejected("resolution_changed", f"{bag}: {change}")
                changes.append(change)
                noted = True
            yield frame

    # -- the state width -------------------------------------------------------------------

    def state_width(self, path: str) -> int | None:
        """Width of the state vector from the first message of each state topic, or None."""
        width = 0
        try:
            with open_bag(path, self.source.distro, self.source.msg_files) as reader:
                for spec in self.spec.state.topics:
                    first = next(messages(reader, [spec.topic], path), None)
                    if first is None:
                        return None
                    width += len(ros_messages.vector(first[2], spec.fields, spec.joints))
        except (BagError, ros_messages.MessageError, AttributeError, TypeError, ValueError):
            return None
        return width

    def state_layout(self, path: str, state_dim: int) -> list[dict] | None:
        """One part per state topic (pipelines/state_layout.py)."""
        parts = [(topic.topic, StateSpec(topics=[topic])) for topic in self.spec.state.topics or []]
        return layout_of_parts(RosbagSource, self.spec, parts, path, state_dim)

    def state_source(self) -> str:
        return f"state.topics {[t.topic for t in self.spec.state.topics]}"

    def manifest_extras(self) -> dict:
        return {}
