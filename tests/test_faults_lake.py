"""Fault injection on the lake's own files (issue 30, items 2, 3, 6, 7 and 9's lease.json):
gc keeps what a checkpoint, a moved lake or a running reader needs; a stalled build never
publishes a deleted build; a damaged lease.json or current.json costs one line, not the lake.

Commands run as real `python -m cli.main` processes (what a user sees: exit code, stderr);
the stalled commit is replayed in-process, where the stall can be placed exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robolake.lake import Lake
from tests.helpers import robomimic_spec, run_convert

REPO = Path(__file__).resolve().parents[1]
NAME, VERSION = "synthetic_tabletop", "1.0.0"
OLD = time.time() - 3600  # an mtime well past the lease's stale threshold


def robolake(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}, timeout=600)


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one line a user error ends in (exit code 2, no traceback)."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("robolake ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
def overwritten(robomimic_raw, tmp_path_factory) -> tuple[Path, str, str]:
    """A lake whose version was rebuilt: (lake, replaced build id, published build id)."""
    lake = tmp_path_factory.mktemp("overwritten") / "lake"
    first = run_convert(robomimic_spec(robomimic_raw), lake)
    run_convert(robomimic_spec(robomimic_raw), lake, overwrite=True)
    return lake, first.manifest["build"], Lake(str(lake)).current(NAME, VERSION)["build"]


def _copy(lake: Path, tmp_path: Path) -> tuple[Path, Lake]:
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    return copy, Lake(str(copy))


def _checkpoint(lake: Lake, run: Path, build: str) -> None:
    """A checkpoint's provenance.json as `train` writes it, naming `build`'s gold folder."""
    gold = lake.build(NAME, VERSION, build).gold
    (run / "best").mkdir(parents=True)
    (run / "best" / "provenance.json").write_text(json.dumps({
        "artifact": {"kind": "checkpoint", "path": str(run / "best")},
        "dataset": {"name": NAME, "version": VERSION, "build": build, "gold_dir": gold}}))


# -- item 2: gc keeps what a checkpoint, a moved lake or a running reader needs ---------------


def test_gc_runs_adds_folders_to_lake_runs(overwritten, tmp_path):
    root, old, _ = overwritten
    root, lake = _copy(root, tmp_path)
    _checkpoint(lake, root / "runs" / "r1", old)
    (tmp_path / "elsewhere").mkdir()
    out = ok(robolake("gc", "--lake", str(root), "--runs", str(tmp_path / "elsewhere"))).stdout
    assert f"keep   {NAME}:{VERSION} build {old}: replaced" in out and "removed 0" in out
    assert Path(lake.build(NAME, VERSION, old).gold, "manifest.json").exists()


def test_gc_matches_a_moved_lakes_provenance_by_build(overwritten, tmp_path):
    root, old, _ = overwritten
    before, lake = _copy(root, tmp_path / "before")
    _checkpoint(lake, before / "runs" / "r1", old)  # names the build under the lake's old path
    moved = tmp_path / "moved"
    before.rename(moved)
    out = ok(robolake("gc", "--lake", str(moved))).stdout
    assert f"build {old}: replaced" in out and "still named by" in out and "removed 0" in out
    assert Path(Lake(str(moved)).build(NAME, VERSION, old).gold, "manifest.json").exists()


READER = """
import sys, time
from robolake.lake import Lake
from robolake.pins import reading
with reading("train"):
    Lake(sys.argv[1]).resolve("{name}:{version}")
    print("reading", flush=True)
    time.sleep(600)
""".format(name=NAME, version=VERSION)


def test_gc_keeps_a_build_a_running_command_reads_until_it_dies(robomimic_raw, tmp_path):
    root = tmp_path / "lake"
    first = run_convert(robomimic_spec(robomimic_raw), root)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(root)], cwd=REPO, text=True, stdout=subprocess.PIPE)
    try:
        assert reader.stdout.readline() == "reading\n"
        run_convert(robomimic_spec(robomimic_raw), root, overwrite=True)  # the build read is now a replaced one
        out = ok(robolake("gc", "--lake", str(root))).stdout
        assert f"keep   {NAME}:{VERSION} build {first.manifest['build']}: read by train (pid {reader.pid}" in out
        assert Path(first.gold_dir, "manifest.json").exists()
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait()
    out = ok(robolake("gc", "--lake", str(root))).stdout  # a dead reader's pin keeps nothing
    assert f"remove {NAME}:{VERSION} build {first.manifest['build']}: replaced" in out
    assert not list(Path(Lake(str(root)).pins_dir(NAME, VERSION)).glob("*.json"))


# -- item 3: a build that stalled past its lease never publishes a deleted build ------------


def test_a_stalled_build_that_lost_its_lease_publishes_nothing(overwritten, tmp_path, monkeypatch):
    from robolake import publish
    from robolake.errors import RobolakeError
    from robolake.lease import Lease

    root, _, published = overwritten
    root, lake = _copy(root, tmp_path)
    stalled = Lease(lake, NAME, VERSION, "20200101T000000Z-stalled0", "convert").acquire()
    build = publish.start_build(lake, stalled)

    def stall(point: str) -> None:  # while it stalls, its lease goes stale and the next build takes over
        if point == "pointer-staged":
            stalled._stop.set()
            holder = json.loads(Path(stalled.path).read_text())
            Path(stalled.path).write_text(json.dumps({**holder, "heartbeat": 0}))
            with Lease(lake, NAME, VERSION, "20200101T000001Z-nextone0", "convert"):
                assert build.dir in publish.remove_abandoned_builds(lake)

    monkeypatch.setattr(publish, "crash_point", stall)
    with pytest.raises(RobolakeError, match="fenced off for removal"):
        publish.commit(lake, build, stalled, {"fingerprint": "f", "statistics_sha256": "s"})
    assert lake.current(NAME, VERSION)["build"] == published
    assert Path(lake.current_build(NAME, VERSION).gold, "manifest.json").exists()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_pointer_is_replaced_only_if_unchanged(where, tmp_path, request):
    from robolake.storage import replace_if

    root = f"s3://{request.getfixturevalue('s3_bucket')}" if where == "s3" else str(tmp_path)
    path = f"{root}/versions/x/1.0.0/current.json"
    assert replace_if(path, b"a", None) and not replace_if(path, b"b", None)
    assert not replace_if(path, b"c", b"stale") and replace_if(path, b"d", b"a")
    assert Lake(root).pointer_bytes("x", "1.0.0") == b"d"


# -- items 6 and 9: a damaged lease.json ------------------------------------------------------


@pytest.mark.parametrize("content", ["", "{\"build\": 1}", "[]"], ids=["empty", "wrong fields", "a list"])
def test_a_fresh_unreadable_lease_is_one_line_naming_it(content, robomimic_raw, overwritten, tmp_path):
    root, _, _ = overwritten
    root, lake = _copy(root, tmp_path)
    Path(lake.lease(NAME, VERSION)).write_text(content)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(robomimic_spec(robomimic_raw)))
    line = error_line(robolake("convert", str(spec), "--lake", str(root), "--overwrite"))
    assert f"{lake.lease(NAME, VERSION)}: unreadable lease" in line and "taken over once" in line
    ok(robolake("gc", "--lake", str(root)))  # gc goes on beside it


def test_an_old_unreadable_lease_is_taken_over(robomimic_raw, overwritten, tmp_path):
    root, _, _ = overwritten
    root, lake = _copy(root, tmp_path)
    lease = Path(lake.lease(NAME, VERSION))
    lease.write_text("")  # what a full disk left
    os.utime(lease, (OLD, OLD))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(robomimic_spec(robomimic_raw)))
    done = ok(robolake("convert", str(spec), "--lake", str(root), "--overwrite"))
    assert f"took over the lease of {NAME}:{VERSION} from {lease}, unreadable (empty or not JSON)" in done.stderr
    assert not lease.exists()


# -- item 7: a damaged current.json -----------------------------------------------------------


DAMAGE = {"empty": "", "corrupt": "{\"build\": ", "wrong shape": "{\"build\": 3}",
          "a missing build": "{\"build\": \"20200101T000000Z-gone0000\", \"replaced\": []}"}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_pointer_is_one_line_for_its_version_and_gc_repair_restores_it(damage, overwritten, tmp_path):
    root, old, published = overwritten
    root, lake = _copy(root, tmp_path)
    pointer = Path(lake.pointer(NAME, VERSION))
    pointer.write_text(DAMAGE[damage])
    line = error_line(robolake("validate", NAME, "--lake", str(root)))
    assert str(pointer) in line and "robolake gc --repair" in line
    out = ok(robolake("gc", "--lake", str(root))).stdout
    assert f"keep   {NAME}:{VERSION}'s 2 builds: {pointer}" in out
    out = ok(robolake("gc", "--lake", str(root), "--repair")).stdout
    assert f"restored {pointer}: it names build {published}, the newest committed of 2" in out
    assert lake.current(NAME, VERSION)["build"] == published
    assert [r["build"] for r in lake.current(NAME, VERSION)["replaced"]] == [old]


def test_other_versions_go_on_beside_a_damaged_pointer(robomimic_raw, overwritten, tmp_path):
    root, _, _ = overwritten
    root, lake = _copy(root, tmp_path)
    Path(lake.pointer(NAME, VERSION)).write_text("")
    spec = tmp_path / "other.json"
    spec.write_text(json.dumps(robomimic_spec(robomimic_raw, name="other_tabletop")))
    done = ok(robolake("convert", str(spec), "--lake", str(root)))
    assert f"left the builds of {NAME}:{VERSION} as they are" in done.stderr
    assert len([b for b in lake.build_dirs() if b.dataset == NAME]) == 2  # nothing of the damaged version removed
    done = ok(robolake("query", "SELECT DISTINCT dataset FROM versions", "--lake", str(root), "--format", "csv"))
    assert done.stdout.split() == ["dataset", "other_tabletop"]
    assert f"{NAME}:{VERSION} left out" in done.stderr
