"""Smoke test of benchmarks/bench_lenet.py on a tiny batch: every competitor and mode runs,
and the JSON has the documented keys. Nothing here asserts a speed."""
import json
import os
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def bench():
    if not os.path.exists(os.path.join(BENCH_DIR, "bench_lenet.py")):
        pytest.skip("benchmarks/ is not shipped next to the installed tests")
    sys.path.insert(0, BENCH_DIR)
    try:
        import bench_lenet
        yield bench_lenet
    finally:
        sys.path.remove(BENCH_DIR)


def test_bench_lenet_runs_and_writes_json(bench, tmp_path, capsys):
    path = tmp_path / "lenet.json"
    bench.main(["--batch-size", "8", "--repeat", "1", "--ref-repeat", "1", "--threads", "1", "--min-time", "0", "--profile",
                "--json", str(path)])
    out = capsys.readouterr().out
    assert "modern   train" in out and "d2l      inference" in out and "Conv2d" in out
    data = json.loads(path.read_text())
    assert data["meta"]["batch"] == 8 and data["meta"]["threads"] == 1
    rows = {(r["variant"], r["mode"]): r for r in data["results"]}
    assert set(rows) == {(v, m) for v in ("modern", "d2l") for m in ("train", "inference")}
    competitors = ["fastconv", "reference"] + (["torch"] if data["meta"]["torch"] else [])
    for row in rows.values():
        for name in competitors:
            assert row[f"{name}_images_per_s"] > 0 and row[f"{name}_ms"] > 0
        assert row["fastconv_over_reference"] > 0
    layers = [r["layer"] for r in data["profile"]["modern"]]
    assert layers[0] == "0 Conv2d" and layers[-1] == "loss / SGD step" and len(layers) == 13
