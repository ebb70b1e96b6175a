"""Pipeline pieces on their own: image preprocessing, splits and shards, and the
planning transform under Beam's TestPipeline."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import apache_beam as beam
import cv2
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.convert import BuildContext, PlanEpisodes, SourceFile
from pipelines.episode import EpisodeRef
from pipelines.hdf5_source import Hdf5Source, resolve_keys
from pipelines.images import FramePreprocessor
from pipelines.splits import assign_shards, assign_split
from robolake.camera_frames import center_crop
from robolake.errors import SpecError
from robolake.spec import CameraSpec, SplitPolicy, parse_spec
from tests.helpers import robomimic_spec

REPO = Path(__file__).resolve().parents[1]


def _ref(episode_id: str, task: str = "pick", steps: int = 10) -> EpisodeRef:
    return EpisodeRef(episode_id, "f.hdf5", "0" * 64, "data/demo_1", steps, "pick it", {"task": task})


def test_center_crop_keeps_the_middle_square():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 80:560] = 255  # the central 480x480 square is white
    assert center_crop(frame, 256, 256).shape == (480, 480, 3)
    assert center_crop(frame, 256, 256).min() == 255
    assert center_crop(np.zeros((640, 480, 3), np.uint8), 1, 1).shape == (480, 480, 3)
    assert center_crop(frame, 100, 200).shape == (320, 640, 3)


def test_preprocessor_outputs_rgb_jpeg_and_lossless_png_at_size():
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[..., 0] = 200  # pure red, RGB
    jpeg = FramePreprocessor(CameraSpec(name="c", size=(64, 64))).encode(frame)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert jpeg[:2] == b"\xff\xd8" and decoded.shape == (64, 64, 3)
    assert abs(int(decoded[..., 0].mean()) - 200) < 3 and decoded[..., 2].mean() < 3
    png = FramePreprocessor(CameraSpec(name="c", size=(60, 80), encoding="png")).encode(frame)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert png[:4] == b"\x89PNG" and decoded.shape == (60, 80, 3) and (decoded == frame[:60, :80]).all()
    bgr_source = FramePreprocessor(CameraSpec(name="c", size=(60, 80), encoding="png", channel_order="bgr"))
    decoded = cv2.imdecode(np.frombuffer(bgr_source.encode(frame), np.uint8), cv2.IMREAD_COLOR)
    assert decoded[..., 2].mean() < 3 and decoded[..., 0].mean() == 200  # channels swapped back to RGB order


def test_hash_split_is_stable_and_follows_fractions():
    policy = SplitPolicy()
    refs = [_ref(f"file_{i // 10}/data/demo_{i % 10}") for i in range(2000)]
    splits = [assign_split(r, policy) for r in refs]
    assert splits == [assign_split(r, policy) for r in refs]
    shares = Counter(splits)
    assert abs(shares["train"] / 2000 - 0.8) < 0.03 and abs(shares["val"] / 2000 - 0.1) < 0.02


def test_held_out_tasks_put_each_task_in_one_split():
    policy = SplitPolicy(by="task", held_out_tasks={"test": ["stack"], "val": ["push"]})
    refs = [_ref(f"e{i}", task=["pick", "push", "stack"][i % 3]) for i in range(30)]
    by_task: dict[str, set] = {}
    for ref in refs:
        by_task.setdefault(ref.task, set()).add(assign_split(ref, policy))
    assert by_task == {"pick": {"train"}, "push": {"val"}, "stack": {"test"}}


def test_shards_are_balanced_contiguous_and_never_empty():
    refs = [_ref(f"e{i}", steps=10 + i % 7) for i in range(50)]
    placed = assign_shards(refs, steps_per_shard=100)
    shards = Counter(r.shard for r in placed)
    assert sorted(shards) == list(range(len(shards))) and len(shards) == 7
    assert max(shards.values()) - min(shards.values()) <= 3
    assert [r.order_key for r in placed] == sorted(r.order_key for r in placed)
    assert [r.shard for r in placed] == sorted(r.shard for r in placed)
    assert placed == assign_shards(list(reversed(refs)), steps_per_shard=100)


def test_plan_episodes_transform(robomimic_raw, tmp_path):
    spec = parse_spec(robomimic_spec(robomimic_raw, output={"steps_per_shard": 1000}))
    ctx = BuildContext(spec, Hdf5Source(spec), state_dim=9, staging=str(tmp_path))
    sources = [SourceFile(str(robomimic_raw / f"tabletop_00{i}.hdf5"), f"tabletop_00{i}") for i in range(3)]
    demos = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2)]
    expected = [
        assign_split(_ref(f"tabletop_00{f}/data/demo_{d}"), spec.splits) + f" 0 tabletop_00{f}/data/demo_{d} 24"
        for f, d in demos
    ]
    with BeamTestPipeline(runner="FnApiRunner") as p:
        planned = p | beam.Create(sources) | PlanEpisodes(ctx)
        described = planned["placed"] | beam.MapTuple(
            lambda key, episode: f"{key[0]} {key[1]} {episode.ref.episode_id} {episode.ref.num_steps}"
        )
        assert_that(described, equal_to(expected), label="placed")
        assert_that(planned["quarantine"], equal_to([]), label="quarantine")
        assert_that(planned["sources"] | beam.Map(lambda s: (s.relative_id, s.episodes)),
                    equal_to([("tabletop_000", 4), ("tabletop_001", 4), ("tabletop_002", 2)]), label="sources")


def test_generic_layout_needs_keys(tmp_path):
    spec = parse_spec(robomimic_spec(tmp_path, source={"layout": "generic"}, cameras=[]))
    with pytest.raises(SpecError, match="action.keys: required for layout 'generic'"):
        resolve_keys(spec)


def test_conversion_workers_do_not_import_tensorflow():
    """Every Beam worker imports the conversion's modules when it unpickles a step; TensorFlow
    would add seconds to each worker's start (TFDS serializes and parses tf.train.Example
    with its own generated protos)."""
    code = "import sys, pipelines.build, pipelines.convert; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "False"
