"""Checkpoint bundles: everything needed to use a trained policy and to trace it back.

    <bundle>/model.safetensors, model_config.json, language_model/   base weights (training/model.py)
             adapter/                 LoRA adapter weights (safetensors), when trained with LoRA
             tokenizer.json           the instruction tokenizer built from the dataset
             dataset_statistics.json  the statistics that normalized the actions (denormalize with them)
             camera_frames.json       each camera's frame transform in the dataset's spec (crop, size,
                                      encoding): the runtime applies it to live frames
             train_config.yaml        the TrainConfig of the run
             provenance.json          kind "checkpoint": dataset version, gold dir, git, dvc, params
             trainer_state.pt, training_weights.safetensors, rng.json
                                      (last/ only) optimizer, scheduler, step and RNG for an exact resume

Bundles are written and read in local folders: a run on an object store is trained in a
local folder and uploaded (training/train.py), and `local_bundle` downloads a remote one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from robolake import camera_frames
from robolake.errors import RobolakeError
from robolake.hashing import sha256_file
from robolake.lake import GoldVersion
from robolake.provenance import collect
from robolake.staging import staged
from robolake.storage import cache_dir, copy_file, copy_tree, exists, is_remote, join
from schemas.documents import check
from training.config import TrainConfig
from training.model import MODEL_FILES, CompactVLA, load_pretrained, merge_lora, require_files, save_pretrained
from training.tokenizers import InstructionTokenizer


BUNDLE_FILE = "model_config.json"  # every bundle has it
BUNDLE_FILES = (*MODEL_FILES, "dataset_statistics.json", "provenance.json")  # what evaluate reads
TRAINER_FILES = ("training_weights.safetensors", "trainer_state.pt", "rng.json")  # what --resume reads


def _provenance(location: str, target: GoldVersion, state: dict, started_at: str) -> dict:
    document = collect(
        artifact={"kind": "checkpoint", "path": location, "step": state["step"]},
        dataset={
            "name": target.dataset, "version": target.version, "fingerprint": target.manifest["fingerprint"],
            **({"build": target.manifest["build"]} if "build" in target.manifest else {}),
            "gold_dir": target.gold_dir, "statistics_sha256": target.manifest.get("statistics_sha256"),
        },
        inputs=[{"path": path, "sha256": sha256_file(path)} for path in (target.manifest_path, target.statistics_path)],
        started_at=started_at,
    )
    check(document, "provenance", f"{location}/provenance.json")
    return document


def save_checkpoint(bundle: Path, model: CompactVLA, tokenizer: InstructionTokenizer, config: TrainConfig,
                    target: GoldVersion, state: dict, started_at: str, optimizer=None, scheduler=None,
                    location: str | None = None) -> None:
    """Write a bundle into `bundle`, replacing it as a whole (robolake/staging.py);
    `location`: where it will be uploaded to, the path its provenance names (default `bundle`)."""
    with staged(str(bundle)) as staging_path:
        staging = Path(staging_path)
        save_pretrained(model, tokenizer, staging)
        copy_file(target.statistics_path, str(staging / "dataset_statistics.json"))
        (staging / camera_frames.BUNDLE_FILE).write_text(
            json.dumps(camera_frames.camera_document(target.spec.cameras), indent=2))
        (staging / "train_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
        document = _provenance(location or str(bundle), target, state, started_at)
        (staging / "provenance.json").write_text(json.dumps(document, indent=2))
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
    require_files(bundle, TRAINER_FILES)
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
    for name in ("dataset_statistics.json", "train_config.yaml", "provenance.json", camera_frames.BUNDLE_FILE):
        shutil.copy(bundle / name, merged / name)
    return merged


def bundle_location(path: str) -> str:
    """The checkpoint bundle `path` names: itself, or a run folder's best/ (local or remote)."""
    for candidate in (path, join(path, "best")):
        if exists(join(candidate, BUNDLE_FILE)):
            return candidate.rstrip("/")
    raise RobolakeError(f"{path}: not a checkpoint bundle or a run folder with best/ (no {BUNDLE_FILE})")


def local_bundle(path: str) -> Path:
    """`bundle_location(path)` as a local folder with every file of BUNDLE_FILES: itself when
    local; a remote one downloaded afresh (a run's best/ changes while it trains) into
    storage.cache_dir()/checkpoints/<hash of its path>/<name>/."""
    location = bundle_location(path)
    if is_remote(location):
        folder = Path(cache_dir(), "checkpoints", hashlib.sha256(location.encode()).hexdigest()[:16],
                      location.rsplit("/", 1)[-1])
        with staged(str(folder)) as staging:
            copy_tree(location, staging)
    else:
        folder = Path(location)
    require_files(folder, BUNDLE_FILES)
    return folder
