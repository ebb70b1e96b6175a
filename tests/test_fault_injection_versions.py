"""(temporary) versions part of the fault-injection module."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robolake.cli import main
from robolake.lake import Lake
from robolake.publish import KILL_POINTS
from tests.conftest import config_file, load_split, robomimic_spec, run_convert
from validation.lake_views import connect

# ---------------------------------------------------------------- versions: one writer, crash-safe publication, provenance

REPO = Path(__file__).resolve().parents[1]
DATASET, VERSION = "synthetic_tabletop", "1.0.0"


def _spec_file(raw: Path, folder: Path, quality: int) -> Path:
    """A spec of the same name and version; the shard size tells two builds apart."""
    path = folder / f"spec-q{quality}.yaml"
    path.write_text(yaml.safe_dump(robomimic_spec(raw, output={"steps_per_shard": quality},
                                                  splits={"fractions": {"train": 0.5, "test": 0.5}})))
    return path


def _convert(spec_path: Path, lake: Path, *extra: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "robolake.cli", "convert", str(spec_path), "--lake", str(lake), *extra],
        cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("robolake ")]


def assert_whole(lake: Lake, quality: int) -> None:
    """The published build is one build, whole: its manifest, statistics, gold shards and
    silver tables agree with the pointer and with each other."""
    pointer = lake.current(DATASET, VERSION)
    build = lake.current_build(DATASET, VERSION)
    manifest = json.loads(Path(build.gold, "manifest.json").read_text())
    assert manifest["build"] == pointer["build"] and manifest["fingerprint"] == pointer["fingerprint"]
    assert manifest["spec"]["output"]["steps_per_shard"] == quality
    statistics = Path(build.gold, "dataset_statistics.json").read_bytes()
    assert hashlib.sha256(statistics).hexdigest() == pointer["statistics_sha256"]
    written = sum(len(load_split(build.gold, split)) for split in manifest["counts"]["by_split"])
    assert written == manifest["counts"]["episodes_written"]
    with connect(lake, DATASET, VERSION) as con:
        assert con.sql("SELECT count(*) FROM episodes").fetchall()[0][0] == written
        assert con.sql("SELECT count(DISTINCT episode_id) FROM steps").fetchall()[0][0] == written


def test_two_builds_of_one_version_at_once_publish_exactly_one(robomimic_raw, tmp_path):
    lake = tmp_path / "lake"
    builds = [_convert(_spec_file(robomimic_raw, tmp_path, quality), lake) for quality in (90, 80)]
    results = [(b.wait(), *b.communicate()) for b in builds]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [r[2][-2000:] for r in results]
    winner = [0, 1][[code for code, _, _ in results].index(0)]
    _, _, loser_err = results[1 - winner]
    published = Lake(str(lake)).current(DATASET, VERSION)
    [message] = _errors(loser_err)
    assert f"{DATASET}:{VERSION} is being built by build {published['build']}" in message
    assert "Traceback" not in loser_err
    assert_whole(Lake(str(lake)), (90, 80)[winner])
    assert len(Lake(str(lake)).build_dirs()) == 1  # the loser wrote nothing


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_inside_publication_leaves_the_old_or_the_new_build_whole(robomimic_raw, tmp_path, point):
    lake = tmp_path / "lake"
    fresh = _convert(_spec_file(robomimic_raw, tmp_path, 90), lake, ROBOLAKE_KILL_AT=point)
    assert fresh.wait() == -signal.SIGKILL
    fresh.communicate()
    if point == "after-commit":
        assert_whole(Lake(str(lake)), 90)
    else:
        assert Lake(str(lake)).published() == []
        first = _convert(_spec_file(robomimic_raw, tmp_path, 90), lake)
        assert first.wait() == 0, first.communicate()[1]
    old = Lake(str(lake)).current(DATASET, VERSION)["build"]
    overwrite = _convert(_spec_file(robomimic_raw, tmp_path, 80), lake, "--overwrite", ROBOLAKE_KILL_AT=point)
    assert overwrite.wait() == -signal.SIGKILL
    overwrite.communicate()
    committed = point == "after-commit"
    assert_whole(Lake(str(lake)), 80 if committed else 90)
    assert (Lake(str(lake)).current(DATASET, VERSION)["build"] == old) != committed
    # the next build takes the dead lease over and clears what the killed one left
    again = _convert(_spec_file(robomimic_raw, tmp_path, 70), lake, "--overwrite")
    code, _, stderr = again.wait(), *again.communicate()
    assert code == 0, stderr
    assert "took over the lease" in stderr
    assert ("removed the folder of a killed build" in stderr) != committed
    assert_whole(Lake(str(lake)), 70)


@pytest.fixture(scope="module")
def overwritten(robomimic_raw, tmp_path_factory) -> tuple[Path, Path, str, str]:
    """A checkpoint trained on a version that was then rebuilt with --overwrite (another
    split: fewer test episodes)."""
    root = tmp_path_factory.mktemp("overwritten")
    lake = root / "lake"
    run_convert(robomimic_spec(robomimic_raw, splits={"fractions": {"train": 0.5, "test": 0.5}}), lake)
    config = config_file(root, steps=2, val_every=2)
    assert main(["train", "--dataset", DATASET, "--config", config, "--lake", str(lake),
                 "--run-dir", str(root / "run")]) == 0
    old = Lake(str(lake)).current(DATASET, VERSION)
    run_convert(robomimic_spec(robomimic_raw, splits={"fractions": {"train": 0.7, "test": 0.3}}), lake, overwrite=True)
    new = Lake(str(lake)).current(DATASET, VERSION)
    assert new["fingerprint"] != old["fingerprint"]
    return lake, root / "run", old["fingerprint"], new["fingerprint"]


def test_lineage_verify_fails_naming_both_fingerprints_after_an_overwrite(overwritten, capsys):
    lake, run, old, new = overwritten
    assert main(["lineage", str(run / "best"), "--verify"]) == 1
    out = capsys.readouterr().out
    assert f"fingerprint {old}" in out and f"fingerprint {new}" in out
    assert "1 dataset versions changed since" in out
    # the replaced build stays, named by the checkpoint: gc keeps it and says why
    assert main(["gc", "--lake", str(lake), "--runs", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"still named by {run / 'best'}" in out and "removed 0" in out
    assert main(["lineage", str(run / "best"), "--verify"]) == 1


def test_evaluate_refuses_a_changed_dataset_unless_allowed(overwritten, capsys):
    lake, run, old, new = overwritten
    assert main(["evaluate", str(run), "--lake", str(lake)]) == 2
    [message] = _errors(capsys.readouterr().err)
    assert old in message and new in message and "--allow-dataset-change" in message
    assert main(["evaluate", str(run), "--lake", str(lake), "--allow-dataset-change"]) == 0
    recorded = json.loads((run / "eval" / "eval.json").read_text())["dataset_change"]
    assert old in recorded and new in recorded


def test_gc_removes_replaced_builds_nothing_names(robomimic_raw, tmp_path, capsys):
    lake = tmp_path / "lake"
    first = run_convert(robomimic_spec(robomimic_raw), lake)
    second = run_convert(robomimic_spec(robomimic_raw), lake, overwrite=True)
    assert main(["query", "SELECT count(*) AS builds FROM versions", "--lake", str(lake), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "2"
    assert main(["gc", "--lake", str(lake), "--dry-run"]) == 0
    assert "would remove 1" in capsys.readouterr().out and Path(first.gold_dir).exists()
    assert main(["gc", "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    assert f"remove {DATASET}:{VERSION} build {first.manifest['build']}: replaced" in out
    assert not Path(first.gold_dir).exists() and Path(second.gold_dir, "manifest.json").exists()
    assert Lake(str(lake)).current(DATASET, VERSION)["replaced"] == []
