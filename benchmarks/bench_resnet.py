"""ResNet-20 benchmark: training and inference images/s, fastconv against torch.

The CIFAR ResNet-20 of ``fastconv.nn.models`` and its torch twin (the same architecture and
names, built by ``models.cifar_resnet(20, nn=torch.nn, block=...)`` with the same weights)
are timed in one process, interleaved, best of N (benchmarks/_timing.py), float32, on the
same number of threads, at each batch size. A training step is forward, cross-entropy,
zero_grad, backward and an SGD step (momentum 0.9, weight decay 5e-4) in train mode;
inference is a forward pass in eval mode (torch under no_grad), and, when this fastconv has
``nn.fuse``, also with the BatchNorms folded into the convolutions, eager and through
``fastconv.compile`` (one nogil call per batch).

``--profile`` adds fastconv's training step by layer type: each convolution shape (with its
GFLOP/s, 2*N*K*C*R*S*Ho*Wo per pass; a backward pass counts one pass per gradient it
computes), BatchNorm, ReLU, the residual adds, pooling, linear, the loss (forward and
backward, in the forward column) and the optimizer (zero_grad and step, in the backward
column). Each
module's forward and backward are timed on their own (a container's time is what its children
do not account for: for a BasicBlock, the add of the two paths), best of N per entry.
Where a BatchNorm2d runs with its ReLU (and a block's residual add) in the same pass
(nn.layers.bn_relu), that time is BatchNorm2d's; a block's backward sums its two paths in
conv1's input-gradient pass, and that time is the convolution's.

    python benchmarks/bench_resnet.py                        # batches 128 and 32, 2 threads
    python benchmarks/bench_resnet.py --batch-sizes 128 --profile
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections import OrderedDict, defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import best_of, torch_step_fns  # noqa: E402

import fastconv  # noqa: E402
from fastconv import nn, optim  # noqa: E402
from fastconv._threads import blas_controller  # noqa: E402
from fastconv.nn import models  # noqa: E402

DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_resnet.json")
SGD = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_resnet(torch, depth=20):
    """The torch twin of ``models.cifar_resnet(depth)``: same construction, same keys."""

    class BasicBlock(torch.nn.Module):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(planes)
            self.relu = torch.nn.ReLU(inplace=True)
            self.conv2 = torch.nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = torch.nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += x if self.downsample is None else self.downsample(x)
            return self.relu(out)

    return models.cifar_resnet(depth, nn=torch.nn, block=BasicBlock)


def _batch(n):
    rng = np.random.default_rng(0)
    return rng.random((n, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, n)


def _fastconv_fns(x, y, state):
    model, infer_model = models.resnet20(), models.resnet20()
    model.load_state_dict(state)
    infer_model.load_state_dict(state)
    infer_model.eval()
    opt = optim.SGD(model.parameters(), **SGD)
    loss_fn = nn.CrossEntropyLoss()

    def train():
        loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()

    fns = {"train": train, "inference": lambda: infer_model(x)}
    fuse = getattr(nn, "fuse", None)
    if fuse is not None:
        fused = fuse(infer_model)
        fns["inference_fused"] = lambda: fused(x)
        compiled = fastconv.compile(fused, x.shape)
        out = np.empty((len(x),) + compiled.output_shape, np.float32)
        fns["inference_compiled"] = lambda: compiled(x, out=out)
    return fns


def _torch_fns(torch, x, y, state):
    model, infer_model = torch_resnet(torch), torch_resnet(torch)
    tstate = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    model.load_state_dict(tstate)
    infer_model.load_state_dict(tstate)
    train, infer = torch_step_fns(torch, model, infer_model, x, y, **SGD)
    return {"train": train, "inference": infer}


def run(batches=(128, 32), threads=2, repeat=7, use_torch=True, min_time=0.0):
    """Time each batch size and mode; a list of result dicts."""
    torch = _import_torch() if use_torch else None
    if torch is not None:
        torch.set_num_threads(threads)
    fastconv.manual_seed(0)
    state = {k: np.array(v) for k, v in models.resnet20().state_dict().items()}
    results = []
    with fastconv.threads(threads), blas_controller().limit(limits=threads, user_api="blas"):
        for batch in batches:
            x, y = _batch(batch)
            ours = _fastconv_fns(x, y, state)
            theirs = _torch_fns(torch, x, y, state) if torch is not None else {}
            for mode in ("train", "inference"):
                fns = {"fastconv": ours[mode]}
                if mode == "inference" and "inference_fused" in ours:
                    fns["fastconv_fused"] = ours["inference_fused"]
                    fns["fastconv_compiled"] = ours["inference_compiled"]
                if mode in theirs:
                    fns["torch"] = theirs[mode]
                best = best_of(fns, repeat=repeat, warmup=1, min_time=min_time)
                row = {"model": "resnet20", "mode": mode, "batch": batch}
                for name in ("fastconv", "fastconv_fused", "fastconv_compiled", "torch"):
                    seconds = best.get(name)
                    row[f"{name}_ms"] = None if seconds is None else seconds * 1e3
                    row[f"{name}_images_per_s"] = None if seconds is None else batch / seconds
                for name in ("fastconv", "fastconv_fused", "fastconv_compiled"):
                    row[f"{name}_over_torch"] = (None if name not in best or "torch" not in best
                                                 else best["torch"] / best[name])
                results.append(row)
    return results


# -- profile ------------------------------------------------------------------------------------

def _conv_flops(conv, x_shape, out_shape):
    n, _, _, _ = x_shape
    k, c, r, s = conv.weight.shape
    return 2 * n * k * c * r * s * out_shape[2] * out_shape[3]


def _category(module, x_shape):
    if isinstance(module, nn.Conv2d):
        k, c, r, s = module.weight.shape
        return f"conv {r}x{s} {c}->{k} s{module.stride[0]} @{x_shape[2]}x{x_shape[3]}"
    if isinstance(module, nn.BatchNorm2d):
        return "BatchNorm2d"
    if isinstance(module, nn.ReLU):
        return "ReLU"
    if isinstance(module, models.BasicBlock):
        return "residual add"
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AvgPool2d)):
        return "pooling"
    if isinstance(module, nn.Linear):
        return "linear"
    return "other (flatten, containers)"


def _instrument(model, record):
    """Wrap every module's forward and backward to add its exclusive seconds to ``record``:
    ``record[(category, direction)]``; conv shapes also count their FLOPs."""
    stack = []  # seconds spent in children of the frames being timed
    info = {}

    def timed(module, direction, fn):
        def wrapper(arg, *args, **kwargs):
            stack.append(0.0)
            start = time.perf_counter()
            out = fn(arg, *args, **kwargs)
            elapsed = time.perf_counter() - start
            children = stack.pop()
            if stack:
                stack[-1] += elapsed
            if direction == "forward" or id(module) not in info:  # a module first seen backward
                info[id(module)] = (_category(module, arg.shape), arg.shape, out.shape)
            category, x_shape, out_shape = info[id(module)]
            entry = record[(category, direction)]
            entry["seconds"] += elapsed - children
            if isinstance(module, nn.Conv2d):
                passes = 1 if direction == "forward" else 1 + bool(module.requires_input_grad)
                entry["flops"] += passes * _conv_flops(module, x_shape, out_shape)
                entry["calls"] += 1
            return out
        return wrapper

    for module in model.modules():
        # BatchNorm's _forward/_backward and Conv2d's _backward: what bn_relu and BasicBlock
        # call (the ReLU and adds fused in); forward and backward only delegate to them
        for name in ("forward", "backward", "_forward", "_backward"):
            if not hasattr(type(module), name) or hasattr(type(module), "_" + name):
                continue
            # the class's method, so that instrumenting again replaces the wrapper
            method = getattr(type(module), name).__get__(module)
            object.__setattr__(module, name, timed(module, name.lstrip("_"), method))


def profile(batch=128, threads=2, repeat=7):
    """Best time per layer type and direction within fastconv's training step: a list of dicts
    ``{"layer", "forward_ms", "backward_ms", "calls", "forward_gflops", "backward_gflops"}``."""
    x, y = _batch(batch)
    fastconv.manual_seed(0)
    model = models.resnet20()
    opt = optim.SGD(model.parameters(), **SGD)
    loss_fn = nn.CrossEntropyLoss()
    best = {}
    with fastconv.threads(threads), blas_controller().limit(limits=threads, user_api="blas"):
        for _ in range(repeat + 1):
            record = defaultdict(lambda: {"seconds": 0.0, "flops": 0, "calls": 0})
            _instrument(model, record)
            start = time.perf_counter()
            loss_fn(model(x), y)
            g = loss_fn.backward()
            record[("loss", "forward")]["seconds"] += time.perf_counter() - start - sum(
                v["seconds"] for (c, d), v in record.items() if d == "forward" and c != "loss")
            model.backward(g)
            start = time.perf_counter()
            opt.zero_grad(set_to_none=False)
            opt.step()
            record[("SGD step", "backward")]["seconds"] += time.perf_counter() - start
            for key, value in record.items():
                if key not in best or value["seconds"] < best[key]["seconds"]:
                    best[key] = dict(value)
    layers = OrderedDict()
    for (category, direction), value in sorted(best.items(), key=lambda kv: _order(kv[0][0])):
        row = layers.setdefault(category, {"layer": category, "forward_ms": 0.0, "backward_ms": 0.0,
                                           "calls": 0, "forward_gflops": None, "backward_gflops": None})
        row[f"{direction}_ms"] = value["seconds"] * 1e3
        if value["flops"]:
            row[f"{direction}_gflops"] = value["flops"] / value["seconds"] / 1e9
            row["calls"] = value["calls"]
    return list(layers.values())


def _order(category):
    rank = ["conv", "BatchNorm2d", "ReLU", "residual add", "pooling", "linear", "other", "loss", "SGD"]
    return next(i for i, prefix in enumerate(rank + [""]) if category.startswith(prefix)), category


# -- output -------------------------------------------------------------------------------------

def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(results):
    header = (f"{'mode':10} {'batch':>5} {'fastconv img/s':>15} {'fused img/s':>12} "
              f"{'compiled img/s':>15} {'torch img/s':>12} {'fc/torch':>9} {'fused/torch':>12} "
              f"{'compiled/torch':>15}")
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(f"{r['mode']:10} {r['batch']:5d} {_fmt(r['fastconv_images_per_s'], ',.0f'):>15} "
                     f"{_fmt(r['fastconv_fused_images_per_s'], ',.0f'):>12} "
                     f"{_fmt(r.get('fastconv_compiled_images_per_s'), ',.0f'):>15} "
                     f"{_fmt(r['torch_images_per_s'], ',.0f'):>12} {_fmt(r['fastconv_over_torch'], '.2f'):>9} "
                     f"{_fmt(r['fastconv_fused_over_torch'], '.2f'):>12} "
                     f"{_fmt(r.get('fastconv_compiled_over_torch'), '.2f'):>15}")
    return "\n".join(lines)


def profile_table(rows):
    lines = [f"{'layer type':34} {'calls':>5} {'fwd ms':>8} {'GFLOP/s':>8} {'bwd ms':>8} {'GFLOP/s':>8}"]
    for r in rows:
        lines.append(f"{r['layer']:34} {r['calls'] or '':>5} {r['forward_ms']:8.2f} "
                     f"{_fmt(r['forward_gflops'], '.1f'):>8} {r['backward_ms']:8.2f} "
                     f"{_fmt(r['backward_gflops'], '.1f'):>8}")
    lines.append(f"{'total':34} {'':>5} {sum(r['forward_ms'] for r in rows):8.2f} {'':>8} "
                 f"{sum(r['backward_ms'] for r in rows):8.2f}")
    return "\n".join(lines)


def metadata(threads, batches, repeat):
    torch = _import_torch()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fastconv": fastconv.__version__, "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "threads": threads, "batches": list(batches), "repeat": repeat, "dtype": "float32",
        "optimizer": "SGD(lr=0.05, momentum=0.9, weight_decay=5e-4)", "fused": hasattr(nn, "fuse"),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    parser.add_argument("--batch-sizes", default="128,32", help="comma-separated (default 128,32)")
    parser.add_argument("--repeat", type=int, default=7, help="timed calls of each (default 7)")
    parser.add_argument("--min-time", type=float, default=0.0,
                        help="seconds of timed calls each should reach, by up to 10x --repeat")
    parser.add_argument("--no-torch", action="store_true", help="do not time torch")
    parser.add_argument("--profile", action="store_true",
                        help="also time fastconv's training step by layer type (first batch size)")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"output (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batch_sizes.split(",") if b]
    if not batches or min(batches) < 1 or args.repeat < 1 or args.threads < 1:
        parser.error("--batch-sizes, --repeat and --threads must be positive")
    results = run(batches, args.threads, args.repeat, use_torch=not args.no_torch, min_time=args.min_time)
    meta = metadata(args.threads, batches, args.repeat)
    print(f"ResNet-20 (CIFAR, 32x32), float32, {args.threads} threads, best of {args.repeat}; "
          f"torch {meta['torch']}; load average {meta['load_average']}")
    print(table(results))
    out = {"meta": meta, "results": results}
    if args.profile:
        rows = profile(batches[0], args.threads, args.repeat)
        out["profile"] = {"batch": batches[0], "rows": rows}
        print(f"\nfastconv training step by layer type, batch {batches[0]} (best of {args.repeat}):")
        print(profile_table(rows))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
