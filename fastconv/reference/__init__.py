"""The fastconv functions in pure NumPy: ground truth for tests and the benchmark baseline.

Same names, signatures, return conventions and refusals as :mod:`fastconv.functional`
(both validate through :mod:`fastconv._validation`). This module is the vectorized form:
every op gathers its sliding windows with ``sliding_window_view`` (im2col) and reduces them
with one matmul or reduction, and every backward scatters with one strided add per kernel
offset (col2im). Results have the input's dtype and are computed in it; max-pool indices
are int64, flat within each H*W plane as in torch.

:mod:`fastconv.reference.loops` has the same functions as explicit textbook loops.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import _validation as V

__all__ = [
    "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "im2col", "col2im",
    "relu", "leaky_relu", "sigmoid", "tanh",
    "relu_backward", "leaky_relu_backward", "sigmoid_backward", "tanh_backward",
    "batch_norm", "batch_norm_backward",
]


# ----------------------------------------------------------------------------------------
# window geometry, shared by every op
# ----------------------------------------------------------------------------------------

def _extent(out, kernel, stride, dilation):
    """Rows (or columns) of the padded input that ``out`` windows touch."""
    return (out - 1) * stride + dilation * (kernel - 1) + 1


def _canvas_shape(shape, pad, out_hw, kernel, stride, dilation):
    """(N, C, Hc, Wc): the input plus top/left ``pad``, large enough for every window.

    The bottom/right padding is whatever the windows reach (asymmetric 'same' padding, or
    ceil_mode windows past the padding); rows past the image are fill.
    """
    n, c, h, w = shape
    return (n, c,
            max(pad[0] + h, _extent(out_hw[0], kernel[0], stride[0], dilation[0])),
            max(pad[1] + w, _extent(out_hw[1], kernel[1], stride[1], dilation[1])))


def _padded(x4, pad, out_hw, kernel, stride, dilation, fill=0):
    """x4 (N, C, H, W) placed at ``pad`` on a canvas of ``fill`` (x4 itself when none needed)."""
    shape = _canvas_shape(x4.shape, pad, out_hw, kernel, stride, dilation)
    if shape == x4.shape:
        return x4
    canvas = np.full(shape, fill, dtype=x4.dtype)
    h, w = x4.shape[2:]
    canvas[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w] = x4
    return canvas


def _windows(canvas, out_hw, kernel, stride, dilation):
    """A (N, C, Ho, Wo, kH, kW) view of the windows of a padded (N, C, Hc, Wc) canvas."""
    span = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    win = sliding_window_view(canvas, span, axis=(2, 3))
    return win[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]][
        :, :, :out_hw[0], :out_hw[1]]


def _unfold(canvas, out_hw, kernel, stride, dilation):
    """im2col of a padded canvas: (N, C*kH*kW, Ho*Wo), a fresh C-contiguous array."""
    n, c = canvas.shape[:2]
    win = _windows(canvas, out_hw, kernel, stride, dilation)
    return win.transpose(0, 1, 4, 5, 2, 3).reshape(
        n, c * kernel[0] * kernel[1], out_hw[0] * out_hw[1])


def _fold(cols6, shape, pad, kernel, stride, dilation):
    """col2im: sum (N, C, kH, kW, Ho, Wo) window values into an (N, C, H, W) image.

    Each value lands at input position ``(oh*sh - top + i*dh, ow*sw - left + j*dw)``;
    those outside the image (padding) are dropped.
    """
    out_hw = cols6.shape[4:]
    canvas = np.zeros(_canvas_shape(shape, pad, out_hw, kernel, stride, dilation),
                      dtype=cols6.dtype)
    rows, cols = _extent(out_hw[0], 1, stride[0], 1), _extent(out_hw[1], 1, stride[1], 1)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            top, left = i * dilation[0], j * dilation[1]
            canvas[:, :, top:top + rows:stride[0], left:left + cols:stride[1]] += \
                cols6[:, :, i, j]
    h, w = shape[2:]
    return canvas[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w]


# ----------------------------------------------------------------------------------------
# im2col / col2im
# ----------------------------------------------------------------------------------------

def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Extract sliding blocks: ``torch.nn.functional.unfold``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size, stride, padding, dilation : int or (int, int)

    Returns
    -------
    cols : ndarray, (N, C*kH*kW, L) or (C*kH*kW, L)
        Row ``c*kH*kW + i*kW + j`` holds kernel offset (i, j) of channel c for each of the
        ``L = Lh*Lw`` blocks, in row-major block order.
    """
    a = V.unfold_args(x, kernel_size, stride, padding, dilation)
    canvas = _padded(a.x, a.padding, a.blocks, a.kernel_size, a.stride, a.dilation)
    cols = _unfold(canvas, a.blocks, a.kernel_size, a.stride, a.dilation)
    return V.unbatch(cols, a.unbatched)


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """Sum sliding blocks back into an image: ``torch.nn.functional.fold``.

    The adjoint of :func:`im2col`: overlapping values add up.

    Parameters
    ----------
    cols : ndarray, (N, C*kH*kW, L) or (C*kH*kW, L), float32 or float64
    output_size : int or (int, int)
        (H, W) of the image.
    kernel_size, stride, padding, dilation : int or (int, int)

    Returns
    -------
    x : ndarray, (N, C, H, W) or (C, H, W)
    """
    a = V.fold_args(cols, output_size, kernel_size, stride, padding, dilation)
    n, c = a.out_shape[:2]
    cols6 = a.cols.reshape((n, c) + a.kernel_size + a.blocks)
    x = _fold(cols6, a.out_shape, a.padding, a.kernel_size, a.stride, a.dilation)
    return V.unbatch(np.ascontiguousarray(x), a.unbatched)


# ----------------------------------------------------------------------------------------
# conv2d
# ----------------------------------------------------------------------------------------

def _conv_cols(a):
    """im2col of a Conv2dArgs input, grouped: (N, groups, C/groups*kH*kW, Ho*Wo)."""
    kernel = a.weight.shape[2:]
    out_hw = a.out_shape[2:]
    canvas = _padded(a.x, a.padding, out_hw, kernel, a.stride, a.dilation)
    cols = _unfold(canvas, out_hw, kernel, a.stride, a.dilation)
    return cols.reshape(a.x.shape[0], a.groups, cols.shape[1] // a.groups,
                        out_hw[0] * out_hw[1])


def _grouped_weight(a):
    """The weight as (groups, K/groups, C/groups*kH*kW) matrices."""
    k, c_per_group, kh, kw = a.weight.shape
    return a.weight.reshape(a.groups, k // a.groups, c_per_group * kh * kw)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, ``torch.nn.functional.conv2d``: im2col then one matmul.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W), float32 or float64
    weight : ndarray, (K, C/groups, kH, kW), same dtype
    bias : ndarray, (K,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), 'valid' or 'same'
    groups : int

    Returns
    -------
    out : ndarray, (N, K, Ho, Wo) or (K, Ho, Wo)
    """
    a = V.conv2d_args(x, weight, bias, stride, padding, dilation, groups)
    cols = _conv_cols(a)
    # (G, K/G, C/G*kH*kW) @ (N, G, C/G*kH*kW, L) -> (N, G, K/G, L), i.e. (N, K, Ho, Wo)
    out = np.matmul(_grouped_weight(a), cols).reshape(a.out_shape)
    if a.bias is not None:
        out += a.bias[:, None, None]
    return V.unbatch(out, a.unbatched)


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    needs_input_grad=True, needs_weight_grad=True, needs_bias_grad=True,
                    grad_input_add=None):
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : ndarray, (N, K, Ho, Wo) or (K, Ho, Wo)
        Gradient of the loss with respect to the output of ``conv2d(x, weight, ...)``.
    x, weight, stride, padding, dilation, groups
        As given to :func:`conv2d`.
    needs_input_grad, needs_weight_grad, needs_bias_grad : bool
        Which gradients to compute; the others are returned as None.
    grad_input_add : ndarray of x's shape and dtype, or None
        Added to grad_input.

    Returns
    -------
    grad_input : ndarray of x's shape, or None
    grad_weight : ndarray, (K, C/groups, kH, kW), or None
    grad_bias : ndarray, (K,), or None
    """
    a = V.conv2d_backward_args(grad_output, x, weight, stride, padding, dilation, groups,
                               grad_input_add, needs_input_grad)
    n, k, ho, wo = a.out_shape
    g = a.grad_output.reshape(n, a.groups, k // a.groups, ho * wo)
    grad_input = grad_weight = grad_bias = None
    if needs_input_grad:
        gcols = np.matmul(_grouped_weight(a).transpose(0, 2, 1), g)  # (N, G, C/G*kH*kW, L)
        kernel = a.weight.shape[2:]
        cols6 = gcols.reshape((n, a.x.shape[1]) + kernel + (ho, wo))
        grad_input = np.ascontiguousarray(
            _fold(cols6, a.x.shape, a.padding, kernel, a.stride, a.dilation))
        grad_input = V.unbatch(grad_input, a.unbatched)
        if grad_input_add is not None:
            grad_input = grad_input + grad_input_add
    if needs_weight_grad:
        cols = _conv_cols(a)
        grad_weight = np.matmul(g, cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(
            a.weight.shape)
    if needs_bias_grad:
        grad_bias = a.grad_output.sum(axis=(0, 2, 3))
    return grad_input, grad_weight, grad_bias


# ----------------------------------------------------------------------------------------
# max pooling
# ----------------------------------------------------------------------------------------

def _valid_offsets(size, out, kernel, stride, pad, dilation):
    """(positions, inside): input coordinate of each (output, kernel offset), and whether
    it lies in the image rather than in the padding."""
    pos = (np.arange(out)[:, None] * stride - pad) + np.arange(kernel)[None, :] * dilation
    return pos, (pos >= 0) & (pos < size)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling, ``torch.nn.functional.max_pool2d``.

    Windows are clipped to the image (padding never wins). Among equal maxima the first
    in row-major window order wins; a NaN in the window wins over everything (the last
    NaN, as in torch).

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to kernel_size.
    padding, dilation : int or (int, int)
    ceil_mode, return_indices : bool

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo)
    indices : ndarray of int64, same shape, only if ``return_indices``
        Flat index ``h*W + w`` of each maximum within its H*W plane.
    """
    a = V.max_pool2d_args(x, kernel_size, stride, padding, dilation, ceil_mode)
    n, c, ho, wo = a.out_shape
    h, w = a.x.shape[2:]
    kh, kw = a.kernel_size
    canvas = _padded(a.x, a.padding, (ho, wo), a.kernel_size, a.stride, a.dilation,
                     fill=-np.inf)
    flat = _windows(canvas, (ho, wo), a.kernel_size, a.stride, a.dilation).reshape(
        n, c, ho, wo, kh * kw)
    out = flat.max(axis=-1)  # NaN propagates
    if not return_indices:
        return V.unbatch(out, a.unbatched)
    rows, row_in = _valid_offsets(h, ho, kh, a.stride[0], a.padding[0], a.dilation[0])
    cols, col_in = _valid_offsets(w, wo, kw, a.stride[1], a.padding[1], a.dilation[1])
    inside = (row_in[:, None, :, None] & col_in[None, :, None, :]).reshape(ho, wo, kh * kw)
    # torch keeps the first in-image position reaching the maximum: an all -inf window
    # points at its first in-image element, never at the padding
    pos = ((flat == out[..., None]) & inside).argmax(axis=-1)
    nan = np.isnan(out)
    if nan.any():
        # torch's `val > max || isnan(val)` lets every later NaN take over: the last one wins
        pos[nan] = kh * kw - 1 - np.isnan(flat[nan][:, ::-1]).argmax(axis=-1)
    oh, ow = np.arange(ho)[:, None], np.arange(wo)[None, :]
    indices = rows[oh, pos // kw] * w + cols[ow, pos % kw]
    return V.unbatch(out, a.unbatched), V.unbatch(indices.astype(np.int64), a.unbatched)


def max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`max_pool2d`: each output's gradient added at its index.

    Parameters
    ----------
    grad_output : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), float32 or float64
    indices : integer ndarray, same shape
        As returned by ``max_pool2d(..., return_indices=True)``.
    input_shape : tuple of int
        (N, C, H, W) or (C, H, W), the shape of the pooled input.

    Returns
    -------
    grad_input : ndarray of ``input_shape``
    """
    a = V.max_pool2d_backward_args(grad_output, indices, input_shape)
    n, c, h, w = a.input_shape
    grad_input = np.zeros((n * c, h * w), dtype=a.grad_output.dtype)
    planes = np.arange(n * c)[:, None]
    # add.at accumulates repeated indices (overlapping windows) in output order
    plane_out = a.grad_output.shape[2] * a.grad_output.shape[3]
    np.add.at(grad_input, (planes, a.indices.reshape(n * c, plane_out)),
              a.grad_output.reshape(n * c, plane_out))
    return V.unbatch(grad_input.reshape(a.input_shape), a.unbatched)


# ----------------------------------------------------------------------------------------
# average pooling
# ----------------------------------------------------------------------------------------

def _avg_divisor(input_hw, out_hw, kernel, stride, padding, count_include_pad,
                 divisor_override, dtype):
    """(Ho, Wo) divisors, torch's rule: the window clipped to the padded input when
    counting padding, to the image otherwise, or ``divisor_override``."""
    if divisor_override is not None:
        return np.asarray(divisor_override, dtype=dtype)
    counts = []
    for size, out, k, s, p in zip(input_hw, out_hw, kernel, stride, padding):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, size)
        counts.append(end - start)
    return np.multiply.outer(*counts).astype(dtype)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-D average pooling, ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x, kernel_size, stride, padding, ceil_mode
        As for :func:`max_pool2d` (which also takes dilation).
    count_include_pad : bool
        Count the padding in a window's size.
    divisor_override : int, optional
        Divide every window sum by this instead of the window's size.

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo)
    """
    a = V.avg_pool2d_args(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)
    out_hw = a.out_shape[2:]
    canvas = _padded(a.x, a.padding, out_hw, a.kernel_size, a.stride, (1, 1))
    sums = _windows(canvas, out_hw, a.kernel_size, a.stride, (1, 1)).sum(axis=(-2, -1))
    out = sums / _avg_divisor(a.x.shape[2:], out_hw, a.kernel_size, a.stride, a.padding,
                              a.count_include_pad, a.divisor_override, a.x.dtype)
    return V.unbatch(out, a.unbatched)


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of :func:`avg_pool2d`: each output's gradient, divided by its divisor,
    added to every in-image position of its window.

    Parameters
    ----------
    grad_output : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), float32 or float64
    input_shape : tuple of int
        (N, C, H, W) or (C, H, W), the shape of the pooled input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to :func:`avg_pool2d`.

    Returns
    -------
    grad_input : ndarray of ``input_shape``
    """
    a = V.avg_pool2d_backward_args(grad_output, input_shape, kernel_size, stride, padding,
                                   ceil_mode, count_include_pad, divisor_override)
    g = a.grad_output
    n, c, ho, wo = g.shape
    share = g / _avg_divisor(a.input_shape[2:], (ho, wo), a.kernel_size, a.stride,
                             a.padding, a.count_include_pad, a.divisor_override, g.dtype)
    cols6 = np.broadcast_to(share[:, :, None, None], (n, c) + a.kernel_size + (ho, wo))
    grad_input = _fold(cols6, a.input_shape, a.padding, a.kernel_size, a.stride, (1, 1))
    return V.unbatch(np.ascontiguousarray(grad_input), a.unbatched)


# ----------------------------------------------------------------------------------------
# elementwise activations
# ----------------------------------------------------------------------------------------

def relu(x, inplace=False):
    """``max(x, 0)`` (NaN and -0.0 kept), into ``x`` when ``inplace``; x's shape and dtype."""
    V.activation_args(x, inplace=inplace)
    # Not np.maximum(x, 0): that turns -0.0 into 0.0, torch keeps it.
    if inplace:
        np.copyto(x, 0, where=x < 0)
        return x
    return np.where(x < 0, x.dtype.type(0), x)


def leaky_relu(x, negative_slope=0.01, inplace=False):
    """``x if x > 0 else x * negative_slope`` (the slope in x's dtype), into ``x`` when
    ``inplace``."""
    V.activation_args(x, inplace)
    slope = V.slope_arg(negative_slope)
    factor = np.where(x > 0, x.dtype.type(1), x.dtype.type(slope))  # x * 1 is x, exactly
    return np.multiply(x, factor, out=x if inplace else None)


def sigmoid(x):
    """``1 / (1 + exp(-x))``: exp overflowing to inf below about -88 (float32) gives the
    limit, 0."""
    V.activation_args(x)
    y = np.negative(x)
    with np.errstate(over="ignore"):
        np.exp(y, out=y)
    y += 1
    return np.reciprocal(y, out=y)


def tanh(x):
    """``tanh(x)``, x's shape and dtype."""
    V.activation_args(x)
    return np.tanh(x)


def relu_backward(grad_output, output):
    """0 where ``output <= 0``, else grad_output (torch's threshold_backward)."""
    V.activation_backward_args(grad_output, output, "output")
    return np.where(output <= 0, grad_output.dtype.type(0), grad_output)


def leaky_relu_backward(grad_output, input, negative_slope=0.01):
    """grad_output where ``input > 0``, else ``grad_output * negative_slope``; with
    ``negative_slope >= 0`` the forward's output may stand for ``input``."""
    slope = V.slope_arg(negative_slope)
    V.activation_backward_args(grad_output, input, "input")
    dtype = grad_output.dtype.type
    return grad_output * np.where(input > 0, dtype(1), dtype(slope))


def sigmoid_backward(grad_output, output):
    """``grad_output * (1 - output) * output`` (torch's order of operations)."""
    V.activation_backward_args(grad_output, output, "output")
    return grad_output * (1 - output) * output


def tanh_backward(grad_output, output):
    """``grad_output * ((1 - output) * (1 + output))``: 1 - output**2, rounded once less
    badly near +-1."""
    V.activation_backward_args(grad_output, output, "output")
    return grad_output * ((1 - output) * (1 + output))


# ----------------------------------------------------------------------------------------
# batch normalization
# ----------------------------------------------------------------------------------------

def _per_channel(v, x3, fill):
    """A (C,) array as (C, 1) for broadcasting over (N, C, L); ``fill`` when None."""
    return (np.full(x3.shape[1], fill, x3.dtype) if v is None else v)[:, None]


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, return_stats=False, add=None, relu=False):
    """``(input - mean) / sqrt(var + eps) * weight + bias`` per channel (axis 1): the batch's
    mean and biased variance in training (the running statistics updated in place, the
    variance unbiased), the running ones otherwise; ``(out, save_mean, save_invstd)`` with
    ``return_stats``. Then ``out + add`` when ``add`` is given and :func:`relu` of that
    with ``relu``."""
    a = V.batch_norm_args(input, running_mean, running_var, weight, bias, training, momentum,
                          eps, add)
    x3, dtype = a.x3, input.dtype.type
    if training:
        mean, var = x3.mean(axis=(0, 2)), x3.var(axis=(0, 2))
        if running_mean is not None:
            m = dtype(momentum)
            running_mean *= 1 - m
            running_mean += m * mean
            running_var *= 1 - m
            running_var += m * var * dtype(a.count / (a.count - 1))  # in the buffers' dtype
    else:
        mean, var = running_mean.astype(input.dtype), running_var.astype(input.dtype)
    invstd = 1 / np.sqrt(var + dtype(eps))
    out = ((x3 - mean[:, None]) * invstd[:, None] * _per_channel(weight, x3, 1)
           + _per_channel(bias, x3, 0)).reshape(input.shape)
    if add is not None:
        out += add
    if relu:
        np.copyto(out, 0, where=out < 0)  # :func:`relu` in place (the argument hides it)
    return (out, mean, invstd) if return_stats else out


def batch_norm_backward(grad_output, input, weight=None, running_mean=None, running_var=None,
                        save_mean=None, save_invstd=None, training=False, eps=1e-5, *,
                        input_grad=True, relu_output=None):
    """``(grad_input or None, grad_weight, grad_bias)`` of :func:`batch_norm`: through the
    batch statistics in training (save_mean/save_invstd, or recomputed from input), through
    fixed ones otherwise (save_mean/save_invstd, or the running statistics). With
    ``relu_output`` (a ``relu=True`` forward's output) grad_output is first taken through
    that ReLU (:func:`relu_backward`)."""
    a = V.batch_norm_backward_args(grad_output, input, weight, running_mean, running_var,
                                   save_mean, save_invstd, training, eps, relu_output)
    if relu_output is not None:
        grad_output = relu_backward(grad_output, relu_output)
    x3, dtype = a.x3, input.dtype.type
    g3 = grad_output.reshape(x3.shape)
    if save_mean is not None:
        mean, invstd = save_mean, save_invstd
    elif training:
        mean, invstd = x3.mean(axis=(0, 2)), 1 / np.sqrt(x3.var(axis=(0, 2)) + dtype(eps))
    else:
        mean = running_mean.astype(input.dtype)
        invstd = 1 / np.sqrt(running_var.astype(input.dtype) + dtype(eps))
    xhat = (x3 - mean[:, None]) * invstd[:, None]
    sum_g, sum_gx = g3.sum(axis=(0, 2)), (g3 * xhat).sum(axis=(0, 2))
    grad_input = None
    if input_grad:
        scale = invstd[:, None] * _per_channel(weight, x3, 1)
        if training:
            g3 = g3 - (sum_g / a.count)[:, None] - xhat * (sum_gx / a.count)[:, None]
        grad_input = (g3 * scale).reshape(input.shape)
    return grad_input, sum_gx, sum_g


from . import loops  # noqa: E402  (the textbook form, as fastconv.reference.loops)
from .adaptive import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward,  # noqa: E402,F401
                       adaptive_max_pool2d, adaptive_max_pool2d_backward)
from .softmax import (cross_entropy, log_softmax, log_softmax_backward, nll_loss,  # noqa: E402,F401
                      softmax, softmax_backward)
