"""Versions are immutable, deterministic and published atomically."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from robolake.errors import RobolakeError
from robolake.lake import Lake
from robolake.lake_views import connect
from tests.helpers import load_split, robomimic_spec, run_convert

REPO = Path(__file__).resolve().parents[1]


def shard_digests(gold_dir: str) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(gold_dir).glob("*.tfrecord-*"))
    }


def records(gold_dir: str, manifest: dict) -> dict:
    """episode id -> (metadata, actions, first front image bytes) over all splits."""
    result = {}
    for split in manifest["counts"]["by_split"]:
        for e in load_split(gold_dir, split):
            result[e["episode_metadata"]["episode_id"]] = (
                split,
                e["episode_metadata"],
                [s["action"].tolist() for s in e["steps"]],
                e["steps"][0]["observation"]["front"].tobytes(),
            )
    return result


def test_existing_version_is_refused_and_overwrite_keeps_the_replaced_build(robomimic_raw, tmp_path):
    spec = robomimic_spec(robomimic_raw)
    first = run_convert(spec, tmp_path)
    with pytest.raises(RobolakeError, match="is already published .* published versions are immutable"):
        run_convert(spec, tmp_path)
    second = run_convert(spec, tmp_path, overwrite=True)
    assert second.gold_dir != first.gold_dir and Path(first.gold_dir, "manifest.json").exists()
    assert second.manifest["fingerprint"] == first.manifest["fingerprint"]
    lake = Lake(str(tmp_path))
    assert lake.gold("synthetic_tabletop", "1.0.0") == second.gold_dir
    assert [b.id for b in lake.build_dirs()] == sorted([first.manifest["build"], second.manifest["build"]])
    rows = connect(lake).sql("SELECT build, current, gold_dir FROM versions ORDER BY created_at").fetchall()
    assert rows == [(first.manifest["build"], False, first.gold_dir), (second.manifest["build"], True, second.gold_dir)]
    assert not (tmp_path / "versions/synthetic_tabletop/1.0.0/lease.json").exists()


def test_rebuild_gives_same_fingerprint_and_identical_shards(robomimic_raw, tmp_path):
    spec = robomimic_spec(robomimic_raw)
    a = run_convert(spec, tmp_path / "a")
    b = run_convert(spec, tmp_path / "b")
    assert a.manifest["fingerprint"] == b.manifest["fingerprint"]
    assert shard_digests(a.gold_dir) == shard_digests(b.gold_dir)
    assert len(shard_digests(a.gold_dir)) >= 3
    changed = run_convert(robomimic_spec(robomimic_raw, cameras=[{"name": "front", "size": [48, 48]}]), tmp_path / "c")
    assert changed.manifest["fingerprint"] != a.manifest["fingerprint"]


def test_two_workers_match_one_worker(robomimic_raw, tmp_path):
    spec = robomimic_spec(robomimic_raw)
    multi = ["--direct_running_mode=multi_processing"]
    one = run_convert(spec, tmp_path / "one", multi + ["--direct_num_workers=1"])
    two = run_convert(spec, tmp_path / "two", multi + ["--direct_num_workers=2"])
    assert one.manifest["fingerprint"] == two.manifest["fingerprint"]
    assert one.manifest["counts"] == two.manifest["counts"]
    assert shard_digests(one.gold_dir) == shard_digests(two.gold_dir)
    assert records(one.gold_dir, one.manifest) == records(two.gold_dir, two.manifest)
    statistics = [(Path(d) / "dataset_statistics.json").read_bytes() for d in (one.gold_dir, two.gold_dir)]
    assert statistics[0] == statistics[1]


def test_released_lease_stays_released_when_a_heartbeat_is_in_flight(tmp_path, monkeypatch):
    """A heartbeat written while the build releases its lease must not bring the lease back."""
    from robolake import lease as lease_module

    def slow_write(path, data):  # the heartbeat is still writing when release() runs
        time.sleep(0.2)
        write_atomic(path, data)

    write_atomic = lease_module.write_atomic
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.01)
    monkeypatch.setattr(lease_module, "write_atomic", slow_write)
    lake = Lake(str(tmp_path))
    held = lease_module.Lease(lake, "synthetic_tabletop", "1.0.0", build="b1", command="convert")
    with held:
        time.sleep(0.05)  # the first heartbeat has started writing
    time.sleep(0.4)
    assert not Path(lake.lease("synthetic_tabletop", "1.0.0")).exists()
    with lease_module.Lease(lake, "synthetic_tabletop", "1.0.0", build="b2", command="convert"):
        pass  # the next build takes it at once, without naming b1 as the holder


def _convert_command(spec_path: Path, lake: Path) -> list[str]:
    return [sys.executable, "-m", "cli.main", "convert", str(spec_path), "--lake", str(lake)]


def test_killed_build_publishes_nothing_and_rerun_succeeds(robomimic_raw, tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(robomimic_spec(robomimic_raw, output={"steps_per_shard": 24})))
    lake = tmp_path / "lake"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    build = subprocess.Popen(_convert_command(spec_path, lake), cwd=REPO, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(lake.glob("versions/*/*/builds/*/_progress/ingest-*.json")):
        assert build.poll() is None, "the build ended before it could be killed"
        assert time.time() < deadline, "the build never started ingesting"
        time.sleep(0.02)
    os.killpg(build.pid, signal.SIGKILL)
    build.wait()
    assert Lake(str(lake)).published() == []
    [left] = Lake(str(lake)).build_dirs()  # the killed build's folder and its (dead) lease stay behind

    rerun = subprocess.run(_convert_command(spec_path, lake), cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"took over the lease of synthetic_tabletop:1.0.0 from build {left.id}" in rerun.stderr
    assert f"removed the folder of a killed build: {left.dir}" in rerun.stderr
    assert "10 episodes written" in rerun.stdout
    [published] = Lake(str(lake)).build_dirs()
    assert published.id != left.id and Path(published.gold, "manifest.json").exists()


def test_registered_hashes_are_reused_only_for_unchanged_files(robomimic_raw, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = tmp_path / "raw"
    shutil.copytree(robomimic_raw, raw)
    spec = robomimic_spec(raw)
    first = run_convert(spec, tmp_path / "lake")
    registry_path = tmp_path / "lake/raw/manifest.parquet"
    rows = pq.read_table(registry_path).to_pylist()
    assert sorted(r["sha256"] for r in rows) == sorted(s["sha256"] for s in first.manifest["sources"])
    assert {r["path"] for r in rows} == {str(p) for p in raw.glob("*.hdf5")}
    # Mark the registered hashes, then touch one file: only the untouched ones keep the mark.
    marker = "0" * 64  # a well-formed sha256 that no file has
    table = pa.Table.from_pylist([{**r, "sha256": marker} for r in rows], schema=pq.read_schema(registry_path))
    pq.write_table(table, registry_path)
    touched = raw / "tabletop_001.hdf5"
    os.utime(touched, (time.time() + 10, time.time() + 10))
    second = run_convert(spec, tmp_path / "lake", overwrite=True)
    hashes = {s["relative_id"]: s["sha256"] for s in second.manifest["sources"]}
    assert hashes["tabletop_000"] == hashes["tabletop_002"] == marker
    assert hashes["tabletop_001"] == next(s["sha256"] for s in first.manifest["sources"] if s["relative_id"] == "tabletop_001")
