"""Pure-Python evaluation metrics and their aggregation (never imports jax).

`rouge_l`, `exact_match`, `relaxed_match`, `contains_match` and `score` follow NIV2's conventions (docs/contracts.md, "Metrics");
`per_task`, `per_skill` and `per_split` turn `scores.jsonl` rows into ALERT's tables.
"""
from alert_jax.metrics.aggregate import (
    GroupScore,
    ScoreRow,
    ScoreRowError,
    System,
    TaskScore,
    group_scores,
    per_skill,
    per_split,
    per_task,
    size_value,
)
from alert_jax.metrics.scores import (
    METRICS,
    MetricInputError,
    contains_match,
    exact_match,
    normalize_relaxed,
    relaxed_match,
    rouge_l,
    score,
)
from alert_jax.metrics.tokens import tokenize

__all__ = [
    "METRICS", "GroupScore", "MetricInputError", "ScoreRow", "ScoreRowError", "System", "TaskScore",
    "contains_match", "exact_match", "group_scores", "normalize_relaxed", "per_skill", "per_split", "per_task",
    "relaxed_match", "rouge_l", "score", "size_value", "tokenize",
]
