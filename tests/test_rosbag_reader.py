"""Opening the real ROS 1 and ROS 2 bags: the same messages from every storage format
and compression, from a folder and from its storage file; empty and broken bags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines import ros_messages as ros
from pipelines.rosbag_reader import BagError, messages, open_bag, storage_paths, typestore
from tests.helpers import shared_data


def read_all(path: Path, topics: list[str], distro: str = "ros2_humble") -> list[tuple]:
    with open_bag(path, distro) as reader:
        return [(topic, stamp, repr(message)) for topic, stamp, message in messages(reader, topics, path)]


def test_ros2_talker_folder_and_files_in_both_storages_read_in_full():
    root = shared_data("ros2_rosbag2_official")
    topics = ["/topic"]
    reads = [
        read_all(root / "sqlite3/talker", topics),
        read_all(root / "sqlite3/talker/talker.db3", topics),
        read_all(root / "mcap/talker", topics),
        read_all(root / "mcap/talker/talker.mcap", topics),
    ]
    assert len(reads[0]) == 10  # the folder's metadata.yaml QoS differs from the storage
    assert all(r == reads[0] for r in reads)
    # /rosout's rcl_interfaces/Log in the sqlite3 file matches no stored distro (the mcap
    # carries its own schema): one error naming bag, topic and time
    with pytest.raises(BagError, match=r"sqlite3/talker: topic /rosout at \d+ ns: cannot decode rcl_interfaces/msg/Log"):
        read_all(root / "sqlite3/talker", ["/rosout"])
    assert len(read_all(root / "mcap/talker", ["/topic", "/rosout"])) == 20



def test_ros2_cdr_test_sqlite3_and_mcap_decode_the_same():
    root = shared_data("ros2_rosbag2_official")
    topics = ["/test_topic", "/array_topic"]
    sqlite3, mcap = read_all(root / "sqlite3/cdr_test", topics), read_all(root / "mcap/cdr_test", topics)
    assert len(sqlite3) == 7 and [(t, s) for t, s, _ in sqlite3] == [(t, s) for t, s, _ in mcap]


def test_ros1_compressions_and_unsorted_chunks_give_the_same_messages():
    root = shared_data("ros1_rosbagjs_turtlesim")
    topics = ["/turtle1/cmd_vel", "/turtle1/pose"]
    plain = read_all(root / "example.bag", topics, "ros1_noetic")
    assert len(plain) > 100 and [s for _, s, _ in plain] == sorted(s for _, s, _ in plain)
    for name in ("example-lz4.bag", "example-bz2.bag"):
        assert read_all(root / name, topics, "ros1_noetic") == plain, name
    unsorted = read_all(root / "example-unsorted-chunks.bag", ["foo"], "ros1_noetic")
    assert unsorted and [s for _, s, _ in unsorted] == sorted(s for _, s, _ in unsorted)
    assert read_all(root / "example-unsorted-chunks.bag", topics, "ros1_noetic") == []  # other topics only
    with open_bag(root / "example.bag", "ros1_noetic") as reader:
        _, _, pose = next(messages(reader, ["/turtle1/pose"], "example.bag"))
    assert np.all(np.isfinite(ros.vector(pose, fields=["x", "y", "theta"])))


def test_empty_bag_has_no_messages():
    root = shared_data("ros1_rosbagjs_turtlesim")
    assert read_all(root / "no-messages.bag", ["/turtle1/pose"], "ros1_noetic") == []


def test_broken_bags_raise_one_error_naming_the_bag(tmp_path):
    root = shared_data("ros1_rosbagjs_turtlesim")
    truncated = tmp_path / "truncated.bag"
    data = (root / "example.bag").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(BagError, match=str(truncated)):
        read_all(truncated, ["/turtle1/pose"], "ros1_noetic")
    with pytest.raises(BagError, match="not a bag"):
        storage_paths(tmp_path / "notes.txt")
    empty_folder = tmp_path / "bag_folder"
    empty_folder.mkdir()
    with pytest.raises(BagError, match="without .db3 or .mcap"):
        storage_paths(empty_folder)
    with pytest.raises(BagError, match="unknown ROS distro 'ros3'"):
        read_all(root / "example.bag", [], "ros3")


def test_custom_msg_file_types(tmp_path):
    msg = tmp_path / "Gripper.msg"
    msg.write_text("float64 opening\nbool closed\n")
    store = typestore("ros2_humble", {"my_robot/msg/Gripper": str(msg)})
    gripper = store.types["my_robot/msg/Gripper"](opening=0.04, closed=True)
    decoded = store.deserialize_cdr(store.serialize_cdr(gripper, "my_robot/msg/Gripper"), "my_robot/msg/Gripper")
    assert ros.vector(decoded, fields=["opening", "closed"]).tolist() == [0.04, 1.0]
    with pytest.raises(BagError, match="custom message my_robot/msg/Bad"):
        typestore("ros2_humble", {"my_robot/msg/Bad": str(tmp_path / "missing.msg")})
