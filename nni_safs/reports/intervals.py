"""Means with their 95 % confidence intervals (Student's t), as every comparison of runs reports them.

Few runs (5 to 10 seeds) are the rule here, so the interval uses Student's t with n - 1 degrees
of freedom rather than the normal approximation; a difference is paired (one value per seed)
before it is summarised, which removes what the seed changes for both sides.
"""
from __future__ import annotations

import statistics
from typing import Sequence

from scipy import stats

LEVEL = 0.95


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95 % confidence interval of the mean; low = high = mean for one value."""
    if not values:
        raise ValueError("no values to summarise")
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = stats.t.ppf((1 + LEVEL) / 2, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def interval(values: Sequence[float], signed: bool = True) -> str:
    """``mean [low, high]`` (the 95 % interval; the mean alone for one value), signed for differences."""
    mean, low, high = mean_interval(values)
    form = "{:+.2f}" if signed else "{:.2f}"
    if len(values) < 2:
        return form.format(mean)
    return f"{form.format(mean)} [{form.format(low)}, {form.format(high)}]"
