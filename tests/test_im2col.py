"""fastconv.functional.im2col / col2im against fastconv.reference and torch unfold / fold."""
import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import reference as R

DTYPES = [np.float32, np.float64]

# (x shape, kernel_size, stride, padding, dilation)
CASES = [
    ((2, 3, 7, 9), 3, 1, 0, 1),
    ((2, 3, 7, 9), (3, 2), (2, 1), (1, 0), (1, 2)),
    ((1, 2, 8, 8), 2, 2, 0, 1),
    ((3, 1, 5, 6), (1, 4), (1, 3), (2, 1), 1),
    ((2, 4, 9, 7), 3, 3, 4, 2),          # padding wider than the kernel reach: zero columns
    ((2, 2, 6, 5), 1, 1, 0, 1),
    ((2, 3, 5, 5), 5, 1, 2, 1),
    # stride 1: col2im row by row, in registers, 16 (float32) or 8 columns at a time:
    # dilation with padding, rows of several register widths, a kernel wider than 16 (the
    # column-at-a-time code)
    ((2, 2, 9, 37), (3, 4), 1, (2, 3), (2, 3)),
    ((1, 2, 3, 40), (2, 17), 1, (0, 5), 1),
    # column stride 2: each phase's taps summed in registers (AVX-512; elsewhere the phase
    # rows, columns added in pairs): odd width, padding 1; even padding with dilation
    ((2, 3, 9, 11), 3, 2, 1, 1),
    ((1, 2, 7, 10), (2, 3), (1, 2), (0, 2), (1, 2)),
    # ... rows of several register pairs (64 or 32 columns) and odd padding; row stride 3
    # with dilation 2 both ways (every tap on one phase); a kernel wider than 16 (the phase
    # rows)
    ((2, 3, 6, 70), (3, 5), 2, (1, 3), 1),
    ((1, 2, 9, 21), 3, (3, 2), 2, 2),
    ((1, 2, 4, 40), (1, 17), 2, (0, 8), 1),
    # a row too wide for col2im's stack row: at stride 2 the registers' code (AVX-512) or
    # the element-by-element loop, at stride 3 that loop
    ((1, 1, 2, 4201), (1, 3), (1, 2), (0, 1), 1),
    ((1, 1, 2, 4201), (1, 3), (1, 3), (0, 1), 1),
]


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel_size, stride, padding, dilation", CASES)
def test_im2col_col2im_match_reference(shape, kernel_size, stride, padding, dilation, dtype,
                                       n_threads):
    x = _rng().standard_normal(shape).astype(dtype)
    with fastconv.threads(n_threads):
        cols = F.im2col(x, kernel_size, stride, padding, dilation)
    # im2col only copies: exact
    np.testing.assert_array_equal(cols, R.im2col(x, kernel_size, stride, padding, dilation))
    assert cols.dtype == dtype and cols.flags.c_contiguous
    g = _rng(1).standard_normal(cols.shape).astype(dtype)
    with fastconv.threads(n_threads):
        folded = F.col2im(g, shape[2:], kernel_size, stride, padding, dilation)
    expected = R.col2im(g, shape[2:], kernel_size, stride, padding, dilation)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(folded, expected, rtol=tol, atol=tol)
    assert folded.dtype == dtype and folded.shape == shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_col2im_is_the_adjoint_of_im2col(dtype):
    # <im2col(x), c> == <x, col2im(c)> for any x, c
    rng = _rng(2)
    x = rng.standard_normal((2, 3, 8, 7)).astype(dtype)
    args = ((3, 2), (2, 1), (1, 2), (2, 1))
    cols = F.im2col(x, *args)
    c = rng.standard_normal(cols.shape).astype(dtype)
    lhs = float(np.sum(cols.astype(np.float64) * c))
    rhs = float(np.sum(x.astype(np.float64) * F.col2im(c, (8, 7), *args)))
    assert lhs == pytest.approx(rhs, rel=1e-5 if dtype == np.float32 else 1e-12)


def test_unbatched_and_zero_batch():
    x = _rng().standard_normal((3, 6, 5))
    cols = F.im2col(x, 2, padding=1)
    np.testing.assert_array_equal(cols, F.im2col(x[None], 2, padding=1)[0])
    assert cols.ndim == 2
    back = F.col2im(cols, (6, 5), 2, padding=1)
    assert back.shape == (3, 6, 5)
    np.testing.assert_array_equal(back, F.col2im(cols[None], (6, 5), 2, padding=1)[0])
    empty = F.im2col(np.zeros((0, 3, 6, 5)), 2)
    assert empty.shape == (0, 12, 20)
    assert F.col2im(empty, (6, 5), 2).shape == (0, 3, 6, 5)


def test_non_contiguous_input():
    x = _rng().standard_normal((4, 6, 9, 10))[::2, ::2, :, ::2]
    np.testing.assert_array_equal(F.im2col(x, 3, 1, 1), R.im2col(np.ascontiguousarray(x), 3, 1, 1))
    cols = _rng(1).standard_normal((2, 27, 40))[:, :, ::2]
    np.testing.assert_allclose(F.col2im(cols, (5, 4), 3, 1, 1), R.col2im(cols, (5, 4), 3, 1, 1),
                               rtol=1e-12, atol=1e-12)


def test_refusals_come_before_the_kernel():
    with pytest.raises(TypeError, match="dtype float32 or float64"):
        F.im2col(np.zeros((1, 1, 4, 4), dtype=np.int32), 2)
    with pytest.raises(ValueError, match="sliding blocks"):
        F.col2im(np.zeros((1, 4, 5)), (4, 4), 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_unfold_fold(dtype):
    torch = pytest.importorskip("torch")
    x = _rng().standard_normal((2, 3, 9, 8)).astype(dtype)
    kernel, dilation, padding, stride = (3, 2), (1, 2), (1, 0), (2, 1)
    cols = F.im2col(x, kernel, stride, padding, dilation)
    expected = torch.nn.functional.unfold(torch.from_numpy(x), kernel, dilation, padding, stride)
    np.testing.assert_array_equal(cols, expected.numpy())
    folded = F.col2im(cols, (9, 8), kernel, stride, padding, dilation)
    expected = torch.nn.functional.fold(expected, (9, 8), kernel, dilation, padding, stride)
    np.testing.assert_allclose(folded, expected.numpy(), rtol=1e-5, atol=1e-5)
