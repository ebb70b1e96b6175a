"""The training loop on a small converted dataset: loss falls, pretrain then LoRA leaves
the base weights untouched, resume continues the same curve, a NaN stops the run with
its likely causes, the checkpoint bundle carries statistics and provenance, and a
2-process torchrun (gloo) run completes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli.main import main
from robolake.lake import Lake
from tests.helpers import config_file, robomimic_spec, run_convert
from training import train as train_module
from training.config import load_config
from training.model import base_state_dict, load_pretrained
from training.train import TrainingDiverged, train

NAME = "synthetic_tabletop"


@pytest.fixture(scope="module")
def lake(robomimic_raw, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train") / "lake"
    run_convert(robomimic_spec(robomimic_raw, splits={"fractions": {"train": 0.7, "val": 0.3}}), root)
    return root


def metrics(run: Path) -> dict[int, dict]:
    with open(run / "metrics.csv", newline="") as f:
        return {int(row["step"]): row for row in csv.DictReader(f)}


def test_the_dataset_is_positional_or_given_by_dataset(capsys):
    positional = train_module.parse_args([f"{NAME}:1.0.0", "--config", "c.yaml"])
    option = train_module.parse_args(["--dataset", f"{NAME}:1.0.0", "--config", "c.yaml"])
    assert positional.dataset == option.dataset == f"{NAME}:1.0.0"
    assert not hasattr(positional, "dataset_option")
    for argv, error in [(["--config", "c.yaml"], "one of the arguments dataset --dataset is required"),
                        ([NAME, "--dataset", NAME, "--config", "c.yaml"], "argument --dataset: not allowed with argument dataset")]:
        with pytest.raises(SystemExit) as exited:
            train_module.parse_args(argv)
        assert exited.value.code == 2
        assert f"robolake train: error: {error}" in capsys.readouterr().err


def test_full_training_lowers_the_loss_and_writes_a_traceable_bundle(lake, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", NAME, "--config", config_file(tmp_path), "--lake", str(lake),
                 "--run-dir", str(run)]) == 0
    rows = metrics(run)
    # from ~ln(256) = 5.5; bounds_q99 spreads the labels over the bins (clipping at one std
    # piled a fifth of them onto the two end bins, an easier and emptier target)
    assert float(rows[30]["loss"]) < float(rows[5]["loss"]) - 0.5
    assert float(rows[30]["val_loss"]) < float(rows[10]["val_loss"])
    out = capsys.readouterr()
    assert "full: " in out.err and "(100.00%)" in out.err and f"train {NAME} 1.0.0 (full): 30 steps" in out.out
    bundle = run / "best"
    gold = Lake(str(lake)).gold(NAME, "1.0.0")
    assert (bundle / "dataset_statistics.json").read_bytes() == (Path(gold) / "dataset_statistics.json").read_bytes()
    provenance = json.loads((bundle / "provenance.json").read_text())
    assert provenance["artifact"]["kind"] == "checkpoint" and provenance["dataset"]["gold_dir"] == gold
    assert main(["lineage", str(bundle)]) == 0 and "raw" in capsys.readouterr().out.lower()
    model, tokenizer = load_pretrained(bundle)
    assert model.config.action_dim == 7 and tokenizer.vocab_size > 4
    assert (run / "tensorboard").is_dir() and json.loads((run / "summary.json").read_text())["steps"] == 30


def test_pretrain_then_lora_trains_only_the_adapters(lake, tmp_path, capsys):
    target = Lake(str(lake)).resolve(NAME)
    train(load_config(config_file(tmp_path, steps=10)), target, tmp_path / "pretrain")
    base = tmp_path / "pretrain" / "last"
    before = {k: v.clone() for k, v in base_state_dict(load_pretrained(base)[0]).items()}
    summary = train(load_config(config_file(tmp_path, mode="lora", base=str(base), steps=10,
                                            lora={"r": 4, "alpha": 8})), target, tmp_path / "lora")
    assert 0 < summary["trainable_parameters"] < 0.1 * summary["total_parameters"]
    adapted, _ = load_pretrained(tmp_path / "lora" / "last")
    after = base_state_dict(adapted)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "a base weight moved under LoRA"
    adapters = {k: v for k, v in adapted.state_dict().items() if "lora_B" in k}
    assert adapters and any(v.abs().sum() > 0 for v in adapters.values())  # B starts at zero, so it trained
    assert (tmp_path / "lora" / "last" / "adapter").is_dir()


def test_resume_continues_the_same_loss_curve(lake, tmp_path):
    target = Lake(str(lake)).resolve(NAME)
    config = load_config(config_file(tmp_path, steps=12, val_every=4, log_every=1))
    train(config, target, tmp_path / "straight")
    train(config, target, tmp_path / "resumed", stop_after=5)
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["steps"] == 5
    train(config, target, tmp_path / "resumed", resume=True)
    straight, resumed = metrics(tmp_path / "straight"), metrics(tmp_path / "resumed")
    assert sorted(resumed) == sorted(straight) == list(range(1, 13))
    for step in range(6, 13):
        assert float(resumed[step]["loss"]) == pytest.approx(float(straight[step]["loss"]), abs=1e-5), step


def test_an_injected_nan_stops_the_run_naming_the_likely_causes(lake, tmp_path, monkeypatch):
    target = Lake(str(lake)).resolve(NAME)
    forward = train_module.PolicyLoss.forward
    calls = {"n": 0}

    def nan_in_the_eleventh_step(self, batch):  # calls: steps 1-5, val, steps 6-10, val, step 11
        calls["n"] += 1
        out = forward(self, batch)
        return {**out, "loss": out["loss"] * float("nan")} if calls["n"] == 13 else out

    monkeypatch.setattr(train_module.PolicyLoss, "forward", nan_in_the_eleventh_step)
    with pytest.raises(TrainingDiverged) as error:
        train(load_config(config_file(tmp_path, val_every=5, val_batches=1)), target, tmp_path / "run")
    message = str(error.value)
    assert "the loss is nan at step 10 " in message and "learning rate" in message
    assert "not normalized" in message and "outliers" in message
    assert f"Last good checkpoint: {tmp_path / 'run' / 'last'}" in message


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
def test_two_process_torchrun_gloo_completes_with_the_same_samples(lake, tmp_path):
    config = config_file(tmp_path, steps=4, batch_size=4, effective_batch=8, val_every=4)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    robolake = os.path.join(os.path.dirname(sys.executable), "robolake")
    command = [torchrun, "--standalone", "--nproc_per_node=2", "--no-python", robolake, "train", "--dataset", NAME,
               "--config", config, "--lake", str(lake), "--run-dir", str(tmp_path / "ddp")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    single = train(load_config(config), Lake(str(lake)).resolve(NAME), tmp_path / "single")
    # 2 processes x batch 4 x 1 micro-step = 1 process x batch 4 x 2 micro-steps per optimizer step
    assert ddp["samples"] == single["samples"] == 4 * 8
    assert (tmp_path / "ddp" / "last" / "model.safetensors").exists()
