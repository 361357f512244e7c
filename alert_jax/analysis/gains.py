"""Finetuning gain against vocabulary overlap, per task: ALERT's "is it skills or seen words?" analysis.

A task's gain is a finetuned variant's best-template score minus the pretrained model's (`GAIN_PAIRS`); its
overlap is how much of the task's vocabulary the *variant's own* finetuning text covers (FT and CoT train on
different text: CoT's rationales add words), falling back to a variant-agnostic `overlap.json` value.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

from alert_jax.analysis.compare import GAIN_PAIRS, Delta, variant_deltas
from alert_jax.analysis.correlation import pearson, spearman
from alert_jax.metrics.aggregate import TaskScore


@dataclasses.dataclass(frozen=True)
class GainPoint:
    heading: str  # e.g. "opt-1.3b cot−pretrained"
    task: str
    overlap: float
    gain: float


@dataclasses.dataclass(frozen=True)
class GainCorrelation:
    heading: str
    n_tasks: int
    pearson: float
    spearman: float


def overlap_of(delta: Delta, overlap: Mapping[str, float],
               variant_overlap: Mapping[str, Mapping[str, float]]) -> Optional[float]:
    """The overlap of `delta`'s task with the finetuning text of its finetuned variant (None when unknown)."""
    return variant_overlap.get(delta.minuend.variant, {}).get(delta.group, overlap.get(delta.group))


def gain_points(tasks: Sequence[TaskScore], overlap: Mapping[str, float],
                variant_overlap: Mapping[str, Mapping[str, float]]) -> list[GainPoint]:
    """One point per finetuned variant × task with both a gain and an overlap, in `variant_deltas` order."""
    deltas = variant_deltas({(t.system, t.task): t.best for t in tasks}, GAIN_PAIRS)
    points = []
    for delta in deltas:
        value = overlap_of(delta, overlap, variant_overlap)
        if value is not None:
            points.append(GainPoint(delta.heading, delta.group, value, delta.value))
    return points


def gain_correlations(points: Sequence[GainPoint]) -> list[GainCorrelation]:
    """Per gain heading (model, size, variant pair), Pearson and Spearman r of overlap against gain."""
    headings = list(dict.fromkeys(p.heading for p in points))
    out = []
    for heading in headings:
        mine = [p for p in points if p.heading == heading]
        xs, ys = [p.overlap for p in mine], [p.gain for p in mine]
        out.append(GainCorrelation(heading, len(mine), pearson(xs, ys), spearman(xs, ys)))
    return out
