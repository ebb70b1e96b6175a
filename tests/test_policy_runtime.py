"""The safe policy runtime: denormalization, per-robot smoothing, translation/rotation/workspace
limits, the entropy fallback flag, input checks, and a tiny checkpoint bundle end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robolake.normalization import denormalize, normalize
from tests.helpers import (
    INSTRUCTIONS, MEAN, POLICY_CAMERAS as CAMERAS, STD, frames, save_tiny_bundle, statistics, tiny_config,
)
from training.frames import TRAIN_CROP_SCALE, eval_frames
from training.model import CompactVLA, is_lora
from training.runtime import ActionFilter, Policy, SafetyConfig

pytestmark = [pytest.mark.usefixtures("one_torch_thread")]


class ScriptedModel:
    """A stand-in for the VLA that returns queued normalized actions and entropies, to test the runtime alone."""

    def __init__(self, outputs: list[tuple[list, list]]):
        self.config = tiny_config()
        self.outputs = list(outputs)
        self.seen_images: list[torch.Tensor] = []

    def predict_actions(self, images: torch.Tensor, instructions: list[str], state=None) -> dict:
        self.seen_images.append(images)
        actions, entropy = self.outputs.pop(0)
        actions = torch.tensor(actions, dtype=torch.float32)
        return {"actions": actions, "entropy": torch.tensor(entropy, dtype=torch.float32).expand(actions.shape),
                "chunk": actions[:, None]}


def normalized(physical: list[list[float]]) -> list[list[float]]:
    """What the model would predict for these physical actions."""
    return normalize(np.array(physical), statistics()).tolist()




# ---- the filter, on hand-made physical actions ----


def action(translation=(0.0, 0.0, 0.0), rotation=(0.0, 0.0, 0.0), gripper=1.0) -> list[float]:
    return [*translation, *rotation, gripper]


def test_translation_is_scaled_to_5_cm_keeping_its_direction():
    limit = ActionFilter(SafetyConfig(smoothing_window=1), batch_size=3)
    raw = np.array([action((0.20, 0.0, 0.0)), action((0.12, -0.16, 0.0)), action((0.01, 0.02, -0.01))])
    out, clipped = limit(raw)
    assert out[0, :3] == pytest.approx([0.05, 0.0, 0.0])
    assert np.linalg.norm(out[1, :3]) == pytest.approx(0.05)
    assert out[1, :3] == pytest.approx([0.03, -0.04, 0.0])  # same direction as (0.12, -0.16, 0)
    assert np.array_equal(out[2], raw[2])
    assert clipped.tolist() == [True, True, False]
    assert np.array_equal(out[:, 3:], raw[:, 3:])


def test_rotation_is_limited_to_15_degrees():
    limit = ActionFilter(SafetyConfig(smoothing_window=1), batch_size=2)
    raw = np.array([action(rotation=(0.0, 0.0, math.radians(30))),
                    action(rotation=(math.radians(-20), math.radians(20), 0.0))])
    out, clipped = limit(raw)
    assert np.degrees(out[0, 3:6]) == pytest.approx([0.0, 0.0, 15.0])
    assert np.degrees(np.linalg.norm(out[1, 3:6])) == pytest.approx(15.0)
    assert out[1, 3] == pytest.approx(-out[1, 4]) and out[1, 5] == 0
    assert clipped.all() and np.array_equal(out[:, 6], raw[:, 6])


def test_a_step_is_smoothed_over_exactly_the_window():
    step = [0.0, 0.0, 0.03, 0.03, 0.03]
    for window, expected in ((3, [0, 0, 1 / 3, 2 / 3, 1]), (1, [0, 0, 1, 1, 1]), (2, [0, 0, 1 / 2, 1, 1])):
        smooth = ActionFilter(SafetyConfig(smoothing_window=window), batch_size=1)
        grippers = [-1.0, -1.0, 1.0, 1.0, 1.0]
        outputs = [smooth(np.array([action((dx, 0.0, 0.0), gripper=g)]))[0][0] for dx, g in zip(step, grippers)]
        assert [out[0] / 0.03 for out in outputs] == pytest.approx(expected), window
        assert [out[6] for out in outputs] == grippers  # open/close is not smoothed by default
    smooth_all = ActionFilter(SafetyConfig(smoothing_window=2, smoothed_dims=tuple(range(7))), batch_size=1)
    assert [smooth_all(np.array([action(gripper=g)]))[0][0, 6] for g in (-1.0, 1.0)] == [-1.0, 0.0]


def test_smoothing_comes_before_clipping_so_executed_actions_stay_within_limits():
    smooth = ActionFilter(SafetyConfig(smoothing_window=3), batch_size=1)
    outputs = [smooth(np.array([action((dx, 0.0, 0.0))])) for dx in (0.30, 0.30, 0.0, 0.0)]
    assert [out[0, 0] for out, _ in outputs] == pytest.approx([0.05, 0.05, 0.05, 0.05])  # averages 0.3, 0.3, 0.2, 0.1
    assert all(clipped[0] for _, clipped in outputs)


def test_workspace_stops_only_motion_that_leaves_the_box():
    safety = SafetyConfig(smoothing_window=1, workspace=((0.3, -0.2, 0.02), (0.5, 0.2, 0.3)))
    box = ActionFilter(safety, batch_size=4)
    state = np.array([
        [0.49, 0.0, 0.1, 1.0, 0.0, 0.0, 0.0, 0.04, -0.04],  # 1 cm from the x wall
        [0.40, 0.0, 0.1, 1.0, 0.0, 0.0, 0.0, 0.04, -0.04],  # well inside
        [0.52, 0.0, 0.1, 1.0, 0.0, 0.0, 0.0, 0.04, -0.04],  # already 2 cm beyond the wall
        [0.52, 0.0, 0.1, 1.0, 0.0, 0.0, 0.0, 0.04, -0.04],
    ])
    raw = np.array([action((0.03, 0.02, 0.0)), action((0.03, 0.02, 0.0)), action((0.02, 0.01, 0.0)),
                    action((-0.02, 0.0, 0.0))])
    out, clipped = box(raw, state)
    assert out[0, :3] == pytest.approx([0.01, 0.02, 0.0])  # stops at the wall, slides along it
    assert np.array_equal(out[1], raw[1])
    assert out[2, :3] == pytest.approx([0.0, 0.01, 0.0])  # not further out, not pulled back unasked
    assert np.array_equal(out[3], raw[3])  # back towards the box is allowed
    assert clipped.tolist() == [True, False, True, False]
    next_position = state[:2, :3] + out[:2, :3]
    assert (next_position <= 0.5 + 1e-12).all()
    assert np.linalg.norm(box(raw * [10, 10, 10, 1, 1, 1, 1], state)[0][:, :3], axis=1).max() <= 0.05 + 1e-12
    with pytest.raises(ValueError, match="state must be"):
        box(raw, state[:, :2])


# ---- the policy around a scripted model ----


def test_denormalizes_to_the_recorded_units_with_the_gripper_as_is():
    physical = [0.004, -0.008, 0.002, 0.001, -0.0005, 0.01, 1.0]
    model_output = normalized([physical])
    sent = np.array(model_output, np.float32)[0].astype(float)  # the model's actions are float32
    policy = Policy(ScriptedModel([(model_output, [1.0])]), statistics(), CAMERAS,
                    SafetyConfig(smoothing_window=1))
    result = policy.act(frames(None), "open the drawer")
    assert result.raw_actions.shape == result.actions.shape == (1, 7)
    assert result.raw_actions[0] == pytest.approx(physical, abs=1e-9)
    by_hand = [m + x * s for m, x, s in zip(MEAN[:6], sent[:6], STD[:6])] + [sent[6]]
    assert result.raw_actions[0] == pytest.approx(by_hand, abs=1e-12)
    assert np.allclose(result.raw_actions, denormalize(np.array(model_output, np.float32), statistics()))
    assert result.raw_actions[0, 6] == 1.0
    assert np.array_equal(result.actions, result.raw_actions) and not result.clipped[0]


def test_fallback_is_flagged_above_the_entropy_threshold():
    model = ScriptedModel([(normalized([action(), action()]), [[2.0] * 7, [2.0] * 6 + [6.0]])])
    policy = Policy(model, statistics(), CAMERAS, SafetyConfig(entropy_threshold=2.5))
    result = policy.act(frames(2), ["open the drawer", "pick up the red block"])
    assert result.entropy == pytest.approx([2.0, (12 + 6) / 7])
    assert result.fallback.tolist() == [False, True]


def test_batched_robots_keep_separate_histories():
    step = 0.006  # within the statistics' normalized range (mean + std = 0.01)
    moving, still = action((step, 0.0, 0.0)), action()
    model = ScriptedModel([(normalized([still, moving]), [1.0])] + [(normalized([moving, moving]), [1.0])] * 3)
    policy = Policy(model, statistics(), CAMERAS, SafetyConfig(smoothing_window=3))
    instructions = ["open the drawer", "open the drawer"]
    dx = [policy.act(frames(2), instructions).actions[:, 0] / step for _ in range(2)]
    assert dx[0] == pytest.approx([0.0, 1.0], abs=1e-6) and dx[1] == pytest.approx([0.5, 1.0], abs=1e-6)
    policy.reset(robot=0)  # robot 0 forgets its history, robot 1 keeps its own
    assert policy.act(frames(2), instructions).actions[:, 0] / step == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="reset"):
        policy.act(frames(3), instructions + ["open the drawer"])
    policy.reset()
    assert policy.act(frames(2), instructions).actions[:, 0] / step == pytest.approx([1.0, 1.0])


def test_bad_inputs_are_named():
    policy = Policy(ScriptedModel([]), statistics(), CAMERAS)
    with pytest.raises(ValueError, match=r"missing camera images \['wrist'\]"):
        policy.act({"front": frames(None)["front"]}, "open the drawer")
    with pytest.raises(ValueError, match="camera 'front' has 2 frames for 3 instructions"):
        policy.act(frames(2), ["a", "b", "c"])
    with pytest.raises(ValueError, match="camera 'front': expected uint8"):
        policy.act({**frames(None), "front": frames(None)["front"] / 255.0}, "open the drawer")
    with pytest.raises(ValueError, match="state must be"):
        policy.act(frames(2), ["a", "b"], state=np.zeros((3, 9)))
    with pytest.raises(ValueError, match="reads 2 cameras"):
        Policy(ScriptedModel([]), statistics(), ["front"])


# ---- a saved bundle end to end ----


def test_from_checkpoint_acts_end_to_end(tmp_path):
    model = save_tiny_bundle(tmp_path)
    safety = SafetyConfig(max_translation=0.001, max_rotation=math.radians(0.01), workspace=((0, 0, 0), (1, 1, 1)))
    policy = Policy.from_checkpoint(tmp_path, safety=safety)
    assert policy.cameras == CAMERAS and policy.action_names[-1] == "gripper"
    state = np.array([0.5, 0.5, 0.5, 1.0, 0, 0, 0, 0.04, -0.04])
    one = policy.act(frames(None), "open the drawer", state=state)
    assert one.actions.shape == one.raw_actions.shape == (1, 7) and one.entropy.shape == (1,)
    assert np.isfinite(one.actions).all() and np.isfinite(one.entropy).all()
    # preprocessing as evaluation does it (the centre crop of training's default random crops: the bundle's
    # config sets none), cameras in sorted order, actions denormalized with the bundle's statistics
    assert policy.crop_scale == TRAIN_CROP_SCALE
    observation = frames(None)
    pixels = eval_frames([observation[name] for name in CAMERAS], 16, TRAIN_CROP_SCALE)[None]
    expected = model.predict_actions(pixels, ["open the drawer"])
    assert np.allclose(one.raw_actions, denormalize(expected["actions"].numpy(), statistics()))
    assert one.entropy[0] == pytest.approx(expected["entropy"].mean().item(), abs=1e-5)

    policy.reset()
    many = policy.act(frames(3, seed=1), INSTRUCTIONS, state=np.tile(state, (3, 1)))
    assert many.actions.shape == (3, 7) and many.fallback.dtype == bool and many.clipped.all()
    assert np.linalg.norm(many.actions[:, :3], axis=1).max() <= 0.001 + 1e-12
    assert np.linalg.norm(many.actions[:, 3:6], axis=1).max() <= math.radians(0.01) + 1e-12

    int8 = Policy.from_checkpoint(tmp_path, int8=True).act(frames(None), "open the drawer")
    assert int8.actions.shape == (1, 7) and np.isfinite(int8.actions).all()


def test_a_lora_bundle_runs_with_its_adapters_merged(tmp_path):
    lora_model = save_tiny_bundle(tmp_path, lora=True)
    policy = Policy.from_checkpoint(tmp_path)
    assert isinstance(policy.model, CompactVLA) and not is_lora(policy.model)
    pixels = torch.rand(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    merged, adapted = (m.predict_actions(pixels, INSTRUCTIONS[:2]) for m in (policy.model, lora_model))
    assert torch.equal(merged["tokens"], adapted["tokens"])


def test_an_action_chunk_is_executed_before_the_model_is_asked_again():
    chunk = normalized([action((0.002 * step, 0.0, 0.0)) for step in (1, 2, 3)])
    model = ScriptedModel([])
    model.config = tiny_config(action_horizon=3)
    asked = []

    def predict_actions(images, instructions, state=None):
        asked.append(len(instructions))
        actions = torch.tensor([chunk], dtype=torch.float32)
        return {"actions": actions[:, 0], "entropy": torch.zeros(1, 7), "chunk": actions}

    model.predict_actions = predict_actions
    policy = Policy(model, statistics(), ["front", "wrist"], SafetyConfig(smoothing_window=1))
    executed = [policy.act(frames(None), "open the drawer").actions[0, 0] for _ in range(4)]
    assert asked == [1, 1]  # once for steps 0-2, again at step 3
    np.testing.assert_allclose(executed, [0.002, 0.004, 0.006, 0.002], atol=1e-6)
    policy.reset()
    policy.act(frames(None), "open the drawer")
    assert asked == [1, 1, 1]  # a reset drops the rest of the chunk
    with pytest.raises(ValueError, match="execute_steps"):
        Policy(model, statistics(), ["front", "wrist"], execute_steps=4)
