"""robolake's episode-quality checks side by side with lerobot-doctor 0.2.0 (issue 32, item 7):
a sample with raised behaviour-fault shares, each half converted with the demo's spec and
exported with `robolake lerobot`; lerobot-doctor runs on each export (offline, a local folder)
in the venv tests/peers/lerobot_venv.sh builds. Every seeded fault whose episode lerobot-doctor
names must be flagged by robolake's gate checks (validation/quality_flags.py). Skips, saying
why, where that venv or lerobot-doctor in it is absent. docs/quality.md has the table."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cli.main import main
from pipelines.build import convert
from robolake.lake import Lake
from robolake.lake_views import connect_version
from robolake.sample import write_sample
from robolake.spec import load_spec
from tests.test_lerobot_peer import MARKER, VENV
from tests.test_sample_faults import BAG_FRACTION, EPISODES, SEED, SHARES, TINY
from validation.gate import load_config
from validation.quality_flags import quality_flags, quality_rows

DOCTOR = VENV / "bin" / "lerobot-doctor"
DATASETS = Path(__file__).resolve().parents[1] / "datasets"
HALVES = {"sample_tabletop": "hdf5/*.hdf5", "sample_tabletop_ros": "bags/episode_*/"}  # spec -> its raw files

# lerobot-doctor's messages that name episodes by their LeRobot episode_index
NAMED_EPISODE = (re.compile(r"^Episode (\d+): "),  # Per-Episode Summary, Temporal Consistency
                 re.compile(r"% of episode (\d+) is consecutive identical actions"),  # Action Quality
                 re.compile(r"Episode (\d+) has \d+ sudden large action jumps"))  # Action Quality
DUPLICATE_PAIRS = re.compile(r"near-duplicate episode pair\(s\) detected")  # Anomaly Detection: [(i, j), ...]
PAIR = re.compile(r"\((\d+), (\d+)\)")
# where a check stops listing: "...and 3 more episodes", a pair list cut with "..."
CUT = re.compile(r"\.\.\.and \d+ more|\]\.\.\.$")
# checks whose lists must be whole; the others' lists (5 or 10 episodes at most) repeat
# what the Per-Episode Summary (20 at most) says of frozen actions, jumps and timestamp gaps
WHOLE = ("Per-Episode Summary", "Anomaly Detection")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (MARKER.exists() and DOCTOR.exists()), reason=(
    f"no lerobot-doctor in a lerobot venv at {VENV}: tests/peers/lerobot_venv.sh builds it (make test runs it)"))]


@dataclass
class Half:
    """One half of the sample after export: what each tool flags, by robolake episode id."""

    doctor: dict[str, list[str]]  # episode id -> lerobot-doctor's messages naming it
    robolake: dict[str, list[str]]  # episode id -> the gate's episode-quality checks that flag it
    exported: list[str]  # episode ids by LeRobot episode_index
    report: dict  # lerobot-doctor's JSON report


def gold_id(entry: dict) -> str:
    """The gold episode id of a sample_manifest.json episode: `<session>/data/<demo>` for
    an HDF5 session's demo, the bag's folder name for a bag."""
    stem = Path(entry["path"]).stem
    return f"{stem}/data/{entry['episode_id'].rsplit('/', 1)[1]}" if entry["container"] == "hdf5" else stem


def run_doctor(export_dir: Path, tmp: Path) -> dict:
    """lerobot-doctor's JSON report on a local export, offline, in the peer venv."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(DOCTOR), "check", str(export_dir), "--json"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a check failed; the report is still printed
    return json.loads(done.stdout)


def doctor_findings(report: dict, exported: list[str]) -> dict[str, list[str]]:
    """lerobot-doctor's warnings and failures that name an episode, by its robolake id (a
    near-duplicate pair names both episodes)."""
    named: dict[str, list[str]] = {}
    for check in report["checks"]:
        for message in (m["message"] for m in check["messages"] if m["severity"] != "PASS"):
            if CUT.search(message):
                assert check["name"] not in WHOLE, f"lerobot-doctor cut its list short: {message}"
                continue
            indices = [int(i) for pair in PAIR.findall(message) for i in pair] if DUPLICATE_PAIRS.search(message) \
                else [int(m.group(1)) for m in (p.search(message) for p in NAMED_EPISODE) if m]
            for index in indices:
                named.setdefault(exported[index], []).append(f"{check['name']}: {message}")
    return named


def robolake_findings(lake: Lake, name: str) -> dict[str, list[str]]:
    """The gate's episode-quality checks that flag each episode, at gate.yaml's settings."""
    target = lake.resolve(name)
    con = connect_version(lake, target)
    try:
        flags = quality_flags(quality_rows(con), load_config(name)["episode_quality"], target.spec.action.names,
                              [camera.name for camera in target.spec.cameras], target.spec.control_rate_hz)
    finally:
        con.close()
    named: dict[str, list[str]] = {}
    for check in flags:
        for episode_id in check.flagged["episode_id"]:
            named.setdefault(episode_id, []).append(check.name)
    return named


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory) -> tuple[dict[str, str], dict[str, Half]]:
    """The seeded fault kinds by gold episode id, and each half as both tools see it."""
    tmp = tmp_path_factory.mktemp("lerobot_doctor")
    raw, lake = tmp / "raw", Lake(str(tmp / "lake"))
    manifest = write_sample(str(raw), episodes=EPISODES, seed=SEED, bag_fraction=BAG_FRACTION, cameras=TINY,
                            fault_shares=SHARES)
    kinds = {gold_id(e): e["fault"]["kind"] for e in manifest["episodes"] if e["fault"]}
    halves = {}
    for name, files in HALVES.items():
        spec = load_spec(str(DATASETS / f"{name}.yaml"), [f"source.paths=['{raw}/{files}']",
                                                           "cameras.0.size=[64, 64]", "cameras.1.size=[64, 64]"])
        convert(spec, lake, [])
        export_dir = tmp / f"{name}_lerobot"
        assert main(["lerobot", name, str(export_dir), "--lake", lake.root]) == 0
        episodes = pq.read_table(export_dir / "meta" / "episodes", columns=["episode_index", "episode_id"])
        exported = [i for _, i in sorted(zip(*episodes.to_pydict().values()))]
        report = run_doctor(export_dir, tmp)
        halves[name] = Half(doctor_findings(report, exported), robolake_findings(lake, name), exported, report)
    return kinds, halves


def test_lerobot_doctor_reads_each_whole_export_and_fails_nothing(side_by_side):
    """Its structural checks (metadata, timestamps and indices, videos, feature consistency)
    pass on the export; only its quality heuristics warn."""
    _, halves = side_by_side
    for half in halves.values():
        assert half.report["format_version"] == "v3"
        assert half.report["total_episodes"] == len(half.exported) > 0
        assert half.report["summary"]["FAIL"] == 0, [c for c in half.report["checks"] if c["severity"] == "FAIL"]


def test_robolake_flags_every_seeded_fault_lerobot_doctor_catches(side_by_side):
    kinds, halves = side_by_side
    caught_by_doctor, missed_by_robolake = set(), []
    for name, half in halves.items():
        for episode_id, messages in half.doctor.items():
            if episode_id not in kinds:
                continue  # e.g. the original of a duplicated episode, in a near-duplicate pair
            caught_by_doctor.add(kinds[episode_id])
            if episode_id not in half.robolake:
                missed_by_robolake.append(f"{name} {episode_id} ({kinds[episode_id]}): {messages}")
    assert not missed_by_robolake, missed_by_robolake
    # What lerobot-doctor 0.2.0 catches in an export (docs/quality.md's table): an idle head or
    # tail (held commands are identical actions) and a duplicated episode; the rest it cannot see.
    assert caught_by_doctor == {"idle", "duplicate_episode"}, caught_by_doctor
