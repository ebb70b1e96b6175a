"""Decoding ROS messages: stamps, vectors by type or field path, images in every
supported encoding, and the malformed images of the real alltypes bags."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from pipelines import ros_messages as ros
from tests.helpers import shared_data

TYPES = get_typestore(Stores.ROS2_HUMBLE).types


def header(sec: int = 12, nanosec: int = 345) -> object:
    return TYPES["std_msgs/msg/Header"](stamp=TYPES["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id="f")


def vec3(x: float, y: float, z: float) -> object:
    return TYPES["geometry_msgs/msg/Vector3"](x=x, y=y, z=z)


def raw_image(frame: np.ndarray, encoding: str, pad: int = 0) -> object:
    height, width = frame.shape[:2]
    rows = frame.reshape(height, -1)
    data = np.concatenate([rows, np.zeros((height, pad), np.uint8)], axis=1).reshape(-1)
    return TYPES["sensor_msgs/msg/Image"](header=header(), height=height, width=width, encoding=encoding,
                                          is_bigendian=0, step=rows.shape[1] + pad, data=data)


def test_stamp_from_header_or_receive_time():
    twist = TYPES["geometry_msgs/msg/TwistStamped"](
        header=header(), twist=TYPES["geometry_msgs/msg/Twist"](linear=vec3(1, 2, 3), angular=vec3(4, 5, 6))
    )
    assert ros.stamp_ns(twist, receive_ns=99) == 12_000_000_345
    assert ros.stamp_ns(twist, receive_ns=99, use_header=False) == 99
    assert ros.stamp_ns(TYPES["std_msgs/msg/Float32"](data=1.5), receive_ns=7) == 7
    np.testing.assert_array_equal(ros.vector(twist), [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(ros.vector(twist, fields=["twist.angular.z", "twist.linear.x"]), [6, 1])
    with pytest.raises(ros.MessageError, match="no field 'twist.linear.w'"):
        ros.vector(twist, fields=["twist.linear.w"])


def test_joint_state_follows_the_spec_order():
    joints = TYPES["sensor_msgs/msg/JointState"](header=header(), name=["b", "a", "c"], position=np.array([2.0, 1.0, 3.0]),
                                                 velocity=np.zeros(3), effort=np.zeros(3))
    np.testing.assert_array_equal(ros.vector(joints, joint_names=["a", "b", "c"]), [1, 2, 3])
    np.testing.assert_array_equal(ros.vector(joints), [2, 1, 3])
    with pytest.raises(ros.MessageError, match=r"lacks joints \['d'\]"):
        ros.vector(joints, joint_names=["a", "d"])


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_raw_images_in_every_encoding_become_rgb(encoding):
    rgb = np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
    source = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.dstack([rgb, np.full((6, 5), 9, np.uint8)]),
              "bgra8": np.dstack([rgb[:, :, ::-1], np.full((6, 5), 9, np.uint8)]), "mono8": rgb[:, :, 0]}[encoding]
    np.testing.assert_array_equal(ros.image(raw_image(np.ascontiguousarray(source), encoding, pad=3)), rgb)


def test_compressed_images_decode_and_bad_ones_are_named():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4] = (255, 0, 0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    message = TYPES["sensor_msgs/msg/CompressedImage"](header=header(), format="png", data=png.reshape(-1))
    np.testing.assert_array_equal(ros.image(message), rgb)
    broken = TYPES["sensor_msgs/msg/CompressedImage"](header=header(), format="jpeg", data=np.arange(10, dtype=np.uint8))
    with pytest.raises(ros.MessageError, match="'jpeg', 10 bytes\\) is not a decodable"):
        ros.image(broken)
    with pytest.raises(ros.MessageError, match="Image encoding '16UC1'"):
        ros.image(raw_image(np.zeros((2, 2, 2), np.uint8), "16UC1"))


def test_real_alltypes_bag_standard_types_and_malformed_images():
    folder = shared_data("ros2_rosbags_rs_alltypes")
    (path,) = sorted(Path(folder).rglob("*.mcap"))
    seen = {}
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        for connection, receive_ns, raw in reader.messages():
            kind = connection.msgtype.rsplit("/", 1)[-1]
            if kind in ("JointState", "PoseStamped", "TwistStamped", "Image", "CompressedImage") and kind not in seen:
                seen[kind] = (reader.deserialize(raw, connection.msgtype), receive_ns)
    joints, _ = seen["JointState"]
    np.testing.assert_allclose(ros.vector(joints, joint_names=["joint1", "joint2", "joint3"]), [0.1, 0.2, 0.3])
    pose, receive_ns = seen["PoseStamped"]
    assert ros.vector(pose).shape == (7,) and ros.stamp_ns(pose, receive_ns) != receive_ns
    assert ros.vector(seen["TwistStamped"][0]).shape == (6,)
    with pytest.raises(ros.MessageError, match=r"claims 480x640 rgb8 \(step 1920\) but carries 30 bytes"):
        ros.image(seen["Image"][0])
    with pytest.raises(ros.MessageError, match="not a decodable JPEG/PNG"):
        ros.image(seen["CompressedImage"][0])


def test_real_ros1_turtlesim_types_defined_in_the_bag():
    folder = shared_data("ros1_rosbagjs_turtlesim")
    with AnyReader([Path(folder) / "example.bag"]) as reader:
        connections = {c.topic: c for c in reader.connections}
        pose_connection, cmd_connection = connections["/turtle1/pose"], connections["/turtle1/cmd_vel"]
        pose = next(reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=[pose_connection]))
        cmd = next(reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=[cmd_connection]))
    assert ros.vector(pose, fields=["x", "y", "theta"]).shape == (3,)
    assert ros.vector(cmd).shape == (6,)  # geometry_msgs/Twist, no header
