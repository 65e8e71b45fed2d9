"""max_pool2d / avg_pool2d, forward and backward: against fastconv.reference and torch.

The compiled kernels follow torch's CPU kernels to the bit (same window order, tie-break,
NaN rule, divisor and summation order), so the torch cross-checks compare exactly.
"""
import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import reference as R

DTYPES = [np.float32, np.float64]
THREADS = [1, 2]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}

# (input shape, kernel_size, stride, padding, dilation, ceil_mode): the 2x2 stride-2 fast
# path (even and odd sizes), the general tap loops with every option, rectangular windows.
MAX_CASES = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((2, 3, 9, 7), 2, 2, 0, 1, False),
    ((2, 3, 9, 7), 2, 2, 0, 1, True),
    ((2, 2, 11, 13), 3, 2, 1, 1, False),
    ((2, 2, 11, 13), 3, 2, 1, 1, True),
    ((1, 3, 10, 9), (3, 2), (2, 1), (1, 0), (1, 2), True),
    ((1, 2, 12, 12), 3, 1, 1, 2, False),
    ((1, 2, 7, 30), (2, 4), (3, 2), (1, 2), 1, True),
    ((3, 1, 5, 6), 1, 1, 0, 1, False),
    ((1, 1, 20, 21), 5, 3, 2, (2, 1), True),
]
# (input shape, kernel_size, stride, padding, ceil_mode)
AVG_CASES = [
    ((2, 3, 8, 8), 2, None, 0, False),
    ((2, 3, 9, 7), 2, 2, 0, False),
    ((2, 3, 9, 7), 2, 2, 0, True),
    ((2, 2, 11, 13), 3, 2, 1, False),
    ((2, 2, 11, 13), 3, 2, 1, True),
    ((1, 3, 10, 9), (3, 2), (2, 1), (1, 0), True),
    ((1, 2, 7, 30), (2, 4), (3, 2), (1, 2), True),
    ((1, 1, 20, 21), 5, 3, 2, True),
]
# (count_include_pad, divisor_override)
DIVISORS = [(True, None), (False, None), (True, 5), (False, -3)]


def _data(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _assert_close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=RTOL[dtype])


# ----------------------------------------------------------------------------------------
# against the reference
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, k, s, p, d, ceil", MAX_CASES)
def test_max_pool_matches_reference(shape, k, s, p, d, ceil, dtype, threads):
    x = _data(shape, dtype)
    with fastconv.threads(threads):
        out, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        out_only = F.max_pool2d(x, k, s, p, d, ceil)
    ref, ref_idx = R.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert out.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(out_only, out)

    g = _data(out.shape, dtype, seed=1)
    with fastconv.threads(threads):
        grad = F.max_pool2d_backward(g, idx, shape)
    assert grad.shape == shape and grad.dtype == dtype
    _assert_close(grad, R.max_pool2d_backward(g, ref_idx, shape), dtype)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cip, div", DIVISORS)
@pytest.mark.parametrize("shape, k, s, p, ceil", AVG_CASES)
def test_avg_pool_matches_reference(shape, k, s, p, ceil, cip, div, dtype, threads):
    x = _data(shape, dtype)
    with fastconv.threads(threads):
        out = F.avg_pool2d(x, k, s, p, ceil, cip, div)
    assert out.dtype == dtype
    _assert_close(out, R.avg_pool2d(x, k, s, p, ceil, cip, div), dtype)

    g = _data(out.shape, dtype, seed=1)
    with fastconv.threads(threads):
        grad = F.avg_pool2d_backward(g, shape, k, s, p, ceil, cip, div)
    assert grad.shape == shape and grad.dtype == dtype
    _assert_close(grad, R.avg_pool2d_backward(g, shape, k, s, p, ceil, cip, div), dtype)


# ----------------------------------------------------------------------------------------
# against torch, bit for bit
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, k, s, p, d, ceil", MAX_CASES)
def test_max_pool_matches_torch_exactly(shape, k, s, p, d, ceil, dtype):
    torch = pytest.importorskip("torch")
    x = _data(shape, dtype)
    x[..., ::3, 1::4] = 0.0  # ties, as after a ReLU
    out, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    tx = torch.from_numpy(x).requires_grad_()
    t_out, t_idx = torch.nn.functional.max_pool2d(tx, k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(out, t_out.detach().numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())

    g = _data(out.shape, dtype, seed=1)
    t_out.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(F.max_pool2d_backward(g, idx, shape), tx.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cip, div", DIVISORS)
@pytest.mark.parametrize("shape, k, s, p, ceil", AVG_CASES)
def test_avg_pool_matches_torch_exactly(shape, k, s, p, ceil, cip, div, dtype):
    torch = pytest.importorskip("torch")
    x = _data(shape, dtype)
    out = F.avg_pool2d(x, k, s, p, ceil, cip, div)
    tx = torch.from_numpy(x).requires_grad_()
    t_out = torch.nn.functional.avg_pool2d(tx, k, s, p, ceil, cip, div)
    np.testing.assert_array_equal(out, t_out.detach().numpy())

    g = _data(out.shape, dtype, seed=1)
    t_out.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(F.avg_pool2d_backward(g, shape, k, s, p, ceil, cip, div),
                                  tx.grad.numpy())


# ----------------------------------------------------------------------------------------
# layouts: 3-D input, zero batch, non-contiguous input, index dtypes
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1)])
def test_unbatched_input_gives_unbatched_results(k, s, p):
    x = _data((3, 9, 10), np.float32)
    out, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    ref, ref_idx = F.max_pool2d(x[None], k, s, p, return_indices=True)
    np.testing.assert_array_equal(out, ref[0])
    np.testing.assert_array_equal(idx, ref_idx[0])
    grad = F.max_pool2d_backward(out, idx, x.shape)
    assert grad.shape == x.shape
    np.testing.assert_array_equal(grad, F.max_pool2d_backward(ref, ref_idx, (1,) + x.shape)[0])

    avg = F.avg_pool2d(x, k, s, p)
    np.testing.assert_array_equal(avg, F.avg_pool2d(x[None], k, s, p)[0])
    grad = F.avg_pool2d_backward(avg, x.shape, k, s, p)
    assert grad.shape == x.shape
    np.testing.assert_array_equal(grad, F.avg_pool2d_backward(avg[None], (1,) + x.shape,
                                                              k, s, p)[0])


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1)])
def test_zero_batch_gives_empty_results(k, s, p):
    x = np.zeros((0, 3, 8, 8), np.float64)
    out, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    ho = (8 + 2 * p - k) // s + 1
    assert out.shape == idx.shape == (0, 3, ho, ho)
    assert F.max_pool2d_backward(out, idx, x.shape).shape == x.shape
    avg = F.avg_pool2d(x, k, s, p)
    assert avg.shape == (0, 3, ho, ho)
    assert F.avg_pool2d_backward(avg, x.shape, k, s, p).shape == x.shape


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1)])
def test_non_contiguous_input(k, s, p):
    base = _data((4, 9, 12, 6), np.float32)
    x = base.transpose(0, 3, 2, 1)[:, 1:, ::-1]  # (4, 5, 12, 9), no unit stride anywhere
    assert not x.flags.c_contiguous
    xc = np.ascontiguousarray(x)
    out, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    ref, ref_idx = F.max_pool2d(xc, k, s, p, return_indices=True)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(F.avg_pool2d(x, k, s, p), F.avg_pool2d(xc, k, s, p))

    g = _data(out.shape, np.float32, seed=1)
    g_view = np.asfortranarray(g)
    np.testing.assert_array_equal(F.max_pool2d_backward(g_view, idx[..., ::1], x.shape),
                                  F.max_pool2d_backward(g, idx, x.shape))
    np.testing.assert_array_equal(F.avg_pool2d_backward(g_view, x.shape, k, s, p),
                                  F.avg_pool2d_backward(g, x.shape, k, s, p))


def test_max_pool_backward_accepts_other_integer_indices():
    x = _data((2, 3, 8, 8), np.float64)
    out, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    expected = F.max_pool2d_backward(out, idx, x.shape)
    np.testing.assert_array_equal(F.max_pool2d_backward(out, idx.astype(np.int32), x.shape),
                                  expected)


def test_max_pool_backward_refuses_out_of_range_indices():
    x = _data((1, 2, 6, 6), np.float32)
    out, idx = F.max_pool2d(x, 2, return_indices=True)
    idx[0, 1, 2, 2] = 36
    with pytest.raises(ValueError, match="indices"):
        F.max_pool2d_backward(out, idx, x.shape)


# ----------------------------------------------------------------------------------------
# NaN, infinities, ties
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_pool_nan_wins_with_the_last_nan_index(k, s, p):
    x = _data((1, 2, 10, 10), np.float64)
    x[0, 0, 2, 3] = np.nan
    x[0, 0, 3, 2] = np.nan
    x[0, 1, 5:, :] = np.nan
    out, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    ref, ref_idx = R.max_pool2d(x, k, s, p, return_indices=True)
    np.testing.assert_array_equal(out, ref)  # NaNs compare equal in assert_array_equal
    np.testing.assert_array_equal(idx, ref_idx)
    assert np.isnan(out).any()
    # a window is NaN exactly when it holds a NaN
    holds_nan = F.max_pool2d(np.isnan(x).astype(np.float64), k, s, p) > 0
    np.testing.assert_array_equal(np.isnan(out), holds_nan)
    # and its index points at a NaN
    picked = np.take_along_axis(x.reshape(2, -1), idx.reshape(2, -1), axis=1)
    assert np.isnan(picked[holds_nan.reshape(2, -1)]).all()


def test_max_pool_nan_matches_torch():
    torch = pytest.importorskip("torch")
    x = _data((2, 3, 9, 11), np.float32)
    x.reshape(-1)[::7] = np.nan
    for k, s, p, ceil in [(2, 2, 0, False), (3, 2, 1, True), (2, 1, 1, False)]:
        out, idx = F.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
        t_out, t_idx = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p,
                                                      ceil_mode=ceil, return_indices=True)
        np.testing.assert_array_equal(out, t_out.numpy())
        np.testing.assert_array_equal(idx, t_idx.numpy())


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1)])
def test_max_pool_ties_and_infinities(k, s, p):
    x = np.full((1, 1, 6, 6), -np.inf)
    out, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    assert np.all(out == -np.inf)
    # an all -inf window points at its first in-image element, never at the padding
    np.testing.assert_array_equal(idx, R.max_pool2d(x, k, s, p, return_indices=True)[1])
    x = np.zeros((1, 1, 6, 6))
    out, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    np.testing.assert_array_equal(idx, R.max_pool2d(x, k, s, p, return_indices=True)[1])


def test_avg_pool_propagates_nan_and_inf():
    x = np.zeros((1, 1, 6, 6), np.float32)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 5, 5] = np.inf
    for k, s, p in [(2, 2, 0), (3, 2, 1)]:
        out = F.avg_pool2d(x, k, s, p)
        assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, -1, -1] == np.inf
        assert np.isfinite(out).sum() == out.size - 2


# ----------------------------------------------------------------------------------------
# gradients by finite differences (float64)
# ----------------------------------------------------------------------------------------

def _directional_check(f, grad, x, seed=2, eps=1e-6):
    """<grad, v> against the central difference of f along a random direction v."""
    v = np.random.default_rng(seed).standard_normal(x.shape)
    numeric = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(np.sum(grad * v), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("shape, k, s, p, d, ceil", MAX_CASES)
def test_max_pool_gradient_finite_differences(shape, k, s, p, d, ceil):
    # distinct values at least 1e-3 apart: no ties, and eps moves no maximum
    size = int(np.prod(shape))
    x = np.random.default_rng(0).permutation(size).reshape(shape) * 1e-3
    out, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    g = _data(out.shape, np.float64, seed=1)
    grad = F.max_pool2d_backward(g, idx, shape)
    _directional_check(lambda z: np.sum(F.max_pool2d(z, k, s, p, d, ceil) * g), grad, x, eps=1e-7)


@pytest.mark.parametrize("cip, div", DIVISORS)
@pytest.mark.parametrize("shape, k, s, p, ceil", AVG_CASES)
def test_avg_pool_gradient_finite_differences(shape, k, s, p, ceil, cip, div):
    x = _data(shape, np.float64)
    out = F.avg_pool2d(x, k, s, p, ceil, cip, div)
    g = _data(out.shape, np.float64, seed=1)
    grad = F.avg_pool2d_backward(g, shape, k, s, p, ceil, cip, div)
    _directional_check(lambda z: np.sum(F.avg_pool2d(z, k, s, p, ceil, cip, div) * g), grad, x)


# ----------------------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_bitwise_deterministic_across_runs_and_thread_counts(k, s, p):
    x = _data((4, 6, 17, 15), np.float32)
    results = []
    for threads in (1, 2, 1, 3):
        with fastconv.threads(threads):
            out, idx = F.max_pool2d(x, k, s, p, return_indices=True)
            avg = F.avg_pool2d(x, k, s, p)
            results.append((out, idx, avg, F.max_pool2d_backward(avg, idx, x.shape),
                            F.avg_pool2d_backward(out, x.shape, k, s, p)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()
