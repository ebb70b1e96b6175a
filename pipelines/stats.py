"""Streaming, mergeable statistics of per-step vectors (actions, state) and camera pixels.

Every accumulator has `add` (a batch of rows), `merge` and a result, so the same code
runs in one process, in a Beam CombineFn across workers, or over shards merged later;
memory depends on the vector width, never on the number of steps.

- count, mean and variance: Welford within a batch, Chan et al. to merge.
- min, max: exact.
- median, q01, q99 (any quantile): a DDSketch-style log-bucket histogram per
  dimension. Bound: a returned quantile is within relative error ALPHA (0.5%) of the
  exact order statistic at rank floor(q * (n - 1)), or within ZERO_WIDTH (1e-9)
  absolutely for values smaller than that. Buckets are fixed, so merging is adding
  counts and the result does not depend on the order of merging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import apache_beam as beam
import cv2
import numpy as np

ALPHA = 0.005  # relative accuracy of every quantile
ZERO_WIDTH = 1e-9  # |x| below this counts as zero
MAX_MAGNITUDE = 1e9  # |x| above this is counted in the last bucket (reported as +-MAX_MAGNITUDE)
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
_KEY_MIN = math.ceil(math.log(ZERO_WIDTH) / _LOG_GAMMA)
_KEY_MAX = math.ceil(math.log(MAX_MAGNITUDE) / _LOG_GAMMA)
BUCKETS = _KEY_MAX - _KEY_MIN + 1  # per sign, about 4,100
QUANTILES = {"q01": 0.01, "median": 0.5, "q99": 0.99}


def _bucket(magnitudes: np.ndarray) -> np.ndarray:
    keys = np.ceil(np.log(np.maximum(magnitudes, ZERO_WIDTH)) / _LOG_GAMMA).astype(np.int64)
    return np.clip(keys, _KEY_MIN, _KEY_MAX) - _KEY_MIN


def _bucket_value(index: np.ndarray) -> np.ndarray:
    """The value that represents a bucket: within ALPHA of every value in it."""
    return 2 * GAMMA ** (index + _KEY_MIN) / (GAMMA + 1)


@dataclass
class QuantileSketch:
    """Log-bucket histograms of `dims` columns: negatives, zeros, positives."""

    dims: int
    negative: np.ndarray = field(init=False)
    zeros: np.ndarray = field(init=False)
    positive: np.ndarray = field(init=False)

    def __post_init__(self):
        self.negative = np.zeros((self.dims, BUCKETS), np.int64)
        self.positive = np.zeros((self.dims, BUCKETS), np.int64)
        self.zeros = np.zeros(self.dims, np.int64)

    def add(self, rows: np.ndarray) -> None:
        for d in range(self.dims):
            column = rows[:, d]
            small = np.abs(column) < ZERO_WIDTH
            self.zeros[d] += int(small.sum())
            for store, values in ((self.positive, column[(column > 0) & ~small]), (self.negative, -column[(column < 0) & ~small])):
                if values.size:
                    store[d] += np.bincount(_bucket(values), minlength=BUCKETS)

    def merge(self, other: QuantileSketch) -> None:
        self.negative += other.negative
        self.positive += other.positive
        self.zeros += other.zeros

    def distribution(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Bucket values in ascending order and their counts, for dimension d."""
        negative = np.nonzero(self.negative[d])[0][::-1]
        positive = np.nonzero(self.positive[d])[0]
        values = np.concatenate([-_bucket_value(negative), [0.0], _bucket_value(positive)])
        counts = np.concatenate([self.negative[d][negative], [self.zeros[d]], self.positive[d][positive]])
        return values, counts

    def quantile(self, d: int, q: float) -> float:
        values, counts = self.distribution(d)
        total = int(counts.sum())
        if not total:
            return float("nan")
        rank = math.floor(q * (total - 1))
        return float(values[np.searchsorted(np.cumsum(counts), rank, side="right")])

    def mad(self, d: int, median: float) -> float:
        """Median absolute deviation from `median`, from the bucketed distribution."""
        values, counts = self.distribution(d)
        deviations = np.abs(values - median)
        order = np.argsort(deviations, kind="stable")
        cumulative = np.cumsum(counts[order])
        if not cumulative.size or not cumulative[-1]:
            return float("nan")
        return float(deviations[order][np.searchsorted(cumulative, math.floor(0.5 * (cumulative[-1] - 1)), side="right")])


@dataclass
class Moments:
    """count, mean and sum of squared deviations per column (Welford / Chan et al.)."""

    dims: int
    count: int = 0
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)

    def __post_init__(self):
        self.mean = np.zeros(self.dims)
        self.m2 = np.zeros(self.dims)

    def add(self, rows: np.ndarray) -> None:
        batch = Moments(self.dims)
        batch.count = len(rows)
        batch.mean = rows.mean(axis=0)
        batch.m2 = ((rows - batch.mean) ** 2).sum(axis=0)
        self.merge(batch)

    def merge(self, other: Moments) -> None:
        if not other.count:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total

    def std(self) -> np.ndarray:
        """Population standard deviation."""
        return np.sqrt(self.m2 / self.count) if self.count else np.full(self.dims, np.nan)


@dataclass
class VectorStats:
    """Per-dimension statistics of a stream of fixed-width rows."""

    dims: int
    moments: Moments = field(init=False)
    min: np.ndarray = field(init=False)
    max: np.ndarray = field(init=False)
    sketch: QuantileSketch = field(init=False)

    def __post_init__(self):
        self.moments = Moments(self.dims)
        self.min = np.full(self.dims, np.inf)
        self.max = np.full(self.dims, -np.inf)
        self.sketch = QuantileSketch(self.dims)

    @property
    def count(self) -> int:
        return self.moments.count

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float64).reshape(-1, self.dims)
        if not len(rows):
            return
        self.moments.add(rows)
        self.min = np.minimum(self.min, rows.min(axis=0))
        self.max = np.maximum(self.max, rows.max(axis=0))
        self.sketch.add(rows)

    def merge(self, other: VectorStats) -> None:
        self.moments.merge(other.moments)
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self.sketch.merge(other.sketch)

    def robust(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension median and median absolute deviation."""
        median = np.array([self.sketch.quantile(d, 0.5) for d in range(self.dims)])
        mad = np.array([self.sketch.mad(d, median[d]) for d in range(self.dims)])
        return median, mad

    def result(self) -> dict:
        """Plain lists, as dataset_statistics.json stores them."""
        quantiles = {
            name: [self.sketch.quantile(d, q) for d in range(self.dims)] for name, q in QUANTILES.items()
        }
        return {
            "count": self.count,
            "mean": self.moments.mean.tolist(),
            "std": self.moments.std().tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
            **quantiles,
        }


class PixelStats(Moments):
    """Per-channel mean and std of RGB pixels on the [0, 1] scale."""

    def __init__(self):
        super().__init__(3)

    def add_frame(self, rgb: np.ndarray) -> None:
        """One uint8 frame, from OpenCV's per-channel mean and std (no float copy of it)."""
        mean, std = cv2.meanStdDev(rgb)
        frame = Moments(3)
        frame.count = rgb.shape[0] * rgb.shape[1]
        frame.mean = mean.ravel() / 255.0
        frame.m2 = (std.ravel() / 255.0) ** 2 * frame.count
        self.merge(frame)

    def result(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std().tolist(), "pixels": self.count}


class CameraSummary:
    """One episode's view of one camera: pixel statistics, mean brightness (luma) and
    mean contrast (per-frame luma standard deviation), on the [0, 1] scale."""

    def __init__(self):
        self.pixels = PixelStats()
        self.brightness: list[float] = []
        self.contrast: list[float] = []

    def add_frame(self, rgb: np.ndarray) -> None:
        self.pixels.add_frame(rgb)
        mean, std = cv2.meanStdDev(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))  # luma, ITU-R BT.601
        self.brightness.append(float(mean[0, 0]) / 255.0)
        self.contrast.append(float(std[0, 0]) / 255.0)

    def row(self) -> dict:
        """Columns of the silver episodes table for this camera."""
        return {
            "mean": self.pixels.mean.tolist(),
            "std": self.pixels.std().tolist(),
            "brightness": float(np.mean(self.brightness)) if self.brightness else 0.0,
            "contrast": float(np.mean(self.contrast)) if self.contrast else 0.0,
        }


def pixel_stats_from_row(mean: list[float], std: list[float], pixels: int) -> PixelStats:
    """PixelStats of an episode back from its silver episodes row."""
    stats = PixelStats()
    stats.count = pixels
    stats.mean = np.asarray(mean, np.float64)
    stats.m2 = np.asarray(std, np.float64) ** 2 * pixels
    return stats


class DatasetStats:
    """Statistics of one split's episodes: actions, state, trajectories, camera pixels."""

    def __init__(self, action_dim: int, state_dim: int, cameras: list[str]):
        self.action = VectorStats(action_dim)
        self.state = VectorStats(state_dim)
        self.cameras = {name: PixelStats() for name in cameras}
        self.trajectories = 0

    def add_episode(self, actions: np.ndarray, state: np.ndarray, cameras: dict[str, PixelStats]) -> None:
        self.action.add(actions)
        self.state.add(state)
        for name, pixels in cameras.items():
            self.cameras[name].merge(pixels)
        self.trajectories += 1

    def merge(self, other: DatasetStats) -> None:
        self.action.merge(other.action)
        self.state.merge(other.state)
        for name, pixels in other.cameras.items():
            self.cameras[name].merge(pixels)
        self.trajectories += other.trajectories


class DatasetStatsFn(beam.CombineFn):
    """Beam CombineFn over (actions, state, camera PixelStats) of one episode each."""

    def __init__(self, action_dim: int, state_dim: int, cameras: list[str]):
        self.shape = (action_dim, state_dim, list(cameras))

    def create_accumulator(self) -> DatasetStats:
        return DatasetStats(*self.shape)

    def add_input(self, accumulator: DatasetStats, episode) -> DatasetStats:
        accumulator.add_episode(*episode)
        return accumulator

    def merge_accumulators(self, accumulators) -> DatasetStats:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: DatasetStats) -> DatasetStats:
        return accumulator
