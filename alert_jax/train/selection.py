"""Which evaluation of a run becomes its `best/` model (`train.select_by`).

ALERT picks the checkpoint with the lowest perplexity on its three NIV2 dev tasks (`dev_perplexity`, the
default). Perplexity rewards a model for the dev *targets* it is shown, so `dev_rouge_l` offers the choice an
evaluation would make: greedy generations for the dev tasks under `eval.templates`, scored with ROUGE-L like
the suite's own tasks, a task's score being its best template (ALERT's "max"), the criterion their mean over
the dev tasks. The prompts, records and scores are those of `alert_jax.evaluate` (its `plan`,
`instance_record` and `score_rows`), so a run selects by exactly what its evaluation will report; generation
runs on the training mesh, and every host computes the same score, so all of them agree on the best step.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Mapping, Optional

from alert_jax.config import DataConfig, EvalConfig
from alert_jax.data.suites import load_suite
from alert_jax.errors import AlertJaxError
from alert_jax.evaluate import instance_record, plan, score_rows
from alert_jax.metrics.aggregate import System, per_task

SELECT_BY: dict[str, tuple[str, bool]] = {"dev_perplexity": ("val_ppl", False), "dev_rouge_l": ("dev_rouge_l", True)}
"""`train.select_by` → (the metrics record key it compares, whether higher is better)."""

_DEV_SYSTEM = System(model="dev", size="", variant="dev")


class SelectionError(AlertJaxError):
    """`train.select_by` is unknown, or asks for dev generations where the run has no dev tasks."""


def check_select_by(select_by: str) -> None:
    if select_by not in SELECT_BY:
        raise SelectionError(f"train.select_by={select_by!r}: expected one of {', '.join(SELECT_BY)}")


def is_better(select_by: str, record: Mapping[str, float], best: Optional[Mapping[str, Any]]) -> bool:
    """Whether `record` (an evaluation's metrics) beats `best` (the `best.json` so far, if any) by `select_by`.

    A best chosen by another criterion (a run resumed with a changed `train.select_by`) is always beaten once.
    """
    key, higher = SELECT_BY[select_by]
    value = record[key]
    if not math.isfinite(value):
        return False
    if best is None or best.get("select_by", "dev_perplexity") != select_by or key not in best:
        return True
    return value > best[key] if higher else value < best[key]


class DevGeneration:
    """Greedy generation on the `dev` tasks of `data.validation_suite`, scored as an evaluation would."""

    def __init__(self, data: DataConfig, eval_cfg: EvalConfig):
        if not data.validation_suite:
            raise SelectionError("train.select_by=dev_rouge_l needs dev tasks to generate for: set "
                                 "data.validation_suite (e.g. alert)")
        suite = load_suite(data.validation_suite)
        tasks = [(entry, task) for entry, task in suite.load_tasks(data.data_root or eval_cfg.data_root or None,
                                                                   skip_missing=True) if entry.split == "dev"]
        if not tasks:
            raise SelectionError(f"train.select_by=dev_rouge_l: data.validation_suite={data.validation_suite!r} "
                                 "has no dev task with data")
        self.cfg = dataclasses.replace(eval_cfg, suite=data.validation_suite)
        self.items = plan(tasks, self.cfg)

    def rouge_l(self, model: Any, tokenizer: Any) -> float:
        """Mean over dev tasks of the best template's mean ROUGE-L, for `model`'s greedy generations."""
        from alert_jax import generation  # the module, so tests can substitute its generate_text

        texts = generation.generate_text(model, tokenizer, [item.prompt for item in self.items],
                                         batch_size=self.cfg.batch_size, max_new_tokens=self.cfg.max_new_tokens,
                                         temperature=0.0, stop_strings=tuple(self.cfg.stop_strings))
        records = [instance_record(item, _DEV_SYSTEM, text) for item, text in zip(self.items, texts)]
        return statistics.fmean(task.best for task in per_task(score_rows(records), "rouge_l"))
