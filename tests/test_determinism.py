"""Determinism: same seed, data and thread count give bitwise identical results, and so do
different thread counts.

Weight and bias gradients are summed over fixed-size chunks of images in a fixed order
(fastconv.functional.conv2d_backward), never over per-thread partials, and every other op
computes each output element on one thread in a fixed order. So results are bitwise equal
across runs *and* across thread counts, which these tests check for the kernels and for
whole training runs (dropout, batch norm, shuffling and Adam included).
"""
import numpy as np
import pytest

import fastconv
import fastconv.optim
from fastconv import functional as F
from fastconv import nn

THREAD_COUNTS = [1, 2, 3]


def _equal(a, b):
    for x, y in zip(a, b, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)  # bitwise, up to NaN payloads


def _kernel_results(dtype):
    rng = np.random.default_rng(1)
    # 37 images: not a multiple of any chunk or thread count
    x = rng.standard_normal((37, 6, 12, 11)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
    g = rng.standard_normal((37, 8, 6, 6)).astype(dtype)
    w1 = rng.standard_normal((5, 1, 5, 5)).astype(dtype)   # direct path
    g1 = rng.standard_normal((37, 5, 12, 11)).astype(dtype)
    # large images: one image per tile, so the 61 images make many chunks over the threads
    xl = rng.standard_normal((61, 16, 24, 24)).astype(dtype)
    wl = rng.standard_normal((8, 16, 3, 3)).astype(dtype)
    gl = rng.standard_normal((61, 8, 24, 24)).astype(dtype)
    # >= 16 channels: the channel-vector direct kernels, forward and both gradients
    wv = rng.standard_normal((16, 16, 3, 3)).astype(dtype)
    gv = rng.standard_normal((61, 16, 24, 24)).astype(dtype)
    out, ind = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    avg = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
    return (F.conv2d(xl, wv, padding=1), *F.conv2d_backward(gv, xl, wv, padding=1),F.conv2d(x, w, w[:, 0, 0, 0].copy(), stride=2, padding=1, groups=2),
            *F.conv2d_backward(g, x, w, stride=2, padding=1, groups=2),
            F.conv2d(x[:, :1], w1, padding=2),
            *F.conv2d_backward(gl, xl, wl, padding=1),
            *F.conv2d_backward(g1, x[:, :1], w1, padding=2),
            F.im2col(x, 3, padding=1), F.col2im(F.im2col(x, 3, padding=1), (12, 11), 3, padding=1),
            out, ind, F.max_pool2d_backward(out, ind, x.shape),
            avg, F.avg_pool2d_backward(avg, x.shape, 3, 2, 1, True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_are_bitwise_identical_across_runs_and_thread_counts(dtype):
    results = {}
    for n in THREAD_COUNTS:
        with fastconv.threads(n):
            results[n] = _kernel_results(dtype)
            _equal(_kernel_results(dtype), results[n])       # run to run
    for n in THREAD_COUNTS[1:]:
        _equal(results[n], results[THREAD_COUNTS[0]])         # thread count to thread count


def _small_net():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(8 * 2 * 2, 10))


def _train(threads, seed=0):
    """Two epochs of fit (shuffled batches, dropout, Adam); the final state_dict."""
    rng = np.random.default_rng(123)
    x = rng.random((96, 1, 14, 14), dtype=np.float32)
    y = rng.integers(0, 10, size=96)
    with fastconv.threads(threads):
        fastconv.manual_seed(seed)
        model = _small_net()
        opt = fastconv.optim.Adam(model.parameters(), lr=1e-2)
        model.fit(x, y, loss=nn.CrossEntropyLoss(), optimizer=opt, epochs=2, batch_size=16,
                  verbose=0)
    return {k: v.copy() for k, v in model.state_dict().items()}


def _assert_same_state(a, b):
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_training_is_bitwise_reproducible_with_the_same_seed():
    first = _train(threads=2)
    _assert_same_state(_train(threads=2), first)
    fastconv.manual_seed(0)
    initial = _small_net().state_dict()
    changed = [k for k in first if not np.array_equal(first[k], initial[k])]
    assert "0.weight" in changed and "9.weight" in changed  # it did train


def test_training_is_bitwise_identical_across_thread_counts():
    _assert_same_state(_train(threads=1), _train(threads=2))


def test_a_different_seed_gives_different_weights():
    a, b = _train(threads=1, seed=0), _train(threads=1, seed=1)
    assert any(not np.array_equal(a[k], b[k]) for k in a)
