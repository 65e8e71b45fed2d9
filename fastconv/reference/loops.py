"""The fastconv functions as explicit textbook loops: for teaching and checking.

One Python loop per index, one scalar multiply-add at a time: slow (use small inputs),
but each function reads like its definition. Same names, signatures, return conventions
and refusals as :mod:`fastconv.reference` and :mod:`fastconv.functional` (all validate
through :mod:`fastconv._validation`); results have the input's dtype and are accumulated in
it.
"""
import numpy as np

from .. import _validation as V

__all__ = [
    "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "im2col", "col2im",
]


def _taps(out_index, kernel, stride, pad, dilation, size):
    """(kernel offset, input position) pairs of one window along one axis, for the
    positions inside the image; the others read padding (zero, or nothing for pooling)."""
    start = out_index * stride - pad
    return [(i, start + i * dilation) for i in range(kernel)
            if 0 <= start + i * dilation < size]


# ----------------------------------------------------------------------------------------
# im2col / col2im
# ----------------------------------------------------------------------------------------

def _block_taps(a, n_, c_, h, w):
    """Every (n, c, ih, iw, cols row, cols column) that unfold/fold pair up, in one order."""
    kh, kw = a.kernel_size
    lh, lw = a.blocks
    for n in range(n_):
        for c in range(c_):
            for bh in range(lh):
                for bw in range(lw):
                    for i, ih in _taps(bh, kh, a.stride[0], a.padding[0], a.dilation[0], h):
                        for j, iw in _taps(bw, kw, a.stride[1], a.padding[1],
                                           a.dilation[1], w):
                            yield n, c, ih, iw, (c * kh + i) * kw + j, bh * lw + bw


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Extract sliding blocks, ``torch.nn.functional.unfold``: (N, C*kH*kW, L).

    See :func:`fastconv.reference.im2col`.
    """
    a = V.unfold_args(x, kernel_size, stride, padding, dilation)
    n_, c_, h, w = a.x.shape
    cols = np.zeros(a.out_shape, dtype=a.x.dtype)
    for n, c, ih, iw, row, col in _block_taps(a, n_, c_, h, w):
        cols[n, row, col] = a.x[n, c, ih, iw]
    return V.unbatch(cols, a.unbatched)


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """Sum sliding blocks into an image, ``torch.nn.functional.fold``: (N, C, H, W).

    See :func:`fastconv.reference.col2im`.
    """
    a = V.fold_args(cols, output_size, kernel_size, stride, padding, dilation)
    n_, c_, h, w = a.out_shape
    x = np.zeros(a.out_shape, dtype=a.cols.dtype)
    for n, c, ih, iw, row, col in _block_taps(a, n_, c_, h, w):
        x[n, c, ih, iw] += a.cols[n, row, col]
    return V.unbatch(x, a.unbatched)


# ----------------------------------------------------------------------------------------
# conv2d
# ----------------------------------------------------------------------------------------

def _conv_taps(a, n_, k_, ho, wo):
    """Every (n, k, oh, ow, c, cg, i, j, ih, iw) multiply-add term of a convolution."""
    c_per_group, kh, kw = a.weight.shape[1:]
    k_per_group = k_ // a.groups
    h, w = a.x.shape[2:]
    for n in range(n_):
        for k in range(k_):
            g = k // k_per_group
            for oh in range(ho):
                for ow in range(wo):
                    for cg in range(c_per_group):
                        c = g * c_per_group + cg
                        for i, ih in _taps(oh, kh, a.stride[0], a.padding[0],
                                           a.dilation[0], h):
                            for j, iw in _taps(ow, kw, a.stride[1], a.padding[1],
                                               a.dilation[1], w):
                                yield n, k, oh, ow, c, cg, i, j, ih, iw


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, ``torch.nn.functional.conv2d``: (N, K, Ho, Wo).

    ``out[n, k, oh, ow] = bias[k] + sum over c, i, j of
    x[n, c, oh*sh - top + i*dh, ow*sw - left + j*dw] * weight[k, c - group offset, i, j]``,
    x being zero outside the image. See :func:`fastconv.reference.conv2d`.
    """
    a = V.conv2d_args(x, weight, bias, stride, padding, dilation, groups)
    out = np.zeros(a.out_shape, dtype=a.x.dtype)
    if a.bias is not None:
        out[:] = a.bias[:, None, None]
    for n, k, oh, ow, c, cg, i, j, ih, iw in _conv_taps(a, *a.out_shape):
        out[n, k, oh, ow] += a.x[n, c, ih, iw] * a.weight[k, cg, i, j]
    return V.unbatch(out, a.unbatched)


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    needs_input_grad=True, needs_weight_grad=True, needs_bias_grad=True):
    """Gradients of :func:`conv2d`: (grad_input|None, grad_weight|None, grad_bias|None).

    Each multiply-add term of the forward sends ``grad_output * weight`` to the input and
    ``grad_output * x`` to the weight. See :func:`fastconv.reference.conv2d_backward`.
    """
    a = V.conv2d_backward_args(grad_output, x, weight, stride, padding, dilation, groups)
    g = a.grad_output
    dtype = a.x.dtype
    grad_input = np.zeros(a.x.shape, dtype) if needs_input_grad else None
    grad_weight = np.zeros(a.weight.shape, dtype) if needs_weight_grad else None
    grad_bias = None
    if needs_input_grad or needs_weight_grad:
        for n, k, oh, ow, c, cg, i, j, ih, iw in _conv_taps(a, *a.out_shape):
            if needs_input_grad:
                grad_input[n, c, ih, iw] += g[n, k, oh, ow] * a.weight[k, cg, i, j]
            if needs_weight_grad:
                grad_weight[k, cg, i, j] += g[n, k, oh, ow] * a.x[n, c, ih, iw]
    if needs_bias_grad:
        grad_bias = np.zeros(a.out_shape[1], dtype)
        n_, k_, ho, wo = a.out_shape
        for n in range(n_):
            for k in range(k_):
                for oh in range(ho):
                    for ow in range(wo):
                        grad_bias[k] += g[n, k, oh, ow]
    if grad_input is not None:
        grad_input = V.unbatch(grad_input, a.unbatched)
    return grad_input, grad_weight, grad_bias


# ----------------------------------------------------------------------------------------
# max pooling
# ----------------------------------------------------------------------------------------

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling, ``torch.nn.functional.max_pool2d``: (N, C, Ho, Wo) [, indices].

    torch's scan: start from the window's first in-image position at -inf, then take any
    value that is larger, or NaN. See :func:`fastconv.reference.max_pool2d`.
    """
    a = V.max_pool2d_args(x, kernel_size, stride, padding, dilation, ceil_mode)
    n_, c_, ho, wo = a.out_shape
    h, w = a.x.shape[2:]
    out = np.zeros(a.out_shape, dtype=a.x.dtype)
    indices = np.zeros(a.out_shape, dtype=np.int64)
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                rows = _taps(oh, a.kernel_size[0], a.stride[0], a.padding[0],
                             a.dilation[0], h)
                for ow in range(wo):
                    cols = _taps(ow, a.kernel_size[1], a.stride[1], a.padding[1],
                                 a.dilation[1], w)
                    best, best_index = -np.inf, rows[0][1] * w + cols[0][1]
                    for _, ih in rows:
                        for _, iw in cols:
                            value = a.x[n, c, ih, iw]
                            if value > best or np.isnan(value):
                                best, best_index = value, ih * w + iw
                    out[n, c, oh, ow] = best
                    indices[n, c, oh, ow] = best_index
    out = V.unbatch(out, a.unbatched)
    return (out, V.unbatch(indices, a.unbatched)) if return_indices else out


def max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`max_pool2d`: each output's gradient added at its flat index.

    See :func:`fastconv.reference.max_pool2d_backward`.
    """
    a = V.max_pool2d_backward_args(grad_output, indices, input_shape)
    n_, c_, ho, wo = a.grad_output.shape
    w = a.input_shape[3]
    grad_input = np.zeros(a.input_shape, dtype=a.grad_output.dtype)
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    index = int(a.indices[n, c, oh, ow])
                    grad_input[n, c, index // w, index % w] += a.grad_output[n, c, oh, ow]
    return V.unbatch(grad_input, a.unbatched)


# ----------------------------------------------------------------------------------------
# average pooling
# ----------------------------------------------------------------------------------------

def _avg_window(oh, ow, a, h, w):
    """torch's avg-pool window ``(h0, h1, w0, w1)``, clipped to the image, and its divisor."""
    h0 = oh * a.stride[0] - a.padding[0]
    w0 = ow * a.stride[1] - a.padding[1]
    h1 = min(h0 + a.kernel_size[0], h + a.padding[0])
    w1 = min(w0 + a.kernel_size[1], w + a.padding[1])
    with_padding = (h1 - h0) * (w1 - w0)
    h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
    if a.divisor_override is not None:
        divisor = a.divisor_override
    elif a.count_include_pad:
        divisor = with_padding
    else:
        divisor = (h1 - h0) * (w1 - w0)
    return h0, h1, w0, w1, divisor


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-D average pooling, ``torch.nn.functional.avg_pool2d``: (N, C, Ho, Wo).

    See :func:`fastconv.reference.avg_pool2d`.
    """
    a = V.avg_pool2d_args(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)
    n_, c_, ho, wo = a.out_shape
    h, w = a.x.shape[2:]
    dtype = a.x.dtype.type
    out = np.zeros(a.out_shape, dtype=a.x.dtype)
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    h0, h1, w0, w1, divisor = _avg_window(oh, ow, a, h, w)
                    total = dtype(0)
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            total += a.x[n, c, ih, iw]
                    out[n, c, oh, ow] = total / dtype(divisor)
    return V.unbatch(out, a.unbatched)


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of :func:`avg_pool2d`: each output's gradient over its divisor, added to
    every in-image position of its window. See :func:`fastconv.reference.avg_pool2d_backward`.
    """
    a = V.avg_pool2d_backward_args(grad_output, input_shape, kernel_size, stride, padding,
                                   ceil_mode, count_include_pad, divisor_override)
    g = a.grad_output
    n_, c_, ho, wo = g.shape
    h, w = a.input_shape[2:]
    dtype = g.dtype.type
    grad_input = np.zeros(a.input_shape, dtype=g.dtype)
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    h0, h1, w0, w1, divisor = _avg_window(oh, ow, a, h, w)
                    share = g[n, c, oh, ow] / dtype(divisor)
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            grad_input[n, c, ih, iw] += share
    return V.unbatch(grad_input, a.unbatched)
