"""Compare two built fastconv trees: bitwise outputs, and speed in interleaved rounds.

Runs a fixed set of kernel calls (every op, forward and backward, float32 and float64,
every convolution route: GEMM, direct, channel-vector, Winograd, pixel-vector and direct
weight/input gradients) in each tree, under each CPU level, and checks that both trees
give bitwise the same arrays. Then times the benchmark shapes of bench_kernels.py in each
tree, one process per tree and round, alternating, best of the rounds: the two builds
cannot share a process (the same module names).

    python scripts/compare_builds.py /work/main .              # bits, then speed
    python scripts/compare_builds.py A B --no-speed --levels generic,x86_64_v3
    python scripts/compare_builds.py A B --no-bits --rounds 5 --threads 2

Both trees must be built in place (python setup.py build_ext --inplace). Prints tables;
--json PATH writes the figures.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

LEVELS = ("generic", "x86_64_v3", "default")


def _rand(shape, seed, dtype):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# (name, x shape, weight shape, stride, padding, dilation, groups): each reaches a route of
# fastconv.functional's choice, or several through the algorithm argument
CONV_CASES = [
    ("lenet1", (8, 1, 28, 28), (6, 1, 5, 5), 1, 2, 1, 1),       # six-channel direct, pixvec wgrad
    ("lenet2", (8, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),      # channel-vector, kvec wgrad
    ("wide1", (4, 1, 28, 28), (32, 1, 5, 5), 1, 2, 1, 1),       # pixvec wgrad, many channels
    ("wino", (2, 64, 16, 16), (64, 64, 3, 3), 1, 1, 1, 1),      # Winograd, direct grad_input
    ("wino_odd", (2, 32, 13, 11), (40, 32, 3, 3), 1, 1, 1, 1),  # odd tiles
    ("strided", (4, 16, 15, 15), (32, 16, 3, 3), 2, 1, 1, 1),   # strided direct, phase col2im
    ("pointwise", (4, 48, 8, 8), (40, 48, 1, 1), 1, 0, 1, 1),
    ("groups", (3, 8, 10, 9), (12, 4, 3, 3), 1, 1, 1, 2),
    ("dilated", (2, 3, 9, 11), (5, 3, 3, 3), (2, 3), (1, 2), (1, 2), 1),
    ("wide_k", (2, 4, 12, 40), (8, 4, 3, 17), 1, (1, 8), 1, 1),  # col2im past 16 taps
    ("s3", (2, 5, 20, 20), (7, 5, 4, 4), 3, 2, 1, 1),
]

# (name, x shape, kernel, stride, padding, dilation, ceil_mode)
POOL_CASES = [
    ("2x2", (4, 6, 28, 28), 2, 2, 0, 1, False),
    ("3x3s2", (2, 8, 17, 19), 3, 2, 1, 1, False),
    ("3x3s2ceil", (2, 8, 17, 19), 3, 2, 1, 1, True),
    ("3x3s1", (2, 4, 9, 9), 3, 1, 1, 1, False),
    ("dil", (2, 4, 15, 15), 3, 2, 1, 2, False),
    ("5x5s3", (2, 3, 23, 21), (5, 3), (3, 2), (2, 1), 1, False),
]


def bit_cases():
    """{name: array} of every case, in this process's fastconv (threads set by the caller)."""
    from fastconv import functional as F
    out = {}
    for dtype in (np.float32, np.float64):
        d = np.dtype(dtype).char
        for name, xs, ws, s, p, dil, g in CONV_CASES:
            x, w, b = _rand(xs, 0, dtype), _rand(ws, 1, dtype) * 0.3, _rand(ws[:1], 2, dtype)
            algos = ["auto", "gemm", "direct"]
            if ws[2:] == (3, 3) and s == 1 and dil == 1 and g == 1:
                algos.append("winograd")
            y = None
            for algo in algos:
                try:
                    y = F.conv2d(x, w, b, s, p, dil, g, algorithm=algo)
                except ValueError as exc:  # winograd on the portable build
                    out[f"{d}/conv/{name}/{algo}/refused"] = np.array([len(str(exc))])
                    continue
                out[f"{d}/conv/{name}/{algo}"] = y
            gy = _rand(y.shape, 3, dtype)
            for needs in [(True, True, True), (True, False, False), (False, True, False),
                          (False, False, True)]:
                grads = F.conv2d_backward(gy, x, w, s, p, dil, g, needs_input_grad=needs[0],
                                          needs_weight_grad=needs[1], needs_bias_grad=needs[2])
                for label, a in zip("iwb", grads):
                    if a is not None:
                        out[f"{d}/conv_bwd/{name}/{''.join(map(str, map(int, needs)))}/{label}"] = a
        for name, xs, k, s, p, dil, ceil in POOL_CASES:
            x = _rand(xs, 4, dtype)
            y, idx = F.max_pool2d(x, k, s, p, dil, ceil, return_indices=True)
            out[f"{d}/max/{name}"], out[f"{d}/max_idx/{name}"] = y, idx
            out[f"{d}/max_bwd/{name}"] = F.max_pool2d_backward(_rand(y.shape, 5, dtype), idx,
                                                                x.shape)
            if dil == 1:
                for cip in (True, False):
                    y = F.avg_pool2d(x, k, s, p, ceil, cip)
                    out[f"{d}/avg/{name}/{cip}"] = y
                    out[f"{d}/avg_bwd/{name}/{cip}"] = F.avg_pool2d_backward(
                        _rand(y.shape, 6, dtype), x.shape, k, s, p, ceil, cip)
        for name, xs, k, s, p, dil in [("3x3", (2, 3, 10, 9), 3, 1, 1, 1),
                                       ("s2", (2, 4, 11, 13), (3, 2), 2, (1, 0), 1),
                                       ("dil", (2, 2, 12, 12), 3, (1, 2), 2, (2, 1))]:
            x = _rand(xs, 7, dtype)
            cols = F.im2col(x, k, s, p, dil)
            out[f"{d}/im2col/{name}"] = cols
            out[f"{d}/col2im/{name}"] = F.col2im(cols, xs[2:], k, s, p, dil)
        x = _rand((4, 6, 13, 17), 8, dtype) * 4
        gy = _rand(x.shape, 9, dtype)
        for act in ("relu", "sigmoid", "tanh"):
            y = getattr(F, act)(x)
            out[f"{d}/{act}"] = y
            out[f"{d}/{act}_bwd"] = getattr(F, act + "_backward")(gy, y)
        out[f"{d}/leaky_relu"] = F.leaky_relu(x, 0.1)
        out[f"{d}/leaky_relu_bwd"] = F.leaky_relu_backward(gy, x, 0.1)
    return out


def speed_ops():
    """{name: callable} of bench_kernels.py's ops (float32, its batch sizes)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "benchmarks"))
    import bench_kernels
    ops = {}
    for op in bench_kernels.all_ops():
        ops[f"{op.group} {op.name} {op.shape}"] = op.make(op.batch, None).fastconv
    return ops


def worker(args):
    import fastconv
    from fastconv._kernels import cpu_level
    fastconv.set_num_threads(args.threads)
    if args.mode == "bits":
        arrays = bit_cases()
        arrays["__level__"] = np.array([cpu_level()])
        np.savez(args.out, **arrays)
    else:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                        "..", "benchmarks"))
        from _timing import best_of
        ops = speed_ops()
        best = {}
        for name, fn in ops.items():
            best[name] = best_of({name: fn}, repeat=args.repeat, min_time=0.05)[name]
        with open(args.out, "w") as f:
            json.dump(best, f)


def _run(tree, mode, out, level, threads, repeat=0):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.abspath(tree)
    env.pop("FASTCONV_CPU", None)
    if level != "default":
        env["FASTCONV_CPU"] = level
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--out", out,
           "--threads", str(threads), "--repeat", str(repeat)]
    subprocess.run(cmd, env=env, check=True, cwd=tempfile.gettempdir())


def compare_bits(a, b, levels, threads):
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            fa, fb = os.path.join(tmp, f"a_{level}.npz"), os.path.join(tmp, f"b_{level}.npz")
            _run(a, "bits", fa, level, threads)
            _run(b, "bits", fb, level, threads)
            da, db = np.load(fa), np.load(fb)
            ka, kb = set(da.files), set(db.files)
            diff = sorted(k for k in ka & kb if da[k].dtype != db[k].dtype
                          or da[k].shape != db[k].shape
                          or da[k].tobytes() != db[k].tobytes())
            missing = sorted(ka ^ kb)
            ran = str(da["__level__"][0])
            print(f"{level:10s} (ran {ran}): {len(ka & kb) - 1} arrays, "
                  f"{len(diff)} differ, {len(missing)} missing"
                  + ("".join(f"\n    differs: {k}" for k in diff[:40]))
                  + ("".join(f"\n    only in one: {k}" for k in missing[:20])))
            report[level] = {"ran": ran, "arrays": len(ka & kb) - 1, "differ": diff,
                             "missing": missing}
    return report


def compare_speed(a, b, level, threads, rounds, repeat):
    best_a, best_b = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            # alternate which tree goes first, so neither always meets the warmer machine
            order = [(a, best_a), (b, best_b)] if r % 2 == 0 else [(b, best_b), (a, best_a)]
            for tree, best in order:
                out = os.path.join(tmp, "t.json")
                _run(tree, "speed", out, level, threads, repeat)
                with open(out) as f:
                    for name, t in json.load(f).items():
                        best[name] = min(best.get(name, float("inf")), t)
    print(f"\nspeed, {level}, {threads} threads, best of {rounds} rounds x {repeat} calls "
          f"(ratio = A time / B time: above 1, B is faster)")
    print(f"{'op':62s} {'A ms':>9s} {'B ms':>9s} {'A/B':>6s}")
    rows = {}
    for name in best_a:
        ta, tb = best_a[name], best_b.get(name, float("nan"))
        rows[name] = {"a_s": ta, "b_s": tb, "ratio": ta / tb}
        print(f"{name:62s} {ta * 1e3:9.3f} {tb * 1e3:9.3f} {ta / tb:6.3f}")
    ratios = np.array([r["ratio"] for r in rows.values()])
    print(f"geometric mean A/B: {np.exp(np.log(ratios).mean()):.3f}, "
          f"range {ratios.min():.3f} - {ratios.max():.3f}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", nargs="?", help="tree A (e.g. /work/main)")
    p.add_argument("b", nargs="?", help="tree B (e.g. .)")
    p.add_argument("--levels", default=",".join(LEVELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--speed-level", default="default")
    p.add_argument("--no-bits", action="store_true")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--json")
    p.add_argument("--worker", choices=["bits", "speed"], dest="mode", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode:
        worker(args)
        return 0
    if not (args.a and args.b):
        p.error("give two trees")
    report = {}
    failed = False
    if not args.no_bits:
        report["bits"] = compare_bits(args.a, args.b, args.levels.split(","), args.threads)
        failed = any(r["differ"] or r["missing"] for r in report["bits"].values())
    if not args.no_speed:
        report["speed"] = compare_speed(args.a, args.b, args.speed_level, args.threads,
                                        args.rounds, args.repeat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
