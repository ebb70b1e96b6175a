"""A camera's frame transform, the one the gold pipeline stores frames with and the policy
runtime applies to live frames: centre crop to the camera's output aspect ratio, bilinear
resize to its size, uint8, encoded once (JPEG via OpenCV's libjpeg-turbo, or PNG).

`pipelines/images.py` encodes source frames with it; `training` decodes them (`decode`) and
runs live frames through `FramePreprocessor.as_stored`, so a deployed policy sees what its
training data showed. A checkpoint bundle records its dataset's transforms
(`camera_document` -> BUNDLE_FILE, read back by `camera_preprocessors`)."""

from __future__ import annotations

import cv2
import numpy as np

from robolake.spec import CameraSpec

# What a camera's transform needs from the spec; the source's channel order and location are not part of it.
TRANSFORM_FIELDS = {"name", "size", "encoding", "jpeg_quality"}
BUNDLE_FILE = "camera_frames.json"  # a checkpoint bundle's record of its dataset's camera transforms


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


def decode(encoded: bytes) -> np.ndarray:
    """A stored (JPEG or PNG) frame as (H, W, 3) uint8 RGB, as training reads it."""
    return cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR_RGB)


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

    def as_stored(self, frame: np.ndarray) -> np.ndarray:
        """A source frame as gold stores it and training decodes it: cropped, resized, encoded
        and decoded, (height, width, 3) uint8 RGB (JPEG's loss included)."""
        return decode(self.encode(frame))


def camera_document(cameras: list[CameraSpec]) -> list[dict]:
    """The cameras' transforms as JSON (a bundle's camera_frames.json)."""
    return [camera.model_dump(mode="json", include=TRANSFORM_FIELDS) for camera in cameras]


def camera_preprocessors(document: list[dict]) -> dict[str, FramePreprocessor]:
    """`camera_document`'s cameras as preprocessors of RGB frames (the runtime's input), by name."""
    return {camera["name"]: FramePreprocessor(CameraSpec(**camera)) for camera in document}
