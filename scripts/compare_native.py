"""Portable build against FASTCONV_NATIVE=1 (-march=native) on the hand-written loops.

Builds the current tree twice, out of place (two copies under a temporary directory, each
built with ``setup.py build_ext --inplace``), then times direct convolution, im2col/col2im
and pooling, plus one GEMM-bound convolution as a control, in worker processes that
alternate between the two builds, best of N. Prints a table and writes JSON.

    python scripts/compare_native.py [--rounds 5] [--threads 2] [--json native.json]

Wall-clock times on a shared machine are noisy: compare the ratio column, and rerun if a
control (GEMM) ratio strays far from 1.
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
BUILDS = {"portable": {"FASTCONV_NATIVE": "0"}, "native": {"FASTCONV_NATIVE": "1"}}


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


def worker(threads, repeats):
    """Best-of-``repeats`` seconds per case, as JSON on stdout."""
    import fastconv
    from fastconv._kernels import _runtime

    fastconv.set_num_threads(threads)
    best = {}
    for name, fn in _cases():
        fn()  # warm-up: workspaces, page faults, BLAS initialization
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    json.dump({"best_s": best, "simd": _runtime.simd_baseline()}, sys.stdout)


def build(root):
    """Copy the tracked and untracked-but-not-ignored files, and build each variant in place."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    dirs = {}
    for variant, env in BUILDS.items():
        dest = os.path.join(root, variant)
        for rel in files:
            if os.path.isfile(os.path.join(REPO, rel)):
                os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
                shutil.copy2(os.path.join(REPO, rel), os.path.join(dest, rel))
        print(f"building {variant} ({env}) in {dest} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j", "2"],
                       cwd=dest, env={**os.environ, **env}, check=True,
                       stdout=subprocess.DEVNULL)
        dirs[variant] = dest
    return dirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="worker runs per build")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per case per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="native_vs_portable.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.threads, args.repeats)
        return

    with tempfile.TemporaryDirectory(prefix="fastconv-native-") as root:
        dirs = build(root)
        best, simd = {}, {}
        for r in range(args.rounds):
            # Alternate the order so drift on a shared machine does not favour one build.
            order = list(dirs) if r % 2 == 0 else list(dirs)[::-1]
            for variant in order:
                # The worker imports fastconv from its working directory (the build's tree).
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--worker",
                     "--threads", str(args.threads), "--repeats", str(args.repeats)],
                    cwd=dirs[variant], capture_output=True, text=True, check=True,
                    env={**os.environ, "PYTHONPATH": dirs[variant]}).stdout
                result = json.loads(out)
                simd[variant] = result["simd"]
                for name, t in result["best_s"].items():
                    best.setdefault(name, {}).setdefault(variant, t)
                    best[name][variant] = min(best[name][variant], t)

    print(f"float32, {args.threads} threads, best of {args.rounds} runs x {args.repeats} calls; "
          f"SIMD baseline: portable {simd['portable']}, native {simd['native']}")
    print(f"{'case':48s} {'portable ms':>12s} {'native ms':>10s} {'portable/native':>16s}")
    rows = []
    for name, t in best.items():
        ratio = t["portable"] / t["native"]
        rows.append({"case": name, "portable_ms": t["portable"] * 1e3,
                     "native_ms": t["native"] * 1e3, "ratio": ratio})
        print(f"{name:48s} {t['portable'] * 1e3:12.3f} {t['native'] * 1e3:10.3f} {ratio:16.2f}")
    with open(args.json, "w") as f:
        json.dump({"threads": args.threads, "rounds": args.rounds, "repeats": args.repeats,
                   "simd": simd, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
