"""write_sample: N episodes split between robomimic HDF5 sessions and ROS 2 mcap bags,
with seeded faults and a manifest saying where each episode went and what is wrong with it.

Work is cut into units (one HDF5 session or one bag) that each write their own files, so
the output is the same whether they run in this process or in a pool of workers."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from robolake.errors import RobolakeError
from robolake.sample.bag_writer import write_bag
from robolake.sample.episode import DEFAULT_CAMERAS, Episode, camera_hz
from robolake.sample.faults import DEFAULT_SHARES, Fault, TruncatedFile, check_shares, faulty_episode, plan_faults
from robolake.sample.hdf5_writer import write_session

GENERATOR_VERSION = "1.3.0"  # 1.3: behaviour faults (idle, chatter, frozen camera, failed demo, duplicate, timing)
DEMOS_PER_SESSION = 5


@dataclass(frozen=True)
class Unit:
    """One file or folder to write: an HDF5 session of several episodes, or one bag."""

    container: str  # hdf5 / mcap
    path: str  # relative to the output folder
    indices: tuple[int, ...]
    faults: tuple[Fault | None, ...]

    @property
    def truncated(self) -> bool:
        return any(isinstance(f, TruncatedFile) for f in self.faults)


def is_bag(index: int, bag_fraction: float) -> bool:
    """Interleaves the containers: episode i is a bag when floor((i+1)f) steps past floor(i f)."""
    return int(np.floor((index + 1) * bag_fraction + 1e-9)) > int(np.floor(index * bag_fraction + 1e-9))


def plan_units(episodes: int, seed: int, bag_fraction: float, steps: int | None,
               shares: dict[str, float] | None, cameras: list[str]) -> list[Unit]:
    """The files to write and each episode's fault; `shares` None: no faults at all."""
    hdf5 = [i for i in range(episodes) if not is_bag(i, bag_fraction)]
    bags = [i for i in range(episodes) if is_bag(i, bag_fraction)]
    planned = {} if shares is None else plan_faults(
        seed, episodes, lambda i: is_bag(i, bag_fraction), steps, shares, cameras)
    truncated = [i for i in hdf5 if isinstance(planned.get(i), TruncatedFile)]
    intact = [i for i in hdf5 if i not in truncated]
    sessions = [intact[s : s + DEMOS_PER_SESSION] for s in range(0, len(intact), DEMOS_PER_SESSION)]
    sessions += [truncated] if truncated else []  # the truncated session is the last one
    units = [Unit("hdf5", f"hdf5/session_{n:03d}.hdf5", tuple(s), tuple(planned.get(i) for i in s))
             for n, s in enumerate(sessions)]
    units += [Unit("mcap", f"bags/episode_{i:04d}", (i,), (planned.get(i),)) for i in bags]
    return units


def _entry(unit: Unit, index: int, k: int, episode: Episode, fault: Fault | None) -> dict:
    group = f"demo_{k}" if unit.container == "hdf5" else None
    episode_id = unit.path.removesuffix(".hdf5") + (f"/{group}" if group else "")
    return {
        "index": index, "episode_id": episode_id, "container": unit.container, "path": unit.path, "group": group,
        "steps": episode.steps, "metadata": episode.meta.attrs(), "fault": fault.manifest() if fault else None,
    }


def _listed(entry: dict, entries: list[dict]) -> dict:
    """An entry of the manifest's fault list; a duplicate also names the episode it copies."""
    listed = {"index": entry["index"], "episode_id": entry["episode_id"], "path": entry["path"], **entry["fault"]}
    if "of" in entry["fault"]:
        listed["of_episode_id"] = entries[entry["fault"]["of"]]["episode_id"]
    return listed


def write_unit(unit: Unit, out_dir: str, seed: int, steps: int | None, cameras: dict) -> list[dict]:
    """Write one unit's files; returns its episodes' manifest entries."""
    episodes = [faulty_episode(seed, i, steps, cameras, fault) for i, fault in zip(unit.indices, unit.faults)]
    path = os.path.join(out_dir, unit.path)
    if unit.container == "hdf5":
        write_session(path, episodes, frames="jpeg")
        if unit.truncated:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
    else:
        write_bag(path, episodes[0])
    return [_entry(unit, i, k, e, f) for k, (i, e, f) in enumerate(zip(unit.indices, episodes, unit.faults), 1)]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _write_unit_star(args) -> list[dict]:
    return write_unit(*args)


def write_sample(
    out_dir: str, episodes: int = 60, seed: int = 0, bag_fraction: float = 0.5, steps: int | None = None,
    faults: bool = True, workers: int = 1, progress: Callable[[int, int], None] | None = None,
    cameras: dict[str, tuple[int, int]] = DEFAULT_CAMERAS, fault_shares: dict[str, float] | None = None,
) -> dict:
    """Write `episodes` raw demonstrations to `out_dir` (which must be empty or absent):
    hdf5/session_NNN.hdf5 (robomimic, up to 5 demos each), bags/episode_NNNN/ (ROS 2 mcap)
    with bags/episode_NNNN.yaml, and sample_manifest.json, which is also returned.

    A `bag_fraction` of the episodes go to bags, interleaved by index. `steps` fixes every
    episode's length (default: 30-60 ticks by task). With `faults` and at least 8 episodes,
    some are broken on purpose (robolake.sample.faults): behaviour faults in `fault_shares`
    (kind -> share of the episodes; default DEFAULT_SHARES, kinds left out get none) and data
    faults; the manifest lists each. `workers` > 1 writes in a
    process pool (same bytes); `progress(done, total)` is called as each session or bag is
    written (`done` counts episodes).
    With workers > 1, call this under `if __name__ == "__main__":` in scripts (spawn)."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise RobolakeError(f"{out_dir} is not empty: the sample is written into a new or empty folder")
    if not 0.0 <= bag_fraction <= 1.0:
        raise RobolakeError(f"bag_fraction must be within [0, 1], got {bag_fraction}")
    shares = check_shares(DEFAULT_SHARES if fault_shares is None else fault_shares) if faults else None
    units = plan_units(episodes, seed, bag_fraction, steps, shares, list(cameras))
    for folder in {os.path.dirname(u.path) for u in units}:
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    # Sessions (several episodes) first, so that the pool ends on short single-bag units.
    jobs = sorted(units, key=lambda u: -len(u.indices))
    args = [(unit, out_dir, seed, steps, dict(cameras)) for unit in jobs]
    entries: list[dict] = []

    def collect(done: list[dict]) -> None:
        entries.extend(done)
        if progress:
            progress(len(entries), episodes)

    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs) or 1), _init_worker) as pool:
            for done in pool.imap_unordered(_write_unit_star, args):
                collect(done)
    else:
        for arg in args:
            collect(write_unit(*arg))
    entries.sort(key=lambda e: e["index"])
    manifest = {
        "generator_version": GENERATOR_VERSION, "seed": seed, "num_episodes": episodes, "bag_fraction": bag_fraction,
        "steps": steps, "inject_faults": faults, "fault_shares": shares,
        "cameras": {name: {"height": h, "width": w, "rate_hz": camera_hz(name)} for name, (h, w) in cameras.items()},
        "episodes": entries,
        "faults": [_listed(e, entries) for e in entries if e["fault"]],
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "sample_manifest.json"), "w") as f:
        json.dump(manifest, f, sort_keys=True, indent=2)
        f.write("\n")
    return manifest
