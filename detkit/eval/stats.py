"""Statistics over seeds: t confidence intervals, paired differences, the effect rule.

Values are metric values of runs, one per seed. ``None`` and -1 (COCO's "no ground truth in
this size bucket") are not values: they are dropped everywhere (the report's means included). A
paired difference compares two extractors on the seeds where both have a value: runs with the
same seed share initial weights of the shared modules, data order and augmentation, so the
seed-to-seed noise they share cancels in the difference.

The t quantile comes from ``scipy.stats.t`` (scipy is an albumentations dependency).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Iterable, Mapping
from typing import NamedTuple

CONFIDENCE = 0.95


class Interval(NamedTuple):
    """``mean ± half_width`` over ``n`` values; ``half_width`` is NaN for ``n < 2``, and
    ``mean`` NaN for ``n == 0``."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def is_value(value: float | None) -> bool:
    """Whether ``value`` counts: not None and not -1 (no ground truth in the bucket)."""
    return value is not None and float(value) != -1.0


def valid_values(values: Iterable[float | None]) -> list[float]:
    """``values`` without None and -1, as floats."""
    return [float(v) for v in values if is_value(v)]


def t_quantile(probability: float, dof: int) -> float:
    """The ``probability`` quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(probability, dof))


def t_interval(values: Iterable[float | None], confidence: float = CONFIDENCE) -> Interval:
    """Mean and half-width of its two-sided ``confidence`` interval from the t distribution:
    ``t(1 - (1 - confidence) / 2, n - 1) * s / sqrt(n)`` with ``s`` the sample standard
    deviation. None and -1 are dropped first."""
    valid = valid_values(values)
    n = len(valid)
    if n == 0:
        return Interval(math.nan, math.nan, 0)
    mean = statistics.fmean(valid)
    if n == 1:
        return Interval(mean, math.nan, 1)
    half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(valid) / math.sqrt(n)
    return Interval(mean, half, n)


def matched_seeds(a: Mapping[Hashable, float | None],
                  b: Mapping[Hashable, float | None]) -> list[Hashable]:
    """The seeds (keys) where both ``a`` and ``b`` have a value, sorted."""
    return sorted(s for s in a.keys() & b.keys() if is_value(a[s]) and is_value(b[s]))


def seed_differences(a: Mapping[Hashable, float | None],
                     b: Mapping[Hashable, float | None]) -> dict[Hashable, float]:
    """``{seed: a[seed] - b[seed]}`` over :func:`matched_seeds`."""
    return {s: a[s] - b[s] for s in matched_seeds(a, b)}


def paired_difference(a: Mapping[Hashable, float | None], b: Mapping[Hashable, float | None],
                      confidence: float = CONFIDENCE) -> Interval:
    """The t interval of ``a[s] - b[s]`` over :func:`matched_seeds` (``{seed: value}`` each);
    seeds present on one side only, or without a value on either, are left out."""
    return t_interval(seed_differences(a, b).values(), confidence)


def is_effect(interval: Interval) -> bool:
    """The significance rule: an effect is a difference whose confidence interval excludes 0
    (never with fewer than 2 pairs, where there is no interval)."""
    return interval.n >= 2 and not math.isnan(interval.half_width) and (
        interval.low > 0 or interval.high < 0)
