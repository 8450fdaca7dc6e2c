"""Intervals over seeds for the Markov studies: the mean of a few runs and the difference of two such means."""

from __future__ import annotations

import math

__all__ = ["mean_interval", "welch_interval"]


def _t_quantile(q: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def mean_interval(values: list[float], level: float = 0.95) -> dict:
    """The mean of `values` (one per seed), their sample standard deviation (n − 1) and the two-sided Student-t
    interval of the mean, mean ± t_{(1+level)/2, n−1}·s/√n (NaN bounds for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval needs at least one value.")
    mean = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": math.nan, "ci": [math.nan, math.nan], "values": list(values)}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = _t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci": [mean - half, mean + half], "values": list(values)}


def welch_interval(a: list[float], b: list[float], level: float = 0.95) -> dict:
    """mean(a) − mean(b) with Welch's two-sided interval (unequal variances; Welch–Satterthwaite degrees of
    freedom). Each sample needs two values or more."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("welch_interval needs two values or more in each sample.")
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((v - ma) ** 2 for v in a) / (len(a) - 1) / len(a)  # squared standard error of mean(a)
    vb = sum((v - mb) ** 2 for v in b) / (len(b) - 1) / len(b)
    difference = ma - mb
    if va + vb == 0:
        return {"difference": difference, "ci": [difference, difference], "df": math.inf}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = _t_quantile((1 + level) / 2, df) * math.sqrt(va + vb)
    return {"difference": difference, "ci": [difference - half, difference + half], "df": df}
