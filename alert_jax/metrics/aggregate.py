"""From per-template task scores to ALERT's tables: per task, per skill, per split.

A row of `scores.jsonl` is the mean of one metric set over the `n` instances of one
model × task × template. ALERT reports a task's score as the best template ("max") and also the
mean over templates; a skill's score is the mean over its tasks. Everything here is plain Python
so the report can be built on a laptop without jax.
"""
from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from alert_jax.errors import AlertJaxError
from alert_jax.metrics.scores import METRICS

VARIANT_ORDER: tuple[str, ...] = ("pretrained", "ft", "cot")
SPLIT_ORDER: tuple[str, ...] = ("in_domain", "held_out", "dev")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)
_SIZE_UNIT = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_TEXT_FIELDS = ("model", "variant", "size", "task", "skill", "split", "template")
LATER_METRICS: tuple[str, ...] = ("contains_match",)
"""Metrics added after score files were first written: a row without one still loads (that metric is absent)."""


class ScoreRowError(AlertJaxError):
    """A score row is missing a field, has a field of the wrong type, or clashes with another row."""


def size_value(size: str) -> float:
    """Parameter count of a size label such as "125m", "1.3b", "13B"; +inf when unparseable.

    Used only for ordering, so that 1.3b comes before 13b (string order would not) and odd labels
    sort last rather than failing.
    """
    match = _SIZE_RE.match(size)
    return float(match.group(1)) * _SIZE_UNIT[match.group(2).lower()] if match else math.inf


def order_key(value: str, order: Sequence[str]) -> tuple[int, str]:
    """Sort key putting the values of `order` first, in that order, then any others alphabetically."""
    return (order.index(value) if value in order else len(order), value)


@dataclasses.dataclass(frozen=True)
class System:
    """One evaluated model: a base model at a size, in a variant (pretrained, ft, cot, …)."""

    model: str
    size: str
    variant: str

    @property
    def base_label(self) -> str:
        """Model and size, the size left out when the model name already says it ("opt-1.3b")."""
        return self.model if self.size in self.model else f"{self.model}/{self.size}"

    @property
    def label(self) -> str:
        """Column name in tables, e.g. "opt-1.3b/cot"."""
        return f"{self.base_label}/{self.variant}"

    @property
    def base(self) -> tuple[str, str]:
        """The (model, size) that variants are compared within."""
        return (self.model, self.size)

    def sort_key(self) -> tuple:
        return (self.model, size_value(self.size), self.size, order_key(self.variant, VARIANT_ORDER))


@dataclasses.dataclass(frozen=True)
class ScoreRow:
    """One line of `scores.jsonl`: metric means over `n` instances of one system × task × template."""

    system: System
    task: str
    skill: str
    split: str
    template: str
    rouge_l: float
    exact_match: float
    relaxed_match: float
    n: int
    contains_match: Optional[float] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ScoreRow":
        """Validate and convert a decoded JSON object; errors name the offending key."""
        if not isinstance(d, Mapping):
            raise ScoreRowError(f"a score row must be a JSON object, got {type(d).__name__}")
        for key in (*_TEXT_FIELDS, *METRICS, "n"):
            if key not in d and key not in LATER_METRICS:
                raise ScoreRowError(f"missing key {key!r}")
        for key in _TEXT_FIELDS:
            if not isinstance(d[key], str):
                raise ScoreRowError(f"key {key!r} must be a string, got {d[key]!r}")
        for key in (m for m in METRICS if m in d):
            value = d[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                raise ScoreRowError(f"key {key!r} must be a number in [0, 100], got {value!r}")
        if isinstance(d["n"], bool) or not isinstance(d["n"], int) or d["n"] < 1:
            raise ScoreRowError(f"key 'n' must be a positive integer, got {d['n']!r}")
        return cls(
            system=System(model=d["model"], size=d["size"], variant=d["variant"]),
            task=d["task"], skill=d["skill"], split=d["split"], template=d["template"],
            rouge_l=float(d["rouge_l"]), exact_match=float(d["exact_match"]),
            relaxed_match=float(d["relaxed_match"]), n=d["n"],
            contains_match=float(d["contains_match"]) if "contains_match" in d else None,
        )

    def metric(self, name: str) -> Optional[float]:
        """The row's value of metric `name`; None for a `LATER_METRICS` metric the row was written without."""
        return getattr(self, _checked_metric(name))


RowLike = Union[ScoreRow, Mapping[str, Any]]


def _checked_metric(name: str) -> str:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRICS)}")
    return name


@dataclasses.dataclass(frozen=True)
class TaskScore:
    """One system's scores on one task, one value per template, for one metric."""

    system: System
    task: str
    skill: str
    split: str
    metric: str
    by_template: tuple[tuple[str, float], ...]

    @property
    def values(self) -> list[float]:
        return [value for _, value in self.by_template]

    @property
    def best(self) -> float:
        """ALERT's "max": the score with the best template."""
        return max(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Population std over templates: the spread of these fixed templates, not a sample estimate."""
        return statistics.pstdev(self.values)


@dataclasses.dataclass(frozen=True)
class GroupScore:
    """Mean over a group of tasks (a skill, or a split) of per-task best and per-task mean."""

    system: System
    group: str
    metric: str
    best: float
    mean: float
    n_tasks: int


def per_task(rows: Iterable[RowLike], metric: str = "rouge_l") -> list[TaskScore]:
    """Per system and task, the template scores of `metric`; ordered by system, then task.

    Raises `ScoreRowError` when a system × task × template occurs twice or a task is given two
    different skills or splits — both would silently skew the means.
    """
    _checked_metric(metric)
    cells: dict[tuple[System, str], dict[str, float]] = defaultdict(dict)
    labels: dict[str, tuple[str, str]] = {}
    for row in rows:
        row = row if isinstance(row, ScoreRow) else ScoreRow.from_dict(row)
        known = labels.setdefault(row.task, (row.skill, row.split))
        if known != (row.skill, row.split):
            raise ScoreRowError(
                f"task {row.task!r} has skill/split {known} in one row and {(row.skill, row.split)} in another"
            )
        value = row.metric(metric)
        if value is None:
            continue
        templates = cells[(row.system, row.task)]
        if row.template in templates:
            raise ScoreRowError(f"duplicate row for {row.system.label} × {row.task} × {row.template}")
        templates[row.template] = value
    return [
        TaskScore(system, task, *labels[task], metric, tuple(sorted(templates.items())))
        for (system, task), templates in sorted(cells.items(), key=lambda kv: (kv[0][0].sort_key(), kv[0][1]))
    ]


def group_scores(task_scores: Iterable[TaskScore], key: Callable[[TaskScore], str],
                 order: tuple[str, ...] = ()) -> list[GroupScore]:
    """Per system and group (`key` of each task), the means of per-task best and per-task mean.

    Ordered by system, then by `order` (groups not in it follow alphabetically).
    """
    groups: dict[tuple[System, str, str], list[TaskScore]] = defaultdict(list)
    for task in task_scores:
        groups[(task.system, key(task), task.metric)].append(task)
    return [
        GroupScore(system, group, metric,
                   best=statistics.fmean(t.best for t in tasks),
                   mean=statistics.fmean(t.mean for t in tasks),
                   n_tasks=len(tasks))
        for (system, group, metric), tasks in sorted(
            groups.items(), key=lambda kv: (kv[0][0].sort_key(), order_key(kv[0][1], order), kv[0][2]))
    ]


def per_skill(task_scores: Iterable[TaskScore]) -> list[GroupScore]:
    """ALERT's per-skill table: the mean over a skill's tasks of the per-task best and mean."""
    return group_scores(task_scores, lambda t: t.skill)


def per_split(task_scores: Iterable[TaskScore]) -> list[GroupScore]:
    """In-domain vs held-out (vs dev): the mean over a split's tasks of the per-task best and mean."""
    return group_scores(task_scores, lambda t: t.split, SPLIT_ORDER)
