"""Smoke tests of benchmarks/bench_norm.py and bench_kernels.py's ResNet-20 shape set: they
run on tiny shapes and report what their tables promise. Nothing here asserts a speed."""
import os
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def benches():
    sys.path.insert(0, BENCH_DIR)
    try:
        import bench_kernels
        import bench_norm
        yield bench_norm, bench_kernels
    finally:
        sys.path.remove(BENCH_DIR)


def test_bench_norm_times_both_modes_and_reports_bandwidth(benches):
    bench_norm, _ = benches
    results = bench_norm.run([(2, 3, 4, 4)], threads=1, repeat=1, min_time=0)
    assert [r["mode"] for r in results] == ["train fwd+bwd", "eval fwd"]
    itemsize = 4 * 2 * 3 * 4 * 4
    assert [r["bytes"] for r in results] == [5 * itemsize, 2 * itemsize]
    for r in results:
        assert r["fastconv_ms"] > 0 and r["fastconv_gbps"] > 0
    assert "train fwd+bwd" in bench_norm.table(results)


def test_resnet20_conv_shapes_run(benches):
    _, bench_kernels = benches
    ops = bench_kernels.resnet20_ops()
    assert len(ops) == 23 and {op.group for op in ops} == {"resnet20"}
    results = bench_kernels.run(ops[:4], threads=1, repeat=1, ref_repeat=1, batch=1,
                                progress=False, min_time=0, use_torch=False)
    for row in results:
        assert "skipped" not in row and row["unit"] == "GFLOP/s" and row["fastconv_rate"] > 0
