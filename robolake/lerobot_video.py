"""LeRobot's videos, encoded and decoded with PyAV as LeRobot 0.4.4 does
(`lerobot/datasets/video_utils.py`): what the `robolake lerobot` export writes and the
`source.format: lerobot` reader decodes.

Encoder: AV1 by SVT-AV1 (LeRobot's default vcodec) where this PyAV has it, else H.264 by
x264; both yuv420p, a keyframe every 2 frames (g=2: any frame decodes after at most one
other), CRF 30. An episode is a time range of a video file it shares with other episodes:
`decode_span` seeks to the keyframe before it and decodes only its frames."""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

# encoder -> its options, preferred first: LeRobot's _get_codec_options (g, crf, SVT-AV1 preset 12)
# and its fast-decode option (svtav1-params fast-decode=1; x264's tune fastdecode)
ENCODERS = {
    "libsvtav1": {"g": "2", "crf": "30", "preset": "12", "svtav1-params": "fast-decode=1"},
    "libx264": {"g": "2", "crf": "30", "tune": "fastdecode"},
}
PIX_FMT = "yuv420p"


def available_encoder() -> str | None:
    """The first of ENCODERS this PyAV build has, or None."""
    return next((name for name in ENCODERS if name in av.codecs_available), None)


def encode_episode(frames: np.ndarray, encoder: str, rate: Fraction) -> bytes:
    """(frames, H, W, 3) RGB frames as an MP4 file's bytes."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream(encoder, rate=rate, options=dict(ENCODERS[encoder]))
        stream.pix_fmt, stream.height, stream.width = PIX_FMT, frames.shape[1], frames.shape[2]
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def decode_video(source) -> np.ndarray:
    """Every frame of a video (a path or a file object) as (frames, H, W, 3) RGB."""
    with av.open(source) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def decode_span(path: str, start_s: float, end_s: float, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """(time, RGB frame) of each frame of the video file `path` shown in [start_s, end_s),
    in order, one at a time: a frame belongs to the span where its time lies within half a
    frame of it (the times LeRobot's episodes metadata gives are frame boundaries)."""
    half = 0.5 / fps
    with av.open(path) as container:
        stream = container.streams.video[0]
        container.seek(max(int((start_s - half) / stream.time_base), 0), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.time is None or frame.time < start_s - half:
                continue
            if frame.time >= end_s - half:
                return
            yield frame.time, frame.to_ndarray(format="rgb24")


def video_info(path: str) -> dict:
    """A video feature's `info` in meta/info.json, read from its file as LeRobot's
    get_video_info reads it."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.base_rate
        return {"video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec_context.codec.canonical_name, "video.pix_fmt": stream.pix_fmt,
                "video.is_depth_map": False, "video.fps": int(rate) if rate.denominator == 1 else float(rate),
                "video.channels": 3, "has_audio": bool(container.streams.audio)}


def video_frames(path: str) -> int:
    """The number of frames in a video file, from its container's index."""
    with av.open(path) as container:
        return container.streams.video[0].frames
