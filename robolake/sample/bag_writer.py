"""ROS 2 bags (mcap storage), one per episode, as a teleoperation recorder would write them.

Header stamps are capture times; the bag (receive) timestamp adds a small transport
delay, so messages are written in receive order. Times count from a fixed epoch plus an
offset derived from the seed and the episode index, never from the wall clock, so the
same episode gives the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from robolake.sample.episode import Episode
from robolake.sample.motion import JOINT_NAMES
from robolake.sample.scenario import episode_streams

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
T = TYPESTORE.types
EPOCH_NS = 1_700_000_000 * 10**9  # 2023-11-14, the first recording day
# Receive delay after capture, seconds (uniform range): JPEG compression takes a while.
DELAYS = {"camera": (0.008, 0.020), "state": (0.0005, 0.002), "teleop": (0.0005, 0.0015)}
# The teleop command of tick k answers observation k: it carries that observation's
# stamp and goes out 1-8 ms later (jittered: the publisher is not real-time).
TELEOP_LAG_S = (0.001, 0.008)
TOPICS = {
    "joint_states": ("/joint_states", "sensor_msgs/msg/JointState"),
    "ee_pose": ("/ee_pose", "geometry_msgs/msg/PoseStamped"),
    "ee_delta": ("/teleop/ee_delta", "geometry_msgs/msg/TwistStamped"),
    "gripper": ("/teleop/gripper", "sensor_msgs/msg/JointState"),  # one joint, "gripper": -1 open, +1 closed
    "instruction": ("/instruction", "std_msgs/msg/String"),
}


def camera_topic(camera: str) -> str:
    return f"/camera/{camera}/image_raw/compressed"


def episode_start_ns(seed: int, index: int) -> int:
    """When the episode's t=0 falls: one recording day per seed, an episode every two minutes."""
    return EPOCH_NS + ((seed % 1000) * 86_400 + index * 120) * 10**9


def _header(ns: int, frame_id: str):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                    frame_id=frame_id)


def _vector(values) -> object:
    return T["geometry_msgs/msg/Vector3"](x=float(values[0]), y=float(values[1]), z=float(values[2]))


class _Messages:
    """Builds each message of an episode on demand, from (stream, sample number)."""

    def __init__(self, episode: Episode, start_ns: int):
        self.episode, self.start = episode, start_ns

    def build(self, stream: str, i: int):
        return self.camera(stream, i) if stream in self.episode.cameras else getattr(self, stream)(i)

    def ns(self, seconds: float) -> int:
        return self.start + int(round(seconds * 1e9))

    def camera(self, camera: str, capture: int):
        stamp = self.ns(self.episode.capture_times[camera][capture])
        return T["sensor_msgs/msg/CompressedImage"](
            header=_header(stamp, f"{camera}_camera"), format="rgb8; jpeg compressed bgr8", data=self.episode.jpeg(camera, capture))

    def joint_states(self, i: int):
        e = self.episode
        return T["sensor_msgs/msg/JointState"](
            header=_header(self.ns(e.state_times[i]), ""), name=JOINT_NAMES,
            position=e.joints[i].astype(np.float64), velocity=e.joint_velocities[i].astype(np.float64),
            effort=np.zeros(0, np.float64))

    def ee_pose(self, i: int):
        e = self.episode
        x, y, z, w = e.eef_quat[i]
        pose = T["geometry_msgs/msg/Pose"](
            position=T["geometry_msgs/msg/Point"](x=float(e.tool[i, 0]), y=float(e.tool[i, 1]), z=float(e.tool[i, 2])),
            orientation=T["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w)))
        return T["geometry_msgs/msg/PoseStamped"](header=_header(self.ns(e.state_times[i]), "base_link"), pose=pose)

    def ee_delta(self, k: int):
        action = self.episode.actions[k]
        twist = T["geometry_msgs/msg/Twist"](linear=_vector(action[:3]), angular=_vector(action[3:6]))
        header = _header(self.ns(self.episode.ticks[k]), "base_link")
        return T["geometry_msgs/msg/TwistStamped"](header=header, twist=twist)

    def gripper(self, k: int):
        return T["sensor_msgs/msg/JointState"](
            header=_header(self.ns(self.episode.ticks[k]), ""), name=["gripper"],
            position=self.episode.actions[k, 6:7].astype(np.float64), velocity=np.zeros(0, np.float64),
            effort=np.zeros(0, np.float64))

    def instruction(self, _: int):
        return T["std_msgs/msg/String"](data=self.episode.meta.language_instruction)


def write_bag(path: str, episode: Episode) -> None:
    """The bag folder `path` (metadata.yaml + one .mcap) and its sidecar `path`.yaml."""
    rng = np.random.default_rng(episode_streams(episode.seed, episode.index)["transport"])
    teleop = episode.ticks + rng.uniform(*TELEOP_LAG_S, episode.steps)  # when each command goes out
    messages = _Messages(episode, episode_start_ns(episode.seed, episode.index))
    # (stream, send times, delay kind); the instruction goes out just before the first sample.
    streams = [(camera, times, "camera") for camera, times in episode.capture_times.items()]
    streams += [("joint_states", episode.state_times, "state"), ("ee_pose", episode.state_times, "state"),
                ("ee_delta", teleop, "teleop"), ("gripper", teleop, "teleop")]
    first = min(times[0] for _, times, _ in streams)
    streams.insert(0, ("instruction", np.array([first - 0.01]), "teleop"))
    events = []
    for order, (stream, times, kind) in enumerate(streams):
        received = times + rng.uniform(*DELAYS[kind], len(times))
        events += [(messages.ns(t), order, stream, i) for i, t in enumerate(received)]
    events.sort()

    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for stream, _, _ in streams:
            topic, msgtype = TOPICS.get(stream) or (camera_topic(stream), "sensor_msgs/msg/CompressedImage")
            connections[stream] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
        for received_ns, _, stream, i in events:
            msg = messages.build(stream, i)
            writer.write(connections[stream], received_ns, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
    Path(f"{path}.yaml").write_text(yaml.safe_dump(episode.meta.attrs(), sort_keys=True))
