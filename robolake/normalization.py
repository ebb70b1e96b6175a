"""normalize / denormalize with a gold version's dataset_statistics.json.

Modes (the file's robolake.normalization.mode), each clipped to [-clip, clip]:
- mean_std:   (x - mean) / std
- bounds_q99: q01 -> -1, q99 -> +1 (as OpenVLA does)
- min_max:    min -> -1, max -> +1
Dimensions whose mask entry is false (the gripper, by default) pass through as they
are. A dimension with zero spread maps to 0, and back to its single value.
`denormalize(normalize(x)) == x` wherever no clipping happened."""

from __future__ import annotations

import json

import numpy as np

from robolake.lake import read_bytes

KEYS = {"action": "action", "state": "proprio", "proprio": "proprio"}


def load_statistics(path: str) -> dict:
    """dataset_statistics.json from a file path or a gold version folder."""
    if not path.endswith(".json"):
        path = path.rstrip("/") + "/dataset_statistics.json"
    return json.loads(read_bytes(path))


def _parameters(statistics: dict, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """center, half-range, mask and clip of `key` (action or state)."""
    stats = statistics[KEYS[key]]
    settings = statistics["robolake"]["normalization"]
    mode = settings["mode"]
    if mode == "mean_std":
        center, scale = np.asarray(stats["mean"]), np.asarray(stats["std"])
    else:
        low, high = (stats["q01"], stats["q99"]) if mode == "bounds_q99" else (stats["min"], stats["max"])
        low, high = np.asarray(low), np.asarray(high)
        center, scale = (low + high) / 2, (high - low) / 2
    mask = np.asarray(stats.get("mask", [True] * len(center)), bool)
    return center, scale, mask, float(settings["clip"])


def normalize(values: np.ndarray, statistics: dict, key: str = "action") -> np.ndarray:
    """Normalized copy of `values` (..., dims)."""
    center, scale, mask, clip = _parameters(statistics, key)
    values = np.asarray(values, np.float64)
    safe = np.where(scale > 0, scale, 1.0)
    normalized = np.clip(np.where(scale > 0, (values - center) / safe, 0.0), -clip, clip)
    return np.where(mask, normalized, values)


def denormalize(values: np.ndarray, statistics: dict, key: str = "action") -> np.ndarray:
    """Inverse of `normalize` (exact where no value was clipped)."""
    center, scale, mask, _ = _parameters(statistics, key)
    values = np.asarray(values, np.float64)
    return np.where(mask, values * scale + center, values)
