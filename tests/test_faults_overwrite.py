"""Fault injection, issue 30 items 1, 4 and 9 (part): nothing a user types replaces what is
not its command's own. `lerobot --overwrite`, `train`, `export` and `evaluate --out` refuse
the lake, a project folder, a folder in the lake, a run's checkpoints and a file that is not
their output, in one line; what was there survives. A partly deleted checkpoint ends in one
line naming the missing file. Every case runs as a real `python -m cli.main` process."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from robolake.lake import Lake
from tests.helpers import config_file, robomimic_spec, run_convert

REPO = Path(__file__).resolve().parents[1]
NAME = "synthetic_tabletop"
NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
                   r"|To enable the following instructions")


def robolake(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one line a user error ends in; fails on a traceback, another exit code or more lines."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not NOISE.match(line)]
    assert len(lines) == 1, lines
    return lines[0]


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


# -- item 1: `lerobot --overwrite` replaces only an earlier export ------------------------------


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


# -- item 4: `train` into an existing run needs --overwrite, and replaces only a run -----------


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


# -- item 9 (part): export and evaluate --out onto an existing path, partly deleted checkpoints --


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
