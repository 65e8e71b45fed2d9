"""Smoke test of benchmarks/bench_inference.py on a tiny run: every available framework runs in
its own process, the outputs agree, and the JSON has the documented keys. Nothing here asserts
a speed."""
import json
import os
import sys

import pytest

import fastconv

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def bench():
    if not os.path.exists(os.path.join(BENCH_DIR, "bench_inference.py")):
        pytest.skip("benchmarks/ is not shipped next to the installed tests")
    sys.path.insert(0, BENCH_DIR)
    try:
        import bench_inference
        yield bench_inference
    finally:
        sys.path.remove(BENCH_DIR)


def test_bench_inference_runs_and_writes_json(bench, tmp_path, capsys):
    path = tmp_path / "inference.json"
    bench.main(["--models", "lenet", "--rounds", "1", "--threads", "1", "--latency-calls", "5",
                "--throughput-calls", "1", "--batch-size", "4", "--quiet", "--json", str(path)])
    out = capsys.readouterr().out
    assert "lenet     fastconv " in out
    data = json.loads(path.read_text())
    assert data["meta"]["threads"] == 1 and data["meta"]["compiled"] == hasattr(fastconv, "compile")
    rows = {r["framework"]: r for r in data["results"]}
    assert set(rows) == set(bench.FRAMEWORKS)
    ran = ["fastconv"] + [name for name, present in (
        ("fastconv_compiled", hasattr(fastconv, "compile")),
        ("torch", data["meta"]["torch"] is not None),
        ("onnxruntime", data["meta"]["onnxruntime"] is not None and data["meta"]["onnx"] is not None))
        if present]
    for name, row in rows.items():
        assert row["model"] == "lenet" and row["batch"] == 4
        if name in ran:
            assert row["rounds"] == 1
            assert 0 < row["latency_median_us"] <= row["latency_p99_us"] and row["images_per_s"] > 0
            assert row["max_abs_diff_vs_eager"] < 1e-4  # the same weights in every framework
        else:  # a slot left empty, never filled with another framework's figures
            assert row["rounds"] == 0 and row["latency_median_us"] is None and row["images_per_s"] is None


def test_models_filter_refuses_unknown_models(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "lenet,vgg"])
    assert "lenet" in bench.available_models()
