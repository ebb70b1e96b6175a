"""The sample's behaviour faults (robolake/sample/faults.py): each kind is listed in
sample_manifest.json with its episode and is really in the written HDF5 sessions and mcap
bags; shares are honoured; --no-faults gives none."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from robolake.errors import RobolakeError
from robolake.sample import build_episode, cli, episode_metadata, write_sample
from robolake.sample.bag_writer import camera_topic, episode_start_ns
from robolake.sample.faults import BAG_ONLY, BEHAVIOUR_KINDS, DEFAULT_SHARES, faulty_episode, plan_faults
from robolake.sample.generate import is_bag, plan_units
from tests.test_sample_identity import CONFIG

TINY = {"front": (48, 64), "wrist": (30, 40)}
SHARES = {"idle": 0.1, "gripper_chatter": 0.1, "frozen_camera": 0.1, "failed_demo": 0.1, "duplicate_episode": 0.1,
          "timestamp_jitter": 0.15, "dropped_steps": 0.15}
SEED, EPISODES, BAG_FRACTION = 2, 24, 0.5  # every kind in both containers (the timing kinds in bags)
TICK_NS = 100_000_000


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("faults") / "out"
    return out, write_sample(str(out), episodes=EPISODES, seed=SEED, bag_fraction=BAG_FRACTION, cameras=TINY,
                             fault_shares=SHARES)


def _faults(manifest: dict, kind: str) -> list[tuple[dict, dict]]:
    """(fault, episode entry) of each fault of `kind`; there is at least one."""
    entries = {e["index"]: e for e in manifest["episodes"]}
    found = [(f, entries[f["index"]]) for f in manifest["faults"] if f["kind"] == kind]
    assert found, f"no {kind} in the sample"
    for fault, entry in found:
        assert entry["fault"]["kind"] == kind and fault["episode_id"] == entry["episode_id"]
    return found


def _demo(out: Path, entry: dict) -> dict[str, np.ndarray | list]:
    with h5py.File(out / entry["path"]) as h5:
        demo = h5["data"][entry["group"]]
        qpos = demo["obs/robot0_gripper_qpos"][()]
        return {"actions": demo["actions"][()], "position": demo["obs/robot0_eef_pos"][()],
                "width": qpos[:, 0] - qpos[:, 1], "instruction": demo.attrs["language_instruction"],
                **{camera: [bytes(f) for f in demo[f"obs/{camera}_image"]] for camera in TINY}}


def _bag(out: Path, entry: dict) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(header stamp ns, message)] in recorded order."""
    topics = collections.defaultdict(list)
    with AnyReader([out / entry["path"]]) as reader:
        for connection, _, raw in reader.messages():
            message = reader.deserialize(raw, connection.msgtype)
            stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec if hasattr(message, "header") else 0
            topics[connection.topic].append((stamp, message))
    return topics


def _bag_actions(topics: dict) -> np.ndarray:
    twists = [m.twist for _, m in topics["/teleop/ee_delta"]]
    linear = [[t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z] for t in twists]
    return np.c_[np.array(linear), [m.position[0] for _, m in topics["/teleop/gripper"]]]


def _tick_offsets_ns(topics: dict, index: int) -> np.ndarray:
    """Each command's stamp after the episode's start, in ns."""
    return np.array([s for s, _ in topics["/teleop/ee_delta"]]) - episode_start_ns(SEED, index)


def _recorded(out: Path, entry: dict) -> dict:
    """Actions of either container, and the HDF5 arrays where the episode is in a session."""
    if entry["container"] == "hdf5":
        return _demo(out, entry)
    return {"actions": _bag_actions(_bag(out, entry))}


def _planned(index: int):
    faults = plan_faults(SEED, EPISODES, lambda i: is_bag(i, BAG_FRACTION), None, SHARES, list(TINY))
    return faults[index]


def test_every_kind_is_listed_with_its_episode(sample):
    out, manifest = sample
    assert manifest["fault_shares"] == SHARES
    kinds = collections.Counter((e["container"], e["fault"]["kind"]) for e in manifest["episodes"] if e["fault"])
    for kind in BEHAVIOUR_KINDS:
        assert kinds["mcap", kind] >= 1
        assert kinds["hdf5", kind] == 0 if kind in BAG_ONLY else kinds["hdf5", kind] >= 1  # HDF5 has no times
    listed = [(f["index"], f["kind"]) for f in manifest["faults"]]
    assert listed == [(e["index"], e["fault"]["kind"]) for e in manifest["episodes"] if e["fault"]]
    assert {"truncated_file", "nan_action", "action_spike"} <= {kind for _, kind in listed}  # kept as they were


def test_idle_head_and_tail_hold_still(sample):
    out, manifest = sample
    for fault, entry in _faults(manifest, "idle"):
        head, tail = fault["head_steps"], fault["tail_steps"]
        assert head + tail >= 10 and all(s == 0 or 10 <= s <= 30 for s in (head, tail))
        steps = build_episode(SEED, entry["index"], cameras={}).steps
        assert entry["steps"] == steps + head + tail
        recorded = _recorded(out, entry)
        actions = recorded["actions"]
        idle = np.r_[0:head, head + steps : head + steps + tail]
        assert len(actions) == entry["steps"] and (actions[idle, :6] == 0).all()
        moving = np.setdiff1d(np.arange(len(actions)), idle)
        assert (np.abs(actions[moving, :3]).max(axis=1) > 0).all()  # never exactly still while it moves
        assert len(np.unique(actions[:head, 6])) <= 1 and len(np.unique(actions[len(actions) - tail :, 6])) <= 1
        if "position" in recorded:  # the recorded state does not move either
            assert np.ptp(recorded["position"][:head], axis=0).max(initial=0) == 0
            # the tick ending the motion observes a state up to 10 ms older, still arriving
            assert np.ptp(recorded["position"][head + steps + 1 :], axis=0).max(initial=0) == 0
            assert np.ptp(recorded["position"], axis=0).max() > 0.05


def test_gripper_chatter_is_in_the_actions_and_the_fingers(sample):
    out, manifest = sample
    for fault, entry in _faults(manifest, "gripper_chatter"):
        toggles = fault["steps"]
        assert len(toggles) in (4, 6) and max(np.diff(toggles)) <= 2  # several flips within ~1 s
        command = _recorded(out, entry)["actions"][:, 6]
        steady = build_episode(SEED, entry["index"], cameras={}).actions[:, 6]
        changes = np.flatnonzero(np.diff(command)) + 1
        assert set(toggles) <= set(changes)
        assert set(changes) - set(toggles) == set(np.flatnonzero(np.diff(steady)) + 1)  # the rest as scripted
        flipped = np.flatnonzero(command != steady)
        assert flipped.tolist() == [s for a, b in zip(toggles[::2], toggles[1::2]) for s in range(a, b)]
        # The fingers (drawn in the frames and recorded as joint states) follow each flip:
        # closing narrows them, opening widens them.
        episode = faulty_episode(SEED, entry["index"], None, {}, _planned(entry["index"]))
        np.testing.assert_array_equal(episode.actions[:, 6], command)
        width = episode.trajectory.width(episode.ticks)
        for step in toggles:
            assert (width[step + 1] - width[step]) * command[step] < -1e-4
        if entry["container"] == "hdf5":  # what the session recorded is that motion
            recorded = _demo(out, entry)["width"]
            np.testing.assert_allclose(recorded, 2 * episode.joints[episode.tick_states(), 7], atol=1e-12)
            assert np.ptp(recorded[toggles[0] : toggles[-1] + 1]) > 0.005


def _longest_identical_run(frames: list[bytes]) -> tuple[int, int]:
    """(length, first step) of the longest run of byte-identical consecutive frames."""
    best, start = (1, 0), 0
    for step in range(1, len(frames) + 1):
        if step == len(frames) or frames[step] != frames[start]:
            best, start = max(best, (step - start, -start)), step
    return best[0], -best[1]


def test_frozen_camera_repeats_one_frame_for_the_stated_steps(sample):
    out, manifest = sample
    for fault, entry in _faults(manifest, "frozen_camera"):
        camera, first, length = fault["camera"], fault["step"], fault["steps"]
        assert 8 <= length <= 12
        if entry["container"] == "hdf5":
            demo = _demo(out, entry)
            assert _longest_identical_run(demo[camera]) == (length, first)
            other = next(name for name in TINY if name != camera)
            assert _longest_identical_run(demo[other])[0] == 1
            continue
        # In the bag the camera keeps publishing, with fresh stamps, the same image.
        captures = _bag(out, entry)[camera_topic(camera)]
        start = episode_start_ns(SEED, entry["index"])
        window = [m.data.tobytes() for s, m in captures
                  if start + first * TICK_NS <= s <= start + (first + length - 1) * TICK_NS]
        assert len(window) >= length * 0.8 and len(set(window)) == 1
        assert max(collections.Counter(m.data.tobytes() for _, m in captures).values()) >= len(window) + 1


def test_failed_demo_never_moves_the_object(sample):
    out, manifest = sample
    for fault, entry in _faults(manifest, "failed_demo"):
        index = entry["index"]
        episode = faulty_episode(SEED, index, None, {}, _planned(index))
        clean = build_episode(SEED, index, cameras={})
        obj = episode.trajectory.object(episode.state_times)
        target = clean.layout.target
        np.testing.assert_array_equal(obj, np.tile([target.x, target.y, 0.0, target.yaw], (len(obj), 1)))
        moved = clean.trajectory.object(clean.state_times)
        assert max(moved[:, 2].max(), np.abs(moved[:, :2] - moved[0, :2]).max()) > 0.05  # the scripted one succeeds
        assert 0.05 <= float(np.hypot(*fault["offset_m"])) <= 0.07
        lowest = int(np.argmin(episode.tool[:, 2]))  # where it grasps (or pushes): beside the object
        assert np.hypot(*(episode.tool[lowest, :2] - [target.x, target.y])) >= 0.045
        assert entry["metadata"] == clean.meta.attrs() == episode_metadata(SEED, index).attrs()
        recorded = _recorded(out, entry)
        np.testing.assert_array_equal(recorded["actions"], episode.actions)
        if "instruction" in recorded:
            assert recorded["instruction"] == clean.meta.language_instruction
            if clean.meta.task != "push":  # the fingers close on nothing
                assert recorded["width"].min() < 0.002 < target.size[0] - 0.01


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _messages(bag: Path) -> list[tuple[str, int, bytes]]:
    with AnyReader([bag]) as reader:
        return [(connection.topic, timestamp, bytes(raw)) for connection, timestamp, raw in reader.messages()]


def test_duplicate_is_an_exact_copy_of_another_episode(sample):
    out, manifest = sample
    entries = {e["index"]: e for e in manifest["episodes"]}
    for fault, entry in _faults(manifest, "duplicate_episode"):
        original = entries[fault["of"]]
        assert fault["of"] < entry["index"] and fault["of_episode_id"] == original["episode_id"] != entry["episode_id"]
        assert original["fault"] is None and original["container"] == entry["container"]
        assert entry["metadata"] == original["metadata"] and entry["steps"] == original["steps"]
        if entry["container"] == "mcap":  # the same messages (the files differ only by the bag's own name)
            assert _messages(out / entry["path"]) == _messages(out / original["path"])
            assert (out / f"{entry['path']}.yaml").read_bytes() == (out / f"{original['path']}.yaml").read_bytes()
            continue
        with h5py.File(out / entry["path"]) as a, h5py.File(out / original["path"]) as b:
            copy, source = a["data"][entry["group"]], b["data"][original["group"]]
            assert dict(copy.attrs) == dict(source.attrs)
            names = []
            copy.visititems(lambda name, d: names.append(name) if isinstance(d, h5py.Dataset) else None)
            assert len(names) == 9
            for name in names:
                ours, theirs = copy[name][()], source[name][()]
                if copy[name].dtype == object:  # JPEG rows
                    assert [bytes(x) for x in ours] == [bytes(x) for x in theirs]
                else:
                    np.testing.assert_array_equal(ours, theirs)


def test_timestamp_jitter_makes_ticks_late(sample):
    out, manifest = sample
    clean = next(e for e in manifest["episodes"] if e["container"] == "mcap" and e["fault"] is None)
    exact = _tick_offsets_ns(_bag(out, clean), clean["index"]) - np.arange(clean["steps"]) * TICK_NS
    assert np.abs(exact).max() <= 1
    for fault, entry in _faults(manifest, "timestamp_jitter"):
        late = _tick_offsets_ns(_bag(out, entry), entry["index"]) - np.arange(entry["steps"]) * TICK_NS
        assert late.min() >= 0 and abs(late.max() / 1e6 - fault["late_ms_max"]) < 0.002
        assert 20 <= fault["late_ms_max"] <= 45 and np.diff(late).std() > 5e6  # intervals off by ms


def test_dropped_steps_leave_gaps(sample):
    out, manifest = sample
    for fault, entry in _faults(manifest, "dropped_steps"):
        scripted = build_episode(SEED, entry["index"], cameras={}).steps
        assert entry["steps"] == scripted - len(fault["steps"]) and 2 <= len(fault["steps"])
        topics = _bag(out, entry)
        ticks = np.round(_tick_offsets_ns(topics, entry["index"]) / TICK_NS).astype(int)
        assert ticks.tolist() == sorted(set(range(scripted)) - set(fault["steps"]))
        assert len(topics["/teleop/gripper"]) == entry["steps"]
        assert (np.diff(ticks) >= 2).sum() >= 2  # at least two gaps over 1.5x the nominal interval


def test_unfaulted_episodes_are_the_plain_build(sample):
    """The closed-loop environment draws its scenes from build_episode: faults never reach it."""
    out, manifest = sample
    for entry in [e for e in manifest["episodes"] if e["fault"] is None][:4]:
        np.testing.assert_array_equal(_recorded(out, entry)["actions"],
                                      build_episode(SEED, entry["index"], cameras={}).actions)


def test_shares_are_honoured():
    shares = {"idle": 0.1, "gripper_chatter": 0.05, "frozen_camera": 0.05, "failed_demo": 0.05,
              "duplicate_episode": 0.02, "timestamp_jitter": 0.2, "dropped_steps": 0.1}
    episodes, bag_fraction = 400, 0.25
    units = plan_units(episodes, 7, bag_fraction, None, shares, list(TINY))
    counts = collections.Counter((u.container, f.kind) for u in units for f in u.faults if f)
    sizes = collections.Counter(u.container for u in units for _ in u.indices)
    for kind, share in shares.items():
        for container in ("hdf5", "mcap"):
            expected = 0 if container == "hdf5" and kind in BAG_ONLY else share * sizes[container]
            assert expected - 3 <= counts[container, kind] <= expected + 2, (kind, container, counts)
    # a kind at 0 or left out gets none; an episode's fault does not depend on how many there are
    fewer = plan_faults(7, 40, lambda i: is_bag(i, bag_fraction), None, {**shares, "idle": 0.0}, list(TINY))
    assert "idle" not in {f.kind for f in fewer.values()}
    behaviour = lambda n: {i: f for i, f in plan_faults(  # noqa: E731
        7, n, lambda i: is_bag(i, bag_fraction), None, shares, list(TINY)).items() if f.kind in BEHAVIOUR_KINDS}
    small = behaviour(40)
    assert small and small == {i: f for i, f in behaviour(400).items() if i < 40}


def test_default_demo_sample_has_a_few_of_each():
    """`robolake sample --episodes 200 --bag-fraction 0.2` (make demo, dvc.yaml)."""
    units = plan_units(200, 0, 0.2, None, DEFAULT_SHARES, ["front", "wrist"])
    counts = collections.Counter((u.container, f.kind) for u in units for f in u.faults if f)
    for kind in BEHAVIOUR_KINDS:
        assert 1 <= counts["mcap", kind] <= 4
        assert counts["hdf5", kind] == 0 if kind in BAG_ONLY else 3 <= counts["hdf5", kind] <= 8
    assert counts["hdf5", "nan_action"] == 1 and counts["hdf5", "truncated_file"] == 2
    assert counts["hdf5", "action_spike"] + counts["mcap", "action_spike"] == 3


def test_identity_sample_holds_every_kind():
    """tests/test_sample_identity.py keeps every fault's bytes the same on every machine."""
    units = plan_units(CONFIG["episodes"], CONFIG["seed"], CONFIG["bag_fraction"], None, CONFIG["fault_shares"],
                       list(CONFIG["cameras"]))
    kinds = {f.kind for u in units for f in u.faults if f}
    assert kinds >= set(BEHAVIOUR_KINDS) | {"truncated_file", "nan_action", "action_spike"}


def test_workers_write_the_same_faulty_bytes(tmp_path):
    kwargs = dict(episodes=10, seed=2, bag_fraction=0.5, cameras={"front": (24, 32)}, fault_shares=SHARES)
    manifest = write_sample(str(tmp_path / "one"), **kwargs)
    write_sample(str(tmp_path / "two"), workers=2, **kwargs)
    assert len({f["kind"] for f in manifest["faults"]} & set(BEHAVIOUR_KINDS)) >= 3
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


def test_cli_fault_shares(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "write_sample", lambda *a, **k: calls.append(k) or {"episodes": [], "faults": []})
    cli.run([str(tmp_path / "a"), "--fault-share", "idle=0.2", "--fault-share", "dropped_steps=0"])
    assert calls[-1]["fault_shares"] == {**DEFAULT_SHARES, "idle": 0.2, "dropped_steps": 0.0}
    assert calls[-1]["faults"] is True
    with pytest.raises(RobolakeError, match="KIND=SHARE"):
        cli.run([str(tmp_path / "b"), "--fault-share", "idle"])
    monkeypatch.undo()
    for bad, message in (({"stuck": 0.1}, "unknown fault kind stuck"), ({"idle": 1.5}, r"within \[0, 1\]"),
                         ({"idle": 0.6, "failed_demo": 0.6}, "add up to 1.2")):
        with pytest.raises(RobolakeError, match=message):
            write_sample(str(tmp_path / "c"), episodes=8, steps=3, cameras=TINY, fault_shares=bad)


def test_no_faults_gives_none(tmp_path):
    cli.run([str(tmp_path / "out"), "--episodes", "8", "--steps", "3", "--no-faults", "--fault-share", "idle=1"])
    manifest = json.loads((tmp_path / "out" / "sample_manifest.json").read_text())
    assert manifest["faults"] == [] and manifest["fault_shares"] is None and manifest["inject_faults"] is False
    assert all(e["fault"] is None and e["steps"] == 3 for e in manifest["episodes"])
