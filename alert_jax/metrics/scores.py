"""Instance-level metrics with NIV2's conventions (docs/contracts.md, "Metrics").

`relaxed_match` is NIV2-normalised exact match (lower-case, no punctuation, collapsed whitespace, then
equality); `contains_match` is its lenient sibling (the normalised reference occurs, as whole words, in
the normalised prediction).

Every metric compares one prediction with several accepted references and keeps the best
match, on a 0–100 scale, so that task means read like the numbers in the ALERT and NIV2 papers.
"""
from __future__ import annotations

import functools
import string
from typing import Any, Callable, Sequence

from alert_jax.errors import AlertJaxError
from alert_jax.metrics.tokens import rouge_tokenizer

METRICS: tuple[str, ...] = ("rouge_l", "exact_match", "relaxed_match", "contains_match")
"""Metric names, in the order they are reported (they are also the keys of `scores.jsonl`)."""

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


class MetricInputError(AlertJaxError):
    """The references given to a metric cannot be scored (none, or not a list of strings)."""


@functools.cache
def _rouge_scorer() -> Any:
    """One scorer for the process, built on first use (see `rouge_tokenizer` for why lazily)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=rouge_tokenizer(stem=True))


def _checked(references: Sequence[str]) -> Sequence[str]:
    # A bare string is a Sequence[str] too; scoring it would silently compare against its characters.
    if isinstance(references, str):
        raise MetricInputError(f"references must be a sequence of strings, got the string {references!r}")
    if len(references) == 0:
        raise MetricInputError("references is empty: at least one reference output is needed to score")
    return references


def _best(match: Callable[[str], float], references: Sequence[str]) -> float:
    return max(match(reference) for reference in _checked(references))


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure ×100 (rouge_score tokenizer, Porter stemmer), best over `references`."""
    scorer = _rouge_scorer()
    return _best(lambda ref: 100.0 * scorer.score(ref, prediction)["rougeL"].fmeasure, references)


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """100 if `prediction` equals some reference after stripping surrounding whitespace, else 0."""
    return _best(lambda ref: 100.0 if prediction.strip() == ref.strip() else 0.0, references)


def normalize_relaxed(text: str) -> str:
    """Lower-case, delete `string.punctuation`, collapse runs of whitespace (relaxed match's view)."""
    return " ".join(text.lower().translate(_DROP_PUNCTUATION).split())


def relaxed_match(prediction: str, references: Sequence[str]) -> float:
    """100 if `prediction` equals some reference after `normalize_relaxed`, else 0."""
    predicted = normalize_relaxed(prediction)
    return _best(lambda ref: 100.0 if predicted == normalize_relaxed(ref) else 0.0, references)


def contains_match(prediction: str, references: Sequence[str]) -> float:
    """100 if some reference, after `normalize_relaxed`, occurs in the normalised prediction as whole words.

    The lenient variant of relaxed match that papers use for verbose models ("The answer is yes, because…"
    still matches "yes"). Whole words, so "no" is not found inside "not"; a reference that normalises to
    nothing matches only a prediction that does too (otherwise it would match everything).
    """
    predicted = f" {normalize_relaxed(prediction)} "

    def contained(reference: str) -> float:
        wanted = normalize_relaxed(reference)
        found = f" {wanted} " in predicted if wanted else predicted.strip() == ""
        return 100.0 if found else 0.0

    return _best(contained, references)


def score(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """Every metric for one instance, keyed by the names in `METRICS`."""
    return {
        "rouge_l": rouge_l(prediction, references),
        "exact_match": exact_match(prediction, references),
        "relaxed_match": relaxed_match(prediction, references),
        "contains_match": contains_match(prediction, references),
    }
