"""Kernel benchmark: every op of the speed table, fastconv against torch and the NumPy reference.

Each op is timed for fastconv and torch (when importable) in the same process, interleaved,
best of N (benchmarks/_timing.py), then for fastconv.reference (fewer repeats), float32,
on the same number of threads: fastconv's OpenMP threads, ``torch.set_num_threads`` and the
reference's BLAS threads. Prints a table and writes JSON.

    python benchmarks/bench_kernels.py                      # every op, all cores
    python benchmarks/bench_kernels.py --threads 2 --ops pool
    python benchmarks/bench_kernels.py --quick              # small batches: a smoke run
    python benchmarks/bench_kernels.py --resnet20 --ref-repeat 1   # ResNet-20's conv shapes

Rates: GFLOP/s for convolutions, counting 2*N*K*(C/groups)*R*S*Ho*Wo per conv pass (a
backward pass counts one pass per gradient it computes, grad_bias aside); GB/s for
pooling, counting the bytes read and written (input, output, indices). Ratios are
torch / fastconv and reference / fastconv: above 1, fastconv is faster.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections import namedtuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import best_of  # noqa: E402

import fastconv  # noqa: E402
from fastconv import functional as F  # noqa: E402
from fastconv import reference as R  # noqa: E402
from fastconv._threads import blas_controller  # noqa: E402

_BLAS_SETTLE_S = 0.2  # OpenBLAS's idle threads spin about 0.1 s before they sleep
DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                            "bench_kernels.json")

# One op of the table. make(n, torch) builds a Case for batch size n (torch: the module or None).
Op = namedtuple("Op", "group name shape batch make")
Op.__doc__ = "An op of the speed table: group, name, shape text, default batch, Case factory."

Case = namedtuple("Case", "fastconv torch reference unit work input_bytes")
Case.__doc__ = """One op ready to time: three zero-argument callables (torch may be None),
unit ('GFLOP/s' or 'GB/s'), work (FLOPs or bytes per call) and input_bytes (pooling
forward: what the input-throughput goal counts; else None)."""


def _rand(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ----------------------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------------------

def _conv_op(group, c, hw, k, r, stride, pad, n, backward, grad_input=True, only=None):
    """conv2d forward, or backward (grad_weight, grad_bias, and grad_input if asked); with
    ``only`` ('input' or 'weight'), that one gradient alone, no bias (one conv pass)."""
    shape = f"({n},{c},{hw},{hw})->{k} {r}x{r}" + (f" s{stride}" if stride > 1 else "") \
        + (f" p{pad}" if pad else "")
    if only:
        name = f"conv2d grad_{only}"
    elif backward:
        name = "conv2d bwd" + ("" if grad_input else " (no grad_input)")
    else:
        name = "conv2d fwd"

    def make(n, torch):
        x = _rand((n, c, hw, hw), 0)
        w = _rand((k, c, r, r), 1, scale=(c * r * r) ** -0.5)
        b = _rand((k,), 2)
        ho = (hw + 2 * pad - r) // stride + 1
        flops = 2 * n * k * c * r * r * ho * ho
        if not backward:
            fc = lambda: F.conv2d(x, w, b, stride, pad)  # noqa: E731
            ref = lambda: R.conv2d(x, w, b, stride, pad)  # noqa: E731
            tc = None
            if torch is not None:
                tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))

                def tc():
                    with torch.no_grad():
                        torch.nn.functional.conv2d(tx, tw, tb, stride, pad)
            return Case(fc, tc, ref, "GFLOP/s", flops, None)
        g = _rand((n, k, ho, ho), 3)
        needs = (only == "input", only == "weight", False) if only \
            else (grad_input, True, True)
        kw = dict(zip(("needs_input_grad", "needs_weight_grad", "needs_bias_grad"), needs))
        fc = lambda: F.conv2d_backward(g, x, w, stride, pad, **kw)  # noqa: E731
        ref = lambda: R.conv2d_backward(g, x, w, stride, pad, **kw)  # noqa: E731
        tc = None
        if torch is not None:
            tx, tw, tg = (torch.from_numpy(a) for a in (x, w, g))
            # the backward op itself, as autograd would call it
            tc = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
                tg, tx, tw, [k], [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1,
                list(needs))
        return Case(fc, tc, ref, "GFLOP/s", flops * sum(needs[:2]), None)

    return Op(group, name, shape, n, make)


# ----------------------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------------------

def _pool_op(kind, direction, c, hw, k, s, p, n):
    """max/avg pooling; direction 'fwd', 'fwd+idx' (max, with indices) or 'bwd'."""
    shape = f"({n},{c},{hw},{hw}) {k}x{k} s{s}" + (f" p{p}" if p else "")
    name = f"{kind}_pool2d {direction}"

    def make(n, torch):
        x = _rand((n, c, hw, hw), 0)
        out, idx = F.max_pool2d(x, k, s, p, return_indices=True)
        g = _rand(out.shape, 1)
        tx = tg = tidx = None
        if torch is not None:
            tx, tg, tidx = torch.from_numpy(x), torch.from_numpy(g), torch.from_numpy(idx)
        lists = ([k, k], [s, s], [p, p])
        if kind == "max" and direction in ("fwd", "fwd+idx"):
            ri = direction == "fwd+idx"
            fc = lambda: F.max_pool2d(x, k, s, p, return_indices=ri)  # noqa: E731
            ref = lambda: R.max_pool2d(x, k, s, p, return_indices=ri)  # noqa: E731
            tc = torch and (lambda: _no_grad(torch, torch.nn.functional.max_pool2d,
                                             tx, k, s, p, return_indices=ri))
            work = x.nbytes + out.nbytes + (idx.nbytes if ri else 0)
            return Case(fc, tc, ref, "GB/s", work, x.nbytes)
        if kind == "max":
            fc = lambda: F.max_pool2d_backward(g, idx, x.shape)  # noqa: E731
            ref = lambda: R.max_pool2d_backward(g, idx, x.shape)  # noqa: E731
            tc = torch and (lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                tg, tx, *lists, [1, 1], False, tidx))
            return Case(fc, tc, ref, "GB/s", g.nbytes + idx.nbytes + x.nbytes, None)
        if direction == "fwd":
            fc = lambda: F.avg_pool2d(x, k, s, p)  # noqa: E731
            ref = lambda: R.avg_pool2d(x, k, s, p)  # noqa: E731
            tc = torch and (lambda: _no_grad(torch, torch.nn.functional.avg_pool2d,
                                             tx, k, s, p))
            return Case(fc, tc, ref, "GB/s", x.nbytes + out.nbytes, x.nbytes)
        fc = lambda: F.avg_pool2d_backward(g, x.shape, k, s, p)  # noqa: E731
        ref = lambda: R.avg_pool2d_backward(g, x.shape, k, s, p)  # noqa: E731
        tc = torch and (lambda: torch.ops.aten.avg_pool2d_backward(
            tg, tx, *lists, False, True, None))
        return Case(fc, tc, ref, "GB/s", g.nbytes + x.nbytes, None)

    return Op("pool", name, shape, n, make)


def _no_grad(torch, fn, *args, **kwargs):
    with torch.no_grad():
        return fn(*args, **kwargs)


def all_ops():
    """The speed table of issue 2, in order."""
    ops = []
    # LeNet: backward with grad_input only where C > 1 (a first layer needs none)
    for c, hw, k, pad, n in [(1, 28, 6, 2, 256), (6, 14, 16, 0, 256), (1, 28, 32, 2, 64)]:
        ops.append(_conv_op("lenet", c, hw, k, 5, 1, pad, n, backward=False))
        ops.append(_conv_op("lenet", c, hw, k, 5, 1, pad, n, backward=True, grad_input=c > 1))
    for c, hw, k, r, stride, pad, n in [(64, 56, 64, 3, 1, 1, 16), (128, 28, 128, 3, 1, 1, 16),
                                        (64, 56, 128, 3, 2, 1, 16), (256, 14, 64, 1, 1, 0, 32)]:
        ops.append(_conv_op("large", c, hw, k, r, stride, pad, n, backward=False))
        ops.append(_conv_op("large", c, hw, k, r, stride, pad, n, backward=True))
    for c, hw, k, s, p, n in [(6, 28, 2, 2, 0, 256), (64, 112, 3, 2, 1, 16)]:
        for kind, direction in [("max", "fwd"), ("max", "fwd+idx"), ("max", "bwd"),
                                ("avg", "fwd"), ("avg", "bwd")]:
            ops.append(_pool_op(kind, direction, c, hw, k, s, p, n))
    return ops


def resnet20_ops():
    """ResNet-20's convolution shapes at batch 128 (issue 12): forward, grad_input and
    grad_weight timed apart (one conv pass each, no bias, as in the network): the stem (no
    grad_input: a first layer needs none), the 3x3 layers of each stage, the stride-2 3x3
    layers and the 1x1 stride-2 projections."""
    ops = []
    for c, hw, k, r, stride, pad in [(3, 32, 16, 3, 1, 1), (16, 32, 16, 3, 1, 1),
                                     (32, 16, 32, 3, 1, 1), (64, 8, 64, 3, 1, 1),
                                     (16, 32, 32, 3, 2, 1), (32, 16, 64, 3, 2, 1),
                                     (16, 32, 32, 1, 2, 0), (32, 16, 64, 1, 2, 0)]:
        ops.append(_conv_op("resnet20", c, hw, k, r, stride, pad, 128, backward=False))
        for only in ("input", "weight") if c > 3 else ("weight",):
            ops.append(_conv_op("resnet20", c, hw, k, r, stride, pad, 128, backward=True,
                                only=only))
    return ops


def _available(op):
    """The fastconv functions an op needs exist (other kernels may still be in progress)."""
    needed = ["conv2d", "conv2d_backward"] if op.group != "pool" else [
        "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]
    return all(hasattr(F, f) and hasattr(R, f) for f in needed)


def select(ops, filters):
    """Ops whose 'group name shape' text contains any of the comma-separated filters."""
    if not filters:
        return list(ops)
    words = [w.strip() for w in filters.split(",") if w.strip()]
    return [op for op in ops if any(w in f"{op.group} {op.name} {op.shape}" for w in words)]


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _progress(items):
    """tqdm when installed, else one plain line per item on stderr."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(items, file=sys.stderr, unit="op", leave=False)
        for op in bar:
            bar.set_description(f"{op.name} {op.shape}")
            yield op
        return
    for i, op in enumerate(items, 1):
        print(f"[{i}/{len(items)}] {op.name} {op.shape}", file=sys.stderr, flush=True)
        yield op


def run(ops=None, threads=None, repeat=7, ref_repeat=2, batch=None, quick=False,
        use_torch=True, progress=True, min_time=1.0):
    """Time each op; return the results as a list of dicts (the JSON's "results").

    Parameters
    ----------
    ops : list of Op, optional
        Default: :func:`all_ops`.
    threads : int, optional
        Threads for all three (default ``fastconv.get_num_threads()``).
    repeat, ref_repeat : int
        Timed calls of fastconv and torch, and of the (slow) reference.
    min_time : float
        Seconds of timed calls fastconv and torch should each reach on an op (fast ops get
        up to 10x ``repeat`` calls: more chances of a quiet moment on a busy machine).
    batch : int, optional
        Batch size for every op instead of its own (tiny runs, tests).
    quick : bool
        Batch sizes divided by 16 (at least 1): a smoke run.
    use_torch : bool
        Time torch when it is importable.
    progress : bool
        Show progress on stderr.
    """
    ops = all_ops() if ops is None else ops
    threads = threads or fastconv.get_num_threads()
    torch = _import_torch() if use_torch else None
    if torch is not None:
        torch.set_num_threads(threads)
    results = []
    with fastconv.threads(threads), blas_controller().limit(limits=threads, user_api="blas"):
        for op in (_progress(ops) if progress else ops):
            n = batch or (max(1, op.batch // 16) if quick else op.batch)
            row = {"group": op.group, "op": op.name, "shape": op.shape.replace(
                f"({op.batch},", f"({n},", 1), "batch": n}
            if not _available(op):
                results.append(dict(row, skipped="not implemented in fastconv.functional"))
                continue
            case = op.make(n, torch)
            fns = {"fastconv": case.fastconv}
            if case.torch:
                fns["torch"] = case.torch
            best = best_of(fns, repeat=repeat, min_time=min_time)
            # The reference after, apart: its multi-threaded BLAS leaves threads spinning
            # for about 0.1 s, which would stall the next OpenMP region.
            best.update(best_of({"reference": case.reference}, repeat=ref_repeat, warmup=0))
            if threads > 1:
                time.sleep(_BLAS_SETTLE_S)
            results.append(_row(row, case, best))
    return results


def _row(row, case, best):
    scale = 1e-9  # GFLOP/s or GB/s from per-second figures
    fc = best["fastconv"]
    row.update(unit=case.unit, work=case.work)
    for name in ("fastconv", "torch", "reference"):
        t = best.get(name)
        row[f"{name}_ms"] = None if t is None else t * 1e3
        row[f"{name}_rate"] = None if t is None else case.work / t * scale
    row["input_gbps"] = None if case.input_bytes is None else case.input_bytes / fc * scale
    row["torch_over_fastconv"] = None if "torch" not in best else best["torch"] / fc
    row["reference_over_fastconv"] = best["reference"] / fc
    return row


def _fmt(value, spec, width):
    return f"{'-' if value is None else format(value, spec):>{width}}"


def table(results):
    """The results as a fixed-width text table."""
    head = (f"{'op':<30} {'shape':<28} {'fastconv ms':>11} {'torch ms':>9} {'ref ms':>9} "
            f"{'rate':>15} {'torch/fc':>8} {'ref/fc':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        if "skipped" in r:
            lines.append(f"{r['op']:<30} {r['shape']:<28} skipped: {r['skipped']}")
            continue
        rate = f"{r['fastconv_rate']:.1f} {r['unit']}"
        lines.append(
            f"{r['op']:<30} {r['shape']:<28} {_fmt(r['fastconv_ms'], '.3f', 11)} "
            f"{_fmt(r['torch_ms'], '.3f', 9)} {_fmt(r['reference_ms'], '.2f', 9)} "
            f"{rate:>15} {_fmt(r['torch_over_fastconv'], '.2f', 8)} "
            f"{_fmt(r['reference_over_fastconv'], '.1f', 7)}")
    return "\n".join(lines)


def metadata(threads, repeat, ref_repeat, quick):
    """What the JSON records about the run besides the results."""
    torch = _import_torch()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fastconv": fastconv.__version__,
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "threads": threads,
        "repeat": repeat,
        "reference_repeat": ref_repeat,
        "quick": quick,
        "dtype": "float32",
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def write_json(path, meta, results):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastconv, torch and the reference's BLAS "
                             "(default: fastconv.get_num_threads())")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed calls per op for fastconv and torch "
                             "(default 7, 2 with --quick)")
    parser.add_argument("--ref-repeat", type=int, default=2,
                        help="timed calls of the slow NumPy reference (default 2)")
    parser.add_argument("--quick", action="store_true", help="batch sizes / 16: a smoke run")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"output (default {DEFAULT_JSON})")
    parser.add_argument("--ops", default="",
                        help="comma-separated filters on 'group op shape', e.g. 'pool' or "
                             "'lenet,conv2d fwd'")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds of timed calls fastconv and torch should each reach on "
                             "an op, by up to 10x --repeat calls (default 1; 0 with --quick)")
    parser.add_argument("--no-torch", action="store_true", help="do not time torch")
    parser.add_argument("--resnet20", action="store_true",
                        help="ResNet-20's convolution shapes at batch 128 instead of the speed table")
    args = parser.parse_args(argv)
    threads = args.threads or fastconv.get_num_threads()
    repeat = args.repeat or (2 if args.quick else 7)
    ops = select(resnet20_ops() if args.resnet20 else all_ops(), args.ops)
    if not ops:
        parser.error(f"no op matches --ops {args.ops!r}")
    results = run(ops, threads, repeat, args.ref_repeat, quick=args.quick,
                  use_torch=not args.no_torch, min_time=0 if args.quick else args.min_time)
    meta = metadata(threads, repeat, args.ref_repeat, args.quick)
    print(f"fastconv {meta['fastconv']}, torch {meta['torch']}, {threads} threads, float32, "
          f"best of {repeat} (reference: {args.ref_repeat})")
    print(table(results))
    write_json(args.json, meta, results)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
