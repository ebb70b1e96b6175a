"""provenance.json beside every gold version, and `robolake lineage` back to raw sha256."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from cli.main import main
from robolake.hashing import sha256_file
from robolake.provenance import dvc_upstream
from schemas.documents import check
from tests.helpers import config_file, robomimic_spec, run_convert


@pytest.fixture
def raw_copy(robomimic_raw, tmp_path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(robomimic_raw, raw)
    return raw


def test_gold_version_has_valid_provenance(raw_copy, tmp_path):
    outcome = run_convert(robomimic_spec(raw_copy), tmp_path / "lake")
    document = json.loads((Path(outcome.gold_dir) / "provenance.json").read_text())
    check(document, "provenance", "provenance.json")
    assert document["artifact"] == {"kind": "dataset", "path": outcome.gold_dir}
    assert document["dataset"]["fingerprint"] == outcome.manifest["fingerprint"]
    statistics = (Path(outcome.gold_dir) / "dataset_statistics.json").read_bytes()
    assert document["dataset"]["statistics_sha256"] == hashlib.sha256(statistics).hexdigest()
    assert {i["path"]: i["sha256"] for i in document["inputs"]} == {
        str(p): sha256_file(str(p)) for p in raw_copy.glob("*.hdf5")
    }
    assert len(document["git"]["commit"]) == 40  # the tests run inside the robolake checkout
    assert document["packages"]["apache-beam"] and document["packages"]["tensorflow-datasets"]
    assert document["started_at"] <= document["finished_at"]


def test_schema_rejects_a_broken_document(raw_copy, tmp_path):
    outcome = run_convert(robomimic_spec(raw_copy), tmp_path / "lake")
    document = json.loads((Path(outcome.gold_dir) / "provenance.json").read_text())
    document["inputs"][0]["sha256"] = "not-a-hash"
    with pytest.raises(ValueError, match="inputs/0/sha256"):
        check(document, "provenance", "provenance.json")


def test_lineage_names_raw_files_and_hashes(raw_copy, tmp_path, capsys):
    outcome = run_convert(robomimic_spec(raw_copy), tmp_path / "lake")
    assert main(["lineage", outcome.gold_dir]) == 0
    out = capsys.readouterr().out
    assert f"dataset synthetic_tabletop 1.0.0  {outcome.gold_dir}" in out
    assert outcome.manifest["fingerprint"] in out
    for path in raw_copy.glob("*.hdf5"):
        assert f"sha256 {sha256_file(str(path))}  {path}" in out
    assert out.strip().endswith(f"3 raw files behind {outcome.gold_dir}")
    # NAME/VERSION resolves against --lake
    assert main(["lineage", "synthetic_tabletop/1.0.0", "--lake", str(tmp_path / "lake"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed["raw_files"]) == 3 and listed["chain"][0]["dataset"]["version"] == "1.0.0"


def test_changing_one_raw_file_changes_fingerprint_and_lineage(raw_copy, tmp_path, capsys):
    lake = tmp_path / "lake"
    first = run_convert(robomimic_spec(raw_copy), lake)
    same = run_convert(robomimic_spec(raw_copy), tmp_path / "lake_again")
    assert same.manifest["fingerprint"] == first.manifest["fingerprint"]
    assert json.loads((Path(same.gold_dir) / "provenance.json").read_text())["inputs"] == json.loads(
        (Path(first.gold_dir) / "provenance.json").read_text()
    )["inputs"]

    changed_file = raw_copy / "tabletop_001.hdf5"
    with h5py.File(changed_file, "r+") as h5:
        h5["data/demo_1/actions"][0, 0] += np.float64(0.01)
    second = run_convert(robomimic_spec(raw_copy, version="1.0.1"), lake)
    assert second.manifest["fingerprint"] != first.manifest["fingerprint"]
    assert main(["lineage", second.gold_dir]) == 0
    assert f"sha256 {sha256_file(str(changed_file))}  {changed_file}" in capsys.readouterr().out

    assert main(["lineage", first.gold_dir, "--verify"]) == 1
    out = capsys.readouterr().out
    assert f"  {changed_file}  4 episodes  [changed]" in out
    assert out.strip().endswith("2 of 3 raw files unchanged, 1 changed or missing")


def test_lineage_of_a_folder_without_provenance_is_one_clear_error(tmp_path, capsys):
    assert main(["lineage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: no provenance.json there" in err and "Traceback" not in err


def test_dvc_upstream_follows_stages_back_from_an_input(tmp_path):
    (tmp_path / ".dvc").mkdir()
    lock = {
        "schema": "2.0",
        "stages": {
            "sample": {"cmd": "robolake sample raw", "deps": [{"path": "gen.py", "md5": "a1"}],
                       "outs": [{"path": "raw", "md5": "b2.dir", "size": 10}]},
            "convert": {"cmd": "robolake convert", "deps": [{"path": "raw", "md5": "b2.dir"}],
                        "outs": [{"path": "gold/v1", "md5": "c3.dir"}]},
            "unrelated": {"cmd": "x", "deps": [], "outs": [{"path": "other", "md5": "d4"}]},
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    upstream = dvc_upstream(tmp_path, [str(tmp_path / "gold/v1")])
    assert list(upstream["stages"]) == ["convert", "sample"]
    assert upstream["stages"]["sample"]["outs"] == [{"path": "raw", "md5": "b2.dir", "size": 10}]
    assert list(dvc_upstream(tmp_path, [str(tmp_path / "raw/file.hdf5")])["stages"]) == ["sample"]
    assert dvc_upstream(tmp_path / "nowhere", ["x"]) is None


def test_lineage_of_a_run_folder_is_its_best_checkpoint(raw_copy, tmp_path, capsys):
    lake = tmp_path / "lake"
    run_convert(robomimic_spec(raw_copy, splits={"fractions": {"train": 0.5, "val": 0.5}}), lake)
    run = lake / "runs" / "tiny"
    config = config_file(tmp_path, steps=2, val_every=2)
    assert main(["train", "synthetic_tabletop:1.0.0", "--config", config, "--lake", str(lake),
                 "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["lineage", f"{run}/"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"checkpoint  {run / 'best'}"
    assert main(["lineage", str(run / "best")]) == 0
    assert capsys.readouterr().out.splitlines()[:-1] == out.splitlines()[:-1]  # the last line names the argument

    (run / "best").rename(run / "step_2")
    assert main(["lineage", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run}: a run folder without a best/ checkpoint; give one of its checkpoint bundles: " in err
    assert f"{run / 'last'}, {run / 'step_2'}" in err and "Traceback" not in err
