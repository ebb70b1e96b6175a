"""ROS bags -> silver, end to end through `pipelines.build.convert`, on synthetic bags
(tests/bag_factory.py) whose every stamp and value is known. The expected episode is
computed here from the written streams with a plain loop over the alignment contract:

- a message's stamp is its header stamp (`stamps: header`, when it has a header), else
  the bag's receive time;
- ticks run at control_rate_hz from the latest first stamp of the aligned streams
  (cameras, state topics, action topics) to the earliest last stamp, inclusive; with
  `reference_topic`, the ticks are that topic's stamps within the same span;
- at a tick each stream takes its latest message stamped at or before it, if no older
  than the stream's max_age_s; a tick where a stream has none is dropped and counted
  once, against the first stale stream (cameras, state topics, action topics);
- `delta: difference` is v[t+1] - v[t] between kept ticks, `delta: pose` the position
  change and rotation change as roll/pitch/yaw; the last kept tick is then cut."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from cli.main import main
from robolake.hashing import sha256_source
from robolake.lake import Lake
from tests import bag_factory as bf
from tests.helpers import (
    BAG_NAME as NAME, BAG_VERSION as VERSION, STATE_JOINTS, TWIST_NAMES, bag_spec, run_convert, write_bag,
)

# ---------------------------------------------------------------- the contract, computed here


@dataclass
class Expected:
    ticks: list[int]
    state: np.ndarray  # (T, S) float64
    action: np.ndarray  # (T, A) float64
    frames: dict[str, np.ndarray]  # camera name -> (T,) frame codes
    dropped: dict[str, int] = field(default_factory=dict)  # topic -> ticks dropped

    @property
    def num_steps(self) -> int:
        return len(self.ticks)


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def expected_episode(bag: bf.ExpectedStreams, spec: dict, window_s: tuple[float, float] | None = None) -> Expected:
    """What the episode of `bag` (or of its messages received within window_s, seconds
    from t0, half open) must hold under `spec`, by the contract in the module docstring."""
    source = spec["source"]
    default_age = source.get("max_age_s", 0.2)
    use_stamps = source.get("stamps", "header")
    lo, hi = (-np.inf, np.inf) if window_s is None else window_s

    def messages(topic: str) -> tuple[np.ndarray, np.ndarray]:
        stream = bag[topic]
        receive_s = (stream.receive - bag.start_ns) / bf.NS
        inside = (receive_s >= lo) & (receive_s < hi)
        stamps = stream.stamps if stream.has_header and use_stamps == "header" else stream.receive
        return stamps[inside], np.arange(len(stream.stamps))[inside]

    # (kind, key, topic, stamps, message numbers, max age ns, topic spec)
    streams = []
    for cam in spec["cameras"]:
        streams.append(("camera", cam["name"], cam["topic"], *messages(cam["topic"]),
                        round(cam.get("max_age_s", default_age) * 1e9), cam))
    for kind in ("state", "action"):
        for i, topic_spec in enumerate(spec[kind]["topics"]):
            streams.append((kind, i, topic_spec["topic"], *messages(topic_spec["topic"]),
                            round(topic_spec.get("max_age_s", default_age) * 1e9), topic_spec))
    start = max(int(s[3].min()) for s in streams)
    end = min(int(s[3].max()) + s[5] for s in streams)  # a tick is valid up to max age after the last message
    if source.get("reference_topic"):
        reference, _ = messages(source["reference_topic"])
        ticks = sorted(int(t) for t in reference if start <= t <= end)
    else:
        ticks, k = [], 0
        while start + round(k * 1e9 / spec["control_rate_hz"]) <= end:
            ticks.append(start + round(k * 1e9 / spec["control_rate_hz"]))
            k += 1

    kept, picks, dropped = [], [], {}
    for tick in ticks:
        picked, stale = [], None
        for _, _, topic, stamps, numbers, max_age, _ in streams:
            best = None
            for stamp, number in zip(stamps.tolist(), numbers.tolist()):
                if stamp <= tick and (best is None or stamp >= best[0]):
                    best = (stamp, number)
            if best is None or tick - best[0] > max_age:
                stale = topic
                break
            picked.append(best[1])
        if stale is not None:
            dropped[stale] = dropped.get(stale, 0) + 1
            continue
        kept.append(tick)
        picks.append(picked)
    picks = np.array(picks, int).reshape(len(kept), len(streams))

    frames, state_parts, action_parts, cut = {}, [], [], False
    for column, (kind, key, topic, _, _, _, topic_spec) in enumerate(streams):
        values = bag[topic].values[picks[:, column]]
        if kind == "camera":
            frames[key] = values[:, 0].astype(int)
        elif kind == "state":
            state_parts.append(bag.joint_values(topic_spec["joints"])[picks[:, column]] if topic_spec.get("joints")
                               else values)
        elif topic_spec.get("delta") == "difference":
            action_parts.append(np.diff(values, axis=0))
            cut = True
        elif topic_spec.get("delta") == "pose":
            assert np.allclose(values[:, 3:5], 0), "the factory's poses rotate about z only"
            yaw = bf.pose_yaw(values)
            action_parts.append(np.concatenate(
                [np.diff(values[:, :3], axis=0), np.zeros((len(values) - 1, 2)), _wrap(np.diff(yaw))[:, None]], 1))
            cut = True
        else:
            action_parts.append(values)
    n = len(kept) - 1 if cut else len(kept)
    return Expected(
        kept[:n],
        np.concatenate([p[:n] for p in state_parts], axis=1),
        np.concatenate([p[:n] for p in action_parts], axis=1),
        {name: codes[:n] for name, codes in frames.items()},
        dropped,
    )


# ---------------------------------------------------------------- reading the lake


@dataclass
class Build:
    lake: Lake
    outcome: object
    bags: dict[str, bf.ExpectedStreams]
    spec: dict

    def table(self, name: str) -> list[dict]:
        return pads.dataset(self.lake.silver_partition(NAME, name, VERSION), partitioning="hive").to_table().to_pylist()

    def episodes(self) -> dict[str, dict]:
        return {row["episode_id"]: row for row in self.table("episodes")}

    def steps(self, episode_id: str) -> list[dict]:
        rows = [row for row in self.table("steps") if row["episode_id"] == episode_id]
        assert rows, f"no silver steps for {episode_id}; episodes: {sorted(self.episodes())}"
        return sorted(rows, key=lambda row: row["step_index"])

    def quarantine(self) -> dict[str, dict]:
        table = pq.read_table(f"{self.lake.quarantine(NAME, VERSION)}/quarantine.parquet")
        return {row["episode_id"]: row for row in table.to_pylist()}

    def manifest_dropped(self) -> dict[str, int]:
        return {k: v for k, v in self.outcome.manifest["alignment"]["dropped_ticks"].items() if v}


def convert_bags(tmp: Path, bags: dict[str, bf.ExpectedStreams], spec: dict) -> Build:
    lake = Lake(str(tmp / "lake"))
    return Build(lake, run_convert(spec, tmp / "lake"), bags, spec)


def assert_episode_matches(build: Build, episode_id: str, expected: Expected) -> None:
    steps = build.steps(episode_id)
    assert len(steps) == expected.num_steps > 1, episode_id
    assert [s["step_index"] for s in steps] == list(range(expected.num_steps))
    state = np.array([s["state"] for s in steps], np.float32)
    action = np.array([s["action_raw"] for s in steps], np.float32)
    np.testing.assert_allclose(state, expected.state.astype(np.float32), rtol=1e-6, atol=1e-7,
                               err_msg=f"{episode_id}: state")
    np.testing.assert_allclose(action, expected.action.astype(np.float32), rtol=1e-6, atol=1e-7,
                               err_msg=f"{episode_id}: action")
    for camera, codes in expected.frames.items():
        got = [bf.frame_code(bf.decode_png_or_jpeg(s[f"image_{camera}"])) for s in steps]
        assert got == codes.tolist(), f"{episode_id}: camera {camera} stored other frames"
    assert [s["is_first"] for s in steps] == [True] + [False] * (len(steps) - 1)
    assert [s["is_last"] for s in steps] == [False] * (len(steps) - 1) + [True]


def reason_names_a_time(reason: str, times_ns: np.ndarray) -> bool:
    """Whether the reason holds one of `times_ns`, in ns or in seconds (to the ms)."""
    for number in re.findall(r"\d+(?:\.\d+)?", reason):
        if "." not in number and len(number) >= 15 and int(number) in set(times_ns.tolist()):
            return True
        if len(number.split(".")[0]) == 10 and np.min(np.abs(times_ns / 1e9 - float(number))) < 1e-3:
            return True
    return False


# ---------------------------------------------------------------- one clean build: a, b, e


@pytest.fixture(scope="module")
def clean_build(tmp_path_factory) -> Build:
    """ep0 in mcap and in sqlite3 (the same content), ep1 in mcap with a 0.5 s gap on /cam/jpeg."""
    tmp = tmp_path_factory.mktemp("rosbag_clean")
    bags = {
        "mcap/ep0": write_bag(tmp / "bags/mcap/ep0.mcap", storage="mcap", seed=0),
        "sqlite/ep0": write_bag(tmp / "bags/sqlite/ep0.db3", storage="sqlite3", seed=0),
        "mcap/ep1": write_bag(tmp / "bags/mcap/ep1.mcap", storage="mcap", seed=1, drop_camera=(1.0, 1.5),
                              task="place", operator="op2"),
    }
    spec = bag_spec([tmp / "bags/*/*.mcap", tmp / "bags/*/*.db3"])
    return convert_bags(tmp, bags, spec)


def test_cameras_joint_states_and_jittered_twists_align_to_10_hz(clean_build):
    bag = clean_build.bags["mcap/ep0"]
    expected = expected_episode(bag, clean_build.spec)
    assert expected.num_steps >= 25 and not expected.dropped
    # the fixture really exercises what it should: shuffled joint names and jittered stamps
    assert bf.MESSAGE_JOINTS[:3] != tuple(STATE_JOINTS)
    assert np.ptp(np.diff(bag[bf.CMD].stamps)) > 2 * bf.MS
    assert_episode_matches(clean_build, "mcap/ep0", expected)
    # 30 Hz and 15 Hz cameras: every tick took a different frame of each
    assert all(len(set(codes.tolist())) == expected.num_steps for codes in expected.frames.values())
    episode = clean_build.episodes()["mcap/ep0"]
    assert episode["num_steps"] == expected.num_steps and episode["dropped_ticks"] == 0
    assert episode["language_instruction"] == bf.INSTRUCTION
    assert (episode["task"], episode["operator"]) == ("pick", "op1")
    steps = clean_build.steps("mcap/ep0")
    assert {s["language_instruction"] for s in steps} == {bf.INSTRUCTION}


def test_camera_gap_drops_ticks_counted_against_that_camera(clean_build):
    bag = clean_build.bags["mcap/ep1"]
    expected = expected_episode(bag, clean_build.spec)
    assert set(expected.dropped) == {bf.JPEG} and expected.dropped[bf.JPEG] >= 4
    assert_episode_matches(clean_build, "mcap/ep1", expected)
    episodes = clean_build.episodes()
    assert episodes["mcap/ep1"]["dropped_ticks"] == expected.dropped[bf.JPEG]
    assert episodes["mcap/ep1"]["num_steps"] == expected.num_steps
    assert (episodes["mcap/ep1"]["task"], episodes["mcap/ep1"]["operator"]) == ("place", "op2")
    totals: dict[str, int] = {}
    for bag_id, bag in clean_build.bags.items():
        for topic, count in expected_episode(bag, clean_build.spec).dropped.items():
            totals[topic] = totals.get(topic, 0) + count
    assert clean_build.manifest_dropped() == totals
    counts = clean_build.outcome.manifest["counts"]
    assert counts["episodes_written"] == 3 and counts["episodes_quarantined"] == 0


def test_sqlite3_and_mcap_give_identical_silver(clean_build):
    mcap, sqlite = clean_build.steps("mcap/ep0"), clean_build.steps("sqlite/ep0")
    assert len(mcap) == len(sqlite)
    for column in ("step_index", "timestamp", "is_first", "is_last", "is_terminal", "reward", "discount",
                   "action", "action_raw", "state", "language_instruction", "image_rgb", "image_jpeg"):
        assert [s[column] for s in mcap] == [s[column] for s in sqlite], column
    sources = {s["relative_id"]: s for s in clean_build.outcome.manifest["sources"]}
    assert set(sources) == {"mcap/ep0", "mcap/ep1", "sqlite/ep0"}
    assert sources["mcap/ep0"]["sha256"] != sources["sqlite/ep0"]["sha256"]


# ---------------------------------------------------------------- bad input: c


@pytest.fixture(scope="module")
def faulty_build(tmp_path_factory) -> Build:
    """Two good bags (ROS 2 mcap, ROS 1) among malformed, incomplete and broken ones."""
    tmp = tmp_path_factory.mktemp("rosbag_faulty")
    bags = {
        "ok": write_bag(tmp / "bags/ok.mcap", seed=2),
        "ok_ros1": write_bag(tmp / "bags/ok_ros1.bag", storage="ros1", seed=2),
        "bad_image": write_bag(tmp / "bags/bad_image.mcap", seed=3, malformed="image_length"),
        "bad_jpeg": write_bag(tmp / "bags/bad_jpeg.mcap", seed=4, malformed="compressed"),
        "no_jpeg": write_bag(tmp / "bags/no_jpeg.mcap", seed=5, omit_topics=[bf.JPEG]),
        "empty": write_bag(tmp / "bags/empty.mcap", seed=6, empty=True),
    }
    for name, storage in (("cut.mcap", "mcap"), ("cut.db3", "sqlite3"), ("cut.bag", "ros1")):
        path = tmp / "bags" / storage / name
        bags[f"{storage}/cut"] = write_bag(path, storage=storage, seed=11)
        bf.truncate(path, 0.6)
    bf.write_garbage_bag(tmp / "bags/garbage.mcap")
    bf.write_sidecar(tmp / "bags/garbage.mcap", task="pick", operator="op1")
    cut = [tmp / f"bags/*/cut.{suffix}" for suffix in ("mcap", "db3", "bag")]
    spec = bag_spec([tmp / "bags/*.mcap", tmp / "bags/*.bag", *cut])
    return convert_bags(tmp, bags, spec)


def test_malformed_image_and_undecodable_jpeg_are_quarantined(faulty_build):
    quarantined = faulty_build.quarantine()
    for bag_id, topic in (("bad_image", bf.RGB), ("bad_jpeg", bf.JPEG)):
        record = quarantined[bag_id]
        assert record["reason_code"] == "bad_message", record
        assert topic in record["reason"] and f"{bag_id}.mcap" in record["reason"], record["reason"]
        assert record["source_path"].endswith(f"{bag_id}.mcap") and len(record["source_sha256"]) == 64
        stream = faulty_build.bags[bag_id][topic]
        bad = faulty_build.bags[bag_id].corrupted[topic]
        assert reason_names_a_time(record["reason"], np.concatenate([stream.stamps[bad], stream.receive[bad]])), \
            f"the reason names none of the malformed messages' times: {record['reason']}"


@pytest.mark.parametrize(
    "bag_id, filename, code, words",
    [
        ("no_jpeg", "no_jpeg.mcap", "missing_topic", [bf.JPEG]),
        ("empty", "empty.mcap", "empty_bag", []),
        ("garbage", "garbage.mcap", "unreadable_bag", []),
        ("mcap/cut", "cut.mcap", "unreadable_bag", []),
        ("sqlite3/cut", "cut.db3", "unreadable_bag", []),
        ("ros1/cut", "cut.bag", "unreadable_bag", []),
    ],
)
def test_missing_topic_empty_and_unreadable_bags_are_quarantined(faulty_build, bag_id, filename, code, words):
    record = faulty_build.quarantine()[bag_id]
    assert record["reason_code"] == code, record
    assert filename in record["reason"] and all(w in record["reason"] for w in words), record["reason"]


def test_good_bags_of_a_faulty_run_are_written(faulty_build):
    episodes = faulty_build.episodes()
    assert set(episodes) == {"ok", "ok_ros1"}
    assert set(faulty_build.quarantine()) == {
        "bad_image", "bad_jpeg", "no_jpeg", "empty", "garbage", "mcap/cut", "sqlite3/cut", "ros1/cut"}
    counts = faulty_build.outcome.manifest["counts"]
    assert counts["episodes_found"] == 10 and counts["episodes_written"] == 2 and counts["episodes_quarantined"] == 8
    assert faulty_build.outcome.manifest["quarantine_reasons"] == {
        "bad_message": 2, "empty_bag": 1, "missing_topic": 1, "unreadable_bag": 4}
    assert_episode_matches(faulty_build, "ok", expected_episode(faulty_build.bags["ok"], faulty_build.spec))


def test_ros1_bag_gives_the_same_episode_as_ros2(faulty_build):
    ros2, ros1 = faulty_build.steps("ok"), faulty_build.steps("ok_ros1")
    assert_episode_matches(faulty_build, "ok_ros1", expected_episode(faulty_build.bags["ok_ros1"], faulty_build.spec))
    for column in ("action_raw", "state", "image_rgb", "image_jpeg"):
        assert [s[column] for s in ros1] == [s[column] for s in ros2], column


# ---------------------------------------------------------------- split bags: d


def test_gap_split_gives_one_episode_per_recording_stretch(tmp_path):
    # every stream pauses 2.0-4.0 s; the instruction is sent again when recording resumes
    bag = write_bag(tmp_path / "bags/session.mcap", seconds=6.0, seed=7, pause=(2.0, 2.0),
                    instruction_at=[0.05, 4.05])
    spec = bag_spec([tmp_path / "bags/*.mcap"], source={"split": {"gap_s": 1.0}})
    build = convert_bags(tmp_path, {"session": bag}, spec)
    episodes = build.episodes()
    assert sorted(episodes) == ["session/0000", "session/0001"]
    for episode_id, window in (("session/0000", (-1.0, 3.0)), ("session/0001", (3.0, 10.0))):
        expected = expected_episode(bag, spec, window)
        assert not expected.dropped
        assert_episode_matches(build, episode_id, expected)
        assert episodes[episode_id]["num_steps"] == expected.num_steps
        assert episodes[episode_id]["task"] == "pick" and episodes[episode_id]["dropped_ticks"] == 0
    assert build.manifest_dropped() == {}
    # unsplit, the same bag is one episode in which the pause drops ticks
    whole = expected_episode(bag, bag_spec([]))
    assert whole.dropped and sum(whole.dropped.values()) >= 15


def test_marker_topic_splits_at_every_marker(tmp_path):
    # markers before the first sample and at 2.0 s; the streams are quiet 1.8-2.2 s, so
    # every message is unambiguously before or after the marker (by stamp and by receive time)
    bag = write_bag(tmp_path / "bags/session.mcap", seconds=4.0, seed=8, pause=(1.8, 0.4),
                    markers=[-0.03, 2.0], instruction_at=[-0.02, 2.01])
    spec = bag_spec([tmp_path / "bags/*.mcap"], source={"split": {"marker_topic": bf.MARKER_TOPIC}})
    build = convert_bags(tmp_path, {"session": bag}, spec)
    episodes = build.episodes()
    assert sorted(episodes) == ["session/0000", "session/0001"]
    for episode_id, window in (("session/0000", (-1.0, 2.0)), ("session/0001", (2.0, 10.0))):
        expected = expected_episode(bag, spec, window)
        assert not expected.dropped and expected.num_steps >= 15
        assert_episode_matches(build, episode_id, expected)
        assert episodes[episode_id]["language_instruction"] == bf.INSTRUCTION


# ---------------------------------------------------------------- reference topic and deltas


def test_reference_topic_with_difference_and_pose_deltas(tmp_path):
    bag = write_bag(tmp_path / "bags/ep0.mcap", seconds=3.0, seed=9, pose=True)
    spec = bag_spec(
        [tmp_path / "bags/*.mcap"],
        source={"reference_topic": bf.CMD},
        action={
            "topics": [{"topic": bf.CMD, "delta": "difference"},
                       {"topic": bf.POSE, "delta": "pose", "max_age_s": 0.02}],
            "names": [f"d{n}" for n in TWIST_NAMES] + ["dx", "dy", "dz", "droll", "dpitch", "dyaw"],
        },
    )
    build = convert_bags(tmp_path, {"ep0": bag}, spec)
    expected = expected_episode(bag, spec)
    # one tick per command: the ticks are the /cmd stamps, and its difference the next command's change
    assert set(expected.ticks) <= set(bag[bf.CMD].stamps.tolist()) and expected.num_steps >= 25
    differences = np.diff(bag[bf.CMD].values, axis=0)
    assert all(np.any(np.all(np.isclose(differences, row), axis=1)) for row in expected.action[:, :6])
    assert np.abs(expected.action[:, 11]).max() > 1e-3
    assert_episode_matches(build, "ep0", expected)
    assert build.episodes()["ep0"]["num_steps"] == expected.num_steps


def test_receive_stamps(tmp_path):
    bag = write_bag(tmp_path / "bags/ep0.mcap", seconds=3.0, seed=10)
    spec = bag_spec([tmp_path / "bags/*.mcap"], source={"stamps": "receive"},
                    action={"topics": [{"topic": bf.CMD, "max_age_s": 0.2}], "names": TWIST_NAMES})
    build = convert_bags(tmp_path, {"ep0": bag}, spec)
    expected = expected_episode(bag, spec)
    header = expected_episode(bag, bag_spec([], action=spec["action"]))
    assert expected.ticks != header.ticks  # the receive delay moves the ticks
    assert_episode_matches(build, "ep0", expected)


# ---------------------------------------------------------------- hashes and lineage of bags


def test_bag_hash_covers_folder_and_sidecar_and_lineage_verifies_both(tmp_path, capsys):
    folder = tmp_path / "bags" / "take.1"  # a ROS 2 bag folder whose name has a dot
    write_bag(folder, seed=12)
    renamed = tmp_path / "copy" / "take.2"
    shutil.copytree(folder, renamed)
    shutil.copy(bf.sidecar_path(folder), bf.sidecar_path(renamed))
    assert sha256_source(str(folder)) == sha256_source(str(renamed))  # content, not name
    sidecar = str(bf.sidecar_path(folder))
    build = convert_bags(tmp_path, {}, bag_spec([tmp_path / "bags" / "*"]))
    (source,) = build.outcome.manifest["sources"]
    assert source["relative_id"] == "take.1" and source["companions"] == [sidecar]
    assert source["sha256"] == sha256_source(str(folder), [sidecar]) != sha256_source(str(folder))
    assert list(build.episodes()) == ["take.1"]
    gold = build.lake.gold(NAME, VERSION)
    assert main(["lineage", gold, "--verify"]) == 0
    bf.write_sidecar(folder, task="place", operator="op1")  # the metadata changed after the build
    assert main(["lineage", gold, "--verify"]) == 1
    assert f"{folder}" in capsys.readouterr().out
