"""Wall-clock timing for the ``nfr bench`` suites: one way to time a call.

Standard library only, so Blender's half of the live suite (blender_addon/bench_stage.py)
times its pixel uploads with it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable


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
