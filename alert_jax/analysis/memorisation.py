"""Template memorisation: does a finetuned model score better under the template it was finetuned with?

Every finetuning prompt uses one template (`FINETUNE_TEMPLATE`, T5). If finetuning taught the prompt format
rather than a skill, a finetuned variant's T5 scores rise more than its scores under the unseen templates
T1–T4. Per system we report the mean over tasks of the T5 score and of the mean over the other templates; the
pretrained model's own gap is the baseline a finetuned variant's gap is read against.
"""
from __future__ import annotations

import dataclasses
import statistics
from typing import Sequence

from alert_jax.data.templates import FINETUNE_TEMPLATE
from alert_jax.metrics.aggregate import System, TaskScore


@dataclasses.dataclass(frozen=True)
class TemplateGap:
    system: System
    seen: float  # mean over tasks of the score under the finetuning template
    unseen: float  # mean over tasks of the mean score under the other templates
    n_tasks: int

    @property
    def gap(self) -> float:
        return self.seen - self.unseen


def template_gaps(tasks: Sequence[TaskScore], template: str = FINETUNE_TEMPLATE) -> list[TemplateGap]:
    """Per system (in `tasks` order), seen vs unseen template scores over the tasks evaluated under both."""
    by_system: dict[System, list[tuple[float, float]]] = {}
    for task in tasks:
        scores = dict(task.by_template)
        others = [value for name, value in scores.items() if name != template]
        if template in scores and others:
            by_system.setdefault(task.system, []).append((scores[template], statistics.fmean(others)))
    return [TemplateGap(system, statistics.fmean(s for s, _ in pairs), statistics.fmean(u for _, u in pairs),
                        len(pairs)) for system, pairs in by_system.items()]
