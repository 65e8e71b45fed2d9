"""Bad input at every public kernel entry point: a clear error, never a crash.

Each case below calls a public function of fastconv.functional (compiled) and of
fastconv.reference (NumPy) with one bad argument. Both must raise the same exception type
with the same message, naming the argument and the shapes involved. The calls run in
child processes (tests/_isolated.py), so a case that reaches a kernel with a bad buffer and
segfaults fails its own test instead of killing pytest.
"""
import importlib.util
import re
from collections import namedtuple
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import reference as R

from _isolated import run_cases

MODULES = {"compiled": F, "reference": R}

Case = namedtuple("Case", "name call exc fragments")


def arr(*shape, dtype=np.float32):
    return np.ones(shape, dtype=dtype)


def x4(dtype=np.float32):
    return arr(2, 3, 6, 6, dtype=dtype)


def w4(dtype=np.float32):
    return arr(4, 3, 3, 3, dtype=dtype)


def pooled(m):
    """grad_output and indices of a 2x2 max pool of x4()."""
    return m.max_pool2d(x4(), 2, return_indices=True)


BAD_ARRAYS = [
    ("str", "abc", TypeError, ["input must be a numpy.ndarray, got str"]),
    ("none", None, TypeError, ["input must be a numpy.ndarray, got NoneType"]),
    ("list", [[[[1.0]]]], TypeError, ["input must be a numpy.ndarray, got list"]),
    ("int64", arr(2, 3, 6, 6, dtype=np.int64), TypeError, ["input", "int64"]),
    ("uint8", arr(2, 3, 6, 6, dtype=np.uint8), TypeError, ["input", "uint8"]),
    ("bool", arr(2, 3, 6, 6, dtype=bool), TypeError, ["input", "bool"]),
    ("complex", arr(2, 3, 6, 6, dtype=np.complex64), TypeError, ["input", "complex64"]),
    ("object", arr(2, 3, 6, 6, dtype=object), TypeError, ["input", "object"]),
    ("float16", arr(2, 3, 6, 6, dtype=np.float16), TypeError, ["input", "float16"]),
    ("big-endian", arr(2, 3, 6, 6, dtype=">f4"), TypeError, ["input", ">f4"]),
    ("0-d", arr(), ValueError, ["input", "()"]),
    ("2-D", arr(6, 6), ValueError, ["input", "(6, 6)"]),
    ("5-D", arr(1, 2, 3, 6, 6), ValueError, ["input", "(1, 2, 3, 6, 6)"]),
]


def _cases():
    """Every bad call, as Case(name, call(module), expected exception, message fragments)."""
    cases = []

    def add(name, call, exc, fragments):
        cases.append(Case(name, call, exc, fragments))

    # -- the array argument of every op -----------------------------------------------------
    for label, bad, exc, frags in BAD_ARRAYS:
        add(f"conv2d-input-{label}", lambda m, b=bad: m.conv2d(b, w4()), exc, frags)
        add(f"im2col-input-{label}", lambda m, b=bad: m.im2col(b, 2), exc, frags)
        add(f"max_pool2d-input-{label}", lambda m, b=bad: m.max_pool2d(b, 2), exc, frags)
        add(f"avg_pool2d-input-{label}", lambda m, b=bad: m.avg_pool2d(b, 2), exc, frags)
    add("conv2d-weight-none", lambda m: m.conv2d(x4(), None), TypeError,
        ["weight must be a numpy.ndarray, got NoneType"])
    add("conv2d-weight-int", lambda m: m.conv2d(x4(), w4(np.int32)), TypeError,
        ["weight", "int32"])
    add("conv2d-bias-str", lambda m: m.conv2d(x4(), w4(), "b"), TypeError,
        ["bias must be a numpy.ndarray, got str"])
    add("conv2d-weight-dtype-mismatch", lambda m: m.conv2d(x4(), w4(np.float64)), TypeError,
        ["input and weight", "float32 and float64"])
    add("conv2d-bias-dtype-mismatch",
        lambda m: m.conv2d(x4(), w4(), arr(4, dtype=np.float64)), TypeError,
        ["input and bias", "float32 and float64"])

    # -- conv2d shapes ----------------------------------------------------------------------
    add("conv2d-weight-3-D", lambda m: m.conv2d(x4(), arr(4, 3, 3)), ValueError,
        ["weight", "(4, 3, 3)"])
    add("conv2d-channel-mismatch", lambda m: m.conv2d(arr(2, 5, 6, 6), w4()), ValueError,
        ["input[2, 5, 6, 6] to have 3 channels, but got 5 channels"])
    add("conv2d-groups-not-dividing-K", lambda m: m.conv2d(arr(1, 6, 6, 6), w4(), groups=3),
        ValueError, ["groups=3", "(4, 3, 3, 3)"])
    add("conv2d-groups-channel-mismatch",
        lambda m: m.conv2d(arr(1, 4, 6, 6), arr(4, 1, 3, 3), groups=2), ValueError,
        ["groups=2", "to have 2 channels, but got 4 channels"])
    add("conv2d-groups-zero", lambda m: m.conv2d(x4(), w4(), groups=0), ValueError,
        ["groups=0"])
    add("conv2d-groups-negative", lambda m: m.conv2d(x4(), w4(), groups=-1), ValueError,
        ["groups=-1"])
    add("conv2d-groups-float", lambda m: m.conv2d(x4(), w4(), groups=1.0), TypeError,
        ["groups", "float"])
    add("conv2d-groups-bool", lambda m: m.conv2d(x4(), w4(), groups=True), TypeError,
        ["groups", "bool"])
    add("conv2d-bias-length", lambda m: m.conv2d(x4(), w4(), arr(3)), ValueError,
        ["bias", "4 elements", "(3,)"])
    add("conv2d-bias-2-D", lambda m: m.conv2d(x4(), w4(), arr(4, 1)), ValueError,
        ["bias", "(4, 1)"])
    add("conv2d-kernel-zero", lambda m: m.conv2d(x4(), arr(4, 3, 0, 3)), ValueError,
        ["weight", "(4, 3, 0, 3)"])
    add("conv2d-kernel-larger-than-input", lambda m: m.conv2d(arr(1, 3, 2, 2), w4()),
        ValueError, ["output size", "(2, 2)", "(3, 3)"])
    add("conv2d-dilated-kernel-larger-than-input",
        lambda m: m.conv2d(x4(), w4(), dilation=3), ValueError, ["output size", "(7 x 7)"])

    # -- stride / padding / dilation / kernel_size values (every op) ------------------------
    geometry = [
        ("zero", 0, ValueError, ["at least 1", "(0, 0)"]),
        ("negative", -2, ValueError, ["at least 1", "(-2, -2)"]),
        ("float", 1.0, TypeError, ["an int or a pair of ints", "float"]),
        ("str", "2", TypeError, ["an int or a pair of ints", "str"]),
        ("bool", True, TypeError, ["an int or a pair of ints", "bool"]),
        ("triple", (1, 1, 1), TypeError, ["an int or a pair of ints", "(1, 1, 1)"]),
        ("single", (2,), TypeError, ["an int or a pair of ints", "(2,)"]),
        ("huge", 2**31, ValueError, ["at most 2147483647"]),
        ("beyond-int64", 2**70, ValueError, ["at most 2147483647"]),
        ("numpy-beyond-int32", np.int64(2**40), ValueError, ["at most 2147483647"]),
    ]
    for label, v, exc, frags in geometry:
        add(f"conv2d-stride-{label}", lambda m, v=v: m.conv2d(x4(), w4(), stride=v), exc,
            ["stride"] + frags)
        add(f"conv2d-dilation-{label}", lambda m, v=v: m.conv2d(x4(), w4(), dilation=v), exc,
            ["dilation"] + frags)
        add(f"im2col-kernel_size-{label}", lambda m, v=v: m.im2col(x4(), v), exc,
            ["kernel_size"] + frags)
        add(f"im2col-stride-{label}", lambda m, v=v: m.im2col(x4(), 2, stride=v), exc,
            ["stride"] + frags)
        add(f"col2im-output_size-{label}",
            lambda m, v=v: m.col2im(arr(2, 12, 25), v, 2), exc, ["output_size"] + frags)
        add(f"max_pool2d-kernel_size-{label}", lambda m, v=v: m.max_pool2d(x4(), v), exc,
            ["kernel_size"] + frags)
        add(f"max_pool2d-stride-{label}", lambda m, v=v: m.max_pool2d(x4(), 2, v), exc,
            ["stride"] + frags)
        add(f"max_pool2d-dilation-{label}",
            lambda m, v=v: m.max_pool2d(x4(), 2, dilation=v), exc, ["dilation"] + frags)
        add(f"avg_pool2d-kernel_size-{label}", lambda m, v=v: m.avg_pool2d(x4(), v), exc,
            ["kernel_size"] + frags)
        add(f"avg_pool2d-stride-{label}", lambda m, v=v: m.avg_pool2d(x4(), 2, v), exc,
            ["stride"] + frags)
    for label, v in [("negative", -1), ("negative-pair", (0, -3))]:
        add(f"conv2d-padding-{label}", lambda m, v=v: m.conv2d(x4(), w4(), padding=v),
            ValueError, ["padding must be at least 0"])
        add(f"im2col-padding-{label}", lambda m, v=v: m.im2col(x4(), 2, padding=v),
            ValueError, ["padding must be at least 0"])
        add(f"max_pool2d-padding-{label}", lambda m, v=v: m.max_pool2d(x4(), 2, padding=v),
            ValueError, ["padding must be at least 0"])
    add("conv2d-padding-string", lambda m: m.conv2d(x4(), w4(), padding="full"), ValueError,
        ["'full'", "'valid', 'same'"])
    add("conv2d-padding-same-strided", lambda m: m.conv2d(x4(), w4(), stride=2, padding="same"), ValueError,
        ["padding='same'", "stride=(2, 2)"])
    add("conv2d-padding-none", lambda m: m.conv2d(x4(), w4(), padding=None), TypeError,
        ["padding", "NoneType"])

    # -- sizes that overflow when multiplied ------------------------------------------------
    top = 2**31 - 1
    add("conv2d-output-bytes-overflow",
        lambda m: m.conv2d(arr(1, 1, 1, 1), arr(1, 1, 1, 1), padding=top), ValueError,
        ["conv2d output", "bytes", "more than can be addressed"])
    add("im2col-output-bytes-overflow", lambda m: m.im2col(arr(1, 1, 1, 1), 1, padding=top),
        ValueError, ["im2col output", "more than can be addressed"])
    add("col2im-output-bytes-overflow",
        lambda m: m.col2im(arr(1, 1, 1), (top, top), 1, stride=top), ValueError,
        ["col2im output", "more than can be addressed"])
    add("max_pool2d_backward-input_shape-overflow",
        lambda m: m.max_pool2d_backward(arr(1, 1, 1, 1), np.zeros((1, 1, 1, 1), np.int64),
                                        (1, 1, top, top)),
        ValueError, ["max_pool2d_backward output", "more than can be addressed"])
    add("avg_pool2d_backward-input_shape-overflow",
        lambda m: m.avg_pool2d_backward(arr(1, 1, 1, 1), (1, 1, top, top), top),
        ValueError, ["avg_pool2d_backward output", "more than can be addressed"])

    # -- conv2d_backward --------------------------------------------------------------------
    add("conv2d_backward-grad-shape",
        lambda m: m.conv2d_backward(arr(2, 4, 5, 5), x4(), w4()), ValueError,
        ["grad_output of shape (2, 4, 4, 4)", "(2, 4, 5, 5)"])
    add("conv2d_backward-grad-3-D-for-4-D-input",
        lambda m: m.conv2d_backward(arr(4, 4, 4), x4(), w4()), ValueError,
        ["grad_output of shape (2, 4, 4, 4)", "(4, 4, 4)"])
    add("conv2d_backward-grad-dtype",
        lambda m: m.conv2d_backward(arr(2, 4, 4, 4, dtype=np.float64), x4(), w4()),
        TypeError, ["input and grad_output", "float32 and float64"])
    add("conv2d_backward-grad-none", lambda m: m.conv2d_backward(None, x4(), w4()),
        TypeError, ["grad_output must be a numpy.ndarray, got NoneType"])
    add("conv2d_backward-grad-int",
        lambda m: m.conv2d_backward(arr(2, 4, 4, 4, dtype=np.int16), x4(), w4()),
        TypeError, ["grad_output", "int16"])
    add("conv2d_backward-channel-mismatch",
        lambda m: m.conv2d_backward(arr(2, 4, 4, 4), arr(2, 2, 6, 6), w4()), ValueError,
        ["to have 3 channels, but got 2 channels"])

    # -- im2col / col2im --------------------------------------------------------------------
    add("im2col-kernel-larger-than-input", lambda m: m.im2col(x4(), 7), ValueError,
        ["(6, 6)", "kernel_size=(7, 7)", "at least one"])
    add("col2im-cols-4-D", lambda m: m.col2im(x4(), (6, 6), 2), ValueError,
        ["input of shape (2, 3, 6, 6)"])
    add("col2im-cols-1-D", lambda m: m.col2im(arr(12), (6, 6), 2), ValueError,
        ["input of shape (12,)"])
    add("col2im-not-divisible", lambda m: m.col2im(arr(2, 13, 25), (6, 6), 2), ValueError,
        ["divisible", "13", "kernel_size=(2, 2)"])
    add("col2im-blocks-mismatch", lambda m: m.col2im(arr(2, 12, 24), (6, 6), 2), ValueError,
        ["sliding blocks", "25", "24"])
    add("col2im-cols-int", lambda m: m.col2im(arr(2, 12, 25, dtype=np.int32), (6, 6), 2),
        TypeError, ["int32"])
    add("col2im-output_size-none", lambda m: m.col2im(arr(2, 12, 25), None, 2), TypeError,
        ["output_size", "NoneType"])

    # -- pooling ----------------------------------------------------------------------------
    add("max_pool2d-padding-over-half-kernel",
        lambda m: m.max_pool2d(x4(), 2, padding=2), ValueError,
        ["pad should be at most half of kernel size", "padding=(2, 2)", "kernel_size=(2, 2)"])
    add("avg_pool2d-padding-over-half-kernel",
        lambda m: m.avg_pool2d(x4(), 3, padding=(0, 2)), ValueError,
        ["pad should be at most half of kernel size", "padding=(0, 2)"])
    add("max_pool2d-kernel-larger-than-input", lambda m: m.max_pool2d(x4(), 7), ValueError,
        ["(3x6x6)", "too small"])
    # empty dimensions other than the batch: refused as torch refuses them (the kernels
    # index the first element of every plane)
    empty = ["non-zero dimensions (only the batch may be empty)"]
    add("max_pool2d-empty-plane", lambda m: m.max_pool2d(arr(1, 1, 0, 4), 1), ValueError,
        empty + ["(1, 1, 0, 4)"])
    add("avg_pool2d-zero-channels", lambda m: m.avg_pool2d(arr(1, 0, 4, 4), 2), ValueError,
        empty + ["(1, 0, 4, 4)"])
    add("im2col-empty-height", lambda m: m.im2col(arr(1, 1, 0, 5), 3, padding=2), ValueError,
        empty + ["(1, 1, 0, 5)"])
    add("im2col-zero-channels", lambda m: m.im2col(arr(0, 5, 5), 3), ValueError,
        empty + ["(0, 5, 5)"])
    add("col2im-zero-rows", lambda m: m.col2im(arr(1, 0, 9), (5, 5), 3), ValueError,
        empty + ["(1, 0, 9)"])
    add("conv2d-empty-width", lambda m: m.conv2d(arr(1, 3, 5, 0), w4(), padding=2), ValueError,
        empty + ["(1, 3, 5, 0)"])
    add("conv2d-zero-channels", lambda m: m.conv2d(arr(1, 0, 5, 5), arr(2, 0, 3, 3)),
        ValueError, empty + ["(1, 0, 5, 5)"])
    add("conv2d-zero-filters", lambda m: m.conv2d(x4(), arr(0, 3, 3, 3)), ValueError,
        ["weight to be at least 1 at dimension 0", "(0, 3, 3, 3)"])
    add("max_pool2d-padding-only-window",
        lambda m: m.max_pool2d(arr(1, 1, 3, 3), 2, stride=1, padding=1, dilation=4),
        ValueError, ["reads only padding", "(3, 3)"])
    add("avg_pool2d-divisor-zero", lambda m: m.avg_pool2d(x4(), 2, divisor_override=0),
        ValueError, ["divisor_override must be nonzero"])
    add("avg_pool2d-divisor-float", lambda m: m.avg_pool2d(x4(), 2, divisor_override=2.0),
        TypeError, ["divisor_override", "float"])
    add("max_pool2d_backward-indices-negative",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1] - 1, (2, 3, 6, 6)),
        ValueError, ["indices must lie in [0, H*W) = [0, 36)", "got index -1"])
    add("max_pool2d_backward-indices-too-large",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1] + 36, (2, 3, 6, 6)),
        ValueError, ["[0, 36)", "(2, 3, 6, 6)"])
    add("max_pool2d_backward-indices-uint64-beyond-int64",
        lambda m: m.max_pool2d_backward(
            pooled(m)[0], np.full((2, 3, 3, 3), 2**63 + 5, np.uint64), (2, 3, 6, 6)),
        ValueError, ["[0, 36)", str(2**63 + 5)])
    add("max_pool2d_backward-indices-for-a-larger-plane",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1], (2, 3, 5, 5)),
        ValueError, ["[0, 25)"])
    add("max_pool2d_backward-indices-float",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[0], (2, 3, 6, 6)),
        TypeError, ["indices must have an integer dtype, got float32"])
    add("max_pool2d_backward-indices-bool",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1] > 3, (2, 3, 6, 6)),
        TypeError, ["indices must have an integer dtype, got bool"])
    add("max_pool2d_backward-indices-list",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1].tolist(), (2, 3, 6, 6)),
        TypeError, ["indices must be a numpy.ndarray, got list"])
    add("max_pool2d_backward-indices-shape",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1][:, :, :2], (2, 3, 6, 6)),
        ValueError, ["indices of the shape of grad_output (2, 3, 3, 3)", "(2, 3, 2, 3)"])
    add("max_pool2d_backward-batch-mismatch",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1], (3, 3, 6, 6)),
        ValueError, ["(3, 3, 6, 6)", "grad_output of shape (2, 3, 3, 3)"])
    add("max_pool2d_backward-ndim-mismatch",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1], (3, 6, 6)), ValueError,
        ["3 dimensions", "(2, 3, 3, 3)"])
    add("max_pool2d_backward-input_shape-length",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1], (6, 6)), ValueError,
        ["input_shape", "(6, 6)"])
    add("max_pool2d_backward-input_shape-str",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1], "2366"), TypeError,
        ["input_shape", "str"])
    add("max_pool2d_backward-input_shape-negative",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1], (2, 3, -6, 6)),
        ValueError, ["input_shape", "(2, 3, -6, 6)"])
    add("max_pool2d_backward-input_shape-float",
        lambda m: m.max_pool2d_backward(pooled(m)[0], pooled(m)[1], (2, 3, 6.0, 6)),
        TypeError, ["input_shape", "float"])
    add("avg_pool2d_backward-grad-shape",
        lambda m: m.avg_pool2d_backward(arr(2, 3, 4, 3), (2, 3, 6, 6), 2), ValueError,
        ["grad_output of shape (2, 3, 3, 3)", "(2, 3, 4, 3)"])
    add("avg_pool2d_backward-grad-none",
        lambda m: m.avg_pool2d_backward(None, (2, 3, 6, 6), 2), TypeError,
        ["grad_output must be a numpy.ndarray, got NoneType"])
    add("avg_pool2d_backward-input_shape-zero-channels",
        lambda m: m.avg_pool2d_backward(arr(2, 0, 3, 3), (2, 0, 6, 6), 2), ValueError,
        ["input_shape", "(2, 0, 6, 6)"])
    return cases


def _model_cases():
    """Bad input to layers, models, losses and optimizers: name -> Case (call takes no module)."""
    from fastconv import nn, optim

    def params():
        return nn.Linear(2, 2).parameters()

    def lenet_forward(x):
        fastconv.manual_seed(0)
        return nn.lenet()(x)

    def linear_backward(grad):
        layer = nn.Linear(4, 2)
        layer(arr(3, 4))
        return layer.backward(grad)

    def fit(x, y):
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        return model.fit(x, y, loss=nn.CrossEntropyLoss(),
                         optimizer=optim.SGD(model.parameters(), lr=0.1), verbose=0)

    ce = nn.CrossEntropyLoss()
    cases = [
        # layer construction
        ("Conv2d-negative-channels", lambda: nn.Conv2d(-1, 4, 3), ValueError,
         ["in_channels must be at least 1, got -1"]),
        ("Conv2d-zero-out-channels", lambda: nn.Conv2d(3, 0, 3), ValueError,
         ["out_channels must be at least 1, got 0"]),
        ("Conv2d-str-channels", lambda: nn.Conv2d("3", 4, 3), TypeError,
         ["in_channels must be an int, got str"]),
        ("Conv2d-zero-kernel", lambda: nn.Conv2d(3, 4, (3, 0)), ValueError,
         ["kernel_size must be at least 1, got 0"]),
        ("Conv2d-groups-not-dividing", lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError,
         ["in_channels (3)", "groups (2)"]),
        ("Conv2d-padding-mode", lambda: nn.Conv2d(3, 4, 3, padding_mode="zero"), ValueError,
         ["padding_mode", "'zero'"]),
        ("Conv2d-same-strided", lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"),
         ValueError, ["padding='same'"]),
        ("Linear-zero-features", lambda: nn.Linear(0, 4), ValueError,
         ["in_features must be at least 1, got 0"]),
        ("Linear-float-features", lambda: nn.Linear(4, 2.0), TypeError,
         ["out_features must be an int, got float"]),
        ("BatchNorm2d-zero-features", lambda: nn.BatchNorm2d(0), ValueError,
         ["num_features must be at least 1, got 0"]),
        ("Dropout-p-above-1", lambda: nn.Dropout(1.5), ValueError, ["between 0 and 1", "1.5"]),
        ("Dropout-p-nan", lambda: nn.Dropout(float("nan")), ValueError, ["nan"]),
        ("MaxPool2d-zero-kernel", lambda: nn.MaxPool2d(0)(arr(1, 1, 4, 4)), ValueError,
         ["kernel_size must be at least 1"]),
        # model input
        ("lenet-3-channels", lambda: lenet_forward(arr(2, 3, 28, 28)), ValueError,
         ["expected input[2, 3, 28, 28] to have 1 channels, but got 3 channels"]),
        ("lenet-32x32-images", lambda: lenet_forward(arr(2, 1, 32, 32)), ValueError,
         ["Linear: expected input[..., 400]", "(2, 576)"]),
        ("lenet-float64-images", lambda: lenet_forward(arr(2, 1, 28, 28, dtype=np.float64)),
         TypeError, ["input and weight", "float64 and float32"]),
        ("lenet-uint8-images", lambda: lenet_forward(arr(2, 1, 28, 28, dtype=np.uint8)),
         TypeError, ["input", "uint8"]),
        ("lenet-none", lambda: lenet_forward(None), TypeError, ["input", "NoneType"]),
        ("BatchNorm2d-wrong-channels", lambda: nn.BatchNorm2d(4)(arr(2, 3, 5, 5)), ValueError,
         ["4 channels", "(2, 3, 5, 5)"]),
        ("backward-before-forward", lambda: nn.lenet().backward(arr(2, 10)), RuntimeError,
         ["backward called before forward"]),
        ("Linear-backward-wrong-grad", lambda: linear_backward(arr(3, 3)), ValueError,
         ["grad_output", "(3, 3)", "(3, 2)"]),
        # same size as the right one: a reshape would take it and mix up the samples
        ("Linear-backward-transposed-grad", lambda: linear_backward(arr(2, 3)), ValueError,
         ["grad_output", "(2, 3)", "(3, 2)"]),
        # losses and class labels
        ("CrossEntropyLoss-label-equal-to-classes", lambda: ce(arr(2, 10), np.array([1, 10])),
         ValueError, ["target labels must be in [0, 10)", "[1, 10]"]),
        ("CrossEntropyLoss-negative-label", lambda: ce(arr(2, 10), np.array([1, -1])),
         ValueError, ["[0, 10)", "[-1, 1]"]),
        ("CrossEntropyLoss-huge-uint64-label",
         lambda: ce(arr(2, 10), np.array([1, 2**64 - 1], np.uint64)), ValueError,
         ["[0, 10)", str(2**64 - 1)]),
        ("CrossEntropyLoss-float-labels", lambda: ce(arr(2, 10), np.array([1.0, 2.0])),
         TypeError, ["integer class labels", "float64"]),
        ("CrossEntropyLoss-bool-labels", lambda: ce(arr(2, 10), np.array([True, False])),
         TypeError, ["integer class labels", "bool"]),
        ("CrossEntropyLoss-str-labels", lambda: ce(arr(2, 10), np.array(["a", "b"])),
         TypeError, ["integer class labels", "<U1"]),
        ("CrossEntropyLoss-label-shape", lambda: ce(arr(2, 10), np.array([[1], [2]])),
         ValueError, ["target of shape (2,)", "(2, 1)"]),
        ("CrossEntropyLoss-1-D-logits", lambda: ce(arr(10), np.array([1])), ValueError,
         ["(N, classes)", "(10,)"]),
        ("CrossEntropyLoss-integer-logits",  # was computed, in float64
         lambda: ce(arr(2, 10, dtype=np.int64), np.array([1, 2])), TypeError,
         ["floating-point logits", "int64"]),
        ("MSELoss-shape-mismatch", lambda: nn.MSELoss()(arr(2, 3), arr(3, 2)), ValueError,
         ["(2, 3) and (3, 2)"]),
        ("fit-length-mismatch", lambda: fit(arr(10, 4), np.zeros(9, np.int64)), ValueError,
         ["10 samples", "9"]),
        ("fit-labels-out-of-range", lambda: fit(arr(10, 4), np.full(10, 3)), ValueError,
         ["[0, 3)"]),
        ("predict-zero-batch-size",
         lambda: nn.Sequential(nn.Linear(4, 3)).predict(arr(10, 4), batch_size=0), ValueError,
         ["batch_size must be >= 1, got 0"]),
        ("evaluate-negative-batch-size",  # was "x is empty"
         lambda: nn.Sequential(nn.Linear(4, 3)).evaluate(arr(10, 4), np.zeros(10, np.int64),
                                                         batch_size=-1), ValueError,
         ["batch_size must be >= 1, got -1"]),
        # optimizers
        ("SGD-negative-lr", lambda: optim.SGD(params(), lr=-1), ValueError,
         ["Invalid learning rate: -1"]),
        ("SGD-nan-lr", lambda: optim.SGD(params(), lr=float("nan")), ValueError,
         ["Invalid learning rate: nan"]),
        ("SGD-nan-momentum", lambda: optim.SGD(params(), lr=0.1, momentum=float("nan")),
         ValueError, ["momentum", "nan"]),
        ("SGD-no-parameters", lambda: optim.SGD([], lr=0.1), ValueError,
         ["empty parameter list"]),
        ("SGD-arrays-not-parameters", lambda: optim.SGD([np.zeros(3)], lr=0.1), TypeError,
         ["Parameters", "ndarray"]),
        ("SGD-nesterov-without-momentum", lambda: optim.SGD(params(), lr=0.1, nesterov=True),
         ValueError, ["Nesterov"]),
        ("Adam-beta-1", lambda: optim.Adam(params(), betas=(1.0, 0.999)), ValueError,
         ["beta parameter at index 0: 1.0"]),
        ("Adam-negative-eps", lambda: optim.Adam(params(), eps=-1), ValueError,
         ["epsilon value: -1"]),
    ]
    return [Case(*c) for c in cases]


def _unaligned(shape, dtype, seed):
    """A C-contiguous array whose data starts one byte past an aligned address."""
    count, itemsize = int(np.prod(shape)), np.dtype(dtype).itemsize
    a = np.frombuffer(bytearray(count * itemsize + 1), dtype, count, offset=1).reshape(shape)
    a[...] = np.random.default_rng(seed).standard_normal(shape)
    return a


def _layouts(dtype):
    """Valid arrays in unusual memory layouts: label -> (x, weight, grad) of shapes
    (3, 4, 11, 10), (6, 4, 3, 3), (3, 6, 11, 10)."""
    rng = np.random.default_rng(7)
    x, w, g = (rng.standard_normal(s).astype(dtype)
               for s in ((3, 4, 11, 10), (6, 4, 3, 3), (3, 6, 11, 10)))
    return {
        "unaligned": (_unaligned(x.shape, dtype, 1), _unaligned(w.shape, dtype, 2),
                      _unaligned(g.shape, dtype, 3)),
        "reversed": (x[:, ::-1, ::-1], w[::-1, :, :, ::-1], g[..., ::-1]),
        "fortran": (np.asfortranarray(x), np.asfortranarray(w), np.asfortranarray(g)),
        "broadcast": (np.broadcast_to(x[:1], x.shape), np.broadcast_to(w[:, :1], w.shape),
                      np.broadcast_to(g[..., :1], g.shape)),
        "read-only": tuple(np.frombuffer(a.tobytes(), dtype).reshape(a.shape)
                           for a in (x, w, g)),
    }


def _layout_case(label, dtype):
    """Every op on one layout, compiled against reference; AssertionError on a mismatch."""
    x, w, g = _layouts(dtype)[label]
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    ops = [lambda m: m.conv2d(x, w, w[:, 0, 0, 0], padding=1),
           lambda m: m.conv2d(x, w[:4, :1], padding=1, groups=4),
           lambda m: m.conv2d_backward(g, x, w, padding=1),
           lambda m: m.im2col(x, 3, padding=1),
           lambda m: m.col2im(m.im2col(x, 3, padding=1), (11, 10), 3, padding=1),
           lambda m: m.max_pool2d(x, 3, 2, 1, return_indices=True),
           lambda m: m.max_pool2d_backward(x[..., ::2], np.zeros((3, 4, 11, 5), np.int64),
                                           x.shape),
           lambda m: m.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
           lambda m: m.avg_pool2d_backward(x[:, :, :10:2, ::2], x.shape, 2, 2)]
    for op in ops:
        got, want = op(F), op(R)
        for a, b in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, want))):
            np.testing.assert_allclose(a, b, **tol)
    return True


LAYOUTS = [(label, dtype) for label in _layouts(np.float32) for dtype in ("float32", "float64")]


CASE_LIST = _cases()
MODEL_CASES = {case.name: case for case in _model_cases()}
SPECS = {case.name: case for case in CASE_LIST}
CASES = {f"{tag}:{case.name}": partial(case.call, module)
         for case in CASE_LIST for tag, module in MODULES.items()}
# Compiled only: 2**31 + 1 output rows of one column. The output (8 GiB, never touched)
# may be allocated; its row length Ho*Wo is a GEMM leading dimension, which BLAS takes as
# a C int, so the call must be refused before any kernel runs (the reference, with no
# such limit, would compute it).
CASES.update({f"nn:{name}": case.call for name, case in MODEL_CASES.items()})
CASES.update({f"layout:{label}-{dtype}": partial(_layout_case, label, np.dtype(dtype).type)
              for label, dtype in LAYOUTS})
CASES["compiled:conv2d-blas-leading-dimension-overflow"] = partial(
    F.conv2d, arr(1, 1, 1, 1), arr(1, 1, 1, 1), padding=(2**30, 0))


@pytest.fixture(scope="module")
def outcomes():
    return run_cases("test_bad_input", list(CASES))


@pytest.mark.parametrize("name", list(SPECS))
def test_refused_with_a_clear_error(outcomes, name):
    spec = SPECS[name]
    results = {tag: outcomes[f"{tag}:{name}"] for tag in MODULES}
    for tag, outcome in results.items():
        assert not outcome.crashed, f"{tag}: {outcome}"
        assert outcome.is_a(spec.exc), f"{tag}: expected {spec.exc.__name__}, {outcome}"
        for fragment in spec.fragments:
            assert fragment in outcome.message, f"{tag}: {fragment!r} not in {outcome}"
    compiled, reference = results["compiled"], results["reference"]
    assert (compiled.raised, compiled.message) == (reference.raised, reference.message)


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_models_losses_and_optimizers_refuse_with_a_clear_error(outcomes, name):
    spec, outcome = MODEL_CASES[name], outcomes[f"nn:{name}"]
    assert not outcome.crashed, outcome
    assert outcome.is_a(spec.exc), f"expected {spec.exc.__name__}, {outcome}"
    for fragment in spec.fragments:
        assert fragment in outcome.message, f"{fragment!r} not in {outcome}"


@pytest.mark.parametrize("label, dtype", LAYOUTS)
def test_unusual_memory_layouts_give_the_reference_result(outcomes, label, dtype):
    """Unaligned, reversed, Fortran-ordered, broadcast and read-only arrays are valid input."""
    outcome = outcomes[f"layout:{label}-{dtype}"]
    assert outcome.returned == "bool", outcome


def test_conv2d_blas_leading_dimension_overflow_is_refused(outcomes):
    outcome = outcomes["compiled:conv2d-blas-leading-dimension-overflow"]
    assert not outcome.crashed, outcome
    if outcome.is_a(MemoryError):  # a machine with less memory cannot even allocate it
        return
    assert outcome.is_a(ValueError), outcome
    assert "2147483649" in outcome.message and "BLAS" in outcome.message


# ---------------------------------------------------------------------------------------
# compiled-only arguments (out=, algorithm=) and the thread count
# ---------------------------------------------------------------------------------------

def _out_cases():
    """label -> (x, weight, out, fragment of the message)."""
    x, w = x4(), w4()
    # out= sharing memory with an operand would be written while the kernel reads it
    image = arr(2, 4, 5, 5) * np.arange(5, dtype=np.float32)
    buffer = np.ones(400, np.float32)
    return {
        "wrong-shape": (x, w, arr(2, 4, 4, 3), "(2, 4, 4, 4)"),
        "wrong-dtype": (x, w, arr(2, 4, 4, 4, dtype=np.float64), "float64 array"),
        "not-contiguous": (x, w, arr(2, 4, 4, 8)[..., ::2], "C-contiguous"),
        "read-only": (x, w, np.broadcast_to(arr(1, 4, 4, 4), (2, 4, 4, 4)), "writeable"),
        "list": (x, w, [0.0], "list"),
        "is-the-input": (image, arr(4, 4, 1, 1), image, "memory"),
        "overlaps-the-weight": (x, buffer[:108].reshape(4, 3, 3, 3),
                                buffer[100:228].reshape(2, 4, 4, 4), "memory"),
    }


@pytest.mark.parametrize("label", list(_out_cases()))
def test_conv2d_out_refusals_leave_out_untouched(label):
    x, w, out, fragment = _out_cases()[label]
    before = np.array(out, copy=True)
    with pytest.raises(ValueError, match="out") as info:
        F.conv2d(x, w, out=out)
    assert fragment in str(info.value)
    np.testing.assert_array_equal(out, before)


def test_conv2d_unknown_algorithm():
    with pytest.raises(ValueError, match="algorithm must be 'auto', 'gemm', 'direct' or "
                                         "'winograd', got 'fft'"):
        F.conv2d(x4(), w4(), algorithm="fft")


# 100,000 threads crashed the interpreter (libgomp could not create the team)
@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2", None, 100_000, 2**31])
def test_thread_count_refusals(n):
    before = fastconv.get_num_threads()
    with pytest.raises(ValueError, match=re.escape(f"got {n!r}")):
        fastconv.set_num_threads(n)
    with pytest.raises(ValueError, match="number of threads must be"):
        with fastconv.threads(n):
            pass
    assert fastconv.get_num_threads() == before


# ---------------------------------------------------------------------------------------
# the example script's command line
# ---------------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_lenet.py"


@pytest.fixture(scope="module")
def train_lenet():
    if not EXAMPLE.exists():
        pytest.skip("examples/ is not shipped next to the installed tests")
    spec = importlib.util.spec_from_file_location("train_lenet", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "-1"], "argument --epochs: must be at least 0, got -1"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--threads", "0"], "argument --threads: must be at least 1, got 0"),
    (["--seed", "-3"], "argument --seed: must be at least 0, got -3"),
    (["--lr", "nan"], "argument --lr: must be a positive finite number, got nan"),
    (["--lr", "-0.1"], "argument --lr: must be a positive finite number, got -0.1"),
    (["--lr", "inf"], "argument --lr: must be a positive finite number, got inf"),
    (["--variant", "resnet"], "argument --variant: invalid choice: 'resnet'"),
    (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
    (["--save", "/nonexistent-dir/lenet.npz"], "argument --save: directory /nonexistent-dir"),
    (["--plot", "/nonexistent-dir/curves.png"], "argument --plot: directory /nonexistent-dir"),
    (["--checkpoint", "/nonexistent-dir/run.ckpt"], "argument --checkpoint: directory /nonexistent-dir"),
    (["--resume", "/nonexistent-dir/run.ckpt"], "argument --resume: no file /nonexistent-dir/run.ckpt"),
])
def test_train_lenet_refuses_bad_options_before_any_work(train_lenet, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        train_lenet.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
