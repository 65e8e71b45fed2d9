"""Adaptive pooling in plain NumPy, window by window: the ground truth for
:func:`fastconv.functional.adaptive_avg_pool2d` and ``adaptive_max_pool2d`` (same checks,
from :mod:`fastconv._adaptive_pool`)."""
import numpy as np

from .. import _validation as V
from .._adaptive_pool import adaptive_args, adaptive_backward_args, max_by_window, windows

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
    out, indices = max_by_window(x4, out_hw)
    out, indices = V.unbatch(out, unbatched), V.unbatch(indices, unbatched)
    return (out, indices) if return_indices else out


def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    """Each output's gradient added at its index (the reference max-pool scatter)."""
    from . import max_pool2d_backward
    adaptive_backward_args(grad_output, input_shape)
    return max_pool2d_backward(grad_output, indices, input_shape)
