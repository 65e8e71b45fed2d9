"""The convolution planner: which route each layer takes on each CPU level's build.

The plans are asked of fastconv._conv_plan with each build's BuildSupport, so every level's
choices are checked in one process; test_loaded_build_is_described_here ties those
descriptions to the build actually loaded. The kernels' results are checked in test_conv.py.
"""
import numpy as np
import pytest

import fastconv.functional as F
from fastconv import _conv_plan as P
from fastconv import _validation, reference as R
from fastconv._conv_plan import Route
from fastconv._kernels import dispatched_levels

B = P.BuildSupport
# (float32, float64) of each level's _conv build
SUPPORT = {
    "x86_64_v4": (B(16, {1: 28, 2: 14}, {1: 27, 2: 12}, (8, 16), 32, 6, 16),
                  B(8, {1: 28, 2: 14}, {1: 27, 2: 12}, (8, 8), 16, 6, 8)),
    "x86_64_v3": (B(8, {1: 12, 2: 6}, {1: 11, 2: 4}, (4, 16), 16, 4, 0),
                  B(4, {1: 12, 2: 6}, {1: 11, 2: 4}, (4, 8), 8, 4, 0)),
    "generic": (B(0, {1: 0, 2: 0}, {1: 0, 2: 0}, (4, 8), 8, 4, 0),
                B(0, {1: 0, 2: 0}, {1: 0, 2: 0}, (4, 4), 4, 4, 0)),
}
DTYPES = [np.float32, np.float64]

LAYERS = {  # x shape, weight shape, conv arguments
    "lenet_conv1": ((256, 1, 28, 28), (6, 1, 5, 5), dict(padding=2)),
    "lenet_conv2": ((256, 6, 14, 14), (16, 6, 5, 5), {}),
    "cifar_first": ((128, 3, 32, 32), (16, 3, 3, 3), dict(padding=1)),
    "resnet20_3x3_16": ((128, 16, 32, 32), (16, 16, 3, 3), dict(padding=1)),
    "resnet20_3x3_32": ((128, 32, 16, 16), (32, 32, 3, 3), dict(padding=1)),
    "resnet_3x3_64": ((16, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    "resnet_3x3_256": ((16, 256, 14, 14), (256, 256, 3, 3), dict(padding=1)),
    "resnet_3x3_512_7x7": ((16, 512, 7, 7), (512, 512, 3, 3), dict(padding=1)),
    "stride2_3x3": ((16, 64, 56, 56), (128, 64, 3, 3), dict(stride=2, padding=1)),
    "resnet20_3x3_16_32_s2": ((128, 16, 32, 32), (32, 16, 3, 3), dict(stride=2, padding=1)),
    "resnet20_3x3_32_64_s2": ((128, 32, 16, 16), (64, 32, 3, 3), dict(stride=2, padding=1)),
    "pointwise_256_14x14": ((32, 256, 14, 14), (64, 256, 1, 1), {}),
    "pointwise_512_7x7": ((8, 512, 7, 7), (512, 512, 1, 1), {}),
    "downsample_1x1_s2": ((16, 64, 56, 56), (128, 64, 1, 1), dict(stride=2)),
    "depthwise_5x5": ((8, 32, 28, 28), (32, 1, 5, 5), dict(padding=2, groups=32)),
    "depthwise_3x3": ((8, 32, 28, 28), (32, 1, 3, 3), dict(padding=1, groups=32)),
    "wide_7x7_s2": ((8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3)),
}

G, D, KV, W = Route.GEMM, Route.DIRECT, Route.DIRECT_KVEC, Route.WINOGRAD
WKV, WPX = Route.WEIGHT_GRAD_KVEC, Route.WEIGHT_GRAD_PIXVEC
# layer: {level: ((forward, grad_input, grad_weight) for float32, the same for float64)}
EXPECTED = {
    "lenet_conv1": {"x86_64_v4": ((D, G, WPX), (D, G, WPX)), "x86_64_v3": ((D, G, G), (D, G, WKV))},
    "lenet_conv2": {"x86_64_v4": ((KV, G, WKV), (KV, G, WKV)), "x86_64_v3": ((KV, G, WKV), (KV, KV, WKV))},
    # 3x3 at stride 1: the channel-vector block reads the taps in threes, faster than the
    # column-vector block; grad_input as the transposed convolution on it, as the forward
    "cifar_first": {"x86_64_v4": ((KV, G, WPX),) * 2, "x86_64_v3": ((KV, G, G),) * 2},
    "resnet20_3x3_16": {"x86_64_v4": ((KV, KV, WKV),) * 2, "x86_64_v3": ((KV, KV, WKV), (W, W, WKV))},
    "resnet20_3x3_32": {"x86_64_v4": ((KV, KV, WKV), (W, W, WKV)), "x86_64_v3": ((W, W, WKV),) * 2},
    "resnet_3x3_64": {"x86_64_v4": ((W, W, WKV),) * 2, "x86_64_v3": ((W, W, WKV),) * 2},
    "resnet_3x3_256": {"x86_64_v4": ((KV, KV, WKV),) * 2, "x86_64_v3": ((KV, KV, WKV),) * 2},
    "resnet_3x3_512_7x7": {"x86_64_v4": ((G, G, WKV),) * 2, "x86_64_v3": ((G, G, WKV),) * 2},
    "stride2_3x3": {"x86_64_v4": ((KV, G, WKV),) * 2, "x86_64_v3": ((KV, G, WKV),) * 2},
    # 3x3 at stride 2: the channel-vector block reads the taps in threes too (two loads for
    # three FMAs), faster than the column-vector block on both builds and dtypes (batch 128:
    # 1.2-1.4x on AVX-512, 1.25-1.4x on AVX2)
    "resnet20_3x3_16_32_s2": {"x86_64_v4": ((KV, G, WKV),) * 2, "x86_64_v3": ((KV, G, WKV),) * 2},
    "resnet20_3x3_32_64_s2": {"x86_64_v4": ((KV, G, WKV),) * 2, "x86_64_v3": ((KV, G, WKV),) * 2},
    "pointwise_256_14x14": {"x86_64_v4": ((KV, KV, WKV),) * 2, "x86_64_v3": ((KV, KV, WKV),) * 2},
    "pointwise_512_7x7": {"x86_64_v4": ((G, G, G),) * 2, "x86_64_v3": ((G, G, G),) * 2},
    "downsample_1x1_s2": {"x86_64_v4": ((G, G, G),) * 2, "x86_64_v3": ((G, G, G),) * 2},
    "depthwise_5x5": {"x86_64_v4": ((D, G, G),) * 2, "x86_64_v3": ((D, G, G),) * 2},
    "depthwise_3x3": {"x86_64_v4": ((G, G, G),) * 2, "x86_64_v3": ((G, G, G),) * 2},
    "wide_7x7_s2": {"x86_64_v4": ((KV, G, WKV), (D, G, WKV)), "x86_64_v3": ((D, G, WKV),) * 2},
}


def _problem(name, dtype):
    x_shape, w_shape, kwargs = LAYERS[name]
    # zero-stride stand-ins: planning reads shapes only
    x = np.broadcast_to(np.zeros((), dtype), x_shape)
    w = np.broadcast_to(np.zeros((), dtype), w_shape)
    args = _validation.conv2d_args(x, w, None, kwargs.get("stride", 1), kwargs.get("padding", 0),
                                   kwargs.get("dilation", 1), kwargs.get("groups", 1))
    return P.Problem.of(args)


def _routes(problem, support):
    backward = P.plan_conv2d_backward(problem, support=support)
    return P.plan_conv2d(problem, support=support).route, backward.input_route, backward.weight_route


@pytest.mark.parametrize("level", ["x86_64_v4", "x86_64_v3"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_layer_takes_its_route(name, level):
    for dtype, support, expected in zip(DTYPES, SUPPORT[level], EXPECTED[name][level]):
        assert _routes(_problem(name, dtype), support) == expected, (name, level, dtype)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_portable_build_takes_gemm_everywhere_but_when_asked(name):
    for dtype, support in zip(DTYPES, SUPPORT["generic"]):
        problem = _problem(name, dtype)
        assert _routes(problem, support) == (G, G, G)
        assert P.plan_conv2d(problem, "direct", support).route is D  # no channel-vector block
        with pytest.raises(ValueError, match="needs the AVX2 or AVX-512 kernels|takes 3x3"):
            P.plan_conv2d(problem, "winograd", support)


def test_loaded_build_is_described_here():
    level = dispatched_levels().get("_conv", "generic")
    assert (P.build_support(4), P.build_support(8)) == SUPPORT[level]


def test_gradients_asked_for_decide_the_gemm_kernels_work():
    support = SUPPORT["x86_64_v4"][0]
    problem = _problem("lenet_conv1", np.float32)
    plan = P.plan_conv2d_backward(problem, needs_input_grad=False, needs_bias_grad=True,
                                  support=support)
    assert (plan.input_route, plan.weight_route) == (None, WPX)
    assert (plan.gemm_input, plan.gemm_weight, plan.gemm_bias) == (False, False, True)
    plan = P.plan_conv2d_backward(problem, False, True, False, support)
    assert plan.gemm is None and plan.gemm_n_chunks == 0
    plan = P.plan_conv2d_backward(_problem("depthwise_3x3", np.float32), True, True, True, support)
    assert plan.gemm_input and plan.gemm_weight and plan.gemm_bias and plan.gemm_n_chunks > 0


def test_non_finite_weight_keeps_grad_input_on_col2im():
    support = SUPPORT["x86_64_v4"][0]
    problem = _problem("resnet_3x3_64", np.float32)
    asked = []
    plan = P.plan_conv2d_backward(problem, support=support,
                                  weight_is_finite=lambda: asked.append(1) or False)
    assert plan.input_route is G and asked == [1]
    # the stride already rules the transposed route out: the weight is not read
    plan = P.plan_conv2d_backward(_problem("stride2_3x3", np.float32), support=support,
                                  weight_is_finite=lambda: pytest.fail("weight read"))
    assert plan.input_route is G


def test_empty_batch_plans_no_kernel():
    x = np.zeros((0, 3, 8, 8), np.float32)
    args = _validation.conv2d_args(x, np.zeros((4, 3, 3, 3), np.float32), None, 1, 1, 1, 1)
    plan = P.plan_conv2d_backward(P.Problem.of(args), support=SUPPORT["x86_64_v4"][0])
    assert plan.input_route is plan.weight_route is plan.gemm is None


@pytest.mark.parametrize("n", [1, 7, 32, 33, 100, 1000])
def test_grad_chunks_cover_the_batch_in_whole_tiles(n):
    for images in (1, 3, 4):
        chunk, chunks = P.grad_chunks(n, images)
        assert chunk % images == 0 and chunks * chunk >= n > (chunks - 1) * chunk
        assert chunks <= P.GRAD_CHUNKS


def test_gemm_tiles_are_about_tile_columns_wide():
    big = P.gemm_tiles(_problem("resnet_3x3_64", np.float32))
    assert big.images == 1 and big.rows * 56 <= P.TILE_COLUMNS < (big.rows + 1) * 56
    small = P.gemm_tiles(_problem("lenet_conv2", np.float32))  # 10x10 outputs: batched
    assert small.rows == 10 and 1 < small.images <= P.TILE_COLUMNS // 100
    assert small.images * 150 * 100 * 4 <= P.BATCH_TILE_BYTES


def test_winograd_refused_where_the_loaded_build_has_none(monkeypatch):
    # conv2d asks build_support at each call: standing in the portable build's answer
    x, w = np.ones((1, 3, 7, 6), np.float32), np.ones((4, 3, 3, 3), np.float32)
    monkeypatch.setattr(P, "build_support", lambda itemsize: SUPPORT["generic"][itemsize // 8])
    with pytest.raises(ValueError, match="needs the AVX2 or AVX-512 kernels"):
        F.conv2d(x, w, algorithm="winograd")
    np.testing.assert_allclose(F.conv2d(x, w), R.conv2d(x, w), rtol=1e-5)  # GEMM serves


@pytest.mark.parametrize("level", ["x86_64_v4", "x86_64_v3", "generic"])
def test_kvec_covering_block_is_kvec_block_without_the_column_preference(level):
    # compile's executor takes it in place of the register-blocked direct block
    for support, dtype in zip(SUPPORT[level], DTYPES):
        for name in LAYERS:
            p = _problem(name, dtype)
            covering = P.kvec_covering_block(p, support)
            lanes = support.kvec_lanes
            assert (covering is None) == (lanes == 0 or p.weight_shape[0] // p.groups < lanes)
            if P.kvec_block(p, support) is not None:
                assert covering == P.kvec_block(p, support)
    # taps in threes: the channel-vector block; 2 blocks of 16 where 27 pixels is the most
    p = _problem("resnet20_3x3_16", np.float32)
    assert P.kvec_block(p, SUPPORT["x86_64_v4"][0]) == P.KvecBlock(1, 16, True)
    # 3x3 at stride 2 reads threes too: 12 pixels at most, 8 x 2 for 16 columns
    p = _problem("resnet20_3x3_16_32_s2", np.float64)
    assert P.kvec_block(p, SUPPORT["x86_64_v4"][1]) == P.KvecBlock(2, 8, True)
    # a 7x7 kernel at stride 2: the column-vector block where it serves as well
    p = _problem("wide_7x7_s2", np.float64)
    assert P.kvec_block(p, SUPPORT["x86_64_v4"][1]) is None
    assert P.kvec_covering_block(p, SUPPORT["x86_64_v4"][1]) is not None
