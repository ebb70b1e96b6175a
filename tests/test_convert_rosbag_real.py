"""Bag ingestion on real recordings from ../shared/data: ROS 1 turtlesim (plain, lz4,
bz2, no messages), rosbag2's own sqlite3/mcap test bags (as folders and
as storage files) and rosbags-rs' all-types bags (standard messages, malformed images)."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as pads
import pytest

from robolake.errors import RobolakeError
from robolake.lake import Lake
from tests.helpers import merged, quarantine_records, run_convert, shared_data

VERSION = "1.0.0"
NUMERIC = ["step_index", "timestamp", "is_first", "is_last", "action_raw", "state"]

TURTLESIM = {
    "name": "turtlesim",
    "version": VERSION,
    "source": {"format": "rosbag", "paths": [], "distro": "ros1_noetic", "reference_topic": "/turtle1/cmd_vel",
               "max_age_s": 0.05},
    "control_rate_hz": 10,
    "state": {"topics": [{"topic": "/turtle1/pose", "fields": ["x", "y", "theta"]}]},
    # cmd_vel is only sent while a key is held: its latest message stays valid at its own ticks
    "action": {"topics": [{"topic": "/turtle1/cmd_vel", "fields": ["linear.x", "angular.z"]}],
               "names": ["linear_x", "angular_z"]},
    "instruction": {"value": "drive the turtle around"},
    "metadata": {"task": {"value": "teleop"}},
    "episode_length": {"min_steps": 1},
    "splits": {"fractions": {"train": 1.0}},
    "filters": {"zscore": None, "jump": None},
}


def silver(lake_dir, name: str, table: str):
    return pads.dataset(Lake(str(lake_dir)).silver_partition(name, table, VERSION), partitioning="hive").to_table()


def quarantine(lake_dir, name: str) -> list[dict]:
    return quarantine_records(lake_dir, name, VERSION)


def numeric_steps(lake_dir, name: str) -> dict:
    return silver(lake_dir, name, "steps").sort_by([("step_index", "ascending")]).select(NUMERIC).to_pydict()


def test_turtlesim_compressions_give_identical_datasets(tmp_path):
    folder = shared_data("ros1_rosbagjs_turtlesim")
    results = {}
    for bag in ("example", "example-lz4", "example-bz2"):
        lake = tmp_path / bag
        outcome = run_convert(merged(TURTLESIM, source={"paths": [str(folder / f"{bag}.bag")]}), lake)
        assert outcome.manifest["counts"]["episodes_written"] == 1
        results[bag] = numeric_steps(lake, "turtlesim")
    reference = results.pop("example")
    for bag, steps in results.items():
        assert steps == reference, bag
    # 357 cmd_vel messages, each a tick; the turtle's pose (62 Hz) is fresh at every one
    assert len(reference["step_index"]) == 357
    state, actions = np.array(reference["state"]), np.array(reference["action_raw"])
    assert state.shape == (357, 3) and actions.shape == (357, 2)
    assert (np.abs(actions[:, 0]) == 2.0).sum() > 100  # turtle_teleop_key sends +-2 m/s
    assert 0 < state[:, :2].min() and state[:, :2].max() < 11.1  # turtlesim's 11 x 11 m world


def test_turtlesim_bag_without_messages_is_quarantined_with_its_reason(tmp_path):
    folder = shared_data("ros1_rosbagjs_turtlesim")
    spec = merged(TURTLESIM, source={"paths": [str(folder / "example.bag"), str(folder / "no-messages.bag")]})
    outcome = run_convert(spec, tmp_path / "lake")
    assert outcome.manifest["counts"]["episodes_written"] == 1
    (record,) = quarantine(tmp_path / "lake", "turtlesim")
    assert record["episode_id"] == "no-messages" and record["reason_code"] == "empty_bag"
    assert record["reason"] == f"{folder / 'no-messages.bag'}: the bag holds no messages"


def test_only_an_empty_bag_fails_the_build_naming_the_state_topics(tmp_path):
    bag = shared_data("ros1_rosbagjs_turtlesim") / "no-messages.bag"
    with pytest.raises(RobolakeError, match=r"state.topics \['/turtle1/pose'\]: no source could be read \(1 file\): "
                                            r"no-messages.bag: the bag holds no messages"):
        run_convert(merged(TURTLESIM, source={"paths": [str(bag)]}), tmp_path / "lake")


CDR_TEST = {
    "name": "cdr_test",
    "version": VERSION,
    "source": {"format": "rosbag", "paths": [], "distro": "ros2_humble", "max_age_s": 0.1},
    "control_rate_hz": 20,
    "state": {"topics": [{"topic": "/test_topic", "fields": ["int32_value", "float64_value", "bool_value"]}]},
    "action": {"topics": [{"topic": "/array_topic", "fields": ["float64_values", "int32_values"]}],
               "names": ["f0", "f1", "f2", "i0", "i1", "i2"]},
    "instruction": {"value": "cdr test"},
    "metadata": {"task": {"value": "cdr_test"}},
    "episode_length": {"min_steps": 1},
    "splits": {"fractions": {"train": 1.0}},
    "filters": {"zscore": None, "jump": None},
}


def test_rosbag2_sqlite3_and_mcap_give_identical_silver_from_folder_and_file(tmp_path):
    root = shared_data("ros2_rosbag2_official")
    inputs = {
        "sqlite3_folder": root / "sqlite3" / "cdr_test",
        "sqlite3_file": root / "sqlite3" / "cdr_test" / "cdr_test_0.db3",
        "mcap_folder": root / "mcap" / "cdr_test",
        "mcap_file": root / "mcap" / "cdr_test" / "cdr_test_0.mcap",
    }
    steps, episodes = {}, {}
    for name, path in inputs.items():
        lake = tmp_path / name
        run_convert(merged(CDR_TEST, source={"paths": [str(path)]}), lake)
        steps[name] = numeric_steps(lake, "cdr_test")
        table = silver(lake, "cdr_test", "episodes")
        episodes[name] = table.drop_columns(["episode_id", "source_path", "source_sha256"]).to_pylist()
    reference = steps.pop("sqlite3_folder")
    assert all(other == reference for other in steps.values())
    assert all(other == episodes["sqlite3_folder"] for other in episodes.values())
    # receive times (no headers): /test_topic at 0, 50, 100 ms; /array_topic 20, 51, 103, 151 ms;
    # 20 Hz ticks from 20 ms until 100 ms + max age 100 ms: 20, 70, 120, 170 ms
    state = np.array(reference["state"])
    np.testing.assert_allclose(reference["timestamp"], [0, 0.05, 0.1, 0.15])
    assert len(state) == 4 and (state[:, 0] == 123).all() and (state[:, 2] == 0).all()


ALLTYPES = {
    "name": "alltypes",
    "version": VERSION,
    "source": {"format": "rosbag", "paths": [], "distro": "ros2_humble", "max_age_s": 0.2},
    "control_rate_hz": 10,
    "state": {"topics": [{"topic": "/test/sensor_msgs/joint_state", "joints": ["joint3", "joint1"]},
                         {"topic": "/test/geometry_msgs/pose_stamped"}]},
    "action": {"topics": [{"topic": "/test/geometry_msgs/twist_stamped"}],
               "names": ["vx", "vy", "vz", "wx", "wy", "wz"]},
    "instruction": {"topic": "/test/std_msgs/string"},
    "metadata": {"task": {"value": "alltypes"}},
    "episode_length": {"min_steps": 1},
    "splits": {"fractions": {"train": 1.0}},
    "filters": {"zscore": None, "jump": None},
}


@pytest.mark.parametrize("storage", ["test_bag_mcap", "test_bag_sqlite3"])
def test_alltypes_standard_messages_are_decoded(tmp_path, storage):
    bag = shared_data("ros2_rosbags_rs_alltypes") / storage
    run_convert(merged(ALLTYPES, source={"paths": [str(bag)]}), tmp_path / "lake")
    steps = numeric_steps(tmp_path / "lake", "alltypes")
    # header stamps: a first set of messages within 35 ms, the second 90 ms later; ticks at
    # 10 Hz from the last first message until 0.2 s after the earliest last message
    assert len(steps["state"]) == 3
    np.testing.assert_allclose(steps["state"][0], [0.3, 0.1, 1, 2, 3, 0, 0, 0, 1], rtol=1e-6)
    np.testing.assert_allclose(steps["action_raw"][0], [1, 0, 0, 0, 0, 0.5], rtol=1e-6)
    (episode,) = silver(tmp_path / "lake", "alltypes", "episodes").to_pylist()
    assert episode["language_instruction"] == "Hello, ROS2!" and episode["dropped_ticks"] == 0


@pytest.mark.parametrize(
    "topic, problem",
    [("/test/sensor_msgs/image", "Image claims 480x640 rgb8 (step 1920) but carries 30 bytes, expected 921600"),
     ("/test/sensor_msgs/compressed_image", "CompressedImage ('jpeg', 10 bytes) is not a decodable JPEG/PNG")],
)
def test_alltypes_malformed_images_are_quarantined(tmp_path, topic, problem):
    bag = shared_data("ros2_rosbags_rs_alltypes") / "test_bag_mcap"
    spec = merged(ALLTYPES, source={"paths": [str(bag)]}, cameras=[{"name": "camera", "topic": topic}])
    with pytest.raises(RobolakeError, match="every episode was quarantined"):
        run_convert(spec, tmp_path / "lake")
    (record,) = quarantine(tmp_path / "lake", "alltypes")
    assert record["reason_code"] == "bad_message"
    assert record["reason"].startswith(f"{bag}: topic {topic} at 17493153")
    assert record["reason"].endswith(problem)
