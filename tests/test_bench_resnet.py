"""Smoke test of benchmarks/bench_resnet.py on a tiny batch: every competitor and mode runs,
the profile covers every layer type, and the JSON has the documented keys. Nothing here
asserts a speed."""
import json
import os
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def bench():
    if not os.path.exists(os.path.join(BENCH_DIR, "bench_resnet.py")):
        pytest.skip("benchmarks/ is not shipped next to the installed tests")
    sys.path.insert(0, BENCH_DIR)
    try:
        import bench_resnet
        yield bench_resnet
    finally:
        sys.path.remove(BENCH_DIR)


def test_bench_resnet_runs_and_writes_json(bench, tmp_path, capsys):
    path = tmp_path / "resnet.json"
    bench.main(["--batch-sizes", "2,1", "--repeat", "1", "--threads", "1", "--profile",
                "--json", str(path)])
    out = capsys.readouterr().out
    assert "train" in out and "inference" in out and "conv 3x3 16->16 s1 @32x32" in out
    data = json.loads(path.read_text())
    assert data["meta"]["batches"] == [2, 1] and data["meta"]["threads"] == 1
    rows = {(r["mode"], r["batch"]): r for r in data["results"]}
    assert set(rows) == {(m, b) for m in ("train", "inference") for b in (2, 1)}
    competitors = ["fastconv"] + (["torch"] if data["meta"]["torch"] else [])
    for row in rows.values():
        for name in competitors:
            assert row[f"{name}_images_per_s"] > 0 and row[f"{name}_ms"] > 0
    for batch in (2, 1):  # inference also fused, eager and compiled
        for name in ("fastconv_fused", "fastconv_compiled"):
            assert rows["inference", batch][f"{name}_images_per_s"] > 0
    profile = {r["layer"]: r for r in data["profile"]["rows"]}
    assert {"BatchNorm2d", "ReLU", "residual add", "pooling", "linear", "loss", "SGD step"} <= set(profile)
    convs = [r for name, r in profile.items() if name.startswith("conv")]
    # ResNet-20: the stem, 18 block convolutions and two projections, in 8 shapes
    assert sum(r["calls"] for r in convs) == 21 and len(convs) == 8
    assert all(r["forward_gflops"] > 0 and r["backward_gflops"] > 0 for r in convs)


def test_torch_twin_has_the_same_keys(bench):
    torch = pytest.importorskip("torch")
    from fastconv.nn import models
    assert list(bench.torch_resnet(torch).state_dict()) == list(models.resnet20().state_dict())
