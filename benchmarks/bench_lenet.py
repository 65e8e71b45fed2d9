"""LeNet benchmark: training and inference images/s, fastconv against torch and the reference.

The same LeNet (both variants, ``fastconv.nn.lenet``) is timed in one process, interleaved,
best of N (benchmarks/_timing.py), float32, on the same number of threads:

- fastconv: the compiled kernels (the default backend);
- reference: the same fastconv model on ``fastconv.backend("reference")``, the NumPy
  im2col + matmul baseline (its BLAS on the same number of threads);
- torch (when importable): ``nn.lenet(variant, torch.nn)`` with the same weights.

A training step is forward, cross-entropy, zero_grad, backward, SGD (momentum 0.9) step on
one batch; inference is a forward pass in eval mode (torch: under no_grad). Prints a table
and writes JSON; ``--profile`` adds a per-layer breakdown of fastconv's training step.

    python benchmarks/bench_lenet.py                    # batch 256, 2 threads, both variants
    python benchmarks/bench_lenet.py --profile --variants modern
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import best_of, torch_step_fns  # noqa: E402

import fastconv  # noqa: E402
from fastconv import nn, optim  # noqa: E402
from fastconv._threads import blas_controller  # noqa: E402

DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_lenet.json")
COMPETITORS = ("fastconv", "torch", "reference")


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _batch(n):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def _fastconv_fns(variant, x, y, backend):
    """(train step, inference) callables of a fastconv LeNet on ``backend``."""
    fastconv.manual_seed(0)
    model, infer_model = nn.lenet(variant), nn.lenet(variant).eval()
    infer_model.load_state_dict(model.state_dict())
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def train():
        with fastconv.backend(backend):
            loss_fn(model(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()

    def infer():
        with fastconv.backend(backend):
            infer_model(x)
    return train, infer


def _torch_fns(torch, variant, x, y):
    fastconv.manual_seed(0)
    state = {k: torch.from_numpy(v.copy()) for k, v in nn.lenet(variant).state_dict().items()}
    model, infer_model = nn.lenet(variant, torch.nn), nn.lenet(variant, torch.nn)
    model.load_state_dict(state)
    infer_model.load_state_dict(state)
    return torch_step_fns(torch, model, infer_model, x, y, lr=0.01, momentum=0.9)


def run(variants=("modern", "d2l"), batch=256, threads=2, repeat=15, ref_repeat=3, use_torch=True,
        min_time=0.0):
    """Time every variant and mode; returns a list of result dicts (one per variant and mode)."""
    torch = _import_torch() if use_torch else None
    if torch is not None:
        torch.set_num_threads(threads)
    x, y = _batch(batch)
    results = []
    with fastconv.threads(threads), blas_controller().limit(limits=threads, user_api="blas"):
        for variant in variants:
            fns = {"fastconv": _fastconv_fns(variant, x, y, "compiled"),
                   "reference": _fastconv_fns(variant, x, y, "reference")}
            if torch is not None:
                fns["torch"] = _torch_fns(torch, variant, x, y)
            for mode, index in (("train", 0), ("inference", 1)):
                best = best_of({name: pair[index] for name, pair in fns.items()}, repeat=repeat,
                               repeats={"reference": ref_repeat}, warmup=2, min_time=min_time)
                row = {"variant": variant, "mode": mode, "batch": batch}
                for name in COMPETITORS:
                    seconds = best.get(name)
                    row[f"{name}_ms"] = None if seconds is None else seconds * 1e3
                    row[f"{name}_images_per_s"] = None if seconds is None else batch / seconds
                for other in ("torch", "reference"):
                    row[f"fastconv_over_{other}"] = (None if best.get(other) is None
                                                     else best[other] / best["fastconv"])
                results.append(row)
    return results


def profile(variant="modern", batch=256, threads=2, repeat=15):
    """Best time of each layer's forward and backward within fastconv's training step.

    Returns a list of ``(layer, forward_ms, backward_ms)``; the last row is the loss and
    optimizer (in the forward and backward columns).
    """
    x, y = _batch(batch)
    fastconv.manual_seed(0)
    model = nn.lenet(variant)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    layers = list(model)
    fwd = np.full(len(layers) + 1, np.inf)
    bwd = np.full(len(layers) + 1, np.inf)
    with fastconv.threads(threads), blas_controller().limit(limits=threads, user_api="blas"):
        for _ in range(repeat + 2):
            times_f, times_b, h = [], [], x
            for layer in layers:
                start = time.perf_counter()
                h = layer(h)
                times_f.append(time.perf_counter() - start)
            start = time.perf_counter()
            loss_fn(h, y)
            opt.zero_grad()
            times_f.append(time.perf_counter() - start)
            g = loss_fn.backward()
            for i, layer in reversed(list(enumerate(layers))):
                layer.requires_input_grad = i > 0
                start = time.perf_counter()
                g = layer.backward(g)
                times_b.append(time.perf_counter() - start)
            start = time.perf_counter()
            opt.step()
            times_b = times_b[::-1] + [time.perf_counter() - start]
            fwd = np.minimum(fwd, times_f)
            bwd = np.minimum(bwd, times_b)
    names = [f"{i} {type(layer).__name__}" for i, layer in enumerate(layers)] + ["loss / SGD step"]
    return [(name, f * 1e3, b * 1e3) for name, f, b in zip(names, fwd, bwd)]


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(results):
    header = (f"{'variant':8} {'mode':9} {'fastconv img/s':>15} {'torch img/s':>12} {'reference img/s':>16} "
              f"{'fc/torch':>9} {'fc/ref':>8}")
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(f"{r['variant']:8} {r['mode']:9} {_fmt(r['fastconv_images_per_s'], ',.0f'):>15} "
                     f"{_fmt(r['torch_images_per_s'], ',.0f'):>12} {_fmt(r['reference_images_per_s'], ',.0f'):>16} "
                     f"{_fmt(r['fastconv_over_torch'], '.2f'):>9} {_fmt(r['fastconv_over_reference'], '.1f'):>8}")
    return "\n".join(lines)


def profile_table(rows):
    lines = [f"{'layer':16} {'forward ms':>10} {'backward ms':>11}"]
    lines += [f"{name:16} {f:10.3f} {b:11.3f}" for name, f, b in rows]
    lines.append(f"{'total':16} {sum(r[1] for r in rows):10.3f} {sum(r[2] for r in rows):11.3f}")
    return "\n".join(lines)


def metadata(threads, batch, repeat, ref_repeat):
    torch = _import_torch()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fastconv": fastconv.__version__, "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "threads": threads, "batch": batch, "repeat": repeat, "reference_repeat": ref_repeat,
        "dtype": "float32", "optimizer": "SGD(lr=0.01, momentum=0.9)",
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for all three (default 2)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--variants", default="modern,d2l", help="comma-separated (default modern,d2l)")
    parser.add_argument("--repeat", type=int, default=15, help="timed steps of fastconv and torch (default 15)")
    parser.add_argument("--ref-repeat", type=int, default=3, help="timed steps of the reference (default 3)")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds of timed steps each competitor should reach, by up to 10x its "
                             "repeat count: more chances of a quiet moment on a busy machine (default 1)")
    parser.add_argument("--no-torch", action="store_true", help="do not time torch")
    parser.add_argument("--profile", action="store_true", help="also time fastconv's training step per layer")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"output (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    results = run(variants, args.batch_size, args.threads, args.repeat, args.ref_repeat,
                  use_torch=not args.no_torch, min_time=args.min_time)
    meta = metadata(args.threads, args.batch_size, args.repeat, args.ref_repeat)
    meta["min_time"] = args.min_time
    print(f"LeNet, batch {args.batch_size}, float32, {args.threads} threads, best of {args.repeat} "
          f"(reference: {args.ref_repeat}); torch {meta['torch']}; load average {meta['load_average']}")
    print(table(results))
    out = {"meta": meta, "results": results}
    if args.profile:
        out["profile"] = {}
        for variant in variants:
            rows = profile(variant, args.batch_size, args.threads, args.repeat)
            out["profile"][variant] = [dict(layer=n, forward_ms=f, backward_ms=b) for n, f, b in rows]
            print(f"\nfastconv training step per layer, {variant} (best of {args.repeat}):")
            print(profile_table(rows))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
