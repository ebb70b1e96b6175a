"""benchmarks/quality_calibration.py's pieces on known inputs: the Mann-Whitney ROC-AUC,
the episode ids conversion gives sample_manifest.json entries, and the doc block it
rewrites. The benchmark itself (a sample, two conversions) is not run here."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark imports its harness by plain name
_spec = importlib.util.spec_from_file_location("quality_calibration", REPO / "benchmarks/quality_calibration.py")
calibration = sys.modules["quality_calibration"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(calibration)


def test_auc_of_separated_identical_and_reversed_scores():
    assert calibration.roc_auc([5, 6, 7], [1, 2, 3]) == 1.0
    assert calibration.roc_auc([1, 2, 3], [5, 6, 7]) == 0.0
    assert calibration.roc_auc([1, 2, 3], [1, 2, 3]) == 0.5
    assert calibration.roc_auc([4, 4], [4, 4, 4]) == 0.5  # every pair tied


def test_auc_matches_a_hand_computed_case_with_ties():
    # pairs (faulty, clean): (3,2) 1, (3,1) 1, (1,2) 0, (1,1) 0.5 -> 2.5 / 4
    assert calibration.roc_auc([3, 1], [2, 1]) == pytest.approx(0.625)
    # one faulty above 2 of 3 clean, tied with the third: (2 + 0.5) / 3
    assert calibration.roc_auc([5], [1, 5, 2]) == pytest.approx(2.5 / 3)


def test_auc_matches_sklearn_on_tied_random_scores():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    faulty, clean = rng.integers(0, 6, 40), rng.integers(0, 4, 70)
    expected = metrics.roc_auc_score(np.r_[np.ones(40), np.zeros(70)], np.r_[faulty, clean])
    assert calibration.roc_auc(faulty, clean) == pytest.approx(expected)


def test_auc_of_an_empty_group_is_nan():
    assert np.isnan(calibration.roc_auc([], [1.0, 2.0]))
    assert np.isnan(calibration.roc_auc([1.0], []))


def test_lake_episode_ids_of_manifest_entries():
    hdf5 = {"container": "hdf5", "path": "hdf5/session_004.hdf5", "group": "demo_3"}
    bag = {"container": "mcap", "path": "bags/episode_0017", "group": None}
    assert calibration.lake_episode_id(hdf5) == "session_004/data/demo_3"
    assert calibration.lake_episode_id(bag) == "episode_0017"


def test_write_doc_replaces_only_the_marked_block(tmp_path):
    doc = tmp_path / "quality.md"
    doc.write_text(f"# Q\n\n## Calibration\nprose before\n{calibration.BEGIN}\nold table\n{calibration.END}\n"
                   "prose after\n\n## Next\n")
    calibration.write_doc("| new |", doc)
    assert doc.read_text() == (f"# Q\n\n## Calibration\nprose before\n{calibration.BEGIN}\n| new |\n"
                               f"{calibration.END}\nprose after\n\n## Next\n")
    doc.write_text("# Q\n")
    with pytest.raises(SystemExit, match="no <!-- quality_calibration.py: begin -->"):
        calibration.write_doc("| new |", doc)
