"""Streaming, mergeable statistics of per-step vectors (actions, state).

Every accumulator has `add` (a batch of rows), `merge` and a result, so the same code
runs in one process, in a Beam CombineFn across workers, over shards merged later, or
over the per-episode rows of the silver `episode_stats` table (`robolake stats`);
memory depends on the vector width, never on the number of steps.

- count, mean and variance: Welford within a batch, Chan et al. to merge.
- min, max: exact.
- median, q01, q99 (any quantile): a DDSketch-style log-bucket histogram per
  dimension, read as `np.quantile(x, q)` reads sorted data (its default, linear
  interpolation between the order statistics at ranks k = floor(q (n - 1)) and k + 1).
  Value bound: |returned - np.quantile(x, q)| <= ALPHA * max(|x_(k)|, |x_(k+1)|) + ZERO_WIDTH,
  since each of the two order statistics comes back within ALPHA of its value. The
  order statistics at ranks 0 and n - 1 are the exact min and max. A bucket holds the
  magnitudes nearest to one power of GAMMA, which represents it, so 0, +-1 and every
  power of GAMMA come back exactly (a binary gripper's quantiles are its two values).
  Buckets are fixed, so merging is adding counts and the result does not depend on the
  order of merging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ALPHA = 0.005  # relative accuracy of every order statistic the sketch returns
ZERO_WIDTH = 1e-9  # |x| below this counts as zero
MAX_MAGNITUDE = 1e9  # |x| above this is counted in the last bucket (reported as +-MAX_MAGNITUDE)
GAMMA = (1 + ALPHA) ** 2  # |x| within a factor sqrt(GAMMA) = 1 + ALPHA of its bucket's power of GAMMA
_LOG_GAMMA = math.log(GAMMA)
_KEY_MIN = round(math.log(ZERO_WIDTH) / _LOG_GAMMA)
_KEY_MAX = round(math.log(MAX_MAGNITUDE) / _LOG_GAMMA)
BUCKETS = _KEY_MAX - _KEY_MIN + 1  # per sign, about 4,100
SLOTS = 2 * BUCKETS + 1  # one dimension's negatives (largest magnitude first), zero, positives
QUANTILES = {"q01": 0.01, "median": 0.5, "q99": 0.99}


def _slots(rows: np.ndarray) -> np.ndarray:
    """Each value's slot in its dimension's row of SLOTS: negatives (largest magnitude
    first), zero, positives."""
    magnitudes = np.abs(rows)
    keys = np.rint(np.log(np.maximum(magnitudes, ZERO_WIDTH)) / _LOG_GAMMA).astype(np.int64)
    buckets = np.clip(keys, _KEY_MIN, _KEY_MAX) - _KEY_MIN
    return np.where(magnitudes < ZERO_WIDTH, BUCKETS, np.where(rows > 0, BUCKETS + 1 + buckets, BUCKETS - 1 - buckets))


def _bucket_value(index: np.ndarray) -> np.ndarray:
    """The magnitude that represents a bucket: within ALPHA of every value in it."""
    return GAMMA ** (index + _KEY_MIN)


def interpolated_quantile(values: np.ndarray, counts: np.ndarray, q: float, exact_ends: tuple[float, float] | None = None) -> float:
    """np.quantile(x, q) (linear) of data given as ascending `values` with `counts`.
    `exact_ends` replaces the order statistics at ranks 0 and n - 1 (the exact min and max)
    and bounds the others."""
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1]) if cumulative.size else 0
    if not total:
        return float("nan")
    position = q * (total - 1)
    ranks = np.array([math.floor(position), min(math.floor(position) + 1, total - 1)])
    low, high = values[np.searchsorted(cumulative, ranks, side="right")]
    if exact_ends is not None:
        smallest, largest = exact_ends
        low, high = (min(max(v, smallest), largest) for v in (low, high))
        low, high = (smallest if r == 0 else largest if r == total - 1 else v for r, v in zip(ranks, (low, high)))
    return float(low + (position - ranks[0]) * (high - low))


@dataclass
class QuantileSketch:
    """Log-bucket histograms of `dims` columns, as counts over SLOTS per dimension:
    negatives (largest magnitude first), zeros, positives."""

    dims: int
    counts: np.ndarray = field(init=False)

    def __post_init__(self):
        self.counts = np.zeros((self.dims, SLOTS), np.int64)

    def add(self, rows: np.ndarray) -> None:
        keys = (_slots(rows) + np.arange(self.dims) * SLOTS).ravel()
        if len(keys) > SLOTS:
            self.counts += np.bincount(keys, minlength=self.dims * SLOTS).reshape(self.dims, SLOTS)
        else:  # a short batch (one episode): touch only the slots it fills
            occupied, counts = np.unique(keys, return_counts=True)
            self.counts.ravel()[occupied] += counts

    def merge(self, other: QuantileSketch) -> None:
        self.counts += other.counts

    def __getstate__(self) -> tuple:
        """Pickled sparse: a shuffle carries the filled slots (kilobytes), not dims x SLOTS."""
        return (self.dims, *self.sparse())

    def __setstate__(self, state: tuple) -> None:
        dims, keys, counts = state
        self.__dict__.update(QuantileSketch.from_sparse(dims, keys, counts).__dict__)

    def sparse(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, counts) of the non-empty slots; key = dimension * SLOTS + slot."""
        keys = np.flatnonzero(self.counts)
        return keys.astype(np.int32), self.counts.ravel()[keys]

    @classmethod
    def from_sparse(cls, dims: int, keys: np.ndarray, counts: np.ndarray) -> QuantileSketch:
        """The sketch of any number of `sparse()` outputs, concatenated (merged by adding)."""
        sketch = cls(dims)
        sketch.counts = np.bincount(np.asarray(keys, np.int64), weights=counts, minlength=dims * SLOTS).astype(
            np.int64).reshape(dims, SLOTS)
        return sketch

    def distribution(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Bucket values in ascending order and their counts, for dimension d."""
        slots = np.flatnonzero(self.counts[d])
        signed = slots - BUCKETS  # < 0: negative bucket BUCKETS - slot - 1, 0: zero, > 0: positive bucket
        values = np.sign(signed) * _bucket_value(np.abs(signed) - 1)
        return values, self.counts[d, slots]

    def quantile(self, d: int, q: float, exact_ends: tuple[float, float] | None = None) -> float:
        values, counts = self.distribution(d)
        return interpolated_quantile(values, counts, q, exact_ends)

    def mad(self, d: int, median: float) -> float:
        """Median absolute deviation from `median`, from the bucketed distribution."""
        values, counts = self.distribution(d)
        deviations = np.abs(values - median)
        order = np.argsort(deviations, kind="stable")
        return interpolated_quantile(deviations[order], counts[order], 0.5)


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

    @classmethod
    def pooled(cls, counts: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> Moments:
        """The moments of many parts at once: counts (n,), means and m2s (n, dims)."""
        moments = cls(means.shape[1])
        total = int(counts.sum())
        if total:
            weights = counts[:, None].astype(np.float64)
            moments.count = total
            moments.mean = (weights * means).sum(axis=0) / total
            moments.m2 = m2s.sum(axis=0) + (weights * (means - moments.mean) ** 2).sum(axis=0)
        return moments

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

    def quantile(self, d: int, q: float) -> float:
        """np.quantile of dimension d (see the module's bound)."""
        return self.sketch.quantile(d, q, (float(self.min[d]), float(self.max[d])))

    def robust(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension median and median absolute deviation."""
        median = np.array([self.quantile(d, 0.5) for d in range(self.dims)])
        mad = np.array([self.sketch.mad(d, median[d]) for d in range(self.dims)])
        return median, mad

    def result(self) -> dict:
        """Plain lists, as dataset_statistics.json stores them."""
        quantiles = {name: [self.quantile(d, q) for d in range(self.dims)] for name, q in QUANTILES.items()}
        return {
            "count": self.count,
            "mean": self.moments.mean.tolist(),
            "std": self.moments.std().tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
            **quantiles,
        }

    def row(self, prefix: str) -> dict:
        """Columns of a silver `episode_stats` row: everything needed to merge it again."""
        keys, counts = self.sketch.sparse()
        return {
            f"{prefix}_count": self.count, f"{prefix}_mean": self.moments.mean.tolist(),
            f"{prefix}_m2": self.moments.m2.tolist(), f"{prefix}_min": self.min.tolist(),
            f"{prefix}_max": self.max.tolist(), f"{prefix}_sketch_keys": keys.tolist(),
            f"{prefix}_sketch_counts": counts.tolist(),
        }

    @classmethod
    def from_rows(cls, dims: int, counts: np.ndarray, means: np.ndarray, m2s: np.ndarray, mins: np.ndarray,
                  maxs: np.ndarray, sketch_keys: np.ndarray, sketch_counts: np.ndarray) -> VectorStats:
        """The merged statistics of many `row()`s, columns stacked: (n,) counts, (n, dims)
        moments and bounds, the sketch keys and counts of all rows concatenated."""
        stats = cls(dims)
        stats.moments = Moments.pooled(counts, means, m2s)
        if len(counts):
            stats.min, stats.max = mins.min(axis=0), maxs.max(axis=0)
        stats.sketch = QuantileSketch.from_sparse(dims, sketch_keys, sketch_counts)
        return stats
