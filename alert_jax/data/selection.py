"""Seeded, order-independent choices of instances: which ones are evaluated, which ones are shown as shots.

NIV2's test split caps each task at 100 instances, and ALERT evaluates that split; our task files hold every
instance, so evaluation picks `n` of them. The choice ranks instances by a hash of (seed, task, instance id)
rather than by position or a shuffled copy: it is the same in every run, under every template and prompting
mode (resumed evaluations and template comparisons see the same instances), and an instance's fate does not
depend on file order. Few-shot demonstrations (OPT-R's prompting modes) are drawn the same way, per evaluated
instance, from the task's instances that are not evaluated — never from the instance itself.
"""
from __future__ import annotations

import hashlib
import heapq
from typing import Sequence

from alert_jax.data.example import Example


def _rank(seed: int, task: str, key: str, example: Example) -> bytes:
    """A pseudo-random but fixed sort key of `example` within `task` for this `seed` and purpose `key`."""
    return hashlib.sha256(f"{seed}\x00{task}\x00{key}\x00{example.id or example.input}".encode("utf-8")).digest()


def evaluated_instances(task: str, examples: Sequence[Example], n: int, seed: int = 0) -> tuple[Example, ...]:
    """`n` instances of `task` chosen by seed (all of them when n <= 0 or the task has at most n), file order kept."""
    if n <= 0 or len(examples) <= n:
        return tuple(examples)
    chosen = {id(ex) for ex in sorted(examples, key=lambda ex: _rank(seed, task, "evaluate", ex))[:n]}
    return tuple(ex for ex in examples if id(ex) in chosen)


def demonstration_pool(examples: Sequence[Example], evaluated: Sequence[Example], shots: int) -> tuple[Example, ...]:
    """Where shots come from: the task's instances that are not evaluated (its "train" instances), or, when
    there are fewer than `shots` of those, every instance (each prompt still leaves out its own instance)."""
    left_out = {id(ex) for ex in evaluated}
    unevaluated = tuple(ex for ex in examples if id(ex) not in left_out)
    return unevaluated if len(unevaluated) >= shots else tuple(examples)


def shots_for(task: str, example: Example, pool: Sequence[Example], shots: int, seed: int = 0
              ) -> tuple[Example, ...]:
    """`shots` demonstrations for `example`, drawn by seed from `pool` without `example` itself.

    Called once per evaluated instance, so zero-shot (the default) hashes nothing and a few shots take the
    `shots` smallest ranks (`heapq.nsmallest` equals `sorted(...)[:shots]`) rather than sorting the whole pool."""
    if shots <= 0:
        return ()
    others = [ex for ex in pool if ex is not example and (not example.id or ex.id != example.id)]
    return tuple(heapq.nsmallest(shots, others,
                                 key=lambda ex: _rank(seed, task, f"shots:{example.id or example.input}", ex)))
