"""The report's statistics on hand-made inputs."""

import math

import pytest

from detkit.eval.stats import (
    Interval,
    is_effect,
    matched_seeds,
    paired_difference,
    t_interval,
    t_quantile,
)


def test_t_interval_of_a_known_sample():
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    mean, half, n = t_interval([1, 2, 3, 4, 5])
    # t(0.975, 4) * s / sqrt(n) with s = sqrt(2.5)
    assert (mean, n) == (3.0, 5) and half == pytest.approx(2.776445 * 0.707107, abs=1e-6)
    assert half == pytest.approx(1.963243, abs=1e-6)
    assert t_interval([1, 2, 3, 4, 5], confidence=0.90).half_width < half
    # None and -1 (no ground truth in the bucket) are not values
    assert t_interval([None, 1, 2, -1, 3, 4, 5]) == t_interval([1, 2, 3, 4, 5])


def test_one_value_has_no_interval_and_none_no_mean():
    mean, half, n = t_interval([0.25])
    assert (mean, n) == (0.25, 1) and math.isnan(half)
    mean, half, n = t_interval([-1.0, None])
    assert n == 0 and math.isnan(mean) and math.isnan(half)
    assert not is_effect(paired_difference({0: 0.5}, {0: 0.1}))  # one pair: no interval


def test_pairing_by_seed_finds_an_effect_the_unpaired_intervals_hide():
    baseline = {0: 0.30, 1: 0.40, 2: 0.50}  # seeds differ a lot ...
    other = {0: 0.310, 1: 0.412, 2: 0.514}  # ... the extractor adds 0.010-0.014 on each
    a, b = t_interval(other.values()), t_interval(baseline.values())
    assert a.low < b.high and b.low < a.high  # the unpaired intervals overlap
    difference = paired_difference(other, baseline)
    assert difference.mean == pytest.approx(0.012) and difference.n == 3
    # diffs 0.010, 0.012, 0.014: s = 0.002, t(0.975, 2) = 4.302653
    assert difference.half_width == pytest.approx(4.302653 * 0.002 / math.sqrt(3), rel=1e-5)
    assert difference.low > 0 and is_effect(difference)
    assert not is_effect(paired_difference(baseline, baseline))  # 0 ± 0: no effect


def test_only_seeds_with_a_value_on_both_sides_are_paired():
    baseline = {0: 0.2, 1: 0.3, 2: 0.4}
    other = {0: 0.25, 1: -1.0, 2: 0.41, 3: 0.9}  # seed 1: no ground truth; seed 3: no baseline
    assert matched_seeds(other, baseline) == [0, 2]
    difference = paired_difference(other, baseline)
    assert difference.n == 2 and difference.mean == pytest.approx(0.03)
    assert difference.half_width == pytest.approx(12.706205 * math.sqrt(0.0008) / math.sqrt(2),
                                                  rel=1e-5)


def test_an_effect_is_an_interval_that_excludes_zero():
    assert is_effect(Interval(0.03, 0.02, 3)) and is_effect(Interval(-0.03, 0.02, 3))
    assert not is_effect(Interval(0.01, 0.02, 3))
    assert not is_effect(Interval(0.02, 0.02, 3))  # touching 0 is not excluding it
    assert not is_effect(Interval(0.05, math.nan, 1))
