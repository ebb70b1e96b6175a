"""The episode-behaviour gate checks, the coverage report's "Episode quality" section and
`robolake summary`'s flagged episodes: synthetic robomimic episodes with planted faults
(idle head, gripper chatter, black frames, a frozen camera, a duplicate, a stuck
dimension) are flagged by the right checks with their ids and values; a clean dataset
passes; per-dataset thresholds and severities take effect; a version built before the
episode_quality table skips the checks; the report's drop command, run as printed, drops
exactly the flagged episodes."""

from __future__ import annotations

import html
import json
import shlex
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from cli.main import main
from cli.summary import summarize
from robolake import lake_views
from robolake.lake import Lake
from robolake.sample import write_robomimic_dataset
from tests.helpers import CAMERAS, robomimic_spec, run_convert
from validation.gate import CONFIG, load_config, run_gate
from validation.quality_flags import CHECK_NAMES, NOT_BUILT

NAME, VERSION = "synthetic_tabletop", "1.0.0"
IDLE, CHATTER, BLACK, FROZEN_CAMERA = ("tabletop_000/data/demo_1", "tabletop_000/data/demo_2",
                                       "tabletop_000/data/demo_3", "tabletop_001/data/demo_1")
ORIGINAL, DUPLICATE, STUCK = "tabletop_001/data/demo_2", "tabletop_001/data/demo_3", "tabletop_002/data/demo_1"
SPIKE = "tabletop_002/data/demo_2"


def plant_faults(raw: Path) -> None:
    """Edit the written sessions' arrays: one fault per episode named above."""
    with h5py.File(raw / "tabletop_000.hdf5", "a") as h5:
        h5["data/demo_1/actions"][:15, :6] = 0.0  # held still for 1.5 s: an idle head (and frozen actions)
        gripper = h5["data/demo_2/actions"][:, 6]
        gripper[10:20] = np.where(np.arange(10) % 2, 1.0, -1.0)  # toggles every step for 1 s
        h5["data/demo_2/actions"][:, 6] = gripper
        h5["data/demo_3/obs/front_image"][5:10] = 0  # 5 black frames
    with h5py.File(raw / "tabletop_001.hdf5", "a") as h5:
        wrist = h5["data/demo_1/obs/wrist_image"]
        wrist[10:22] = wrist[10]  # the wrist camera frozen for 12 frames (1.2 s)
        h5["data/demo_3/actions"][...] = h5["data/demo_2/actions"][...]  # a duplicate
    with h5py.File(raw / "tabletop_002.hdf5", "a") as h5:
        h5["data/demo_1/actions"][:, 2] = 0.01  # dz never changes here, while it moves everywhere else
        h5["data/demo_2/actions"][20, 0] += 0.3  # one step away and straight back: a spike


@pytest.fixture(scope="module")
def planted_lake(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("planted_raw")
    write_robomimic_dataset(str(raw), episodes=12, steps=40, seed=7, per_file=4, cameras=CAMERAS)
    plant_faults(raw)
    lake = tmp_path_factory.mktemp("planted") / "lake"
    run_convert(robomimic_spec(raw), lake)
    return lake


@pytest.fixture
def lake(planted_lake, tmp_path) -> Path:
    """A copy of the planted lake that one test may change."""
    copy = tmp_path / "lake"
    shutil.copytree(planted_lake, copy)
    return copy


def quality(lake: Path) -> dict[str, dict]:
    """episode_quality rows by episode id."""
    con = lake_views.connect(Lake(str(lake)), NAME, VERSION)
    frame = con.execute("SELECT * FROM episode_quality").df()
    return {row["episode_id"]: row for row in frame.to_dict("records")}


def behaviour_outcomes(lake: Path, config: dict | None = None) -> tuple[dict, dict]:
    """The behaviour checks' failed outcomes (each of its expectations) and skip reasons by check name."""
    lake_ = Lake(str(lake))
    outcomes, skipped = run_gate(lake_, lake_.resolve(NAME), config or load_config(NAME))
    failed = {}
    for outcome in outcomes:
        if not outcome.success and outcome.check in CHECK_NAMES:
            failed.setdefault(outcome.check, []).append(outcome)
    return failed, {c.name: c.skipped for c in skipped if c.name in CHECK_NAMES}


def examples(outcomes: list) -> list[str]:
    """A check's examples over its failed expectations, in order."""
    return list(dict.fromkeys(e for o in outcomes for e in o.examples))


def test_planted_faults_are_flagged_by_their_checks_with_ids_and_values(planted_lake):
    rows = quality(planted_lake)
    failed, skipped = behaviour_outcomes(planted_lake)
    assert {name: examples(o) for name, o in failed.items()} == {
        "idle_episodes": [f"{IDLE} (idle head {rows[IDLE]['idle_head_s']:.1f} s)"],
        "frozen_actions": [f"{IDLE} (actions frozen 1.5 s)"],
        "action_spikes": [f"{SPIKE} (1 spike steps)"],  # the idle head's start of motion is none
        "gripper_chatter": [f"{CHATTER} ({rows[CHATTER]['gripper_toggles_per_s']:.2f} toggles/s, "
                            f"{rows[CHATTER]['gripper_reversals']} reversals)"],
        "camera_exposure": [f"{BLACK} (front 5 black frames)"],
        "camera_freeze": [f"{FROZEN_CAMERA} (wrist frozen 1.2 s)"],
        "duplicate_episodes": [f"{DUPLICATE} (= {ORIGINAL})"],
        "stuck_dimensions": [f"{STUCK} (stuck: dz static 100%)"],
    }
    assert rows[IDLE]["idle_head_s"] >= 1.5 and rows[CHATTER]["gripper_reversals"] >= 8
    assert all(o.severity == "warning" and o.unit == "episodes" and o.unexpected == 1
               for outcomes in failed.values() for o in outcomes)
    # robomimic HDF5 records no timestamps: the timing check says so instead of passing
    assert skipped == {"step_timing": "no episode has the metric: the source records no timestamps "
                                      "(steps at the nominal rate)"}


def test_the_cli_warns_without_failing_and_writes_the_values(lake, capsys):
    assert main(["validate", NAME, "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    assert ("WARN gripper_chatter: 1 of 12 episodes break the rule \"gripper toggles at most 1.0/s, at most 0 "
            "reversals within 0.5 s\"") in out
    assert f"e.g. {DUPLICATE} (= {ORIGINAL})" in out
    assert "skip step_timing: no episode has the metric" in out
    details = json.loads((lake / "reports" / NAME / VERSION / "validate_details.json").read_text())
    assert details["passed"] and details["checks"]["camera_freeze.camera_wrist_freeze_s"]["examples"] == [
        f"{FROZEN_CAMERA} (wrist frozen 1.2 s)"]
    assert details["checks"]["camera_freeze.camera_front_freeze_s"]["success"]


def test_a_clean_dataset_passes_every_behaviour_check(tmp_path):
    """Episodes at the sample's own lengths (the 24-step fixture squeezes 3-6 s moves into 2.4 s,
    which makes real spikes)."""
    write_robomimic_dataset(str(tmp_path / "raw"), episodes=10, steps=None, seed=7, per_file=5, cameras=CAMERAS)
    run_convert(robomimic_spec(tmp_path / "raw", episode_length={"min_steps": 2, "max_steps": 100}), tmp_path / "lake")
    failed, skipped = behaviour_outcomes(tmp_path / "lake")
    assert failed == {} and list(skipped) == ["step_timing"]


def test_per_dataset_thresholds_and_severities_take_effect(lake, tmp_path):
    rows = quality(lake)
    ratios = sorted(row["path_length_ratio"] for row in rows.values())
    limit = round(ratios[-4], 3)  # between the 4th and the 3rd largest ratio: 3 episodes over it
    config = yaml.safe_load(CONFIG.read_text())
    config["datasets"] = {NAME: {"severity": {"gripper_chatter": "error"},
                                 "episode_quality": {"path_length_ratio_max": limit}}}
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_config(NAME, path)
    assert settings["episode_quality"]["idle_share_max"] == load_config(NAME)["episode_quality"]["idle_share_max"]
    failed, _ = behaviour_outcomes(lake, settings)
    assert {o.severity for o in failed["gripper_chatter"]} == {"error"}
    over = sorted((row["path_length_ratio"], i) for i, row in rows.items() if row["path_length_ratio"] > limit)
    assert [e.split(" (")[0] for e in examples(failed["path_efficiency"])] == [i for _, i in reversed(over)]
    assert failed["path_efficiency"][0].description == f"end-effector path at most {limit}x its displacement"
    assert main(["validate", NAME, "--lake", str(lake), "--config", str(path)]) == 1  # an error now fails the gate
    config["datasets"][NAME]["episode_quality"] = {"idle_share_maxx": 0.7}
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", NAME, "--lake", str(lake), "--config", str(path)]) == 2


def test_a_version_built_before_the_table_skips_the_checks(lake, capsys):
    shutil.rmtree(Lake(str(lake)).current_build(NAME, VERSION).episode_quality)
    failed, skipped = behaviour_outcomes(lake)
    assert failed == {} and skipped == dict.fromkeys(CHECK_NAMES, NOT_BUILT)
    assert main(["report", NAME, "--lake", str(lake)]) == 0
    document = json.loads((lake / "reports" / NAME / VERSION / "coverage.json").read_text())["episode_quality"]
    assert document["flagged_episodes"] == 0 and document["drop_command"] is None
    assert all(check == {"skipped": NOT_BUILT} for check in document["checks"].values())


FLAGGED = {IDLE, CHATTER, BLACK, FROZEN_CAMERA, DUPLICATE, STUCK, SPIKE}


def test_the_report_section_and_its_drop_command_drop_exactly_the_flagged_episodes(lake, capsys):
    assert main(["report", NAME, "--lake", str(lake)]) == 0
    assert "7 episodes flagged by the behaviour checks" in capsys.readouterr().out
    reports = lake / "reports" / NAME / VERSION
    document = json.loads((reports / "coverage.json").read_text())["episode_quality"]
    assert document["flagged_episodes"] == len(FLAGGED)
    assert document["checks"]["gripper_chatter"]["episodes"][0].startswith(f"{CHATTER} (")
    assert document["checks"]["stuck_dimensions"]["episodes"] == [f"{STUCK} (stuck: dz static 100%)"]
    page = (reports / "coverage.html").read_text()
    section = page.split('<section id="quality">')[1].split("</section>")[0]
    assert section.count("contact sheet\"><image") == 8  # one per check that flags an episode (8 checks here)
    assert "data:image/jpeg;base64," in section and "src=" not in page
    command = document["drop_command"]
    assert f"<code>{html.escape(command)}</code>" in section
    argv = shlex.split(command)
    assert argv[:3] == ["robolake", "edit", "drop"] and "gripper_reversals > 0" in command
    assert main(argv[1:]) == 0
    con = lake_views.connect(Lake(str(lake)), NAME, "1.1.0")
    kept = {row[0] for row in con.execute("SELECT episode_id FROM episodes").fetchall()}
    assert kept == set(quality(lake)) - FLAGGED


def test_summary_lists_the_flagged_episodes_per_check(lake):
    assert main(["report", NAME, "--lake", str(lake)]) == 0
    lines = summarize(Lake(str(lake))).splitlines()
    start = lines.index(next(line for line in lines if "behaviour check" in line))
    rows = [line.removeprefix(f"{NAME}:{VERSION}").split(maxsplit=2) for line in lines[start + 1:start + 9]]
    assert {check: (count, ids) for check, count, ids in rows} == {
        "idle_episodes": ("1", IDLE), "frozen_actions": ("1", IDLE), "action_spikes": ("1", SPIKE),
        "gripper_chatter": ("1", CHATTER), "camera_exposure": ("1", BLACK), "camera_freeze": ("1", FROZEN_CAMERA),
        "duplicate_episodes": ("1", DUPLICATE), "stuck_dimensions": ("1", STUCK)}
    assert lines[start + 1].startswith(f"{NAME}:{VERSION}") and lines[start + 9] == ""


def test_each_flagged_check_gives_the_view_command_of_its_episodes(lake, capsys, monkeypatch, tmp_path):
    """coverage.html and coverage.json give, per check, the `robolake view` command of the episodes
    shown; run as printed (from any folder), it writes their Rerun recording."""
    assert main(["report", NAME, "--lake", str(lake)]) == 0
    reports = lake / "reports" / NAME / VERSION
    command = json.loads((reports / "coverage.json").read_text())["episode_quality"]["checks"]["gripper_chatter"][
        "view_command"]
    assert f"<code>{html.escape(command)}</code>" in (reports / "coverage.html").read_text()
    argv = shlex.split(command)
    assert argv[:2] == ["robolake", "view"] and argv[argv.index("--episode") + 1] == CHATTER
    monkeypatch.chdir(tmp_path)
    assert main(argv[1:]) == 0
    assert (tmp_path / "gripper_chatter.rrd").stat().st_size > 0
