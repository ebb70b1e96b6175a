"""Helpers that tests share (conftest.py keeps only fixtures): spec dicts, conversion and
RLDS loading, statistics checks, training configs, tiny policy bundles, synthetic bags and
robolake run as a user runs it (a `python -m cli.main` subprocess)."""

from __future__ import annotations

import copy
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
import torch  # noqa: E402

from cli.main import main  # noqa: E402
from pipelines.build import BuildOutcome, convert  # noqa: E402
from pipelines.filters import RobustStats  # noqa: E402
from robolake.lake import Lake  # noqa: E402
from robolake.spec import parse_spec  # noqa: E402
from robolake.statistics import ALPHA, ZERO_WIDTH, VectorStats  # noqa: E402
from robolake.storage import read_table  # noqa: E402
from tests import bag_factory as bf  # noqa: E402
from training.model import CompactVLA, ModelConfig, add_lora, save_pretrained  # noqa: E402
from training.tokenizers import InstructionTokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
CAMERAS = {"front": (96, 128), "wrist": (60, 80)}  # two sizes, small enough to be quick
BROWSER_TIMEOUT_S = 120  # headless chromium laying out one report page
WIDTH = 1280  # px: the desktop window the HTML reports must fit
MEASURE = """<script>
const page = document.documentElement;
const plots = [...document.querySelectorAll("svg")].map(svg => {
  const box = svg.getBoundingClientRect();
  return {label: svg.getAttribute("aria-label"), width: box.width, height: box.height};
});
const out = document.createElement("pre");
out.id = "measured";
out.textContent = JSON.stringify({viewport: innerWidth, client_width: page.clientWidth,
  scroll_width: page.scrollWidth, height: page.scrollHeight, plots: plots});
document.body.appendChild(out);
</script>"""

ROBOMIMIC_SPEC = {
    "name": "synthetic_tabletop",
    "version": "1.0.0",
    "source": {"format": "hdf5", "layout": "robomimic", "paths": []},
    "control_rate_hz": 10,
    "cameras": [{"name": "front", "size": [64, 64]}, {"name": "wrist", "size": [32, 32], "encoding": "png"}],
    "instruction": {"episode_attr": "language_instruction"},
    "metadata": {
        "task": {"episode_attr": "task"},
        "color": {"episode_attr": "color"},
        "lighting": {"episode_attr": "lighting"},
        "env": {"file_attr": "data/env_args"},
    },
    "episode_length": {"min_steps": 5, "max_steps": 200},
    "output": {"steps_per_shard": 60},
}


def shared_data(folder: str) -> Path:
    path = SHARED_DATA / folder
    if not path.exists():
        pytest.skip(f"{path} is absent (the real sample files live in ../shared/data, not in a user's clone)")
    return path


# ---------------------------------------------------------------- robolake as a user runs it

# what TensorFlow and absl print on import, whatever the command
NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
                   r"|To enable the following instructions")
# a build's progress bar in its last state: "convert NAME VERSION ━━━ 3/4 episodes  120 steps 0:00:02"
PROGRESS = re.compile(r"\w+ \S+ \S+ .*\d+/(\d+|\?) episodes  \d+ steps")


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a robolake subprocess runs in: this one, TensorFlow's C++ log quiet, `env` on top."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}


def robolake(*args: str, cwd: Path | str = REPO,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`robolake ARGS` run as a user runs it, in `cwd`, with `env` on top of this environment (cli_env)."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env=cli_env(env),
                          capture_output=True, text=True, timeout=600)


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one line a user error ends in (beside TensorFlow's import noise and a progress bar's
    last state); fails on a traceback, another exit code than 2 or more lines."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines()
             if line.strip() and not NOISE.match(line) and not PROGRESS.match(line)]
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------- specs, conversion, RLDS


def merged(base: dict, **overrides) -> dict:
    """A deep copy of `base` with top-level sections replaced; `source` is updated instead."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        result[key] = {**result[key], **value} if key == "source" else value
    return result


def robomimic_spec(raw_dir: Path, **overrides) -> dict:
    source = {"paths": [str(raw_dir / "*.hdf5")], **overrides.pop("source", {})}
    return merged(ROBOMIMIC_SPEC, source=source, **overrides)


def run_convert(spec: dict, lake_dir: Path, beam_args: list[str] | None = None, overwrite: bool = False) -> BuildOutcome:
    return convert(parse_spec(spec), Lake(str(lake_dir)), beam_args or [], overwrite=overwrite)


def quarantine_records(lake_dir: Path, name: str, version: str) -> list[dict]:
    """The quarantine of the version's published build or, when every episode was
    quarantined (nothing published), of its one rejected build."""
    lake = Lake(str(lake_dir))
    [build] = [lake.current_build(name, version)] if lake.current(name, version) else lake.build_dirs()
    return read_table(f"{build.quarantine}/quarantine.parquet").to_pylist()


def load_split(gold_dir: str, split: str) -> list[dict]:
    """Every episode of a split as numpy: {'steps': [step dicts], 'episode_metadata': {...}}."""
    builder = tfds.builder_from_directory(gold_dir)
    episodes = []
    for episode in builder.as_dataset(split=split):
        episodes.append(
            {
                "steps": list(episode["steps"].as_numpy_iterator()),
                "episode_metadata": {k: v.numpy().decode() if v.dtype == tf.string else v.numpy()
                                     for k, v in episode["episode_metadata"].items()},
            }
        )
    return episodes


# ---------------------------------------------------------------- statistics


def stats_of(rows: np.ndarray) -> VectorStats:
    stats = VectorStats(rows.shape[1])
    stats.add(rows)
    return stats


def robust_of(rows: np.ndarray) -> RobustStats:
    stats = stats_of(rows)
    median, mad = stats.robust()
    result = stats.result()
    return RobustStats(median, mad, np.asarray(result["q01"]), np.asarray(result["q99"]))


def assert_quantiles_match_numpy(statistics: dict, values: np.ndarray) -> None:
    """q01, median and q99 of a statistics entry (dataset_statistics.json's `action`, ...)
    equal np.quantile (linear) of `values` (rows, dims) within the sketch's value bound:
    ALPHA times the larger magnitude of the two order statistics interpolated."""
    ordered = np.sort(np.asarray(values, np.float64), axis=0)
    n = len(ordered)
    for name, q in (("q01", 0.01), ("median", 0.5), ("q99", 0.99)):
        k = int(np.floor(q * (n - 1)))
        neighbours = np.maximum(np.abs(ordered[k]), np.abs(ordered[min(k + 1, n - 1)]))
        error = np.abs(np.asarray(statistics[name]) - np.quantile(ordered, q, axis=0))
        assert np.all(error <= ALPHA * neighbours * (1 + 1e-9) + ZERO_WIDTH), (name, error, neighbours)


# ---------------------------------------------------------------- training and policies

TINY_MODEL = {"image_size": 32, "patch_size": 8, "vision_hidden": 32, "vision_layers": 1, "vision_heads": 2,
              "lm_hidden": 48, "lm_layers": 2, "lm_heads": 2, "lm_intermediate": 96}


def config_file(tmp_path: Path, **fields) -> str:
    """A training config YAML for a tiny compact VLA (training/config.py fields), with `fields` on top."""
    settings = {"mode": "full", "steps": 30, "batch_size": 8, "effective_batch": 8, "lr": 3e-3, "warmup_steps": 3,
                "val_every": 10, "val_batches": 2, "log_every": 5, "bf16": False, "seed": 1,
                "model": TINY_MODEL, "data": {"image_size": 32, "shuffle_buffer": 64}, **fields}
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def trained_run(raw_dir: Path, root: Path, steps: int) -> tuple[Path, Path]:
    """A lake of the robomimic sample split half train, half test, and a tiny run trained
    on it for `steps` steps (validating halfway): (lake, run folder)."""
    run_convert(robomimic_spec(raw_dir, splits={"fractions": {"train": 0.5, "test": 0.5}}), root / "lake")
    config = config_file(root, steps=steps, val_every=max(1, steps // 2))
    assert main(["train", "--dataset", "synthetic_tabletop", "--config", config, "--lake", str(root / "lake"),
                 "--run-dir", str(root / "run")]) == 0
    return root / "lake", root / "run"


POLICY_CAMERAS = ["front", "wrist"]
INSTRUCTIONS = ["pick up the red block", "open the drawer", "put the cup in the bowl"]
MEAN = [0.003, 0.0002, -0.003, 0.0, 0.0001, 0.004, -0.04]
STD = [0.007, 0.009, 0.013, 0.0017, 0.0017, 0.021, 0.999]
NORMALIZED_MASK = [True] * 6 + [False]  # the gripper is left as recorded


def statistics() -> dict:
    """A dataset_statistics.json document of the shape the pipeline writes (mean_std, gripper unnormalized)."""
    return {
        "action": {"mean": MEAN, "std": STD, "mask": NORMALIZED_MASK,
                   "q01": [-0.02] * 6 + [-1.0], "q99": [0.02] * 6 + [1.0],
                   "min": [-0.05] * 6 + [-1.0], "max": [0.05] * 6 + [1.0]},
        "robolake": {
            "normalization": {"mode": "mean_std", "std_bound": 1.0, "mask": NORMALIZED_MASK, "state": False},
            "action_names": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"],
            "cameras": {name: {"mean": [0.5] * 3, "std": [0.2] * 3} for name in reversed(POLICY_CAMERAS)},
        },
    }


def tiny_config(**overrides) -> ModelConfig:
    sizes = dict(image_size=16, patch_size=8, num_cameras=2, vision_hidden=16, vision_layers=1, vision_heads=2,
                 lm_hidden=32, lm_layers=1, lm_heads=2, lm_intermediate=64, max_instruction_tokens=10)
    return ModelConfig(**{**sizes, **overrides})


def save_tiny_bundle(folder: Path, seed: int = 0, lora: bool = False) -> CompactVLA:
    """A checkpoint bundle of a fresh tiny model (LoRA with nonzero adapters) and `statistics()`; returns the model."""
    torch.manual_seed(seed)
    tokenizer = InstructionTokenizer.from_texts(INSTRUCTIONS)
    model = CompactVLA(tiny_config(), tokenizer)
    if lora:
        add_lora(model, r=2, alpha=4)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(std=0.5)
    save_pretrained(model, tokenizer, folder)
    (folder / "dataset_statistics.json").write_text(json.dumps(statistics()))
    return model.eval()


def frames(robots: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 RGB frames of two different sizes, neither the model's; robots None: one unbatched frame per camera."""
    rng = np.random.default_rng(seed)
    lead = () if robots is None else (robots,)
    return {"front": rng.integers(0, 256, (*lead, 48, 64, 3), dtype=np.uint8),
            "wrist": rng.integers(0, 256, (*lead, 20, 30, 3), dtype=np.uint8)}


# ---------------------------------------------------------------- synthetic ROS bags (tests/bag_factory.py)

BAG_NAME, BAG_VERSION = "synthetic_bags", "1.0.0"
STATE_JOINTS = ["j1", "j2", "j3"]
TWIST_NAMES = ["vx", "vy", "vz", "wx", "wy", "wz"]

BAG_SPEC = {
    "name": BAG_NAME,
    "version": BAG_VERSION,
    "source": {"format": "rosbag", "paths": [], "distro": "ros2_humble", "stamps": "header", "max_age_s": 0.1},
    "control_rate_hz": 10,
    "cameras": [
        {"name": "rgb", "topic": bf.RGB, "size": [64, 64], "encoding": "png"},
        {"name": "jpeg", "topic": bf.JPEG, "size": [64, 64], "encoding": "png"},
    ],
    "state": {"topics": [{"topic": bf.JOINT_STATES, "joints": STATE_JOINTS}]},
    "action": {"topics": [{"topic": bf.CMD, "max_age_s": 0.15}], "names": TWIST_NAMES},
    "instruction": {"topic": bf.INSTRUCTION_TOPIC},
    "metadata": {"task": {"sidecar": "task"}, "operator": {"sidecar": "operator"}},
    "episode_length": {"min_steps": 2},
    "splits": {"fractions": {"train": 1.0}},
    "filters": {"zscore": None, "jump": None},
}


def bag_spec(paths: list[Path], **overrides) -> dict:
    source = {"paths": [str(p) for p in paths], **overrides.pop("source", {})}
    return merged(BAG_SPEC, source=source, **overrides)


def write_bag(path: Path, task: str = "pick", operator: str = "op1", **kwargs) -> bf.ExpectedStreams:
    expected = bf.write_teleop_bag(path, **kwargs)
    bf.write_sidecar(path, task=task, operator=operator)
    return expected


def measure(chromium: list[str], page: Path, folder: Path) -> dict:
    """The figures MEASURE writes into a copy of `page` laid out at WIDTH."""
    measured = folder / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    done = subprocess.run([*chromium, f"--window-size={WIDTH},900", "--dump-dom", measured.as_uri()],
                          capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=True)
    found = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no measurements in chromium's DOM: {done.stderr[-300:]}"
    return json.loads(html.unescape(found.group(1)))
