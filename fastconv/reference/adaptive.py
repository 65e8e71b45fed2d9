"""Adaptive pooling, softmax and the log-likelihood losses in plain NumPy, window by window.

The ground truth for :mod:`fastconv._adaptive_pool` and :mod:`fastconv._softmax`: each
output cell is pooled from its own window of torch's start/end rule, each softmax from its
own slice, with the same checks.
"""
import numpy as np

from .. import _validation as V
from .._adaptive_pool import adaptive_args, adaptive_backward_args, windows

__all__ = ["adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
           "adaptive_max_pool2d_backward"]


def _cells(h, w, out_hw):
    """Yield ``(i, j, row slice, column slice)`` for every output cell."""
    (rs, re), (cs, ce) = windows(h, out_hw[0]), windows(w, out_hw[1])
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            yield i, j, slice(rs[i], re[i]), slice(cs[j], ce[j])


def adaptive_avg_pool2d(x, output_size):
    """Mean of each window; see :func:`fastconv.functional.adaptive_avg_pool2d`."""
    x4, unbatched, out_hw = adaptive_args(x, output_size)
    n, c, h, w = x4.shape
    out = np.empty((n, c) + out_hw, x.dtype)
    for i, j, rows, cols in _cells(h, w, out_hw):
        out[:, :, i, j] = x4[:, :, rows, cols].mean(axis=(2, 3))
    return V.unbatch(out, unbatched)


def adaptive_avg_pool2d_backward(grad_output, input_shape):
    """Each output's gradient spread evenly over its window."""
    g4, (n, c, h, w), unbatched = adaptive_backward_args(grad_output, input_shape)
    grad = np.zeros((n, c, h, w), g4.dtype)
    for i, j, rows, cols in _cells(h, w, g4.shape[2:]):
        count = (rows.stop - rows.start) * (cols.stop - cols.start)
        grad[:, :, rows, cols] += (g4[:, :, i, j] / np.asarray(count, g4.dtype))[:, :, None, None]
    return V.unbatch(grad, unbatched)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Maximum of each window and its flat H*W index: the first maximum in row-major order,
    or the last NaN when the window has one (torch's rule)."""
    x4, unbatched, out_hw = adaptive_args(x, output_size)
    n, c, h, w = x4.shape
    out = np.empty((n, c) + out_hw, x.dtype)
    indices = np.empty((n, c) + out_hw, np.int64)
    for i, j, rows, cols in _cells(h, w, out_hw):
        window = x4[:, :, rows, cols]
        width = cols.stop - cols.start
        flat = window.reshape(n, c, -1)
        nan = np.isnan(flat)
        last_nan = flat.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
        # argmax on the values with NaN masked out: the first maximum among the numbers
        first_max = np.argmax(np.where(nan, -np.inf, flat), axis=2)
        local = np.where(nan.any(axis=2), last_nan, first_max)
        out[:, :, i, j] = np.take_along_axis(flat, local[:, :, None], axis=2)[:, :, 0]
        indices[:, :, i, j] = (rows.start + local // width) * w + cols.start + local % width
    out, indices = V.unbatch(out, unbatched), V.unbatch(indices, unbatched)
    return (out, indices) if return_indices else out


def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    """Each output's gradient added at its index (the reference max-pool scatter)."""
    from . import max_pool2d_backward
    adaptive_backward_args(grad_output, input_shape)
    return max_pool2d_backward(grad_output, indices, input_shape)
