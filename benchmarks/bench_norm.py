"""BatchNorm2d benchmark: training forward + backward (and eval forward), fastconv against torch.

Both sides run the layer as training does: fastconv's ``BatchNorm2d`` forward then
``backward`` (grad_input, grad_weight, grad_bias), torch's ``nn.BatchNorm2d`` forward then
autograd's backward into the input and the parameters. Same process, interleaved, best of N
(benchmarks/_timing.py), float32, the same thread count for both. Prints a table and
writes JSON.

    python benchmarks/bench_norm.py                # ResNet-20's shapes at batch 128, and one large
    python benchmarks/bench_norm.py --threads 1 --repeat 20

GB/s counts each array once: x read and y written by the forward; grad_output and x read
and grad_input written by the backward (5 arrays for forward + backward, 2 for eval).
Ratios are torch / fastconv: above 1, fastconv is faster.
"""
import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import best_of  # noqa: E402

import fastconv  # noqa: E402
from fastconv import nn  # noqa: E402

DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                            "bench_norm.json")
# ResNet-20's three stages at batch 128, and a ResNet-18-sized layer.
SHAPES = [(128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8), (32, 64, 56, 56)]


def _cases(shape, torch):
    """{mode: {framework: callable}} and the bytes each mode moves."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    g = rng.standard_normal(shape, dtype=np.float32)
    ours = nn.BatchNorm2d(shape[1])

    def fc_train():
        ours.train()
        ours(x)
        ours.backward(g)

    def fc_eval():
        ours.eval()
        ours(x)

    cases = {"train fwd+bwd": {"fastconv": fc_train}, "eval fwd": {"fastconv": fc_eval}}
    if torch is not None:
        theirs = torch.nn.BatchNorm2d(shape[1])
        tx = torch.from_numpy(x).requires_grad_(True)
        tg = torch.from_numpy(g)

        def torch_train():
            theirs.train()
            tx.grad = None
            theirs(tx).backward(tg)

        def torch_eval():
            theirs.eval()
            with torch.no_grad():
                theirs(tx)

        cases["train fwd+bwd"]["torch"] = torch_train
        cases["eval fwd"]["torch"] = torch_eval
    size = x.nbytes
    return cases, {"train fwd+bwd": 5 * size, "eval fwd": 2 * size}


def run(shapes=SHAPES, threads=None, repeat=15, use_torch=True, min_time=0.5):
    """Time every shape and mode; the JSON's "results" (a list of dicts)."""
    threads = threads or fastconv.get_num_threads()
    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            torch = None
    if torch is not None:
        torch.set_num_threads(threads)
    results = []
    with fastconv.threads(threads):
        for shape in shapes:
            cases, work = _cases(shape, torch)
            for mode, fns in cases.items():
                best = best_of(fns, repeat=repeat, min_time=min_time)
                fc = best["fastconv"]
                t = best.get("torch")
                results.append({
                    "shape": list(shape), "mode": mode, "bytes": work[mode],
                    "fastconv_ms": fc * 1e3, "fastconv_gbps": work[mode] / fc * 1e-9,
                    "torch_ms": None if t is None else t * 1e3,
                    "torch_gbps": None if t is None else work[mode] / t * 1e-9,
                    "torch_over_fastconv": None if t is None else t / fc})
    return results


def _fmt(value, spec, width):
    return f"{'-' if value is None else format(value, spec):>{width}}"


def table(results):
    head = (f"{'shape':<20} {'mode':<14} {'fastconv ms':>11} {'GB/s':>6} {'torch ms':>9} "
            f"{'GB/s':>6} {'torch/fc':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{str(tuple(r['shape'])):<20} {r['mode']:<14} {r['fastconv_ms']:>11.3f} "
                     f"{r['fastconv_gbps']:>6.1f} {_fmt(r['torch_ms'], '.3f', 9)} "
                     f"{_fmt(r['torch_gbps'], '.1f', 6)} {_fmt(r['torch_over_fastconv'], '.2f', 8)}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastconv and torch (default fastconv.get_num_threads())")
    parser.add_argument("--repeat", type=int, default=15, help="timed calls per case (default 15)")
    parser.add_argument("--min-time", type=float, default=0.5,
                        help="seconds of timed calls per case, by up to 10x --repeat (default 0.5)")
    parser.add_argument("--no-torch", action="store_true", help="do not time torch")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"output (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    threads = args.threads or fastconv.get_num_threads()
    results = run(SHAPES, threads, args.repeat, not args.no_torch, args.min_time)
    print(f"fastconv {fastconv.__version__}, {threads} threads, float32, best of {args.repeat}")
    print(table(results))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "threads": threads, "repeat": args.repeat, "machine": platform.machine(),
            "cpu_count": os.cpu_count()}
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
