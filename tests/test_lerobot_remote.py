"""`source.paths: ["hf://datasets/ORG/NAME@REVISION"]`: LeRobot datasets on the Hugging Face
Hub, read offline (HF_HUB_OFFLINE=1) from a cache the test lays out as huggingface_hub
does (datasets--ORG--NAME/{blobs, snapshots/<commit>, refs/main, trees/<commit>.json}).
huggingface_hub's own snapshot_download resolves the references; nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import yaml
from huggingface_hub import snapshot_download
from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
from huggingface_hub.errors import LocalEntryNotFoundError

from exports.lerobot.writer import export
from robolake import hf_hub, lineage
from robolake.errors import RobolakeError
from tests.helpers import robomimic_spec, run_convert
from tests.test_lerobot_source import gold_by_source, lerobot_spec

REPO = "robolake-tests/demo"  # its local twin is a folder named "demo": the same episode ids
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ABSENT = "fedcba9876543210fedcba9876543210fedcba98"
# files the repository lists (trees/<commit>.json) but the cache lacks: a camera the spec does
# not map and a README. The offline snapshot is complete only if they are not asked for.
NOT_NEEDED = ("videos/observation.images.depth/chunk-000/file-000.mp4", "README.md")


def _lay_out_cache(dataset: Path, cache: Path) -> None:
    """`dataset`'s files as the snapshot `COMMIT` of REPO in huggingface_hub's cache layout:
    content in blobs/ (named by sha256), snapshot entries as relative symlinks to them,
    refs/main naming the commit, and the commit's tree listing."""
    storage = cache / f"datasets--{REPO.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    entries = {}
    for path in sorted(p for p in dataset.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        blob = storage / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        relative = path.relative_to(dataset).as_posix()
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        entries[relative] = TreeCacheEntry(size=len(data), blob_id=hashlib.sha1(data).hexdigest(),
                                           lfs_sha256=digest, lfs_size=len(data))
    for relative in NOT_NEEDED:
        entries[relative] = TreeCacheEntry(size=1, blob_id="0" * 40)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    write_tree_cache(str(storage), COMMIT, entries)


@pytest.fixture(scope="module")
def hub(robomimic_raw, tmp_path_factory) -> dict:
    """The robomimic sample exported as LeRobot v3.0 (videos), as a local folder `demo` and as
    REPO's commit COMMIT in a Hub cache; and the local folder's conversion."""
    work = tmp_path_factory.mktemp("lerobot_remote")
    original = run_convert(robomimic_spec(robomimic_raw), work / "lake_original")
    local = work / "demo"
    export(original.gold_dir, str(local), images="video")
    cache = work / "hub_cache"
    _lay_out_cache(local, cache)
    converted = run_convert(lerobot_spec(local), work / "lake_local")
    return {"local": local, "cache": cache, "local_gold": gold_by_source(converted.gold_dir)}


@pytest.fixture
def offline(hub, monkeypatch):
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE at the test's cache, for this process too:
    huggingface_hub reads both into its constants when first imported."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub["cache"]))


def _assert_same_episodes(mine: dict, theirs: dict) -> None:
    assert sorted(mine) == sorted(theirs) and mine
    for episode_id, episode in mine.items():
        other = theirs[episode_id]
        assert [s["language_instruction"] for s in episode["steps"]] == \
               [s["language_instruction"] for s in other["steps"]]
        np.testing.assert_array_equal(np.stack([s["action_raw"] for s in episode["steps"]]),
                                      np.stack([s["action_raw"] for s in other["steps"]]))
        for key in ("state", "front", "wrist"):  # the same bytes decoded the same way: equal
            np.testing.assert_array_equal(np.stack([s["observation"][key] for s in episode["steps"]]),
                                          np.stack([s["observation"][key] for s in other["steps"]]))


@pytest.mark.parametrize("suffix, revision", [(f"@{COMMIT}", COMMIT), ("", "main")])
def test_hub_reference_converts_like_the_local_folder_and_records_its_commit(hub, offline, suffix, revision,
                                                                             tmp_path, capsys):
    reference = f"hf://datasets/{REPO}{suffix}"
    outcome = run_convert(lerobot_spec(reference, source={"format": "lerobot", "paths": [reference]}),
                          tmp_path / "lake")
    _assert_same_episodes(gold_by_source(outcome.gold_dir), hub["local_gold"])
    assert f"{reference}: revision {revision} is commit {COMMIT}" in capsys.readouterr().err
    expected = {"reference": reference, "repo_id": REPO, "revision": revision, "commit": COMMIT,
                "pinned": f"hf://datasets/{REPO}@{COMMIT}"}
    assert outcome.manifest["remote_datasets"] == [expected]
    provenance = json.loads(Path(outcome.gold_dir, "provenance.json").read_text())
    assert provenance["remote_datasets"] == [expected]
    assert all(f"/snapshots/{COMMIT}/" in item["path"] for item in provenance["inputs"])
    shown = lineage.render(lineage.lineage(outcome.gold_dir))
    assert f"hub dataset {reference} -> commit {COMMIT}" in shown
    with pytest.raises(LocalEntryNotFoundError):  # the whole repository was not asked for: NOT_NEEDED is absent
        snapshot_download(REPO, repo_type="dataset", revision=COMMIT)


def test_absent_revision_is_one_clear_error_exit_2(hub, tmp_path):
    """Through the CLI in a fresh process, HF_HUB_OFFLINE and HF_HUB_CACHE set as a user sets them."""
    reference = f"hf://datasets/{REPO}@{ABSENT}"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(lerobot_spec(reference, source={"format": "lerobot", "paths": [reference]})))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub["cache"])}
    done = subprocess.run([sys.executable, "-m", "cli.main", "convert", str(spec_path), "--lake", str(tmp_path / "lake")],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1], timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and reference in errors[0] and "Traceback" not in done.stderr, done.stderr
    assert not list((tmp_path / "lake").rglob("current.json"))  # nothing published


@pytest.mark.parametrize("text", ["hf://datasets/demo", "hf://datasets/a/b/c", "hf://datasets/a/b@", "hf://datasets//b"])
def test_malformed_reference_is_an_error_naming_it(text):
    with pytest.raises(RobolakeError, match="is not a Hub dataset reference"):
        hf_hub.parse(text)


def test_reference_parts():
    assert hf_hub.parse("/data/demo") is None
    assert hf_hub.parse("hf://datasets/a/b") == hf_hub.HubReference("hf://datasets/a/b", "a/b", "main", False)
    assert hf_hub.parse("hf://datasets/a/b@v1.0") == hf_hub.HubReference("hf://datasets/a/b@v1.0", "a/b", "v1.0", True)
