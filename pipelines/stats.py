"""Streaming, mergeable statistics of one split's episodes: action and state vectors
(robolake.statistics), camera pixels, and the Beam CombineFn that merges them across
workers. Memory depends on the vector width, never on the number of steps."""

from __future__ import annotations

import apache_beam as beam
import cv2
import numpy as np

from robolake.statistics import Moments, VectorStats


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


THUMBNAIL = (32, 32)  # the grayscale thumbnail whose change from frame to frame CameraSummary keeps


class CameraSummary:
    """One episode's view of one camera: pixel statistics, mean brightness (luma) and
    mean contrast (per-frame luma standard deviation), on the [0, 1] scale, and per frame
    its change from the previous frame (mean absolute difference of a THUMBNAIL of the
    luma, [0, 1] scale; NaN for the first frame), which the episode quality metrics read."""

    def __init__(self):
        self.pixels = PixelStats()
        self.brightness: list[float] = []
        self.contrast: list[float] = []
        self.change: list[float] = []
        self._thumbnail: np.ndarray | None = None

    def add_frame(self, rgb: np.ndarray) -> None:
        self.pixels.add_frame(rgb)
        luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # ITU-R BT.601
        mean, std = cv2.meanStdDev(luma)
        self.brightness.append(float(mean[0, 0]) / 255.0)
        self.contrast.append(float(std[0, 0]) / 255.0)
        thumbnail = cv2.resize(luma, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.float32)
        previous, self._thumbnail = self._thumbnail, thumbnail
        self.change.append(float("nan") if previous is None else float(cv2.absdiff(thumbnail, previous).mean()) / 255.0)

    @classmethod
    def from_row(cls, mean: list[float], std: list[float], brightness: float, contrast: float) -> CameraSummary:
        """The summary a silver episodes row holds (a kept camera's, carried into a new version)."""
        summary = cls()
        summary.pixels = pixel_stats_from_row(mean, std, 1)
        summary.brightness, summary.contrast = [brightness], [contrast]
        return summary

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
