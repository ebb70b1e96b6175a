"""Faults inside a conversion (issue 30, items 5, 8 and 11): one episode that cannot be read
never ends the build, a bag whose clock steps back is quarantined with the ticks it
affects, and Beam's SDK workers end with a driver killed outright.

What a user sees is run as `python -m cli.main convert`: the exit code, no traceback,
and what the lake then holds (the quarantine with its reasons, the episodes written)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from pipelines.alignment import step_back
from pipelines.hdf5_source import Hdf5Source
from robolake import lake_views
from robolake.lake import Lake
from robolake.sample import write_robomimic_file
from tests import bag_factory as bf
from tests.helpers import (
    BAG_NAME, BAG_VERSION, CAMERAS, bag_spec, quarantine_records, robomimic_spec, run_convert, write_bag,
)

REPO = Path(__file__).resolve().parents[1]
HDF5_NAME, VERSION = "synthetic_tabletop", "1.0.0"
STEPS = 12


def convert(spec: dict, folder: Path, *beam_args: str) -> subprocess.CompletedProcess:
    """`robolake convert` of `spec` into folder/lake as a user runs it; it must end well, without a traceback."""
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = subprocess.run([sys.executable, "-m", "cli.main", "convert", str(path), "--lake", str(folder / "lake"),
                           *beam_args], cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def outcome(lake_dir: Path, name: str, version: str) -> tuple[dict, dict[str, dict], list[str]]:
    """The published build's manifest, its quarantine by episode id and the episode ids it wrote."""
    lake = Lake(str(lake_dir))
    manifest = json.loads(Path(lake.current_build(name, version).gold, "manifest.json").read_text())
    quarantined = {row["episode_id"]: row for row in quarantine_records(lake_dir, name, version)}
    with lake_views.connect(lake, name, version) as con:
        written = [row[0] for row in con.sql("SELECT episode_id FROM episodes ORDER BY ALL").fetchall()]
    return manifest, quarantined, written


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


# ---------------------------------------------------------------- one unreadable episode never sinks a build


def test_an_episode_of_0x0_images_is_quarantined_as_bad_shape_and_the_others_written(tmp_path):
    robomimic_file(tmp_path / "raw/session.hdf5",
                   lambda demo: replace(demo, "obs/wrist_image", np.zeros((STEPS, 0, 0, 3), np.uint8)))
    convert(hdf5_spec(tmp_path / "raw"), tmp_path)
    manifest, quarantined, written = outcome(tmp_path / "lake", HDF5_NAME, VERSION)
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
    manifest, quarantined, written = outcome(tmp_path / "lake", HDF5_NAME, VERSION)
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
    manifest, quarantined, written = outcome(tmp_path / "lake", HDF5_NAME, VERSION)
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


# ---------------------------------------------------------------- a bag whose clock steps back


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
    manifest, quarantined, written = outcome(tmp_path / "lake", BAG_NAME, BAG_VERSION)
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


# ---------------------------------------------------------------- workers end with a killed driver


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _command(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "pidfd_open") or not Path("/proc/self/stat").exists(),
                    reason="Linux: workers follow their driver through a pidfd, found here through /proc")
def test_sdk_workers_end_when_the_driver_is_killed(tmp_path, robomimic_raw):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(robomimic_spec(robomimic_raw)))
    driver = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "convert", str(path), "--lake", str(tmp_path / "lake"),
         "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers, deadline = [], time.monotonic() + 120
    try:
        while len(workers) < 2 and driver.poll() is None and time.monotonic() < deadline:
            workers = [pid for pid in _descendants(driver.pid)  # the Python workers, not the shells that start them
                       if "apache_beam.runners.worker.sdk_worker_main" in _command(pid)
                       and "python" in _command(pid)[0]]
            time.sleep(0.05)
        assert len(workers) == 2 and driver.poll() is None, (workers, driver.poll())
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 5
        while any(map(_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in workers if _running(pid)] == []
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in workers:  # the workers this test started, if they outlived it
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
