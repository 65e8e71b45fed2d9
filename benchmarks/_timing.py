"""Interleaved best-of-N wall-clock timing, shared by the benchmark scripts.

The machines these benchmarks run on are shared and noisy, so competitors are timed in the
same process, one call of each per round (the order rotating from round to round), and
each keeps its best time: a slow spell then hurts every competitor alike instead of
whichever happened to be running.

API
---
best_of(fns, repeat=7, repeats=None, warmup=1) -> {name: best seconds}
    ``fns`` maps a name to a zero-argument callable. Every callable is called ``warmup``
    times first (not timed), then round r calls each callable whose repeat count exceeds r.
    ``repeats`` maps a name to its own repeat count (for a slow baseline that deserves
    fewer runs); the others get ``repeat``.
"""
import time

__all__ = ["best_of"]


def best_of(fns, repeat=7, repeats=None, warmup=1):
    """Best wall-clock seconds of each callable in ``fns``, timed interleaved.

    Parameters
    ----------
    fns : dict of str -> callable
        Zero-argument callables to time.
    repeat : int, default 7
        Timed calls per callable.
    repeats : dict of str -> int, optional
        Per-callable overrides of ``repeat``.
    warmup : int, default 1
        Untimed calls per callable before timing (first-call allocations, caches).

    Returns
    -------
    dict of str -> float
        The fastest of each callable's timed calls, in seconds.
    """
    counts = {name: max(1, (repeats or {}).get(name, repeat)) for name in fns}
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    best = {name: float("inf") for name in names}
    for r in range(max(counts.values(), default=0)):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if counts[name] <= r:
                continue
            start = time.perf_counter()
            fns[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return best
