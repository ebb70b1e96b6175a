"""Rerun recordings (.rrd) as robolake writes them: one explicit recording stream saved
to a file, two timelines (`step`: the step index; `time`: seconds since the episode's
first step), frames logged as the encoded JPEG/PNG bytes they are stored as, and one
scalar entity per named dimension. `robolake view` (exports/rerun_view.py) and
`robolake evaluate --record` (training/rollout.py) both write through it; docs/view.md
describes the entity layout."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import rerun as rr

APPLICATION_ID = "robolake"
STEP, TIME = "step", "time"  # the timelines


def entity(*parts: str) -> str:
    """An entity path from raw names: each part escaped, so an episode id such as
    `tabletop_000/data/demo_1` stays one path part."""
    return "/" + "/".join(rr.escape_entity_path_part(str(part)) for part in parts)


@contextmanager
def recording(path: str, name: str) -> Iterator[rr.RecordingStream]:
    """A recording stream saving to the local file `path`, named `name` in the viewer;
    flushed and closed on exit. Its id derives from `name`, so the same content gives the
    same recording id. No wall-clock timeline: only the ones robolake logs."""
    stream = rr.RecordingStream(APPLICATION_ID, recording_id=uuid.uuid5(uuid.NAMESPACE_URL, name))
    stream.set_log_time_enabled(False)
    stream.set_log_tick_enabled(False)
    stream.save(path)
    stream.send_recording_name(name)
    try:
        yield stream
    finally:
        stream.flush()
        stream.disconnect()


def timelines(steps: Sequence[int], seconds: Sequence[float]) -> list[rr.TimeColumn]:
    """The `step` and `time` columns of a run of rows."""
    return [rr.TimeColumn(STEP, sequence=np.asarray(steps, np.int64)),
            rr.TimeColumn(TIME, duration=np.asarray(seconds, np.float64))]


def media_type(encoded: bytes) -> str | None:
    """The image format of encoded bytes by their signature; None for neither JPEG nor PNG."""
    if encoded[:3] == b"\xff\xd8\xff":
        return rr.MediaType.JPEG
    if encoded[:8] == b"\x89PNG\r\n\x1a\n":
        return rr.MediaType.PNG
    return None


def send_frames(stream: rr.RecordingStream, path: str, frames: Sequence[bytes], index: list[rr.TimeColumn]) -> None:
    """One camera's encoded frames (JPEG or PNG bytes, one per row of `index`) as an
    EncodedImage stream, the bytes as given: nothing is decoded or re-encoded."""
    stream.send_columns(path, indexes=index, columns=rr.EncodedImage.columns(
        blob=[bytes(frame) for frame in frames], media_type=[media_type(bytes(frame)) for frame in frames]))


def send_series(stream: rr.RecordingStream, path: str, names: Sequence[str], values: np.ndarray,
                index: list[rr.TimeColumn]) -> None:
    """A (rows, dimensions) array as one scalar entity per dimension, `path/<name>` (a `/`
    in a name nests: `eef_pos/0`)."""
    values = np.asarray(values, np.float64).reshape(len(values), -1)
    for dimension, name in enumerate(names):
        nested = "/".join(rr.escape_entity_path_part(part) for part in str(name).split("/"))
        stream.send_columns(f"{path}/{nested}", indexes=index,
                            columns=rr.Scalars.columns(scalars=values[:, dimension]))


def log_event(stream: rr.RecordingStream, path: str, step: int, seconds: float | None, text: str,
              level: str = rr.TextLogLevel.INFO) -> None:
    """A text log entry at one step (and at its time, where the step has one)."""
    stream.reset_time()
    stream.set_time(STEP, sequence=step)
    if seconds is not None:
        stream.set_time(TIME, duration=seconds)
    stream.log(path, rr.TextLog(text, level=level))


def log_document(stream: rr.RecordingStream, path: str, markdown: str) -> None:
    """A static Markdown document (shown whatever the time)."""
    stream.log(path, rr.TextDocument(markdown, media_type=rr.MediaType.MARKDOWN), static=True)


def markdown_table(rows: Sequence[tuple], header: tuple[str, ...] = ("field", "value")) -> str:
    """Rows as a Markdown table (`|` in a cell escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)
