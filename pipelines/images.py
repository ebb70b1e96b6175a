"""Camera frame preprocessing: center crop to the output aspect ratio, bilinear
resize, uint8 RGB, encoded once (JPEG via OpenCV's libjpeg-turbo, or PNG)."""

from __future__ import annotations

import cv2
import numpy as np

from collections.abc import Iterable

from pipelines.episode import EpisodeRejected
from pipelines.stats import CameraSummary
from robolake.spec import CameraSpec

cv2.setNumThreads(1)  # one frame per call; parallelism comes from Beam workers


def center_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Largest centered window of the frame with the aspect ratio height:width."""
    h, w = frame.shape[:2]
    if h * width > w * height:  # frame is taller than the target: crop rows
        crop_h = max(1, round(w * height / width))
        top = (h - crop_h) // 2
        return frame[top : top + crop_h]
    crop_w = max(1, round(h * width / height))
    left = (w - crop_w) // 2
    return frame[:, left : left + crop_w]


class FramePreprocessor:
    """Turns source frames of one camera into the encoded bytes gold RLDS stores."""

    def __init__(self, camera: CameraSpec):
        self.camera = camera.name
        self.height, self.width = camera.size
        self.extension = ".jpg" if camera.encoding == "jpeg" else ".png"
        self.params = [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg_quality] if camera.encoding == "jpeg" else []
        self.source_is_bgr = camera.channel_order == "bgr"

    def resize(self, frame: np.ndarray) -> np.ndarray:
        """Center-cropped, resized uint8 frame in the source channel order."""
        cropped = center_crop(frame, self.height, self.width)
        if cropped.shape[:2] == (self.height, self.width):
            return np.ascontiguousarray(cropped)
        return cv2.resize(cropped, (self.width, self.height), interpolation=cv2.INTER_LINEAR)

    def rgb(self, resized: np.ndarray) -> np.ndarray:
        """A resized frame in RGB order."""
        return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB) if self.source_is_bgr else resized

    def encode(self, frame: np.ndarray) -> bytes:
        return self.encode_resized(self.resize(frame))

    def encode_resized(self, resized: np.ndarray) -> bytes:
        bgr = resized if self.source_is_bgr else cv2.cvtColor(resized, cv2.COLOR_RGB2BGR)
        ok, buffer = cv2.imencode(self.extension, bgr, self.params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {resized.shape} frame")
        return buffer.tobytes()


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
