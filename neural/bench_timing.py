"""Wall-clock timing for the ``nfr bench`` suites: one way to time a call.

Standard library only, so Blender's half of the live suite (blender_addon/bench_stage.py)
times its pixel uploads with it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


def times_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall times in milliseconds of ``repeats`` calls of ``fn``, after ``warmup`` untimed
    calls (oneDNN primitive creation, allocator growth, caches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def best_ms(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """The fastest of ``times_ms``: on a shared machine, what the code itself costs."""
    return min(times_ms(fn, repeats, warmup))


def interleaved_best_ms(
    runs: Mapping[str, Callable[[], object]],
    rounds: int = 4,
    each_round: Callable[[], object] | None = None,
) -> dict[str, float]:
    """The best wall milliseconds of each of ``runs`` over ``rounds`` interleaved rounds (a,
    b, a, b, ...; the callers warm them up): on a shared machine every run sees the same
    load, so their ratios hold. ``each_round`` is called first in every round (e.g. the
    matmul peak measured between the timings)."""
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        if each_round is not None:
            each_round()
        for name, fn in runs.items():
            best[name] = min(best[name], *times_ms(fn, 1, warmup=0))
    return best
