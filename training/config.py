"""Training configuration: one dataclass, loaded from YAML (`robolake train --config`).

Defaults follow common practice for fine-tuning VLAs (OpenVLA's LoRA recipe): LoRA r=32,
alpha=64, dropout 0.05 on the attention q/v projections; peak LR 3e-4 for LoRA and 1e-5
for full fine-tuning; linear warmup then cosine decay to 10% of the peak; AdamW with
weight decay; gradient accumulation up to the effective batch; clipping at 1.0; bf16
autocast where the device supports it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import yaml

from robolake.errors import RobolakeError


@dataclass
class LoraSettings:
    r: int = 32  # rank of the adapter matrices
    alpha: int = 64  # scaling: the update is (alpha / r) * B @ A
    dropout: float = 0.05  # dropout on the adapter's input
    mlp: bool = False  # also adapt the MLP projections (gate/up/down), not only attention q/v


@dataclass
class TrainConfig:
    mode: Literal["lora", "full"] = "lora"  # LoRA adapters on the language model, or every weight
    base: str | None = None  # checkpoint folder to start from (a pretrained compact VLA); None: from scratch
    steps: int = 2000  # optimizer steps
    batch_size: int = 16  # per device and micro-step
    effective_batch: int = 64  # gradient accumulation up to this many samples per optimizer step (all devices)
    lr: float | None = None  # peak learning rate; None: 3e-4 for lora, 1e-5 for full
    min_lr_ratio: float = 0.1  # cosine decay ends at this fraction of the peak
    warmup_steps: int = 100  # linear warmup from 0
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global gradient norm
    bf16: bool = True  # bf16 autocast (CUDA when present, else CPU); false: float32 throughout
    val_every: int = 100  # optimizer steps between validations
    val_batches: int = 20  # batches per validation (the val split's start, the same each time)
    early_stopping_patience: int = 500  # stop when val loss has not improved for this many steps
    log_every: int = 10  # optimizer steps between log lines and TensorBoard points
    seed: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)
    model: dict = field(default_factory=dict)  # ModelConfig fields for a model built from scratch
    data: dict = field(default_factory=dict)  # DataConfig fields (image size, augmentation, shuffle buffer)

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (3e-4 if self.mode == "lora" else 1e-5)

    def accumulation(self, world_size: int) -> int:
        """Micro-steps per optimizer step so that batch x steps x devices reaches the effective batch."""
        return max(1, round(self.effective_batch / (self.batch_size * world_size)))


def _build(cls, data: dict, where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise RobolakeError(f"{where}: unknown fields {sorted(unknown)} (allowed: {sorted(known)})")
    values = dict(data)
    if "lora" in values and cls is TrainConfig:
        values["lora"] = _build(LoraSettings, values["lora"] or {}, f"{where}.lora")
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return cls(**values)


def load_config(path: str, overrides: dict | None = None) -> TrainConfig:
    """A TrainConfig from YAML; unknown fields are one clear error naming them."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise RobolakeError(f"{path}: training config not found") from None
    if not isinstance(data, dict):
        raise RobolakeError(f"{path}: a training config must be a YAML mapping")
    config = _build(TrainConfig, {**data, **(overrides or {})}, path)
    if config.mode not in ("lora", "full"):
        raise RobolakeError(f"{path}: mode must be lora or full, got {config.mode!r}")
    return config
