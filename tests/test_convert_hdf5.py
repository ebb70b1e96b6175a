"""HDF5 -> RLDS: synthetic robomimic and ALOHA files, and the real robosuite demos,
converted and read back with TFDS the way OpenVLA and Octo open datasets."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pyarrow.dataset as pads
import pytest
import tensorflow_datasets as tfds

from robolake.lake import Lake
from robolake.normalization import load_statistics, normalize
from robolake.sample import write_aloha_file
from schemas.tables import SILVER_SCHEMA_VERSION
from tests.helpers import load_split, quarantine_records, robomimic_spec, run_convert, shared_data


@pytest.fixture(scope="module")
def converted(robomimic_raw, tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    spec = robomimic_spec(robomimic_raw)
    outcome = run_convert(spec, lake)
    splits = {split: load_split(outcome.gold_dir, split) for split in outcome.manifest["counts"]["by_split"]}
    return outcome, splits, lake


def test_reads_back_with_both_tfds_entry_points(converted):
    outcome, splits, lake = converted
    by_dir = tfds.builder_from_directory(outcome.gold_dir)
    by_name = tfds.builder("synthetic_tabletop", data_dir=Lake(str(lake)).current_build("synthetic_tabletop", "1.0.0").data_dir)
    assert str(by_name.info.version) == "1.0.0"
    for split, episodes in splits.items():
        assert by_dir.info.splits[split].num_examples == len(episodes)
        assert by_name.info.splits[split].num_examples == len(episodes)


def test_steps_have_rlds_shapes_dtypes_and_boundaries(converted, robomimic_raw):
    _, splits, _ = converted
    episodes = [e for eps in splits.values() for e in eps]
    assert len(episodes) == 10
    for episode in episodes:
        steps = episode["steps"]
        assert len(steps) == 24
        first = steps[0]
        assert first["observation"]["front"].shape == (64, 64, 3)
        assert first["observation"]["wrist"].shape == (32, 32, 3)
        assert first["observation"]["front"].dtype == np.uint8
        assert first["observation"]["state"].shape == (9,) and first["observation"]["state"].dtype == np.float32
        assert first["action"].shape == (7,) and first["action"].dtype == np.float32
        assert [s["is_first"] for s in steps] == [True] + [False] * 23
        assert [s["is_last"] for s in steps] == [False] * 23 + [True]
        assert [s["is_terminal"] for s in steps] == [False] * 23 + [True]
        assert all(s["discount"] == 1.0 for s in steps)


def test_values_match_the_source_file(converted, robomimic_raw):
    _, splits, _ = converted
    episode = next(e for eps in splits.values() for e in eps)
    meta = episode["episode_metadata"]
    file_id, group = meta["episode_id"].split("/", 1)
    with h5py.File(robomimic_raw / f"{file_id}.hdf5") as h5:
        demo = h5[group]
        np.testing.assert_allclose([s["action_raw"] for s in episode["steps"]], demo["actions"][()], rtol=1e-6)
        statistics = load_statistics(converted[0].gold_dir)
        normalized = normalize(demo["actions"][()], statistics).astype(np.float32)
        np.testing.assert_allclose([s["action"] for s in episode["steps"]], normalized, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([s["reward"] for s in episode["steps"]], demo["rewards"][()])
        assert episode["steps"][0]["language_instruction"].decode() == demo.attrs["language_instruction"]
        assert meta["task"] == demo.attrs["task"] and meta["color"] == demo.attrs["color"]
        assert meta["env"] == h5["data"].attrs["env_args"]
        # The image is the source frame, center-cropped to square and resized (JPEG: close, not equal).
        frame = demo["obs/front_image"][0]
    top_left = frame[:, 16:112][:8, :8].astype(float).mean()
    assert abs(episode["steps"][0]["observation"]["front"][:4, :4].astype(float).mean() - top_left) < 12
    assert len(meta["source_sha256"]) == 64 and meta["source_path"].endswith(f"{file_id}.hdf5")


def test_splits_are_disjoint_and_manifest_reconciles(converted):
    outcome, splits, _ = converted
    ids = {split: {e["episode_metadata"]["episode_id"] for e in eps} for split, eps in splits.items()}
    all_ids = [i for s in ids.values() for i in s]
    assert len(all_ids) == len(set(all_ids)) == 10
    counts = outcome.manifest["counts"]
    assert counts["episodes_found"] == counts["episodes_written"] + counts["episodes_quarantined"] == 10
    assert counts["steps_written"] == 240
    assert {s: v["episodes"] for s, v in counts["by_split"].items()} == {s: len(v) for s, v in ids.items()}
    assert len(outcome.manifest["sources"]) == 3
    assert all(len(s["sha256"]) == 64 for s in outcome.manifest["sources"])


def test_silver_tables_are_hive_partitioned_parquet(converted):
    outcome, _, lake = converted
    build = Lake(str(lake)).current_build("synthetic_tabletop", "1.0.0")
    steps = pads.dataset(build.silver("steps"), partitioning="hive").to_table()
    episodes = pads.dataset(build.silver("episodes"), partitioning="hive").to_table()
    assert steps.num_rows == 240 and episodes.num_rows == 10
    assert {"image_front", "image_wrist", "action", "state", "split"} <= set(steps.column_names)
    schema_meta = pads.dataset(build.silver("steps")).schema.metadata
    assert schema_meta[b"robolake.schema_version"] == SILVER_SCHEMA_VERSION.encode()
    brightness = episodes.column("camera_front_brightness").to_numpy()
    assert ((brightness > 0.05) & (brightness < 0.95)).all() and len(set(brightness.round(6))) == 10
    assert all(len(m) == 3 and 0 < min(m) and max(m) < 1 for m in episodes.column("camera_wrist_mean").to_pylist())
    assert sorted(episodes.column("num_steps").to_pylist()) == [24] * 10


def test_aloha_layout(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(4):
        write_aloha_file(str(raw / f"episode_{i}.hdf5"), steps=15 + i, seed=i, cameras={"top": (48, 64), "left_wrist": (30, 40)})
    spec = robomimic_spec(
        raw,
        source={"layout": "aloha"},
        cameras=[{"name": "top", "size": [32, 32]}, {"name": "left_wrist", "size": [32, 32]}],
        action={"names": [f"joint_{i}" for i in range(14)]},
        instruction={"file_attr": "language_instruction"},
        metadata={"task": {"file_attr": "task"}, "operator": {"file_attr": "operator"}},
        splits={"fractions": {"train": 1.0}},
    )
    outcome = run_convert(spec, tmp_path / "lake")
    episodes = load_split(outcome.gold_dir, "train")
    assert sorted(len(e["steps"]) for e in episodes) == [15, 16, 17, 18]
    assert sorted(e["episode_metadata"]["episode_id"] for e in episodes) == [f"episode_{i}" for i in range(4)]
    step = episodes[0]["steps"][0]
    assert step["action"].shape == (14,) and step["observation"]["state"].shape == (14,)
    assert step["observation"]["left_wrist"].shape == (32, 32, 3)


def robosuite_spec(data, filename: str, task: str, **overrides) -> dict:
    """A spec for one real robosuite file (no cameras, long episodes, everything in train)."""
    return robomimic_spec(
        data,
        source={"layout": "robosuite", "paths": [str(data / filename)]},
        cameras=[],
        instruction={"value": f"{task} the blocks"},
        metadata={"task": {"value": task}, "env": {"file_attr": "data/env"}},
        episode_length={"min_steps": 2, "max_steps": 5000},
        splits={"fractions": {"train": 1.0}},
        **overrides,
    )


@pytest.mark.parametrize(
    "filename, env, steps",
    [("lift_panda.hdf5", "Lift", 412), ("stack_panda.hdf5", "Stack", 532),
     ("door_panda.hdf5", "Door", 261), ("pick-place_panda.hdf5", "PickPlace", 1482)],
)
def test_real_robosuite_demos(tmp_path, filename, env, steps):
    data = shared_data("hdf5_robosuite_demos")
    outcome = run_convert(robosuite_spec(data, filename, "lift"), tmp_path / "lake")
    (episode,) = load_split(outcome.gold_dir, "train")
    with h5py.File(data / filename) as h5:
        np.testing.assert_allclose([s["action_raw"] for s in episode["steps"]], h5["data/demo_1/actions"][()], rtol=1e-6)
        np.testing.assert_allclose(
            [s["observation"]["state"] for s in episode["steps"]], h5["data/demo_1/states"][()], rtol=1e-5, atol=1e-6
        )
    assert len(episode["steps"]) == steps and episode["episode_metadata"]["env"] == env
    assert episode["steps"][0]["language_instruction"] == b"lift the blocks"


def test_real_sawyer_stack_assembles_actions_from_keys(tmp_path):
    data = shared_data("hdf5_robosuite_demos")
    action = {
        "keys": ["right_dpos", "right_dquat", "gripper_actuations"],
        "names": ["dx", "dy", "dz", "dqx", "dqy", "dqz", "dqw", "gripper"],
    }
    # Keyboard teleoperation: dx/dy/dz are 0 on 98% of steps and every key press is a
    # one-step pulse, which the default spike rules would flag; this dataset turns them off.
    no_filters = {"zscore": None, "jump": None}
    spec = robosuite_spec(data, "SawyerStack.hdf5", "stack", action=action, filters=no_filters)
    outcome = run_convert(spec, tmp_path / "lake")
    episodes = {e["episode_metadata"]["episode_id"]: e for e in load_split(outcome.gold_dir, "train")}
    assert sorted(episodes) == ["SawyerStack/data/demo_1", "SawyerStack/data/demo_2"]
    with h5py.File(data / "SawyerStack.hdf5") as h5:
        demo = h5["data/demo_2"]
        expected = np.concatenate([demo["right_dpos"][()], demo["right_dquat"][()], demo["gripper_actuations"][()]], axis=1)
    steps = episodes["SawyerStack/data/demo_2"]["steps"]
    assert len(steps) == 1174
    np.testing.assert_allclose([s["action_raw"] for s in steps], expected, rtol=1e-6, atol=1e-7)


def _encode_cameras(path, storage: str, broken_step: int | None = None) -> None:
    """Rewrite an ALOHA file's raw frames as each step's JPEG file: "padded" uint8 (T, N) as ALOHA's
    recorder writes with compression on, or "vlen" (T,) variable-length bytes."""
    with h5py.File(path, "r+") as h5:
        for name in list(h5["observations/images"]):
            frames = h5[f"observations/images/{name}"][()]
            jpegs = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
                     for f in frames]
            if broken_step is not None:
                jpegs[broken_step] = np.frombuffer(b"not an image", np.uint8)
            del h5[f"observations/images/{name}"]
            if storage == "padded":
                padded = np.zeros((len(jpegs), max(map(len, jpegs))), np.uint8)
                for row, jpeg in zip(padded, jpegs):
                    row[: len(jpeg)] = jpeg
                h5[f"observations/images/{name}"] = padded
            else:
                data = h5.create_dataset(f"observations/images/{name}", (len(jpegs),), dtype=h5py.vlen_dtype(np.uint8))
                for step, jpeg in enumerate(jpegs):
                    data[step] = jpeg


def test_encoded_frames_convert_like_raw_frames(tmp_path):
    """Frames stored as JPEG files (ALOHA's padded layout, or variable-length bytes) give the gold
    frames of the same frames stored raw, up to one extra JPEG round; a step that is no image
    quarantines its episode naming the dataset and step."""
    cameras = {"top": (48, 64)}
    gold = {}
    for storage in ("raw", "padded", "vlen"):
        raw = tmp_path / storage
        raw.mkdir()
        for i in range(3):
            write_aloha_file(str(raw / f"episode_{i}.hdf5"), steps=12, seed=i, cameras=cameras)
            if storage != "raw":
                _encode_cameras(raw / f"episode_{i}.hdf5", storage, broken_step=5 if i == 2 else None)
        spec = robomimic_spec(
            raw, source={"layout": "aloha"}, cameras=[{"name": "top", "size": [32, 32]}],
            action={"names": [f"joint_{i}" for i in range(14)]}, instruction={"file_attr": "language_instruction"},
            metadata={"task": {"file_attr": "task"}}, splits={"fractions": {"train": 1.0}},
        )
        outcome = run_convert(spec, tmp_path / f"lake_{storage}")
        gold[storage] = {e["episode_metadata"]["episode_id"]: np.stack([s["observation"]["top"] for s in e["steps"]])
                         for e in load_split(outcome.gold_dir, "train")}
        if storage != "raw":
            (record,) = quarantine_records(tmp_path / f"lake_{storage}", "synthetic_tabletop", "1.0.0")
            assert record["reason_code"] == "bad_shape" and "episode_2" in record["episode_id"]
            assert "'observations/images/top': step 5 is not a JPEG or PNG image" in record["reason"]
    for storage in ("padded", "vlen"):
        assert sorted(gold[storage]) == ["episode_0", "episode_1"]
        for episode, frames in gold[storage].items():
            error = np.abs(frames.astype(int) - gold["raw"][episode].astype(int))
            assert error.mean() < 3 and frames.std() > 10, (storage, episode, error.mean())
