"""Decoding of deserialized ROS 1 / ROS 2 messages into what an episode needs:
a stamp, a numeric vector, an RGB frame or a text. Works on the message objects that
rosbags' typestores return (attribute access, numpy arrays for numeric sequences).

Malformed messages raise MessageError naming what is wrong; the bag reader turns that
into a quarantine reason with the bag, topic and timestamp."""

from __future__ import annotations

import cv2
import numpy as np


class MessageError(ValueError):
    """A message that cannot be decoded as the spec says."""


IMAGE_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
TO_RGB = {"rgb8": None, "bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
          "mono8": cv2.COLOR_GRAY2RGB}


def stamp_ns(message: object, receive_ns: int, use_header: bool = True) -> int:
    """The header stamp (ROS 1 `secs`/`nsecs` or ROS 2 `sec`/`nanosec`) when the message
    has one and `use_header`, else the time the bag received it."""
    header = getattr(message, "header", None)
    if not use_header or header is None:
        return receive_ns
    stamp = header.stamp
    seconds = getattr(stamp, "sec", None)
    if seconds is None:
        return int(stamp.secs) * 1_000_000_000 + int(stamp.nsecs)
    return int(seconds) * 1_000_000_000 + int(stamp.nanosec)


def field(message: object, path: str) -> object:
    """A field by dotted path, e.g. `twist.linear.x` or `position` (a sequence)."""
    value = message
    for part in path.split("."):
        if not hasattr(value, part):
            raise MessageError(f"{getattr(message, '__msgtype__', type(message).__name__)} has no field {path!r}")
        value = getattr(value, part)
    return value


def _xyz(vector: object) -> list[float]:
    return [vector.x, vector.y, vector.z]


def _pose(pose: object) -> list[float]:
    q = pose.orientation
    return _xyz(pose.position) + [q.x, q.y, q.z, q.w]


def _twist(twist: object) -> list[float]:
    return _xyz(twist.linear) + _xyz(twist.angular)


def joint_positions(message: object, names: list[str] | None) -> np.ndarray:
    """JointState positions in the order of `names` (all, in message order, when None)."""
    positions = np.asarray(message.position, np.float64)
    if names is None:
        return positions
    index = {name: i for i, name in enumerate(message.name)}
    missing = [name for name in names if name not in index]
    if missing or len(positions) != len(message.name):
        raise MessageError(
            f"JointState lacks joints {missing}" if missing
            else f"JointState has {len(message.name)} names but {len(positions)} positions"
        )
    return positions[[index[name] for name in names]]


def vector(message: object, fields: list[str] | None = None, joint_names: list[str] | None = None) -> np.ndarray:
    """A float64 vector from a message: the `fields` given (dotted paths, scalars or
    sequences, concatenated), or the standard layout of the message type: JointState
    positions (ordered by `joint_names`), Pose(Stamped) [x y z qx qy qz qw],
    Twist(Stamped) [vx vy vz wx wy wz], Odometry pose + twist, a scalar `data`."""
    if fields:
        parts = [np.atleast_1d(np.asarray(field(message, path), np.float64)) for path in fields]
        return np.concatenate(parts)
    kind = getattr(message, "__msgtype__", "").rsplit("/", 1)[-1]
    if kind == "JointState":
        return joint_positions(message, joint_names)
    if kind in ("PoseStamped", "Pose"):
        return np.array(_pose(getattr(message, "pose", message)))
    if kind in ("TwistStamped", "Twist"):
        return np.array(_twist(getattr(message, "twist", message)))
    if kind == "Odometry":
        return np.array(_pose(message.pose.pose) + _twist(message.twist.twist))
    if hasattr(message, "data") and np.ndim(message.data) <= 1:
        return np.atleast_1d(np.asarray(message.data, np.float64))
    raise MessageError(f"no standard vector layout for {kind or type(message).__name__}; give its fields by path")


def image(message: object) -> np.ndarray:
    """An RGB uint8 frame from sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) or
    sensor_msgs/CompressedImage (JPEG or PNG)."""
    kind = getattr(message, "__msgtype__", "").rsplit("/", 1)[-1]
    data = np.asarray(message.data, np.uint8)
    if kind == "CompressedImage":
        frame = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if frame is None:
            raise MessageError(f"CompressedImage ({message.format!r}, {data.size} bytes) is not a decodable JPEG/PNG")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    encoding = message.encoding
    if encoding not in IMAGE_CHANNELS:
        raise MessageError(f"Image encoding {encoding!r} is not one of {sorted(IMAGE_CHANNELS)}")
    channels = IMAGE_CHANNELS[encoding]
    row = message.width * channels
    if message.step < row or data.size != message.height * message.step:
        raise MessageError(
            f"Image claims {message.height}x{message.width} {encoding} (step {message.step}) "
            f"but carries {data.size} bytes, expected {message.height * message.step}"
        )
    frame = data.reshape(message.height, message.step)[:, :row].reshape(message.height, message.width, channels)
    conversion = TO_RGB[encoding]
    return np.ascontiguousarray(frame) if conversion is None else cv2.cvtColor(frame, conversion)


def text(message: object) -> str:
    """The text of a std_msgs/String."""
    return str(field(message, "data"))
