"""Training configuration: one dataclass, loaded from YAML (`robolake train --config`).

Defaults follow common practice for fine-tuning VLAs (OpenVLA's LoRA recipe): LoRA r=32,
alpha=64, dropout 0.05 on the attention q/v projections; peak LR 3e-4 for LoRA and 1e-5
for full fine-tuning; linear warmup then cosine decay to 10% of the peak; AdamW with
weight decay; gradient accumulation up to the effective batch; clipping at 1.0; bf16
autocast where the device supports it.

The `model` and `data` sections are training.model's ModelConfig and the
DataConfig below. Training fills in the fields that follow from the dataset and the model, whatever
the file says: model.num_cameras (the cameras data.cameras picks, else the dataset's),
model.action_dim and model.instruction_vocab_size (the dataset's actions and instructions),
data.image_size and data.action_horizon (the model's) and data.seed (the run's seed). A
checkpoint's train_config.yaml records the values it was trained with."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

import yaml

from robolake.errors import RobolakeError
from training.frames import TRAIN_CROP_SCALE
from training.model import ModelConfig


@dataclass(frozen=True)
class DataConfig:
    image_size: int = 224  # model input side
    crop_scale: float = TRAIN_CROP_SCALE  # random crop side as a fraction of the image side (eval: centre crop)
    brightness: float = 0.2  # train: colour jitter amplitudes (factor in [1 - a, 1 + a]); no flips,
    contrast: float = 0.2  # they would change what an action means
    saturation: float = 0.2
    shuffle_buffer: int = 2000  # train: steps
    cameras: tuple[str, ...] | None = None  # None: every camera of the dataset, sorted by name
    action_horizon: int = 1  # steps of `action_chunk`: this step's action and the next ones in its episode
    seed: int = 0


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
    model: ModelConfig = field(default_factory=ModelConfig)  # sizes of a model built from scratch (not with base)
    data: DataConfig = field(default_factory=DataConfig)  # augmentation, shuffle buffer, cameras

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (3e-4 if self.mode == "lora" else 1e-5)

    def accumulation(self, world_size: int) -> int:
        """Micro-steps per optimizer step so that batch x steps x devices reaches the effective batch."""
        return max(1, round(self.effective_batch / (self.batch_size * world_size)))


def _is_tuple(annotation: object) -> bool:
    """`tuple[...]`, or a union with one (`tuple[str, ...] | None`): YAML gives a list."""
    return typing.get_origin(annotation) is tuple or any(_is_tuple(arg) for arg in typing.get_args(annotation))


def _build(cls, data: object, path: str, section: str = ""):
    """A `cls` dataclass from a mapping, its dataclass fields built in turn; one RobolakeError
    naming the file, the section and the allowed fields for an unknown field or a bad value."""
    where = f"{path}: {section}" if section else path
    if not isinstance(data, dict):
        raise RobolakeError(f"{where}: must be a mapping of fields, got {type(data).__name__}")
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = [f"{section}.{name}" if section else str(name) for name in data if name not in allowed]
    if unknown:
        raise RobolakeError(f"{path}: {', '.join(unknown)}: unknown field{'s' if len(unknown) > 1 else ''} "
                            f"(allowed: {', '.join(allowed)})")
    types = typing.get_type_hints(cls)
    values = dict(data)
    for name, value in data.items():
        if dataclasses.is_dataclass(types[name]):
            values[name] = _build(types[name], value or {}, path, f"{section}.{name}" if section else name)
        elif isinstance(value, list) and _is_tuple(types[name]):
            values[name] = tuple(value)
    try:
        return cls(**values)
    except ValueError as exc:  # a check of the dataclass, e.g. ModelConfig's image_size / patch_size
        raise RobolakeError(f"{where}: {exc}") from None


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
