"""provenance.json: where an artifact (a gold dataset version, a checkpoint) came from.

Collected at build time from the surroundings: the git commit of the project, the
DVC stages upstream of the artifact's inputs (from dvc.lock, as `dvc repro` leaves it
after each finished stage), params.yaml, and the installed package versions."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from robolake.storage import is_remote

PROVENANCE_SCHEMA_VERSION = "1.0.0"
PACKAGES = (
    "robolake", "apache-beam", "tensorflow-cpu", "tensorflow-datasets", "pyarrow", "numpy", "h5py",
    "rosbags", "opencv-python-headless", "duckdb", "great-expectations", "dvc", "torch", "peft", "transformers",
)
# dvc.lock changes while `dvc repro` runs; it is recorded through the upstream stages instead
IGNORED_FOR_DIRTY = {"dvc.lock"}


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def project_root(start: str = ".") -> Path | None:
    """The nearest folder at or above `start` holding a DVC project (.dvc/) or a git repository."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir() or (folder / ".git").exists():
            return folder
    return None


def git_state(root: Path) -> dict:
    """The commit checked out in `root` and whether tracked files differ from it."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "changed_files": []}
    status = git("status", "--porcelain", "--untracked-files=no") or ""
    changed = sorted(
        path for path in (line[3:].strip() for line in status.splitlines()) if path not in IGNORED_FOR_DIRTY
    )
    return {"commit": commit.strip(), "dirty": bool(changed), "changed_files": changed}


def _covers(out_path: str, path: str) -> bool:
    """Whether a DVC output path is `path` or one of its folders (or the reverse)."""
    out_path, path = out_path.rstrip("/"), path.rstrip("/")
    return path == out_path or path.startswith(out_path + "/") or out_path.startswith(path + "/")


def dvc_upstream(root: Path, inputs: list[str]) -> dict | None:
    """dvc.lock entries of the stages that produced `inputs` and, transitively, their
    dependencies; None outside a DVC project or before its first `dvc repro`."""
    lock_path = root / "dvc.lock"
    if not lock_path.exists():
        return None
    stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})
    wanted = [_relative(root, path) for path in inputs]
    upstream: dict[str, dict] = {}
    while wanted:
        path = wanted.pop()
        for name, stage in stages.items():
            if name in upstream or not any(_covers(out["path"], path) for out in stage.get("outs", [])):
                continue
            upstream[name] = {
                "cmd": stage.get("cmd"),
                "deps": [_hash_entry(d) for d in stage.get("deps", [])],
                "outs": [_hash_entry(o) for o in stage.get("outs", [])],
                "params": stage.get("params", {}),
            }
            wanted.extend(d["path"] for d in stage.get("deps", []))
    return {"lock_file": str(lock_path.relative_to(root)), "stages": dict(sorted(upstream.items()))}


def _hash_entry(entry: dict) -> dict:
    return {"path": entry["path"], "md5": entry.get("md5") or entry.get("hash"), "size": entry.get("size")}


def _relative(root: Path, path: str) -> str:
    if is_remote(path):
        return path
    absolute = Path(path).resolve()
    return str(absolute.relative_to(root)) if absolute.is_relative_to(root) else str(absolute)


def package_versions() -> dict[str, str | None]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def read_params(root: Path) -> dict | None:
    path = root / "params.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


def collect(artifact: dict, dataset: dict, inputs: list[dict], started_at: str, project_dir: str = ".") -> dict:
    """The provenance document of one artifact. `artifact` says what it is (kind, path,
    name...), `dataset` the dataset version behind it, `inputs` the files it was built
    from ({path, sha256, ...})."""
    root = project_root(project_dir) or Path(project_dir).resolve()
    return {
        "schema_version": PROVENANCE_SCHEMA_VERSION,
        "artifact": artifact,
        "dataset": dataset,
        "inputs": inputs,
        "git": git_state(root),
        "dvc": dvc_upstream(root, [i["path"] for i in inputs]),
        "params": read_params(root),
        "packages": package_versions(),
        "host": {"python": sys.version.split()[0], "cpus": os.cpu_count()},
        "started_at": started_at,
        "finished_at": utc_now(),
    }
