"""Training configs: the `model` and `data` sections are ModelConfig and DataConfig, so a
typo in either is one error naming the file, the section and the allowed fields; a config
round-trips through a bundle's train_config.yaml; training fills in the dataset's fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from robolake.errors import RobolakeError
from training.config import DataConfig, load_config
from training.model import ModelConfig
from training.runtime import checkpoint_cameras, checkpoint_crop_scale
from training.train import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
TINY = {"image_size": 32, "patch_size": 16, "vision_hidden": 16, "vision_layers": 1, "vision_heads": 2,
        "lm_hidden": 16, "lm_layers": 1, "lm_heads": 2, "lm_intermediate": 32}


def write(tmp_path: Path, settings: dict) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


@pytest.mark.parametrize("name", ["pretrain.yaml", "lora.yaml"])
def test_the_demo_configs_load_typed_sections(name):
    config = load_config(str(CONFIGS / name))
    assert isinstance(config.model, ModelConfig) and isinstance(config.data, DataConfig)
    assert config.data.shuffle_buffer == 512
    if name == "pretrain.yaml":
        assert (config.model.image_size, config.model.action_horizon, config.model.action_decoding) == (64, 8, "parallel")


@pytest.mark.parametrize(("section", "typo", "field"), [
    ("model", "lm_hiden", "lm_hidden"),
    ("data", "shufle_buffer", "shuffle_buffer"),
    ("lora", "rank", "alpha"),
])
def test_a_typo_in_a_section_is_one_error_naming_the_file_section_and_allowed_fields(tmp_path, section, typo, field):
    path = write(tmp_path, {"mode": "full", section: {typo: 1}})
    with pytest.raises(RobolakeError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {section}.{typo}: unknown field (allowed: ")
    assert field in message.split("allowed: ")[1]


def test_a_bad_model_value_is_an_error_naming_the_section(tmp_path):
    path = write(tmp_path, {"model": {"image_size": 30, "patch_size": 16}})
    with pytest.raises(RobolakeError, match=f"^{path}: model: image_size 30 is not a multiple of patch_size 16$"):
        load_config(path)
    with pytest.raises(RobolakeError, match=f"^{path}: data: must be a mapping of fields, got list$"):
        load_config(write(tmp_path, {"data": [1, 2]}))


def test_a_config_round_trips_through_a_bundles_train_config_yaml(tmp_path):
    settings = {**yaml.safe_load((CONFIGS / "pretrain.yaml").read_text()), "betas": [0.8, 0.9]}
    settings["data"] = {**settings["data"], "cameras": ["wrist"], "crop_scale": 0.9}
    config = load_config(write(tmp_path, settings))
    assert config.data.cameras == ("wrist",) and config.betas == (0.8, 0.9)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    saved = bundle / "train_config.yaml"
    saved.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))  # as save_checkpoint writes it
    assert load_config(str(saved)) == config
    assert list(yaml.safe_load(saved.read_text())) == [f.name for f in dataclasses.fields(config)]
    assert checkpoint_cameras(bundle, {}) == ["wrist"] and checkpoint_crop_scale(bundle) == 0.9


def test_training_fills_in_the_dataset_fields(tmp_path):
    info = {"cameras": ["front", "wrist"], "action_dim": 6, "state_dim": 0, "instructions": ["pick the cup"]}
    config = load_config(write(tmp_path, {"mode": "full", "model": TINY, "data": {"cameras": ["wrist"]}}))
    model, tokenizer = build_model(config, info)
    assert (model.config.num_cameras, model.config.action_dim) == (1, 6)
    assert model.config.instruction_vocab_size == tokenizer.vocab_size
    assert dataclasses.replace(model.config, num_cameras=2, action_dim=7, instruction_vocab_size=None) == config.model
