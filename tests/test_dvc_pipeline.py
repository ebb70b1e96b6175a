"""`dvc repro` of the sample pipeline in a temporary clone: every stage's outputs
(datasets, gate, coverage, pretrained and LoRA checkpoints), provenance tied to
dvc.lock, a no-op second run, and param changes that re-run only the stages
downstream of them (through `dvc exp run -S`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robolake.lake import Lake

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore"]
PROJECT_DIRS = ["datasets", "robolake", "pipelines", "schemas", "validation", "training"]
SMALL = {  # 3 HDF5 episodes and 3 bags
    "sample": {"episodes": 6, "seed": 3, "bag_fraction": 0.5, "workers": 1},
    "convert": {"beam_workers": 1},
    "evaluate": {"split": "train", "rollouts": 2, "max_steps": 5},  # every episode is in train here
}
ALL_IN_TRAIN = {"train": 1.0, "val": 0.0, "test": 0.0}  # so that each dataset has train statistics
SMALL_TRAINING = {"steps": 4, "batch_size": 4, "effective_batch": 4, "warmup_steps": 1, "val_every": 2,
                  "val_batches": 1, "log_every": 2, "data": {"shuffle_buffer": 16}}
TINY_MODEL = {"image_size": 32, "patch_size": 16, "vision_hidden": 32, "vision_layers": 1, "vision_heads": 2,
              "lm_hidden": 32, "lm_layers": 1, "lm_heads": 2, "lm_intermediate": 64}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git + DVC project holding robolake's pipeline files, with small params, after one `dvc repro`."""
    root = tmp_path_factory.mktemp("clone")
    for name in PROJECT_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    for name in PROJECT_DIRS:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for dataset in params["datasets"].values():
        spec = yaml.safe_load((root / dataset["spec"]).read_text())
        spec["splits"]["fractions"] = ALL_IN_TRAIN
        (root / dataset["spec"]).write_text(yaml.safe_dump(spec, sort_keys=False))
    for name, extra in (("pretrain", {"model": TINY_MODEL}), ("lora", {})):
        path = root / "training/configs" / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **SMALL_TRAINING, **extra}))
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "pipeline"], root)
    run(["dvc", "repro"], root)
    return root


def gold_dir(root: Path, version: str = "1.0.0", name: str = "sample_tabletop") -> Path:
    return Path(Lake(str(root / "lake")).gold(name, version))


def test_repro_produces_every_stage_output(project):
    manifest = json.loads((project / "lake/raw/sample_tabletop/sample_manifest.json").read_text())
    assert len(manifest["episodes"]) == 6
    gold = json.loads((gold_dir(project) / "manifest.json").read_text())
    hdf5_episodes = [e for e in manifest["episodes"] if e["container"] == "hdf5"]
    assert gold["counts"]["episodes_found"] == len(hdf5_episodes)
    assert gold["counts"]["episodes_written"] + gold["counts"]["episodes_quarantined"] == len(hdf5_episodes)
    bags = json.loads((gold_dir(project, name="sample_tabletop_ros") / "manifest.json").read_text())
    assert bags["counts"]["episodes_written"] == len(manifest["episodes"]) - len(hdf5_episodes)
    mix = json.loads((gold_dir(project, name="sample_tabletop_mix") / "manifest.json").read_text())
    written = {m["dataset"]: sum(m["episodes_by_split"].values()) for m in mix["members"]}
    assert written == {"sample_tabletop": gold["counts"]["episodes_written"],  # all in train: weight 1 and 0.5
                       "sample_tabletop_ros": int(0.5 * bags["counts"]["episodes_written"] + 0.5)}
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    shown = next(iter(metrics.values()))["data"]
    assert shown["lake/reports/sample_tabletop/1.0.0/convert.json"]["data"]["episodes_written"] == (
        gold["counts"]["episodes_written"])
    assert shown["lake/reports/sample_tabletop_ros/1.0.0/convert.json"]["data"]["episodes_written"] == (
        bags["counts"]["episodes_written"])
    for name in ("sample_tabletop", "sample_tabletop_ros"):  # the gate passed, the coverage report is there
        assert shown[f"lake/reports/{name}/1.0.0/validate.json"]["data"]["passed"] is True
        saturation = shown[f"lake/reports/{name}/1.0.0/convert.json"]["data"]["saturation"]
        assert saturation["mode"] == "bounds_q99" and set(saturation["action"]) == {
            "dx", "dy", "dz", "droll", "dpitch", "dyaw"}  # the gripper is masked
        assert shown[f"lake/reports/{name}/1.0.0/coverage.json"]["data"]["totals"]["episodes"] == 3
        assert (project / f"lake/reports/{name}/1.0.0/coverage.html").exists()
    for run_name in ("pretrain", "finetune"):
        assert shown[f"lake/runs/{run_name}/summary.json"]["data"]["steps"] == SMALL_TRAINING["steps"]
    finetune = shown["lake/runs/finetune/summary.json"]["data"]
    assert finetune["trainable_parameters"] < finetune["total_parameters"]  # LoRA: adapters only
    for name in ("model.safetensors", "adapter", "merged", "dataset_statistics.json", "provenance.json"):
        assert (project / "lake/runs/finetune/best" / name).exists(), name
    for run_name, dataset in (("pretrain", "sample_tabletop"), ("finetune", "sample_tabletop_ros")):
        evaluation = shown[f"lake/runs/{run_name}/eval/eval.json"]["data"]
        assert evaluation["dataset"] == {"name": dataset, "version": "1.0.0", "split": "train"}
        assert evaluation["overall"]["episodes"] == 3
        rollouts = json.loads((project / f"lake/runs/{run_name}/eval/eval.json").read_text())["rollouts"]
        assert rollouts["episodes"] == 2 and len(rollouts["success_ci"]) == 2  # lists: not in `dvc metrics show`
        assert (project / f"lake/runs/{run_name}/eval/eval.html").is_file()
    baseline = shown["lake/runs/finetune/eval/eval.json"]["data"]["baseline_rollouts"]
    assert baseline["checkpoint"] == "lake/runs/pretrain/best" and baseline["episodes"] == 2


def test_loss_curves_are_dvc_plots(project):
    run(["dvc", "plots", "show", "-o", "plots_html"], project)
    page = (project / "plots_html/index.html").read_text()
    assert "Pretraining loss" in page and "LoRA fine-tuning loss" in page and "val_loss" in page
    assert "Action MSE per dimension" in page


def test_checkpoint_provenance_reaches_the_raw_files(project):
    provenance = json.loads((project / "lake/runs/finetune/best/provenance.json").read_text())
    assert provenance["dataset"]["name"] == "sample_tabletop_ros"
    assert set(provenance["dvc"]["stages"]) == {"sample", "convert@sample_tabletop_ros"}
    lineage = run(["robolake", "lineage", "lake/runs/finetune/best", "--verify"], project).stdout
    assert "3 of 3 raw files unchanged" in lineage


def test_provenance_ties_the_dataset_to_dvc_lock_and_git(project):
    provenance = json.loads((gold_dir(project) / "provenance.json").read_text())
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert list(provenance["dvc"]["stages"]) == ["sample"]
    assert provenance["dvc"]["stages"]["sample"]["outs"][0]["md5"] == lock["sample"]["outs"][0]["md5"]
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    assert provenance["git"] == {"commit": head, "dirty": False, "changed_files": []}
    assert provenance["params"]["sample"]["episodes"] == 6
    lineage = run(["robolake", "lineage", "sample_tabletop/1.0.0"], project).stdout
    assert f"dvc stage   sample: lake/raw/sample_tabletop md5 {lock['sample']['outs'][0]['md5']}" in lineage
    assert lineage.count("sha256 ") == len(provenance["inputs"])


def test_second_repro_is_a_no_op(project):
    before = (project / "dvc.lock").read_text()
    second = run(["dvc", "repro"], project)
    assert "Running stage" not in second.stdout
    assert "didn't change, skipping" in second.stdout
    assert (project / "dvc.lock").read_text() == before
    assert "up to date" in run(["dvc", "status"], project).stdout


def test_a_spec_edit_is_a_changed_param_of_its_own_convert_stage(project):
    spec = project / "datasets/sample_tabletop_ros.yaml"
    original = spec.read_text()
    edited = yaml.safe_load(original)
    edited["normalization"]["mode"] = "min_max"
    spec.write_text(yaml.safe_dump(edited, sort_keys=False))
    try:
        status = run(["dvc", "status"], project).stdout
        diff = run(["dvc", "params", "diff"], project).stdout
    finally:
        spec.write_text(original)
    assert "convert@sample_tabletop:" not in status  # the other dataset's stage is untouched
    stage = status.split("convert@sample_tabletop_ros:")[1]
    assert "datasets/sample_tabletop_ros.yaml:" in stage and "modified:           normalization" in stage
    assert ["datasets/sample_tabletop_ros.yaml", "normalization.mode", "bounds_q99", "min_max"] in [
        line.split() for line in diff.splitlines()]


def test_changed_param_reruns_only_downstream_stages(project):
    before = json.loads((gold_dir(project) / "manifest.json").read_text())["fingerprint"]
    experiment = run(["dvc", "exp", "run", "-S", "datasets.sample_tabletop.version=1.0.1"], project)
    assert "Running stage 'convert@sample_tabletop'" in experiment.stdout
    assert "Running stage 'convert@sample_tabletop_ros'" not in experiment.stdout
    assert "Running stage 'validate@sample_tabletop'" in experiment.stdout
    assert "Running stage 'sample'" not in experiment.stdout
    assert "Running stage 'pretrain'" in experiment.stdout and "Running stage 'finetune'" in experiment.stdout
    assert (gold_dir(project, "1.0.1") / "provenance.json").exists()
    assert json.loads((gold_dir(project, "1.0.1") / "manifest.json").read_text())["fingerprint"] != before


def test_changed_lora_config_reruns_only_the_finetuning(project):
    experiment = run(["dvc", "exp", "run", "-S", "training/configs/lora.yaml:steps=6"], project)
    assert "Running stage 'finetune'" in experiment.stdout and "Running stage 'evaluate@finetune'" in experiment.stdout
    assert "Running stage 'pretrain'" not in experiment.stdout and "Running stage 'evaluate@pretrain'" not in experiment.stdout
    assert "Running stage 'convert@sample_tabletop_ros'" not in experiment.stdout
    assert json.loads((project / "lake/runs/finetune/summary.json").read_text())["steps"] == 6
