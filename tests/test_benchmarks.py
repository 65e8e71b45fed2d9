"""Smoke test of benchmarks/bench_kernels.py: every op runs on tiny shapes and the JSON has
what the README promises. Nothing here asserts a speed."""
import json
import os
import sys
import time

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, BENCH_DIR)
    try:
        import bench_kernels
        yield bench_kernels
    finally:
        sys.path.remove(BENCH_DIR)


def test_best_of_times_every_callable_its_own_number_of_times():
    sys.path.insert(0, BENCH_DIR)
    try:
        from _timing import best_of
    finally:
        sys.path.remove(BENCH_DIR)
    calls = {"a": 0, "b": 0}

    def counter(name):
        def fn():
            calls[name] += 1
        return fn

    best = best_of({"a": counter("a"), "b": counter("b")}, repeat=4, repeats={"b": 2}, warmup=1)
    assert calls == {"a": 5, "b": 3}
    assert set(best) == {"a", "b"} and all(0 <= t < 1 for t in best.values())
    # min_time: calls go on, up to 10x the count, until they add up to that many seconds
    calls = {"a": 0, "b": 0}
    best_of({"a": counter("a"), "b": lambda: time.sleep(0.002)}, repeat=2, warmup=0,
            min_time=0.001)
    assert calls["a"] == 20


def test_every_op_runs_and_the_json_has_the_documented_keys(bench, tmp_path):
    ops = bench.all_ops()
    groups = {op.group for op in ops}
    assert groups == {"lenet", "large", "pool"} and len(ops) == 24
    results = bench.run(ops, threads=1, repeat=1, ref_repeat=1, batch=1, progress=False,
                        min_time=0)
    path = tmp_path / "bench.json"
    bench.write_json(str(path), bench.metadata(1, 1, 1, False), results)
    data = json.loads(path.read_text())
    assert set(data["meta"]) >= {"date", "fastconv", "numpy", "torch", "threads", "repeat"}
    assert len(data["results"]) == len(ops)
    for row in data["results"]:
        assert "skipped" not in row, row
        assert row["unit"] in ("GFLOP/s", "GB/s") and row["work"] > 0
        for name in ("fastconv", "reference"):
            assert row[f"{name}_ms"] > 0 and row[f"{name}_rate"] > 0
        assert row["reference_over_fastconv"] > 0
        if data["meta"]["torch"] is not None:
            assert row["torch_ms"] > 0 and row["torch_over_fastconv"] > 0
        assert row["batch"] == 1 and row["shape"].startswith("(1,")
    table = bench.table(data["results"])
    assert "max_pool2d fwd+idx" in table and "conv2d bwd" in table


def test_ops_filter(bench):
    ops = bench.all_ops()
    pool = bench.select(ops, "pool")
    assert pool and all(op.group == "pool" for op in pool)
    both = bench.select(ops, "lenet, avg_pool2d bwd")
    assert {op.group for op in both} == {"lenet", "pool"}
    assert all(op.group == "lenet" or op.name == "avg_pool2d bwd" for op in both)
    assert bench.select(ops, "") == ops
