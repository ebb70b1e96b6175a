"""The compact VLA and its tokenizers: binning, vocabulary, learning, LoRA, checkpoints, Hugging Face LMs."""

from __future__ import annotations

import copy
import math
import shutil
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from training.model import (
    CompactVLA,
    ModelConfig,
    VlaPolicy,
    add_lora,
    is_lora,
    load_hf_causal_lm,
    load_pretrained,
    merge_lora,
    save_pretrained,
    trainable_parameters,
)
from training.tokenizers import ActionTokenizer, InstructionTokenizer

pytestmark = [pytest.mark.usefixtures("one_torch_thread")]

INSTRUCTIONS = [
    "Pick up the red block.",
    "put the cup in the bowl",
    "open the drawer",
    "Open the red drawer, please!",
]
TRAIN_STEPS = 40


def tiny_config(**overrides) -> ModelConfig:
    sizes = dict(
        image_size=32, patch_size=8, num_cameras=2, vision_hidden=32, vision_layers=2, vision_heads=2,
        lm_hidden=64, lm_layers=2, lm_heads=2, lm_intermediate=128, action_dim=7, max_instruction_tokens=12,
    )
    return ModelConfig(**{**sizes, **overrides})




@pytest.fixture(scope="module")
def tokenizer() -> InstructionTokenizer:
    return InstructionTokenizer.from_texts(INSTRUCTIONS)


@pytest.fixture(scope="module")
def batch() -> dict:
    generator = torch.Generator().manual_seed(7)
    return {
        "images": torch.rand(4, 2, 3, 32, 32, generator=generator),
        "action": torch.rand(4, 7, generator=generator) * 2 - 1,
        "instruction": list(INSTRUCTIONS),
    }


def predict(model: CompactVLA, batch: dict) -> dict:
    return model.predict_actions(batch["images"], batch["instruction"])


def train(model: CompactVLA, batch: dict, steps: int, lr: float) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def trained(tokenizer, batch) -> dict:
    """A tiny model's predictions before and after TRAIN_STEPS full fine-tuning steps on the fixed batch.

    Tests that change the model work on a copy."""
    torch.manual_seed(0)
    model = CompactVLA(tiny_config(), tokenizer)
    before = predict(model, batch)
    losses = train(model, batch, TRAIN_STEPS, lr=3e-3)
    return {"model": model.eval(), "losses": losses, "before": before, "after": predict(model, batch)}


# ---- tokenizers ----


def test_action_bins_edges_and_clipping():
    actions = ActionTokenizer(256)
    width = 2 / 256
    edges = torch.tensor([-1.0, -1 + width, -1 + 2 * width - 1e-4, 0.0, 1 - 1e-4, 1.0])
    assert actions.encode(edges).tolist() == [0, 1, 1, 128, 255, 255]
    assert actions.encode(torch.tensor([-3.0, 1.5])).tolist() == [0, 255]
    assert actions.decode(torch.tensor([0, 255])).tolist() == pytest.approx([-1 + width / 2, 1 - width / 2])

    x = torch.rand(50, 7, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ids = actions.encode(x)
    assert ids.dtype == torch.long and ids.shape == x.shape and 0 <= ids.min() and ids.max() < 256
    assert (actions.decode(ids) - x).abs().max() <= width / 2 + 1e-6
    with pytest.raises(ValueError, match="NaN"):
        actions.encode(torch.tensor([0.0, float("nan")]))


def test_instruction_tokenizer_vocabulary_padding_and_save(tmp_path, tokenizer):
    assert tokenizer.tokens[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert "." in tokenizer.tokens and "," in tokenizer.tokens and "red" in tokenizer.tokens
    assert all(token == token.lower() for token in tokenizer.tokens)
    assert tokenizer.tokens[4] == "the"  # the most frequent word first
    assert InstructionTokenizer.from_texts(INSTRUCTIONS, min_count=2).vocab_size < tokenizer.vocab_size

    ids = tokenizer.encode("OPEN the fridge.", max_length=12)
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
    index = tokenizer.tokens.index
    assert ids[1:-1] == [index("open"), index("the"), tokenizer.unk_id, index(".")]
    assert tokenizer.encode("pick up the red block and then the cup", max_length=5)[-1] == tokenizer.eos_id
    assert len(tokenizer.encode("pick up the red block and then the cup", max_length=5)) == 5

    ids, mask = tokenizer.batch_encode(["open the drawer", "put the cup in the bowl"], max_length=12)
    assert ids.shape == mask.shape == (2, 12) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [5, 8]
    assert (ids[~mask] == tokenizer.pad_id).all()

    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = InstructionTokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.tokens == tokenizer.tokens and loaded.vocab_size == tokenizer.vocab_size


# ---- learning and prediction ----


def test_loss_falls_and_the_model_predicts_the_batch(trained, batch):
    losses = trained["losses"]
    assert losses[-1] < 0.5 * losses[0], losses
    bins = ActionTokenizer(256).encode(batch["action"])
    predicted = trained["after"]["tokens"] - trained["model"].config.instruction_vocab_size
    assert (predicted - bins).abs().max() <= 2


def test_entropy_is_bounded_and_falls_with_training(trained):
    for result in (trained["before"], trained["after"]):
        assert result["entropy"].shape == (4, 7)
        assert (result["entropy"] >= 0).all() and (result["entropy"] <= math.log(256) + 1e-4).all()
    assert trained["after"]["entropy"].mean() < trained["before"]["entropy"].mean()


def test_greedy_decoding_matches_teacher_forcing_and_ignores_padding(trained, batch):
    model = trained["model"]
    result = trained["after"]
    assert result["actions"].shape == (4, 7) and result["actions"].abs().max() <= 1
    # teacher forcing on the predicted actions: the KV-cached loop chose every token's argmax
    forced = model.loss({**batch, "action": result["actions"]})
    assert forced["action_token_accuracy"].item() == 1.0
    # the shortest instruction alone (less padding) gives the same prediction as within the batch
    alone = model.predict_actions(batch["images"][2:3], batch["instruction"][2:3])
    assert torch.equal(alone["tokens"], result["tokens"][2:3])
    assert torch.allclose(alone["entropy"], result["entropy"][2:3], atol=1e-5)


def test_policy_interface(trained, batch):
    model = trained["model"]
    assert isinstance(model, VlaPolicy)
    out = model.loss(batch)
    assert set(out) == {"loss", "action_token_accuracy"} and out["loss"].dim() == 0
    as_uint8 = (batch["images"] * 255).round().to(torch.uint8)
    assert model.predict_actions(as_uint8, batch["instruction"])["actions"].shape == (4, 7)
    with pytest.raises(ValueError, match="images must be"):
        model.predict_actions(batch["images"][:, :1], batch["instruction"])
    with pytest.raises(ValueError, match="actions must be"):
        model.loss({**batch, "action": batch["action"][:, :6]})


# ---- LoRA ----


def lora_model(trained) -> CompactVLA:
    return add_lora(copy.deepcopy(trained["model"]), r=4, alpha=8)


def test_lora_moves_only_adapter_weights(trained, batch):
    model = lora_model(trained)
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < 0.05 * total
    assert not any(p.requires_grad for p in [*model.vision.parameters(), *model.projector.parameters()])
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names and all(".lora_A." in name or ".lora_B." in name for name in names)

    before = {name: value.clone() for name, value in model.state_dict().items()}
    train(model, batch, steps=5, lr=1e-2)
    after = model.state_dict()
    for name, value in before.items():
        if ".lora_" in name:
            assert not torch.equal(value, after[name]), f"adapter {name} did not move"
        else:
            assert torch.equal(value, after[name]), f"base weight {name} changed"


def test_lora_share_with_mlp_targets(trained):
    attention_only = trainable_parameters(lora_model(trained))[0]
    with_mlp = add_lora(copy.deepcopy(trained["model"]), r=4, alpha=8, mlp=True)
    assert trainable_parameters(with_mlp)[0] > attention_only
    with pytest.raises(ValueError, match="already"):
        add_lora(with_mlp)


# ---- checkpoints ----


def assert_same_predictions(a: dict, b: dict) -> None:
    """Identical tokens and actions; entropies within 1e-5 nats, since CPU BLAS results for equal weights
    can differ in the last bits with the weights' memory addresses (seen: up to 1.5e-6)."""
    assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["actions"], b["actions"])
    assert torch.allclose(a["entropy"], b["entropy"], atol=1e-5, rtol=0), (a["entropy"] - b["entropy"]).abs().max()


def test_save_load_round_trip(tmp_path, trained, tokenizer, batch):
    save_pretrained(trained["model"], tokenizer, tmp_path)
    for name in ("model_config.json", "tokenizer.json", "language_model/config.json", "model.safetensors"):
        assert (tmp_path / name).is_file()
    assert not (tmp_path / "adapter").exists()
    model, loaded_tokenizer = load_pretrained(tmp_path)
    assert loaded_tokenizer.tokens == tokenizer.tokens and model.config == trained["model"].config
    assert_same_predictions(predict(model, batch), trained["after"])


def test_lora_save_load_and_merge(tmp_path, trained, tokenizer, batch):
    with warnings.catch_warnings(record=True) as caught:  # wrapping and loading print no library warning
        warnings.simplefilter("always")
        model = lora_model(trained)
        train(model, batch, steps=5, lr=1e-2)
        expected = predict(model, batch)

        save_pretrained(model, tokenizer, tmp_path)
        assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
        loaded, _ = load_pretrained(tmp_path)
    assert not [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert is_lora(loaded)
    assert trainable_parameters(loaded) == trainable_parameters(model)
    assert_same_predictions(predict(loaded, batch), expected)

    merged = merge_lora(loaded)
    assert not is_lora(merged) and not any(".lora_" in name for name in merged.state_dict())
    assert_same_predictions(predict(merged, batch), expected)

    save_pretrained(merged, tokenizer, tmp_path)  # over the LoRA checkpoint: its adapter must go
    assert not (tmp_path / "adapter").exists()
    reloaded, _ = load_pretrained(tmp_path)
    assert_same_predictions(predict(reloaded, batch), predict(merged, batch))


# ---- Hugging Face language models ----


def test_hf_causal_lm_as_the_language_model(tmp_path, tokenizer, batch):
    torch.manual_seed(0)
    hf_config = LlamaConfig(
        vocab_size=100, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True,
    )
    LlamaForCausalLM(hf_config).save_pretrained(tmp_path / "tiny_llama")

    lm = load_hf_causal_lm(tmp_path / "tiny_llama")
    assert isinstance(lm, LlamaForCausalLM) and lm.config.hidden_size == 48
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_causal_lm(tmp_path / "absent")

    model = CompactVLA(tiny_config(hf_language_model=str(tmp_path / "tiny_llama")), tokenizer)
    assert model.projector[-1].out_features == 48
    assert model.language_model.get_input_embeddings().num_embeddings == tokenizer.vocab_size + 256
    out = model.loss(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()

    save_pretrained(model, tokenizer, tmp_path / "checkpoint")  # tied embeddings: saved as two tensors
    shutil.rmtree(tmp_path / "tiny_llama")  # the checkpoint alone restores the model
    loaded, _ = load_pretrained(tmp_path / "checkpoint")
    assert_same_predictions(predict(loaded, batch), predict(model, batch))


# ---- state input ----


def test_state_token_is_read_normalized_and_saved(tmp_path, tokenizer, batch):
    """A model with state input learns actions that only the state determines (the images and
    instructions are the same for every row), and keeps its state bounds through save/load."""
    torch.manual_seed(0)
    model = CompactVLA(tiny_config(state_dim=3), tokenizer)
    model.set_state_bounds(torch.tensor([0.0, -1.0, 5.0]), torch.tensor([2.0, 1.0, 5.0]))
    state = torch.tensor([[0.0, -1.0, 5.0], [2.0, 1.0, 5.0], [0.5, 0.5, 5.0], [1.5, -0.5, 5.0]])
    same_view = {"images": batch["images"][:1].expand(4, -1, -1, -1, -1), "instruction": [INSTRUCTIONS[0]] * 4}
    actions = torch.zeros(4, 7)
    actions[:, 0] = torch.tensor([-0.9, 0.9, -0.3, 0.3])  # a function of the state alone
    losses = train(model, {**same_view, "action": actions, "state": state}, 150, lr=3e-3)
    assert losses[-1] < losses[0] / 4
    predicted = model.predict_actions(same_view["images"], same_view["instruction"], state)["actions"][:, 0]
    assert torch.allclose(predicted, actions[:, 0], atol=0.05)
    # normalization: q01 -> -1, q99 -> +1, clipped beyond; a dimension without spread reads 0
    assert torch.allclose(model._state_embedding(torch.tensor([[9.0, 3.0, 7.0]]), 1),
                          model._state_embedding(torch.tensor([[2.0, 1.0, 5.0]]), 1))
    with pytest.raises(ValueError, match="reads the robot state"):
        model.predict_actions(same_view["images"], same_view["instruction"])
    save_pretrained(model, tokenizer, tmp_path)
    loaded, _ = load_pretrained(tmp_path)
    assert torch.equal(loaded.state_center, model.state_center) and torch.equal(loaded.state_scale, model.state_scale)
    assert_same_predictions(loaded.predict_actions(same_view["images"], same_view["instruction"], state),
                            model.predict_actions(same_view["images"], same_view["instruction"], state))


# ---- action chunks ----


@pytest.mark.parametrize("decoding", ["autoregressive", "parallel"])
def test_a_chunk_model_predicts_every_step_and_ignores_padding(tokenizer, batch, decoding):
    torch.manual_seed(0)
    model = CompactVLA(tiny_config(action_horizon=3, action_decoding=decoding), tokenizer)
    chunk = torch.stack([batch["action"], -batch["action"], batch["action"].flip(1)], dim=1)  # (4, 3, 7)
    padding = torch.tensor([[False, False, False], [False, False, True], [False, True, True], [False] * 3])
    chunk_batch = {**batch, "action_chunk": chunk, "action_is_pad": padding}
    losses = train(model, chunk_batch, TRAIN_STEPS, lr=3e-3)
    assert losses[-1] < losses[0] / 4
    out = model.eval().predict_actions(batch["images"], batch["instruction"])
    assert out["chunk"].shape == (4, 3, 7) and torch.equal(out["actions"], out["chunk"][:, 0])
    assert out["tokens"].shape == out["entropy"].shape == (4, 7)
    kept = ~padding
    assert (out["chunk"][kept] - chunk[kept]).abs().max() < 0.05  # learned where not padding
    # padded steps do not count: changing them leaves the loss as it was
    other = chunk.clone()
    other[padding] = 0.9
    same = model.loss({**chunk_batch, "action_chunk": other})["loss"]
    assert torch.allclose(same, model.loss(chunk_batch)["loss"])
    with pytest.raises(ValueError, match="needs the batch's action_chunk"):
        model.loss(batch)


def test_conv_patch_embedding_gives_one_token_per_patch_and_learns(tokenizer, batch):
    torch.manual_seed(0)
    model = CompactVLA(tiny_config(patch_embedding="conv"), tokenizer)
    assert model.vision(model._pixels(batch["images"])).shape == (4, 2 * 16, 32)  # 32 / 8 = 4x4 patches a camera
    losses = train(model, batch, TRAIN_STEPS, lr=3e-3)
    assert losses[-1] < losses[0] / 4
    with pytest.raises(ValueError, match="power of 2"):
        tiny_config(patch_embedding="conv", patch_size=12, image_size=36)


def test_gaussian_targets_spread_each_value_over_its_neighbouring_bins(tokenizer, batch):
    tokens = ActionTokenizer(256)
    targets = tokens.gaussian_targets(torch.tensor([0.0, 1.0, -0.3]), sigma_bins=2.0)
    assert targets.shape == (3, 256) and torch.allclose(targets.sum(-1), torch.ones(3))
    assert targets[0, 127] == targets[0, 128] == targets[0].max()  # 0.0 is the edge between bins 127 and 128
    assert targets[1].argmax() == 255 and targets[2].argmax() == tokens.encode(torch.tensor(-0.3))
    assert targets[0, 120] < targets[0, 125] < targets[0, 127]  # falls off with distance
    # a model trained on the spread targets still decodes the recorded bins
    torch.manual_seed(0)
    model = CompactVLA(tiny_config(label_sigma_bins=2.0, action_decoding="parallel"), tokenizer)
    train(model, batch, TRAIN_STEPS * 2, lr=3e-3)
    predicted = model.eval().predict_actions(batch["images"], batch["instruction"])["actions"]
    assert (predicted - batch["action"]).abs().max() < 0.05
