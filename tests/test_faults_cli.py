"""Fault injection (issue 30, items 9, 10, 12): the machine's errors (a read-only or full
disk), deeply nested YAML, infinite numbers, stray and abbreviated arguments, a mistyped
--lake, each end in one line and exit code 2; an installed (non-editable) robolake finds
every file it reads.

A read-only and a full file system are real ones, mounted in a private mount namespace
(`unshare -rm`): file modes do not stop root, whom tests may run as."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.helpers import robomimic_spec, run_convert

REPO = Path(__file__).resolve().parents[1]
NAME = "synthetic_tabletop"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# what TensorFlow and absl print on import, whatever the command
NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
                   r"|To enable the following instructions")
PROGRESS = re.compile(rf"convert {NAME} \S+ .* episodes ")  # a progress bar's last state


def robolake(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=600)


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one line a user error ends in (beside a progress bar's last state); fails on a
    traceback, another exit code or more lines."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines()
             if line.strip() and not NOISE.match(line) and not PROGRESS.match(line)]
    assert len(lines) == 1, lines
    return lines[0]


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
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
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
def spec(tmp_path_factory, robomimic_raw) -> str:
    path = tmp_path_factory.mktemp("specs") / "spec.yaml"
    path.write_text(yaml.safe_dump(robomimic_spec(robomimic_raw)))
    return str(path)


@pytest.fixture(scope="module")
def lake(tmp_path_factory, robomimic_raw) -> str:
    root = tmp_path_factory.mktemp("faults_cli") / "lake"
    run_convert(robomimic_spec(robomimic_raw), root)
    return str(root)


# -- the machine's errors (item 9) -----------------------------------------------------------


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


# -- what a user types (item 10) ------------------------------------------------------------


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


# -- an installed robolake (item 12) --------------------------------------------------------


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

    env = {**ENV, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import cli.main, validation.gate; print(validation.gate.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert where.stdout.strip() == str(site / "validation" / "gate.py"), where.stderr
    for command in ("validate", "report"):
        done = robolake(command, NAME, "--lake", lake, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
