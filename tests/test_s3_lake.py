"""Every command on an object-store lake: `--lake s3://bucket/lake` on a local moto S3
server (the s3_bucket fixture), from conversion through edit, LeRobot export, mixing,
training and evaluation to a checkpoint's lineage."""

from __future__ import annotations

import json

import boto3
import pytest
import yaml

from cli.main import main
from robolake.lake import Lake
from robolake.sample import write_robomimic_dataset
from robolake.storage import create_exclusive
from tests.helpers import CAMERAS, config_file, robomimic_spec

pytestmark = pytest.mark.slow

NAME = "synthetic_tabletop"


def _keys(bucket: str, prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_commands_on_an_s3_lake(s3_bucket, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBOLAKE_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "raw"
    write_robomimic_dataset(str(raw), episodes=6, steps=16, seed=7, per_file=3, cameras=CAMERAS)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(robomimic_spec(raw)))
    root = f"s3://{s3_bucket}/lake"
    lake = ["--lake", root]

    assert main(["convert", str(spec), *lake]) == 0
    pointer = f"lake/versions/{NAME}/1.0.0/current.json"
    assert pointer in _keys(s3_bucket, "lake/versions/")
    assert Lake(root).published() == [(NAME, "1.0.0")]
    build = Lake(root).current_build(NAME, "1.0.0")
    assert any(key.endswith(".parquet") for key in _keys(s3_bucket, build.dir.split("/", 3)[3] + "/silver/"))
    assert not create_exclusive(f"{root}/versions/{NAME}/1.0.0/current.json", b"{}")  # if-none-match on S3

    assert main(["validate", NAME, *lake]) == 0
    assert main(["report", NAME, *lake]) == 0
    reports = f"lake/reports/{NAME}/1.0.0/"
    assert {reports + "coverage.json", reports + "validate.json", reports + "data_docs/index.html"} <= set(
        _keys(s3_bucket, reports))
    capsys.readouterr()

    assert main(["query", "--format", "csv", "select split, count(*) as n from episodes group by split order by split",
                 *lake]) == 0
    assert capsys.readouterr().out.splitlines() == ["split,n", "train,5", "val,1"]
    assert main(["stats", NAME, "--json", *lake]) == 0
    assert json.loads(capsys.readouterr().out)["num_trajectories"] == 5

    assert main(["edit", "drop", NAME, "--where", "split = 'val'", *lake]) == 0
    assert Lake(root).published() == [(NAME, "1.0.0"), (NAME, "1.1.0")]
    assert main(["lerobot", f"{NAME}:1.1.0", str(tmp_path / "lerobot"), "--images", "image", *lake]) == 0
    info = json.loads((tmp_path / "lerobot" / "meta" / "info.json").read_text())
    assert (info["total_episodes"], info["total_frames"]) == (5, 5 * 16)

    mix = tmp_path / "mix.yaml"
    mix.write_text(yaml.safe_dump({"name": "mixed", "version": "1.0.0",
                                   "source": {"members": [{"dataset": f"{NAME}:1.0.0", "weight": 1.0}]}}))
    assert main(["mix", str(mix), *lake]) == 0
    assert "lake/versions/mixed/1.0.0/current.json" in _keys(s3_bucket, "lake/versions/mixed/")

    run = f"{root}/runs/tiny"
    config = config_file(tmp_path, steps=4, val_every=2, log_every=2)
    assert main(["train", "mixed:1.0.0", "--config", config, *lake, "--run-dir", run]) == 0
    assert {"lake/runs/tiny/best/model.safetensors", "lake/runs/tiny/last/trainer_state.pt",
            "lake/runs/tiny/summary.json"} <= set(_keys(s3_bucket, "lake/runs/tiny/"))
    provenance = json.loads(boto3.client("s3").get_object(
        Bucket=s3_bucket, Key="lake/runs/tiny/best/provenance.json")["Body"].read())
    assert provenance["artifact"]["path"] == f"{run}/best"
    assert provenance["dataset"]["gold_dir"] == Lake(root).gold("mixed", "1.0.0")
    assert provenance["dataset"]["gold_dir"].startswith(f"{root}/versions/mixed/1.0.0/builds/")
    capsys.readouterr()

    assert main(["evaluate", run, "--split", "train", "--rollouts", "1", "--max-steps", "5", *lake]) == 0
    evaluation = json.loads(boto3.client("s3").get_object(Bucket=s3_bucket, Key="lake/runs/tiny/eval/eval.json")
                            ["Body"].read())
    assert evaluation["rollouts"]["episodes"] == 1
    capsys.readouterr()

    assert main(["lineage", f"{run}/best", "--verify"]) == 0
    printed = capsys.readouterr().out
    raw_hashes = [item["sha256"] for item in json.loads(
        boto3.client("s3").get_object(Bucket=s3_bucket, Key=build.gold.split("/", 3)[3] + "/provenance.json")
        ["Body"].read())["inputs"]]
    assert len(raw_hashes) == 2 and all(f"sha256 {digest}" in printed for digest in raw_hashes)
    assert "unchanged" in printed
