"""Camera frame preprocessing in the pipeline: each source frame through the camera's
transform (robolake/camera_frames.py, shared with the policy runtime), and its pixel summary."""

from __future__ import annotations

import cv2
import numpy as np

from collections.abc import Iterable

from pipelines.episode import EpisodeRejected
from pipelines.stats import CameraSummary
from robolake.camera_frames import FramePreprocessor

cv2.setNumThreads(1)  # one frame per call; parallelism comes from Beam workers


def preprocess_frames(frames: Iterable[np.ndarray], preprocessor: FramePreprocessor) -> tuple[list[bytes], CameraSummary]:
    """Each source frame resized and encoded, and the pixel summary of the camera. A frame
    without pixels (0 rows or columns) rejects the episode (bad_shape)."""
    encoded, summary = [], CameraSummary()
    for step, frame in enumerate(frames):
        if 0 in frame.shape[:2]:
            raise EpisodeRejected("bad_shape", f"camera {preprocessor.camera!r}: the frame at step {step} is "
                                               f"{frame.shape[0]}x{frame.shape[1]} pixels")
        resized = preprocessor.resize(frame)
        encoded.append(preprocessor.encode_resized(resized))
        summary.add_frame(preprocessor.rgb(resized))
    return encoded, summary
