"""Data-parallel training over MPI: images/s and the share of a step spent reducing gradients.

Each configuration (ranks x threads, deterministic or fast mode) runs ``fit`` on random data
of LeNet (global batch 256) and ResNet-20 (global batch 128) in its own ``mpiexec`` job; the
configurations are interleaved over rounds and the best round is kept. "1 process" is plain
``python`` (no MPI: the leaf-tree gradient of fit, on every thread). "reduce" is the time of
the gradient reduction (deterministic: Allgatherv of the subtree sums and the tree's top;
fast: Allreduce) as a share of the step; "leaf cost" (1 process only) is fit's step against
a plain torch-style loop on the whole batch (no leaves) in the same process.

    python benchmarks/bench_distributed.py                          # 1x2 against 2x1 threads
    python benchmarks/bench_distributed.py --configs 1x16 2x8 4x4 8x2 16x1 --rounds 2
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

MODELS = {"lenet": (256, (1, 28, 28)), "resnet20": (128, (3, 32, 32))}


def _model(name):
    from fastconv import nn
    return nn.lenet() if name == "lenet" else nn.models.resnet20()


def worker(name, mode, steps):
    """Time ``steps`` fit steps (after one warm-up epoch); rank 0 prints one JSON line."""
    import fastconv
    from fastconv import nn, optim
    batch, shape = MODELS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch * steps,) + shape).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    fastconv.manual_seed(0)
    model = _model(name)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    reduce_seconds = [0.0]
    distributed = None
    if mode != "single":
        from fastconv import distributed
        optimizer = distributed.DistributedOptimizer(optimizer, deterministic=mode == "det")
        for method in ("_reduce_plan", "_sum_ranks"):
            original = getattr(optimizer, method)

            def timed(*args, _original=original):
                start = time.perf_counter()
                _original(*args)
                reduce_seconds[0] += time.perf_counter() - start
            setattr(optimizer, method, timed)
    fit = lambda: model.fit(x, y, loss=nn.CrossEntropyLoss(), optimizer=optimizer, batch_size=batch,
                            shuffle=False, verbose=0)
    fit()  # warm-up: workspaces, first-touch pages
    reduce_seconds[0] = 0.0
    start = time.perf_counter()
    fit()
    seconds = time.perf_counter() - start
    result = {"images_per_s": batch * steps / seconds, "step_ms": 1e3 * seconds / steps,
              "reduce_share": reduce_seconds[0] / seconds}
    if mode == "single":  # the same steps as a plain loop on the whole batch, no leaves
        loss = nn.CrossEntropyLoss()
        plain = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            for b in range(0, len(x), batch):
                out = model(x[b:b + batch])
                loss(out, y[b:b + batch])
                plain.zero_grad()
                model.backward(loss.backward())
                plain.step()
            best = min(best, time.perf_counter() - start)
        result["leaf_cost"] = seconds / best
    if distributed is None or distributed.rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)


def _run(config, name, mode, steps):
    ranks, threads = config
    here = os.path.abspath(__file__)
    # the checkout's fastconv first, as `python benchmarks/bench_distributed.py` from it sees
    path = [os.path.dirname(os.path.dirname(here))] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONPATH=os.pathsep.join(path))
    args = [sys.executable, here, "--worker", name, mode, str(steps)]
    if mode != "single":
        mpiexec = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
        # bound to no core: the ranks' OpenMP threads must not share one
        args = [mpiexec, "-n", str(ranks), "--oversubscribe", "--bind-to", "none"] + args
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1200)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "MODE", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--configs", nargs="+", default=["1x2", "2x1"],
                        help="RANKSxTHREADS; 1xT runs one plain process (default: 1x2 2x1)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=None, help="steps per timing (default 20 LeNet, 4 ResNet-20)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                       "results", "distributed.json"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs]
    jobs = [(c, name, mode) for name in args.models for c in configs
            for mode in (("single",) if c[0] == 1 else ("det", "fast"))]
    best = {}
    for _ in range(args.rounds):  # interleaved: every job once per round
        for config, name, mode in jobs:
            steps = args.steps or (20 if name == "lenet" else 4)
            r = _run(config, name, mode, steps)
            key = (config, name, mode)
            if key not in best or r["images_per_s"] > best[key]["images_per_s"]:
                best[key] = r
    rows = []
    header = f"{'model':10} {'ranks x threads':>15} {'mode':>6} {'img/s':>9} {'step ms':>8} {'reduce':>7} {'vs 1 proc':>9} {'det/fast':>9} {'leaf cost':>9}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        single = next((best[k] for k in best if k[1] == name and k[2] == "single"), None)
        for (config, model, mode), r in best.items():
            if model != name:
                continue
            fast = best.get((config, model, "fast"))
            ratio = r["images_per_s"] / single["images_per_s"] if single else None
            det_fast = r["step_ms"] / fast["step_ms"] if mode == "det" and fast else None
            row = dict(model=name, ranks=config[0], threads=config[1], mode=mode, vs_single=ratio,
                       det_over_fast=det_fast, **r)
            rows.append(row)
            fmt = lambda v, f: "" if v is None else format(v, f)
            print(f"{name:10} {f'{config[0]} x {config[1]}':>15} {mode:>6} {r['images_per_s']:9.0f} "
                  f"{r['step_ms']:8.2f} {fmt(r['reduce_share'] * 100 if mode != 'single' else None, '6.1f')}% "
                  f"{fmt(ratio, '9.3f')} {fmt(det_fast, '9.3f')} {fmt(r.get('leaf_cost'), '9.3f')}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                   "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                   "rounds": args.rounds, "rows": rows}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
