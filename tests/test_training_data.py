"""training/data.py: gold RLDS streamed as torch steps, sharded over ranks and
DataLoader workers, shuffled within a bounded buffer, augmented in train mode only."""

from __future__ import annotations

import shutil
from itertools import islice

import cv2
import numpy as np
import pytest
import torch

from robolake.normalization import load_statistics
from tests.helpers import load_split, robomimic_spec, run_convert
from training.config import DataConfig
from training.data import RldsSteps, collate, dataset_info

CONFIG = DataConfig(image_size=32)


@pytest.fixture(scope="module")
def gold(robomimic_raw, tmp_path_factory):
    """The synthetic dataset (front 64x64 JPEG, wrist 32x32 PNG; train: 9 episodes in
    4 shards) and its train split's steps read with TFDS, by (episode_id, step_index)."""
    outcome = run_convert(robomimic_spec(robomimic_raw), tmp_path_factory.mktemp("lake"))
    steps = {}
    for episode in load_split(outcome.gold_dir, "train"):
        for index, step in enumerate(episode["steps"]):
            steps[episode["episode_metadata"]["episode_id"], index] = (step, episode["episode_metadata"])
    return outcome, steps


def keys(items) -> list[tuple[str, int]]:
    return [(item["episode_id"], item["step_index"]) for item in items]


def batch_keys(loader) -> list[tuple[str, int]]:
    return [key for batch in loader for key in zip(batch["episode_id"], batch["step_index"].tolist())]


def test_action_chunks_are_the_next_steps_of_the_episode_padded_at_its_end(gold):
    outcome, steps = gold
    horizon = 4
    items = RldsSteps(outcome.gold_dir, "train", DataConfig(image_size=32, action_horizon=horizon), train=False)
    lengths = {}
    for episode_id, index in steps:
        lengths[episode_id] = max(lengths.get(episode_id, 0), index + 1)
    for item in items:
        episode_id, index = item["episode_id"], item["step_index"]
        assert item["action_chunk"].shape == (horizon, 7) and item["action_is_pad"].shape == (horizon,)
        for offset in range(horizon):
            source = min(index + offset, lengths[episode_id] - 1)  # past the end: the last action again
            np.testing.assert_array_equal(item["action_chunk"][offset].numpy(), steps[episode_id, source][0]["action"])
            assert bool(item["action_is_pad"][offset]) == (index + offset >= lengths[episode_id])


def test_eval_pass_yields_every_gold_step_once_with_its_values(gold):
    outcome, steps = gold
    items = list(RldsSteps(outcome.gold_dir, "train", DataConfig(image_size=32, crop_scale=1.0), train=False))
    assert len(items) == outcome.manifest["counts"]["by_split"]["train"]["steps"] == len(steps)
    assert sorted(keys(items)) == sorted(steps)
    for item in items:
        step, metadata = steps[item["episode_id"], item["step_index"]]
        np.testing.assert_array_equal(item["action"].numpy(), step["action"])
        np.testing.assert_array_equal(item["action_raw"].numpy(), step["action_raw"])
        np.testing.assert_array_equal(item["state"].numpy(), step["observation"]["state"])
        assert item["action"].dtype == item["state"].dtype == torch.float32
        assert item["instruction"] == step["language_instruction"].decode()
        assert item["task"] == metadata["task"]
        assert item["images"].shape == (2, 3, 32, 32) and item["images"].dtype == torch.float32
        # cameras by name (front, wrist), RGB, channels first; the 32x32 PNG wrist is
        # lossless and not resized, the 64x64 JPEG front is shrunk by area averaging
        wrist = step["observation"]["wrist"].transpose(2, 0, 1) / 255
        np.testing.assert_allclose(item["images"][1].numpy(), wrist, atol=1e-6)
        front = cv2.resize(step["observation"]["front"], (32, 32), interpolation=cv2.INTER_AREA)
        assert np.abs(item["images"][0].numpy() - front.transpose(2, 0, 1) / 255).mean() < 0.01


def test_eval_is_deterministic_and_a_camera_subset_can_be_chosen(gold):
    outcome, _ = gold
    first, second = (list(RldsSteps(outcome.gold_dir, "train", CONFIG, train=False)) for _ in range(2))
    assert keys(first) == keys(second)
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(first, second))
    wrist = next(iter(RldsSteps(outcome.gold_dir, "val", DataConfig(image_size=32, cameras=("wrist",)), train=False)))
    assert wrist["images"].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="side"):
        RldsSteps(outcome.gold_dir, "train", DataConfig(cameras=("side",)), train=False)


# 4 train shards: 2 ranks get 2 files each; 6 ranks are more consumers than files and
# split by episode instead. Train mode shuffles the files, in the same order on every rank.
@pytest.mark.parametrize("world_size", [2, 6])
@pytest.mark.parametrize("train", [False, True])
def test_ranks_together_read_every_step_once(gold, world_size, train):
    outcome, steps = gold
    per_rank = [
        keys(RldsSteps(outcome.gold_dir, "train", CONFIG, train=train, rank=rank, world_size=world_size, epochs=1))
        for rank in range(world_size)
    ]
    assert all(per_rank), "every rank gets steps"
    every = [key for rank_keys in per_rank for key in rank_keys]
    assert len(every) == len(set(every)) == len(steps), "no step twice, within or across ranks"
    assert set(every) == set(steps)


@pytest.mark.slow
@pytest.mark.parametrize(("world_size", "train"), [(1, False), (2, False), (3, False), (3, True)])
def test_dataloader_workers_and_ranks_read_every_step_once(gold, world_size, train):
    """2 workers per rank: 2, 4 and 6 consumers for 4 files."""
    outcome, steps = gold
    every = []
    for rank in range(world_size):
        dataset = RldsSteps(outcome.gold_dir, "train", CONFIG, train=train, rank=rank, world_size=world_size, epochs=1)
        every += batch_keys(torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=collate))
    assert len(every) == len(steps)
    assert sorted(every) == sorted(steps)


def test_train_mode_augments_within_range_and_repeats_with_the_seed(gold):
    outcome, steps = gold

    def images(seed):
        dataset = RldsSteps(outcome.gold_dir, "train", DataConfig(image_size=32, seed=seed), train=True, epochs=1)
        return {(item["episode_id"], item["step_index"]): item["images"] for item in dataset}

    first, again, other = images(0), images(0), images(1)
    evaluated = RldsSteps(outcome.gold_dir, "train", CONFIG, train=False)
    evaluated = {(item["episode_id"], item["step_index"]): item["images"] for item in evaluated}
    assert set(first) == set(other) == set(steps)
    for key, image in first.items():
        assert image.shape == (2, 3, 32, 32) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        assert torch.equal(image, again[key])
    assert sum(not torch.equal(first[key], other[key]) for key in first) > 0.9 * len(first)
    assert sum(not torch.equal(first[key], evaluated[key]) for key in first) > 0.9 * len(first)


def test_shuffle_order_depends_on_seed_and_epoch_and_not_on_file_order(gold):
    outcome, steps = gold
    file_order = keys(RldsSteps(outcome.gold_dir, "train", CONFIG, train=False))

    def order(seed, epochs=1):
        config = DataConfig(image_size=32, seed=seed, shuffle_buffer=64)
        return keys(RldsSteps(outcome.gold_dir, "train", config, train=True, epochs=epochs))

    seed0, seed1 = order(0), order(1)
    assert seed0 == order(0)
    assert seed0 != seed1 and seed0 != file_order
    assert sorted(seed0) == sorted(seed1) == sorted(file_order)
    two_epochs = order(0, epochs=2)
    assert two_epochs[: len(steps)] == seed0 and two_epochs[len(steps) :] != seed0


def test_train_repeats_forever_one_whole_epoch_after_another(gold):
    outcome, steps = gold
    items = keys(islice(RldsSteps(outcome.gold_dir, "train", CONFIG, train=True), 3 * len(steps)))
    for epoch in range(3):
        assert sorted(items[epoch * len(steps) : (epoch + 1) * len(steps)]) == sorted(steps)


def test_shuffle_buffer_bounds_what_is_held(gold):
    outcome, steps = gold
    dataset = RldsSteps(outcome.gold_dir, "train", DataConfig(image_size=32, shuffle_buffer=16), train=True, epochs=1)
    iterator = iter(dataset)
    next(iterator)
    assert dataset.steps_read == 17, "the first step leaves once the buffer is full, nothing more is read"
    rest = list(iterator)
    assert len(rest) + 1 == dataset.steps_read == len(steps)
    assert dataset.peak_buffered == 16


def test_collate_stacks_tensors_and_keeps_strings(gold):
    outcome, _ = gold
    items = list(islice(RldsSteps(outcome.gold_dir, "train", CONFIG, train=False), 5))
    batch = collate(items)
    assert batch["images"].shape == (5, 2, 3, 32, 32) and batch["images"].dtype == torch.float32
    assert batch["action"].shape == batch["action_raw"].shape == (5, 7)
    assert batch["state"].shape == (5, 9)
    assert batch["step_index"].dtype == torch.int64 and batch["step_index"].tolist() == [i["step_index"] for i in items]
    for key in ("instruction", "task", "episode_id"):
        assert batch[key] == [item[key] for item in items]


def test_dataset_info(gold, tmp_path):
    outcome, steps = gold
    info = dataset_info(outcome.gold_dir)
    assert info["name"] == "synthetic_tabletop" and info["version"] == "1.0.0"
    assert info["cameras"] == ["front", "wrist"]
    assert info["image_shapes"] == {"front": (64, 64, 3), "wrist": (32, 32, 3)}
    assert (info["action_dim"], info["state_dim"]) == (7, 9)
    by_split = outcome.manifest["counts"]["by_split"]
    assert info["splits"] == {s: {"episodes": c["episodes"], "steps": c["steps"]} for s, c in by_split.items()}
    assert info["statistics_path"] == f"{outcome.gold_dir}/dataset_statistics.json"
    assert info["statistics"] == load_statistics(info["statistics_path"])
    first_steps = sorted((episode_id, step) for (episode_id, index), (step, _) in steps.items() if index == 0)
    expected = [step["language_instruction"].decode() for _, step in first_steps]
    assert info["instructions"] == expected
    # a gold folder outside a lake (no silver tables): instructions from the shards
    alone = shutil.copytree(outcome.gold_dir, tmp_path / "1.0.0")
    assert dataset_info(str(alone))["instructions"] == expected


def test_eval_mode_centre_crops_to_the_training_crop_scale(gold):
    """Training sees random crops of crop_scale of each side; evaluation sees the centred one."""
    outcome, steps = gold
    item = next(iter(RldsSteps(outcome.gold_dir, "train", DataConfig(image_size=32, crop_scale=0.5), train=False)))
    wrist = steps[item["episode_id"], item["step_index"]][0]["observation"]["wrist"]  # 32x32 PNG
    centre = cv2.resize(wrist[8:24, 8:24], (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(item["images"][1].numpy(), centre.transpose(2, 0, 1) / 255, atol=1e-6)
