"""Adaptive pooling's geometry and checks, shared by :mod:`fastconv.functional` and
:mod:`fastconv.reference.adaptive`, and the separable sums and maxima the compiled backend
uses when the windows are not a plain pooling grid.

Output cell (i, j) pools rows ``floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1`` and the columns by the
same rule (torch's start/end rule), so windows may differ in size and overlap when H is not a
multiple of Ho.
"""
import numpy as np

from . import _validation as V

__all__ = ["windows", "adaptive_args", "adaptive_backward_args", "uniform_kernel",
           "separable_avg", "separable_avg_backward", "separable_max", "max_by_window"]


def windows(size, out):
    """``(starts, ends)`` int arrays of the ``out`` windows torch's rule lays over ``size``."""
    i = np.arange(out)
    return (i * size) // out, ((i + 1) * size + out - 1) // out


def _output_size(output_size, hw):
    """output_size (int, pair, None entries keep the input's size) -> (Ho, Wo)."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise TypeError(f"output_size must be an int or a pair of ints (or None), got "
                            f"{output_size!r}")
        output_size = tuple(hw[k] if s is None else s for k, s in enumerate(output_size))
    return V.pair(output_size, "output_size")


def adaptive_args(x, output_size):
    """Validate ``adaptive_*_pool2d(x, output_size)``: ``(x4, unbatched, (Ho, Wo))``."""
    V.check_array(x, "input")
    x4, unbatched = V.batched(x, "input")
    V.check_nonempty(x4, x, "input")
    return x4, unbatched, _output_size(output_size, x4.shape[2:])


def adaptive_backward_args(grad_output, input_shape):
    """Validate a backward call: ``(grad4, (N, C, H, W), unbatched)``; grad_output must be
    (N, C, Ho, Wo) (3-D when input_shape is)."""
    V.check_array(grad_output, "grad_output")
    shape, unbatched = V._input_shape(input_shape)
    leading = shape[1:2] if unbatched else shape[:2]
    if grad_output.ndim != len(leading) + 2 or grad_output.shape[:-2] != leading:
        raise ValueError(f"expected grad_output of shape {tuple(input_shape[:-2]) + ('Ho', 'Wo')} "
                         f"for input_shape {tuple(input_shape)}, got grad_output of shape "
                         f"{grad_output.shape}")
    grad4 = grad_output[np.newaxis] if unbatched else grad_output
    return grad4, shape, unbatched


def uniform_kernel(hw, out_hw):
    """(kH, kW) when the windows are a plain pooling grid (Ho | H and Wo | W), else None."""
    (h, w), (ho, wo) = hw, out_hw
    return (h // ho, w // wo) if h % ho == 0 and w % wo == 0 else None


def _sizes(h, w, out_hw):
    (rs, re), (cs, ce) = windows(h, out_hw[0]), windows(w, out_hw[1])
    return (rs, re), (cs, ce), (re - rs)[:, None] * (ce - cs)[None, :]


def separable_avg(x4, out_hw):
    """Window means: sums over each column window of every row, then over the row windows
    (Ho + Wo vectorized slices instead of Ho * Wo)."""
    (rs, re), (cs, ce), counts = _sizes(*x4.shape[2:], out_hw)
    cols = np.stack([x4[..., a:b].sum(axis=3) for a, b in zip(cs, ce)], axis=3)
    out = np.stack([cols[:, :, a:b].sum(axis=2) for a, b in zip(rs, re)], axis=2)
    out /= counts.astype(out.dtype)
    return out


def separable_avg_backward(g4, shape):
    """The transpose of :func:`separable_avg`: spread over the row windows, then the columns."""
    n, c, h, w = shape
    (rs, re), (cs, ce), counts = _sizes(h, w, g4.shape[2:])
    g = g4 / counts.astype(g4.dtype)
    rows = np.zeros((n, c, h, g4.shape[3]), g4.dtype)
    for i, (a, b) in enumerate(zip(rs, re)):
        rows[:, :, a:b] += g[:, :, i:i + 1]
    grad = np.zeros(shape, g4.dtype)
    for j, (a, b) in enumerate(zip(cs, ce)):
        grad[..., a:b] += rows[..., j:j + 1]
    return grad


def separable_max(x4, out_hw):
    """Window maxima and flat H*W indices of NaN-free input, columns first, then rows: the
    first row holding the window's maximum, and in that row its first column, is the first
    maximum in row-major order (torch's pick)."""
    w = x4.shape[3]
    (rs, re), (cs, ce), _ = _sizes(*x4.shape[2:], out_hw)
    col_max = np.stack([x4[..., a:b].max(axis=3) for a, b in zip(cs, ce)], axis=3)
    col_arg = np.stack([x4[..., a:b].argmax(axis=3) + a for a, b in zip(cs, ce)], axis=3)
    row_arg = np.stack([col_max[:, :, a:b].argmax(axis=2) + a for a, b in zip(rs, re)], axis=2)
    out = np.take_along_axis(col_max, row_arg, axis=2)
    return out, row_arg * w + np.take_along_axis(col_arg, row_arg, axis=2)


def max_by_window(x4, out_hw):
    """Window maxima and flat H*W indices, window by window: the first maximum in row-major
    order, or the last NaN when the window has one (torch's rule)."""
    n, c, h, w = x4.shape
    out = np.empty((n, c) + tuple(out_hw), x4.dtype)
    indices = np.empty((n, c) + tuple(out_hw), np.int64)
    (rs, re), (cs, ce), _ = _sizes(h, w, out_hw)
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            flat = x4[:, :, rs[i]:re[i], cs[j]:ce[j]].reshape(n, c, -1)
            nan = np.isnan(flat)
            last_nan = flat.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
            first_max = np.argmax(np.where(nan, -np.inf, flat), axis=2)
            local = np.where(nan.any(axis=2), last_nan, first_max)
            width = ce[j] - cs[j]
            out[:, :, i, j] = np.take_along_axis(flat, local[:, :, None], axis=2)[:, :, 0]
            indices[:, :, i, j] = (rs[i] + local // width) * w + cs[j] + local % width
    return out, indices
