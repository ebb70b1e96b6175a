"""Image resampling for the renderer that gives the same bytes on every machine.

`cv2.resize(..., INTER_CUBIC)` on float32 runs through Intel IPP, whose code (and
rounding) depends on the CPU (AVX-512, AVX2, SSE4.2); `cv2.warpPerspective` computes its
source coordinates in SIMD code that rounds differently with and without AVX2/FMA. Here
the cubic resize is plain float32 numpy arithmetic in a fixed order, and the perspective
warp computes its fixed-point source coordinates in float64 numpy, step by step, and
leaves the bilinear interpolation to `cv2.remap` on integer maps, which is integer
arithmetic (the same in every SIMD variant). Both follow OpenCV's definitions, so frames
look as before; a pixel differs by a grey level here and there.
"""

from __future__ import annotations

import cv2
import numpy as np

from robolake.sample import exact

INTER_BITS = 5  # OpenCV's fixed-point source coordinates: 1/32 pixel
INTER_TAB_SIZE = 1 << INTER_BITS
_CUBIC_A = np.float32(-0.75)


def _cubic_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output index: the four source indices (edges replicated) and their float32 weights."""
    scale = 1.0 / (target / source)
    position = ((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(position)
    x = position - start
    a, one = _CUBIC_A, np.float32(1.0)
    w0 = ((a * (x + one) - 5 * a) * (x + one) + 8 * a) * (x + one) - 4 * a
    w1 = ((a + 2) * x - (a + 3)) * x * x + one
    w2 = ((a + 2) * (one - x) - (a + 3)) * (one - x) * (one - x) + one
    w3 = one - w0 - w1 - w2
    indices = np.clip(start.astype(np.int64)[:, None] + np.arange(-1, 3), 0, source - 1)
    return indices, np.stack([w0, w1, w2, w3], axis=1)


def _apply_taps(image: np.ndarray, taps: tuple[np.ndarray, np.ndarray], axis: int) -> np.ndarray:
    indices, weights = taps
    shape = [1, 1]
    shape[axis] = -1
    out = np.take(image, indices[:, 0], axis=axis) * weights[:, 0].reshape(shape)
    for k in range(1, 4):
        out = out + np.take(image, indices[:, k], axis=axis) * weights[:, k].reshape(shape)
    return out


def resize_cubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D float32 image resized to `size` = (height, width) as cv2.resize's INTER_CUBIC
    does it (a = -0.75, pixel centres aligned, edges replicated, rows then columns), in float32."""
    image = np.asarray(image, dtype=np.float32)
    rows = _apply_taps(image, _cubic_taps(image.shape[1], size[1]), axis=1)
    return _apply_taps(rows, _cubic_taps(image.shape[0], size[0]), axis=0)


def perspective_maps(homography: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap's fixed-point maps (CV_16SC2 pixel, CV_16UC1 sub-pixel) that warp by
    `homography` (source pixels -> output pixels) into an output of `size` = (width, height)."""
    width, height = size
    m = exact.inverse3(homography)  # output pixel -> source pixel
    x = np.arange(width, dtype=np.float64)[None, :]
    y = np.arange(height, dtype=np.float64)[:, None]
    scale = (m[2, 1] * y + m[2, 2]) + m[2, 0] * x
    scale[scale == 0] = np.inf  # a point at infinity maps to 0, as in OpenCV
    np.divide(INTER_TAB_SIZE, scale, out=scale)
    fixed = []
    for row in (0, 1):
        coordinate = (m[row, 1] * y + m[row, 2]) + m[row, 0] * x
        coordinate *= scale
        np.clip(coordinate, -(2.0**31), 2.0**31 - 1, out=coordinate)
        fixed.append(np.rint(coordinate, out=coordinate).astype(np.int32))
    fx, fy = fixed
    pixel = np.empty((height, width, 2), np.int16)
    for k, f in enumerate(fixed):
        pixel[..., k] = np.clip(f >> INTER_BITS, np.iinfo(np.int16).min, np.iinfo(np.int16).max)
    fraction = (((fy & (INTER_TAB_SIZE - 1)) << INTER_BITS) | (fx & (INTER_TAB_SIZE - 1))).astype(np.uint16)
    return pixel, fraction


def warp_perspective(image: np.ndarray, homography: np.ndarray, size: tuple[int, int],
                     dst: np.ndarray | None = None, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """cv2.warpPerspective(image, homography, size, dst, INTER_LINEAR, border), the same on every CPU.
    With BORDER_TRANSPARENT, output pixels that map outside `image` keep what `dst` holds."""
    pixel, fraction = perspective_maps(homography, size)
    if dst is None:
        return cv2.remap(image, pixel, fraction, cv2.INTER_LINEAR, borderMode=border)
    return cv2.remap(image, pixel, fraction, cv2.INTER_LINEAR, dst, border)
