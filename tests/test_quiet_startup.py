"""robolake's processes keep TensorFlow's and Beam's start-up lines off stderr
(robolake/quiet.py): a command that loads TensorFlow and Beam, and Beam's SDK worker
processes. Each runs in a fresh environment, as `make demo` and DVC start them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robolake.quiet import SITE_DIR
from tests.helpers import robomimic_spec

ROBOLAKE = str(Path(sys.executable).parent / "robolake")
START_UP_LINES = [
    "oneDNN custom operations",  # TensorFlow, through absl before absl::InitializeLog
    "absl::InitializeLog",
    "cpu_feature_guard",
    "apitools not found",  # Beam, on the root logger at import
    "semi_persistent_directory",  # Beam's SDK worker, repeated by the runner
    "INFO:",  # the SDK worker's own lines, once `logging` has a stderr handler
    "Loading weights",  # transformers' progress bar as the report loads its sentence model
]


def fresh_environment(**settings: str) -> dict[str, str]:
    """This environment without what robolake sets (pytest's process has imported robolake), plus `settings`."""
    own = {"TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "HF_HUB_DISABLE_PROGRESS_BARS", "PYTHONPATH"}
    return {name: value for name, value in os.environ.items() if name not in own} | settings


def start_up_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(marker in line for marker in START_UP_LINES)]


def robolake(args: list[str], cwd: Path, **settings: str) -> subprocess.CompletedProcess:
    done = subprocess.run([ROBOLAKE, *args], cwd=cwd, env=fresh_environment(**settings), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_a_command_that_loads_tensorflow_prints_no_start_up_lines(tmp_path):
    # `robolake train` loads TensorFlow and Beam (training/data.py); its --help returns before training
    assert start_up_lines(robolake(["train", "--help"], tmp_path).stderr) == []
    # what the user sets wins: oneDNN's custom operations on, announced as TensorFlow loads
    shown = robolake(["train", "--help"], tmp_path, TF_ENABLE_ONEDNN_OPTS="1").stderr
    assert "oneDNN custom operations are on" in shown


def test_a_child_process_is_quiet_and_still_runs_the_sitecustomize_it_shadows(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.user_site_ran = True\n")
    script = "import os, sys; print(sys.user_site_ran, 'robolake' in sys.modules, os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    environment = fresh_environment(PYTHONPATH=f"{SITE_DIR}{os.pathsep}{tmp_path}")  # as robolake's children get it
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=60)
    assert (done.stdout, done.stderr) == ("True True 0\n", "")


@pytest.mark.slow
def test_beam_workers_and_the_report_print_no_start_up_lines(robomimic_raw, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(robomimic_spec(robomimic_raw)))
    lake = str(tmp_path / "lake")
    done = robolake(["convert", str(spec), "--lake", lake,
                     "--direct_running_mode=multi_processing", "--direct_num_workers=2"], tmp_path)
    assert "10 episodes written" in done.stdout
    assert start_up_lines(done.stderr) == []
    # the report loads TensorFlow's readers and, with the `meaning` extra, a sentence model
    report = robolake(["report", robomimic_spec(robomimic_raw)["name"], "--lake", lake], tmp_path)
    assert "coverage.html" in report.stdout and start_up_lines(report.stderr) == []
