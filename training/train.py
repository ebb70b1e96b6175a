"""`robolake train NAME[:VERSION] --config YAML`: fine-tune a VLA policy on a
gold dataset version, LoRA or full, in one readable loop.

Per optimizer step: `accumulation` micro-batches (bf16 autocast when enabled), a
non-finite loss or gradient stops the run with its likely causes, gradients clipped,
AdamW, warmup + cosine LR. Every `val_every` steps: validation loss on the start of the
val split, the best and the last checkpoints, early stopping. Under `torchrun
--nproc_per_node=N` the same script runs DDP (gloo on CPU, nccl on CUDA); rank 0 writes.

A run folder holds `best/` and `last/` checkpoint bundles (training/checkpoint.py),
`metrics.csv` (DVC plots), `tensorboard/` and `summary.json` (DVC metrics). A remote run
folder (s3://, gs://) is trained in a local one (storage.cache_dir()/runs/<hash of its
path>/, filled from the remote one for --resume) and uploaded when training ends; the
bundles' provenance names the remote folder, and the data is read through the gold
version's local copy (GoldVersion.local)."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader

from robolake import progress
from robolake.arguments import ArgumentParser, positive_int
from robolake.errors import RobolakeError
from robolake.lake import GoldVersion, Lake
from robolake.names import dataset_argument
from robolake.overwrite import artifact_kind, check_replace
from robolake.pins import reading
from robolake.provenance import utc_now
from robolake.storage import cache_dir, copy_tree, delete_tree, exists, is_remote, join, open_read
from training.checkpoint import load_trainer_state, save_checkpoint
from training.config import TrainConfig, load_config
from training.data import RldsSteps, collate, dataset_info
from training.model import CompactVLA, add_lora, load_pretrained, trainable_parameters
from training.tokenizers import InstructionTokenizer

RUN_OUTPUTS = ("best", "last", "metrics.csv", "summary.json", "tensorboard")  # what a run writes in its folder
METRIC_FIELDS = ["step", "loss", "action_token_accuracy", "val_loss", "val_action_token_accuracy", "lr",
                 "grad_norm", "samples_per_s"]


class TrainingDiverged(RobolakeError):
    """A loss or gradient that is NaN or infinite."""


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """DDP from torchrun's environment (gloo on CPU, nccl on CUDA), or a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Distributed(int(os.environ.get("RANK", "0")), world_size, device)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to min_lr_ratio of it at the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress_ = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class PolicyLoss(nn.Module):
    """The policy's loss as a module's forward, so that DDP sees (and syncs) the call."""

    def __init__(self, policy: CompactVLA):
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict) -> dict:
        return self.policy.loss(batch)


def build_model(config: TrainConfig, info: dict) -> tuple[CompactVLA, InstructionTokenizer]:
    """A model from `config.base` (a checkpoint bundle) or built from config with a tokenizer
    of the dataset's instructions (config.model, its dataset fields filled in: training/config.py);
    LoRA adapters added in lora mode."""
    cameras = config.data.cameras or info["cameras"]
    if config.base:
        model, tokenizer = load_pretrained(config.base)
        if model.config.action_dim != info["action_dim"] or model.config.num_cameras != len(cameras):
            raise RobolakeError(f"base {config.base}: built for {model.config.action_dim}-d actions and "
                                f"{model.config.num_cameras} cameras, the dataset has {info['action_dim']} and "
                                f"{len(cameras)}")
    else:
        tokenizer = InstructionTokenizer.from_texts(info["instructions"])
        model = CompactVLA(replace(config.model, num_cameras=len(cameras), action_dim=info["action_dim"],
                                   instruction_vocab_size=tokenizer.vocab_size), tokenizer)
        if model.config.state_dim:
            if model.config.state_dim != info["state_dim"]:
                raise RobolakeError(f"model.state_dim {model.config.state_dim}: the dataset's state has "
                                    f"{info['state_dim']} dims")
            proprio = info["statistics"]["proprio"]
            model.set_state_bounds(proprio["q01"], proprio["q99"])
    if config.mode == "lora":
        lora = config.lora
        add_lora(model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout, mlp=lora.mlp)
    else:
        model.requires_grad_(True)
    return model, tokenizer


def _batches(dataset: RldsSteps, batch_size: int):
    return iter(DataLoader(dataset, batch_size=batch_size, collate_fn=collate))


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def check_finite(value: torch.Tensor, what: str, step: int, lr: float, last_good: str | None) -> None:
    if not torch.isfinite(value).all():
        raise TrainingDiverged(
            f"{what} is {value.item()} at step {step} (learning rate {lr:.2e}). Likely causes: a learning rate "
            f"too high for this model (try 10x lower or a longer warmup), actions that are not normalized "
            f"(check dataset_statistics.json and normalization.mask), or outliers the dataset's filters let "
            f"through (robolake report shows action histograms). Last good checkpoint: {last_good or 'none yet'}"
        )


@torch.no_grad()
def validate(loss_module: nn.Module, dataset: RldsSteps, config: TrainConfig, ctx: Distributed) -> dict:
    """Mean loss and action-token accuracy over the first `val_batches` batches of each
    rank's share of the val split, averaged over ranks so that every rank takes the same
    best-checkpoint and early-stopping decisions. Runs the bare module: ranks may see
    different numbers of batches, and DDP's forward would wait for the others."""
    policy_loss = loss_module.module if isinstance(loss_module, nn.parallel.DistributedDataParallel) else loss_module
    policy_loss.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, accuracy sum, batches
    for i, batch in enumerate(_batches(dataset, config.batch_size)):
        if i == config.val_batches:
            break
        with _autocast(ctx.device, config.bf16):
            out = policy_loss(batch)
        totals += torch.tensor([float(out["loss"]), float(out["action_token_accuracy"]), 1.0], dtype=torch.float64)
    policy_loss.train()
    if ctx.world_size > 1:
        dist.all_reduce(totals)
    count = max(1.0, float(totals[2]))
    return {"loss": float(totals[0]) / count, "action_token_accuracy": float(totals[1]) / count}


class MetricsLog:
    """metrics.csv (one row per log step, DVC plots) and TensorBoard scalars, on rank 0."""

    def __init__(self, run_dir: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / "metrics.csv"
        keep = []
        if resume_step and self.path.exists():  # drop rows past the checkpoint being resumed
            with open(self.path, newline="") as f:
                keep = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(keep)
        self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step or None)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, METRIC_FIELDS).writerow({k: row.get(k, "") for k in METRIC_FIELDS})
        for key, value in row.items():
            if key != "step" and value != "":
                self.tensorboard.add_scalar(key, value, row["step"])
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()


def train(config: TrainConfig, target: GoldVersion, run_dir: Path, resume: bool = False,
          stop_after: int | None = None, location: str | None = None) -> dict:
    """Run the loop; returns the summary (also written to run_dir/summary.json). With
    `stop_after`, stop after that many optimizer steps of this run (a time-boxed or
    preemptible job), saving `last/` there so that `resume` continues exactly.
    `location`: where run_dir will be uploaded to, the folder the bundles' provenance
    names (default run_dir itself)."""
    ctx = setup_distributed()
    started_at, started = utc_now(), time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    info = dataset_info(target.gold_dir)
    model, tokenizer = build_model(config, info)
    model.to(ctx.device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.peak_lr, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    start, best_val, best_step = 0, math.inf, 0
    if resume and (run_dir / "last").exists():
        state = load_trainer_state(run_dir / "last", model, optimizer, scheduler)
        start, best_val, best_step = state["step"], state["best_val"], state["best_step"]
    trainable, total = trainable_parameters(model)
    if ctx.main:
        progress.console.print(f"{config.mode}: {trainable:,} trainable parameters of {total:,} "
                               f"({trainable / total:.2%})")
    loss_module = PolicyLoss(model)
    if ctx.world_size > 1:
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    data = replace(config.data, image_size=model.config.image_size, action_horizon=model.config.action_horizon,
                   seed=config.seed)
    trained = replace(config, model=model.config, data=data)  # the bundles' train_config.yaml
    train_data = RldsSteps(target.gold_dir, "train", data, train=True, rank=ctx.rank, world_size=ctx.world_size)
    val_data = RldsSteps(target.gold_dir, "val" if "val" in info["splits"] else "train", data, train=False,
                         rank=ctx.rank, world_size=ctx.world_size, epochs=1)
    accumulation = config.accumulation(ctx.world_size)
    batches = _batches(train_data, config.batch_size)
    for _ in range(start * accumulation):  # the data stream is seeded: resume where the checkpoint left it
        next(batches)
    log = MetricsLog(run_dir, start) if ctx.main else None
    last_good = str(run_dir / "last") if start else None
    summary = {}
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[status]}"), TimeRemainingColumn()]
    with Progress(*columns, console=progress.console, disable=not ctx.main) as bar:
        task = bar.add_task(f"train {target.dataset} {target.version}", total=config.steps, completed=start, status="")
        tick = time.time()
        for step in range(start, config.steps):
            lr = scheduler.get_last_lr()[0]
            optimizer.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "action_token_accuracy": 0.0}
            for _ in range(accumulation):
                with _autocast(ctx.device, config.bf16):
                    out = loss_module(next(batches))
                check_finite(out["loss"].detach(), "the loss", step, lr, last_good)
                (out["loss"] / accumulation).backward()
                for key in sums:
                    sums[key] += float(out[key].detach()) / accumulation
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
            check_finite(grad_norm, "the gradient norm", step, lr, last_good)
            optimizer.step()
            scheduler.step()
            done = step + 1
            row = {"step": done, **sums, "lr": lr, "grad_norm": float(grad_norm)}
            if done % config.log_every == 0 or done == config.steps:
                row["samples_per_s"] = config.log_every * accumulation * config.batch_size * ctx.world_size / (
                    time.time() - tick)
                tick = time.time()
            stopping = stop_after is not None and done - start >= stop_after
            if done % config.val_every == 0 or done == config.steps or stopping:
                val = validate(loss_module, val_data, config, ctx)
                check_finite(torch.tensor(val["loss"]), "the validation loss", step, lr, last_good)
                row |= {"val_loss": val["loss"], "val_action_token_accuracy": val["action_token_accuracy"]}
                improved = val["loss"] < best_val
                if improved:
                    best_val, best_step = val["loss"], done
                if ctx.main:
                    state = {"step": done, "best_val": best_val, "best_step": best_step}
                    named = location or str(run_dir)
                    if improved:
                        save_checkpoint(run_dir / "best", model, tokenizer, trained, target, state, started_at,
                                        location=join(named, "best"))
                    save_checkpoint(run_dir / "last", model, tokenizer, trained, target, state, started_at,
                                    optimizer=optimizer, scheduler=scheduler, location=join(named, "last"))
                    last_good = str(run_dir / "last")
            if ctx.main and ("samples_per_s" in row or "val_loss" in row):
                log.write(row)
            bar.update(task, completed=done, status=f"loss {sums['loss']:.3f}" + (
                f" val {row['val_loss']:.3f}" if "val_loss" in row else ""))
            if done - best_step >= config.early_stopping_patience and best_step:
                progress.console.print(f"early stopping at step {done}: val loss has not improved since step {best_step}")
                break
            if stopping:
                break
        summary = {"steps": done, "samples": done * accumulation * config.batch_size * ctx.world_size,
                   "best_val_loss": best_val, "best_step": best_step, "last_loss": sums["loss"],
                   "trainable_parameters": trainable, "total_parameters": total,
                   "seconds": round(time.time() - started, 1)}
    if ctx.main:
        log.close()
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if ctx.world_size > 1:
        # DDP's reducer holds the gloo group, and freeing it there joins gloo's threads with
        # the GIL held while they may still need it to release the last all-reduce's tensors
        # (a hang seen in CI). So: a barrier, with the GIL released, lets those threads finish;
        # the reducer goes first; destroy_process_group then frees the group without the GIL.
        dist.barrier()
        del loss_module
        dist.destroy_process_group()
    return summary


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="robolake train", description="Fine-tune a VLA policy on a gold dataset version.")
    dataset = parser.add_mutually_exclusive_group(required=True)
    dataset.add_argument("dataset", nargs="?", type=dataset_argument,
                         help="NAME or NAME:VERSION (default: the latest version)")
    dataset.add_argument("--dataset", dest="dataset_option", metavar="DATASET", type=dataset_argument,
                         help="the dataset given as an option instead")
    parser.add_argument("--config", required=True, help="training config YAML (fields: training/config.py)")
    parser.add_argument("--lake", default="lake", help="lake root folder (default: lake)")
    parser.add_argument("--run-dir", help="run folder (default: <lake>/runs/<dataset>-<version>-<mode>)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in a run folder that holds an earlier run, replacing its checkpoints")
    parser.add_argument("--merge", action="store_true", help="also write best/merged: LoRA folded into the base weights")
    parser.add_argument("--stop-after", type=positive_int, help="stop after this many optimizer steps (resume later with --resume)")
    args = parser.parse_args(argv)
    args.dataset = args.dataset or args.dataset_option
    del args.dataset_option
    return args


def clear_earlier_run(location: str, lake: Lake, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """A new run deletes an earlier run's outputs in `location` first, only with --overwrite and
    only when they are a robolake run's (robolake/overwrite.py); --resume continues it instead.
    (`dvc repro` deletes a train stage's outputs before it runs, so it needs no --overwrite.)"""
    if resume and exists(join(location, "last")):
        return
    earlier = [join(location, name) for name in RUN_OUTPUTS if exists(join(location, name))]
    if earlier:
        check_replace(location, "a training run folder", overwrite, _is_run,
                      keep={"the lake": lake.root, **({"the base checkpoint": config.base} if config.base else {})},
                      retry="pass --resume to continue it, or --overwrite to replace its checkpoints")
    for path in earlier:
        delete_tree(path)


def _is_run(folder: str) -> bool:
    """A run robolake trained: its best/ and last/ are checkpoints, or (stopped before the
    first one) its metrics.csv has train's columns."""
    bundles = [join(folder, name) for name in ("best", "last") if exists(join(folder, name))]
    if bundles:
        return all(artifact_kind(bundle) == "checkpoint" for bundle in bundles)
    try:
        with open_read(join(folder, "metrics.csv")) as f:
            return f.readline().decode().strip() == ",".join(METRIC_FIELDS)
    except (OSError, UnicodeDecodeError):
        return False


def local_run_dir(location: str, resume: bool) -> Path:
    """The folder training writes: `location` itself when local; for a remote one, a
    local folder in the cache, emptied for a new run and filled from `location` to resume."""
    if not is_remote(location):
        return Path(location)
    local = Path(cache_dir()) / "runs" / hashlib.sha256(location.encode()).hexdigest()[:16]
    if int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(local, ignore_errors=True)
        if resume and exists(join(location, "last", "model_config.json")):
            copy_tree(location, str(local))
    return local


@reading("train")
def run(argv: list[str]) -> int:
    args = parse_args(argv)
    config = load_config(args.config)
    lake = Lake(args.lake)
    target = lake.resolve(args.dataset)
    location = args.run_dir or lake.run_dir(f"{target.dataset}-{target.version}-{config.mode}")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 checks and clears
        clear_earlier_run(location, lake, config, args.resume, args.overwrite)
    run_dir = local_run_dir(location, args.resume)
    summary = train(config, target, run_dir, resume=args.resume, stop_after=args.stop_after, location=location)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes and reports
        return 0
    if args.merge and config.mode == "lora" and (run_dir / "best").exists():
        from training.checkpoint import write_merged

        write_merged(run_dir / "best")
    if is_remote(location):
        copy_tree(str(run_dir), location)
    print(f"train {target.dataset} {target.version} ({config.mode}): {summary['steps']} steps, best val loss "
          f"{summary['best_val_loss']:.4f} at step {summary['best_step']}, {summary['trainable_parameters']:,} of "
          f"{summary['total_parameters']:,} parameters trained, {summary['seconds']} s -> {location}")
    return 0

