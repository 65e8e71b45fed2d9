"""Argument validation shared by :mod:`fastconv.functional` and :mod:`fastconv.reference`.

Both paths call these functions first, so every refusal (type, message) is identical in
both. Each ``*_args`` function checks everything a kernel relies on and returns the
normalized arguments as a small namedtuple: 4-D views of the arrays (a 3-D ``(C, H, W)``
input gets a leading batch axis of 1 and ``unbatched=True``), ``(h, w)`` int pairs and the
output shape. Nothing here copies data or makes arrays contiguous; the compiled path does
that.

The output-size formulas live here, once: :func:`conv_output_size` and
:func:`pool_output_size`.
"""
import numbers
import operator
from collections import namedtuple

import numpy as np

__all__ = [
    "check_array", "check_index_array", "same_dtype", "pair", "batched", "check_nonempty",
    "check_size", "activation_args", "slope_arg", "activation_backward_args",
    "conv_output_size", "pool_output_size",
    "Conv2dArgs", "Conv2dBackwardArgs", "UnfoldArgs", "FoldArgs", "MaxPool2dArgs",
    "AvgPool2dArgs", "MaxPool2dBackwardArgs", "AvgPool2dBackwardArgs",
    "conv2d_args", "conv2d_backward_args", "unfold_args", "fold_args", "max_pool2d_args",
    "avg_pool2d_args", "max_pool2d_backward_args", "avg_pool2d_backward_args",
    "check_index_range", "BatchNormArgs", "batch_norm_args", "batch_norm_backward_args",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Largest stride / padding / dilation / kernel / size we accept. Kernels index with C
# integers: capping every geometric argument at 2**31 - 1 keeps each coordinate a kernel
# computes (at most a few such values added or multiplied by an output index) inside int64.
MAX_DIM = 2**31 - 1

# Largest number of bytes an output (or an im2col buffer) may take: what numpy can address.
MAX_BYTES = np.iinfo(np.intp).max

Conv2dArgs = namedtuple(
    "Conv2dArgs",
    "x weight bias stride padding dilation groups out_shape unbatched")
Conv2dArgs.__doc__ = """Normalized conv2d arguments.

x : (N, C, H, W) view; weight : (K, C/groups, kH, kW); bias : (K,) or None;
stride, dilation : (sh, sw), (dh, dw); padding : (top, left), the bottom/right padding
being whatever reaches ``out_shape`` (everything outside the image is zero);
groups : int; out_shape : (N, K, Ho, Wo); unbatched : the input was 3-D (C, H, W).
"""

Conv2dBackwardArgs = namedtuple(
    "Conv2dBackwardArgs",
    "grad_output x weight stride padding dilation groups out_shape unbatched")
Conv2dBackwardArgs.__doc__ = """Normalized conv2d_backward arguments.

grad_output : (N, K, Ho, Wo) view; the rest as in :class:`Conv2dArgs`.
"""

UnfoldArgs = namedtuple(
    "UnfoldArgs", "x kernel_size stride padding dilation blocks out_shape unbatched")
UnfoldArgs.__doc__ = """Normalized im2col (unfold) arguments.

x : (N, C, H, W) view; kernel_size, stride, padding, dilation : (h, w) pairs (padding is
symmetric); blocks : (Lh, Lw), the sliding-block grid; out_shape : (N, C*kH*kW, Lh*Lw);
unbatched : the input was 3-D and the result is 2-D (C*kH*kW, L).
"""

FoldArgs = namedtuple(
    "FoldArgs",
    "cols output_size kernel_size stride padding dilation blocks out_shape unbatched")
FoldArgs.__doc__ = """Normalized col2im (fold) arguments.

cols : (N, C*kH*kW, L) view; output_size, kernel_size, stride, padding, dilation : (h, w)
pairs; blocks : (Lh, Lw) with Lh*Lw == L; out_shape : (N, C, H, W); unbatched : cols was
2-D and the result is 3-D (C, H, W).
"""

MaxPool2dArgs = namedtuple(
    "MaxPool2dArgs", "x kernel_size stride padding dilation ceil_mode out_shape unbatched")
MaxPool2dArgs.__doc__ = """Normalized max_pool2d arguments.

x : (N, C, H, W) view; kernel_size, stride, padding, dilation : (h, w) pairs (padding is
symmetric, windows reaching past it are clipped); ceil_mode : bool;
out_shape : (N, C, Ho, Wo); unbatched : the input was 3-D.
"""

AvgPool2dArgs = namedtuple(
    "AvgPool2dArgs",
    "x kernel_size stride padding ceil_mode count_include_pad divisor_override "
    "out_shape unbatched")
AvgPool2dArgs.__doc__ = """Normalized avg_pool2d arguments.

x : (N, C, H, W) view; kernel_size, stride, padding : (h, w) pairs; ceil_mode,
count_include_pad : bool; divisor_override : nonzero int or None;
out_shape : (N, C, Ho, Wo); unbatched : the input was 3-D.
"""

MaxPool2dBackwardArgs = namedtuple(
    "MaxPool2dBackwardArgs", "grad_output indices input_shape unbatched")
MaxPool2dBackwardArgs.__doc__ = """Normalized max_pool2d_backward arguments.

grad_output, indices : (N, C, Ho, Wo) views, indices an integer array with every value in
[0, H*W); input_shape : (N, C, H, W) tuple of ints; unbatched : the input was 3-D.
"""

AvgPool2dBackwardArgs = namedtuple(
    "AvgPool2dBackwardArgs",
    "grad_output kernel_size stride padding ceil_mode count_include_pad divisor_override "
    "input_shape unbatched")
AvgPool2dBackwardArgs.__doc__ = """Normalized avg_pool2d_backward arguments.

grad_output : (N, C, Ho, Wo) view; input_shape : (N, C, H, W) tuple of ints; the rest as
in :class:`AvgPool2dArgs`.
"""


# ----------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------

def _type_name(value):
    return type(value).__name__


def _shape_str(shape):
    return str(tuple(int(s) for s in shape))


def check_array(a, name):
    """Check that ``a`` is a float32 or float64 ndarray; return it unchanged.

    Raises
    ------
    TypeError
        ``a`` is not a numpy.ndarray, or its dtype is not float32/float64.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {_type_name(a)}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    return a


def check_index_array(a, name):
    """Check that ``a`` is an ndarray of integer dtype (max-pool indices); return it.

    Raises
    ------
    TypeError
        ``a`` is not a numpy.ndarray, or its dtype is not an integer type (bool refused).
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {_type_name(a)}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
    return a


def same_dtype(**arrays):
    """Check that the given arrays (``None`` values skipped) share one dtype.

    Called as ``same_dtype(input=x, weight=w, bias=b)``; the message names the first
    array and the first one that differs, like torch: "expected input and weight to have
    the same dtype, got float32 and float64".

    Raises
    ------
    TypeError
        Two of the arrays have different dtypes.
    """
    given = [(name, a) for name, a in arrays.items() if a is not None]
    first_name, first = given[0]
    for name, a in given[1:]:
        if a.dtype != first.dtype:
            raise TypeError(
                f"expected {first_name} and {name} to have the same dtype, "
                f"got {first.dtype} and {a.dtype}")


def _as_int(value, name, what):
    if type(value) is int:  # the common case, ahead of the slow ABC check below
        return value
    # numbers.Integral admits numpy integers; bool is an Integral too, and torch refuses it.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {what}, got {_type_name(value)} {value!r}")
    return operator.index(value)


def pair(value, name, minimum=1):
    """Normalize an int or a 2-sequence of ints into an ``(int, int)`` tuple.

    Parameters
    ----------
    value : int or tuple/list of two ints
        bool, float and str are refused, as are sequences of another length.
    name : str
        The argument name, for messages.
    minimum : int
        Smallest value accepted for each element (1 for sizes, strides and dilations,
        0 for paddings).

    Raises
    ------
    TypeError
        ``value`` is not an int or a pair of ints.
    ValueError
        An element is below ``minimum`` or above ``MAX_DIM``.
    """
    what = "an int or a pair of ints"
    if isinstance(value, (tuple, list)):  # torch.Size is a tuple too
        if len(value) != 2:
            raise TypeError(f"{name} must be {what}, got {_type_name(value)} {value!r}")
        h, w = _as_int(value[0], name, what), _as_int(value[1], name, what)
    else:
        h = w = _as_int(value, name, what)
    if h < minimum or w < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {(h, w)}")
    if h > MAX_DIM or w > MAX_DIM:
        raise ValueError(f"{name} must be at most {MAX_DIM}, got {(h, w)}")
    return h, w


def batched(x, name):
    """Return ``(x4, was_unbatched)``: a 4-D (N, C, H, W) view of a 3-D or 4-D array.

    Raises
    ------
    ValueError
        ``x`` is neither 3-D (C, H, W) nor 4-D (N, C, H, W).
    """
    if x.ndim == 4:
        return x, False
    if x.ndim == 3:
        return x[np.newaxis], True
    raise ValueError(
        f"expected 3-D (C, H, W) or 4-D (N, C, H, W) {name}, "
        f"got {name} of shape {_shape_str(x.shape)}")


def unbatch(a, unbatched):
    """The inverse of :func:`batched` for a result: drop the batch axis of an unbatched call."""
    return a[0] if unbatched else a


def check_nonempty(batch_view, given, name):
    """Refuse an empty dimension other than the batch, as torch does.

    ``batch_view`` is the batched view of ``given`` (a leading batch axis added to an
    unbatched array); every axis after its first must be non-empty, since the kernels index
    the first element of every image.

    Raises
    ------
    ValueError
        A channel, height or width (for columns: a row or block) count is 0.
    """
    if 0 in batch_view.shape[1:]:
        raise ValueError(
            f"expected {name} with non-zero dimensions (only the batch may be empty), "
            f"got {name} of shape {_shape_str(given.shape)}")


def check_size(shape, itemsize, what):
    """Refuse a result of ``shape`` whose byte count numpy cannot address.

    Raises
    ------
    ValueError
        ``prod(shape) * itemsize`` exceeds the largest ``intp``.
    """
    count = 1
    for s in shape:
        count *= int(s)  # Python ints: the product itself cannot overflow
    if count * itemsize > MAX_BYTES:
        raise ValueError(
            f"{what} of shape {_shape_str(shape)} would take {count * itemsize} bytes, "
            f"more than can be addressed")
    return shape


def conv_output_size(size, kernel, stride, pad_total, dilation):
    """Output length of a convolution (or sliding-block grid) along one axis.

    torch's formula, with ``pad_total = pad_before + pad_after`` (``2 * padding`` when
    symmetric): ``floor((size + pad_total - dilation * (kernel - 1) - 1) / stride) + 1``.
    The result may be < 1; callers refuse that.
    """
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """Output length of a pooling along one axis (torch's ``pooling_output_shape``).

    ``floor_or_ceil((size + 2 * pad - dilation * (kernel - 1) - 1) / stride) + 1``; with
    ``ceil_mode`` the last window must still start inside the input or the left padding
    (``(out - 1) * stride < size + pad``), else it is dropped. The result may be < 1.
    """
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = span // stride + 1
    return out


def _input_shape(input_shape):
    """A 3- or 4-sequence of sizes -> ((N, C, H, W), was_unbatched)."""
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(
            f"input_shape must be a sequence of 3 or 4 ints, got {_type_name(input_shape)}")
    if len(input_shape) not in (3, 4):
        raise ValueError(
            f"expected input_shape of length 3 (C, H, W) or 4 (N, C, H, W), "
            f"got {tuple(input_shape)!r}")
    shape = tuple(_as_int(s, "input_shape", "a sequence of ints") for s in input_shape)
    unbatched = len(shape) == 3
    if unbatched:
        shape = (1,) + shape
    n, c, h, w = shape
    if n < 0 or c < 1 or h < 1 or w < 1:
        raise ValueError(
            f"input_shape must have a non-negative batch size and positive C, H, W, "
            f"got {tuple(input_shape)!r}")
    if max(shape) > MAX_DIM:
        raise ValueError(f"input_shape sizes must be at most {MAX_DIM}, "
                         f"got {tuple(input_shape)!r}")
    return shape, unbatched


def _check_grad_shape(grad_output, expected, unbatched):
    expected_given = expected[1:] if unbatched else expected
    if grad_output.shape != tuple(expected_given):
        raise ValueError(
            f"expected grad_output of shape {_shape_str(expected_given)}, "
            f"got grad_output of shape {_shape_str(grad_output.shape)}")


# ----------------------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------------------

def _conv_padding(padding, kernel, dilation, stride):
    """padding (int, pair, 'valid', 'same') -> ((top, left), (pad_total_h, pad_total_w))."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"padding='same' is not supported for strided convolutions, "
                    f"got stride={stride}")
            # torch: total d*(k-1); top/left get half, the odd one goes bottom/right
            total = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
            return (total[0] // 2, total[1] // 2), total
        raise ValueError(
            f"invalid padding string {padding!r}, should be one of 'valid', 'same'")
    top, left = pair(padding, "padding", minimum=0)
    return (top, left), (2 * top, 2 * left)


def conv2d_args(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Validate and normalize the arguments of ``conv2d``; return a :class:`Conv2dArgs`.

    Parameters are those of ``torch.nn.functional.conv2d``: x (N, C, H, W) or (C, H, W),
    weight (K, C/groups, kH, kW), bias (K,) or None, padding int, pair, 'valid' or 'same'.

    Raises
    ------
    TypeError
        Non-ndarray or non-float arrays, mismatched dtypes, non-int arguments.
    ValueError
        Wrong ndim, channel mismatch, groups not dividing, wrong bias shape, stride or
        dilation < 1, negative padding, 'same' with stride > 1, output size < 1, or an
        output too large to address.
    """
    check_array(x, "input")
    check_array(weight, "weight")
    if bias is not None:
        check_array(bias, "bias")
    same_dtype(input=x, weight=weight, bias=bias)
    x4, unbatched = batched(x, "input")
    if weight.ndim != 4:
        raise ValueError(
            f"expected 4-D weight (C_out, C_in/groups, kH, kW), "
            f"got weight of shape {_shape_str(weight.shape)}")
    k_out, c_per_group, kh, kw = weight.shape
    check_nonempty(x4, x, "input")
    if k_out < 1:
        raise ValueError(f"expected weight to be at least 1 at dimension 0, "
                         f"got weight of shape {_shape_str(weight.shape)}")
    if kh < 1 or kw < 1:
        raise ValueError(f"expected weight with a positive kernel size, "
                         f"got weight of shape {_shape_str(weight.shape)}")
    groups = _as_int(groups, "groups", "an int")
    if groups < 1:
        raise ValueError(f"non-positive groups is not supported, got groups={groups}")
    if k_out % groups:
        raise ValueError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at "
            f"dimension 0, but got weight of shape {_shape_str(weight.shape)}")
    n, c, h, w = x4.shape
    if c != c_per_group * groups:
        raise ValueError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected "
            f"input{list(x.shape)} to have {c_per_group * groups} channels, but got "
            f"{c} channels instead")
    if bias is not None and bias.shape != (k_out,):
        raise ValueError(
            f"Given weight of size {list(weight.shape)}, expected bias to be 1-D with "
            f"{k_out} elements, but got bias of shape {_shape_str(bias.shape)}")
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    pad, pad_total = _conv_padding(padding, (kh, kw), dilation, stride)
    ho = conv_output_size(h, kh, stride[0], pad_total[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], pad_total[1], dilation[1])
    if ho < 1 or wo < 1:
        raise ValueError(
            f"conv2d output size would be ({ho} x {wo}): padded input size per channel "
            f"({h + pad_total[0]} x {w + pad_total[1]}) is smaller than the dilated kernel "
            f"size ({dilation[0] * (kh - 1) + 1} x {dilation[1] * (kw - 1) + 1}); "
            f"input size ({h}, {w}), kernel ({kh}, {kw}), padding {padding!r}, "
            f"dilation {dilation}")
    out_shape = (n, k_out, ho, wo)
    check_size(out_shape, x.itemsize, "conv2d output")
    # the im2col of one image, which both paths build
    check_size((c_per_group * kh * kw, ho * wo), x.itemsize, "conv2d column buffer")
    return Conv2dArgs(x4, weight, bias, stride, pad, dilation, groups, out_shape, unbatched)


def conv2d_backward_args(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1,
                         grad_input_add=None, needs_input_grad=True):
    """Validate the arguments of ``conv2d_backward``; return a :class:`Conv2dBackwardArgs`.

    Everything :func:`conv2d_args` checks, plus grad_output: a float array of x's dtype
    and of the forward output's shape (3-D when x is 3-D); grad_input_add: None, or an
    array of x's shape and dtype, given only with needs_input_grad.
    """
    args = conv2d_args(x, weight, None, stride, padding, dilation, groups)
    check_array(grad_output, "grad_output")
    same_dtype(input=x, grad_output=grad_output)
    _check_grad_shape(grad_output, args.out_shape, args.unbatched)
    if grad_input_add is not None and not needs_input_grad:
        raise ValueError("grad_input_add needs needs_input_grad=True")
    _like_input(x, grad_input_add=grad_input_add)
    g4 = grad_output[np.newaxis] if args.unbatched else grad_output
    return Conv2dBackwardArgs(g4, args.x, args.weight, args.stride, args.padding,
                              args.dilation, args.groups, args.out_shape, args.unbatched)


# ----------------------------------------------------------------------------------------
# im2col / col2im (torch unfold / fold)
# ----------------------------------------------------------------------------------------

def _block_grid(size, kernel_size, stride, padding, dilation):
    return tuple(conv_output_size(size[i], kernel_size[i], stride[i], 2 * padding[i],
                                  dilation[i]) for i in range(2))


def _sliding_params(kernel_size, stride, padding, dilation):
    return (pair(kernel_size, "kernel_size"), pair(stride, "stride"),
            pair(padding, "padding", minimum=0), pair(dilation, "dilation"))


def unfold_args(x, kernel_size, stride=1, padding=0, dilation=1):
    """Validate the arguments of ``im2col`` (torch unfold); return an :class:`UnfoldArgs`.

    x is (N, C, H, W) or (C, H, W).

    Raises
    ------
    ValueError
        Wrong ndim, non-positive kernel/stride/dilation, negative padding, or an empty
        grid of sliding blocks.
    """
    check_array(x, "input")
    x4, unbatched = batched(x, "input")
    check_nonempty(x4, x, "input")
    kernel_size, stride, padding, dilation = _sliding_params(
        kernel_size, stride, padding, dilation)
    n, c, h, w = x4.shape
    blocks = _block_grid((h, w), kernel_size, stride, padding, dilation)
    if blocks[0] < 1 or blocks[1] < 1:
        raise ValueError(
            f"Given input with spatial size ({h}, {w}), kernel_size={kernel_size}, "
            f"dilation={dilation}, padding={padding}, calculated shape of the array of "
            f"sliding blocks as {blocks}, but its components must be at least one")
    out_shape = (n, c * kernel_size[0] * kernel_size[1], blocks[0] * blocks[1])
    check_size(out_shape, x.itemsize, "im2col output")
    return UnfoldArgs(x4, kernel_size, stride, padding, dilation, blocks, out_shape,
                      unbatched)


def fold_args(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """Validate the arguments of ``col2im`` (torch fold); return a :class:`FoldArgs`.

    cols is (N, C*kH*kW, L) or (C*kH*kW, L).

    Raises
    ------
    ValueError
        Wrong ndim, cols.shape[-2] not divisible by kH*kW, L not equal to the number of
        sliding blocks of ``output_size``, or non-positive sizes.
    """
    check_array(cols, "input")
    if cols.ndim not in (2, 3):
        raise ValueError(
            f"expected 2-D (C*kH*kW, L) or 3-D (N, C*kH*kW, L) input, "
            f"got input of shape {_shape_str(cols.shape)}")
    unbatched = cols.ndim == 2
    cols3 = cols[np.newaxis] if unbatched else cols
    check_nonempty(cols3, cols, "input")
    output_size = pair(output_size, "output_size")
    kernel_size, stride, padding, dilation = _sliding_params(
        kernel_size, stride, padding, dilation)
    n, ckk, length = cols3.shape
    kk = kernel_size[0] * kernel_size[1]
    if ckk % kk:
        raise ValueError(
            f"Expected size of input's dimension {cols.ndim - 2} to be divisible by the "
            f"product of kernel_size, but got input.size({cols.ndim - 2})={ckk} and "
            f"kernel_size={kernel_size}")
    blocks = _block_grid(output_size, kernel_size, stride, padding, dilation)
    if blocks[0] < 1 or blocks[1] < 1:
        raise ValueError(
            f"Given output_size={output_size}, kernel_size={kernel_size}, "
            f"dilation={dilation}, padding={padding}, calculated shape of the array of "
            f"sliding blocks as {blocks}, but its components must be at least one")
    if length != blocks[0] * blocks[1]:
        raise ValueError(
            f"Given output_size={output_size}, kernel_size={kernel_size}, "
            f"dilation={dilation}, padding={padding}, stride={stride}, expected size of "
            f"input's dimension {cols.ndim - 1} to match the calculated number of sliding "
            f"blocks {blocks[0]} * {blocks[1]} = {blocks[0] * blocks[1]}, but got "
            f"input.size({cols.ndim - 1})={length}")
    out_shape = (n, ckk // kk) + output_size
    check_size(out_shape, cols.itemsize, "col2im output")
    return FoldArgs(cols3, output_size, kernel_size, stride, padding, dilation, blocks,
                    out_shape, unbatched)


# ----------------------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------------------

def _pool_geometry(shape, kernel_size, stride, padding, dilation, ceil_mode, op):
    """Shared pooling checks on an (N, C, H, W) shape -> (kernel, stride, pad, out_shape)."""
    kernel_size = pair(kernel_size, "kernel_size")
    # torch: stride=None (or an empty sequence) means stride=kernel_size
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel_size
    else:
        stride = pair(stride, "stride")
    padding = pair(padding, "padding", minimum=0)
    # torch checks kernel_size // 2 >= padding, whatever the dilation
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise ValueError(
            f"{op}: pad should be at most half of kernel size, but got "
            f"padding={padding} and kernel_size={kernel_size}")
    n, c, h, w = shape
    ho = pool_output_size(h, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode)
    wo = pool_output_size(w, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"{op}: given input size ({c}x{h}x{w}), kernel_size={kernel_size}, "
            f"stride={stride}, padding={padding}, dilation={dilation}: calculated output "
            f"size ({c}x{ho}x{wo}) is too small")
    for i, (axis, size, out) in enumerate((("row", h, ho), ("column", w, wo))):
        empty = _padding_only_window(size, out, kernel_size[i], stride[i], padding[i],
                                     dilation[i])
        if empty is not None:
            # torch returns -inf there, with an index outside the plane
            raise ValueError(
                f"{op}: with kernel_size={kernel_size}, stride={stride}, "
                f"padding={padding} and dilation={dilation}, the window at output {axis} "
                f"{empty} reads only padding, no element of the input of size ({h}, {w})")
    return kernel_size, stride, padding, (n, c, ho, wo)


def _padding_only_window(size, out, kernel, stride, pad, dilation):
    """The first output index along one axis whose dilated window misses the input, or None.

    Only windows starting in the left padding can (the ceil_mode rule keeps every start
    below ``size``): their first tap at or past 0 must exist and lie inside the input.
    Without dilation it always does (pad <= kernel // 2 is checked first): the usual case
    returns at once.
    """
    if pad == 0 or dilation == 1:
        return None
    starts = np.arange(min(out, -(-pad // stride))) * stride - pad
    offset = -(starts // dilation)  # kernel offset of the first tap at or past 0
    missing = (offset >= kernel) | (starts + offset * dilation >= size)
    return int(np.argmax(missing)) if missing.any() else None


def _divisor(divisor_override):
    if divisor_override is None:
        return None
    divisor = _as_int(divisor_override, "divisor_override", "an int or None")
    if divisor == 0:
        raise ValueError("divisor_override must be nonzero, got 0")
    return divisor


def max_pool2d_args(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Validate the arguments of ``max_pool2d``; return a :class:`MaxPool2dArgs`.

    torch's rules: stride None or empty means kernel_size; padding at most
    kernel_size // 2; ceil_mode's last window starts inside the input or left padding.
    """
    check_array(x, "input")
    x4, unbatched = batched(x, "input")
    check_nonempty(x4, x, "input")
    dilation = pair(dilation, "dilation")
    ceil_mode = bool(ceil_mode)
    kernel_size, stride, padding, out_shape = _pool_geometry(
        x4.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    check_size(out_shape, x.itemsize, "max_pool2d output")
    return MaxPool2dArgs(x4, kernel_size, stride, padding, dilation, ceil_mode, out_shape,
                         unbatched)


def avg_pool2d_args(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                    count_include_pad=True, divisor_override=None):
    """Validate the arguments of ``avg_pool2d``; return an :class:`AvgPool2dArgs`.

    torch's rules as :func:`max_pool2d_args` (no dilation), and divisor_override a nonzero
    int or None.
    """
    check_array(x, "input")
    x4, unbatched = batched(x, "input")
    check_nonempty(x4, x, "input")
    ceil_mode = bool(ceil_mode)
    divisor = _divisor(divisor_override)
    kernel_size, stride, padding, out_shape = _pool_geometry(
        x4.shape, kernel_size, stride, padding, (1, 1), ceil_mode, "avg_pool2d")
    check_size(out_shape, x.itemsize, "avg_pool2d output")
    return AvgPool2dArgs(x4, kernel_size, stride, padding, ceil_mode,
                         bool(count_include_pad), divisor, out_shape, unbatched)


def max_pool2d_backward_args(grad_output, indices, input_shape, check_range=True):
    """Validate the arguments of ``max_pool2d_backward``; a :class:`MaxPool2dBackwardArgs`.

    grad_output : float (N, C, Ho, Wo) or (C, Ho, Wo); indices : integer array of the same
    shape, each value a flat index in [0, H*W) (unless check_range is False: the caller
    then checks them itself, with :func:`check_index_range`); input_shape : (N, C, H, W) or
    (C, H, W), with the same N, C as grad_output and the same number of dimensions.

    Raises
    ------
    ValueError
        Shape mismatches, or an index out of range (the message gives the value).
    """
    check_array(grad_output, "grad_output")
    check_index_array(indices, "indices")
    shape, unbatched = _input_shape(input_shape)
    if grad_output.ndim != len(input_shape):
        raise ValueError(
            f"expected grad_output with {len(input_shape)} dimensions like input_shape "
            f"{tuple(input_shape)}, got grad_output of shape "
            f"{_shape_str(grad_output.shape)}")
    g4 = grad_output[np.newaxis] if unbatched else grad_output
    if g4.shape[:2] != shape[:2]:
        raise ValueError(
            f"expected grad_output with the batch size and channels of input_shape "
            f"{tuple(input_shape)}, got grad_output of shape "
            f"{_shape_str(grad_output.shape)}")
    if indices.shape != grad_output.shape:
        raise ValueError(
            f"expected indices of the shape of grad_output {_shape_str(grad_output.shape)}, "
            f"got indices of shape {_shape_str(indices.shape)}")
    if check_range:
        check_index_range(indices, input_shape)
    check_size(shape, grad_output.itemsize, "max_pool2d_backward output")
    i4 = indices[np.newaxis] if unbatched else indices
    return MaxPool2dBackwardArgs(g4, i4, shape, unbatched)


def check_index_range(indices, input_shape):
    """Refuse max-pool indices outside [0, H*W) of input_shape, naming the value."""
    plane = input_shape[-2] * input_shape[-1]
    # One pass: seen as unsigned, a negative index is huge, so max() alone finds both kinds.
    unsigned = indices.view(indices.dtype.str.replace("i", "u")) if indices.dtype.kind == "i" else indices
    if indices.size and int(unsigned.max()) >= plane:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= plane:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"indices must lie in [0, H*W) = [0, {plane}) for input_shape "
                f"{tuple(input_shape)}, got index {bad}")


def avg_pool2d_backward_args(grad_output, input_shape, kernel_size, stride=None, padding=0,
                             ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Validate the arguments of ``avg_pool2d_backward``; an :class:`AvgPool2dBackwardArgs`.

    The pooling arguments as :func:`avg_pool2d_args`, applied to ``input_shape``;
    grad_output must have the forward output's shape (3-D when input_shape is).
    """
    check_array(grad_output, "grad_output")
    shape, unbatched = _input_shape(input_shape)
    ceil_mode = bool(ceil_mode)
    divisor = _divisor(divisor_override)
    kernel_size, stride, padding, out_shape = _pool_geometry(
        shape, kernel_size, stride, padding, (1, 1), ceil_mode, "avg_pool2d")
    _check_grad_shape(grad_output, out_shape, unbatched)
    check_size(shape, grad_output.itemsize, "avg_pool2d_backward output")
    g4 = grad_output[np.newaxis] if unbatched else grad_output
    return AvgPool2dBackwardArgs(g4, kernel_size, stride, padding, ceil_mode,
                                 bool(count_include_pad), divisor, shape, unbatched)


# ----------------------------------------------------------------------------------------
# elementwise activations
# ----------------------------------------------------------------------------------------

def activation_args(x, inplace=False):
    """Validate an activation's input: any shape, float32/float64, writeable if ``inplace``.

    Raises
    ------
    TypeError
        ``x`` is not a float32/float64 ndarray.
    ValueError
        ``inplace`` with a read-only ``x``.
    """
    check_array(x, "input")
    if inplace and not x.flags.writeable:
        raise ValueError("inplace=True needs a writeable input, got a read-only array")


def slope_arg(negative_slope):
    """leaky_relu's ``negative_slope`` as a float.

    Raises
    ------
    TypeError
        Not a real number (bool refused).
    """
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise TypeError(f"negative_slope must be a number, got {_type_name(negative_slope)} "
                        f"{negative_slope!r}")
    return float(negative_slope)


def activation_backward_args(grad_output, saved, saved_name):
    """Validate an activation backward's ``grad_output`` and the array saved by forward
    (``saved_name``: "output" or "input"): same dtype, same shape.

    Raises
    ------
    TypeError
        Non-ndarray or non-float arrays, or different dtypes.
    ValueError
        Different shapes.
    """
    check_array(grad_output, "grad_output")
    check_array(saved, saved_name)
    same_dtype(grad_output=grad_output, **{saved_name: saved})
    if grad_output.shape != saved.shape:
        raise ValueError(
            f"expected grad_output of shape {_shape_str(saved.shape)} like {saved_name}, "
            f"got grad_output of shape {_shape_str(grad_output.shape)}")


# ----------------------------------------------------------------------------------------
# batch normalization
# ----------------------------------------------------------------------------------------

BatchNormArgs = namedtuple("BatchNormArgs", "x3 count")
BatchNormArgs.__doc__ = """Normalized batch_norm arguments.

x3 : (N, C, L) view of the input (L the product of its dims past the channel axis);
count : N * L, the values per channel.
"""


def _real(value, name, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {_type_name(value)} {value!r}")
    value = float(value)
    if minimum is not None and not value >= minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


# Per-channel arrays that may have another float dtype than the input (a model whose
# buffers were cast apart from its parameters): read as float64, updated in their own dtype.
_ANY_FLOAT_VECTORS = ("running_mean", "running_var")


def _channel_vectors(x, writeable=(), **vectors):
    """Check per-channel arrays (None skipped): 1-D, x's channel count and (but for the
    running statistics) x's dtype."""
    channels = x.shape[1]
    for name, v in vectors.items():
        if v is None:
            continue
        check_array(v, name)
        if name not in _ANY_FLOAT_VECTORS:
            same_dtype(input=x, **{name: v})
        if v.shape != (channels,):
            raise ValueError(f"expected {name} of shape ({channels},) for input of shape "
                             f"{_shape_str(x.shape)} ({channels} channels), got {name} of "
                             f"shape {_shape_str(v.shape)}")
        if name in writeable and not v.flags.writeable:
            raise ValueError(f"{name} is updated in place in training: it must be writeable")


def _batch_view(x, name):
    check_array(x, name)
    if x.ndim < 2:
        raise ValueError(f"batch_norm expects {name} of at least 2 dims (N, C, ...), got "
                         f"shape {_shape_str(x.shape)}")
    return x.reshape(x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64)))


def _like_input(x, **arrays):
    """Check that the given arrays (None skipped) have the input's dtype and shape."""
    for name, a in arrays.items():
        if a is None:
            continue
        check_array(a, name)
        same_dtype(input=x, **{name: a})
        if a.shape != x.shape:
            raise ValueError(f"expected {name} of the input's shape {_shape_str(x.shape)}, got "
                             f"{name} of shape {_shape_str(a.shape)}")


def _batch_norm_count(x, x3, training):
    """BatchNormArgs with the values per channel; training needs more than one."""
    count = x3.shape[0] * x3.shape[2]
    if training and count <= 1:
        raise ValueError(f"expected more than 1 value per channel when training, got input "
                         f"of shape {_shape_str(x.shape)}")
    return BatchNormArgs(x3, count)


def batch_norm_args(x, running_mean, running_var, weight, bias, training, momentum, eps,
                    add=None):
    """Validate ``batch_norm``'s arguments (torch's order, then ``add``).

    Raises
    ------
    TypeError
        Non-float or mixed dtypes, a non-number ``momentum`` or ``eps``.
    ValueError
        An input of fewer than 2 dims; per-channel arrays of the wrong shape; one of
        running_mean/running_var without the other; no running statistics in eval mode;
        at most one value per channel in training; ``eps < 0``; read-only running
        statistics in training; ``add`` not of the input's shape and dtype.
    """
    x3 = _batch_view(x, "input")
    _like_input(x, add=add)
    _channel_vectors(x, writeable=("running_mean", "running_var") if training else (),
                     running_mean=running_mean, running_var=running_var, weight=weight,
                     bias=bias)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var must be given in evaluation mode "
                         "(training=False)")
    _real(momentum, "momentum")
    _real(eps, "eps", minimum=0)
    return _batch_norm_count(x, x3, training)


def batch_norm_backward_args(grad_output, x, weight, running_mean, running_var, save_mean,
                             save_invstd, training, eps, relu_output=None):
    """Validate ``batch_norm_backward``'s arguments; returns the input's BatchNormArgs.

    Raises
    ------
    TypeError, ValueError
        As :func:`batch_norm_args`; also grad_output or relu_output not of the input's
        shape and dtype, and one of save_mean/save_invstd without the other.
    """
    x3 = _batch_view(x, "input")
    activation_backward_args(grad_output, x, "input")
    _like_input(x, relu_output=relu_output)
    _channel_vectors(x, weight=weight, running_mean=running_mean, running_var=running_var,
                     save_mean=save_mean, save_invstd=save_invstd)
    if (save_mean is None) != (save_invstd is None):
        raise ValueError("save_mean and save_invstd must be given together (or both None)")
    if not training and save_mean is None and (running_mean is None or running_var is None):
        raise ValueError("evaluation mode (training=False) needs running_mean and running_var, "
                         "or save_mean and save_invstd")
    _real(eps, "eps", minimum=0)
    return _batch_norm_count(x, x3, training)
