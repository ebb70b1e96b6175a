"""Episode behaviour metrics (robolake/episode_quality.py): each metric on synthetic arrays
whose answer is known, the bad values (NaN timestamps, one step, missing frames, no
gripper), and the silver episode_quality table a conversion writes, an edit carries and
`robolake query` shows."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from cli.main import main
from pipelines.stats import CameraSummary
from robolake import episode_quality as eq
from robolake import lake_views
from robolake.lake import Lake
from robolake.storage import read_table
from tests.helpers import robomimic_spec, run_convert

NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
RATE = 10.0


def moving_actions(steps: int, seed: int = 0, noise: float = 0.001) -> np.ndarray:
    """Smooth translation at ~2 cm/step with small noise; gripper open then closed."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    actions = rng.normal(0, noise, (steps, 7))
    actions[:, 0] += 0.02 * np.sin(t / 6.0) + 0.02
    actions[:, 1] += 0.01
    actions[:, 6] = np.where(t < steps // 2, -1.0, 1.0)
    return actions


def row_of(actions, state=None, timestamps=None, cameras=None, position=None, **kwargs):
    state = np.zeros((len(actions), 3)) if state is None else state
    return eq.episode_row(actions, NAMES, state, timestamps, RATE, cameras or {}, position, **kwargs)


# -- per-episode metrics ------------------------------------------------------------------------


def test_idle_head_and_tail_in_seconds():
    actions = moving_actions(60)
    actions[:8, :6] = np.random.default_rng(1).normal(0, 0.0003, (8, 6))  # 8 idle head steps: noise only
    actions[-5:, :6] = 0.0  # 5 idle tail steps
    floors = (0.003, 0.003)
    row = eq.idle_metrics(actions, eq.ActionLayout.from_names(NAMES), 1 / RATE, floors)
    assert row["idle_head_s"] == pytest.approx(0.8)
    assert row["idle_tail_s"] == pytest.approx(0.5)
    assert row["idle_share"] == pytest.approx(13 / 60)


def test_noise_floor_follows_the_noise_not_the_idle_share():
    quiet, noisy = (moving_actions(80, noise=sigma)[:, :3] for sigma in (0.0005, 0.004))
    assert eq.noise_floor(noisy) > 3 * eq.noise_floor(quiet)
    half_idle = moving_actions(80, noise=0.004)[:, :3]
    half_idle[:40] = np.random.default_rng(3).normal(0, 0.004, (40, 3))
    assert eq.noise_floor(half_idle) == pytest.approx(eq.noise_floor(noisy), rel=0.35)
    assert eq.dataset_noise_floor([0.1, None, 0.3, float("nan"), 0.2]) == pytest.approx(0.2)
    # with the episode's own floor, an idle head is found without a dataset floor
    actions = moving_actions(60, noise=0.0005)
    actions[:10, :6] = np.random.default_rng(4).normal(0, 0.0005, (10, 6))
    assert row_of(actions)["idle_head_s"] == pytest.approx(1.0)


def test_frozen_actions_longest_identical_run():
    actions = moving_actions(40)
    actions[10:22] = actions[10]  # 12 identical consecutive actions
    row = eq.frozen_action_metrics(actions, 1 / RATE)
    assert row == {"frozen_action_steps": 12, "frozen_action_s": pytest.approx(1.2)}
    assert eq.frozen_action_metrics(moving_actions(40), 1 / RATE)["frozen_action_steps"] == 1


def test_spikes_counted_by_robust_z_and_jerk():
    layout = eq.ActionLayout.from_names(NAMES)
    actions = moving_actions(100)
    clean = eq.spike_metrics(actions, layout)
    actions[30, 2] += 0.3
    actions[70, 0] -= 0.3
    spiky = eq.spike_metrics(actions, layout)
    assert clean["spike_steps"] == 0
    assert spiky["spike_steps"] == 2  # each spike: one step away and straight back
    ramp = moving_actions(100)
    ramp[50:, 1] += 0.3  # a move that starts (a jump without the return) is no spike
    assert eq.spike_metrics(ramp, layout)["spike_steps"] == 0
    assert spiky["jerk"] > clean["jerk"]
    motion = moving_actions(100)[:, :6]
    assert clean["jerk"] == pytest.approx(np.abs(np.diff(motion, n=2, axis=0)).mean())


def test_gripper_chatter_toggles_per_second_and_reversals():
    layout = eq.ActionLayout.from_names(NAMES)
    actions = moving_actions(100)  # one close in 10 s
    times = np.arange(100) / RATE
    calm = eq.gripper_metrics(actions, layout, times, 10.0)
    assert calm["gripper_toggles_per_s"] == pytest.approx(0.1)
    assert calm["gripper_reversals"] == 0
    actions[60:70, 6] = [1, -1, 1, -1, 1, -1, 1, -1, 1, -1]  # toggles at 6.1, 6.2, ..., 7.0 s (back closed)
    chatter = eq.gripper_metrics(actions, layout, times, 10.0)
    assert chatter["gripper_toggles_per_s"] == pytest.approx(1.1)  # 11 toggles in 10 s
    assert chatter["gripper_reversals"] == 9  # 6.1 -> 6.2, ..., 6.9 -> 7.0; 5.0 -> 6.1 is 1.1 s


def test_timing_jitter_and_gaps():
    times = np.arange(50) / RATE
    times[20:] += 0.1  # one dropped step: an interval of 0.2 s
    times[30] += 0.01
    row = eq.timing_metrics(times, RATE)
    assert row["timing_gaps"] == 1
    assert row["step_interval_max_deviation_ms"] == pytest.approx(100.0)
    assert row["step_interval_jitter_ms"] == pytest.approx(np.diff(times).std() * 1000)
    steady = eq.timing_metrics(np.arange(50) / RATE, RATE)
    assert steady["timing_gaps"] == 0 and steady["step_interval_jitter_ms"] == pytest.approx(0, abs=1e-9)


def frames(steps: int, frozen: range, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shots = [rng.integers(0, 255, (64, 64, 3), np.uint8) for _ in range(steps)]
    return [shots[frozen.start] if i in frozen else shot for i, shot in enumerate(shots)]


def test_frozen_camera_run_of_n_identical_frames_gives_n():
    summary = CameraSummary()
    for frame in frames(30, range(10, 17)):  # 7 identical frames
        summary.add_frame(frame)
    assert math.isnan(summary.change[0]) and len(summary.change) == 30
    row = eq.camera_metrics("front", summary.brightness, summary.change, 30, 1 / RATE)
    assert row["camera_front_freeze_steps"] == 7
    assert row["camera_front_freeze_s"] == pytest.approx(0.7)
    assert row["camera_front_reason"] is None


def test_blackout_and_overexposed_frames():
    summary = CameraSummary()
    shots = frames(12, range(0, 0))
    shots[3] = np.zeros_like(shots[3])
    shots[4] = np.full_like(shots[4], 3)
    shots[8] = np.full_like(shots[8], 250)
    for frame in shots:
        summary.add_frame(frame)
    row = eq.camera_metrics("wrist", summary.brightness, summary.change, 12, 1 / RATE)
    assert row["camera_wrist_blackout_frames"] == 2
    assert row["camera_wrist_overexposed_frames"] == 1
    assert row["camera_wrist_freeze_steps"] == 0  # 0 and 3 grey levels differ by more than FREEZE_CHANGE


def test_path_length_ratio_from_the_state_layout():
    layout = [{"name": "obs/robot0_eef_pos", "start": 0, "end": 3}, {"name": "obs/robot0_eef_quat", "start": 3, "end": 7}]
    position = eq.position_columns(layout)
    assert position == (0, 3)
    state = np.zeros((3, 7))
    state[1, :3] = [3, 4, 0]  # 5 out, 3 on along x: path 5 + sqrt(0 + 16) = 9... to (6, 0, 0)
    state[2, :3] = [6, 0, 0]
    row = eq.path_metrics(state, position)
    assert row["path_length"] == pytest.approx(10.0)
    assert row["path_displacement"] == pytest.approx(6.0)
    assert row["path_length_ratio"] == pytest.approx(10 / 6)
    assert eq.position_columns([{"name": "obs/joint_pos", "start": 0, "end": 7}]) is None
    assert eq.path_metrics(state, None)["path_reason"] == "the state layout names no end-effector position"


def test_control_delay_and_chunk_length():
    steps, lag = 120, 3
    actions = moving_actions(steps, noise=0.0)
    actions[:, :3] = np.random.default_rng(5).normal(0, 0.01, (steps, 3))  # white commands
    position = np.zeros((steps, 3))
    position[lag + 1:] = np.cumsum(actions[: steps - lag - 1, :3], axis=0)  # moved lag steps late
    layout = eq.ActionLayout.from_names(NAMES)
    assert eq.control_delay_steps(actions, position, (0, 3), layout) == lag
    assert eq.control_delay_steps(actions, position, None, layout) is None
    smooth = moving_actions(200, noise=0.0)
    smooth[:, :6] = np.sin(np.arange(200) / 10.0)[:, None]  # autocorrelation cos(k/10) falls below 0.5 at k = 11
    assert eq.chunk_length_steps(smooth, layout) == 11
    assert eq.dataset_estimate([3, None, 5, 4]) == 4


def test_stuck_dimension_and_near_duplicates():
    shares = np.full((5, 3), 0.1)
    shares[2, 1] = 0.9  # dimension 1 static in episode 2 only
    shares[:, 2] = 0.95  # dimension 2 static everywhere: not stuck, it never moves
    assert eq.stuck_dimensions(shares, ["a", "b", "c"]) == [[], [], ["b"], [], []]
    actions = moving_actions(30)
    near = actions + 1e-7
    prints = [eq.action_fingerprint(a) for a in (actions, moving_actions(30, seed=9), near, actions)]
    assert prints[0] == prints[2] != prints[1]
    ids = ["e0", "e1", "e2", "e2#2"]
    assert eq.near_duplicates(ids, prints, ["e0", "e1", "e2", "e2"]) == [None, None, "e0", "e0"]


def test_bad_values_give_nulls_with_reasons_never_a_crash():
    one = row_of(moving_actions(1), timestamps=np.array([0.0]),
                 cameras={"front": ([0.5], [float("nan")])}, position=(0, 3))
    assert one["num_steps"] == 1 and one["frozen_action_steps"] == 1
    assert one["idle_share"] is None and "too few" in one["idle_reason"]
    assert one["spike_steps"] is None and one["spike_reason"]
    assert one["timing_reason"] == "1 step: no step interval"
    assert one["path_reason"] == "1 step: no path"
    assert one["camera_front_freeze_steps"] == 0
    nan_times = np.arange(20) / RATE
    nan_times[[3, 7]] = np.nan
    row = row_of(moving_actions(20), timestamps=nan_times)
    assert row["step_interval_jitter_ms"] is None and row["timing_reason"] == "2 of 20 timestamps are NaN or infinite"
    assert row_of(moving_actions(20))["timing_reason"].startswith("the source records no timestamps")
    brightness = [0.5] * 15 + [float("nan")] * 3  # 20 steps, the camera missing in 5
    change = [float("nan")] + [0.0] * 17
    partial = eq.camera_metrics("front", brightness, change, 20, 1 / RATE)
    assert partial["camera_front_reason"] == "5 of 20 frames missing"
    assert partial["camera_front_freeze_steps"] == 15
    assert eq.camera_metrics("front", [], [], 20, 0.1)["camera_front_freeze_steps"] is None
    no_gripper = eq.episode_row(moving_actions(20)[:, :6], NAMES[:6], np.zeros((20, 3)), None, RATE, {})
    assert no_gripper["gripper_toggles_per_s"] is None
    assert no_gripper["gripper_reason"] == "no action dimension is named like a gripper"
    assert eq.ActionLayout.from_names(["j0", "j1", "gripper"]).translation == (0, 1)


# -- the silver table -----------------------------------------------------------------------


def table_rows(lake: Path, query: str, version: str) -> list[dict]:
    con = lake_views.connect(Lake(str(lake)), "synthetic_tabletop", version)
    try:
        cursor = con.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        con.close()


@pytest.fixture(scope="module")
def lake(robomimic_raw, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quality_lake")
    run_convert(robomimic_spec(robomimic_raw), root)
    return root


def test_conversion_writes_one_row_per_episode_equal_to_the_module(lake):
    rows = {r["episode_id"]: r for r in table_rows(lake, "SELECT * FROM episode_quality", "1.0.0")}
    episodes = table_rows(lake, "SELECT episode_id, split FROM episodes", "1.0.0")
    assert sorted(rows) == sorted(e["episode_id"] for e in episodes)
    assert {rows[e["episode_id"]]["split"] for e in episodes} == {e["split"] for e in episodes}
    version = Lake(str(lake)).resolve("synthetic_tabletop:1.0.0")
    steps = pa.concat_tables(read_table(path).select(["episode_id", "action_raw", "state", "image_wrist"])
                             for path in version.silver_files("steps")).to_pylist()
    position = eq.position_columns(version.manifest["state_layout"])
    assert position == (0, 3)
    for episode_id, row in rows.items():
        own = [s for s in steps if s["episode_id"] == episode_id]
        wrist = CameraSummary()
        for step in own:  # PNG: the decoded frame is the one ingest summarized
            wrist.add_frame(cv2.cvtColor(cv2.imdecode(np.frombuffer(step["image_wrist"], np.uint8), 1),
                                         cv2.COLOR_BGR2RGB))
        expected = eq.episode_row(np.array([s["action_raw"] for s in own]), NAMES, np.array([s["state"] for s in own]),
                                  None, RATE, {"wrist": (wrist.brightness, wrist.change)}, position)
        for column, value in expected.items():
            assert row[column] == (pytest.approx(value) if isinstance(value, (float, list)) else value), column
        assert row["camera_front_freeze_steps"] is not None and row["camera_front_reason"] is None
    # the per-dataset functions run over the table's rows
    extra = eq.dataset_columns(list(rows.values()), NAMES)
    assert len(extra) == len(rows) and all(e["duplicate_of"] is None for e in extra)


def test_query_view_and_edit_carries_the_kept_rows(lake, capsys):
    assert main(["query", "select episode_id, idle_share, gripper_toggles_per_s from episode_quality",
                 "--lake", str(lake), "--dataset", "synthetic_tabletop:1.0.0", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "episode_id,idle_share,gripper_toggles_per_s" and len(lines) == 11
    before = {r["episode_id"]: r for r in table_rows(lake, "SELECT * EXCLUDE (version) FROM episode_quality", "1.0.0")}
    assert main(["edit", "drop", "synthetic_tabletop:1.0.0", "--where", "color = 'red'", "--lake", str(lake)]) == 0
    after = {r["episode_id"]: r for r in table_rows(lake, "SELECT * EXCLUDE (version) FROM episode_quality", "1.1.0")}
    kept = {r["episode_id"] for r in table_rows(lake, "SELECT episode_id FROM episodes", "1.1.0")}
    assert set(after) == kept and kept < set(before)
    for episode_id, row in after.items():
        assert row == before[episode_id]
