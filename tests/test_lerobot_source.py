"""`source.format: lerobot`: LeRobot v3.0 dataset folders converted to RLDS. A round trip
gold -> `robolake lerobot` -> import; the v3 pitfalls planted on purpose, each quarantining
exactly its episode; datasets the real lerobot 0.4.4 wrote (tests/test_lerobot_peer.py's
venv), checked against what LeRobotDataset reads back; validate and report on the import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.main import main
from exports.lerobot.writer import export
from robolake.lerobot_layout import read_info, video_file
from robolake.lerobot_video import available_encoder
from tests.helpers import load_split, quarantine_records, robomimic_spec, run_convert

VENV = Path(os.environ.get("ROBOLAKE_LEROBOT_VENV", Path(__file__).parents[1] / ".venv" / "lerobot"))
PEERS = Path(__file__).parent / "peers"
INPUT = "data/chunk-000/file-000"  # the one data file of a small export, as an input id


def lerobot_spec(root: Path | str, name: str = "imported", **overrides) -> dict:
    """A spec importing the LeRobot folder `root`, cameras and rate as the robomimic sample's
    export has them; filters off, so that values pass through unchanged."""
    spec = {
        "name": name, "version": "1.0.0", "control_rate_hz": 10,
        "source": {"format": "lerobot", "paths": [str(root)]},
        "cameras": [{"name": "front", "size": [64, 64]}, {"name": "wrist", "size": [32, 32], "encoding": "png"}],
        "instruction": {"feature": "task"},
        "metadata": {"source_episode": {"feature": "episode_id"}},
        "episode_length": {"min_steps": 5},
        "filters": {"zscore": None, "jump": None},
    }
    return {**spec, **overrides}


def gold_by_source(gold_dir: str) -> dict[str, dict]:
    """Every episode of a gold version, by its episode_metadata source_episode (or episode_id)."""
    episodes = {}
    for split in ("train", "val", "test"):
        try:
            loaded = load_split(gold_dir, split)
        except (KeyError, ValueError):
            continue
        for episode in loaded:
            meta = episode["episode_metadata"]
            episodes[meta.get("source_episode") or meta["episode_id"]] = episode
    return episodes


@pytest.fixture(scope="module")
def original(robomimic_raw, tmp_path_factory):
    lake = tmp_path_factory.mktemp("lerobot_source_lake")
    outcome = run_convert(robomimic_spec(robomimic_raw), lake)
    return {"lake": lake, "gold_dir": outcome.gold_dir, "episodes": gold_by_source(outcome.gold_dir)}


@pytest.fixture(scope="module")
def video_export(original, tmp_path_factory) -> Path:
    if available_encoder() is None:
        pytest.skip("this PyAV has no video encoder")
    out = tmp_path_factory.mktemp("lerobot_source_export") / "video"
    export(original["gold_dir"], str(out), images="video")
    return out


def _steps(episode: dict, key: str) -> np.ndarray:
    return np.stack([step[key] for step in episode["steps"]])


@pytest.mark.parametrize("images", ["video", "image"])
def test_round_trip_keeps_actions_states_instructions_and_frames(original, video_export, images, tmp_path):
    root = video_export
    if images == "image":
        root = tmp_path / "image"
        export(original["gold_dir"], str(root), images="image")
    lake = tmp_path / "lake"
    outcome = run_convert(lerobot_spec(root), lake)
    imported = gold_by_source(outcome.gold_dir)
    assert sorted(imported) == sorted(original["episodes"])
    assert outcome.manifest["counts"]["episodes_quarantined"] == 0
    errors = {"front": [], "wrist": []}
    for episode_id, mine in imported.items():
        theirs = original["episodes"][episode_id]
        np.testing.assert_array_equal(_steps(mine, "action_raw"), _steps(theirs, "action_raw"))
        mine_obs, theirs_obs = [s["observation"] for s in mine["steps"]], [s["observation"] for s in theirs["steps"]]
        np.testing.assert_array_equal(np.stack([o["state"] for o in mine_obs]), np.stack([o["state"] for o in theirs_obs]))
        assert [s["language_instruction"] for s in mine["steps"]] == [s["language_instruction"] for s in theirs["steps"]]
        assert mine["episode_metadata"]["task"] == mine["steps"][0]["language_instruction"].decode()  # LeRobot's task
        assert not mine["steps"][-1]["is_terminal"] and mine["steps"][-1]["is_last"]
        for camera in errors:
            a = np.stack([o[camera] for o in mine_obs]).astype(np.int16)
            errors[camera].append(np.abs(a - np.stack([o[camera] for o in theirs_obs])))
    mean = {camera: float(np.concatenate(e).mean()) for camera, e in errors.items()}
    if images == "image":  # the gold JPEG decoded and encoded again at the same size; PNG exact
        assert mean["wrist"] == 0 and mean["front"] < 1.5, mean
    else:  # measured (AV1 crf 30, then JPEG 95 for front): mean front 2.83, wrist 4.14 levels (max 107, 124)
        assert mean["front"] < 3.5 and mean["wrist"] < 5.0, mean
    manifest_layout = outcome.manifest["state_layout"]
    assert [part["name"] for part in manifest_layout] == [f"state_{i}" for i in range(len(manifest_layout))]


def test_terminal_last_step_marks_every_episode_terminal(video_export, tmp_path):
    spec = lerobot_spec(video_export, source={"format": "lerobot", "paths": [str(video_export)],
                                              "terminal": "last_step"}, cameras=[])
    outcome = run_convert(spec, tmp_path / "lake")
    episodes = gold_by_source(outcome.gold_dir).values()
    assert episodes and all(e["steps"][-1]["is_terminal"] for e in episodes)


# ---------------------------------------------------------------- planted pitfalls

def _rewrite_parquet(path: Path, change) -> None:
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def _cut_frame(video: Path, index: int, fps: int) -> None:
    """Re-encode `video` without its frame `index`, every other frame at its own time (a dropped frame)."""
    with av.open(str(video)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    encoder = available_encoder()
    with av.open(str(video), "w") as container:
        stream = container.add_stream(encoder, rate=fps, options={"g": "2"})
        stream.pix_fmt, stream.height, stream.width = "yuv420p", frames[0].shape[0], frames[0].shape[1]
        for i, pixels in enumerate(frames):
            if i == index:
                continue
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def pitfalls(video_export, tmp_path_factory) -> dict:
    """The export with: a frame cut from episode 2's front video, episode 4's timestamp at
    step 5 shifted by 0.6 frame, episode 6's wrist video pointing to a missing file, and
    meta/episodes split in two shards of the same name in different chunk folders."""
    root = tmp_path_factory.mktemp("pitfalls") / "pitfalls"
    shutil.copytree(video_export, root)
    info = read_info(str(root))
    episodes_path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    rows = pq.read_table(episodes_path).to_pylist()
    front = "observation.images.front"
    cut = rows[2]
    _cut_frame(root / video_file(info, cut, front), round(cut[f"videos/{front}/from_timestamp"] * 10) + 3, 10)

    def shift(table: pa.Table) -> pa.Table:
        timestamps = table.column("timestamp").to_numpy().copy()
        timestamps[rows[4]["dataset_from_index"] + 5] += 0.6 / 10
        return table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pa.array(timestamps, pa.float32()))

    _rewrite_parquet(root / f"{INPUT}.parquet", shift)
    rows[6]["videos/observation.images.wrist/file_index"] = 1
    schema = pq.read_schema(episodes_path)
    pq.write_table(pa.Table.from_pylist(rows[:5], schema=schema), episodes_path)
    other = root / "meta" / "episodes" / "chunk-001" / "file-000.parquet"
    other.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[5:], schema=schema), other)
    return {"root": root, "episodes": len(rows)}


def test_each_planted_pitfall_quarantines_its_episode_with_its_reason(pitfalls, tmp_path):
    lake = tmp_path / "lake"
    outcome = run_convert(lerobot_spec(pitfalls["root"]), lake)
    quarantined = {q["episode_id"]: q for q in quarantine_records(lake, "imported", "1.0.0")}
    prefix = f"pitfalls/{INPUT}/episode_"
    assert {k: q["reason_code"] for k, q in quarantined.items()} == {
        f"{prefix}000002": "frame_count_mismatch", f"{prefix}000004": "timestamp_drift",
        f"{prefix}000006": "missing_video"}
    assert "holds 23 frames" in quarantined[f"{prefix}000002"]["reason"]
    assert "file-001.mp4 is missing" in quarantined[f"{prefix}000006"]["reason"]
    counts = outcome.manifest["counts"]
    assert counts["episodes_written"] == pitfalls["episodes"] - 3  # both same-named shards read


def test_a_mapped_feature_missing_from_info_json_names_it(video_export, tmp_path):
    spec = lerobot_spec(video_export, state={"keys": ["observation.joints"]})
    with pytest.raises(Exception, match="observation.joints"):
        run_convert(spec, tmp_path / "lake")


# ---------------------------------------------------------------- validate and report

def test_validate_and_report_run_on_the_imported_version(video_export, tmp_path, capsys):
    lake = tmp_path / "lake"
    run_convert(lerobot_spec(video_export), lake)
    assert main(["validate", "imported:1.0.0", "--lake", str(lake)]) == 0
    assert main(["report", "imported:1.0.0", "--lake", str(lake)]) == 0
    coverage = lake / "reports" / "imported" / "1.0.0"
    assert any(coverage.rglob("*.html"))


# ---------------------------------------------------------------- datasets the real lerobot wrote

MARKER = VENV / "robolake-lerobot.txt"
needs_lerobot = pytest.mark.skipif(not MARKER.exists(), reason=(
    f"no lerobot venv at {VENV}: tests/peers/lerobot_venv.sh builds it (make test runs it)"))


def _run_in_lerobot(script: str, *args: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([str(VENV / "bin" / "python"), str(PEERS / script), *args], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module", params=["video", "image"])
def written_by_lerobot(request, tmp_path_factory) -> dict:
    """A dataset LeRobotDataset.create/add_frame/save_episode wrote (tests/peers/lerobot_write.py),
    and what LeRobotDataset reads back from it (tests/peers/lerobot_load.py)."""
    if not MARKER.exists():
        pytest.skip(f"no lerobot venv at {VENV}: tests/peers/lerobot_venv.sh builds it")
    tmp = tmp_path_factory.mktemp(f"lerobot_wrote_{request.param}")
    root = tmp / "peer"
    _run_in_lerobot("lerobot_write.py", str(root), request.param, tmp_path=tmp)
    _run_in_lerobot("lerobot_load.py", str(root), str(tmp / "read.npz"), tmp_path=tmp)
    with np.load(tmp / "read.npz") as arrays:
        read = {name: arrays[name] for name in arrays.files}
    return {"root": root, "read": read, "mode": request.param, "tmp": tmp}


@needs_lerobot
def test_datasets_lerobot_wrote_convert_to_what_lerobot_reads(written_by_lerobot, tmp_path):
    root, read = written_by_lerobot["root"], written_by_lerobot["read"]
    info = json.loads((root / "meta" / "info.json").read_text())
    if written_by_lerobot["mode"] == "video":  # several episodes per MP4, and more than one file
        episodes = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
        files = {video_file(info, e, "observation.images.cam") for e in episodes}
        assert 1 < len(files) < len(episodes)
    spec = lerobot_spec(root, name="peer", control_rate_hz=info["fps"], metadata={},
                        cameras=[{"name": "cam", "size": [48, 64], "encoding": "png"}],
                        action={"names": info["features"]["action"]["names"]})
    outcome = run_convert(spec, tmp_path / "lake")
    assert outcome.manifest["counts"]["episodes_quarantined"] == 0
    imported = {int(k.rsplit("_", 1)[1]): e for k, e in gold_by_source(outcome.gold_dir).items()}
    assert sorted(imported) == sorted(set(read["episode_index"].tolist()))
    for index, episode in imported.items():
        mine = read["episode_index"] == index
        np.testing.assert_array_equal(_steps(episode, "action_raw"), read["action"][mine])
        np.testing.assert_array_equal(np.stack([s["observation"]["state"] for s in episode["steps"]]), read["state"][mine])
        assert {s["language_instruction"].decode() for s in episode["steps"]} == set(read["task"][mine].tolist())
        frames = np.stack([s["observation"]["cam"] for s in episode["steps"]]).astype(np.int16)
        # PNG at the source's size: the frames LeRobot decodes, up to its float round trip
        assert np.abs(frames - read["image:observation.images.cam"][mine]).max() <= 1
    assert [p["name"] for p in outcome.manifest["state_layout"]] == info["features"]["observation.state"]["names"]
