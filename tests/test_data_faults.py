"""Quiet data faults that must not pass silently: a bag camera changing resolution
mid-episode, a bag given by its literal path, a spike caught by two filter rules, and
episodes that end without a terminal state (truncated). Issue 30 (items 5 and 8): one
episode that cannot be read never ends the build, and a bag whose clock steps back is
quarantined with the ticks it affects."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from pipelines.alignment import step_back
from pipelines.build import discover_sources
from pipelines.filters import filter_episode
from pipelines.hdf5_source import Hdf5Source
from pipelines.rosbag_source import RosbagSource
from robolake import lake_views
from robolake.lake import Lake
from robolake.sample import write_robomimic_file
from robolake.spec import parse_spec
from tests import bag_factory as bf
from tests.helpers import (
    BAG_NAME as BAGS, BAG_VERSION as VERSION, CAMERAS, bag_spec, load_split, quarantine_records, robolake,
    robomimic_spec, robust_of, run_convert, shared_data, write_bag,
)
from validation.gate import load_config, print_summary, run_gate

TABLETOP = "synthetic_tabletop"
BIGGER = (96, 128)  # the changing camera's frames from 1.5 s on (48x64 before)


def query(lake: Lake, dataset: str, sql: str) -> list[tuple]:
    con = lake_views.connect(lake, dataset, VERSION)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def all_episodes(gold_dir: str, manifest: dict) -> dict[str, dict]:
    return {e["episode_metadata"]["episode_id"]: e
            for split in manifest["counts"]["by_split"] for e in load_split(gold_dir, split)}


def truncation_warning(lake: Lake, dataset: str, capsys) -> tuple[object, str]:
    """The gate's truncated_episodes outcome and the gate's printed summary."""
    outcomes, skipped = run_gate(lake, lake.resolve(dataset), load_config(dataset))
    print_summary(outcomes, skipped)
    return next(o for o in outcomes if o.check == "truncated_episodes"), capsys.readouterr().out


# ---------------------------------------------------------------- a camera changing resolution


@pytest.fixture(scope="module")
def resolution_bags(tmp_path_factory) -> Path:
    """changing.mcap: /cam/rgb frames 48x64, then 96x128 from frame 45 (1.5 s) on;
    steady.mcap: every frame 48x64."""
    folder = tmp_path_factory.mktemp("resolution") / "bags"
    original = bf.frame_rgb
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bf, "frame_rgb", lambda code, shape=bf.FRAME_SHAPE: original(code, BIGGER if code >= 45 else shape))
        write_bag(folder / "changing.mcap", seed=0)  # /cam/jpeg (15 Hz) never reaches frame 45 in 3 s
    write_bag(folder / "steady.mcap", seed=1)
    return folder


def test_a_camera_changing_resolution_quarantines_its_episode_by_default(resolution_bags, tmp_path):
    outcome = run_convert(bag_spec([resolution_bags / "*.mcap"]), tmp_path / "lake")
    rows = query(Lake(str(tmp_path / "lake")), BAGS, "SELECT episode_id, reason_code, reason FROM quarantine")
    assert [row[:2] for row in rows] == [("changing", "resolution_changed")]
    assert re.search(r"changing\.mcap: camera rgb \(/cam/rgb\) changes resolution at step \d+: 48x64 -> 96x128$",
                     rows[0][2]), rows[0][2]
    assert outcome.manifest["quarantine_reasons"] == {"resolution_changed": 1}
    assert outcome.manifest["counts"]["episodes_written"] == 1


def test_flag_writes_the_episode_and_says_which_camera_changed_where(resolution_bags, tmp_path):
    spec = bag_spec([resolution_bags / "*.mcap"], source={"on_resolution_change": "flag"})
    outcome = run_convert(spec, tmp_path / "lake")
    counts = outcome.manifest["counts"]
    assert (counts["episodes_written"], counts["episodes_quarantined"], counts["episodes_resolution_changed"]) == (2, 0, 1)
    rows = dict(query(Lake(str(tmp_path / "lake")), BAGS,
                      "SELECT episode_id, resolution_change FROM episodes ORDER BY episode_id"))
    assert rows["steady"] == ""
    step = int(re.fullmatch(r"camera rgb \(/cam/rgb\) changes resolution at step (\d+): 48x64 -> 96x128",
                            rows["changing"])[1])
    episode = all_episodes(outcome.gold_dir, outcome.manifest)["changing"]
    assert episode["episode_metadata"]["resolution_change"] == rows["changing"]
    frames = [s["observation"]["rgb"] for s in episode["steps"]]
    assert {f.shape for f in frames} == {(64, 64, 3)}  # every frame at the camera's size
    codes = [bf.frame_code(f) for f in frames]
    assert codes[step - 1] < 45 <= codes[step]  # the step named is the first bigger frame


def test_a_bag_ends_truncated_unless_the_spec_says_its_last_step_is_terminal(resolution_bags, tmp_path):
    for terminal, truncated in (("from_source", True), ("last_step", False)):
        spec = bag_spec([resolution_bags / "steady.mcap"], source={"terminal": terminal})
        outcome = run_convert(spec, tmp_path / terminal)
        steps = all_episodes(outcome.gold_dir, outcome.manifest)["steady"]["steps"]
        assert [s["is_last"] for s in steps] == [False] * (len(steps) - 1) + [True]
        assert [s["is_terminal"] for s in steps] == [False] * (len(steps) - 1) + [not truncated]
        assert outcome.manifest["counts"]["episodes_truncated"] == int(truncated)


# ---------------------------------------------------------------- literal paths


def test_a_bag_given_by_its_literal_path_is_named_after_it(tmp_path, monkeypatch):
    write_bag(tmp_path / "bags/kitchen_run.mcap", seed=0)
    write_bag(tmp_path / "bags/folder_run", seed=1)  # a ROS 2 bag folder
    literal = [tmp_path / "bags/kitchen_run.mcap", f"{tmp_path / 'bags/folder_run'}/"]
    outcome = run_convert(bag_spec(literal), tmp_path / "lake")
    assert sorted(all_episodes(outcome.gold_dir, outcome.manifest)) == ["folder_run", "kitchen_run"]
    monkeypatch.chdir(tmp_path / "bags/folder_run")
    spec = parse_spec(bag_spec(["."]))
    assert [s.relative_id for s in discover_sources(spec, RosbagSource(spec), {})] == ["folder_run"]


def test_an_hdf5_file_given_by_its_literal_path_is_named_after_it(robomimic_raw):
    spec = parse_spec(robomimic_spec(robomimic_raw, source={"paths": [str(robomimic_raw / "tabletop_001.hdf5")]}))
    assert [s.relative_id for s in discover_sources(spec, Hdf5Source(spec), {})] == ["tabletop_001"]


# ---------------------------------------------------------------- a spike caught by two rules


def test_an_item_flagged_by_a_clip_and_a_drop_rule_is_one_dropped_item():
    spec = parse_spec(robomimic_spec(Path("raw"), filters={
        "bounds": {"max": [1.0, 1.0, 0.05, 1.0, 1.0, 1.0, None], "policy": "clip"},
        "zscore": {"threshold": 8.0, "policy": "drop_step"}, "jump": None}))
    rng = np.random.default_rng(0)
    actions = rng.normal(0, 0.01, (40, 7))
    robust = robust_of(actions)
    actions[10, 0] = 5.0  # both rules
    actions[20, 1], actions[20, 2] = 5.0, 0.06  # dy: both rules; dz: over its bound only, in a dropped step
    result = filter_episode(actions, spec, robust)
    assert {(f.step, f.dim, f.rule) for f in result.flags} >= {(10, 0, "bounds"), (10, 0, "zscore")}
    assert [(f.step, f.dim, f.rule, f.policy) for f in result.taken] == [
        (10, 0, "zscore", "drop_step"), (20, 1, "zscore", "drop_step"), (20, 2, "bounds", "drop_step")]
    assert result.keep.sum() == 38


@pytest.fixture(scope="module")
def spiked_raw(robomimic_raw, tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("double_spike")
    for path in robomimic_raw.glob("*.hdf5"):
        shutil.copy(path, raw / path.name)
    with h5py.File(raw / "tabletop_000.hdf5", "r+") as h5:
        h5["data/demo_1/actions"][3, 0] = 5.0  # far outside the data: over the bound and the z-score limit
    return raw


def test_a_spike_caught_by_the_clip_and_the_drop_rule_is_reported_once_as_dropped(spiked_raw, tmp_path):
    rules = {"bounds": {"max": [1.0] * 6 + [None], "policy": "clip"},
             "zscore": {"threshold": 8.0, "policy": "drop_step"}, "jump": None}
    outcome = run_convert(robomimic_spec(spiked_raw, filters=rules), tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    spike = query(lake, TABLETOP, "SELECT rule, policy, replacement FROM filtered "
                                  "WHERE episode_id = 'tabletop_000/data/demo_1' AND step_index = 3 AND dimension = 'dx'")
    assert spike == [("zscore", "drop_step", None)]
    assert query(lake, TABLETOP, "SELECT episode_id, step_index, dimension FROM filtered GROUP BY ALL "
                                 "HAVING count(*) > 1") == []
    (items,) = query(lake, TABLETOP, "SELECT count(*) FROM filtered")[0]
    assert outcome.manifest["filter"]["items_flagged"] == items
    (dropped,) = query(lake, TABLETOP, "SELECT count(DISTINCT step_index) FROM filtered WHERE "
                                       "episode_id = 'tabletop_000/data/demo_1' AND policy = 'drop_step'")[0]
    steps = all_episodes(outcome.gold_dir, outcome.manifest)["tabletop_000/data/demo_1"]["steps"]
    assert len(steps) == 24 - dropped and max(abs(s["action_raw"][0]) for s in steps) < 1.0


# ---------------------------------------------------------------- episodes without a terminal state


@pytest.fixture(scope="module")
def half_done_raw(robomimic_raw, tmp_path_factory) -> Path:
    """The session's robomimic files, tabletop_001.hdf5 without its `dones` datasets."""
    raw = tmp_path_factory.mktemp("half_done")
    for path in robomimic_raw.glob("*.hdf5"):
        shutil.copy(path, raw / path.name)
    with h5py.File(raw / "tabletop_001.hdf5", "r+") as h5:
        for demo in h5["data"].values():
            del demo["dones"]
    return raw


@pytest.fixture(scope="module")
def half_done_build(half_done_raw, tmp_path_factory):
    lake_dir = tmp_path_factory.mktemp("half_done_lake")
    outcome = run_convert(robomimic_spec(half_done_raw, splits={"fractions": {"train": 1.0}}), lake_dir)
    return Lake(str(lake_dir)), outcome


def test_hdf5_dones_make_the_last_step_terminal_and_their_absence_a_truncation(half_done_build, half_done_raw,
                                                                              capsys):
    lake, outcome = half_done_build
    episodes = all_episodes(outcome.gold_dir, outcome.manifest)
    cut = sorted(i for i in episodes if i.startswith("tabletop_001/"))
    assert len(cut) == 4 and len(episodes) == 10
    for episode_id, episode in episodes.items():
        steps, truncated = episode["steps"], episode_id in cut
        assert [s["is_last"] for s in steps] == [False] * (len(steps) - 1) + [True]
        assert [s["is_terminal"] for s in steps] == [False] * (len(steps) - 1) + [not truncated]
        assert episode["episode_metadata"]["truncated"] == truncated
    assert outcome.manifest["counts"]["episodes_truncated"] == 4
    assert "4 truncated (no terminal state)" in outcome.summary_line()
    metrics = json.loads(Path(lake.reports(TABLETOP, VERSION), "convert.json").read_text())
    assert metrics["episodes_truncated"] == 4
    assert query(lake, TABLETOP, "SELECT episode_id FROM episodes WHERE truncated ORDER BY ALL") == [(i,) for i in cut]
    warning, printed = truncation_warning(lake, TABLETOP, capsys)
    assert (warning.severity, warning.success, warning.unexpected, warning.elements) == ("warning", False, 4, 10)
    assert warning.examples == cut
    assert ('WARN truncated_episodes: 4 of 10 episodes break the rule "episodes end in a terminal state '
            '(is_terminal on the last step)"') in printed  # the finding, then the rule


def test_every_episode_ends_terminal_when_the_spec_says_so(half_done_raw, tmp_path):
    spec = robomimic_spec(half_done_raw, source={"terminal": "last_step"}, splits={"fractions": {"train": 1.0}})
    outcome = run_convert(spec, tmp_path / "lake")
    assert outcome.manifest["counts"]["episodes_truncated"] == 0
    assert all(e["steps"][-1]["is_terminal"] for e in all_episodes(outcome.gold_dir, outcome.manifest).values())


def test_an_rlds_source_keeps_its_episodes_terminal_or_truncated(half_done_build, tmp_path):
    _, member = half_done_build
    spec = {
        "name": "roundtrip", "version": VERSION, "source": {"format": "rlds", "paths": [member.gold_dir]},
        "control_rate_hz": 10, "cameras": [{"name": "front", "size": [64, 64]}],
        "action": {"keys": ["steps/action_raw"]}, "instruction": {"feature": "steps/language_instruction"},
        "metadata": {"origin": {"feature": "episode_metadata/episode_id"}},
        "episode_length": {"min_steps": 5}, "splits": {"fractions": {"train": 1.0}},
    }
    outcome = run_convert(spec, tmp_path / "lake")
    episodes = all_episodes(outcome.gold_dir, outcome.manifest).values()
    assert {e["episode_metadata"]["origin"]: e["episode_metadata"]["truncated"] for e in episodes} == {
        i: i.startswith("tabletop_001/") for i in all_episodes(member.gold_dir, member.manifest)}
    assert outcome.manifest["counts"]["episodes_truncated"] == 4


def test_the_bridge_debug_subset_comes_out_truncated_not_terminal(tmp_path, capsys):
    folder = shared_data("rlds_octo_bridge_debug") / "bridge_dataset" / "1.0.0"
    spec = yaml.safe_load((Path(__file__).parents[1] / "datasets" / "bridge_debug.yaml").read_text())
    spec["source"] |= {"paths": [str(folder)], "splits": ["train"]}
    spec["cameras"] = [{"name": "primary", "key": "steps/observation/image_0", "size": [64, 64]}]
    outcome = run_convert(spec, tmp_path / "lake")
    episodes = all_episodes(outcome.gold_dir, outcome.manifest)
    assert len(episodes) == 25 and outcome.manifest["counts"]["episodes_truncated"] == 25
    for episode in episodes.values():
        steps = episode["steps"]
        assert [s["is_last"] for s in steps] == [False] * 9 + [True]
        assert not any(s["is_terminal"] for s in steps) and episode["episode_metadata"]["truncated"]
    warning, printed = truncation_warning(Lake(str(tmp_path / "lake")), "bridge_debug", capsys)
    assert (warning.success, warning.unexpected, len(warning.examples)) == (False, 25, 5)
    assert warning.examples == sorted(episodes)[:5] and "25 of 25" in printed


# ---------------------------------------------------------------- issue 30 items 5 and 8: convert as a user runs it
# What a user sees is run as `python -m cli.main convert`: the exit code, no traceback, and what the lake
# then holds (the quarantine with its reasons, the episodes written).

STEPS = 12


def convert(spec: dict, folder: Path, *beam_args: str) -> subprocess.CompletedProcess:
    """`robolake convert` of `spec` into folder/lake as a user runs it; it must end well, without a traceback."""
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = robolake("convert", str(path), "--lake", str(folder / "lake"), *beam_args)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def lake_outcome(lake_dir: Path, name: str, version: str) -> tuple[dict, dict[str, dict], list[str]]:
    """The published build's manifest, its quarantine by episode id and the episode ids it wrote."""
    lake = Lake(str(lake_dir))
    manifest = json.loads(Path(lake.current_build(name, version).gold, "manifest.json").read_text())
    quarantined = {row["episode_id"]: row for row in quarantine_records(lake_dir, name, version)}
    with lake_views.connect(lake, name, version) as con:
        written = [row[0] for row in con.sql("SELECT episode_id FROM episodes ORDER BY ALL").fetchall()]
    return manifest, quarantined, written


# ---------------------------------------------------------------- issue 30 item 8: one bad episode never sinks a build


def robomimic_file(path: Path, break_demo_2=None) -> Path:
    """A robomimic file of three short episodes (demo_1 to demo_3), demo_2 broken by `break_demo_2(group)`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_robomimic_file(str(path), episodes=3, steps=STEPS, seed=5, cameras=CAMERAS)
    if break_demo_2 is not None:
        with h5py.File(path, "r+") as h5:
            break_demo_2(h5["data/demo_2"])
    return path


def replace(group: h5py.Group, key: str, data: np.ndarray) -> None:
    del group[key]
    group[key] = data


def hdf5_spec(raw: Path) -> dict:
    return robomimic_spec(raw, episode_length={"min_steps": 5}, splits={"fractions": {"train": 1.0}})


def test_an_episode_of_0x0_images_is_quarantined_as_bad_shape_and_the_others_written(tmp_path):
    robomimic_file(tmp_path / "raw/session.hdf5",
                   lambda demo: replace(demo, "obs/wrist_image", np.zeros((STEPS, 0, 0, 3), np.uint8)))
    convert(hdf5_spec(tmp_path / "raw"), tmp_path)
    manifest, quarantined, written = lake_outcome(tmp_path / "lake", TABLETOP, VERSION)
    assert written == ["session/data/demo_1", "session/data/demo_3"]
    assert list(quarantined) == ["session/data/demo_2"]
    assert quarantined["session/data/demo_2"]["reason_code"] == "bad_shape"
    assert quarantined["session/data/demo_2"]["reason"] == "camera 'wrist': the frame at step 0 is 0x0 pixels"
    assert manifest["quarantine_reasons"] == {"bad_shape": 1}
    assert (manifest["counts"]["episodes_found"], manifest["counts"]["episodes_written"]) == (3, 2)


def test_an_episode_whose_reading_raises_is_quarantined_with_the_exception(tmp_path):
    # a scalar `actions` dataset: h5py raises TypeError as the episode's length is read
    robomimic_file(tmp_path / "raw/session.hdf5", lambda demo: replace(demo, "actions", np.float32(0.5)))
    convert(hdf5_spec(tmp_path / "raw"), tmp_path)
    manifest, quarantined, written = lake_outcome(tmp_path / "lake", TABLETOP, VERSION)
    assert written == ["session/data/demo_1", "session/data/demo_3"]
    record = quarantined["session/data/demo_2"]
    assert record["reason_code"] == "read_error"
    assert record["reason"] == (f"reading episode session/data/demo_2 of {tmp_path / 'raw/session.hdf5'}: "
                                f"TypeError: Attempt to take len() of scalar dataset")
    assert manifest["quarantine_reasons"] == {"read_error": 1}


@pytest.mark.parametrize("stage", ["read", "plan"])
def test_any_exception_of_a_source_quarantines_what_it_was_reading(stage, tmp_path, monkeypatch):
    """A bug in a source (any exception, not only the ones it expects) costs the episode, or
    the rest of the file being listed, not the build; its type and text are in the quarantine."""
    for name in ("a", "b"):
        robomimic_file(tmp_path / f"raw/{name}.hdf5")
    original = getattr(Hdf5Source, stage)

    def read(self, ref, *args):
        if ref.episode_id == "b/data/demo_2":
            raise ZeroDivisionError("a bug in read")
        return original(self, ref, *args)

    def plan(self, path, relative_id, sha256):
        for number, item in enumerate(original(self, path, relative_id, sha256)):
            if relative_id == "b" and number == 1:
                raise ZeroDivisionError("a bug in plan")
            yield item

    monkeypatch.setattr(Hdf5Source, stage, {"read": read, "plan": plan}[stage])
    build = run_convert(hdf5_spec(tmp_path / "raw"), tmp_path / "lake")
    manifest, quarantined, written = lake_outcome(tmp_path / "lake", TABLETOP, VERSION)
    # read: the episode is quarantined; plan: the rest of its file (from demo_2 on), under the file's id
    episode, kept = {"read": ("b/data/demo_2", ["b/data/demo_1", "b/data/demo_3"]),
                     "plan": ("b", ["b/data/demo_1"])}[stage]
    assert written == [f"a/data/demo_{i}" for i in (1, 2, 3)] + kept
    assert [(i, r["reason_code"]) for i, r in quarantined.items()] == [(episode, "read_error")]
    assert quarantined[episode]["reason"] == (f"reading episode {episode} of {tmp_path / 'raw/b.hdf5'}: "
                                              f"ZeroDivisionError: a bug in {stage}")
    counts = manifest["counts"]
    assert counts["episodes_found"] == counts["episodes_written"] + counts["episodes_quarantined"] == len(kept) + 4
    assert build.manifest["quarantine_reasons"] == {"read_error": 1}


# ---------------------------------------------------------------- issue 30 item 5: a bag whose clock steps back


def test_step_back_counts_the_ticks_where_messages_before_and_after_a_step_overlap():
    stamps = np.array([0, 10, 20, 30, 15, 25, 35, 45])  # the clock steps back 15 after 30
    back = step_back(stamps, np.arange(0, 50, 5))
    assert (back.index, back.from_ns, back.to_ns, back.steps) == (4, 30, 15, 1)
    assert back.ticks == 4  # 15, 20, 25, 30: messages stamped before and after the step share [15, 30]
    assert step_back(np.array([0, 10, 10, 20]), np.arange(0, 25, 5)) is None


def test_a_bag_whose_reference_clock_steps_back_is_quarantined_with_the_ticks_it_affects(tmp_path):
    write_bag(tmp_path / "bags/steady.mcap", seed=1)
    bag = write_bag(tmp_path / "bags/stepped.mcap", seed=2, clock_step=(bf.CMD, 1.5, 0.25))
    convert(bag_spec([tmp_path / "bags/*.mcap"], source={"reference_topic": bf.CMD}), tmp_path)
    manifest, quarantined, written = lake_outcome(tmp_path / "lake", BAGS, VERSION)
    assert written == ["steady"] and list(quarantined) == ["stepped"]
    assert quarantined["stepped"]["reason_code"] == "stamps_backwards"
    assert manifest["quarantine_reasons"] == {"stamps_backwards": 1}
    stamps = bag[bf.CMD].stamps
    first = int(np.flatnonzero(np.diff(stamps) < 0)[0]) + 1
    overlapping = int(((stamps >= stamps[first]) & (stamps <= stamps[first - 1])).sum())  # the ticks are /cmd's stamps
    reason = quarantined["stepped"]["reason"]
    assert reason.startswith(f"{tmp_path / 'bags/stepped.mcap'}: the stamps of /cmd go backwards at 1 of its "
                             f"{len(stamps)} messages, first at message {first}: "
                             f"{stamps[first - 1]} -> {stamps[first]} ns ("), reason
    assert re.search(rf"; {overlapping} of \d+ ticks fall where messages from before and after overlap$",
                     reason), reason
    assert overlapping >= 3
