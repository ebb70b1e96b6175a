"""normalize / denormalize with a gold version's dataset_statistics.json.

Every mode maps a center and a half-range per dimension onto 0 and +-1, then clips to
[-1, 1] (the range a tanh head or a 256-bin action tokenizer covers):
- bounds_q99 (default): q01 -> -1, q99 -> +1, as OpenVLA does. About 1% of a
  dimension's values lie beyond each quantile and clip.
- min_max:    min -> -1, max -> +1. Nothing in the train split clips, but one
  outlier widens the range and squeezes every other value.
- mean_std:   z / std_bound with z = (x - mean) / std, i.e. std_bound standard
  deviations -> +-1. std_bound 1 (the old default) clipped 10-25% of every sample
  action dimension; 3 keeps all but the heavy tails (docs/normalization.md).
Dimensions whose mask entry is false (the gripper, by default) pass through as they
are. A dimension with zero spread maps to 0, and back to its single value.
`denormalize(normalize(x)) == x` wherever no clipping happened.

Files of statistics schema 1.0.0 stored `clip` (the bound in normalized units) and no
`std_bound`; they are read as they were written (std_bound 1, that clip)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from robolake.storage import read_bytes

KEYS = {"action": "action", "state": "proprio", "proprio": "proprio"}
MODES = ("bounds_q99", "mean_std", "min_max")
AT_BOUND = 1 - 1e-9  # |normalized| from here on counts as sitting at the clip bound


def load_statistics(path: str) -> dict:
    """dataset_statistics.json from a file path or a gold version folder."""
    if not path.endswith(".json"):
        path = path.rstrip("/") + "/dataset_statistics.json"
    return json.loads(read_bytes(path))


@dataclass(frozen=True)
class Affine:
    """One key's normalization: (x - center) / scale, clipped to [-clip, clip], where mask."""

    center: np.ndarray
    scale: np.ndarray
    mask: np.ndarray
    clip: float

    def unclipped(self, values: np.ndarray) -> np.ndarray:
        safe = np.where(self.scale > 0, self.scale, 1.0)
        return np.where(self.scale > 0, (np.asarray(values, np.float64) - self.center) / safe, 0.0)


def affine(statistics: dict, key: str = "action", mode: str | None = None) -> Affine:
    """The normalization of `key` (action or state) under the file's mode, or under `mode`
    (to measure what another mode would do with the same statistics)."""
    stats = statistics[KEYS[key]]
    settings = statistics["robolake"]["normalization"]
    mode = mode or settings["mode"]
    if mode == "mean_std":
        center = np.asarray(stats["mean"], np.float64)
        scale = np.asarray(stats["std"], np.float64) * float(settings.get("std_bound", 1.0))
    else:
        low, high = (stats["q01"], stats["q99"]) if mode == "bounds_q99" else (stats["min"], stats["max"])
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        center, scale = (low + high) / 2, (high - low) / 2
    mask = np.asarray(stats.get("mask", [True] * len(center)), bool)
    return Affine(center, scale, mask, float(settings.get("clip", 1.0)))


def normalize(values: np.ndarray, statistics: dict, key: str = "action") -> np.ndarray:
    """Normalized copy of `values` (..., dims)."""
    a = affine(statistics, key)
    return np.where(a.mask, np.clip(a.unclipped(values), -a.clip, a.clip), np.asarray(values, np.float64))


def denormalize(values: np.ndarray, statistics: dict, key: str = "action") -> np.ndarray:
    """Inverse of `normalize` (exact where no value was clipped)."""
    a = affine(statistics, key)
    values = np.asarray(values, np.float64)
    return np.where(a.mask, values * a.scale + a.center, values)


def at_bound(values: np.ndarray, statistics: dict, key: str = "action", mode: str | None = None) -> np.ndarray:
    """Which values (..., dims) normalize onto the clip bound or beyond it (mask ignored)."""
    a = affine(statistics, key, mode)
    return np.abs(a.unclipped(values)) >= a.clip * AT_BOUND
