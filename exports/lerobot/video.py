"""The export's videos, encoded with PyAV as LeRobot 0.4.4 encodes its own
(`lerobot/datasets/video_utils.py` encode_video_frames, its defaults plus fast_decode=1).

Encoder: AV1 by SVT-AV1 (LeRobot's default vcodec) where this PyAV has it, else H.264 by
x264; both yuv420p, a keyframe every 2 frames (g=2: any frame decodes after at most one
other), CRF 30. Each episode is encoded on its own, as LeRobot records them, decoded
back to measure its error against the gold frames, and its packets appended to the
camera's current MP4 (a new file past VIDEO_FILE_MB), shifted to start where the file's
previous episode ended."""

from __future__ import annotations

import io
import os
from fractions import Fraction

import av
import numpy as np

from exports.lerobot.layout import VIDEO_FILE_MB, VIDEO_PATH, next_file

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


class PixelError:
    """Mean and max absolute difference between decoded frames and their sources, over
    every pixel and channel (uint8 levels)."""

    def __init__(self):
        self.total = self.values = self.max = 0

    def add(self, sources: np.ndarray, decoded: np.ndarray) -> None:
        if decoded.shape != sources.shape:
            raise RuntimeError(f"decoded {decoded.shape} frames from an encoding of {sources.shape}")
        difference = np.abs(decoded.astype(np.int16) - sources)
        self.total += int(difference.sum())
        self.values += difference.size
        self.max = max(self.max, int(difference.max()))

    def summary(self) -> dict:
        return {"mean": round(self.total / max(self.values, 1), 3), "max": self.max}


class VideoFiles:
    """One camera's MP4 files: episodes appended back to back, rolling over at VIDEO_FILE_MB."""

    def __init__(self, root: str, key: str, encoder: str, fps: float):
        self.root, self.key, self.encoder, self.fps = root, key, encoder, fps
        self.rate = Fraction(fps).limit_denominator(1000)
        self.chunk = self.file = 0
        self.frames_in_file = 0
        self.container = self.stream = None
        self.error = PixelError()

    def _path(self) -> str:
        return os.path.join(self.root, VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk,
                                                         file_index=self.file))

    def append(self, frames: np.ndarray) -> dict:
        """Write an episode's (frames, H, W, 3) RGB frames; its row's videos/<key>/ columns."""
        segment = encode_episode(frames, self.encoder, self.rate)
        self.error.add(frames, decode_video(io.BytesIO(segment)))
        if self.container is not None and os.path.getsize(self._path()) >= VIDEO_FILE_MB * 2**20:
            self.close()
            self.chunk, self.file = next_file(self.chunk, self.file)
            self.frames_in_file = 0
        if self.container is None:
            os.makedirs(os.path.dirname(self._path()), exist_ok=True)
            self.container = av.open(self._path(), "w")
        self._append_packets(segment)
        start = self.frames_in_file
        self.frames_in_file += len(frames)
        prefix = f"videos/{self.key}/"
        return {prefix + "chunk_index": self.chunk, prefix + "file_index": self.file,
                prefix + "from_timestamp": start / self.fps, prefix + "to_timestamp": self.frames_in_file / self.fps}

    def _append_packets(self, segment: bytes) -> None:
        """Copy an encoded episode's packets into the open file, shifted to start after
        the frames already in it."""
        with av.open(io.BytesIO(segment)) as source:
            video = source.streams.video[0]
            if self.stream is None:
                self.stream = self.container.add_stream_from_template(video, opaque=True)
            shift = round(self.frames_in_file / self.rate / video.time_base)
            for packet in source.demux(video):
                if packet.dts is None:  # the demuxer's empty end-of-stream packet
                    continue
                packet.pts += shift
                packet.dts += shift
                packet.stream = self.stream
                self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = self.stream = None
