"""Portable kernels against CPU dispatch and FASTCONV_NATIVE=1 on the hand-written loops.

Builds the current tree twice, out of place (two copies of one snapshot under a temporary
directory, each built with ``setup.py build_ext --inplace``): the default build, which also
carries the x86-64-v3/v4 variants of the hot loops, and a FASTCONV_NATIVE=1 (-march=native)
build. It then times direct convolution, im2col/col2im and pooling, plus one GEMM-bound
convolution as a control, in worker processes that alternate between three configurations:
``portable`` (the default build with FASTCONV_CPU=generic), ``dispatched`` (the same build,
variants chosen at import) and ``native``. Best of N; prints a table and writes JSON.

    python scripts/compare_native.py [--rounds 5] [--threads 2] [--clock wall|cpu] [--json F]

Wall-clock times on a shared machine are noisy: compare the ratio column, and rerun if a
control (GEMM) ratio strays far from 1. ``--clock cpu --threads 1`` times the calling
thread's CPU time instead, which other processes' load barely moves.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDS = {"default": {"FASTCONV_NATIVE": "0"}, "native": {"FASTCONV_NATIVE": "1"}}
# configuration: (build, environment of the worker)
CONFIGS = {
    "portable": ("default", {"FASTCONV_CPU": "generic"}),
    "dispatched": ("default", {"FASTCONV_CPU": ""}),
    "native": ("native", {"FASTCONV_CPU": ""}),
}


def _cases():
    """(name, callable) pairs on float32 inputs; imported inside the worker only."""
    import numpy as np
    import fastconv.functional as F

    rng = np.random.default_rng(0)

    def randn(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    lenet_x, lenet_w = randn(256, 1, 28, 28), randn(6, 1, 5, 5)
    dw_x, dw_w = randn(16, 64, 56, 56), randn(64, 1, 3, 3)
    big_x, big_w = randn(16, 64, 56, 56), randn(64, 64, 3, 3)
    pool_x, pool3_x = randn(256, 6, 28, 28), randn(16, 64, 112, 112)
    cols = F.im2col(big_x, 3, padding=1)
    _, max_idx = F.max_pool2d(pool_x, 2, return_indices=True)
    max_grad = randn(*max_idx.shape)
    return [
        ("direct conv (256,1,28,28)->6 5x5 p2",
         lambda: F.conv2d(lenet_x, lenet_w, padding=2, algorithm="direct")),
        ("direct conv depthwise (16,64,56,56) 3x3 p1",
         lambda: F.conv2d(dw_x, dw_w, padding=1, groups=64, algorithm="direct")),
        ("im2col (16,64,56,56) 3x3 p1", lambda: F.im2col(big_x, 3, padding=1)),
        ("col2im (16,64,56,56) 3x3 p1", lambda: F.col2im(cols, (56, 56), 3, padding=1)),
        ("max_pool 2x2 s2 (256,6,28,28)", lambda: F.max_pool2d(pool_x, 2, return_indices=True)),
        ("max_pool backward 2x2 (256,6,28,28)",
         lambda: F.max_pool2d_backward(max_grad, max_idx, pool_x.shape)),
        ("avg_pool 2x2 s2 (256,6,28,28)", lambda: F.avg_pool2d(pool_x, 2)),
        ("max_pool 3x3 s2 p1 (16,64,112,112)", lambda: F.max_pool2d(pool3_x, 3, 2, 1)),
        ("avg_pool 3x3 s2 p1 (16,64,112,112)", lambda: F.avg_pool2d(pool3_x, 3, 2, 1)),
        ("control: GEMM conv (16,64,56,56)->64 3x3 p1",
         lambda: F.conv2d(big_x, big_w, padding=1, algorithm="gemm")),
    ]


def worker(threads, repeats, clock):
    """Best-of-``repeats`` seconds per case, as JSON on stdout."""
    import fastconv
    from fastconv import _kernels
    from fastconv._kernels import _runtime

    fastconv.set_num_threads(threads)
    # With one OpenMP thread the kernel runs on the calling thread, so its CPU time is the cost.
    now = time.thread_time if clock == "cpu" else time.perf_counter
    best = {}
    for name, fn in _cases():
        fn()  # warm-up: workspaces, page faults, BLAS initialization
        times = []
        for _ in range(repeats):
            t0 = now()
            fn()
            times.append(now() - t0)
        best[name] = min(times)
    levels = _kernels.dispatched_levels()
    json.dump({"best_s": best, "kernels": ", ".join(f"{m} {lv}" for m, lv in levels.items())
               or _runtime.simd_baseline()}, sys.stdout)


def build(root):
    """Snapshot the tracked and untracked-but-not-ignored files once, then build each
    in its own copy of that snapshot."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    snapshot = os.path.join(root, "snapshot")
    for rel in files:
        if os.path.isfile(os.path.join(REPO, rel)):
            os.makedirs(os.path.dirname(os.path.join(snapshot, rel)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, rel), os.path.join(snapshot, rel))
    dirs = {}
    for name, env in BUILDS.items():
        dest = os.path.join(root, name)
        shutil.copytree(snapshot, dest)
        print(f"building {name} ({env}) in {dest} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j", "2"],
                       cwd=dest, env={**os.environ, **env}, check=True,
                       stdout=subprocess.DEVNULL)
        dirs[name] = dest
    return dirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="worker runs per configuration")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per case per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the calling thread's CPU time (needs --threads 1)")
    parser.add_argument("--json", default="compare_native.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu times the calling thread only: use --threads 1")
    if args.worker:
        worker(args.threads, args.repeats, args.clock)
        return

    with tempfile.TemporaryDirectory(prefix="fastconv-native-") as root:
        dirs = build(root)
        best, kernels = {}, {}
        for r in range(args.rounds):
            # Alternate the order so drift on a shared machine does not favour one configuration.
            order = list(CONFIGS) if r % 2 == 0 else list(CONFIGS)[::-1]
            for config in order:
                build_name, env = CONFIGS[config]
                # The worker imports fastconv from that build's tree.
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--worker",
                     "--threads", str(args.threads), "--repeats", str(args.repeats),
                     "--clock", args.clock],
                    cwd=dirs[build_name], stdout=subprocess.PIPE, text=True, check=True,
                    env={**os.environ, **env, "PYTHONPATH": dirs[build_name]}).stdout
                result = json.loads(out)
                kernels[config] = result["kernels"]
                for name, t in result["best_s"].items():
                    best.setdefault(name, {}).setdefault(config, t)
                    best[name][config] = min(best[name][config], t)

    print(f"float32, {args.threads} threads, {args.clock} clock, "
          f"best of {args.rounds} runs x {args.repeats} calls")
    for config, what in kernels.items():
        print(f"  {config}: {what}")
    print(f"{'case':46s} {'portable':>9s} {'dispatch':>9s} {'native':>9s}   "
          f"{'p/dispatch':>10s} {'p/native':>9s}   (ms; ratios > 1: faster than portable)")
    rows = []
    for name, t in best.items():
        p, d, n = (t[c] * 1e3 for c in CONFIGS)
        rows.append({"case": name, "portable_ms": p, "dispatched_ms": d, "native_ms": n,
                     "portable_over_dispatched": p / d, "portable_over_native": p / n})
        print(f"{name:46s} {p:9.3f} {d:9.3f} {n:9.3f}   {p / d:10.2f} {p / n:9.2f}")
    with open(args.json, "w") as f:
        json.dump({"threads": args.threads, "clock": args.clock, "rounds": args.rounds,
                   "repeats": args.repeats, "kernels": kernels, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
