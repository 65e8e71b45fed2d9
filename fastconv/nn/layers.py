"""Layers with torch's names, arguments, parameter layouts and default init.

Each layer computes its forward and backward with NumPy or with the ops of the selected
backend (:func:`fastconv.backend`): the compiled :mod:`fastconv.functional` by default,
:mod:`fastconv.reference` on request. Arrays are NCHW, float32 unless the model is cast.
"""
import numbers

import numpy as np

from .. import _backend, _random
from .. import functional as F
from . import _leaves, init
from .module import Module
from .parameter import Parameter

__all__ = [
    "Conv2d", "MaxPool2d", "AvgPool2d", "Linear", "Flatten", "ReLU", "LeakyReLU", "Sigmoid",
    "Tanh", "Dropout", "BatchNorm1d", "BatchNorm2d", "Dropout2d",
]


def _pair(value, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (int(value), int(value))
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    return (int(h), int(w))


def _size(value, name):
    """A positive int layer size (channels, features, kernel side), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _dtype(dtype):
    return np.dtype(np.float32 if dtype is None else dtype)


# What forward keeps for backward, set past Module.__setattr__ (a Python call per set): the
# names are private ones that no registry holds, so a plain attribute is what it would set.
_keep = object.__setattr__


def _cached(layer, name):
    """The value ``forward`` cached for ``backward``, or a clear error when there is none."""
    value = layer.__dict__.get(name)
    if value is None:
        raise RuntimeError(f"{type(layer).__name__}.backward called before forward"
                           + (" in train mode" if name == "_indices" else ""))
    return value


class Conv2d(Module):
    """2-D convolution (cross-correlation) over (N, C_in, H, W), like ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int), 'valid' or 'same', default 0
    groups : int, default 1
        Both channel counts must be divisible by it.
    bias : bool, default True
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, default 'zeros'
        What the padding is filled with: zeros, the mirror image (without the edge), the edge
        value repeated, or the opposite edge (wrap-around).
    dtype : numpy dtype, default float32

    Attributes
    ----------
    weight : Parameter (C_out, C_in/groups, kH, kW)
    bias : Parameter (C_out,) or None
        Both start U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in/groups * kH * kW
        (torch's default).

    Shape: input (N, C_in, H, W) -> output (N, C_out, Ho, Wo), torch's output-size formula.
    """

    _PADDING_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", dtype=None):
        super().__init__()
        in_channels, out_channels = _size(in_channels, "in_channels"), _size(out_channels, "out_channels")
        groups = _size(groups, "groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        if padding_mode not in self._PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {', '.join(map(repr, self._PADDING_MODES))}, "
                             f"got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = tuple(_size(k, "kernel_size") for k in _pair(kernel_size, "kernel_size"))
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"padding must be 'valid', 'same' or ints, got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding")
        self.padding_mode = padding_mode
        dtype = _dtype(dtype)
        self.weight = Parameter(np.empty((out_channels, in_channels // groups) + self.kernel_size, dtype))
        self.bias = Parameter(np.empty(out_channels, dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """torch's default init (see the class docstring)."""
        init._default_(self.weight, self.bias)

    def _explicit_padding(self):
        """((top, bottom), (left, right)) for the non-zero padding modes."""
        if self.padding == "valid":
            return ((0, 0), (0, 0))
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            return tuple((t // 2, t - t // 2) for t in totals)
        return tuple((p, p) for p in self.padding)

    def _pad(self, x):
        """x padded by ``padding_mode`` (for the non-zero modes), checked as torch checks it."""
        pads = self._explicit_padding()
        for (before, after), size, axis in zip(pads, x.shape[-2:], ("height", "width")):
            limit = size - 1 if self.padding_mode == "reflect" else size
            if max(before, after) > limit:
                raise ValueError(f"{self.padding_mode} padding of {max(before, after)} is too large "
                                 f"for an input {axis} of {size} (at most {limit})")
        return np.pad(x, ((0, 0),) * (x.ndim - 2) + pads, mode=self._PADDING_MODES[self.padding_mode])

    def _unpad_grad(self, grad_padded, shape):
        """Gradient of :meth:`_pad`: every padded row's gradient added to the row it copied,
        in order, then likewise the columns. Slice additions, not a product with one-hot
        maps: no BLAS (whose bits may follow its thread count), and no inf * 0 = NaN."""
        grad = grad_padded
        mode = self._PADDING_MODES[self.padding_mode]
        for axis, (before, after), size in zip((-2, -1), self._explicit_padding(), shape[-2:]):
            source = np.pad(np.arange(size), (before, after), mode=mode)  # padded i copies source[i]
            g = np.moveaxis(grad, axis, 0)
            folded = g[before:before + size].copy()
            for i in (*range(before), *range(before + size, len(source))):
                folded[source[i]] += g[i]
            grad = np.moveaxis(folded, 0, axis)
        return np.ascontiguousarray(grad)

    def forward(self, x):
        ops = _backend.ops()
        params = self._parameters  # read directly: self.weight is a Module.__getattr__ call
        weight, bias = params["weight"].data, params.get("bias")
        bias = None if bias is None else bias.data
        if self.padding_mode == "zeros":
            _keep(self, "_input", x)
            return ops.conv2d(x, weight, bias, self.stride, self.padding, self.dilation,
                              self.groups)
        self._input_shape = x.shape
        self._input = self._pad(x)
        return ops.conv2d(self._input, weight, bias, self.stride, 0, self.dilation, self.groups)

    def backward(self, grad_output):
        x = _cached(self, "_input")
        zeros = self.padding_mode == "zeros"
        weight, bias = self.weight, self.bias
        plan = _leaves.active()  # under fit: weight and bias gradients leaf by leaf

        def grads(grad_output, x, input_grad, param_grads):
            return _backend.ops().conv2d_backward(
                grad_output, x, weight.data, self.stride, self.padding if zeros else 0,
                self.dilation, self.groups, needs_input_grad=input_grad,
                needs_weight_grad=param_grads and weight.requires_grad,
                needs_bias_grad=param_grads and bias is not None and bias.requires_grad)

        gi, gw, gb = grads(grad_output, x, self.requires_input_grad, plan is None)
        if plan is not None:
            parts = plan.leaf_parts(lambda leaf: grads(grad_output[leaf], x[leaf], False, True))
            for param, k in ((weight, 1), (bias, 2)):
                if parts[0][k] is not None:
                    plan.add(param, [p[k] for p in parts])
        if gw is not None:
            weight.accumulate_grad(gw)
        if gb is not None:
            bias.accumulate_grad(gb)
        if gi is None or zeros:
            return gi
        return self._unpad_grad(gi, self._input_shape)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class _IndexedPool(Module):
    """Max pooling that keeps its argmax indices in train mode for backward (and not in eval
    mode, where backward then raises); subclasses give ``_pool`` and ``_pool_backward``."""

    def forward(self, x):
        ops = _backend.ops()
        if not self.training:
            _keep(self, "_indices", None)
            return self._pool(ops, x)
        out, self._indices = self._pool(ops, x, return_indices=True)
        self._input_shape = x.shape
        return out

    def backward(self, grad_output):
        indices = _cached(self, "_indices")
        if not self.requires_input_grad:
            return None
        return self._pool_backward(_backend.ops(), grad_output, indices, self._input_shape)


class MaxPool2d(_IndexedPool):
    """2-D max pooling, like ``torch.nn.MaxPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding, dilation : int or (int, int), default 0 and 1
    ceil_mode : bool, default False

    Shape: (N, C, H, W) -> (N, C, Ho, Wo). In train mode forward keeps the argmax indices for
    backward; in eval mode it does not (backward then raises).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def _pool(self, ops, x, return_indices=False):
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                              self.ceil_mode, return_indices=return_indices)

    @staticmethod
    def _pool_backward(ops, grad_output, indices, input_shape):
        return ops.max_pool2d_backward(grad_output, indices, input_shape)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling, like ``torch.nn.AvgPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int), default 0
    ceil_mode : bool, default False
    count_include_pad : bool, default True
        Whether the zero padding counts in each window's divisor.
    divisor_override : int, optional
        Divide every window sum by this instead.

    Shape: (N, C, H, W) -> (N, C, Ho, Wo).
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                self.divisor_override)

    def forward(self, x):
        self._input_shape = x.shape
        return _backend.ops().avg_pool2d(x, *self._args())

    def backward(self, grad_output):
        shape = _cached(self, "_input_shape")
        if not self.requires_input_grad:
            return None
        return _backend.ops().avg_pool2d_backward(grad_output, shape, *self._args())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Linear(Module):
    """``y = x @ weight.T + bias``, like ``torch.nn.Linear``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : numpy dtype, default float32

    Attributes
    ----------
    weight : Parameter (out_features, in_features)
    bias : Parameter (out_features,) or None
        Both start U(-1/sqrt(in_features), 1/sqrt(in_features)) (torch's default).

    Shape: (*, in_features) -> (*, out_features).

    The matrix products run on one BLAS thread: a multi-threaded BLAS between the OpenMP
    kernels of the other layers stalls both pools (measured: a LeNet step 5x slower on a
    busy machine), and these products are small.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        in_features, out_features = _size(in_features, "in_features"), _size(out_features, "out_features")
        self.in_features, self.out_features = in_features, out_features
        dtype = _dtype(dtype)
        self.weight = Parameter(np.empty((out_features, in_features), dtype))
        self.bias = Parameter(np.empty(out_features, dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """torch's default init (see the class docstring)."""
        init._default_(self.weight, self.bias)

    def forward(self, x):
        params = self._parameters  # read directly: self.weight is a Module.__getattr__ call
        weight, bias = params["weight"], params.get("bias")
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"Linear: expected input[..., {self.in_features}], got input of shape "
                             f"{x.shape}")
        _keep(self, "_input", x)
        out = self._product(x.reshape(-1, self.in_features), weight.data, trans_b=True,
                            bias=None if bias is None else bias.data)
        return out.reshape(x.shape[:-1] + (self.out_features,))

    @staticmethod
    def _product(a, b, trans_a=False, trans_b=False, bias=None):
        """op(a) @ op(b) (+ bias on every row): on fastconv's threads with the compiled
        backend (both cast to NumPy's result dtype, so mixed dtypes get the same
        thread-independent product), else NumPy's matmul on its own BLAS threads (the
        reference backend is the NumPy baseline, and runs no OpenMP region for BLAS to
        fight). A bias of the product's dtype is added as the product's blocks come out
        (the bits of ``out += bias``); any other one by NumPy afterwards."""
        dtype = a.dtype
        if dtype != b.dtype or dtype not in (np.float32, np.float64):  # (result_type: ~0.5 us)
            dtype = np.result_type(a, b)
        if _backend.ops() is F and dtype in (np.float32, np.float64):
            fused = bias is not None and bias.dtype == dtype
            out = F._matmul(a if a.dtype == dtype else a.astype(dtype),
                            b if b.dtype == dtype else b.astype(dtype), trans_a, trans_b,
                            bias if fused else None)
            if fused:
                return out
        else:
            out = (a.T if trans_a else a) @ (b.T if trans_b else b)
        if bias is not None:
            out += bias
        return out

    def backward(self, grad_output):
        x = _cached(self, "_input")
        expected = x.shape[:-1] + (self.out_features,)
        if grad_output.shape != expected:  # a reshape could take some wrong shapes silently
            raise ValueError(f"Linear: expected grad_output of shape {expected}, got grad_output "
                             f"of shape {grad_output.shape}")
        g2 = grad_output.reshape(-1, self.out_features)
        rows = lambda a, leaf, features: a[leaf].reshape(-1, features)  # a leaf of samples
        if self.bias is not None and self.bias.requires_grad:
            _leaves.accumulate(self.bias, lambda: g2.sum(axis=0),
                               lambda leaf: rows(grad_output, leaf, self.out_features).sum(axis=0))
        if self.weight.requires_grad:
            _leaves.accumulate(
                self.weight, lambda: self._product(g2, x.reshape(-1, self.in_features), trans_a=True),
                lambda leaf: self._product(rows(grad_output, leaf, self.out_features),
                                           rows(x, leaf, self.in_features), trans_a=True))
        if not self.requires_input_grad:
            return None
        return self._product(g2, self.weight.data).reshape(x.shape)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _dim(dim, ndim):
    """``dim`` as an index into ``ndim`` dimensions, negative counting from the end; like
    torch, a 0-d array counts as having one, and anything else out of range is refused."""
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-size}, "
                         f"{size - 1}], but got {dim})")
    return dim % size


class Flatten(Module):
    """Flatten dims ``start_dim`` .. ``end_dim`` into one, like ``torch.nn.Flatten``:
    (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        start, end = (_dim(d, x.ndim) for d in (self.start_dim, self.end_dim))
        if start > end:
            raise ValueError(f"Flatten: start_dim ({self.start_dim}) comes after end_dim "
                             f"({self.end_dim}) for input of shape {x.shape}")
        _keep(self, "_input_shape", x.shape)
        return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1:])

    def backward(self, grad_output):
        shape = _cached(self, "_input_shape")
        return grad_output.reshape(shape) if self.requires_input_grad else None

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class _Activation(Module):
    """An elementwise activation: ``forward`` is the backend's ``<op>`` and ``backward`` its
    ``<op>_backward`` of grad_output and what forward saved (the output, from which these
    derivatives follow; a subclass may save the input instead).

    Subclasses name ``op`` and, where the op takes arguments, give them in
    ``_arguments()`` (the keyword arguments of ``op``; the derivative's come after the saved
    array, positionally, in the same order, without ``inplace``).
    """

    op = None

    def _arguments(self):
        return {}

    def _save(self, x, out):
        """What backward needs: the output."""
        return out

    def forward(self, x):
        out = getattr(_backend.ops(), self.op)(x, **self._arguments())
        _keep(self, "_saved", self._save(x, out))
        return out

    def backward(self, grad_output):
        saved = _cached(self, "_saved")
        if not self.requires_input_grad:
            return None
        extra = [v for k, v in self._arguments().items() if k != "inplace"]
        return getattr(_backend.ops(), self.op + "_backward")(grad_output, saved, *extra)


class ReLU(_Activation):
    """``max(x, 0)`` elementwise, like ``torch.nn.ReLU``; ``inplace=True`` overwrites the input."""

    op = "relu"

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def _arguments(self):
        return {"inplace": self.inplace}

    def forward(self, x):
        # the general forward without its keyword dict and name lookups (~1 us of a call)
        out = _backend.ops().relu(x, self.inplace)
        _keep(self, "_saved", out)
        return out

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class LeakyReLU(_Activation):
    """``x if x > 0 else negative_slope * x``, like ``torch.nn.LeakyReLU``."""

    op = "leaky_relu"

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def _arguments(self):
        return {"negative_slope": self.negative_slope, "inplace": self.inplace}

    def forward(self, x):
        # backward tests x > 0 (as torch does). An in-place forward overwrites x: with a
        # slope >= 0 its output is > 0 exactly where x was; with a negative slope (which
        # torch refuses in place) a copy of x is kept.
        self._input_copy = x.copy() if self.inplace and self.negative_slope < 0 else None
        return super().forward(x)

    def _save(self, x, out):
        """What backward needs: the input, or the output where it is > 0 exactly where the
        input was (in place, with a slope >= 0)."""
        if self._input_copy is not None:
            return self._input_copy
        return out if self.inplace else x

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))`` elementwise, like ``torch.nn.Sigmoid``."""

    op = "sigmoid"


class Tanh(_Activation):
    """``tanh(x)`` elementwise, like ``torch.nn.Tanh``."""

    op = "tanh"


class Dropout(Module):
    """Zero each element with probability ``p`` in train mode and scale the rest by 1/(1-p),
    like ``torch.nn.Dropout``; the identity in eval mode. Masks come from fastconv's
    generator (:func:`fastconv.manual_seed`)."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            self._scale = None
            return x
        keep = _random.generator().random(self._mask_shape(x), dtype=np.float32) >= self.p
        scale = 0.0 if self.p == 1 else 1.0 / (1.0 - self.p)
        self._scale = keep * np.asarray(scale, dtype=x.dtype)
        return x * self._scale

    def _mask_shape(self, x):
        """The shape of the keep/drop draws, broadcast over ``x``: one per element."""
        return x.shape

    def backward(self, grad_output):
        if not self.requires_input_grad:
            return None
        scale = self.__dict__.get("_scale")
        return grad_output if scale is None else grad_output * scale

    def extra_repr(self):
        return f"p={self.p}"


class _BatchNorm(Module):
    """Batch normalization over every axis but the channel axis 1 (shared by 1d and 2d)."""

    _input_dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 dtype=None):
        super().__init__()
        num_features = _size(num_features, "num_features")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = _dtype(dtype)
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype))
            self.bias = Parameter(np.zeros(num_features, dtype))
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def _check(self, x):
        if x.ndim not in self._input_dims or x.shape[1] != self.num_features:
            dims = " or ".join(f"{d}-D" for d in self._input_dims)
            raise ValueError(f"{type(self).__name__}: expected {dims} input with "
                             f"{self.num_features} channels in dim 1, got input of shape {x.shape}")

    def forward(self, x):
        return self._forward(x)

    def _forward(self, x, add=None, relu=False):
        """forward, or ``relu(forward(x) + add)`` in the same pass (see :func:`bn_relu`)."""
        self._check(x)
        use_batch = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        momentum = self.momentum
        if update and momentum is None:  # a cumulative average, as in torch
            momentum = 1.0 / (float(self.num_batches_tracked) + 1)
        out, mean, invstd = _backend.ops().batch_norm(
            x, self._buffers.get("running_mean"), self._buffers.get("running_var"),
            self.weight.data if self.affine else None, self.bias.data if self.affine else None,
            training=use_batch, momentum=0.0 if momentum is None else momentum, eps=self.eps,
            return_stats=True, add=add, relu=relu)
        if update:
            self.num_batches_tracked += 1
        self._input, self._saved_stats, self._batch_stats = x, (mean, invstd), use_batch
        self._relu_output = out if relu else None
        return out

    def backward(self, grad_output):
        return self._backward(grad_output)

    def _backward(self, grad_output, relu_output=None):
        """backward; with ``relu_output`` (a fused forward's output) through that ReLU first,
        in the same passes."""
        x = _cached(self, "_input")
        mean, invstd = self._saved_stats
        need_params = self.affine and (self.weight.requires_grad or self.bias.requires_grad)
        if not (self.requires_input_grad or need_params):
            return None
        weight = self.weight.data if self.affine else None

        def grads(grad_output, x, relu_output, input_grad):
            return _backend.ops().batch_norm_backward(
                grad_output, x, weight, save_mean=mean, save_invstd=invstd,
                training=self._batch_stats, eps=self.eps, input_grad=input_grad,
                relu_output=relu_output)

        grad_input, grad_weight, grad_bias = grads(grad_output, x, relu_output,
                                                   self.requires_input_grad)
        plan = _leaves.active()  # under fit: weight and bias gradients leaf by leaf
        if need_params and plan is not None:
            parts = plan.leaf_parts(lambda leaf: grads(
                grad_output[leaf], x[leaf], None if relu_output is None else relu_output[leaf],
                False))
        if self.affine:
            for param, k, whole in ((self.weight, 1, grad_weight), (self.bias, 2, grad_bias)):
                if param.requires_grad:
                    if plan is None:
                        param.accumulate_grad(whole)
                    else:
                        plan.add(param, [part[k] for part in parts])
        return grad_input

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L), like ``torch.nn.BatchNorm1d``.

    Parameters
    ----------
    num_features : int
        C.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        running = (1 - momentum) * running + momentum * batch statistic (the variance
        unbiased); None for a cumulative average.
    affine : bool, default True
        Learn ``weight`` (ones) and ``bias`` (zeros), each (C,).
    track_running_stats : bool, default True
        Keep buffers ``running_mean``, ``running_var``, ``num_batches_tracked`` and use them in
        eval mode; without them batch statistics are used in both modes.
    """

    _input_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) per channel, like ``torch.nn.BatchNorm2d``.

    Same parameters as :class:`BatchNorm1d`.
    """

    _input_dims = (4,)


# Whether bn_relu fuses; tests turn it off to compare with the modules run one by one.
_FUSE_BN_RELU = True


def bn_relu(bn, relu, x, add=None):
    """``relu(bn(x))``, or ``relu(bn(x) + add)``, for a parent module that calls the two.

    When ``bn`` is a training :class:`BatchNorm2d` (exactly: SyncBatchNorm keeps its own
    path) and ``relu`` a :class:`ReLU` that is not in place, in one pass (the bits of the
    separate passes); otherwise the modules one by one. Either way each module keeps what its
    own backward needs, and :func:`bn_relu_backward` is the matching backward.
    """
    if (_FUSE_BN_RELU and bn.training and type(bn) is BatchNorm2d and type(relu) is ReLU
            and not relu.inplace):
        out = bn._forward(x, add=add, relu=True)
        relu._saved = out
        return out
    out = bn(x)
    return relu(out if add is None else out + add)


def bn_relu_backward(bn, relu, grad_output):
    """d loss / d (bn's input) from d loss / d (the output of :func:`bn_relu`): through the
    ReLU inside bn's backward passes when the forward was fused, else relu's then bn's."""
    fused = bn.__dict__.get("_relu_output")
    if fused is not None and relu.__dict__.get("_saved") is fused:
        return bn._backward(grad_output, relu_output=fused)
    return bn.backward(relu.backward(grad_output))



class Dropout2d(Dropout):
    """Zero whole channels with probability ``p`` in train mode and scale the rest by
    1/(1-p), like ``torch.nn.Dropout2d``: one draw per (n, c) of an (N, C, H, W) input, or per
    c of an unbatched (C, H, W) one. The identity in eval mode."""

    def _mask_shape(self, x):
        if x.ndim not in (3, 4):
            raise ValueError(f"Dropout2d: expected 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                             f"input of shape {x.shape}")
        return x.shape[:-2] + (1, 1)
