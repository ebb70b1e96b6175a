"""A deployed policy sees its camera frames as training saw them: the runtime (and the closed
loop and the TorchScript export, which act through it) puts each live frame through the gold
pipeline's transform of its camera (centre crop to the stored aspect ratio, resize, encode),
recorded in the checkpoint bundle from the dataset's spec (camera_frames.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipelines.images import FramePreprocessor, preprocess_frames
from robolake.camera_frames import BUNDLE_FILE, camera_document, decode
from robolake.lake import GoldVersion
from robolake.sample import write_sample
from robolake.spec import CameraSpec
from tests.helpers import INSTRUCTIONS, POLICY_CAMERAS, run_convert, statistics, tiny_config
from training.checkpoint import save_checkpoint, write_merged
from training.config import DataConfig, TrainConfig
from training.data import RldsSteps
from training.export import ExportedPolicy, export_policy
from training.frames import eval_frames
from training.model import CompactVLA, add_lora, save_pretrained
from training.runtime import Policy
from training.sim_env import TabletopEnv
from training.tokenizers import InstructionTokenizer

REPO = Path(__file__).resolve().parents[1]
SEED = 5  # TabletopEnv.reset(seed=SEED) is the sample's episode (SEED, 0)
IMAGE_SIZE = 64  # the model's input side: large enough that a squeeze shows
CROP_SCALE = 0.875
# The sample's cameras (datasets/sample_tabletop.yaml): 480x640 and 240x320 frames stored 256x256 JPEG.
SPEC_CAMERAS = [CameraSpec(name=name, size=(256, 256), encoding="jpeg", jpeg_quality=95) for name in POLICY_CAMERAS]


class Capturing:
    """A model that records the pixels the runtime gives it, then predicts as the wrapped one."""

    def __init__(self, model):
        self.model, self.config, self.pixels = model, model.config, []

    def predict_actions(self, images, instructions, state=None):
        self.pixels.append(images)
        return self.model.predict_actions(images, instructions, state=state)


def _model_pixels(policy: Policy, images: dict[str, np.ndarray], instruction: str = "pick up the red block"):
    """The (cameras, 3, S, S) pixels the policy's model reads for one robot's frames."""
    policy.model = Capturing(policy.model)
    policy.act(images, instruction)
    return policy.model.pixels[-1][0].numpy()


def _pipeline_pixels(frame: np.ndarray, camera: CameraSpec) -> np.ndarray:
    """A frame as the pipeline stores it (preprocess_frames) and training's evaluation reads it."""
    (encoded,), _ = preprocess_frames([frame], FramePreprocessor(camera))
    return eval_frames([decode(encoded)], IMAGE_SIZE, CROP_SCALE)[0].numpy()


def _same_up_to_jpeg_error(difference: np.ndarray) -> bool:
    """Absolute pixel differences in [0, 1] as small as JPEG's (a few grey levels)."""
    return difference.mean() < 2 / 255 and difference.max() < 12 / 255


def _bundle(folder: Path, cameras: list[CameraSpec] | None, lora: bool = False) -> Path:
    """A tiny bundle (cameras front, wrist; IMAGE_SIZE input; crop_scale CROP_SCALE) with
    camera_frames.json for `cameras` (None: a bundle from before it was recorded)."""
    tokenizer = InstructionTokenizer.from_texts(INSTRUCTIONS)
    torch.manual_seed(0)
    model = CompactVLA(tiny_config(image_size=IMAGE_SIZE), tokenizer)
    save_pretrained(add_lora(model, r=2, alpha=4) if lora else model, tokenizer, folder)
    (folder / "dataset_statistics.json").write_text(json.dumps(statistics()))
    (folder / "train_config.yaml").write_text(yaml.safe_dump({"data": {"crop_scale": CROP_SCALE}}))
    if cameras is not None:
        (folder / BUNDLE_FILE).write_text(json.dumps(camera_document(cameras)))
    return folder


def _asymmetric(height: int, width: int) -> np.ndarray:
    """A grey frame whose outer bands (left/right for a wide frame, top/bottom for a tall one), each
    as wide as the centre crop to a square drops, are red on one side and blue on the other."""
    frame = np.full((height, width, 3), 128, np.uint8)
    band = abs(width - height) // 2
    wide = width > height
    first, last = (np.s_[:, :band], np.s_[:, width - band:]) if wide else (np.s_[:band], np.s_[height - band:])
    frame[first], frame[last] = (255, 0, 0), (0, 0, 255)
    return frame


def test_a_wide_or_tall_frame_is_cropped_as_the_pipeline_crops_it_not_squeezed(tmp_path):
    """4:3 front and 3:4 wrist frames whose bands outside the square differ: the model reads what the
    pipeline stores (cropped, JPEG), with none of the bands; resizing to a square would show them."""
    policy = Policy.from_checkpoint(_bundle(tmp_path / "bundle", SPEC_CAMERAS))
    images = {"front": _asymmetric(480, 640), "wrist": _asymmetric(320, 240)}
    pixels = _model_pixels(policy, images)
    for index, camera in enumerate(SPEC_CAMERAS):
        np.testing.assert_array_equal(pixels[index], _pipeline_pixels(images[camera.name], camera))
        assert np.abs(pixels[index] - 128 / 255).max() < 3 / 255, f"{camera.name}: a band outside the crop shows"
    squeezed = eval_frames([images["front"]], IMAGE_SIZE, CROP_SCALE)[0].numpy()
    assert squeezed[0, :, 0].mean() > 0.9, "today's square resize keeps the red band: the check above can see it"


def test_the_runtime_sees_the_gold_frame_of_the_same_scene(tmp_path):
    """The sample generator's episode (SEED, 0), converted with the demo's spec, against the same scene
    rendered by TabletopEnv: the bundle that training writes from the gold version carries the spec's
    camera transforms, and the runtime's model input for the env's first frames is the training
    loader's for the gold step 0 up to JPEG error (the sample stores each camera's JPEG, and the wrist
    camera is captured a few ms before t=0)."""
    write_sample(str(tmp_path / "raw"), episodes=1, seed=SEED, bag_fraction=0.0, faults=False)
    spec = yaml.safe_load((REPO / "datasets" / "sample_tabletop.yaml").read_text())
    spec["source"]["paths"] = [str(tmp_path / "raw" / "hdf5" / "*.hdf5")]
    spec["splits"] = {"fractions": {"train": 1.0}}
    target = GoldVersion.at(run_convert(spec, tmp_path / "lake").gold_dir)
    data = DataConfig(image_size=IMAGE_SIZE, crop_scale=CROP_SCALE, cameras=tuple(POLICY_CAMERAS))
    gold = next(step for step in RldsSteps(target.gold_dir, "train", data, train=False) if step["step_index"] == 0)
    tokenizer = InstructionTokenizer.from_texts(INSTRUCTIONS)
    model = CompactVLA(tiny_config(image_size=IMAGE_SIZE), tokenizer)
    save_checkpoint(tmp_path / "bundle", model, tokenizer, TrainConfig(data=data), target, {"step": 0},
                    "2026-01-01T00:00:00Z")

    env = TabletopEnv()
    observation, _ = env.reset(seed=SEED)
    policy = Policy.from_checkpoint(tmp_path / "bundle")
    pixels = _model_pixels(policy, observation["images"], observation["instruction"])
    front, wrist = (np.abs(pixels[i] - gold["images"][i].numpy()) for i in range(2))
    assert _same_up_to_jpeg_error(front) and _same_up_to_jpeg_error(wrist)  # the sample stores the cameras' JPEGs
    squeezed = eval_frames([observation["images"]["front"]], IMAGE_SIZE, CROP_SCALE)[0].numpy()
    assert not _same_up_to_jpeg_error(np.abs(squeezed - gold["images"][0].numpy())), "the old square resize"


def test_a_torchscript_export_carries_the_camera_transforms(tmp_path):
    exported = ExportedPolicy.load(export_policy(_bundle(tmp_path / "bundle", SPEC_CAMERAS), tmp_path / "policy.pt"))
    images = {"front": _asymmetric(480, 640), "wrist": _asymmetric(320, 240)}
    pixels = _model_pixels(exported.policy(), images)
    for index, camera in enumerate(SPEC_CAMERAS):
        np.testing.assert_array_equal(pixels[index], _pipeline_pixels(images[camera.name], camera))


def test_a_merged_lora_bundle_keeps_the_camera_transforms(tmp_path):
    bundle = _bundle(tmp_path / "bundle", SPEC_CAMERAS, lora=True)
    (bundle / "provenance.json").write_text("{}")
    assert json.loads((write_merged(bundle) / BUNDLE_FILE).read_text()) == camera_document(SPEC_CAMERAS)


def test_a_bundle_from_before_camera_frames_warns_and_resizes_frames_as_given(tmp_path):
    with pytest.warns(UserWarning, match=f"no {BUNDLE_FILE} .* retrain it"):
        policy = Policy.from_checkpoint(_bundle(tmp_path / "bundle", None))
    images = {"front": _asymmetric(480, 640), "wrist": _asymmetric(320, 240)}
    np.testing.assert_array_equal(_model_pixels(policy, images),
                                  eval_frames([images[name] for name in POLICY_CAMERAS], IMAGE_SIZE, CROP_SCALE))


def test_camera_transforms_must_cover_the_models_cameras(tmp_path):
    with pytest.raises(ValueError, match=r"no frame transform for cameras \['wrist'\]"):
        Policy.from_checkpoint(_bundle(tmp_path / "bundle", SPEC_CAMERAS[:1]))
