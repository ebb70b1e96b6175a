"""The export's videos (the codec itself is robolake/lerobot_video.py, shared with the
`source.format: lerobot` reader): each episode is encoded on its own, as LeRobot records
them, decoded back to measure its error against the gold frames, and its packets appended
to the camera's current MP4 (a new file past VIDEO_FILE_MB), shifted to start where the
file's previous episode ended."""

from __future__ import annotations

import io
import os
from fractions import Fraction

import av
import numpy as np

from robolake.lerobot_layout import VIDEO_FILE_MB, VIDEO_PATH, next_file
from robolake.lerobot_video import decode_video, encode_episode


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
