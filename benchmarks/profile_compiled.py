"""Per-op profile of a compiled model: each op of fastconv.compile's plan run alone as a
one-op program, best of N, at a large batch and at batch 1, with GFLOP/s for convolutions.

    PYTHONPATH=. python benchmarks/profile_compiled.py --model resnet20 --threads 2
"""
import argparse
import time

import numpy as np

import fastconv
from fastconv import _compile
from fastconv._kernels import _compiled
from fastconv._threads import blas_single_threaded
from fastconv.nn import models

NAMES = {v: k for k, v in dict(CONV=0, LINEAR=1, MAXPOOL=2, AVGPOOL=3, ACT=4, AFFINE=5, ADD=6,
                              CONCAT=7, COPY=8).items()}
ROUTES = {0: "gemm", 1: "direct", 2: "kvec", 3: "winograd"}
IMAGE_SHAPES = {"lenet": (1, 28, 28), "resnet18": (3, 64, 64)}


def one_op_program(planner, op):
    op = dict(op, src=0, dst=1)
    sizes = [0, 0]
    if "src2" in op:
        op["src2"] = 2
        sizes.append(op["in2_items"])
    return _compiled.Program([op], sizes, planner.col_items, planner.work_items,
                             op["in_items"], op["out_items"], _compile._GROUP), op


def best_time(fn, reps):
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    fastconv.set_num_threads(a.threads)
    model = getattr(models, a.model)().eval()
    shape = IMAGE_SHAPES.get(a.model, (3, 32, 32))
    planner, _ = _compile._plan(model, shape)
    rng = np.random.default_rng(0)
    tot = {1: 0.0, a.batch: 0.0}
    print(f"{'op':>3} {'kind':8} {'route':8} {'shape':28} {'b%d us' % a.batch:>9} "
          f"{'GF/s':>6} {'b1 us':>7} {'GF/s':>6}")
    for i, op in enumerate(planner.ops):
        prog, op1 = one_op_program(planner, op)
        arena = np.empty(a.threads * prog.thread_items + 1, np.float32)
        row = []
        for n in (a.batch, 1):
            x = rng.random(n * op1["in_items"], dtype=np.float32)
            out = np.empty(n * op1["out_items"], np.float32)
            arena[:] = rng.random(arena.size, dtype=np.float32)  # src2 lives in the arena
            with blas_single_threaded():
                t = best_time(lambda: prog.run(x, out, arena, n, a.threads),
                              a.reps if n > 1 else 50 * a.reps)
            tot[n] += t
            macs = 0
            if op["kind"] == 0:
                macs = op["K"] * op["C"] * op["kh"] * op["kw"] * op["Ho"] * op["Wo"]
            row.append((t * 1e6, 2 * macs * n / t / 1e9))
        kind = NAMES[op["kind"]]
        route = ROUTES[op.get("route", 0)] if op["kind"] == 0 else ""
        if op["kind"] == 0:
            s = f"{op['C']}x{op['H']}x{op['W']}->{op['K']} k{op['kh']} s{op['sh']}"
        else:
            s = f"{op.get('C', '')}x{op.get('H', '')}x{op.get('W', '')}"
        s += " +act" if op.get("act", 0) else ""
        print(f"{i:>3} {kind:8} {route:8} {s:28} {row[0][0]:9.0f} {row[0][1]:6.1f} "
              f"{row[1][0]:7.1f} {row[1][1]:6.1f}")
    print(f"sum of ops: b{a.batch} {tot[a.batch] * 1e3:.2f} ms "
          f"({a.batch / tot[a.batch]:.0f} img/s), b1 {tot[1] * 1e6:.0f} us")


if __name__ == "__main__":
    main()
