"""Assessment (mis)alignment: does a model score its correct chains of thought above its wrong ones?

Wang et al. 2023 (arXiv 2309.02144) call a CoT-finetuned model *misaligned* in assessment when it gives
subpar CoTs higher scores than good ones. Our measure is pairwise ranking accuracy over a sample set
(`alert-jax sample`): over every (correct, wrong) pair of samples of the same question, the fraction where the
model's score (length-normalised log-likelihood) of the correct one is higher, a tie counting one half. 0.5 is
chance; the same sample set scored by the CoT model and by the AFT model gives the before/after comparison.

Results live in a run dir's `assessment.json` (label → measure), which the report renders. Pure Python: no jax.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from alert_jax.atomic import write_text
from alert_jax.errors import AlertJaxError
from alert_jax.untrusted_json import read_json

ASSESSMENT_FILE = "assessment.json"
_FIELDS = ("pairs", "pair_accuracy", "questions", "samples", "correct_fraction")


class AssessmentError(AlertJaxError):
    """An unreadable or malformed `assessment.json`; the message names the file and key."""


def pairwise_accuracy(records: Iterable[Mapping[str, Any]], scores: Sequence[float] | None = None) -> dict[str, float]:
    """The measure over sample records (`question`, `correct` and, unless `scores` replaces it, `score`)."""
    records = list(records)
    scores = [r["score"] for r in records] if scores is None else list(scores)
    by_question: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for record, value in zip(records, scores, strict=True):
        by_question[record["question"]][0 if record["correct"] else 1].append(value)
    right = pairs = 0.0
    for good, bad in by_question.values():
        for g in good:
            for b in bad:
                pairs += 1
                right += 1.0 if g > b else 0.5 if g == b else 0.0
    return {"pairs": int(pairs), "pair_accuracy": right / pairs if pairs else float("nan"),
            "questions": len(by_question), "samples": len(records),
            "correct_fraction": sum(bool(r["correct"]) for r in records) / max(len(records), 1)}


def load_assessment(path: Path) -> dict[str, dict[str, float]]:
    """label → measure from an `assessment.json`."""
    data = read_json(path, AssessmentError)
    if not isinstance(data, dict):
        raise AssessmentError(f"{path}: must be a JSON object mapping model label → measure")
    for label, entry in data.items():
        missing = [f for f in _FIELDS if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise AssessmentError(f"{path}: key {label!r}: missing {missing[0]!r}")
    return data


def record_assessment(path: Path, label: str, measure: Mapping[str, float]) -> None:
    """Add (or replace) `label`'s measure in `path`, keeping the other labels'."""
    path = Path(path)
    data = load_assessment(path) if path.exists() else {}
    data[label] = dict(measure)
    write_text(path, json.dumps(data, indent=2))


def assessment_section(entries: Mapping[str, Mapping[str, float]]) -> str:
    """The report's markdown table: one line per scored model."""
    lines = ["| model | pairwise ranking accuracy | (correct, wrong) pairs | questions | samples | correct samples |",
             "|---|---|---|---|---|---|"]
    for label, e in entries.items():
        lines.append(f"| {label} | {e['pair_accuracy']:.3f} | {e['pairs']} | {e['questions']} | {e['samples']} | "
                     f"{e['correct_fraction']:.3f} |")
    return "\n".join(lines) + "\n"
