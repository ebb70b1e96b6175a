"""Synthetic teleoperation bags (ROS 2 mcap / sqlite3, ROS 1) whose every stamp and value
is known, so a test can compute the expected aligned episode on its own.

`write_teleop_bag` writes, from t0 = EPOCH + seed * 1000 s:

- `/cam/rgb`   sensor_msgs/msg/Image rgb8, 30 Hz, 48x64 uniform frames,
- `/cam/jpeg`  sensor_msgs/msg/CompressedImage (JPEG), 15 Hz, 48x64 uniform frames,
- `/joint_states` sensor_msgs/msg/JointState, 100 Hz, names in MESSAGE_JOINTS order
  (shuffled against JOINTS, plus a joint no spec asks for), positions `joint_positions(t)`,
- `/cmd` geometry_msgs/msg/TwistStamped, 10 Hz, stamps jittered +-5 ms (seeded),
  values `cmd_value(k)` of the message index k,
- `/ee_pose` geometry_msgs/msg/PoseStamped at 100 Hz (only with `pose=True`),
- `/instruction` std_msgs/msg/String (once before the first sample, or at `instruction_at`),
- `/episode_start` std_msgs/msg/String markers (only with `markers=`).

Each frame's colour encodes a frame number (the camera's capture counter), which
survives a center crop, a resize and JPEG (`frame_code` reads it back). Header stamps
are capture times; the bag's receive time is the stamp plus 1-15 ms (per topic in FIFO
order), and messages are written in receive order. The returned `ExpectedStreams` has,
per topic, the header stamps, receive times and values of every message written, in
the order written."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

NS = 1_000_000_000
MS = 1_000_000
EPOCH_NS = 1_700_000_000 * NS
FRAME_SHAPE = (48, 64)  # height, width of both cameras' source frames
JOINTS = ("j1", "j2", "j3", "finger")  # the canonical order of ExpectedStreams joint values
MESSAGE_JOINTS = ("j3", "finger", "j1", "j2")  # the order the JointState messages carry
INSTRUCTION = "pick up the red block"

RGB, JPEG, JOINT_STATES, CMD, POSE, INSTRUCTION_TOPIC, MARKER_TOPIC = (
    "/cam/rgb", "/cam/jpeg", "/joint_states", "/cmd", "/ee_pose", "/instruction", "/episode_start",
)
MSGTYPES = {
    RGB: "sensor_msgs/msg/Image",
    JPEG: "sensor_msgs/msg/CompressedImage",
    JOINT_STATES: "sensor_msgs/msg/JointState",
    CMD: "geometry_msgs/msg/TwistStamped",
    POSE: "geometry_msgs/msg/PoseStamped",
    INSTRUCTION_TOPIC: "std_msgs/msg/String",
    MARKER_TOPIC: "std_msgs/msg/String",
}
RATES = {RGB: 30.0, JPEG: 15.0, JOINT_STATES: 100.0, CMD: 10.0, POSE: 100.0}
CMD_JITTER_S = 0.005
DELAY_S = (0.001, 0.015)

ROS2_STORE = get_typestore(Stores.ROS2_HUMBLE)
ROS1_STORE = get_typestore(Stores.ROS1_NOETIC)
STORAGES = {"mcap": (StoragePlugin.MCAP, ".mcap"), "sqlite3": (StoragePlugin.SQLITE3, ".db3")}


# ---------------------------------------------------------------- known content


def frame_rgb(code: int, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """A uniform RGB frame whose colour encodes `code` (0 <= code < 4096): red the low
    4 bits, green the next 4, blue (inverted) the high 4; 16 levels apart, so JPEG and
    bilinear resizing cannot move it to a neighbouring code, and a red/blue swap shows."""
    if not 0 <= code < 4096:
        raise ValueError(f"frame code {code} out of range")
    colour = (16 * (code % 16) + 8, 16 * ((code // 16) % 16) + 8, 247 - 16 * (code // 256))
    return np.broadcast_to(np.array(colour, np.uint8), (*shape, 3)).copy()


def frame_code(rgb: np.ndarray) -> int:
    """The code of a frame written by `frame_rgb` (after crop, resize, JPEG or PNG)."""
    r, g, b = np.asarray(rgb, np.float64).reshape(-1, 3).mean(axis=0)
    low, mid, high = round((r - 8) / 16), round((g - 8) / 16), round((247 - b) / 16)
    return int(low + 16 * mid + 256 * high)


def decode_png_or_jpeg(data: bytes) -> np.ndarray:
    """Encoded image bytes (as silver stores them) -> RGB uint8."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None, "not a decodable image"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def joint_positions(t: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 4) positions of JOINTS at capture times t (seconds from t0): smooth, distinct."""
    t = np.asarray(t, np.float64)[:, None]
    amplitude = np.array([0.8, 0.5, 0.3, 0.02])
    frequency = np.array([0.37, 0.61, 0.23, 0.9])
    phase = np.array([0.1, 1.3, 2.2, 0.4]) + 0.5 * seed
    offset = np.array([0.0, -0.4, 1.1, 0.02])
    return offset + amplitude * np.sin(2 * np.pi * frequency * t + phase)


def cmd_value(k: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 6) TwistStamped values [vx vy vz wx wy wz] of message numbers k."""
    k = np.asarray(k, np.float64)
    return np.stack(
        [0.01 * k + 0.1 * seed, -0.02 * k, 0.1 * np.sin(0.7 * k), 0.05 * np.cos(0.3 * k), 0.001 * k * k, 0.5 + 0 * k],
        axis=1,
    )


def pose_value(t: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 7) [x y z qx qy qz qw] at capture times t: moving position, yaw-only rotation."""
    t = np.asarray(t, np.float64)
    yaw = 0.3 * np.sin(2 * np.pi * 0.2 * t + seed) + 0.1
    x, z = 0.4 + 0.1 * np.sin(2 * np.pi * 0.3 * t), 0.2 + 0.05 * np.cos(2 * np.pi * 0.5 * t)
    position = np.stack([x, 0.05 * t, z], axis=1)
    quat = np.stack([0 * t, 0 * t, np.sin(yaw / 2), np.cos(yaw / 2)], axis=1)
    return np.concatenate([position, quat], axis=1)


def pose_yaw(values: np.ndarray) -> np.ndarray:
    """Yaw of `pose_value` rows (roll and pitch are 0)."""
    return 2 * np.arctan2(values[:, 5], values[:, 6])


# ---------------------------------------------------------------- what was written


@dataclass
class Stream:
    """Every message of one topic, in the order written (receive order)."""

    topic: str
    msgtype: str
    stamps: np.ndarray  # int64 ns: header stamp, or the receive time for messages without a header
    receive: np.ndarray  # int64 ns: the bag's timestamp
    values: np.ndarray  # (N, D) float64: frame codes (D=1), JOINTS positions, twist, pose; (N, 0) for text
    texts: list[str] = field(default_factory=list)  # String topics
    has_header: bool = True


@dataclass
class ExpectedStreams:
    path: Path
    storage: str
    seed: int
    start_ns: int  # t0: capture time 0
    streams: dict[str, Stream]
    corrupted: dict[str, np.ndarray] = field(default_factory=dict)  # topic -> indices of malformed messages

    def __getitem__(self, topic: str) -> Stream:
        return self.streams[topic]

    def joint_values(self, names: Sequence[str]) -> np.ndarray:
        """JointState positions of every message, reordered as `names`."""
        return self.streams[JOINT_STATES].values[:, [JOINTS.index(n) for n in names]]


# ---------------------------------------------------------------- messages


class _Builder:
    def __init__(self, store):
        self.store, self.T, self.ros1 = store, store.types, store is ROS1_STORE

    def header(self, ns: int, frame_id: str):
        stamp = self.T["builtin_interfaces/msg/Time"](sec=int(ns // NS), nanosec=int(ns % NS))
        if self.ros1:
            return self.T["std_msgs/msg/Header"](seq=0, stamp=stamp, frame_id=frame_id)
        return self.T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def image(self, ns: int, code: int, malformed: bool):
        rgb = frame_rgb(code)
        height, width = rgb.shape[:2]
        data = rgb.reshape(-1)
        if malformed:
            data = data[: -7]  # data length != height * step
        return self.T["sensor_msgs/msg/Image"](
            header=self.header(ns, "cam_rgb"), height=height, width=width, encoding="rgb8", is_bigendian=0,
            step=width * 3, data=data)

    def compressed(self, ns: int, code: int, malformed: bool):
        if malformed:
            data = np.frombuffer(b"\x00\x01not a jpeg at all" * 20, np.uint8).copy()
        else:
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame_rgb(code), cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            data = jpeg.reshape(-1)
        return self.T["sensor_msgs/msg/CompressedImage"](header=self.header(ns, "cam_jpeg"), format="jpeg", data=data)

    def joint_state(self, ns: int, positions: np.ndarray):
        by_name = dict(zip(JOINTS, positions))
        return self.T["sensor_msgs/msg/JointState"](
            header=self.header(ns, ""), name=list(MESSAGE_JOINTS),
            position=np.array([by_name[n] for n in MESSAGE_JOINTS], np.float64),
            velocity=np.zeros(0, np.float64), effort=np.zeros(0, np.float64))

    def vector3(self, values) -> object:
        return self.T["geometry_msgs/msg/Vector3"](x=float(values[0]), y=float(values[1]), z=float(values[2]))

    def twist(self, ns: int, values: np.ndarray):
        twist = self.T["geometry_msgs/msg/Twist"](linear=self.vector3(values[:3]), angular=self.vector3(values[3:]))
        return self.T["geometry_msgs/msg/TwistStamped"](header=self.header(ns, "base_link"), twist=twist)

    def pose(self, ns: int, values: np.ndarray):
        x, y, z, qx, qy, qz, qw = (float(v) for v in values)
        pose = self.T["geometry_msgs/msg/Pose"](
            position=self.T["geometry_msgs/msg/Point"](x=x, y=y, z=z),
            orientation=self.T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
        return self.T["geometry_msgs/msg/PoseStamped"](header=self.header(ns, "base_link"), pose=pose)

    def string(self, text: str):
        return self.T["std_msgs/msg/String"](data=text)

    def serialize(self, message) -> bytes:
        if self.ros1:
            return self.store.serialize_ros1(message, message.__msgtype__)
        return self.store.serialize_cdr(message, message.__msgtype__)


# ---------------------------------------------------------------- the bag


def _capture_times(rate: float, seconds: float) -> np.ndarray:
    return np.arange(int(np.ceil(seconds * rate - 1e-9))) / rate


def _silent(times: np.ndarray, windows: Iterable[tuple[float, float]]) -> np.ndarray:
    """Mask of the capture times outside every [start, end) window."""
    keep = np.ones(len(times), bool)
    for start, end in windows:
        keep &= ~((times >= start) & (times < end))
    return keep


def _receive(stamps_ns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stamp + 1-15 ms, kept in FIFO order within a topic (one publisher, one connection)."""
    received = stamps_ns + np.round(rng.uniform(*DELAY_S, len(stamps_ns)) * NS).astype(np.int64)
    for i in range(1, len(received)):
        received[i] = max(received[i], received[i - 1] + 1000)
    return received


def write_teleop_bag(
    path: str | Path,
    *,
    storage: str = "mcap",
    seconds: float = 3.0,
    seed: int = 0,
    gaps: Mapping[str, tuple[float, float]] | None = None,
    drop_camera: tuple[float, float] | None = None,
    pause: tuple[float, float] | None = None,
    malformed: str | None = None,
    malformed_window: tuple[float, float] = (1.0, 1.25),
    pose: bool = False,
    markers: Sequence[float] | None = None,
    instruction_at: Sequence[float] = (-0.02,),
    instruction: str = INSTRUCTION,
    omit_topics: Iterable[str] = (),
    empty: bool = False,
    clock_step: tuple[str, float, float] | None = None,
) -> ExpectedStreams:
    """Write one synthetic teleoperation bag; return what was written.

    path: a `.mcap` or `.db3` storage file (storage mcap / sqlite3), a folder (a ROS 2
      bag folder with metadata.yaml), or a `.bag` file (storage "ros1").
    seconds: capture times of the sampled streams lie in [0, seconds) from t0.
    gaps: {topic: (start_s, end_s)}: that topic publishes nothing captured in the window;
      drop_camera: the same for /cam/jpeg.
    pause: (start_s, duration_s): every sampled stream is silent in that window.
    malformed: "image_length" (an Image whose data is 7 bytes short of height*step) or
      "compressed" (a CompressedImage that is no JPEG), for each frame captured in
      `malformed_window` (several consecutive frames, so that at least one is picked).
    pose: also write /ee_pose (PoseStamped, 100 Hz).
    markers: receive times (s from t0) of std_msgs/String messages on /episode_start.
    instruction_at: receive times (s from t0) of the /instruction String.
    omit_topics: topics left out altogether; empty: topics declared, no message written.
    clock_step: (topic, at_s, back_s): that topic's publisher clock steps back by back_s
      at capture time at_s: the header stamps of its messages from then on are back_s
      early (their receive times are not).
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    t0 = EPOCH_NS + seed * 1000 * NS
    windows = {topic: [] for topic in RATES}
    for topic, window in {**(gaps or {}), **({JPEG: drop_camera} if drop_camera else {})}.items():
        windows[topic].append(window)
    if pause:
        for topic in windows:
            windows[topic].append((pause[0], pause[0] + pause[1]))
    omit = set(omit_topics)
    if not pose:
        omit.add(POSE)
    if not markers:
        omit.add(MARKER_TOPIC)

    def ns(seconds_from_t0: np.ndarray) -> np.ndarray:
        return t0 + np.round(np.asarray(seconds_from_t0, np.float64) * NS).astype(np.int64)

    streams: dict[str, Stream] = {}
    corrupted: dict[str, np.ndarray] = {}
    for topic in (RGB, JPEG):
        times = _capture_times(RATES[topic], seconds)
        codes = np.arange(len(times))
        keep = _silent(times, windows[topic])
        times, codes = times[keep], codes[keep]
        stamps = ns(times)
        codes = codes[:, None].astype(np.float64)
        streams[topic] = Stream(topic, MSGTYPES[topic], stamps, _receive(stamps, rng), codes)
        bad = (malformed == "image_length" and topic == RGB) or (malformed == "compressed" and topic == JPEG)
        if bad:
            corrupted[topic] = np.flatnonzero((times >= malformed_window[0]) & (times < malformed_window[1]))
    times = _capture_times(RATES[JOINT_STATES], seconds)
    times = times[_silent(times, windows[JOINT_STATES])]
    stamps = ns(times)
    streams[JOINT_STATES] = Stream(JOINT_STATES, MSGTYPES[JOINT_STATES], stamps, _receive(stamps, rng),
                                   joint_positions(times, seed))
    ticks = _capture_times(RATES[CMD], seconds)
    jitter = rng.uniform(-CMD_JITTER_S, CMD_JITTER_S, len(ticks))
    k = np.arange(len(ticks))
    keep = _silent(ticks, windows[CMD])
    stamps = ns(ticks[keep] + jitter[keep])
    streams[CMD] = Stream(CMD, MSGTYPES[CMD], stamps, _receive(stamps, rng), cmd_value(k[keep], seed))
    times = _capture_times(RATES[POSE], seconds)
    times = times[_silent(times, windows[POSE])]
    stamps = ns(times)
    streams[POSE] = Stream(POSE, MSGTYPES[POSE], stamps, _receive(stamps, rng), pose_value(times, seed))
    received = ns(np.asarray(instruction_at, np.float64))
    streams[INSTRUCTION_TOPIC] = Stream(INSTRUCTION_TOPIC, MSGTYPES[INSTRUCTION_TOPIC], received, received.copy(),
                                        np.zeros((len(received), 0)), [instruction] * len(received), has_header=False)
    received = ns(np.asarray(markers or [], np.float64))
    streams[MARKER_TOPIC] = Stream(MARKER_TOPIC, MSGTYPES[MARKER_TOPIC], received, received.copy(),
                                   np.zeros((len(received), 0)), [f"episode {i}" for i in range(len(received))],
                                   has_header=False)
    streams = {topic: stream for topic, stream in streams.items() if topic not in omit}
    if clock_step:
        topic, at_s, back_s = clock_step
        stepped = streams[topic].stamps >= ns(at_s)
        streams[topic].stamps[stepped] -= round(back_s * NS)

    builder = _Builder(ROS1_STORE if storage == "ros1" else ROS2_STORE)
    events = sorted(
        (int(receive_ns), order, topic, i)
        for order, (topic, stream) in enumerate(streams.items())
        for i, receive_ns in enumerate(stream.receive)
    )
    if empty:
        events = []

    def build(topic: str, i: int):
        stream = streams[topic]
        stamp = int(stream.stamps[i])
        bad = i in set(corrupted.get(topic, np.zeros(0, int)).tolist())
        if topic == RGB:
            return builder.image(stamp, int(stream.values[i, 0]), bad)
        if topic == JPEG:
            return builder.compressed(stamp, int(stream.values[i, 0]), bad)
        if topic == JOINT_STATES:
            return builder.joint_state(stamp, stream.values[i])
        if topic == CMD:
            return builder.twist(stamp, stream.values[i])
        if topic == POSE:
            return builder.pose(stamp, stream.values[i])
        return builder.string(stream.texts[i])

    _write(path, storage, builder, streams, events, build)
    for topic, stream in streams.items():  # receive order == written order within a topic
        assert np.all(np.diff(stream.receive) > 0), topic
    return ExpectedStreams(path, storage, seed, t0, streams, corrupted)


def _write(path: Path, storage: str, builder: _Builder, streams: dict[str, Stream], events: list, build) -> None:
    if storage == "ros1":
        if path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        with Ros1Writer(path) as writer:
            connections = {t: writer.add_connection(t, s.msgtype, typestore=builder.store) for t, s in streams.items()}
            for receive_ns, _, topic, i in events:
                writer.write(connections[topic], receive_ns, builder.serialize(build(topic, i)))
        return
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)} or ros1, got {storage!r}")
    plugin, suffix = STORAGES[storage]
    single_file = path.suffix == suffix  # anything else is a bag folder (its name may hold a dot)
    folder = path.with_name(f".{path.stem}.writing") if single_file else path
    for leftover in (folder, path):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with Writer(folder, version=8, storage_plugin=plugin) as writer:
        connections = {t: writer.add_connection(t, s.msgtype, typestore=builder.store) for t, s in streams.items()}
        for receive_ns, _, topic, i in events:
            writer.write(connections[topic], receive_ns, builder.serialize(build(topic, i)))
    if single_file:
        (folder / f"{folder.name}{suffix}").rename(path)
        shutil.rmtree(folder)


def sidecar_path(bag_path: str | Path) -> Path:
    """`{bag}.yaml`: the bag path without its suffix (a folder: the folder path) + .yaml."""
    bag_path = Path(bag_path)
    stem = bag_path.with_suffix("") if bag_path.suffix in (".mcap", ".db3", ".bag") else bag_path
    return stem.parent / f"{stem.name}.yaml"


def write_sidecar(bag_path: str | Path, **fields: str) -> Path:
    """The bag's metadata YAML (task, operator, ...) beside it; returns its path."""
    path = sidecar_path(bag_path)
    path.write_text(yaml.safe_dump({k: str(v) for k, v in fields.items()}, sort_keys=True))
    return path


def write_garbage_bag(path: str | Path, size: int = 4096, seed: int = 0) -> Path:
    """A file with a bag's suffix and random bytes (an unreadable bag)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes())
    return path


def truncate(path: str | Path, fraction: float = 0.5) -> Path:
    """Cut a storage file to `fraction` of its size (an interrupted recording)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path
