"""Unigram vocabulary overlap between the finetuning corpus and each evaluation task.

ALERT asks whether finetuning gains come from reasoning skills or merely from having seen the
evaluation vocabulary; it measures how much of each task's vocabulary occurs in the finetuning
data. Words are counted with the metric's own tokenizer (`alert_jax.metrics.tokenize`, unstemmed)
so "seen" means seen as ROUGE-L sees it.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

from alert_jax.config import DataConfig, ExperimentConfig
from alert_jax.data.suites import SCORED_SPLITS, load_suite
from alert_jax.data.trained import trained_examples
from alert_jax.errors import AlertJaxError
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


def finetune_texts(data: DataConfig) -> list[str]:
    """The text a run with this `data` section finetunes on: prompt and target of every example it trains on
    (`alert_jax.data.trained.trained_examples`: its validation hold-out left out, its caps applied)."""
    return [f"{e.prompt} {e.target}" for e in trained_examples(data).train]


def eval_task_texts(suite: str, data_root: str = "") -> dict[str, list[str]]:
    """Per scored task of `suite`, its instances' inputs and references (the words a model is asked and graded
    on; the template wording is left out, being the same for every task). Tasks without data are skipped."""
    return {entry.task: [ex.input for ex in task.examples] + [r for ex in task.examples for r in ex.references]
            for entry, task in load_suite(suite).load_tasks(data_root or None, skip_missing=True)
            if entry.split in SCORED_SPLITS}


def experiment_overlap(cfg: ExperimentConfig) -> dict[str, float]:
    """Task → type overlap between an experiment's finetuning text and its evaluation suite's tasks."""
    tasks = eval_task_texts(cfg.eval.suite, cfg.eval.data_root or cfg.data.data_root)
    return {task: o.type_overlap for task, o in vocabulary_overlap(finetune_texts(cfg.data), tasks).items()}
