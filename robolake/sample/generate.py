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
from robolake.sample.episode import DEFAULT_CAMERAS, Episode, build_episode, camera_hz
from robolake.sample.hdf5_writer import write_session

GENERATOR_VERSION = "1.2.0"  # 1.2: HDF5 sessions store the cameras' JPEG bytes (as the bags do), 15x smaller
DEMOS_PER_SESSION = 5
MIN_EPISODES_FOR_FAULTS = 8
SPIKE_SCALE = (12.0, 18.0)  # times the episode's median |delta| in that dimension
FAULT_SALT = 0xFA17


@dataclass(frozen=True)
class Fault:
    kind: str  # action_spike / nan_action / truncated_file
    step: int | None = None
    dim: int | None = None
    scale: float = 0.0  # spikes only

    def manifest(self) -> dict:
        return {"kind": self.kind, "step": self.step, "dim": self.dim}


@dataclass(frozen=True)
class Unit:
    """One file or folder to write: an HDF5 session of several episodes, or one bag."""

    container: str  # hdf5 / mcap
    path: str  # relative to the output folder
    indices: tuple[int, ...]
    faults: tuple[Fault | None, ...]

    @property
    def truncated(self) -> bool:
        return any(f is not None and f.kind == "truncated_file" for f in self.faults)


def is_bag(index: int, bag_fraction: float) -> bool:
    """Interleaves the containers: episode i is a bag when floor((i+1)f) steps past floor(i f)."""
    return int(np.floor((index + 1) * bag_fraction + 1e-9)) > int(np.floor(index * bag_fraction + 1e-9))


def _fault_step(rng: np.random.Generator, steps: int) -> int:
    return int(rng.integers(steps // 4, max(steps // 4 + 1, (3 * steps) // 4)))


def plan_faults(seed: int, hdf5: list[int], bags: list[int], lengths: dict[int, int]) -> dict[int, Fault]:
    """Which episodes get which fault: the last 1-2 HDF5 episodes (they go in the last session,
    which gets truncated), one NaN action in another HDF5 episode, and action spikes in
    three more, at least one HDF5 and one bag when both exist. Needs enough episodes."""
    if len(hdf5) + len(bags) < MIN_EPISODES_FOR_FAULTS:
        return {}
    rng = np.random.default_rng([seed, len(hdf5) + len(bags), FAULT_SALT])
    faults: dict[int, Fault] = {}
    healthy = list(hdf5)
    if len(hdf5) >= 3:
        for index in hdf5[-(2 if len(hdf5) >= 6 else 1):]:
            faults[index] = Fault("truncated_file")
            healthy.remove(index)
    if healthy:
        index = healthy.pop(int(rng.integers(len(healthy))))
        faults[index] = Fault("nan_action", _fault_step(rng, lengths[index]), int(rng.integers(6)))
    for preferred in (healthy, bags, []):  # spikes: one in HDF5, one in a bag, one anywhere
        pool = [i for i in (preferred or healthy + bags) if i not in faults]
        if not pool:
            break
        index = pool[int(rng.integers(len(pool)))]
        faults[index] = Fault("action_spike", _fault_step(rng, lengths[index]), int(rng.integers(3)),
                              float(rng.uniform(*SPIKE_SCALE)))
    return faults


def plan_units(episodes: int, seed: int, bag_fraction: float, steps: int | None, faults: bool) -> list[Unit]:
    hdf5 = [i for i in range(episodes) if not is_bag(i, bag_fraction)]
    bags = [i for i in range(episodes) if is_bag(i, bag_fraction)]
    lengths = {i: build_episode(seed, i, steps, {}).steps for i in range(episodes)} if faults else {}
    planned = plan_faults(seed, hdf5, bags, lengths) if faults else {}
    truncated = [i for i in hdf5 if i in planned and planned[i].kind == "truncated_file"]
    intact = [i for i in hdf5 if i not in truncated]
    sessions = [intact[s : s + DEMOS_PER_SESSION] for s in range(0, len(intact), DEMOS_PER_SESSION)]
    sessions += [truncated] if truncated else []  # the truncated session is the last one
    units = [Unit("hdf5", f"hdf5/session_{n:03d}.hdf5", tuple(s), tuple(planned.get(i) for i in s))
             for n, s in enumerate(sessions)]
    units += [Unit("mcap", f"bags/episode_{i:04d}", (i,), (planned.get(i),)) for i in bags]
    return units


def apply_fault(episode: Episode, fault: Fault | None) -> None:
    if fault is None or fault.kind == "truncated_file":
        return
    if fault.kind == "nan_action":
        episode.actions[fault.step, fault.dim] = np.nan
        return
    column = episode.actions[:, fault.dim]
    typical = max(float(np.median(np.abs(column))), 0.005)
    column[fault.step] = np.sign(column[fault.step] or 1.0) * fault.scale * typical


def _entry(unit: Unit, index: int, k: int, episode: Episode, fault: Fault | None) -> dict:
    group = f"demo_{k}" if unit.container == "hdf5" else None
    episode_id = unit.path.removesuffix(".hdf5") + (f"/{group}" if group else "")
    return {
        "index": index, "episode_id": episode_id, "container": unit.container, "path": unit.path, "group": group,
        "steps": episode.steps, "metadata": episode.meta.attrs(), "fault": fault.manifest() if fault else None,
    }


def write_unit(unit: Unit, out_dir: str, seed: int, steps: int | None, cameras: dict) -> list[dict]:
    """Write one unit's files; returns its episodes' manifest entries."""
    episodes = [build_episode(seed, i, steps, cameras) for i in unit.indices]
    for episode, fault in zip(episodes, unit.faults):
        apply_fault(episode, fault)
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
    cameras: dict[str, tuple[int, int]] = DEFAULT_CAMERAS,
) -> dict:
    """Write `episodes` raw demonstrations to `out_dir` (which must be empty or absent):
    hdf5/session_NNN.hdf5 (robomimic, up to 5 demos each), bags/episode_NNNN/ (ROS 2 mcap)
    with bags/episode_NNNN.yaml, and sample_manifest.json, which is also returned.

    A `bag_fraction` of the episodes go to bags, interleaved by index. `steps` fixes every
    episode's length (default: 30-60 ticks by task). With `faults`, and at least 8 episodes,
    some episodes are broken on purpose; the manifest lists each. `workers` > 1 writes in a
    process pool (same bytes); `progress(done, total)` is called as each session or bag is
    written (`done` counts episodes).
    With workers > 1, call this under `if __name__ == "__main__":` in scripts (spawn)."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise RobolakeError(f"{out_dir} is not empty: the sample is written into a new or empty folder")
    if not 0.0 <= bag_fraction <= 1.0:
        raise RobolakeError(f"bag_fraction must be within [0, 1], got {bag_fraction}")
    units = plan_units(episodes, seed, bag_fraction, steps, faults)
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
        "steps": steps, "inject_faults": faults,
        "cameras": {name: {"height": h, "width": w, "rate_hz": camera_hz(name)} for name, (h, w) in cameras.items()},
        "episodes": entries,
        "faults": [{"index": e["index"], "episode_id": e["episode_id"], "path": e["path"], **e["fault"]}
                   for e in entries if e["fault"]],
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "sample_manifest.json"), "w") as f:
        json.dump(manifest, f, sort_keys=True, indent=2)
        f.write("\n")
    return manifest
