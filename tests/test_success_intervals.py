"""The Wilson score interval that closed-loop success rates are reported with."""

from __future__ import annotations

import math

import pytest

from scipy.stats import binomtest

from training.metrics import paired_comparison, wilson_interval


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


@pytest.mark.parametrize(("only_this", "only_baseline", "both", "verdict"), [
    (9, 0, 3, "better"), (0, 9, 3, "worse"), (4, 2, 10, "no measurable difference"), (0, 0, 5, "no measurable difference"),
    (6, 0, 0, "better"),  # p = 2 / 64 = 0.031
    (5, 0, 0, "no measurable difference"),  # p = 2 / 32 = 0.0625
])
def test_paired_comparison_is_the_exact_mcnemar_test(only_this, only_baseline, both, verdict):
    """Scenes both or neither policy succeed on do not count; the discordant ones are a fair coin
    under no difference (scipy's exact binomial test gives the same p)."""
    ours = [True] * only_this + [False] * only_baseline + [True] * both + [False] * 7
    theirs = [False] * only_this + [True] * only_baseline + [True] * both + [False] * 7
    paired = paired_comparison(ours, theirs)
    expected_p = binomtest(only_this, only_this + only_baseline).pvalue if only_this + only_baseline else 1.0
    assert paired["p_value"] == pytest.approx(expected_p, abs=1e-12)
    assert (paired["only_this"], paired["only_baseline"], paired["both"], paired["scenes"]) == (
        only_this, only_baseline, both, len(ours))
    assert paired["verdict"] == verdict
