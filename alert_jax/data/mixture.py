"""The finetuning mixture: how many training examples each source contributes.

ALERT's corpus joins ten rationale datasets of very different sizes (e-SNLI ~550k examples, StrategyQA ~2.3k,
GSM8K ~7.5k); taken whole, the largest swamp the rest. `data.examples_per_task` caps every source alike and
`data.mixture` (source → cap, 0 = all) overrides it per source. A cap keeps a source's *first* examples in file
order — the order both raw files and a TFDS build give — so a run and `alert-jax data stats` agree on what is
trained on, and raising a cap only adds examples.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping, Sequence, TypeVar

from alert_jax.errors import AlertJaxError

Item = TypeVar("Item")


class MixtureError(AlertJaxError):
    """`data.mixture` names a source the finetuning suite does not have, or gives a negative cap."""


def check_mixture(mixture: Mapping[str, int], sources: Sequence[str], suite: str) -> None:
    """Every key of `mixture` must be one of the suite's finetuning sources and every cap >= 0."""
    for source, cap in mixture.items():
        if source not in sources:
            raise MixtureError(f"data.mixture.{source}: not a finetuning task of suite {suite!r} "
                               f"(its sources: {', '.join(sources)})")
        if cap < 0:
            raise MixtureError(f"data.mixture.{source}: a cap must be >= 0 (0 = all), got {cap}")


def cap_for(source: str, examples_per_task: int, mixture: Mapping[str, int]) -> int:
    """The number of training examples `source` may contribute (0 = all)."""
    return mixture.get(source, examples_per_task)


def capped(items: Iterable[tuple[str, Item]], examples_per_task: int, mixture: Mapping[str, int]) -> list[Item]:
    """The items (each tagged with its source) that the caps keep: the first `cap_for(source)` of each source."""
    seen: Counter[str] = Counter()
    kept = []
    for source, item in items:
        seen[source] += 1
        cap = cap_for(source, examples_per_task, mixture)
        if cap <= 0 or seen[source] <= cap:
            kept.append(item)
    return kept
