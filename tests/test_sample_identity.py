"""The sample generator writes the same bytes on every machine.

`make demo` regenerates the sample and dvc.lock records its hash, so a fresh clone on
another machine must get byte-identical files. A small sample with every kind of file the
generator writes (HDF5 sessions, the truncated one, mcap bags with their metadata.yaml and
sidecar, the manifest) is compared with sha256 values committed in
tests/data/sample_identity.json, and regenerated in subprocesses where numpy, OpenBLAS and
OpenCV (its SIMD dispatch and IPP) are told to use fewer CPU features, which stands in for
an older or different processor.

After an intended change to the generator's output: bump GENERATOR_VERSION in
robolake/sample/generate.py, then `python -m tests.test_sample_identity` rewrites the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from robolake.sample import exact, resample, write_sample

COMMITTED = Path(__file__).parent / "data" / "sample_identity.json"
# Fourteen episodes with every kind of seeded fault (a truncated session, a NaN, spikes in a bag
# too, and each behaviour fault at these shares).
BEHAVIOUR_SHARES = {"idle": 0.1, "gripper_chatter": 0.1, "frozen_camera": 0.1, "failed_demo": 0.1,
                    "duplicate_episode": 0.1, "timestamp_jitter": 0.25, "dropped_steps": 0.25}
CONFIG = {"episodes": 14, "seed": 5, "bag_fraction": 0.3, "cameras": {"front": (96, 128), "wrist": (60, 80)},
          "fault_shares": BEHAVIOUR_SHARES}

# Run in a child: write the sample, print the hashes and which CPU features were in use.
CHILD = """
import json, sys, tempfile
import cv2
from numpy._core._multiarray_umath import __cpu_features__
from tests.test_sample_identity import CONFIG, sample_hashes
with tempfile.TemporaryDirectory() as tmp:
    hashes = sample_hashes(tmp)
features = {"numpy": sorted(k for k, v in __cpu_features__.items() if v), "opencv_ipp": cv2.ipp.useIPP(),
            "opencv_avx2": cv2.checkHardwareSupport(11), "opencv_avx512": cv2.checkHardwareSupport(256)}  # CV_CPU_*
json.dump({"hashes": hashes, "features": features}, sys.stdout)
"""


def sample_hashes(tmp: str) -> dict[str, str]:
    """sha256 of every file of the CONFIG sample, written under `tmp`, by relative path."""
    root = Path(tmp) / "sample"
    cameras = {name: tuple(size) for name, size in CONFIG["cameras"].items()}
    write_sample(str(root), **{**CONFIG, "cameras": cameras})
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _committed() -> dict[str, str]:
    data = json.loads(COMMITTED.read_text())
    assert data["config"] == json.loads(json.dumps(CONFIG)), "CONFIG changed: regenerate the committed hashes"
    return data["sha256"]


def test_sample_matches_committed_hashes(tmp_path):
    hashes, committed = sample_hashes(str(tmp_path)), _committed()
    kinds = {name.rsplit(".", 1)[-1] for name in hashes}
    assert {"hdf5", "mcap", "yaml", "json"} <= kinds  # every kind of file the sample writes
    changed = sorted(name for name in hashes.keys() | committed.keys() if hashes.get(name) != committed.get(name))
    assert not changed, f"sample bytes differ from tests/data/sample_identity.json: {changed}"


def test_exact_math_within_an_ulp_of_numpy():
    rng = np.random.default_rng(0)

    def ulps(ours, theirs):
        return float(np.max(np.abs(ours - theirs) / np.spacing(np.maximum(np.abs(theirs), 1e-300))))

    for scale in (1e-3, 1.0, 4.0, 2000.0):
        x = rng.uniform(-scale, scale, 20000)
        assert ulps(exact.sin(x), np.sin(x)) <= 1 and ulps(exact.cos(x), np.cos(x)) <= 1
    for y_scale, x_scale in ((1.0, 1.0), (1e-3, 1.0), (1.0, 1e-3)):
        y, x = rng.normal(0, y_scale, 20000), rng.normal(0, x_scale, 20000)
        assert ulps(exact.atan2(y, x), np.arctan2(y, x)) <= 1
    corners = [(0.0, 1.0), (0.0, -1.0), (-0.0, -1.0), (1.0, 0.0), (-1.0, 0.0), (0.0, 0.0), (2.0, 1.0)]
    assert [float(exact.atan2(y, x)) for y, x in corners] == [float(np.arctan2(y, x)) for y, x in corners]
    assert np.isnan(exact.sin(np.nan)) and np.isnan(exact.cos(np.inf))
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(3, 3))
    np.testing.assert_allclose(exact.matmul(a, b), a @ b, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(exact.norm(a), np.linalg.norm(a, axis=1), rtol=1e-15)
    np.testing.assert_allclose(exact.inverse3(b) @ b, np.eye(3), atol=1e-12)


def test_resampling_follows_opencv():
    rng = np.random.default_rng(1)
    cells = rng.normal(0, 1, (6, 8)).astype(np.float32)
    ours = resample.resize_cubic(cells, (90, 120))
    np.testing.assert_allclose(ours, cv2.resize(cells, (120, 90), interpolation=cv2.INTER_CUBIC), atol=1e-5)
    image = cv2.GaussianBlur(rng.integers(0, 256, (100, 140, 3), dtype=np.uint8), (5, 5), 0)
    homography = np.array([[1.3, 0.2, -20.0], [0.1, 1.1, 5.0], [2e-4, 1e-3, 1.0]])
    # Where each output pixel samples the source: inside (all four neighbours), or all outside.
    u, v = np.meshgrid(np.arange(120.0), np.arange(80.0))
    source = np.linalg.inv(homography) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    sx, sy = (source[:2] / source[2]).reshape(2, 80, 120)
    inside = (sx >= 0) & (sx <= 138) & (sy >= 0) & (sy <= 98)
    outside = (sx < -1) | (sx > 140) | (sy < -1) | (sy > 100)
    assert inside.mean() > 0.5 and outside.any()
    for border in (cv2.BORDER_REPLICATE, cv2.BORDER_TRANSPARENT):
        theirs, ours = np.full((80, 120, 3), 7, np.uint8), np.full((80, 120, 3), 7, np.uint8)
        cv2.warpPerspective(image, homography, (120, 80), theirs, flags=cv2.INTER_LINEAR, borderMode=border)
        resample.warp_perspective(image, homography, (120, 80), ours, border)
        difference = np.abs(theirs.astype(int) - ours)[inside]
        assert difference.max() <= 1 and difference.mean() < 0.25  # a grey level here and there (rounding)
        if border == cv2.BORDER_TRANSPARENT:
            assert (ours[outside] == 7).all()


# Fewer CPU features, as on another machine: an AVX2 machine (no AVX-512), and no SIMD beyond
# the x86-64 baseline (OpenCV's dispatch off, IPP off, numpy at its baseline, OpenBLAS's
# generic Prescott kernels).
_NUMPY_DISPATCH = ["X86_V3", "X86_V4", "AVX512_ICL", "AVX512_SPR"]
_OPENCV_AVX512 = "AVX512F,AVX512-COMMON,AVX512-SKX"  # OpenCV's names (system.cpp)
_OPENCV_ALL = _OPENCV_AVX512 + ",AVX2,FMA3,AVX,FP16,POPCNT,SSE4.2,SSE4.1,SSSE3"
VARIANTS = {
    "avx2": {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR", "OPENCV_CPU_DISABLE": _OPENCV_AVX512,
             "OPENCV_IPP": "avx2", "OPENBLAS_CORETYPE": "Haswell"},
    "baseline": {"NPY_DISABLE_CPU_FEATURES": " ".join(_NUMPY_DISPATCH), "OPENCV_CPU_DISABLE": _OPENCV_ALL,
                 "OPENCV_IPP": "disabled", "OPENBLAS_CORETYPE": "Prescott"},
}


def _run_child(extra_env: dict[str, str]) -> dict:
    from numpy._core._multiarray_umath import __cpu_features__

    root = str(Path(__file__).parent.parent)
    env = {**os.environ, **extra_env, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    if "NPY_DISABLE_CPU_FEATURES" in extra_env:  # numpy refuses to disable what this CPU lacks
        wanted = extra_env["NPY_DISABLE_CPU_FEATURES"].split()
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(f for f in wanted if __cpu_features__.get(f))
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600,
                          cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 CPU feature switches")
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sample_does_not_depend_on_cpu_features(variant):
    result = _run_child(VARIANTS[variant])
    features = result["features"]
    # the switches took effect (or the CPU lacks those features anyway)
    assert "X86_V4" not in features["numpy"] and not features["opencv_avx512"]
    if variant == "baseline":
        assert "X86_V3" not in features["numpy"] and not features["opencv_avx2"] and not features["opencv_ipp"]
    committed = result["hashes"], _committed()
    changed = sorted(name for name in committed[0].keys() | committed[1].keys()
                     if committed[0].get(name) != committed[1].get(name))
    assert not changed, f"with {variant} CPU features the sample's bytes differ: {changed}"


if __name__ == "__main__":  # rewrite the committed hashes (after an intended change of the output)
    with tempfile.TemporaryDirectory() as tmp:
        hashes = sample_hashes(tmp)
    COMMITTED.parent.mkdir(exist_ok=True)
    COMMITTED.write_text(json.dumps({"config": CONFIG, "sha256": hashes}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(hashes)} hashes to {COMMITTED}")
