"""The Wilson score interval that closed-loop success rates are reported with."""

from __future__ import annotations

import math

import pytest

from training.metrics import wilson_interval


@pytest.mark.parametrize(("successes", "trials", "expected"), [
    (0, 9, (0.0, 0.2991)),
    (6, 30, (0.0951, 0.3731)),
    (15, 30, (0.3315, 0.6685)),
    (30, 30, (0.8865, 1.0)),
    (1, 1, (0.2065, 1.0)),
    (0, 0, (0.0, 1.0)),  # no trials: nothing is known
])
def test_wilson_interval_matches_hand_computed_95_percent_bounds(successes, trials, expected):
    assert wilson_interval(successes, trials) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_is_the_textbook_formula_for_any_z():
    successes, trials, z = 7, 20, 2.5758293035489  # 99%
    rate = successes / trials
    centre = (rate + z**2 / (2 * trials)) / (1 + z**2 / trials)
    half_width = z / (1 + z**2 / trials) * math.sqrt(rate * (1 - rate) / trials + z**2 / (4 * trials**2))
    low, high = wilson_interval(successes, trials, z=z)
    assert (low, high) == pytest.approx((centre - half_width, centre + half_width), abs=1e-12)
    assert low < wilson_interval(successes, trials)[0] < rate < wilson_interval(successes, trials)[1] < high


@pytest.mark.parametrize(("successes", "trials"), [(-1, 5), (6, 5)])
def test_wilson_interval_rejects_impossible_counts(successes, trials):
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, trials)
