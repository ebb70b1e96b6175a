"""Fault injection: robolake tried as a hostile or careless user would (issue 16).

User errors and concurrent or killed builds run as real `python -m cli.main`
processes, so what is asserted is what a user sees: the exit code and stderr. A
build is killed inside publication through the ROBOLAKE_KILL_AT hook, not timing luck."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli.main import main
from robolake.lake import Lake
from robolake.lake_views import connect
from robolake.publish import KILL_POINTS
from tests.helpers import config_file, load_split, robomimic_spec, run_convert

REPO = Path(__file__).resolve().parents[1]
NAME = "synthetic_tabletop"
SILVER_TABLES = ("steps", "episodes", "curated_steps", "episode_stats")
# what TensorFlow and absl print on import, whatever the command
NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
                   r"|To enable the following instructions")


def robolake(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one line a user error ends in; fails on a traceback, another exit code or more lines."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not NOISE.match(line)]
    assert len(lines) == 1, lines
    return lines[0]


# -- every user error in one line, exit code 2, no traceback (sections 4 and 5) -------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, robomimic_raw) -> dict[str, str]:
    """Files the error cases name: specs good and bad, a binary file, unreadable sources."""
    folder = tmp_path_factory.mktemp("inputs")
    spec = robomimic_spec(robomimic_raw)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    (folder / "float_version.yaml").write_text(yaml.safe_dump(spec).replace("version: 1.0.0", "version: 1.0"))
    (folder / "duplicate.yaml").write_text(yaml.safe_dump(spec) + "name: other\n")
    (folder / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (folder / "a_file").write_text("not a lake\n")
    unreadable = folder / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)  # a signature, then nothing
    (unreadable / "b.hdf5").write_text("plain text\n")
    (folder / "unreadable.yaml").write_text(yaml.safe_dump(robomimic_spec(unreadable)))
    return {"tmp": str(folder), **{path.stem: str(path) for path in folder.glob("*.yaml")}}


@pytest.fixture(scope="module")
def lake(inputs, tmp_path_factory) -> str:
    """One published version, built by the CLI with Beam's own flags passed through."""
    root = str(tmp_path_factory.mktemp("fault_lake") / "lake")
    done = robolake("convert", inputs["spec"], "--lake", root, "--runner", "FnApiRunner", "--direct_num_workers=1")
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def bare(lake, tmp_path_factory) -> str:
    """A copy of the lake whose published version has gold but no silver tables."""
    root = str(tmp_path_factory.mktemp("bare_lake") / "lake")
    shutil.copytree(lake, root)
    for table in SILVER_TABLES:
        shutil.rmtree(Lake(root).silver_partition(NAME, table, "1.0.0"), ignore_errors=True)
    return root


OUTSIDE = "../../../T/x:1.0.0"
OUTSIDE_MESSAGE = "dataset name '../../../T/x' must match"
INJECTION = "false), false); COPY (SELECT 42) TO '{tmp}/injected.csv'; SELECT (coalesce((false"

CASES = {
    "empty query": (["query", "", "--lake", "{tmp}"], "no SQL statement given"),
    "comment-only query": (["query", "-- x", "--lake", "{tmp}"], "no SQL statement given"),
    "query output into a missing folder": (["query", "select 1", "--lake", "{tmp}", "-o", "{tmp}/no/out.csv"],
                                           "folder {tmp}/no does not exist"),
    "query output onto a folder": (["query", "select 1", "--lake", "{tmp}", "-o", "{tmp}"], "is a folder"),
    "query of an unknown dataset": (["query", "select 1", "--lake", "{lake}", "--dataset", "nosuch"],
                                    "nosuch: no published version"),
    "convert a folder": (["convert", "{tmp}", "--lake", "{tmp}/lake"], "is a folder, not a dataset spec"),
    "convert a binary file": (["convert", "{binary}", "--lake", "{tmp}/lake"], "not a text file"),
    "a float version": (["convert", "{float_version}", "--lake", "{tmp}/lake"],
                        "version: versions are MAJOR.MINOR.PATCH strings, e.g. '1.0.0' (got 1.0)"),
    "a key given twice": (["convert", "{duplicate}", "--lake", "{tmp}/lake"], "key 'name' is given twice"),
    "--lake pointing at a file": (["validate", NAME, "--lake", "{tmp}/a_file"], "is a file"),
    "an unknown command": (["convrt"], "robolake: error: unknown command 'convrt' (did you mean convert?)"),
    "validate without silver": (["validate", NAME, "--lake", "{bare}"], "no silver table holds its episodes, steps"),
    "report without silver": (["report", NAME, "--lake", "{bare}"], "no silver table holds its episodes, steps"),
    "a misspelt convert flag": (["convert", "{spec}", "--lake", "{tmp}/lake", "--verison", "2.0.0"],
                                "unknown option --verison (did you mean --version?)"),
    "a misspelt mix flag": (["mix", "{spec}", "--overwirte"], "unknown option --overwirte (did you mean --overwrite?)"),
    "a misspelt edit flag": (["edit", "drop", NAME, "--where", "true", "--lake", "{lake}", "--verion=2.0.0"],
                             "unknown option --verion (did you mean --version?)"),
    **{f"{command} outside the lake": ([*args, "--lake", "{tmp}"], OUTSIDE_MESSAGE) for command, args in {
        "validate": ["validate", OUTSIDE], "report": ["report", OUTSIDE], "stats": ["stats", OUTSIDE],
        "query": ["query", "select 1", "--dataset", OUTSIDE], "train": ["train", "--dataset", OUTSIDE, "--config", "x"],
        "evaluate": ["evaluate", "{tmp}", "--dataset", OUTSIDE], "edit": ["edit", "drop", OUTSIDE, "--where", "true"],
        "lerobot": ["lerobot", OUTSIDE, "{tmp}/out"],
    }.items()},
    "lineage outside the lake": (["lineage", "../nosuch", "--lake", "{tmp}"], "dataset name '..' must match"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_user_error_ends_in_one_line(case, inputs, request):
    args, expected = CASES[case]
    places = dict(inputs)
    for fixture in ("lake", "bare"):
        if any(f"{{{fixture}}}" in arg for arg in args):
            places[fixture] = request.getfixturevalue(fixture)
    line = error_line(robolake(*(arg.format(**places) for arg in args)))
    assert expected.format(**places) in line


def test_every_unreadable_source_is_named_with_its_error(inputs):
    line = error_line(robolake("convert", inputs["unreadable"], "--lake", f"{inputs['tmp']}/lake"))
    assert re.search(r"a\.hdf5: cannot open as HDF5: .+; b\.hdf5: cannot open as HDF5: ", line), line


def _mixture(tmp: str, member: dict) -> str:
    path = Path(tmp, f"mixture-{len(list(Path(tmp).glob('mixture-*')))}.yaml")
    path.write_text(yaml.safe_dump({"name": "mixed", "version": "1.0.0",
                                    "source": {"members": [{"dataset": f"{NAME}:1.0.0", **member}]}}))
    return str(path)


@pytest.mark.parametrize("where", ["edit drop", "edit retask", "mix where", "mix retask.where", "stats"])
def test_a_where_injection_writes_nothing(where, inputs, lake):
    tmp = inputs["tmp"]
    injection = INJECTION.format(tmp=tmp)
    args = {
        "edit drop": ["edit", "drop", NAME, "--where", injection],
        "edit retask": ["edit", "retask", NAME, "--where", injection, "--task", "t"],
        "mix where": ["mix", _mixture(tmp, {"where": injection})],
        "mix retask.where": ["mix", _mixture(tmp, {"retask": [{"where": injection, "task": "t"}]})],
        "stats": ["stats", NAME, "--where", injection],
    }[where]
    line = error_line(robolake(*args, "--lake", lake))
    assert "is not one SQL expression" in line
    assert not Path(tmp, "injected.csv").exists()


@pytest.mark.parametrize("sql, expected", [
    ("COPY (SELECT 1) TO '{tmp}/copied.csv'", "--read-only runs a SELECT"),
    ("ATTACH '{tmp}/attached.db'", "--read-only runs a SELECT"),
    ("INSTALL httpfs", "--read-only runs a SELECT"),
    ("SET enable_external_access = true; SELECT 1", "--read-only runs one statement, got 2"),
    ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
    ("SELECT * FROM read_text('{tmp}/spec.yaml')", "Permission Error"),
    ("SELECT * FROM glob('/etc/*')", "Permission Error"),
])
def test_read_only_query_refuses_files_and_statements(sql, expected, inputs, lake):
    tmp = inputs["tmp"]
    line = error_line(robolake("query", "--read-only", sql.format(tmp=tmp), "--lake", lake))
    assert expected in line
    assert not Path(tmp, "copied.csv").exists() and not Path(tmp, "attached.db").exists()


def test_read_only_query_still_reads_the_views(lake):
    done = robolake("query", "--read-only", "--format", "csv", "--lake", lake, "SELECT count(*) AS n FROM episodes")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.splitlines()[1]) > 0


# -- versions: one writer, crash-safe publication, provenance that notices (sections 1-3) ---

DATASET, VERSION = NAME, "1.0.0"


def _spec_file(raw: Path, folder: Path, quality: int) -> Path:
    """A spec of the same name and version; the shard size tells two builds apart."""
    path = folder / f"spec-q{quality}.yaml"
    path.write_text(yaml.safe_dump(robomimic_spec(raw, output={"steps_per_shard": quality},
                                                  splits={"fractions": {"train": 0.5, "test": 0.5}})))
    return path


def _convert(spec_path: Path, lake: Path, *extra: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "convert", str(spec_path), "--lake", str(lake), *extra],
        cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


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
    code, out, err = results[1 - winner]
    published = Lake(str(lake)).current(DATASET, VERSION)
    message = error_line(subprocess.CompletedProcess(builds[1 - winner].args, code, out, err))
    assert f"{DATASET}:{VERSION} is being built by build {published['build']}" in message
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
    [message] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("robolake evaluate: error")]
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
