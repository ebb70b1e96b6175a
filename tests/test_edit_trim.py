"""`robolake edit trim`: a new version whose episodes have their idle heads and tails cut
(idle as robolake/episode_quality.py defines it); steps, frames, flags, statistics,
metadata and quality rows follow the kept steps, and the provenance lists every cut."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cli.main import main
from pipelines.rlds_source import EpisodeFeatures, load_builder
from pipelines.tfrecord import tfrecords
from robolake import episode_quality, lake_views
from robolake.lake import Lake
from robolake.sample import write_robomimic_dataset
from robolake.spec import DEFAULT_ACTION_NAMES
from robolake.storage import read_json
from tests.helpers import CAMERAS, load_split, quarantine_records, robomimic_spec, run_convert

NAME, RATE, STEPS = "synthetic_tabletop", 10, 40
KEEP_S, MIN_IDLE_S = 0.3, 0.5  # the edit's flags: 3 steps of margin, idle runs of 5 steps or more cut
MOTION = slice(0, 6)  # dx..dyaw; the gripper command is left as recorded
# (file, demo) -> idle steps planted at the head and at the tail; None: idle throughout
PLANTED = {("tabletop_000", "demo_1"): (8, 6), ("tabletop_000", "demo_2"): (12, 0),
           ("tabletop_001", "demo_1"): None}
CLEAN = ("tabletop_001", "demo_3")
ACTION_METRICS = ("idle_share", "idle_head_s", "idle_tail_s", "frozen_action_steps", "spike_steps", "jerk",
                  "gripper_toggles_per_s", "action_fingerprint", "chunk_length_steps")


def plant_idle(path: Path, demo: str, head: int, tail: int) -> None:
    """Zero the motion commands of the first `head` and last `tail` steps and hold the
    robot's state there (the frames are left as they were, so each step's frame stays its own)."""
    with h5py.File(path, "r+") as h5:
        group = h5[f"data/{demo}"]
        actions = group["actions"][()]
        actions[:head, MOTION] = 0.0
        actions[len(actions) - tail:, MOTION] = 0.0
        group["actions"][...] = actions
        for key in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos"):
            state = group[f"obs/{key}"][()]
            state[:head] = state[min(head, len(state) - 1)]
            state[len(state) - tail:] = state[len(state) - tail - 1]
            group[f"obs/{key}"][...] = state


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    """Six 40-step episodes in two files, three of them with planted idle, converted as
    1.0.0 and trimmed into 1.1.0."""
    raw = tmp_path_factory.mktemp("trim_raw")
    write_robomimic_dataset(str(raw), episodes=6, steps=STEPS, seed=7, per_file=3, cameras=CAMERAS)
    for (file, demo), planted in PLANTED.items():
        plant_idle(raw / f"{file}.hdf5", demo, *(planted or (STEPS, 0)))
    root = tmp_path_factory.mktemp("trim_lake")
    run_convert(robomimic_spec(raw, filters={"zscore": None, "jump": None}), root)
    assert main(["edit", "trim", f"{NAME}:1.0.0", "--keep-s", str(KEEP_S), "--min-idle-s", str(MIN_IDLE_S),
                 "--lake", str(root)]) == 0
    return root


def rows(lake: Path, version: str, query: str) -> dict[str, dict]:
    con = lake_views.connect(Lake(str(lake)), NAME, version)
    cursor = con.execute(query)
    names = [d[0] for d in cursor.description]
    return {row["episode_id"]: row for row in (dict(zip(names, values)) for values in cursor.fetchall())}


def episode_id(file: str, demo: str) -> str:
    """The id the HDF5 source gives a robomimic demo."""
    return f"{file}/data/{demo}"


def gold_episodes(lake: Path, version: str) -> dict[str, dict]:
    """Each gold episode's steps as numpy (tfds) and its cameras' stored bytes (read from the TFRecords)."""
    gold = Lake(str(lake)).gold(NAME, version)
    builder = load_builder(gold)
    episodes = {}
    for split in builder.splits:
        for episode in load_split(gold, split):
            episodes[episode["episode_metadata"]["episode_id"]] = episode | {"split": split}
        for path in builder.split_files(split):
            for _, _, record in tfrecords(path):
                features = EpisodeFeatures(record, path, builder)
                frames = {cam: features.strings(f"steps/observation/{cam}", cam) for cam in CAMERAS}
                episodes[features.text("episode_metadata/episode_id", "episode id")]["bytes"] = frames
    return episodes


@pytest.fixture(scope="module")
def trim_section(lake) -> dict:
    manifest = read_json(f"{Lake(str(lake)).gold(NAME, '1.1.0')}/manifest.json")
    return manifest["members"][0]["trim"]


def expected_cut(quality: dict) -> tuple[int, int]:
    """The cut the source's episode_quality row (idle head and tail) and the flags imply."""
    margin = round(KEEP_S * RATE)

    def cut(seconds: float) -> int:
        return max(round(seconds * RATE) - margin, 0) if seconds >= MIN_IDLE_S - 1e-9 else 0

    return cut(quality["idle_head_s"]), cut(quality["idle_tail_s"])


def test_cuts_follow_the_idle_metrics_and_the_planted_idle(lake, trim_section):
    quality = rows(lake, "1.0.0", "SELECT episode_id, idle_head_s, idle_tail_s FROM episode_quality")
    records = {r["episode_id"]: r for r in trim_section["episodes"]}
    edited = rows(lake, "1.1.0", "SELECT episode_id, num_steps FROM episodes")
    for (file, demo), planted in PLANTED.items():
        if planted:
            record = records[episode_id(file, demo)]
            head, tail = planted
            assert record["cut_head"] >= head - round(KEEP_S * RATE)  # the planted idle goes, but the margin
            assert record["cut_tail"] >= (tail - round(KEEP_S * RATE) if tail >= MIN_IDLE_S * RATE else 0)
    trimmed = 0
    for identifier, record in records.items():
        if record["kept"] is None:
            continue
        cut_head, cut_tail = expected_cut(quality[identifier])
        assert (record["steps_in"], record["cut_head"], record["cut_tail"]) == (STEPS, cut_head, cut_tail)
        assert record["kept"] == [cut_head, STEPS - cut_tail]
        assert edited[identifier]["num_steps"] == STEPS - cut_head - cut_tail  # the episodes view follows
        trimmed += bool(cut_head or cut_tail)
    assert trimmed == trim_section["episodes_trimmed"] >= 2
    assert (trim_section["keep_s"], trim_section["min_idle_s"]) == (KEEP_S, MIN_IDLE_S)
    assert trim_section["steps_kept"] == sum(row["num_steps"] for row in edited.values())


def test_kept_steps_keep_their_frames_values_and_flags(lake, trim_section):
    source, edited = gold_episodes(lake, "1.0.0"), gold_episodes(lake, "1.1.0")
    records = {r["episode_id"]: r for r in trim_section["episodes"] if r["kept"] is not None}
    assert set(edited) == set(records)
    for identifier, episode in edited.items():
        start, stop = records[identifier]["kept"]
        original = source[identifier]
        assert episode["split"] == original["split"]
        carried = {k: v for k, v in original["episode_metadata"].items() if not k.startswith("source_")}
        assert {k: episode["episode_metadata"][k] for k in carried} == carried  # id, task, metadata fields
        assert episode["episode_metadata"]["source_path"].startswith(Lake(str(lake)).gold(NAME, "1.0.0"))
        for camera in CAMERAS:  # JPEG and PNG bytes, exactly the source's kept frames
            assert episode["bytes"][camera] == original["bytes"][camera][start:stop]
        steps, kept = episode["steps"], original["steps"][start:stop]
        assert len(steps) == stop - start
        for step, before in zip(steps, kept):
            np.testing.assert_array_equal(step["action_raw"], before["action_raw"])
            np.testing.assert_array_equal(step["observation"]["state"], before["observation"]["state"])
            assert step["language_instruction"] == before["language_instruction"]
        assert [bool(s["is_first"]) for s in steps] == [True] + [False] * (len(steps) - 1)
        assert [bool(s["is_last"]) for s in steps] == [False] * (len(steps) - 1) + [True]
        # the source ends terminal (HDF5 dones) with its reward on the last step: both stay on the last kept step
        assert bool(original["steps"][-1]["is_terminal"]) and original["steps"][-1]["reward"] == 1.0
        assert [bool(s["is_terminal"]) for s in steps] == [False] * (len(steps) - 1) + [True]
        assert steps[-1]["reward"] == 1.0
        assert sum(s["reward"] for s in steps) == pytest.approx(sum(s["reward"] for s in original["steps"]))


def test_timestamps_start_at_zero_and_keep_the_control_rate(lake):
    con = lake_views.connect(Lake(str(lake)), NAME, "1.1.0")
    stamps = con.execute("SELECT episode_id, list(timestamp ORDER BY step_index), list(step_index ORDER BY step_index) "
                         "FROM raw_steps GROUP BY episode_id").fetchall()
    assert stamps
    for _, timestamps, index in stamps:
        np.testing.assert_allclose(timestamps, np.arange(len(index)) / RATE)


def test_statistics_are_those_of_the_kept_train_steps(lake, trim_section):
    source = gold_episodes(lake, "1.0.0")
    records = {r["episode_id"]: r for r in trim_section["episodes"] if r["kept"] is not None}
    actions, state = [], []
    for identifier, record in records.items():
        if source[identifier]["split"] == "train":
            start, stop = record["kept"]
            actions += [s["action_raw"] for s in source[identifier]["steps"][start:stop]]
            state += [s["observation"]["state"] for s in source[identifier]["steps"][start:stop]]
    actions, state = np.array(actions, np.float64), np.array(state, np.float64)
    statistics = read_json(f"{Lake(str(lake)).gold(NAME, '1.1.0')}/dataset_statistics.json")
    assert statistics["num_transitions"] == len(actions)
    for name, values in (("action", actions), ("proprio", state)):
        np.testing.assert_allclose(statistics[name]["mean"], values.mean(axis=0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(statistics[name]["std"], values.std(axis=0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(statistics[name]["min"], values.min(axis=0), rtol=1e-6)
        np.testing.assert_allclose(statistics[name]["max"], values.max(axis=0), rtol=1e-6)


def test_quality_rows_of_trimmed_episodes_are_computed_again(lake, trim_section):
    source = gold_episodes(lake, "1.0.0")
    before = rows(lake, "1.0.0", "SELECT * FROM episode_quality")
    after = rows(lake, "1.1.0", "SELECT * FROM episode_quality")
    for record in trim_section["episodes"]:
        identifier = record["episode_id"]
        if record["kept"] is None:
            assert identifier not in after
        elif record["cut_head"] or record["cut_tail"]:
            start, stop = record["kept"]
            kept = np.array([s["action_raw"] for s in source[identifier]["steps"][start:stop]])
            expected = episode_quality.episode_row(kept, DEFAULT_ACTION_NAMES, np.zeros((len(kept), 1)), None, RATE, {})
            row = after[identifier]
            assert (row["num_steps"], row["duration_s"]) == (stop - start, (stop - start) / RATE)
            for column in ACTION_METRICS:  # from the kept steps, not the member's row
                assert row[column] == pytest.approx(expected[column]), column
            assert row["action_fingerprint"] != before[identifier]["action_fingerprint"]
            assert row["idle_head_s"] < before[identifier]["idle_head_s"]
            for camera in CAMERAS:  # from the kept frames, decoded
                assert row[f"camera_{camera}_freeze_steps"] is not None and row[f"camera_{camera}_reason"] is None
        else:  # untouched: the member's row is carried
            assert after[identifier]["action_fingerprint"] == before[identifier]["action_fingerprint"]
            assert after[identifier]["idle_head_s"] == before[identifier]["idle_head_s"]


def test_a_clean_episode_is_untouched(lake, trim_section):
    identifier = episode_id(*CLEAN)
    [record] = [r for r in trim_section["episodes"] if r["episode_id"] == identifier]
    assert (record["kept"], record["cut_head"], record["cut_tail"], record["reason"]) == ([0, STEPS], 0, 0, None)
    source, edited = gold_episodes(lake, "1.0.0")[identifier], gold_episodes(lake, "1.1.0")[identifier]
    assert edited["bytes"] == source["bytes"]
    np.testing.assert_array_equal([s["action_raw"] for s in edited["steps"]],
                                  [s["action_raw"] for s in source["steps"]])


def test_an_episode_idle_throughout_is_quarantined_with_its_reason(lake, trim_section):
    identifier = episode_id("tabletop_001", "demo_1")
    [record] = [r for r in trim_section["episodes"] if r["episode_id"] == identifier]
    assert (record["kept"], record["steps_in"]) == (None, STEPS) and "idle throughout" in record["reason"]
    assert trim_section["episodes_idle_throughout"] == 1
    [quarantined] = quarantine_records(lake, NAME, "1.1.0")
    assert (quarantined["episode_id"], quarantined["reason_code"]) == (identifier, "idle_throughout")
    assert "idle throughout" in quarantined["reason"]
    manifest = read_json(f"{Lake(str(lake)).gold(NAME, '1.1.0')}/manifest.json")
    assert (manifest["counts"]["episodes_written"], manifest["counts"]["episodes_quarantined"]) == (5, 1)


def test_provenance_and_lineage_show_the_cuts(lake, trim_section, capsys):
    gold = Lake(str(lake)).gold(NAME, "1.1.0")
    provenance = read_json(f"{gold}/provenance.json")
    assert provenance["members"][0]["trim"] == trim_section
    assert main(["lineage", gold]) == 0
    printed = capsys.readouterr().out
    assert (f"trimmed     {NAME}:1.0.0: {trim_section['episodes_trimmed']} of 6 episodes cut, "
            f"{trim_section['steps_kept']} of {6 * STEPS} steps kept, 1 idle throughout (quarantined)") in printed


def test_bad_trim_flags_give_one_clear_error(lake, capsys):
    assert main(["edit", "trim", f"{NAME}:1.0.0", "--version", "9.0.0", "--keep-s", "-1", "--lake", str(lake)]) == 2
    assert "keep_s" in capsys.readouterr().err
    assert Lake(str(lake)).current(NAME, "9.0.0") is None
