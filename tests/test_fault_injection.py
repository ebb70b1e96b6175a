"""Fault injection: robolake tried as a hostile or careless user would (issues 16 and 30).

User errors and concurrent or killed builds run as real `python -m cli.main`
processes, so what is asserted is what a user sees: the exit code and stderr. A
build is killed inside publication through the ROBOLAKE_KILL_AT hook, not timing luck.
Issue 30: nothing a user types replaces what is not its command's own, damaged lake
files cost one line and not the lake, the machine's errors (a read-only or full disk)
and stray arguments end in one line, Beam's workers end with a killed driver, and an
installed robolake finds every file it reads."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from cli.main import main
from robolake.lake import Lake
from robolake.lake_views import connect
from robolake.publish import KILL_POINTS
from tests.helpers import REPO, cli_env, config_file, error_line, load_split, robolake, robomimic_spec, run_convert

NAME = "synthetic_tabletop"
SILVER_TABLES = ("steps", "episodes", "curated_steps", "episode_stats")


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
        cwd=REPO, env=cli_env(env), text=True,
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


# -- issue 30 items 1, 4 and 9: nothing a user types replaces what is not its command's own ----
# `lerobot --overwrite`, `train`, `export` and `evaluate --out` refuse the lake, a project folder, a folder
# in the lake, a run's checkpoints and a file that is not their output, in one line; what was there survives.


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder`: what must survive a refused command."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def project(robomimic_raw, tmp_path_factory) -> Path:
    """A project folder: notes, a lake with one version (train, val, test), and a run trained
    on it for two steps with an evaluation in its eval/ (the run an eval.json points at)."""
    root = tmp_path_factory.mktemp("project")
    (root / "notes.md").write_text("my notes\n")
    run_convert(robomimic_spec(robomimic_raw, splits={"fractions": {"train": 0.4, "val": 0.3, "test": 0.3}}),
                root / "lake")
    config = config_file(root, steps=2, val_every=2)
    assert main(["train", NAME, "--config", config, "--lake", str(root / "lake"),
                 "--run-dir", str(root / "lake" / "runs" / "tiny")]) == 0
    assert main(["evaluate", str(root / "lake" / "runs" / "tiny"), "--lake", str(root / "lake")]) == 0
    return root


def lake_intact(project: Path, before: dict[str, str]) -> None:
    assert snapshot(project / "lake") == before
    assert Lake(str(project / "lake")).resolve(NAME).version == "1.0.0"


# -- issue 30 item 1: `lerobot --overwrite` replaces only an earlier export -----------------


@pytest.mark.parametrize("out, cwd, expected", [
    ("lake", "project", "is or holds the lake"),
    (".", "project", "is or holds the lake"),
    ("lake/versions", "project", "is or holds the gold version"),
    ("lake/runs/tiny", "project", "is inside the lake"),
])
def test_lerobot_overwrite_never_replaces_the_lake(project, out, cwd, expected):
    before = snapshot(project / "lake")
    line = error_line(robolake("lerobot", NAME, out, "--lake", "lake", "--overwrite", "--images", "image",
                               cwd=project))
    assert expected in line, line
    lake_intact(project, before)
    assert (project / "notes.md").read_text() == "my notes\n"


def test_lerobot_overwrite_refuses_a_folder_that_is_not_an_export(project, tmp_path):
    folder = tmp_path / "mine"
    (folder / "meta").mkdir(parents=True)
    (folder / "meta" / "info.json").write_text("{}")  # LeRobot's layout, but not written by robolake
    (folder / "keep.txt").write_text("mine")
    line = error_line(robolake("lerobot", NAME, str(folder), "--lake", str(project / "lake"), "--overwrite",
                               "--images", "image"))
    assert f"{folder} is not a LeRobot export that robolake wrote" in line
    assert (folder / "keep.txt").read_text() == "mine" and (folder / "meta" / "info.json").read_text() == "{}"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging folder left behind


# -- issue 30 item 4: `train` into an existing run needs --overwrite, replaces only a run ----


def test_train_again_into_a_run_keeps_its_checkpoints(project):
    run = project / "lake" / "runs" / "tiny"
    before = snapshot(run)
    line = error_line(robolake("train", NAME, "--config", config_file(project, steps=2, val_every=2),
                               "--lake", "lake", "--run-dir", "lake/runs/tiny", cwd=project))
    assert "lake/runs/tiny already exists; pass --resume to continue it, or --overwrite" in line
    assert snapshot(run) == before and (run / "eval" / "eval.json").exists()


def test_train_overwrite_refuses_a_folder_that_is_not_a_run(project, tmp_path):
    folder = tmp_path / "work"
    (folder / "best").mkdir(parents=True)
    (folder / "best" / "weights.bin").write_bytes(b"not robolake's")
    (folder / "notes.md").write_text("mine")
    line = error_line(robolake("train", NAME, "--config", config_file(tmp_path, steps=2, val_every=2),
                               "--lake", str(project / "lake"), "--run-dir", str(folder), "--overwrite"))
    assert f"{folder} is not a training run folder that robolake wrote" in line
    assert snapshot(folder) == {"best/weights.bin": hashlib.sha256(b"not robolake's").hexdigest(),
                                "notes.md": hashlib.sha256(b"mine").hexdigest()}


def test_train_overwrite_and_dvc_repro_start_a_run_afresh(project, tmp_path):
    """--overwrite replaces a run's outputs; after `dvc repro` deleted them (its outs), no flag is needed."""
    run = tmp_path / "run"
    shutil.copytree(project / "lake" / "runs" / "tiny", run)
    (run / "tensorboard" / "stale.txt").write_text("from the earlier run")
    config = config_file(tmp_path, steps=2, val_every=2)
    done = robolake("train", NAME, "--config", config, "--lake", str(project / "lake"), "--run-dir", str(run),
                    "--overwrite")
    assert done.returncode == 0, done.stderr
    assert not (run / "tensorboard" / "stale.txt").exists() and (run / "best" / "model.safetensors").exists()
    assert (run / "eval" / "eval.json").exists()  # not a train output: left alone
    for name in ("best", "last", "tensorboard", "metrics.csv", "summary.json"):  # what dvc removes first
        shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    done = robolake("train", NAME, "--config", config, "--lake", str(project / "lake"), "--run-dir", str(run))
    assert done.returncode == 0, done.stderr


# -- issue 30 item 9: export and evaluate --out onto an existing path, partly deleted checkpoints


def test_export_refuses_an_existing_path(project, tmp_path):
    best = project / "lake" / "runs" / "tiny" / "best"
    mine = tmp_path / "policy.pt"
    mine.write_text("my file")
    assert "already exists; pass --overwrite" in error_line(robolake("export", str(best), str(mine)))
    line = error_line(robolake("export", str(best), str(mine), "--overwrite"))
    assert f"{mine} is not a TorchScript export that robolake wrote" in line
    assert mine.read_text() == "my file"
    before = snapshot(best)
    line = error_line(robolake("export", str(best), str(best), "--overwrite"))
    assert "is or holds the checkpoint" in line and snapshot(best) == before


def test_export_overwrite_replaces_an_earlier_export(project, tmp_path):
    best, out = project / "lake" / "runs" / "tiny" / "best", tmp_path / "policy.pt"
    for overwrite in ([], ["--overwrite"]):
        done = robolake("export", str(best), str(out), "--observations", "4", *overwrite)
        assert done.returncode == 0, done.stderr
    assert os.listdir(tmp_path) == ["policy.pt"]


@pytest.mark.parametrize("out, expected", [
    ("{tmp}/a_file", "is not an evaluation folder that robolake wrote"),
    ("{tmp}/folder", "is not an evaluation folder that robolake wrote"),
    ("{project}", "is or holds the lake"),
    ("{project}/lake/runs/tiny", "is or holds the checkpoint"),
])
def test_evaluate_out_refuses_what_is_not_an_evaluation(project, tmp_path, out, expected):
    (tmp_path / "a_file").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.md").write_text("mine")
    before = snapshot(project)
    line = error_line(robolake("evaluate", str(project / "lake" / "runs" / "tiny"), "--lake",
                               str(project / "lake"), "--out", out.format(tmp=tmp_path, project=project)))
    assert expected in line, line
    assert snapshot(project) == before
    assert (tmp_path / "a_file").read_text() == "mine" and (tmp_path / "folder" / "notes.md").read_text() == "mine"


@pytest.mark.parametrize("command, missing", [
    ("evaluate", "best/model.safetensors"),
    ("evaluate", "best/provenance.json"),
    ("evaluate", "best/dataset_statistics.json"),
    ("export", "best/model.safetensors"),
    ("export", "best/dataset_statistics.json"),
    ("resume", "last/trainer_state.pt"),
])
def test_a_partly_deleted_checkpoint_is_named_in_one_line(project, tmp_path, command, missing):
    run = tmp_path / "run"
    shutil.copytree(project / "lake" / "runs" / "tiny", run)
    (run / missing).unlink()
    lake = str(project / "lake")
    args = {
        "evaluate": ["evaluate", str(run), "--lake", lake, "--out", str(tmp_path / "eval")],
        "export": ["export", str(run / "best"), str(tmp_path / "policy.pt")],
        "resume": ["train", NAME, "--config", config_file(tmp_path, steps=4, val_every=2), "--lake", lake,
                   "--run-dir", str(run), "--resume"],
    }[command]
    folder, name = missing.split("/")
    line = error_line(robolake(*args))
    assert f"{run / folder}: the checkpoint has no {name}; restore" in line, line


# -- issue 30 items 2, 3, 6, 7 and 9: the lake's own files --------------------------------------
# gc keeps what a checkpoint, a moved lake or a running reader needs; a stalled build never publishes a
# deleted build; a damaged lease.json or current.json costs one line, not the lake. The stalled commit is
# replayed in-process, where the stall can be placed exactly.


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
def rebuilt(robomimic_raw, tmp_path_factory) -> tuple[Path, str, str]:
    """A lake whose version was rebuilt: (lake, replaced build id, published build id)."""
    lake = tmp_path_factory.mktemp("rebuilt") / "lake"
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


# -- issue 30 item 2: gc keeps what a checkpoint, a moved lake or a running reader needs ------


def test_gc_runs_adds_folders_to_lake_runs(rebuilt, tmp_path):
    root, old, _ = rebuilt
    root, lake = _copy(root, tmp_path)
    _checkpoint(lake, root / "runs" / "r1", old)
    (tmp_path / "elsewhere").mkdir()
    out = ok(robolake("gc", "--lake", str(root), "--runs", str(tmp_path / "elsewhere"))).stdout
    assert f"keep   {NAME}:{VERSION} build {old}: replaced" in out and "removed 0" in out
    assert Path(lake.build(NAME, VERSION, old).gold, "manifest.json").exists()


def test_gc_matches_a_moved_lakes_provenance_by_build(rebuilt, tmp_path):
    root, old, _ = rebuilt
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


# -- issue 30 item 3: a build that stalled past its lease never publishes a deleted build ---


def test_a_stalled_build_that_lost_its_lease_publishes_nothing(rebuilt, tmp_path, monkeypatch):
    from robolake import publish
    from robolake.errors import RobolakeError
    from robolake.lease import Lease

    root, _, published = rebuilt
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


# -- issue 30 items 6 and 9: a damaged lease.json ---------------------------------------------

OLD = time.time() - 3600  # an mtime well past the lease's stale threshold



@pytest.mark.parametrize("content", ["", "{\"build\": 1}", "[]"], ids=["empty", "wrong fields", "a list"])
def test_a_fresh_unreadable_lease_is_one_line_naming_it(content, robomimic_raw, rebuilt, tmp_path):
    root, _, _ = rebuilt
    root, lake = _copy(root, tmp_path)
    Path(lake.lease(NAME, VERSION)).write_text(content)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(robomimic_spec(robomimic_raw)))
    line = error_line(robolake("convert", str(spec), "--lake", str(root), "--overwrite"))
    assert f"{lake.lease(NAME, VERSION)}: unreadable lease" in line and "taken over once" in line
    ok(robolake("gc", "--lake", str(root)))  # gc goes on beside it


def test_an_old_unreadable_lease_is_taken_over(robomimic_raw, rebuilt, tmp_path):
    root, _, _ = rebuilt
    root, lake = _copy(root, tmp_path)
    lease = Path(lake.lease(NAME, VERSION))
    lease.write_text("")  # what a full disk left
    os.utime(lease, (OLD, OLD))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(robomimic_spec(robomimic_raw)))
    done = ok(robolake("convert", str(spec), "--lake", str(root), "--overwrite"))
    assert f"took over the lease of {NAME}:{VERSION} from {lease}, unreadable (empty or not JSON)" in done.stderr
    assert not lease.exists()


# -- issue 30 item 7: a damaged current.json --------------------------------------------------


DAMAGE = {"empty": "", "corrupt": "{\"build\": ", "wrong shape": "{\"build\": 3}",
          "a missing build": "{\"build\": \"20200101T000000Z-gone0000\", \"replaced\": []}"}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_pointer_is_one_line_for_its_version_and_gc_repair_restores_it(damage, rebuilt, tmp_path):
    root, old, published = rebuilt
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


def test_other_versions_go_on_beside_a_damaged_pointer(robomimic_raw, rebuilt, tmp_path):
    root, _, _ = rebuilt
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


# -- issue 30 items 9, 10 and 12: the machine's errors and what a user types, in one line -------
# A read-only and a full file system are real ones, mounted in a private mount namespace (`unshare -rm`):
# file modes do not stop root, whom tests may run as.


def usage_error(done: subprocess.CompletedProcess) -> str:
    """The error line of argparse, which prints the usage above it."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    return done.stderr.strip().splitlines()[-1]


def in_namespace(mount: str, args: list[str], after: str = "") -> subprocess.CompletedProcess:
    """robolake run in a private mount namespace once the shell command `mount` has run;
    `after` runs there too, after robolake, whose exit code is returned."""
    command = shlex.join([sys.executable, "-m", "cli.main", *args])
    script = f"{mount} || exit 99; {command}; code=$?; {after or 'true'}; exit $code"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode != 99, f"{mount}: {done.stderr}"
    return done


@pytest.fixture(scope="module")
def mounts(tmp_path_factory) -> None:
    """Skips where this sandbox cannot mount in a private namespace."""
    folder = tmp_path_factory.mktemp("probe")
    try:
        done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("no unshare here: a read-only or full file system needs a private mount namespace")
    if done.returncode != 0:
        pytest.skip(f"this sandbox refuses a private mount namespace (unshare -rm): {done.stderr.strip()}")


@pytest.fixture(scope="module")
def spec(inputs) -> str:
    """The good spec of `inputs`, the one `lake` was built from."""
    return inputs["spec"]


# -- issue 30 item 9: the machine's errors ----------------------------------------------------


@pytest.mark.parametrize("command", [["convert", "{spec}", "--overwrite"], ["validate", NAME], ["report", NAME]])
def test_a_read_only_lake_ends_in_one_line(command, mounts, spec, lake):
    read_only = f"mount --bind {lake} {lake} && mount -o remount,bind,ro {lake}"
    line = error_line(in_namespace(read_only, [arg.format(spec=spec) for arg in command] + ["--lake", lake]))
    assert re.search(rf"{re.escape(lake)}/\S+: Read-only file system: choose a writable place", line), line


def test_a_full_disk_mid_build_ends_in_one_line_and_publishes_nothing(mounts, spec, tmp_path):
    disk, listing = tmp_path / "disk", tmp_path / "left.txt"
    disk.mkdir()
    done = in_namespace(f"mount -t tmpfs -o size=256k tmpfs {disk}", ["convert", spec, "--lake", f"{disk}/lake"],
                        after=f"find {disk} -type f > {listing}")
    assert "No space left on device: free some space" in error_line(done)
    left = listing.read_text().split()
    assert not [path for path in left if path.endswith(("current.json", "lease.json"))], left


# -- issue 30 item 10: what a user types ------------------------------------------------------


def test_deeply_nested_yaml_ends_in_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    assert f"{path}: nested too deeply to read" in error_line(robolake("convert", str(path), "--lake", str(tmp_path)))


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_every_number_of_a_spec_is_finite(value, spec, tmp_path):
    line = error_line(robolake("convert", spec, "--set", f"control_rate_hz={value}", "--lake", str(tmp_path / "lake")))
    assert "control_rate_hz: Input should be a finite number" in line
    assert not (tmp_path / "lake").exists()


def test_a_stray_argument_is_not_handed_to_beam(spec, tmp_path):
    lake = str(tmp_path / "lake")
    line = error_line(robolake("convert", spec, "-lake", lake))
    assert line.endswith("unexpected option '-lake' (robolake convert --help lists its arguments; options, "
                         "Apache Beam's too, start with two dashes: --lake DIR, --runner=NAME)")
    assert "unexpected argument 'second.yaml'" in error_line(robolake("convert", spec, "second.yaml", "--lake", lake))
    assert "option --runner needs a value" in error_line(robolake("convert", spec, "--lake", lake, "--runner"))
    assert not Path(lake).exists()


@pytest.mark.parametrize("args", [["convert", "{spec}", "--lake", "{lake}", "--overwrit"],
                                  ["edit", "drop", NAME, "--where", "true", "--lake", "{lake}", "--overwrit"]])
def test_an_abbreviated_overwrite_replaces_nothing(args, spec, lake):
    before = sorted(path.name for path in Path(lake).glob("versions/*/*/builds/*"))
    line = error_line(robolake(*(arg.format(spec=spec, lake=lake) for arg in args)))
    assert "unknown option --overwrit (did you mean --overwrite?)" in line
    assert sorted(path.name for path in Path(lake).glob("versions/*/*/builds/*")) == before


def test_no_command_takes_an_abbreviated_option(lake):
    assert usage_error(robolake("summary", "--lak", lake)).endswith("unrecognized arguments: --lak " + lake)
    # every parser is robolake.arguments.ArgumentParser, which has no prefix matching
    plain = [str(path.relative_to(REPO)) for path in REPO.glob("[!.]*/**/*.py")
             if "argparse.ArgumentParser(" in path.read_text(encoding="utf-8") and path.parts[-2] != "tests"]
    assert not plain, f"argparse.ArgumentParser( matches --overwrit to --overwrite: {plain}"


@pytest.mark.parametrize("rows", ["-1", "0"])
def test_max_rows_is_positive(rows, lake):
    line = usage_error(robolake("query", "select 1", "--lake", lake, "--max-rows", rows))
    assert line.endswith(f"argument --max-rows: expected a whole number above 0, got '{rows}'")


@pytest.mark.parametrize("args", [["gc"], ["summary"], ["query", "select 1"], ["validate", NAME], ["report", NAME],
                                  ["lineage", f"{NAME}/1.0.0"]])
def test_a_mistyped_lake_is_named(args, tmp_path):
    missing = str(tmp_path / "lakee")
    for root in (missing, str(tmp_path)):  # nothing there; a folder that is no lake
        assert f"no lake at {root} (no raw/ manifest, no versions/): check --lake" in error_line(
            robolake(*args, "--lake", root))


# -- issue 30 item 12: an installed robolake --------------------------------------------------


@pytest.mark.slow
def test_the_installed_wheel_has_every_file_it_reads(lake, tmp_path):
    """`pip install .` as the Dockerfile does (its copy of the sources), without
    dependencies, into a folder: validate and report run from it, outside the checkout."""
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [pattern.rstrip("*") for pattern in settings["tool"]["setuptools"]["packages"]["find"]["include"]]
    source, site = tmp_path / "source", tmp_path / "site"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in packages:
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(site), str(source)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    missing = [str(path.relative_to(source)) for package in packages for path in (source / package).rglob("*")
               if path.is_file() and not (site / path.relative_to(source)).exists()]
    assert not missing, f"not in the installed package: {missing}"

    env = cli_env({"PYTHONPATH": str(site)})
    where = subprocess.run([sys.executable, "-c", "import cli.main, validation.gate; print(validation.gate.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert where.stdout.strip() == str(site / "validation" / "gate.py"), where.stderr
    for command in ("validate", "report"):
        done = robolake(command, NAME, "--lake", lake, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr, done.stderr


# -- issue 30 item 11: Beam's SDK workers end with a driver killed outright -------------------


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
        cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
