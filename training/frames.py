"""Camera frames as the model reads them: square resize and scaling to [0, 1], after the
centre crop that matches training's random crops (OpenVLA's centre crop at deployment).

Shared by the training loader (training/data.py) and the policy runtime, and kept free
of TensorFlow so that a runtime process does not load it."""

from __future__ import annotations

import cv2
import numpy as np
import torch


TRAIN_CROP_SCALE = 224 / 256  # default side of training's random crops, as a fraction of the image side


def center_crop(image: np.ndarray, scale: float) -> np.ndarray:
    """The centred crop whose sides are `scale` of the image's: the view training's random
    crops of that scale show on average, so evaluation sees objects at the size training did."""
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    crop_h, crop_w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return image[top : top + crop_h, left : left + crop_w]


def resized(image: np.ndarray, size: int) -> np.ndarray:
    """Square `size` x `size`: bilinear, or area averaging to shrink 2x or more (where
    bilinear would alias; area costs 5-10x more at non-integer factors like 256->224)."""
    if image.shape[:2] == (size, size):
        return image
    interpolation = cv2.INTER_AREA if max(image.shape[:2]) >= 2 * size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def model_pixels(images: np.ndarray) -> torch.Tensor:
    """(cameras, S, S, 3) uint8 RGB -> (cameras, 3, S, S) float32 in [0, 1], the model's image input."""
    scaled = np.empty((len(images), 3, *images.shape[1:3]), np.float32)
    np.multiply(images.transpose(0, 3, 1, 2), np.float32(1 / 255), out=scaled)
    return torch.from_numpy(scaled)


def eval_frames(frames: list[np.ndarray], image_size: int, crop_scale: float = 1.0) -> torch.Tensor:
    """One observation as the model reads it in eval mode (train=False): decoded (H, W, 3) uint8 RGB
    frames of any size, one per camera in the model's camera order, centre-cropped and resized as the
    training loader does without augmentation -> (cameras, 3, image_size, image_size) float32 in [0, 1]."""
    return model_pixels(np.stack([resized(center_crop(frame, crop_scale), image_size) for frame in frames]))
