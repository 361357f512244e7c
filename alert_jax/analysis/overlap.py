"""Unigram vocabulary overlap between the finetuning corpus and each evaluation task.

ALERT asks whether finetuning gains come from reasoning skills or merely from having seen the
evaluation vocabulary; it measures how much of each task's vocabulary occurs in the finetuning
data. Words are counted with the metric's own tokenizer (`alert_jax.metrics.tokenize`, unstemmed)
so "seen" means seen as ROUGE-L sees it.
"""
from __future__ import annotations

from alert_jax.errors import AlertJaxError
import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

from alert_jax.metrics.tokens import tokenize


class OverlapError(AlertJaxError):
    """An evaluation task has no tokens, so its overlap is undefined."""


@dataclasses.dataclass(frozen=True)
class Overlap:
    """How much of one evaluation task's vocabulary the finetuning corpus covers.

    `type_overlap` = |V_eval ∩ V_ft| / |V_eval| (each distinct word once); `token_coverage` weights
    each word by its count in the task, i.e. the fraction of the task's running tokens seen in finetuning.
    """

    type_overlap: float
    token_coverage: float
    eval_types: int
    eval_tokens: int


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """Unigram counts over `texts` with the shared metric tokenizer."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(tokenize(text))
    return counts


def task_overlap(finetune_vocabulary: Iterable[str], eval_texts: Iterable[str], task: str = "task") -> Overlap:
    """Overlap of one task's texts with a finetuning vocabulary (a set of words, or any iterable of them)."""
    seen = set(finetune_vocabulary)
    counts = word_counts(eval_texts)
    if not counts:
        raise OverlapError(f"evaluation task {task!r} has no alphanumeric tokens; its overlap is undefined")
    total = sum(counts.values())
    return Overlap(
        type_overlap=sum(1 for word in counts if word in seen) / len(counts),
        token_coverage=sum(n for word, n in counts.items() if word in seen) / total,
        eval_types=len(counts),
        eval_tokens=total,
    )


def vocabulary_overlap(finetune_texts: Iterable[str],
                       eval_tasks: Mapping[str, Iterable[str]]) -> dict[str, Overlap]:
    """Per evaluation task (in sorted task order), its overlap with the finetuning corpus vocabulary."""
    vocabulary = set(word_counts(finetune_texts))
    return {task: task_overlap(vocabulary, eval_tasks[task], task) for task in sorted(eval_tasks)}


def write_overlap_json(overlaps: Mapping[str, Overlap], path: Path) -> Path:
    """Write task → type-overlap fraction, the `overlap.json` a run dir may hold for the report."""
    path.write_text(json.dumps({task: o.type_overlap for task, o in sorted(overlaps.items())}, indent=2) + "\n")
    return path
