"""Interleaved best-of-N wall-clock timing, shared by the benchmark scripts.

The machines these benchmarks run on are shared and noisy, so competitors are timed in the
same process, in rounds (the order rotating from round to round), and each keeps its best
time: a slow spell then hurts every competitor alike instead of whichever happened to be
running. Within a round each callable runs a short burst of calls: after a parallel region
an OpenMP (or OpenBLAS) pool keeps spinning on the cores for a while, so the first call
after a competitor's may wait for those cores; the calls after it show the steady state.

API
---
best_of(fns, repeat=7, repeats=None, warmup=1, burst=2, min_time=0.0) -> {name: best seconds}
    ``fns`` maps a name to a zero-argument callable. Every callable is called ``warmup``
    times first (not timed), then each round calls each callable up to ``burst`` times in
    a row, until it has had its ``repeat`` timed calls. ``repeats`` maps a name to its own
    count (for a slow baseline that deserves fewer runs). With ``min_time``, a fast
    callable gets more calls (up to 10x its count) until its timed calls add up to that
    many seconds: more chances to catch a quiet moment on a busy machine.
"""
import time

__all__ = ["best_of"]


def best_of(fns, repeat=7, repeats=None, warmup=1, burst=2, min_time=0.0):
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
    burst : int, default 2
        Consecutive timed calls of one callable within a round.
    min_time : float, default 0
        Seconds of timed calls each callable should reach, by up to 10x its repeat count.

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
    done = {name: 0 for name in names}
    spent = {name: 0.0 for name in names}

    def wanted(name):
        if done[name] < counts[name]:
            return counts[name] - done[name]
        if spent[name] < min_time and done[name] < 10 * counts[name]:
            return 10 * counts[name] - done[name]
        return 0

    rounds = 0
    while any(wanted(name) for name in names):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            for _ in range(min(burst, wanted(name))):
                start = time.perf_counter()
                fns[name]()
                elapsed = time.perf_counter() - start
                best[name] = min(best[name], elapsed)
                spent[name] += elapsed
                done[name] += 1
        rounds += 1
    return best


def torch_step_fns(torch, model, infer_model, x, y, **sgd):
    """torch's training step (cross-entropy, SGD with ``sgd``) and no-grad inference on the
    batch (x, y): the two calls the benchmarks time against fastconv's."""
    opt = torch.optim.SGD(model.parameters(), **sgd)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    infer_model.eval()

    def train():
        loss = loss_fn(model(tx), ty)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad():
            infer_model(tx)
    return train, infer
