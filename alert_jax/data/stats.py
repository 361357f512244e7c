"""Corpus statistics: examples and tokens per source, counted over what training consumes.

Counts are over the finetuning rendering of every example (`templates.task_pairs`: prompt `FINETUNE_TEMPLATE`,
target of the variant): tokens are whitespace-separated words, or with a tokenizer the ids
`packing.tokenize_example` produces (BOS included). Sources are a suite's tasks, every file under a data root's
folders named after a reader kind (`niv2/`, `gsm8k/`, …), or — for an experiment — the examples it trains on
(`alert_jax.data.trained.trained_examples`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from alert_jax.data import packing, readers
from alert_jax.data.example import Task
from alert_jax.data.readers import DataFormatError
from alert_jax.data.tokenizer import load_tokenizer
from alert_jax.data.trained import TextPair

_DATA_SUFFIXES = (".json", ".jsonl", ".csv")


@dataclasses.dataclass(frozen=True)
class SourceStats:
    examples: int
    tokens: int


def scan_data_root(data_root: Path) -> Iterator[Task]:
    """Every source file under `data_root/<reader kind>/`, read with that kind's reader."""
    if not data_root.is_dir():
        raise DataFormatError(f"{data_root}: data root not found")
    for folder in sorted(p for p in data_root.iterdir() if p.is_dir() and p.name in readers.READERS):
        if folder.name == "math":  # one problem per JSON file: the folder is the source
            yield readers.read("math", folder)
            continue
        for path in sorted(p for p in folder.iterdir() if p.suffix in _DATA_SUFFIXES):
            yield readers.read(folder.name, path)


def corpus_stats(sources: Iterable[tuple[str, Sequence[TextPair]]],
                 count: Callable[[str, str], int]) -> dict[str, SourceStats]:
    """Examples and tokens per source label of its (prompt, target) pairs, in first-seen order (same label: counts
    add up; a source without examples is listed with zeros)."""
    totals: dict[str, SourceStats] = {}
    for label, pairs in sources:
        tokens = sum(count(prompt, target) for prompt, target in pairs)
        before = totals.get(label, SourceStats(0, 0))
        totals[label] = SourceStats(before.examples + len(pairs), before.tokens + tokens)
    return totals


def token_counter(tokenizer_path: Optional[Path]) -> tuple[Callable[[str, str], int], str]:
    """A (prompt, target) → token count function and the name of its unit."""
    if tokenizer_path is None:
        return (lambda prompt, target: len(prompt.split()) + len(target.split())), "whitespace"
    tokenizer = load_tokenizer(tokenizer_path)

    def count(prompt: str, target: str) -> int:
        prompt_ids, target_ids = packing.tokenize_example(tokenizer, prompt, target)
        return len(prompt_ids) + len(target_ids)

    return count, str(tokenizer_path)
