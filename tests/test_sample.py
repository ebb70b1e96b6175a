"""robolake.sample: the built-in sample of raw demonstrations (HDF5 sessions and mcap bags)."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from robolake.errors import RobolakeError
from robolake.sample import build_episode, episode_metadata, write_aloha_file, write_robomimic_file, write_sample
from robolake.sample.bag_writer import camera_topic
from robolake.sample.motion import OPERATOR_NOISE

TINY = {"front": (48, 64), "wrist": (30, 40)}
METADATA_FIELDS = ["task", "object", "color", "scene", "lighting", "operator", "language_instruction"]
STEPS = 12


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (metadata.yaml included: rosbags writes no wall-clock time)."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _read_bag(path: Path) -> dict[str, list]:
    """topic -> [(bag timestamp, message)]"""
    topics = collections.defaultdict(list)
    with AnyReader([path]) as reader:
        for connection, timestamp, raw in reader.messages():
            topics[connection.topic].append((timestamp, reader.deserialize(raw, connection.msgtype)))
    return topics


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    """Six short episodes with the real camera sizes, three HDF5 and three bags, no faults."""
    out = tmp_path_factory.mktemp("sample") / "out"
    calls = []
    manifest = write_sample(str(out), episodes=6, seed=1, steps=STEPS, faults=False,
                            progress=lambda *a: calls.append(a))
    assert calls[-1] == (6, 6) and [done for done, _ in calls] == sorted(done for done, _ in calls)
    return out, manifest


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("faulty") / "out"
    return out, write_sample(str(out), episodes=12, seed=2, steps=STEPS, cameras=TINY)


def test_manifest_lists_every_episode(sample):
    out, manifest = sample
    assert json.loads((out / "sample_manifest.json").read_text()) == manifest
    assert [e["index"] for e in manifest["episodes"]] == list(range(6))
    assert [e["container"] for e in manifest["episodes"]] == ["hdf5", "mcap"] * 3  # interleaved
    first, second = manifest["episodes"][:2]
    assert first["episode_id"] == "hdf5/session_000/demo_1" and first["group"] == "demo_1"
    assert second["episode_id"] == "bags/episode_0001" and second["path"] == "bags/episode_0001"
    assert all(e["steps"] == STEPS and e["fault"] is None for e in manifest["episodes"])
    assert manifest["faults"] == []
    for entry in manifest["episodes"]:
        assert (out / entry["path"]).exists()
        assert set(entry["metadata"]) == set(METADATA_FIELDS)


def test_same_arguments_same_bytes(tmp_path):
    kwargs = dict(episodes=4, seed=5, steps=8, cameras=TINY)
    write_sample(str(tmp_path / "a"), **kwargs)
    write_sample(str(tmp_path / "b"), workers=2, **kwargs)  # a process pool changes nothing
    write_sample(str(tmp_path / "c"), **{**kwargs, "seed": 6})
    a, b, c = (_hashes(tmp_path / name) for name in "abc")
    assert any(name.endswith("metadata.yaml") for name in a) and any(name.endswith(".mcap") for name in a)
    assert a == b
    assert a.keys() == c.keys() and all(a[name] != c[name] for name in a if not name.endswith(".yaml"))


def _values(dataset: h5py.Dataset) -> np.ndarray:
    """A dataset's values; variable-length rows (the JPEG frames) joined into one array."""
    values = dataset[()]
    return np.concatenate(list(values)) if h5py.check_vlen_dtype(dataset.dtype) is not None else values


def test_episode_does_not_depend_on_how_many_there_are(tmp_path):
    few = write_sample(str(tmp_path / "few"), episodes=4, seed=3, steps=6, cameras=TINY)
    more = write_sample(str(tmp_path / "more"), episodes=6, seed=3, steps=6, cameras=TINY)
    assert few["episodes"] == more["episodes"][:4]
    for entry in few["episodes"]:
        if entry["container"] == "mcap":
            assert _hashes(tmp_path / "few" / entry["path"]) == _hashes(tmp_path / "more" / entry["path"])
            continue
        with h5py.File(tmp_path / "few" / entry["path"]) as a, h5py.File(tmp_path / "more" / entry["path"]) as b:
            demo_a, demo_b = a["data"][entry["group"]], b["data"][entry["group"]]
            assert dict(demo_a.attrs) == dict(demo_b.attrs)
            demo_a.visititems(lambda name, d: np.testing.assert_array_equal(_values(d), _values(demo_b[name]))
                              if isinstance(d, h5py.Dataset) else None)


def test_hdf5_layout(sample):
    out, manifest = sample
    with h5py.File(out / "hdf5/session_000.hdf5") as h5:
        assert json.loads(h5["data"].attrs["env_args"])["env_kwargs"]["camera_names"] == ["front", "wrist"]
        assert sorted(h5["data"]) == ["demo_1", "demo_2", "demo_3"]
        demo = h5["data/demo_1"]
        assert {k: demo.attrs[k] for k in manifest["episodes"][0]["metadata"]} == manifest["episodes"][0]["metadata"]
        assert demo.attrs["num_samples"] == STEPS
        shapes = {
            "actions": (STEPS, 7), "rewards": (STEPS,), "dones": (STEPS,), "obs/robot0_eef_pos": (STEPS, 3),
            "obs/robot0_eef_quat": (STEPS, 4), "obs/robot0_gripper_qpos": (STEPS, 2),
            "obs/robot0_joint_pos": (STEPS, 7),
            "obs/front_image": (STEPS,), "obs/wrist_image": (STEPS,),
        }
        assert {key: demo[key].shape for key in shapes} == shapes
        assert demo["actions"].dtype == np.float64 and demo["dones"].dtype == np.int64
        assert h5py.check_vlen_dtype(demo["obs/front_image"].dtype) == np.uint8  # each step's JPEG file
        assert demo["rewards"][()].tolist() == [0.0] * (STEPS - 1) + [1.0]
        assert demo["dones"][()].tolist() == [0] * (STEPS - 1) + [1]
        np.testing.assert_allclose(np.linalg.norm(demo["obs/robot0_eef_quat"][()], axis=1), 1.0)
        for camera in ("front", "wrist"):
            frames = np.stack([cv2.imdecode(jpeg, cv2.IMREAD_COLOR_RGB) for jpeg in demo[f"obs/{camera}_image"]])
            assert frames.shape[1:] == {"front": (480, 640, 3), "wrist": (240, 320, 3)}[camera]
            frames = frames.astype(np.int16)
            assert np.abs(frames[-1] - frames[0]).mean() > 2  # the gripper and objects move
            assert frames.std() > 10


def test_actions_follow_the_end_effector(tmp_path):
    for index in range(8):
        episode = build_episode(4, index, cameras={})
        actions, position = episode.actions, episode.tool[episode.tick_states(), :3]
        assert 30 <= episode.steps <= 60
        assert set(np.unique(actions[:, 6])) <= {-1.0, 1.0}
        # Each action moves the tool from its tick to the next; the observation lags by < 10 ms.
        noise = OPERATOR_NOISE[episode.meta.operator] * np.sqrt(episode.steps)
        np.testing.assert_allclose(actions[:-1, :3].sum(axis=0), position[-1] - position[0], atol=5 * noise + 0.005)
        assert 0.003 < np.median(np.abs(actions[:, :3]).max(axis=1)) < 0.04


def test_lighting_changes_brightness():
    by_lighting = {}
    for index in range(60):
        lighting = episode_metadata(0, index).lighting
        by_lighting.setdefault(lighting, index)
    assert {"bright", "dim"} <= by_lighting.keys()
    mean = {}
    for lighting, index in by_lighting.items():
        episode = build_episode(0, index, steps=4, cameras={"front": (120, 160)})
        mean[lighting] = episode.frame("front", 0).mean()
    assert mean["bright"] > mean["dim"] + 30


def test_bags(sample):
    out, manifest = sample
    entry = manifest["episodes"][1]
    episode = build_episode(1, entry["index"], steps=STEPS)
    topics = _read_bag(out / entry["path"])
    duration = STEPS / 10
    counts = {topic: len(messages) for topic, messages in topics.items()}
    assert abs(counts[camera_topic("front")] - duration * 15) <= 1
    assert abs(counts[camera_topic("wrist")] - duration * 30) <= 1
    assert abs(counts["/joint_states"] - duration * 100) <= 1 and counts["/ee_pose"] == counts["/joint_states"]
    assert counts["/teleop/ee_delta"] == counts["/teleop/gripper"] == STEPS and counts["/instruction"] == 1
    assert topics["/instruction"][0][1].data == entry["metadata"]["language_instruction"]

    for _, image in topics[camera_topic("front")][:3]:
        assert image.format == "rgb8; jpeg compressed bgr8" and image.header.frame_id == "front_camera"
        assert cv2.imdecode(image.data, cv2.IMREAD_COLOR).shape == (480, 640, 3)
    wrist = cv2.imdecode(topics[camera_topic("wrist")][0][1].data, cv2.IMREAD_COLOR)
    assert wrist.shape == (240, 320, 3)
    for timestamp, message in topics[camera_topic("wrist")] + topics["/joint_states"]:
        stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
        assert 0 < timestamp - stamp < 30_000_000  # received a few ms after capture

    joint_state = topics["/joint_states"][5][1]
    assert len(joint_state.name) == 9 and joint_state.name[-1] == "finger_joint2"
    np.testing.assert_allclose(joint_state.position, episode.joints[5])
    np.testing.assert_allclose(joint_state.velocity, episode.joint_velocities[5])
    pose = topics["/ee_pose"][5][1].pose
    np.testing.assert_allclose([pose.position.x, pose.position.y, pose.position.z], episode.tool[5, :3])
    quat = pose.orientation
    np.testing.assert_allclose([quat.x, quat.y, quat.z, quat.w], episode.eef_quat[5])
    twists = np.array([[m.twist.linear.x, m.twist.linear.y, m.twist.linear.z, m.twist.angular.x, m.twist.angular.y,
                        m.twist.angular.z] for _, m in topics["/teleop/ee_delta"]])
    np.testing.assert_array_equal(twists, episode.actions[:, :6])
    gripper = [(*m.name, *m.position) for _, m in topics["/teleop/gripper"]]
    assert gripper == [("gripper", value) for value in episode.actions[:, 6].astype(np.float64)]
    # a command carries the stamp of the tick (the observation) it answers and goes out after it
    for received, message in topics["/teleop/ee_delta"] + topics["/teleop/gripper"]:
        stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
        assert 1_000_000 < received - stamp < 10_000_000
    sidecar = (out / f"{entry['path']}.yaml").read_text()
    assert f"task: {entry['metadata']['task']}" in sidecar


def test_faults_are_seeded_and_listed(faulty):
    out, manifest = faulty
    kinds = collections.Counter(f["kind"] for f in manifest["faults"])
    assert kinds["action_spike"] == 3 and kinds["nan_action"] == 1 and kinds["truncated_file"] in (1, 2)
    by_index = {e["index"]: e for e in manifest["episodes"]}
    spikes = [f for f in manifest["faults"] if f["kind"] == "action_spike"]
    assert {by_index[f["index"]]["container"] for f in spikes} == {"hdf5", "mcap"}
    truncated = {f["path"] for f in manifest["faults"] if f["kind"] == "truncated_file"}
    sessions = sorted({e["path"] for e in manifest["episodes"] if e["container"] == "hdf5"})
    assert truncated == {sessions[-1]}  # only the last session, so no healthy episode is lost
    with pytest.raises(OSError):
        h5py.File(out / sessions[-1], "r")

    for fault in manifest["faults"]:
        entry = by_index[fault["index"]]
        assert entry["fault"] == {k: v for k, v in fault.items() if k not in ("index", "episode_id", "path",
                                                                                "of_episode_id")}
        if fault["kind"] not in ("truncated_file", "nan_action", "action_spike"):
            continue  # behaviour faults: tests/test_sample_faults.py
        if fault["kind"] == "truncated_file":
            continue
        if entry["container"] == "hdf5":
            with h5py.File(out / entry["path"]) as h5:
                actions = h5["data"][entry["group"]]["actions"][()]
        else:
            twists = _read_bag(out / entry["path"])["/teleop/ee_delta"]
            actions = np.array([[m.twist.linear.x, m.twist.linear.y, m.twist.linear.z] for _, m in twists])
        column = actions[:, fault["dim"]]
        if fault["kind"] == "nan_action":
            assert np.isnan(column[fault["step"]]) and np.isfinite(np.delete(column, fault["step"])).all()
        else:
            assert abs(column[fault["step"]]) >= 10 * np.median(np.abs(column))
            assert np.isfinite(actions).all()


def test_no_faults_in_small_samples(tmp_path):
    manifest = write_sample(str(tmp_path / "s"), episodes=3, steps=4, cameras=TINY, bag_fraction=0.0)
    assert manifest["faults"] == [] and {e["container"] for e in manifest["episodes"]} == {"hdf5"}
    with pytest.raises(RobolakeError, match="not empty"):
        write_sample(str(tmp_path / "s"), episodes=3, steps=4, cameras=TINY)


def test_metadata_is_deliberately_imbalanced():
    metas = [episode_metadata(0, index) for index in range(200)]
    share = lambda field, value: sum(getattr(m, field) == value for m in metas) / len(metas)  # noqa: E731
    assert share("task", "pick") > 0.5  # uniform would be 1/3
    assert share("lighting", "bright") > 0.5  # uniform would be 1/4
    assert share("color", "red") > 0.35 and share("operator", "operator_0") > 0.5
    assert {m.task for m in metas} == {"pick", "place", "push"}
    red_cube_picks = {m.language_instruction for m in metas if (m.task, m.color, m.object) == ("pick", "red", "cube")}
    assert len(red_cube_picks) > 1  # paraphrases
    assert metas[7] == build_episode(0, 7, steps=3, cameras={}).meta


def test_legacy_helpers(tmp_path):
    metas = write_robomimic_file(str(tmp_path / "r.hdf5"), episodes=2, steps=7, seed=3, cameras={"top": (30, 40)})
    with h5py.File(tmp_path / "r.hdf5") as h5:
        assert [h5[f"data/demo_{k}"].attrs["task"] for k in (1, 2)] == [m.task for m in metas]
        assert h5["data/demo_2/obs/top_image"].shape == (7, 30, 40, 3)
    write_aloha_file(str(tmp_path / "a.hdf5"), steps=9, seed=1, cameras={"top": (48, 64), "left_wrist": (30, 40)})
    with h5py.File(tmp_path / "a.hdf5") as h5:
        assert h5["action"].shape == h5["observations/qpos"].shape == h5["observations/qvel"].shape == (9, 14)
        assert h5["observations/images/left_wrist"].shape == (9, 30, 40, 3) and h5.attrs["sim"] == False  # noqa: E712
        assert "language_instruction" in h5.attrs
