"""coverage.html in a real browser: Debian's headless chromium lays out the report of a small
demo-like dataset (the sample generator's imbalanced metadata, crossed on the demo spec's
metadata fields, the env JSON field included) at a desktop width and measures it.

Checks: no horizontal overflow at 1280 px, a page height under MAX_HEIGHT, every plot (<svg>)
drawn with a non-zero size. The page has no script, so a copy of it with a measuring script
injected goes through `chromium --dump-dom`, and the figures come back in the DOM.

Artifacts: coverage-1280.png (a full-page screenshot at 1280 px) and measurements.json go to
the folder $ROBOLAKE_TEST_ARTIFACTS names, by default the test's tmp_path.

Skips when chromium is absent (tests/peers/chromium.sh installs Debian's) or cannot start
(the `chromium` fixture in tests/conftest.py). tests/test_eval_report.py measures eval.html the same way.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from cli.main import main
from robolake.sample import write_robomimic_dataset
from tests.helpers import BROWSER_TIMEOUT_S, WIDTH, measure, robomimic_spec, run_convert

NAME, VERSION = "browser_tabletop", "1.0.0"
MAX_HEIGHT = 8000  # px at WIDTH for this data (6 crossed fields, 7 action dimensions, 1 camera, the
# episode quality section's distributions and flagged episodes with contact sheets: about 1100 px)
DEMO_SPEC = Path(__file__).resolve().parents[1] / "datasets" / "sample_tabletop.yaml"


@pytest.fixture(scope="module")
def coverage_page(tmp_path_factory) -> Path:
    """coverage.html of 60 sample episodes converted with the demo spec's metadata fields."""
    raw = tmp_path_factory.mktemp("browser_raw")
    write_robomimic_dataset(str(raw), episodes=60, steps=12, seed=3, per_file=20, cameras={"front": (24, 32)})
    metadata = yaml.safe_load(DEMO_SPEC.read_text())["metadata"]
    spec = robomimic_spec(raw, name=NAME, cameras=[{"name": "front", "size": [16, 16]}], metadata=metadata,
                          filters={"zscore": None, "jump": None})
    lake = tmp_path_factory.mktemp("browser") / "lake"
    run_convert(spec, lake)
    assert main(["report", NAME, "--lake", str(lake)]) == 0
    return lake / "reports" / NAME / VERSION / "coverage.html"


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("ROBOLAKE_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_report_fits_a_desktop_window_with_every_plot_drawn(chromium, coverage_page, artifacts):
    figures = measure(chromium, coverage_page, artifacts)
    (artifacts / "measurements.json").write_text(json.dumps(figures, indent=1))
    assert figures["viewport"] == WIDTH  # the window size took effect
    assert figures["scroll_width"] <= figures["client_width"], "the page scrolls sideways"
    assert figures["height"] <= MAX_HEIGHT
    plots = figures["plots"]
    assert len(plots) == coverage_page.read_text().count("<svg")
    # 6 fields crossed (env, a JSON field, is not): 6 bar charts and 15 heatmaps
    assert sum(" × " in plot["label"] for plot in plots) == 15
    flat = [plot["label"] for plot in plots if not (plot["width"] > 0 and plot["height"] > 0)]
    assert not flat, f"plots drawn with no size: {flat}"


def test_full_page_screenshot(chromium, coverage_page, artifacts):
    height = measure(chromium, coverage_page, artifacts)["height"]
    screenshot = artifacts / "coverage-1280.png"
    screenshot.unlink(missing_ok=True)
    subprocess.run([*chromium, "--hide-scrollbars", f"--window-size={WIDTH},{height}",
                    f"--screenshot={screenshot}", coverage_page.as_uri()],
                   capture_output=True, timeout=BROWSER_TIMEOUT_S, check=True)
    assert png_size(screenshot) == (WIDTH, height)
