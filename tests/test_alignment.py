"""Time alignment onto control ticks: latest message at or before each tick, max age,
stale ticks dropped and counted, unsorted stamps."""

from __future__ import annotations

import numpy as np

from pipelines.alignment import NS_PER_S, StreamTimes, align, latest_at_or_before, ticks_at_rate

MS = 1_000_000


def stamps_at(rate_hz: float, seconds: float, jitter_ms: float = 0.0, seed: int = 0) -> np.ndarray:
    base = np.arange(0, seconds, 1 / rate_hz) * NS_PER_S
    jitter = np.random.default_rng(seed).uniform(-jitter_ms, jitter_ms, len(base)) * MS
    return np.round(base + jitter).astype(np.int64)


def test_ticks_at_rate_include_both_ends():
    ticks = ticks_at_rate(5 * NS_PER_S, 6 * NS_PER_S, 10)
    assert len(ticks) == 11 and ticks[0] == 5 * NS_PER_S and ticks[-1] == 6 * NS_PER_S
    assert np.all(np.diff(ticks) == 100 * MS)
    assert len(ticks_at_rate(10, 5, 10)) == 0


def test_cameras_joint_states_and_jittered_actions_onto_10_hz():
    seconds = 3.0
    streams = {
        "front": StreamTimes(stamps_at(15, seconds), max_age_ns=100 * MS),
        "wrist": StreamTimes(stamps_at(30, seconds), max_age_ns=50 * MS),
        "joints": StreamTimes(stamps_at(100, seconds), max_age_ns=20 * MS),
        "action": StreamTimes(stamps_at(10, seconds, jitter_ms=4, seed=1) + 5 * MS, max_age_ns=100 * MS),
    }
    ticks = ticks_at_rate(0, int(2.9 * NS_PER_S), 10)
    alignment = align(ticks, streams)
    # The first tick (t=0) has no action yet (actions start 1-9 ms late): dropped and counted.
    assert alignment.dropped == {"front": 0, "wrist": 0, "joints": 0, "action": 1}
    assert alignment.ticks[0] == 100 * MS and len(alignment.ticks) == len(ticks) - 1
    seconds_at = alignment.ticks / NS_PER_S
    np.testing.assert_array_equal(alignment.indices["front"], np.floor(seconds_at * 15 + 1e-9).astype(int))
    np.testing.assert_array_equal(alignment.indices["wrist"], np.floor(seconds_at * 30 + 1e-9).astype(int))
    np.testing.assert_array_equal(alignment.indices["joints"], np.round(seconds_at * 100).astype(int))
    # action k is stamped near k*100 ms + 5 ms, so tick k*100 ms takes action k-1
    np.testing.assert_array_equal(alignment.indices["action"], np.round(seconds_at * 10).astype(int) - 1)


def test_a_dropped_frame_gap_drops_the_ticks_it_makes_stale():
    front = stamps_at(15, 3.0)
    gapped = front[(front < 1.0 * NS_PER_S) | (front > 1.5 * NS_PER_S)]  # frames 1.0-1.5 s lost
    streams = {"front": StreamTimes(gapped, max_age_ns=100 * MS), "joints": StreamTimes(stamps_at(100, 3.0), 20 * MS)}
    ticks = ticks_at_rate(0, int(2.9 * NS_PER_S), 10)
    alignment = align(ticks, streams)
    # the last frame before the gap is at 0.933 s: ticks 1.1 .. 1.5 s are more than 100 ms after it
    expected = [t for t in ticks if 1.0 * NS_PER_S < t <= 1.5 * NS_PER_S and t - 933_333_333 > 100 * MS]
    assert alignment.dropped == {"front": len(expected), "joints": 0} and len(expected) == 5
    assert not set(expected) & set(alignment.ticks.tolist())


def test_unsorted_stamps_and_drops_charged_to_the_first_stale_stream():
    stamps = np.array([300, 100, 200], np.int64) * MS  # read out of order
    ticks = np.array([50, 150, 250, 350, 600], np.int64) * MS
    assert latest_at_or_before(stamps, ticks, max_age_ns=100 * MS).tolist() == [-1, 1, 2, 0, -1]
    alignment = align(ticks, {"state": StreamTimes(stamps, 1000 * MS), "gripper": StreamTimes(stamps[1:], 60 * MS)})
    # tick 50 has no state yet; at 350 and 600 the last gripper message (200) is too old
    assert alignment.dropped == {"state": 1, "gripper": 2}
    assert alignment.ticks.tolist() == [150 * MS, 250 * MS]
    assert alignment.indices["state"].tolist() == [1, 2] and alignment.indices["gripper"].tolist() == [0, 1]
