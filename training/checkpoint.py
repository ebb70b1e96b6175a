"""Checkpoint bundles: everything needed to use a trained policy and to trace it back.

    <bundle>/model.safetensors, model_config.json, language_model/   base weights (training/model.py)
             adapter/                 LoRA adapter weights (safetensors), when trained with LoRA
             tokenizer.json           the instruction tokenizer built from the dataset
             dataset_statistics.json  the statistics that normalized the actions (denormalize with them)
             train_config.yaml        the TrainConfig of the run
             provenance.json          kind "checkpoint": dataset version, gold dir, git, dvc, params
             trainer_state.pt, training_weights.safetensors, rng.json
                                      (last/ only) optimizer, scheduler, step and RNG for an exact resume
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from robolake.hashing import sha256_file
from robolake.lake import GoldVersion
from robolake.provenance import collect
from robolake.staging import staged
from schemas.documents import check
from training.config import TrainConfig
from training.model import CompactVLA, load_pretrained, merge_lora, save_pretrained
from training.tokenizers import InstructionTokenizer


def _provenance(bundle: Path, target: GoldVersion, state: dict, started_at: str) -> dict:
    document = collect(
        artifact={"kind": "checkpoint", "path": str(bundle), "step": state["step"]},
        dataset={
            "name": target.dataset, "version": target.version, "fingerprint": target.manifest["fingerprint"],
            **({"build": target.manifest["build"]} if "build" in target.manifest else {}),
            "gold_dir": target.gold_dir, "statistics_sha256": target.manifest.get("statistics_sha256"),
        },
        inputs=[{"path": path, "sha256": sha256_file(path)} for path in (target.manifest_path, target.statistics_path)],
        started_at=started_at,
    )
    check(document, "provenance", f"{bundle}/provenance.json")
    return document


def save_checkpoint(bundle: Path, model: CompactVLA, tokenizer: InstructionTokenizer, config: TrainConfig,
                    target: GoldVersion, state: dict, started_at: str, optimizer=None, scheduler=None) -> None:
    """Write a bundle into `bundle`, replacing it as a whole (robolake/staging.py)."""
    with staged(str(bundle)) as staging_path:
        staging = Path(staging_path)
        save_pretrained(model, tokenizer, staging)
        shutil.copy(target.statistics_path, staging / "dataset_statistics.json")
        (staging / "train_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
        (staging / "provenance.json").write_text(json.dumps(_provenance(bundle, target, state, started_at), indent=2))
        if optimizer is not None:
            _save_trainer_state(staging, model, optimizer, scheduler, state)


def _save_trainer_state(staging: Path, model: CompactVLA, optimizer, scheduler, state: dict) -> None:
    """What an exact resume needs: weights, optimizer, scheduler, step and RNG states."""
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, staging / "training_weights.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state,
                "torch_rng": torch.get_rng_state()}, staging / "trainer_state.pt")
    numpy_state = np.random.get_state()
    (staging / "rng.json").write_text(json.dumps({
        "python": random.getstate()[1], "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }))


def load_trainer_state(bundle: Path, model: CompactVLA, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG from a last/ bundle; returns its state."""
    model.load_state_dict(load_file(bundle / "training_weights.safetensors"))
    saved = torch.load(bundle / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    rng = json.loads((bundle / "rng.json").read_text())
    random.setstate((3, tuple(rng["python"]), None))
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    return saved["state"]


def write_merged(bundle: Path) -> Path:
    """bundle/merged: the LoRA adapters folded into the base weights, with the same files beside."""
    model, tokenizer = load_pretrained(bundle)
    merged = bundle / "merged"
    save_pretrained(merge_lora(model), tokenizer, merged)
    for name in ("dataset_statistics.json", "train_config.yaml", "provenance.json"):
        shutil.copy(bundle / name, merged / name)
    return merged
