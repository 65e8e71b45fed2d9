"""Inference benchmark: batch-1 latency and large-batch images/s of whole models, fastconv
against torch and onnxruntime, each framework in its own process.

Models: LeNet (``nn.lenet("modern")``, (N, 1, 28, 28)) and ResNet-20 (CIFAR, (N, 3, 32, 32))
when ``fastconv.nn.models.resnet20`` exists. Every framework runs the same weights (fastconv's
seed 0): fastconv eager (the model's forward), fastconv compiled (``fastconv.compile``, when it
exists), torch (the same architecture built from ``torch.nn``, under no_grad) and onnxruntime
on the ONNX file ``fastconv.onnx.export`` wrote. float32, eval mode, the same thread count.

Torch's speed differs from process to process, and a framework's thread pool disturbs the
next one's, so each framework runs in a child process of its own, in rounds (the order
rotating from round to round), and each keeps its best round: the lowest median and p99
batch-1 latency and the highest images/s. The children also return their outputs on a fixed
batch, and the table shows how far each is from fastconv eager's.

    python benchmarks/bench_inference.py                  # 2 threads, 5 rounds
    python benchmarks/bench_inference.py --models lenet --rounds 3
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JSON = os.path.join(HERE, "results", "bench_inference.json")
FRAMEWORKS = ("fastconv", "fastconv_compiled", "torch", "onnxruntime")
# (input shape without the batch, large batch): LeNet's 256 as in bench_lenet, ResNet-20's 128
MODELS = {"lenet": ((1, 28, 28), 256), "resnet20": ((3, 32, 32), 128)}


def _builder(name):
    """The model-building function of fastconv.nn.models, or None where it does not exist."""
    from fastconv.nn import models
    if name == "lenet":
        return lambda: models.lenet("modern")
    return getattr(models, name, None)


def _torch_twin(torch, name):
    """The same architecture built from torch.nn, with the same state_dict keys."""
    if name == "lenet":
        from fastconv.nn import models
        return models.lenet("modern", nn=torch.nn)
    from bench_resnet import torch_resnet  # this directory's ResNet-20 twin
    return torch_resnet(torch, int(name[len("resnet"):]))


def available_models():
    return [name for name in MODELS if _builder(name) is not None]


def _fastconv_model(name):
    import fastconv
    fastconv.manual_seed(0)
    return _builder(name)().eval()


def _check_sample(name):
    shape, _ = MODELS[name]
    return np.random.default_rng(1).random((8,) + shape, dtype=np.float32)


# -- the child: one framework, one model -------------------------------------------------------


def _runner(framework, name, onnx_path, threads, max_batch):
    """A callable x -> output for ``framework``, or None where it is not available."""
    shape, _ = MODELS[name]
    if framework in ("fastconv", "fastconv_compiled"):
        import fastconv
        fastconv.set_num_threads(threads)
        model = _fastconv_model(name)
        if framework == "fastconv":
            return model
        if not hasattr(fastconv, "compile"):
            return None
        # large enough for the timed batch and for the check sample
        max_batch = max(max_batch, len(_check_sample(name)))
        return fastconv.compile(model, (max_batch,) + shape, dtype=np.float32, max_batch=max_batch)
    if framework == "torch":
        try:
            import torch
        except ImportError:
            return None
        torch.set_num_threads(threads)
        twin = _torch_twin(torch, name).eval()
        state = _fastconv_model(name).state_dict()
        twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})

        def run_torch(x):
            with torch.no_grad():
                return twin(torch.from_numpy(x)).numpy()
        return run_torch
    if framework == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        return lambda x: session.run(None, {input_name: x})[0]
    raise ValueError(f"unknown framework {framework!r}")


def measure(run, name, latency_calls, throughput_calls, batch):
    """Batch-1 latencies (each call timed alone) and the best batch-``batch`` call."""
    shape, _ = MODELS[name]
    rng = np.random.default_rng(0)
    one = rng.random((1,) + shape, dtype=np.float32)
    many = rng.random((batch,) + shape, dtype=np.float32)
    for _ in range(max(10, latency_calls // 10)):
        run(one)
    times = np.empty(latency_calls)
    for i in range(latency_calls):
        start = time.perf_counter()
        run(one)
        times[i] = time.perf_counter() - start
    run(many)
    best = float("inf")
    for _ in range(throughput_calls):
        start = time.perf_counter()
        run(many)
        best = min(best, time.perf_counter() - start)
    return {"latency_median_us": float(np.median(times)) * 1e6,
            "latency_p99_us": float(np.percentile(times, 99)) * 1e6,
            "images_per_s": batch / best}


def child(framework, name, onnx_path, threads, latency_calls, throughput_calls, batch):
    """One round of one framework, as a dict (None where the framework is not available)."""
    run = _runner(framework, name, onnx_path, threads, batch)
    if run is None:
        return None
    result = measure(run, name, latency_calls, throughput_calls, batch)
    result["check_output"] = np.asarray(run(_check_sample(name))).tolist()
    return result


# -- the parent: rounds of children ------------------------------------------------------------


def _spawn(framework, name, onnx_path, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", framework, "--models", name,
           "--onnx", onnx_path, "--threads", str(args.threads), "--latency-calls",
           str(args.latency_calls), "--throughput-calls", str(args.throughput_calls),
           "--batch-size", str(args.batch_size or MODELS[name][1])]
    import fastconv
    # The fastconv this process runs (installed or a checkout), and every library's pool
    # (OpenMP, OpenBLAS, MKL) sized like the framework's own.
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{framework} on {name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _available(framework, onnx_path):
    import importlib.util

    import fastconv
    if framework == "fastconv_compiled":
        return hasattr(fastconv, "compile")
    if framework == "torch":
        return importlib.util.find_spec("torch") is not None
    if framework == "onnxruntime":
        return bool(onnx_path) and importlib.util.find_spec("onnxruntime") is not None
    return True


def run(args):
    """Every model and framework, ``args.rounds`` rounds; returns the result rows."""
    import fastconv
    import fastconv.onnx
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            shape, default_batch = MODELS[name]
            onnx_path = os.path.join(tmp, f"{name}.onnx")
            try:
                fastconv.onnx.export(_fastconv_model(name), onnx_path, (1,) + shape)
            except ImportError:
                onnx_path = ""  # no onnx package: onnxruntime cannot have a file either
            frameworks = [f for f in FRAMEWORKS if _available(f, onnx_path)]
            rounds = {f: [] for f in frameworks}
            for r in range(args.rounds):
                shift = r % len(frameworks)
                for framework in frameworks[shift:] + frameworks[:shift]:
                    result = _spawn(framework, name, onnx_path, args)
                    if result is not None:
                        rounds[framework].append(result)
                if args.progress:
                    print(f"  {name}: round {r + 1}/{args.rounds} done", file=sys.stderr)
            reference = np.asarray(rounds["fastconv"][0]["check_output"])
            for framework in FRAMEWORKS:
                row = {"model": name, "framework": framework, "threads": args.threads,
                       "batch": args.batch_size or default_batch, "rounds": len(rounds.get(framework, ()))}
                results = rounds.get(framework)
                if not results:
                    row.update(latency_median_us=None, latency_p99_us=None, images_per_s=None,
                               max_abs_diff_vs_eager=None)
                else:
                    row["latency_median_us"] = min(r["latency_median_us"] for r in results)
                    row["latency_p99_us"] = min(r["latency_p99_us"] for r in results)
                    row["images_per_s"] = max(r["images_per_s"] for r in results)
                    row["max_abs_diff_vs_eager"] = float(np.abs(
                        np.asarray(results[0]["check_output"]) - reference).max())
                rows.append(row)
    return rows


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(rows):
    header = (f"{'model':9} {'framework':18} {'b1 median us':>12} {'b1 p99 us':>10} {'images/s':>10} "
              f"{'vs ort (b1)':>11} {'vs ort (img/s)':>14} {'max |diff|':>10}")
    lines = [header, "-" * len(header)]
    ort = {r["model"]: r for r in rows if r["framework"] == "onnxruntime"}
    for r in rows:
        base = ort.get(r["model"], {})
        b1 = (None if r["latency_median_us"] is None or not base.get("latency_median_us")
              else r["latency_median_us"] / base["latency_median_us"])
        tput = (None if r["images_per_s"] is None or not base.get("images_per_s")
                else r["images_per_s"] / base["images_per_s"])
        lines.append(f"{r['model']:9} {r['framework']:18} {_fmt(r['latency_median_us'], '.1f'):>12} "
                     f"{_fmt(r['latency_p99_us'], '.1f'):>10} {_fmt(r['images_per_s'], ',.0f'):>10} "
                     f"{_fmt(b1, '.2f'):>11} {_fmt(tput, '.2f'):>14} "
                     f"{_fmt(r['max_abs_diff_vs_eager'], '.1e'):>10}")
    return "\n".join(lines)


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def metadata(args):
    import fastconv
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fastconv": fastconv.__version__, "numpy": np.__version__, "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"), "onnx": _version("onnx"),
        "compiled": hasattr(fastconv, "compile"), "threads": args.threads, "rounds": args.rounds,
        "latency_calls": args.latency_calls, "throughput_calls": args.throughput_calls,
        "dtype": "float32", "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads of every framework (default 2)")
    parser.add_argument("--models", default=",".join(available_models()),
                        help="comma-separated, of lenet, resnet20 (default: those that exist)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, one process per framework each (5)")
    parser.add_argument("--latency-calls", type=int, default=2000, help="timed batch-1 calls per round (2000)")
    parser.add_argument("--throughput-calls", type=int, default=10,
                        help="timed large-batch calls per round (10)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="the large batch (default: 256 for LeNet, 128 for ResNet-20)")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"output (default {DEFAULT_JSON})")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress lines")
    parser.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--onnx", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in available_models()]
    if unknown:
        parser.error(f"unknown or not yet existing model(s) {unknown}; available: {available_models()}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        (name,) = args.models
        print(json.dumps(child(args.child, name, args.onnx, args.threads, args.latency_calls,
                               args.throughput_calls, args.batch_size)))
        return
    rows = run(args)
    meta = metadata(args)
    print(f"Inference, float32, {args.threads} threads, best of {args.rounds} rounds (one process per "
          f"framework and round); torch {meta['torch']}, onnxruntime {meta['onnxruntime']}; "
          f"load average {meta['load_average']}")
    print(table(rows))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
