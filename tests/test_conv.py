"""fastconv.functional.conv2d / conv2d_backward against fastconv.reference and torch."""
import threading
import warnings

import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import _conv_plan, _validation, _workspace
from fastconv._conv_plan import Route
from fastconv import reference as R

DTYPES = [np.float32, np.float64]
ALGORITHMS = ["auto", "gemm", "direct"]

# (x shape, weight shape, stride, padding, dilation, groups)
CASES = [
    ((2, 3, 7, 9), (4, 3, 3, 2), 1, 0, 1, 1),                  # rectangular kernel, odd sizes
    ((2, 1, 12, 11), (6, 1, 5, 5), 1, 2, 1, 1),                # LeNet's first layer, smaller
    ((2, 4, 8, 8), (6, 2, 3, 3), 2, 1, 1, 2),                  # groups, stride
    ((3, 4, 9, 8), (4, 1, 3, 3), 1, "same", 2, 4),             # depthwise, dilated 'same'
    ((2, 4, 10, 11), (8, 1, 2, 2), 1, "same", 1, 4),           # even kernel: asymmetric 'same'
    ((2, 4, 9, 8), (5, 4, 1, 1), 1, 0, 1, 1),                  # pointwise: no im2col
    ((2, 4, 9, 8), (5, 4, 1, 1), 2, 1, 1, 1),                  # 1x1 with stride and padding
    ((3, 3, 10, 11), (4, 3, 4, 3), (2, 3), (1, 2), (2, 1), 1),  # every pair differs
    ((2, 2, 6, 7), (3, 2, 3, 3), 1, "valid", 1, 1),
    ((1, 2, 5, 5), (3, 2, 2, 2), 3, 4, 1, 1),                  # padding beyond the kernel's reach
    ((2, 2, 5, 30), (9, 2, 3, 3), 1, 1, 1, 1),                 # wide rows: the direct kernel's
    ((1, 3, 5, 61), (3, 3, 3, 2), (1, 2), 1, (1, 2), 1),       # wide block, stride and dilation
    # >= 16 output channels per group: the direct path's channel-vector block
    ((2, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),               # LeNet's conv2: row blocks
    ((2, 16, 12, 5), (16, 16, 3, 3), 1, 0, 1, 1),              # 3-column rows: raster blocks
    ((2, 3, 9, 31), (40, 3, 3, 3), (1, 2), 1, (2, 1), 1),      # row blocks, part of a vector
    ((2, 4, 7, 20), (36, 2, 3, 2), 1, "same", 1, 2),           # groups of 18 channels
    ((1, 2, 3, 3), (17, 2, 3, 3), 1, 1, 1, 1),                 # one short block
    # >= 16 input channels per group, stride 1: grad_input by direct convolution
    ((2, 16, 6, 7), (16, 16, 3, 3), 1, 1, 1, 1),
    ((3, 16, 12, 12), (16, 16, 3, 3), 1, 1, 1, 1),             # ... on the column-vector block
    ((2, 40, 9, 8), (6, 20, 3, 2), 1, "same", (2, 1), 2),      # groups, asymmetric 'same'
    ((1, 17, 5, 5), (3, 17, 2, 3), 1, (0, 2), 1, 1),           # full padding (1, 0)
    # channel-vector grad_weight: two vectors (one partly used), two strips of rows
    ((1, 16, 70, 10), (40, 16, 3, 3), 1, 1, 1, 1),
    # channel-vector row blocks skip the kernel rows on padding: rows with none left,
    # and stride with dilation
    ((1, 16, 3, 20), (16, 16, 3, 3), 1, (4, 1), 1, 1),
    ((1, 16, 1, 20), (16, 16, 3, 3), 1, (2, 1), 1, 1),         # runs of one kernel row each
    ((2, 16, 11, 20), (16, 16, 3, 3), 2, 2, 2, 1),
    # the input read in place, not copied into a padded buffer (padded_image)
    ((2, 3, 6, 18), (4, 3, 3, 3), 1, 0, 1, 1),                 # column block: 16 + 2 columns
    ((2, 32, 8, 16), (16, 32, 3, 3), 1, 0, 1, 1),              # channel-vector block
    ((2, 32, 5, 7), (40, 32, 1, 1), 1, 0, 1, 1),               # pointwise, raster blocks
    ((1, 32, 14, 14), (32, 32, 1, 1), 1, 0, 1, 1),             # pointwise, direct by default
    ((2, 64, 4, 5), (64, 32, 1, 1), 1, 0, 1, 2),               # pointwise, groups
    # no padding, the windows short of the last row and column: the channel-vector block
    # reads the image in place at stride 2 too (its rows and columns the buffer's)
    ((2, 32, 10, 18), (40, 32, 3, 3), 2, 0, 1, 1),
    ((2, 32, 11, 12), (40, 32, 1, 1), 2, 0, 1, 1),
    # pointwise grad_weight by the channel-vector kernel, each image one row of pixels
    ((2, 64, 14, 14), (16, 64, 1, 1), 1, 0, 1, 1),
    ((3, 128, 15, 14), (40, 64, 1, 1), 1, 0, 1, 2),            # groups, part of a vector
    # stride 2 on the channel-vector block where the column block would be narrow (ResNet-20's
    # 16->32 layer), and the stride-2 phase split's column pairs: even and odd padding and
    # widths, a row narrower than a pair
    ((2, 16, 32, 32), (32, 16, 3, 3), 2, 1, 1, 1),
    ((2, 8, 9, 13), (20, 8, 3, 3), 2, (0, 2), 1, 1),
    ((1, 3, 7, 11), (16, 3, 3, 3), 2, 3, 1, 1),
    ((1, 2, 5, 1), (4, 2, 3, 3), 2, 1, 1, 1),
]


def _tol(dtype):
    return 1e-4 if dtype == np.float32 else 1e-10


def _close(actual, expected, dtype):
    tol = _tol(dtype)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)
    assert actual.dtype == dtype and actual.shape == expected.shape


def _problem(x_shape, w_shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", CASES)
def test_conv2d_matches_reference(x_shape, w_shape, stride, padding, dilation, groups, dtype,
                                  algorithm, n_threads):
    x, w, b = _problem(x_shape, w_shape, dtype)
    with fastconv.threads(n_threads):
        out = F.conv2d(x, w, b, stride, padding, dilation, groups, algorithm=algorithm)
        no_bias = F.conv2d(x, w, None, stride, padding, dilation, groups, algorithm=algorithm)
    _close(out, R.conv2d(x, w, b, stride, padding, dilation, groups), dtype)
    _close(no_bias, R.conv2d(x, w, None, stride, padding, dilation, groups), dtype)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", CASES)
def test_conv2d_backward_matches_reference(x_shape, w_shape, stride, padding, dilation, groups,
                                           dtype, n_threads):
    x, w, _ = _problem(x_shape, w_shape, dtype)
    out_shape = R.conv2d(x, w, None, stride, padding, dilation, groups).shape
    g = np.random.default_rng(1).standard_normal(out_shape).astype(dtype)
    with fastconv.threads(n_threads):
        grads = F.conv2d_backward(g, x, w, stride, padding, dilation, groups)
    for actual, expected in zip(grads, R.conv2d_backward(g, x, w, stride, padding, dilation,
                                                         groups)):
        _close(actual, expected, dtype)


# grad_input_add on each route of grad_input: the transposed convolution on the column-vector
# block, on the channel-vector block, on Winograd, and GEMM + col2im (stride 2, groups)
ADD_CASES = [
    ((3, 16, 12, 12), (16, 16, 3, 3), 1, 1, 1, 1),
    ((2, 32, 8, 8), (32, 32, 3, 3), 1, 1, 1, 1),
    ((1, 64, 14, 14), (64, 64, 3, 3), 1, 1, 1, 1),
    ((2, 16, 32, 32), (32, 16, 3, 3), 2, 1, 1, 1),
    ((2, 4, 8, 8), (6, 2, 3, 3), 2, 1, 1, 2),
    ((1, 16, 1, 20), (16, 16, 3, 3), 1, (2, 1), 1, 1),
]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", ADD_CASES)
def test_grad_input_add_gives_the_bits_of_the_sum(x_shape, w_shape, stride, padding, dilation,
                                                  groups, dtype, n_threads):
    x, w, _ = _problem(x_shape, w_shape, dtype)
    out_shape = R.conv2d(x, w, None, stride, padding, dilation, groups).shape
    rng = np.random.default_rng(1)
    g = rng.standard_normal(out_shape).astype(dtype)
    add = rng.standard_normal(x_shape).astype(dtype)
    add_before = add.copy()
    with fastconv.threads(n_threads):
        fused = F.conv2d_backward(g, x, w, stride, padding, dilation, groups, grad_input_add=add)
        plain = F.conv2d_backward(g, x, w, stride, padding, dilation, groups)
    np.testing.assert_array_equal(fused[0], plain[0] + add)
    for got, want in zip(fused[1:], plain[1:]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(add, add_before)
    expected = R.conv2d_backward(g, x, w, stride, padding, dilation, groups, grad_input_add=add)
    _close(fused[0], expected[0], dtype)
    _close(expected[0], R.conv2d_backward(g, x, w, stride, padding, dilation, groups)[0] + add,
           dtype)


def test_grad_input_add_unbatched_and_non_contiguous():
    x, w, _ = _problem((3, 16, 9, 9), (16, 16, 3, 3), np.float64)
    g = np.random.default_rng(1).standard_normal((16, 9, 9))
    add = np.random.default_rng(2).standard_normal((9, 9, 16)).transpose(2, 0, 1)
    got = F.conv2d_backward(g, x[0], w, 1, 1, grad_input_add=add)[0]
    np.testing.assert_array_equal(got, F.conv2d_backward(g, x[0], w, 1, 1)[0] + add)


@pytest.mark.parametrize("backend", [F, R])
@pytest.mark.parametrize("add, needs_input_grad, match", [
    (np.zeros((2, 4, 8, 7)), True, "shape"),
    (np.zeros((2, 4, 8, 8), np.float32), True, "dtype"),
    (np.zeros((2, 4, 8, 8)), False, "needs_input_grad"),
])
def test_grad_input_add_refusals(backend, add, needs_input_grad, match):
    x, w, _ = _problem((2, 4, 8, 8), (6, 4, 3, 3), np.float64)
    g = np.zeros((2, 6, 8, 8))
    with pytest.raises((ValueError, TypeError), match=match):
        backend.conv2d_backward(g, x, w, 1, 1, needs_input_grad=needs_input_grad,
                                grad_input_add=add)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False),
                                   (False, False, True), (False, True, True),
                                   (False, False, False)])
def test_conv2d_backward_computes_only_what_is_asked(needs):
    x, w, _ = _problem((3, 4, 8, 7), (6, 2, 3, 3), np.float64)
    g = np.random.default_rng(1).standard_normal((3, 6, 8, 7))
    grads = F.conv2d_backward(g, x, w, 1, 1, 1, 2, needs_input_grad=needs[0],
                              needs_weight_grad=needs[1], needs_bias_grad=needs[2])
    full = R.conv2d_backward(g, x, w, 1, 1, 1, 2)
    for asked, actual, expected in zip(needs, grads, full):
        if asked:
            _close(actual, expected, np.float64)
        else:
            assert actual is None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_unbatched_input(algorithm):
    x, w, b = _problem((3, 7, 6), (4, 3, 3, 3), np.float64)
    out = F.conv2d(x, w, b, padding=1, algorithm=algorithm)
    assert out.shape == (4, 7, 6)
    _close(out, R.conv2d(x, w, b, padding=1), np.float64)
    g = np.random.default_rng(1).standard_normal(out.shape)
    grads = F.conv2d_backward(g, x, w, padding=1)
    assert grads[0].shape == (3, 7, 6)
    for actual, expected in zip(grads, R.conv2d_backward(g, x, w, padding=1)):
        _close(actual, expected, np.float64)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_zero_batch(algorithm):
    x, w, b = _problem((0, 3, 7, 6), (4, 3, 3, 3), np.float32)
    out = F.conv2d(x, w, b, algorithm=algorithm)
    assert out.shape == (0, 4, 5, 4) and out.dtype == np.float32
    gi, gw, gb = F.conv2d_backward(np.zeros((0, 4, 5, 4), np.float32), x, w)
    assert gi.shape == (0, 3, 7, 6)
    np.testing.assert_array_equal(gw, np.zeros_like(w))
    np.testing.assert_array_equal(gb, np.zeros(4, np.float32))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_non_contiguous_inputs(algorithm):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 4, 9, 16))[::2, ::2, :, ::2]  # (2, 2, 9, 8)
    w = rng.standard_normal((3, 5, 3, 4)).transpose(0, 3, 2, 1)[:, ::2]  # (3, 2, 3, 5)
    b = rng.standard_normal(6)[::2]
    expected = R.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), b.copy(), padding=1)
    _close(F.conv2d(x, w, b, padding=1, algorithm=algorithm), expected, np.float64)
    g = rng.standard_normal((2, 3, 6, 9)).transpose(0, 1, 3, 2)
    for actual, want in zip(F.conv2d_backward(g, x, w, padding=1),
                            R.conv2d_backward(np.ascontiguousarray(g), np.ascontiguousarray(x),
                                              np.ascontiguousarray(w), padding=1)):
        _close(actual, want, np.float64)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_out_receives_the_result(algorithm):
    x, w, b = _problem((2, 3, 7, 6), (4, 3, 3, 3), np.float32)
    out = np.full((2, 4, 5, 4), np.nan, np.float32)
    result = F.conv2d(x, w, b, out=out, algorithm=algorithm)
    assert result is out
    _close(out, R.conv2d(x, w, b), np.float32)


@pytest.mark.parametrize("out", [np.empty((2, 4, 5, 4)), np.empty((2, 4, 5, 5), np.float32),
                                 np.empty((2, 4, 4, 5), np.float32).transpose(0, 1, 3, 2),
                                 np.empty(2 * 4 * 5 * 4 * 4 + 1, np.uint8)[1:].view(np.float32)
                                 .reshape(2, 4, 5, 4),   # unaligned
                                 [0.0]])
def test_out_refusals(out):
    x, w, _ = _problem((2, 3, 7, 6), (4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous float32"):
        F.conv2d(x, w, out=out)


# 3x3 layers at stride 1 and 2 on the channel-vector block: (x shape, weight shape,
# padding, groups, stride)
THREES_CASES = [
    ((2, 16, 12, 32), (16, 16, 3, 3), 1, 1, 1),   # one vector of output channels, 16-pixel blocks
    ((2, 32, 9, 16), (32, 32, 3, 3), 1, 1, 1),    # two vectors, the last block short
    ((1, 8, 7, 11), (40, 8, 3, 3), 2, 1, 1),      # a partial vector; padding rows skipped
    ((2, 8, 6, 12), (32, 4, 3, 3), 0, 2, 1),      # groups
    ((2, 16, 13, 33), (16, 16, 3, 3), 1, 1, 2),   # stride 2: two inputs for three taps; odd sizes
    ((2, 32, 16, 16), (64, 32, 3, 3), 1, 1, 2),   # ResNet-20's 32->64 downsampling layer
    ((1, 8, 9, 21), (40, 8, 3, 3), 2, 1, (1, 2)),  # stride 2 across only, a partial vector
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, padding, groups, stride", THREES_CASES)
def test_taps_in_threes_give_the_bits_of_tap_by_tap(x_shape, w_shape, padding, groups, stride,
                                                    dtype):
    """The channel-vector block reads a 3x3 kernel's rows as threes of consecutive taps
    (each input broadcast once for every tap that reads it): each output adds its taps in
    the same order, so the result is the tap-by-tap block's, bit for bit, residual and all."""
    if F._conv.kvec_block_limits(4)[0] == 0:
        pytest.skip("the portable build (FASTCONV_CPU=generic) has no channel-vector block")
    x, w, b = _problem(x_shape, w_shape, dtype)
    problem = _conv_plan.Problem.of(_validation.conv2d_args(x, w, b, stride, padding, 1,
                                                            groups))
    (sh, sw) = problem.stride
    block = _conv_plan.kvec_covering_block(problem, _conv_plan.build_support(w.itemsize))
    assert block.by_rows
    ops = F._kvec_operands(block, problem, w)
    assert ops.run == 3
    add = np.random.default_rng(2).standard_normal(problem.out_shape).astype(dtype)
    outs = []
    for run in (1, 3):
        out = np.full(problem.out_shape, np.nan, dtype)
        work = np.zeros(ops.stride_items, dtype)
        F._conv.conv2d_direct_kvec[F._FUSED[np.dtype(dtype)]](
            x, ops.wpack, b, out, work, ops.stride_items, ops.taps, ops.row_taps, ops.pix, run,
            sh, sw, padding, padding, ops.hp, ops.wp, groups, block.kv, block.pixels, True, 1,
            add)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    _close(outs[1], R.conv2d(x, w, b, stride, padding, groups=groups) + add, dtype)


# ... with enough taps for the channel-vector weight gradient (which reads them one by one:
# in threes, with the grad_output columns sliding through registers, it measured 5-20%
# slower, its accumulators spilled)
BACKWARD_THREES_CASES = [case[:4] for case in THREES_CASES[:2]] + [
    ((1, 16, 7, 11), (40, 16, 3, 3), 2, 1),
    ((2, 32, 6, 12), (32, 16, 3, 3), 0, 2),
]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, padding, groups", BACKWARD_THREES_CASES)
def test_backward_with_taps_in_threes_gives_the_bits_of_tap_by_tap(
        x_shape, w_shape, padding, groups, dtype, n_threads, monkeypatch):
    """grad_input, the transposed convolution on the channel-vector block, reads its taps in
    threes as the forward does: conv2d_backward's every gradient is bitwise the one planned
    without threes."""
    if F._conv.kvec_block_limits(4)[0] == 0:
        pytest.skip("the portable build (FASTCONV_CPU=generic) has no channel-vector block")
    x, w, b = _problem(x_shape, w_shape, dtype)
    problem = _conv_plan.Problem.of(_validation.conv2d_args(x, w, b, 1, padding, 1, groups))
    assert _conv_plan.plan_conv2d_backward(problem).weight_route is Route.WEIGHT_GRAD_KVEC
    g = np.random.default_rng(3).standard_normal(problem.out_shape).astype(dtype)
    kvec_operands, results = F._kvec_operands, []
    for threes in (True, False):
        if not threes:  # the same plans and blocks, the taps one by one
            def tap_by_tap(*args):
                ops = kvec_operands(*args)
                return ops and ops._replace(run=1)
            monkeypatch.setattr(F, "_kvec_operands", tap_by_tap)
        F._operand_cache.clear()
        with fastconv.threads(n_threads):
            results.append(F.conv2d_backward(g, x, w, 1, padding, 1, groups))
    F._operand_cache.clear()
    for with_threes, tap_by_tap in zip(*results):
        np.testing.assert_array_equal(with_threes, tap_by_tap)
    _close(results[0][1], R.conv2d_backward(g, x, w, 1, padding, groups=groups)[1], dtype)


# Winograd F(2x2, 3x3): (x shape, weight shape, padding)
WINOGRAD_CASES = [
    ((2, 3, 7, 9), (4, 3, 3, 3), 1),            # odd output: tiles cut at the bottom and right
    ((1, 16, 8, 8), (40, 16, 3, 3), 0),         # two vectors of output channels, one partial
    ((2, 5, 6, 5), (17, 5, 3, 3), 2),           # padding past the kernel's reach
    ((1, 4, 9, 6), (16, 4, 3, 3), (0, 2)),      # padding differs across and down
    ((2, 8, 10, 11), (16, 8, 3, 3), "same"),
    ((1, 16, 30, 29), (16, 16, 3, 3), 1),       # several tile blocks, the last one short
    ((3, 1, 4, 4), (1, 1, 3, 3), 1),            # one channel either side
]


def _skip_without_winograd():
    if F._conv.kvec_block_limits(4)[0] == 0:
        pytest.skip("the portable build (FASTCONV_CPU=generic) has no Winograd path")


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, padding", WINOGRAD_CASES)
def test_winograd_matches_reference(x_shape, w_shape, padding, dtype, n_threads):
    _skip_without_winograd()
    x, w, b = _problem(x_shape, w_shape, dtype)
    with fastconv.threads(n_threads):
        out = F.conv2d(x, w, b, 1, padding, algorithm="winograd")
        no_bias = F.conv2d(x, w, None, 1, padding, algorithm="winograd")
    _close(out, R.conv2d(x, w, b, 1, padding), dtype)
    _close(no_bias, R.conv2d(x, w, None, 1, padding), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_is_chosen_for_wide_3x3_layers_forward_and_grad_input(dtype):
    x, w, b = _problem((2, 64, 14, 15), (64, 64, 3, 3), dtype)
    _skip_without_winograd()
    problem = _conv_plan.Problem.of(_validation.conv2d_args(x, w, b, 1, 1, 1, 1))
    assert _conv_plan.plan_conv2d(problem).route is Route.WINOGRAD
    assert _conv_plan.plan_conv2d_backward(problem).input_route is Route.WINOGRAD
    _close(F.conv2d(x, w, b, padding=1), R.conv2d(x, w, b, padding=1), dtype)
    g = np.random.default_rng(1).standard_normal((2, 64, 14, 15)).astype(dtype)
    for actual, expected in zip(F.conv2d_backward(g, x, w, padding=1),
                                R.conv2d_backward(g, x, w, padding=1)):
        _close(actual, expected, dtype)


def test_winograd_redoes_overflowing_images_by_direct_convolution():
    _skip_without_winograd()
    # Winograd's input transform adds and subtracts inputs: +-3e38 two rows apart overflow
    # float32 there, though every output of direct convolution stays finite.
    x, w, b = _problem((3, 2, 6, 6), (4, 2, 3, 3), np.float32)
    w *= 1e-3
    x[1, 0, ::2] = 3e38
    x[1, 0, 1::2] = -3e38
    out = F.conv2d(x, w, b, padding=1, algorithm="winograd")
    direct = F.conv2d(x, w, b, padding=1, algorithm="direct")
    assert np.isfinite(direct).all()
    np.testing.assert_array_equal(out[1], direct[1])
    _close(out[[0, 2]], R.conv2d(x[[0, 2]], w, b, padding=1), np.float32)


@pytest.mark.parametrize("kwargs", [dict(w_shape=(4, 3, 5, 5)), dict(stride=2),
                                    dict(dilation=2), dict(groups=3, w_shape=(3, 1, 3, 3))])
def test_winograd_refuses_what_it_cannot_compute(kwargs):
    x, w, _ = _problem((1, 3, 7, 6), kwargs.pop("w_shape", (4, 3, 3, 3)), np.float32)
    with pytest.raises(ValueError, match="algorithm='winograd' takes 3x3 kernels at stride 1"):
        F.conv2d(x, w, algorithm="winograd", **kwargs)


# (x shape, weight shape, padding, dilation) of the pixel-vector weight gradient: blocks of
# at most 4 output channels (split evenly) by 5 taps, the last of each short
PIXVEC_CASES = [
    ((40, 1, 28, 28), (6, 1, 5, 5), 2, 1),      # LeNet's conv1; 40 images: several chunks
    ((2, 3, 9, 21), (7, 3, 3, 7), 1, 1),        # 7 channels (4+3), 7 taps a row (5+2)
    ((3, 2, 7, 19), (10, 2, 3, 3), 1, 1),       # 10 channels (4+4+2)
    ((2, 2, 11, 37), (4, 2, 2, 3), (1, 0), (2, 3)),  # rows of 3 vectors, dilation
    ((3, 5, 6, 6), (16, 5, 3, 3), "same", 1),   # 16 channels; a row shorter than a vector
    ((1, 1, 5, 4), (1, 1, 4, 4), "same", 1),    # one channel, 'same' with an even kernel
]


def _pixvec_lanes(dtype):
    return F._conv.pixvec_lanes(np.dtype(dtype).itemsize)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, padding, dilation", PIXVEC_CASES)
def test_pixel_vector_weight_grad_matches_reference(x_shape, w_shape, padding, dilation, dtype,
                                                    n_threads):
    if _pixvec_lanes(dtype) == 0:
        pytest.skip("this build has no pixel-vector kernel (AVX-512 only)")
    x, w, _ = _problem(x_shape, w_shape, dtype)
    args = _validation.conv2d_args(x, w, None, 1, padding, dilation, 1)
    plan = _conv_plan.plan_conv2d_backward(_conv_plan.Problem.of(args))
    assert plan.weight_route is Route.WEIGHT_GRAD_PIXVEC
    g = np.random.default_rng(1).standard_normal(args.out_shape).astype(dtype)
    with fastconv.threads(n_threads):
        grads = F.conv2d_backward(g, x, w, 1, padding, dilation)
    for actual, expected in zip(grads, R.conv2d_backward(g, x, w, 1, padding, dilation)):
        _close(actual, expected, dtype)
    with fastconv.threads(3 - n_threads):
        other = F.conv2d_backward(g, x, w, 1, padding, dilation, needs_input_grad=False,
                                  needs_bias_grad=False)[1]
    np.testing.assert_array_equal(other, grads[1])  # the same bits on 1 and 2 threads


def test_pixel_vector_weight_grad_left_to_other_kernels():
    # wider layers go to the channel-vector kernel or GEMM: 32 output channels, a stride,
    # groups, a 1x1 kernel
    for x_shape, w_shape, kwargs in [((2, 1, 12, 12), (32, 1, 5, 5), {}),
                                     ((2, 2, 12, 12), (4, 2, 3, 3), dict(stride=2)),
                                     ((2, 4, 12, 12), (4, 2, 3, 3), dict(groups=2)),
                                     ((2, 3, 12, 12), (4, 3, 1, 1), {})]:
        x, w, _ = _problem(x_shape, w_shape, np.float64)
        args = _validation.conv2d_args(x, w, None, kwargs.get("stride", 1), 0, 1,
                                       kwargs.get("groups", 1))
        plan = _conv_plan.plan_conv2d_backward(_conv_plan.Problem.of(args))
        assert plan.weight_route is not Route.WEIGHT_GRAD_PIXVEC
        g = np.ones(R.conv2d(x, w, None, **kwargs).shape)
        _close(F.conv2d_backward(g, x, w, **kwargs)[1],
               R.conv2d_backward(g, x, w, **kwargs)[1], np.float64)


def test_unknown_algorithm_refused():
    x, w, _ = _problem((1, 3, 7, 6), (4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="'auto', 'gemm', 'direct' or 'winograd', got 'fft'"):
        F.conv2d(x, w, algorithm="fft")


def test_refusals_come_before_the_kernel():
    x, w, _ = _problem((1, 3, 7, 6), (4, 3, 3, 3), np.float32)
    with pytest.raises(TypeError, match="same dtype"):
        F.conv2d(x, w.astype(np.float64))
    with pytest.raises(ValueError, match="grad_output"):
        F.conv2d_backward(np.zeros((1, 4, 5, 5), np.float32), x, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_are_bitwise_deterministic_across_runs_and_threads(dtype):
    # 37 images: several chunks, a ragged last one, uneven thread shares
    x, w, _ = _problem((37, 4, 9, 8), (6, 4, 3, 3), dtype)
    g = np.random.default_rng(1).standard_normal((37, 6, 9, 8)).astype(dtype)
    runs = []
    for n_threads in (1, 2, 2, 1):
        with fastconv.threads(n_threads):
            runs.append(F.conv2d_backward(g, x, w, padding=1))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    assert runs[0][1].tobytes() == runs[1][1].tobytes()


def test_workspace_is_reused_between_calls():
    x, w, b = _problem((8, 3, 12, 12), (4, 3, 3, 3), np.float32)
    _workspace.release()
    F.conv2d(x, w, b, algorithm="gemm")
    size = _workspace.nbytes()
    assert size > 0
    first = _workspace.scratch(1, np.float32).ctypes.data
    F.conv2d(x[:4], w, b, algorithm="gemm")
    assert _workspace.nbytes() == size
    assert _workspace.scratch(1, np.float32).ctypes.data == first


def test_workspace_per_python_thread_gives_correct_results():
    x, w, b = _problem((6, 3, 10, 10), (5, 3, 3, 3), np.float64)
    expected = R.conv2d(x, w, b, padding=1)
    results = [None] * 4

    def work(i):
        for _ in range(5):
            results[i] = F.conv2d(x, w, b, padding=1, algorithm="gemm")

    workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    for r in results:
        _close(r, expected, np.float64)


@pytest.mark.parametrize("x_shape, w_shape, kw", [
    # a small, strided, grouped problem
    ((2, 4, 6, 5), (4, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
    # stride 2 on the channel-vector block (two vectors of float64 channels, 6 columns)
    ((2, 16, 9, 11), (32, 16, 3, 3), dict(stride=2, padding=1)),
])
def test_gradient_matches_finite_differences(x_shape, w_shape, kw):
    # float64 central differences of sum(conv2d * g); weights scaled to unit-size outputs, so
    # that the sum's rounding stays far below the differences
    x, w, b = _problem(x_shape, w_shape, np.float64)
    w /= np.sqrt(w[0].size)
    g = np.random.default_rng(3).standard_normal(F.conv2d(x, w, b, **kw).shape)
    gx, gw, gb = F.conv2d_backward(g, x, w, **kw)
    eps = 1e-6
    for array, grad in ((x, gx), (w, gw), (b, gb)):
        flat, gflat = array.reshape(-1), grad.reshape(-1)
        for i in np.random.default_rng(4).choice(flat.size, min(6, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = np.sum(F.conv2d(x, w, b, **kw) * g)
            flat[i] = old - eps
            down = np.sum(F.conv2d(x, w, b, **kw) * g)
            flat[i] = old
            assert (up - down) / (2 * eps) == pytest.approx(gflat[i], rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups",
                         [CASES[2], CASES[3], CASES[4], CASES[7]])
def test_matches_torch(x_shape, w_shape, stride, padding, dilation, groups, dtype):
    torch = pytest.importorskip("torch")
    x, w, b = _problem(x_shape, w_shape, dtype)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    with warnings.catch_warnings():  # torch warns that an even 'same' kernel copies the input
        warnings.simplefilter("ignore")
        yt = torch.nn.functional.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    g = np.random.default_rng(1).standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.from_numpy(g))
    _close(F.conv2d(x, w, b, stride, padding, dilation, groups), yt.detach().numpy(), dtype)
    for actual, expected in zip(F.conv2d_backward(g, x, w, stride, padding, dilation, groups),
                                (xt.grad, wt.grad, bt.grad)):
        _close(actual, expected.numpy(), dtype)


@pytest.mark.parametrize("tile_columns", [1, 20, 10**9])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups",
                         [CASES[2], CASES[4], CASES[5], CASES[7]])
def test_every_tiling_gives_the_same_result(monkeypatch, tile_columns, x_shape, w_shape, stride,
                                            padding, dilation, groups):
    # 1: one output row per tile; 20: a few rows; 10**9: the whole batch in one tile
    monkeypatch.setattr(_conv_plan, "TILE_COLUMNS", tile_columns)
    x, w, b = _problem(x_shape, w_shape, np.float64)
    out = F.conv2d(x, w, b, stride, padding, dilation, groups, algorithm="gemm")
    _close(out, R.conv2d(x, w, b, stride, padding, dilation, groups), np.float64)
    g = np.random.default_rng(1).standard_normal(out.shape)
    with fastconv.threads(2):
        grads = F.conv2d_backward(g, x, w, stride, padding, dilation, groups)
    for actual, expected in zip(grads, R.conv2d_backward(g, x, w, stride, padding, dilation,
                                                         groups)):
        _close(actual, expected, np.float64)


@pytest.mark.parametrize("bias", [False, True])
def test_direct_conv_whose_windows_all_lie_in_the_padding(bias):
    """Each output is its bias alone; the channel-vector kernel is then handed no taps at
    all (the bounds-checked build found it indexing the empty tap list)."""
    x, w, b = _problem((2, 4, 1, 3), (16, 4, 2, 2), np.float32)
    b = b if bias else None
    kwargs = dict(stride=(2, 1), padding=3, dilation=(2, 1))
    out = F.conv2d(x, w, b, **kwargs, algorithm="direct")
    np.testing.assert_array_equal(out, R.conv2d(x, w, b, **kwargs))
