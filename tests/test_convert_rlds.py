"""RLDS (TFDS builder folders) as a source: the real Bridge debug dataset from
../shared/data and a synthetic one (a gold version of the robomimic fixture, read back
as a source) go through the same pipeline as HDF5 and bags into a new gold version."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
import yaml

from pipelines.rlds_source import parse_key
from robolake.errors import RobolakeError, SpecError
from robolake.hashing import sha256_source
from robolake.spec import parse_spec
from robolake.storage import read_json
from tests.helpers import load_split, merged, quarantine_records, robomimic_spec, run_convert, shared_data

REPO = Path(__file__).resolve().parents[1]
NO_FILTERS = {"zscore": None, "jump": None}
BRIDGE_CAMERAS = {"primary": "image_0", "secondary": "image_1", "tertiary": "image_2", "wrist": "image_3"}


def gold_episodes(gold_dir: str) -> dict[str, dict]:
    """Every episode of a gold version (images decoded by TFDS), by episode id."""
    splits = tfds.builder_from_directory(gold_dir).info.splits
    return {e["episode_metadata"]["episode_id"]: e for split in splits for e in load_split(gold_dir, split)}


def source_episodes(folder: str, cameras: list[str], split: str) -> list[dict]:
    """A source RLDS split as numpy, images left encoded (as the reader sees them)."""
    decoders = {"steps": {"observation": {name: tfds.decode.SkipDecoding() for name in cameras}}}
    dataset = tfds.builder_from_directory(folder).as_dataset(split=split, decoders=decoders, shuffle_files=False)
    return [{"steps": list(e["steps"].as_numpy_iterator()),
             "episode_metadata": {k: v.numpy() for k, v in e["episode_metadata"].items()}} for e in dataset]


def quarantined(lake: Path, name: str, version: str = "1.0.0") -> list[dict]:
    return quarantine_records(lake, name, version)


# ---------------------------------------------------------------- the Bridge debug dataset


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    folder = shared_data("rlds_octo_bridge_debug") / "bridge_dataset" / "1.0.0"
    spec = yaml.safe_load((REPO / "datasets" / "bridge_debug.yaml").read_text())
    spec = merged(spec, source={"paths": [str(folder)]}, filters=NO_FILTERS)
    outcome = run_convert(spec, tmp_path_factory.mktemp("bridge_lake"))
    return folder, spec, outcome


def test_bridge_converts_with_source_values(bridge):
    folder, spec, outcome = bridge
    gold = gold_episodes(outcome.gold_dir)
    sources = {split: source_episodes(str(folder), list(BRIDGE_CAMERAS.values()), split) for split in ("train", "val")}
    assert outcome.manifest["counts"]["episodes_written"] == len(gold) == 50
    assert outcome.manifest["counts"]["episodes_quarantined"] == 0
    height, width = spec["cameras"][0]["size"]
    for episode_id, episode in gold.items():
        # <builder version>/<shard file>/<index in the shard>
        version, shard, index = episode_id.split("/")
        split = shard.removeprefix("bridge_dataset-").split(".")[0]
        assert version == "1.0.0" and shard == f"bridge_dataset-{split}.tfrecord-00000-of-00001"
        source = sources[split][int(index)]
        meta = episode["episode_metadata"]
        assert meta["source_split"] == split
        assert meta["source_file"] == source["episode_metadata"]["file_path"].decode()
        assert meta["source_episode"] == str(source["episode_metadata"]["episode_id"])
        assert len(episode["steps"]) == len(source["steps"]) == 10
        for step, src in zip(episode["steps"], source["steps"]):
            assert step["action_raw"].dtype == np.float32
            np.testing.assert_array_equal(step["action_raw"], src["action"])
            np.testing.assert_array_equal(step["observation"]["state"], src["observation"]["state"])
            assert step["language_instruction"] == src["language_instruction"]
            assert step["reward"] == src["reward"]
        assert meta["task"] == source["steps"][0]["language_instruction"].decode()
        for cam, key in BRIDGE_CAMERAS.items():
            for step, src in zip(episode["steps"][::3], source["steps"][::3]):
                frame = step["observation"][cam]
                assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
                original = cv2.imdecode(np.frombuffer(src["observation"][key], np.uint8), cv2.IMREAD_COLOR_RGB)
                expected = cv2.resize(original, (width, height), interpolation=cv2.INTER_LINEAR)
                assert np.abs(frame.astype(int) - expected).mean() < 3.0  # JPEG quality 95 re-encoding


def test_bridge_statistics_are_fresh_and_splits_are_robolakes(bridge):
    folder, _, outcome = bridge
    statistics = read_json(f"{outcome.gold_dir}/dataset_statistics.json")
    train = outcome.manifest["counts"]["by_split"]["train"]
    assert statistics["num_transitions"] == train["steps"] and statistics["num_trajectories"] == train["episodes"]
    assert len(statistics["action"]["mean"]) == 7
    assert set(outcome.manifest["counts"]["by_split"]) <= {"train", "val", "test"}


def test_bridge_lineage_hashes_every_source_shard(bridge):
    folder, _, outcome = bridge
    provenance = read_json(f"{outcome.gold_dir}/provenance.json")
    inputs = {Path(item["path"]).name: item for item in provenance["inputs"]}
    assert sorted(inputs) == [f"bridge_dataset-{s}.tfrecord-00000-of-00001" for s in ("train", "val")]
    for name, item in inputs.items():
        companions = [str(folder / "dataset_info.json"), str(folder / "features.json")]
        assert item["path"] == str(folder / name) and item["companions"] == companions
        assert item["episodes"] == 25
        assert item["sha256"] == sha256_source(item["path"], companions)
    # the shard's own sha256 is part of it: a changed shard changes the recorded hash
    assert len({item["sha256"] for item in inputs.values()}) == 2


# ---------------------------------------------------------------- a synthetic RLDS source


def rlds_spec(folder: str | Path, **overrides) -> dict:
    """The robomimic fixture's gold version read back as an RLDS source."""
    spec = {
        "name": "synthetic_rlds",
        "version": "1.0.0",
        "source": {"format": "rlds", "paths": [str(folder)]},
        "control_rate_hz": 10,
        "cameras": [{"name": "front", "size": [64, 64], "encoding": "png"},  # same size: no resize, lossless
                    {"name": "side", "key": "steps/observation/wrist", "size": [48, 48], "encoding": "png"}],
        "state": {"keys": ["steps/observation/state[0:3]", "steps/observation/state[3:]"]},
        "action": {"keys": ["steps/action_raw"]},
        "instruction": {"feature": "steps/language_instruction"},
        "metadata": {"task": {"feature": "episode_metadata/task"},
                     "color": {"feature": "episode_metadata/color"},
                     "origin": {"feature": "episode_metadata/episode_id"},
                     "source_split": {"file_attr": "split"},
                     "source_dataset": {"file_attr": "dataset"}},
        "episode_length": {"min_steps": 5},
        "splits": {"fractions": {"train": 1.0}},
        "filters": NO_FILTERS,
    }
    spec.update(overrides)
    return spec


@pytest.fixture(scope="module")
def synthetic_gold(robomimic_raw, tmp_path_factory) -> str:
    """A gold version of the robomimic fixture: several shards per split, JPEG and PNG cameras."""
    outcome = run_convert(robomimic_spec(robomimic_raw), tmp_path_factory.mktemp("synthetic_lake"))
    return outcome.gold_dir


@pytest.fixture(scope="module")
def round_trip(synthetic_gold, tmp_path_factory):
    return run_convert(rlds_spec(synthetic_gold), tmp_path_factory.mktemp("round_trip_lake"))


def test_synthetic_rlds_round_trips(synthetic_gold, round_trip):
    source = gold_episodes(synthetic_gold)
    splits = tfds.builder_from_directory(synthetic_gold).info.splits
    encoded = {e["episode_metadata"]["episode_id"].decode(): e
               for split in splits for e in source_episodes(synthetic_gold, ["front", "wrist"], split)}
    result = gold_episodes(round_trip.gold_dir)
    assert round_trip.manifest["counts"]["episodes_written"] == len(result) == len(source) == 10
    shards = {item["path"] for item in round_trip.manifest["sources"]}
    assert len(shards) == len(list(Path(synthetic_gold).glob("*.tfrecord-*"))) > 3  # every shard an input
    for episode in result.values():
        meta = episode["episode_metadata"]
        original = source[meta["origin"]]
        assert meta["source_dataset"] == "synthetic_tabletop"
        assert meta["source_split"] in tfds.builder_from_directory(synthetic_gold).info.splits
        assert (meta["task"], meta["color"]) == (original["episode_metadata"]["task"],
                                                 original["episode_metadata"]["color"])
        assert len(episode["steps"]) == len(original["steps"])
        for step, src, raw in zip(episode["steps"], original["steps"], encoded[meta["origin"]]["steps"]):
            np.testing.assert_array_equal(step["action_raw"], src["action_raw"])
            np.testing.assert_array_equal(step["observation"]["state"], src["observation"]["state"])
            assert step["language_instruction"] == src["language_instruction"]
            # the 64x64 JPEG front camera re-encoded as PNG: OpenCV's decoding of the source bytes, exactly
            front = cv2.imdecode(np.frombuffer(raw["observation"]["front"], np.uint8), cv2.IMREAD_COLOR_RGB)
            np.testing.assert_array_equal(step["observation"]["front"], front)
            # the 32x32 PNG wrist camera resized to 48x48
            wrist = cv2.resize(src["observation"]["wrist"], (48, 48), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(step["observation"]["side"], wrist)


def test_synthetic_lineage_and_episode_ids(synthetic_gold, round_trip):
    provenance = read_json(f"{round_trip.gold_dir}/provenance.json")
    for item in provenance["inputs"]:
        assert Path(item["path"]).parent == Path(synthetic_gold)
        assert item["sha256"] == sha256_source(item["path"], item["companions"])
    ids = sorted(gold_episodes(round_trip.gold_dir))
    # <version folder>/<shard file>/<record index>
    assert all(i.startswith("1.0.0/synthetic_tabletop-") and ".tfrecord-" in i and i[-6] == "/" for i in ids)


def test_source_splits_selects_shards(synthetic_gold, tmp_path):
    builder = tfds.builder_from_directory(synthetic_gold)
    split = next(s for s in builder.info.splits if s != "train")
    outcome = run_convert(rlds_spec(synthetic_gold, source={"format": "rlds", "paths": [synthetic_gold],
                                                             "splits": [split]}), tmp_path)
    assert outcome.manifest["counts"]["episodes_written"] == builder.info.splits[split].num_examples
    with pytest.raises(RobolakeError, match=r"source.splits: .* has no split 'holdout' \(it has "):
        run_convert(rlds_spec(synthetic_gold, source={"format": "rlds", "paths": [synthetic_gold],
                                                       "splits": ["holdout"]}), tmp_path / "other")


# ---------------------------------------------------------------- bad mappings and bad files


def test_missing_camera_feature_quarantines_naming_file_and_key(synthetic_gold, tmp_path):
    spec = rlds_spec(synthetic_gold, cameras=[{"name": "front", "key": "steps/observation/image_9", "size": [64, 64]}])
    with pytest.raises(RobolakeError, match=r"every episode was quarantined") as error:
        run_convert(spec, tmp_path)
    assert "feature 'steps/observation/image_9' (cameras.0.key) is not in" in str(error.value)
    records = quarantined(tmp_path, "synthetic_rlds")
    assert len(records) == len(list(Path(synthetic_gold).glob("*.tfrecord-*")))  # one per shard file
    for record in records:
        assert record["reason_code"] == "missing_key"
        assert record["reason"].startswith(f"{record['source_path']}: feature 'steps/observation/image_9'")
        assert "(it has steps/" in record["reason"] and "steps/observation/front" in record["reason"]


def test_missing_state_feature_fails_naming_the_key(synthetic_gold, tmp_path):
    spec = rlds_spec(synthetic_gold, state={"keys": ["steps/observation/joints"]})
    with pytest.raises(RobolakeError, match=r"state.keys \['steps/observation/joints'\] \(feature "
                                            r"'steps/observation/joints' is not in .*/features.json; it has "
                                            r"steps/action, steps/action_raw, .*\): no source could be read \(\d+ files?\): "):
        run_convert(spec, tmp_path)


def test_corrupt_and_truncated_shards_quarantine_what_they_hold(synthetic_gold, tmp_path):
    folder = tmp_path / "synthetic_tabletop" / "1.0.0"
    shutil.copytree(synthetic_gold, folder)
    shards = sorted(folder.glob("*-train.tfrecord-*"))
    flipped, truncated = shards[0], shards[1]
    data = bytearray(flipped.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    data[12 + length // 2] ^= 0xFF  # a byte inside the first record's data
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-100])  # cuts into the last record
    outcome = run_convert(rlds_spec(folder), tmp_path / "lake")
    records = {r["episode_id"]: r for r in quarantined(tmp_path / "lake", "synthetic_rlds")}
    first = f"1.0.0/{flipped.name}/00000"
    assert records[first]["reason_code"] == "corrupt_record"
    assert records[first]["reason"] == f"{flipped}: record data CRC mismatch at byte 0"
    cut = next(r for r in records.values() if r["source_path"] == str(truncated))
    assert cut["reason_code"] == "corrupt_record" and "is truncated" in cut["reason"]
    counts = outcome.manifest["counts"]
    assert counts["episodes_quarantined"] == 2
    assert counts["episodes_written"] + 2 == counts["episodes_found"] == 10


def test_spec_checks_rlds_fields():
    base = rlds_spec("gold/x/1.0.0")
    parse_spec(base)  # valid
    cases = [
        ({"instruction": {"topic": "/instruction"}}, "instruction: topic is not available for rlds sources "
                                                     "(use value or one of feature, file_attr)"),
        ({"instruction": {"feature": "language_instruction"}}, "instruction.feature: a feature path starts with"),
        ({"metadata": {"split": {"file_attr": "shard"}}}, "metadata.split.file_attr: an rlds source file has split"),
        ({"cameras": [{"name": "front", "key": "observation/image_0"}]}, "cameras.0.key: an rlds camera is a step"),
        ({"cameras": [{"name": "front", "topic": "/cam"}]}, "cameras.0: topic and max_age_s are for rosbag sources; "
                                                           "rlds uses key"),
        ({"state": {"keys": ["observation/state"]}}, "state.keys: an rlds key is a step feature path"),
        ({"action": {"topics": [{"topic": "/cmd"}]}}, "action.topics is for rosbag sources; rlds uses action.keys"),
        ({"source": {"format": "rlds", "paths": ["x"], "layout": "robomimic"}}, "source.layout: unknown field "
                                                                               "(allowed: format, paths, splits, terminal)"),
    ]
    for override, expected in cases:
        with pytest.raises(SpecError) as error:
            parse_spec({**base, **override}, origin="datasets/bad.yaml")
        assert expected in str(error.value), (override, str(error.value))
    with pytest.raises(SpecError, match="instruction: feature is not available for hdf5 sources"):
        parse_spec(merged(robomimic_spec(Path("raw")), instruction={"feature": "steps/language_instruction"}))


def test_feature_key_slices():
    assert parse_key("state.keys.0", "steps/observation/state").part is None
    assert parse_key("state.keys.0", "steps/observation/state[0:6]").part == slice(0, 6)
    assert parse_key("state.keys.0", "steps/observation/state[3:]").part == slice(3, None)
    assert parse_key("action.keys.0", "steps/action[-1]").part == slice(-1, None)
    assert parse_key("action.keys.0", "steps/action[2]").part == slice(2, 3)
    with pytest.raises(SpecError, match="action.keys.0: 'steps/action\\[\\]': empty index"):
        parse_key("action.keys.0", "steps/action[]")


def test_rlds_source_splits_can_be_kept(synthetic_gold, tmp_path):
    outcome = run_convert(rlds_spec(synthetic_gold, splits={"by": "keep"}), tmp_path / "lake")
    kept = gold_episodes(outcome.gold_dir)
    source = gold_episodes(synthetic_gold)
    by_id = {e["episode_metadata"]["episode_id"]: split for split in tfds.builder_from_directory(synthetic_gold).info.splits
             for e in load_split(synthetic_gold, split)}
    assert len(kept) == len(source)
    for episode in kept.values():
        assert episode["episode_metadata"]["source_split"] == by_id[episode["episode_metadata"]["origin"]]
    splits = tfds.builder_from_directory(outcome.gold_dir).info.splits
    assert {name: splits[name].num_examples for name in splits} == \
           {name: info.num_examples for name, info in tfds.builder_from_directory(synthetic_gold).info.splits.items()}
