"""Pearson and Spearman correlation in plain Python (the report must not need numpy or scipy).

ALERT relates each task's finetuning gain to its vocabulary overlap with the finetuning data; with ~20 tasks a
rank correlation (Spearman) guards against one outlying task, so the report gives both. Undefined cases — fewer
than two points, or a constant series — are NaN rather than an error, as a small run can hit them honestly.
"""
from __future__ import annotations

import math
from typing import Sequence


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson's r of two equally long series; NaN when undefined."""
    if len(xs) != len(ys):
        raise ValueError(f"pearson: series of different lengths ({len(xs)} and {len(ys)})")
    n = len(xs)
    if n < 2:
        return math.nan
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    var_x = sum((x - mean_x) ** 2 for x in xs)
    var_y = sum((y - mean_y) ** 2 for y in ys)
    if var_x == 0 or var_y == 0:
        return math.nan
    return cov / math.sqrt(var_x * var_y)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span (as scipy's `rankdata` 'average')."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            out[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the (tie-averaged) ranks; NaN when undefined."""
    if len(xs) != len(ys):
        raise ValueError(f"spearman: series of different lengths ({len(xs)} and {len(ys)})")
    return pearson(ranks(xs), ranks(ys))
