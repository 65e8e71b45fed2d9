"""Adaptive average and max pooling over (N, C, H, W), like torch's ``adaptive_*_pool2d``.

Output cell (i, j) pools rows ``floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1`` and the columns by the
same rule (torch's start/end rule), so windows may differ in size and overlap when H is not a
multiple of Ho. The checks (:func:`adaptive_args`, :func:`adaptive_backward_args`) and the
window rule (:func:`windows`) serve both this compiled-backend form and
:mod:`fastconv.reference.adaptive`.

Three routes here: (1, 1), global pooling, reduces each plane in one NumPy pass; when Ho
divides H and Wo divides W the windows are a plain pooling grid (kernel = stride = H/Ho), run by
the compiled pooling kernels; otherwise the window sums (or maxima) are taken separably, first
over the column windows of every row, then over the row windows, which is Ho + Wo vectorized
slices instead of Ho * Wo.
"""
import numpy as np

from . import _validation as V

__all__ = ["adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
           "adaptive_max_pool2d_backward", "windows", "adaptive_args", "adaptive_backward_args"]


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
    if grad_output.ndim != (3 if unbatched else 4) or grad_output.shape[:-2] != \
            (shape[1:2] if unbatched else shape[:2]):
        raise ValueError(f"expected grad_output of shape {tuple(input_shape[:-2]) + ('Ho', 'Wo')} "
                         f"for input_shape {tuple(input_shape)}, got grad_output of shape "
                         f"{grad_output.shape}")
    grad4 = grad_output[np.newaxis] if unbatched else grad_output
    return grad4, shape, unbatched


def _uniform_kernel(hw, out_hw):
    """(kH, kW) when the windows are a plain pooling grid (Ho | H and Wo | W), else None."""
    (h, w), (ho, wo) = hw, out_hw
    return (h // ho, w // wo) if h % ho == 0 and w % wo == 0 else None


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling, like ``torch.nn.functional.adaptive_avg_pool2d``.

    Parameters
    ----------
    x : ndarray, float32 or float64, (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
        (Ho, Wo); None keeps that input size. (1, 1) is global average pooling.

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), x's dtype
        The mean of each window of torch's start/end rule.
    """
    from . import functional as F
    x4, unbatched, out_hw = adaptive_args(x, output_size)
    n, c, h, w = x4.shape
    if out_hw == (1, 1):
        out = x4.reshape(n, c, h * w).mean(axis=2).reshape(n, c, 1, 1)
    elif (kernel := _uniform_kernel((h, w), out_hw)) is not None:
        out = F.avg_pool2d(x4, kernel)
    else:
        (rs, re), (cs, ce) = windows(h, out_hw[0]), windows(w, out_hw[1])
        cols = np.stack([x4[..., a:b].sum(axis=3) for a, b in zip(cs, ce)], axis=3)
        out = np.stack([cols[:, :, a:b].sum(axis=2) for a, b in zip(rs, re)], axis=2)
        out /= ((re - rs)[:, None] * (ce - cs)[None, :]).astype(out.dtype)
    return V.unbatch(out.astype(x.dtype, copy=False), unbatched)


def adaptive_avg_pool2d_backward(grad_output, input_shape):
    """Gradient of :func:`adaptive_avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : ndarray, float32 or float64, (N, C, Ho, Wo) or (C, Ho, Wo)
    input_shape : sequence of ints, (N, C, H, W) or (C, H, W)

    Returns
    -------
    grad_input : ndarray, ``input_shape``, grad_output's dtype
        Each output's gradient divided by its window's size and added over the window.
    """
    from . import functional as F
    g4, (n, c, h, w), unbatched = adaptive_backward_args(grad_output, input_shape)
    ho, wo = g4.shape[2:]
    if (ho, wo) == (1, 1):
        scale = np.asarray(1.0 / (h * w), g4.dtype)
        grad = np.broadcast_to(g4 * scale, (n, c, h, w)).copy()
    elif (kernel := _uniform_kernel((h, w), (ho, wo))) is not None:
        grad = F.avg_pool2d_backward(np.ascontiguousarray(g4), (n, c, h, w), kernel)
    else:
        (rs, re), (cs, ce) = windows(h, ho), windows(w, wo)
        g = g4 / ((re - rs)[:, None] * (ce - cs)[None, :]).astype(g4.dtype)
        rows = np.zeros((n, c, h, wo), g4.dtype)
        for i, (a, b) in enumerate(zip(rs, re)):
            rows[:, :, a:b] += g[:, :, i:i + 1]
        grad = np.zeros((n, c, h, w), g4.dtype)
        for j, (a, b) in enumerate(zip(cs, ce)):
            grad[..., a:b] += rows[..., j:j + 1]
    return V.unbatch(grad, unbatched)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Adaptive max pooling, like ``torch.nn.functional.adaptive_max_pool2d``.

    Parameters
    ----------
    x : ndarray, float32 or float64, (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
    return_indices : bool, default False

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), x's dtype
    indices : ndarray of int64, same shape; only if ``return_indices``
        Flat index of each maximum within its H*W input plane: the first maximum in
        row-major window order, or the last NaN if the window has one (torch's rule).
    """
    from . import functional as F
    from .reference import adaptive as reference
    x4, unbatched, out_hw = adaptive_args(x, output_size)
    n, c, h, w = x4.shape
    kernel = _uniform_kernel((h, w), out_hw)
    if kernel is not None:
        out, indices = F.max_pool2d(x4, kernel, return_indices=True)
    elif np.isnan(x4).any():
        # The separable form below cannot follow the last-NaN rule; windows one by one can.
        out, indices = reference.adaptive_max_pool2d(x4, out_hw, return_indices=True)
    else:
        (rs, re), (cs, ce) = windows(h, out_hw[0]), windows(w, out_hw[1])
        # Columns first, then rows: the first row holding the window's maximum, and in that
        # row its first column, is the first maximum in row-major order.
        col_max = np.stack([x4[..., a:b].max(axis=3) for a, b in zip(cs, ce)], axis=3)
        col_arg = np.stack([x4[..., a:b].argmax(axis=3) + a for a, b in zip(cs, ce)], axis=3)
        row_arg = np.stack([col_max[:, :, a:b].argmax(axis=2) + a for a, b in zip(rs, re)], axis=2)
        out = np.take_along_axis(col_max, row_arg, axis=2)
        indices = row_arg * w + np.take_along_axis(col_arg, row_arg, axis=2)
    out, indices = V.unbatch(out, unbatched), V.unbatch(indices.astype(np.int64, copy=False), unbatched)
    return (out, indices) if return_indices else out


def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`adaptive_max_pool2d`: each output's gradient added at its index.

    Parameters
    ----------
    grad_output : ndarray, float32 or float64, (N, C, Ho, Wo) or (C, Ho, Wo)
    indices : integer ndarray, same shape, as ``adaptive_max_pool2d`` returned them
    input_shape : sequence of ints, (N, C, H, W) or (C, H, W)

    Returns
    -------
    grad_input : ndarray, ``input_shape``, grad_output's dtype
    """
    from . import functional as F
    adaptive_backward_args(grad_output, input_shape)
    return F.max_pool2d_backward(grad_output, indices, input_shape)
