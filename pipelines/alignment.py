"""Time alignment of message streams onto control ticks (for ROS bag ingestion).

Every stream is resampled onto the ticks by taking its latest message at or before
each tick, as long as that message is at most the stream's `max_age` old. A tick where
a stream has no fresh message is dropped and counted against that stream.

A stream's stamps must not go backwards in the order they were recorded (a clock
stepped back): where they do, messages from before and after the step overlap in time
and no tick there can tell which to take (`step_back` finds it; the reader quarantines
the episode)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class StreamTimes:
    """The stamps (ns) of one stream's messages, in the order they were read."""

    stamps: np.ndarray
    max_age_ns: int


@dataclass
class Alignment:
    """Which ticks survive and which message of each stream each surviving tick takes."""

    ticks: np.ndarray  # ns, the kept ticks
    indices: dict[str, np.ndarray]  # stream -> message index (into its read order) per kept tick
    dropped: dict[str, int] = field(default_factory=dict)  # stream -> ticks dropped because it was stale


@dataclass(frozen=True)
class StepBack:
    """Where one stream's stamps go backwards: the first message stamped before the one
    recorded ahead of it, how many are, and how many ticks fall where messages from
    before and after a step overlap in time."""

    index: int  # the first message stamped before its predecessor (read order)
    from_ns: int  # its predecessor's stamp
    to_ns: int  # its stamp
    steps: int  # messages stamped before their predecessor
    ticks: int  # ticks inside an overlap: [a message's stamp, the latest stamp recorded before it]


def step_back(stamps: np.ndarray, ticks: np.ndarray) -> StepBack | None:
    """How the stamps (ns, in the order recorded) go backwards against the sorted
    `ticks`, or None where they never do."""
    stamps = np.asarray(stamps, np.int64)
    latest = np.maximum.accumulate(stamps)
    back = np.flatnonzero(stamps[1:] < stamps[:-1]) + 1
    if not len(back):
        return None
    overlapping = np.flatnonzero(stamps[1:] < latest[:-1]) + 1
    starts = np.searchsorted(ticks, stamps[overlapping], side="left")
    stops = np.searchsorted(ticks, latest[overlapping - 1], side="right")
    inside = np.zeros(len(ticks) + 1, np.int64)
    np.add.at(inside, starts, 1)
    np.add.at(inside, stops, -1)
    first = int(back[0])
    return StepBack(first, int(stamps[first - 1]), int(stamps[first]), len(back),
                    int((np.cumsum(inside[:-1]) > 0).sum()))


def ticks_at_rate(start_ns: int, end_ns: int, rate_hz: float) -> np.ndarray:
    """Ticks from start to end inclusive, 1/rate apart (ns, int64)."""
    if end_ns < start_ns:
        return np.zeros(0, np.int64)
    period = NS_PER_S / rate_hz
    count = int(np.floor((end_ns - start_ns) / period + 1e-9)) + 1
    return start_ns + np.round(np.arange(count) * period).astype(np.int64)


def latest_at_or_before(stamps: np.ndarray, ticks: np.ndarray, max_age_ns: int) -> np.ndarray:
    """For each tick, the index (into `stamps` as given, sorted or not) of the latest
    stamp <= tick and no older than max_age_ns; -1 where there is none."""
    order = np.argsort(stamps, kind="stable")
    ordered = np.asarray(stamps, np.int64)[order]
    position = np.searchsorted(ordered, ticks, side="right") - 1
    found = position >= 0
    fresh = np.zeros(len(ticks), bool)
    fresh[found] = ticks[found] - ordered[position[found]] <= max_age_ns
    return np.where(fresh, order[np.maximum(position, 0)], -1)


def align(ticks: np.ndarray, streams: dict[str, StreamTimes]) -> Alignment:
    """Resample every stream onto `ticks`; drop the ticks where a stream is stale.
    A tick dropped for several stale streams counts once, against the first in `streams`."""
    picked = {name: latest_at_or_before(s.stamps, ticks, s.max_age_ns) for name, s in streams.items()}
    keep = np.ones(len(ticks), bool)
    dropped: dict[str, int] = {}
    for name in streams:
        stale = keep & (picked[name] < 0)
        dropped[name] = int(stale.sum())
        keep &= ~stale
    return Alignment(ticks[keep], {name: index[keep] for name, index in picked.items()}, dropped)
