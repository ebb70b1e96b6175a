"""LeRobot's statistics: meta/stats.json and the episode rows' `stats/<feature>/<stat>`.

stats.json for `action` and `observation.state` is the version's dataset_statistics.json
(`action`, `proprio`; the train split, as every statistic in robolake; its `median`
becomes q50); images' stats are exact per-channel histograms of the train split's frames;
the other features' are merged quantile sketches of the train split (quantiles as
np.quantile gives them over all frames, not LeRobot's count-weighted average of
per-episode quantiles). Per-episode statistics are exact."""

from __future__ import annotations

import numpy as np

from robolake.statistics import VectorStats, interpolated_quantile

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
GOLD_STATISTICS = (("action", "action"), ("observation.state", "proprio"))  # (feature, dataset_statistics.json key)


def channel_histogram(frames: np.ndarray) -> np.ndarray:
    """(3, 256) counts of (frames, H, W, 3) uint8 RGB values."""
    return np.stack([np.bincount(frames[..., c].ravel(), minlength=256) for c in range(3)])


def episode_statistics(columns: dict[str, np.ndarray], histograms: dict[str, np.ndarray], length: int) -> dict:
    """An episode row's `stats/<feature>/<stat>` columns from its frames' numeric columns
    and its images' (3, 256) histograms, keyed by feature."""
    stats = {key: _vector_stats(values.reshape(length, -1)) for key, values in columns.items()}
    stats.update({key: _histogram_stats(histogram, length) for key, histogram in histograms.items()})
    return {f"stats/{key}/{name}": np.asarray(value).tolist()
            for key, feature in stats.items() for name, value in feature.items()}


class TrainStatistics:
    """The train split's frames, merged episode by episode, for meta/stats.json."""

    def __init__(self):
        self.vectors: dict[str, VectorStats] = {}
        self.histograms: dict[str, np.ndarray] = {}
        self.frames = 0

    def add(self, columns: dict[str, np.ndarray], histograms: dict[str, np.ndarray], length: int) -> None:
        self.frames += length
        for key, values in columns.items():
            values = values.reshape(length, -1)
            self.vectors.setdefault(key, VectorStats(values.shape[1])).add(values)
        for key, histogram in histograms.items():
            self.histograms[key] = self.histograms.get(key, 0) + histogram

    def document(self, statistics: dict) -> dict:
        """meta/stats.json: `statistics` (the version's dataset_statistics.json) for action
        and state, the train split's merged statistics for the rest."""
        stats = {key: _merged_stats(merged) for key, merged in self.vectors.items()}
        stats.update({key: _histogram_stats(h, self.frames) for key, h in self.histograms.items()})
        for key, source in GOLD_STATISTICS:
            if source in statistics:
                stats[key] = _from_statistics(statistics[source])
        return {key: {name: np.asarray(value).tolist() for name, value in feature.items()}
                for key, feature in stats.items()}


def _vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-feature stats of (frames, dim) values: min, max, mean, std, count, quantiles."""
    values = values.astype(np.float64)
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
             "count": np.array([len(values)])}
    for key, q in QUANTILES.items():
        stats[key] = np.quantile(values, q, axis=0)
    return stats


def _merged_stats(merged: VectorStats) -> dict[str, np.ndarray]:
    """LeRobot's stats of a split from its merged sketch: quantiles as np.quantile over all of
    its frames (within the sketch's bound), not LeRobot's count-weighted average of the
    episodes' quantiles, which is not a quantile of the data."""
    result = merged.result()
    stats = {key: np.asarray(result[key], np.float64) for key in ("min", "max", "mean", "std")}
    stats["count"] = np.array([merged.count])
    for key, q in QUANTILES.items():
        stats[key] = np.array([merged.quantile(d, q) for d in range(merged.dims)])
    return stats


def _histogram_stats(histogram: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel stats in [0, 1], shaped (3, 1, 1) as LeRobot's image stats, from
    (3, 256) counts of uint8 values: exact mean, std, min, max and quantiles (np.quantile's)."""
    levels = np.arange(256) / 255.0
    total = histogram.sum(1)
    mean = histogram @ levels / total
    std = np.sqrt(np.maximum(histogram @ levels**2 / total - mean**2, 0))
    stats = {"min": np.array([levels[np.flatnonzero(h)[0]] for h in histogram]),
             "max": np.array([levels[np.flatnonzero(h)[-1]] for h in histogram]),
             "mean": mean, "std": std}
    for key, q in QUANTILES.items():
        stats[key] = np.array([interpolated_quantile(levels, h, q) for h in histogram])
    stats = {k: v.reshape(3, 1, 1) for k, v in stats.items()}
    stats["count"] = np.array([frames])
    return stats


def _from_statistics(entry: dict) -> dict[str, np.ndarray]:
    """A dataset_statistics.json entry (`action`, `proprio`) as LeRobot stats."""
    stats = {key: np.asarray(entry[key], np.float64) for key in ("min", "max", "mean", "std")}
    stats["count"] = np.array([int(entry["count"])])
    for source, key in (("q01", "q01"), ("median", "q50"), ("q99", "q99")):
        if source in entry:
            stats[key] = np.asarray(entry[source], np.float64)
    return stats
