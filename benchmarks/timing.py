"""How the benchmarks time code: interleaved rounds when systems are compared, best-of-N for a floor.

Kept in one place so every script measures the same way: a first call (compile, graph build, allocation) is
never mixed into the timed calls, and systems compared side by side take turns, so a shared machine whose
load changes during a run slows every side alike instead of whichever happened to run then.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping, NamedTuple


class Timed(NamedTuple):
    """One system's result from `interleaved_rounds`."""

    first_s: float  # the first call alone: compile / warm-up, reported apart
    median_s: float  # median over the timed rounds
    output: Any  # what the last call returned


def interleaved_rounds(systems: Mapping[str, Callable[[], Any]], rounds: int) -> dict[str, Timed]:
    """Each system called once (its first call timed apart), then `rounds` rounds calling every system in turn.

    Rounds alternate between the systems rather than running each one's calls back to back, so a change in the
    machine's load lands on all of them; the median discards the odd slow round.
    """
    first, outputs, times = {}, {}, {name: [] for name in systems}
    for name, call in systems.items():
        start = time.perf_counter()
        outputs[name] = call()
        first[name] = time.perf_counter() - start
    for _ in range(rounds):
        for name, call in systems.items():
            start = time.perf_counter()
            outputs[name] = call()
            times[name].append(time.perf_counter() - start)
    return {name: Timed(first[name], statistics.median(times[name]), outputs[name]) for name in systems}


def best_seconds(call: Callable[[], Any], repeats: int) -> float:
    """The fastest of `repeats` timed calls after one untimed warm-up call (compile, caches).

    The minimum, not the median: for a floor (bandwidth, a decode step) the fastest run is the one least
    disturbed by other work; `call` must wait for its result (e.g. `block_until_ready`).
    """
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)
