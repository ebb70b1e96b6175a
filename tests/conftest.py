"""Shared fixtures: synthetic raw data, spec dicts, conversion and RLDS loading helpers."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from pipelines.build import BuildOutcome, convert  # noqa: E402
from robolake.lake import Lake, read_table  # noqa: E402
from robolake.spec import parse_spec  # noqa: E402
from robolake.statistics import ALPHA, ZERO_WIDTH  # noqa: E402
from robolake.sample import write_robomimic_dataset  # noqa: E402

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
CAMERAS = {"front": (96, 128), "wrist": (60, 80)}  # two sizes, small enough to be quick

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


def shared_data(folder: str) -> Path:
    path = SHARED_DATA / folder
    if not path.exists():
        pytest.skip(f"{path} is absent (the real sample files live in ../shared/data, not in a user's clone)")
    return path


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


@pytest.fixture(scope="session")
def robomimic_raw(tmp_path_factory) -> Path:
    """10 synthetic robomimic episodes of 20-ish steps in 3 files, two camera sizes."""
    raw = tmp_path_factory.mktemp("robomimic_raw")
    write_robomimic_dataset(str(raw), episodes=10, steps=24, seed=7, per_file=4, cameras=CAMERAS)
    return raw


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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine their spinning costs 10x."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
