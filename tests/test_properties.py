"""Property-based tests: random shapes and parameters, compiled kernels against the reference.

Valid draws (shapes, stride, padding incl. 'same'/'valid', dilation, groups, ceil_mode,
count_include_pad, divisor_override, 3-D inputs, zero batches, non-contiguous inputs,
algorithm and thread count) must give fastconv.reference's result; draws from a wider range
that may be invalid must be refused by both with the same exception and message, or
accepted by both with the same result. Hypothesis runs derandomized with a modest number
of small examples, so the suite is reproducible and fast.
"""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import functional as F
from fastconv import reference as R

from _isolated import TESTS_DIR, child_env

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}

dtypes = st.sampled_from([np.float32, np.float64])
num_threads = st.sampled_from([1, 2])
pairs = lambda lo, hi: st.tuples(st.integers(lo, hi), st.integers(lo, hi))  # noqa: E731


def _data(rng, shape, dtype, contiguous=True):
    """Random values; a non-contiguous view (every other column of a wider array) if asked."""
    if contiguous:
        return rng.standard_normal(shape).astype(dtype)
    wide = rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)
    return wide[..., ::2]


def _close(actual, expected, dtype):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, **TOL[dtype])


# ---------------------------------------------------------------------------------------
# conv2d forward and backward
# ---------------------------------------------------------------------------------------

@st.composite
def conv_problems(draw):
    algorithm = draw(st.sampled_from(["auto", "gemm", "direct", "winograd"]))
    # Winograd's draws are layers it computes (3x3, stride 1, no dilation or groups)
    winograd = algorithm == "winograd"
    groups = 1 if winograd else draw(st.integers(1, 3))
    # half the draws wide enough for the SIMD kernels: channel-vector blocks (8 or 16
    # output channels per group) and their weight gradients (32+ taps), pixel-vector ones, and
    # the direct input gradient (16+ input channels per group)
    wide = draw(st.booleans())
    cg = draw(st.integers(4, 18) if wide else st.integers(1, 3))
    kg = draw(st.integers(8, 20) if wide else st.integers(1, 3))
    kh, kw = (3, 3) if winograd else draw(pairs(2, 4) if wide else pairs(1, 4))
    stride, dilation = ((1, 1), (1, 1)) if winograd else (draw(pairs(1, 3)), draw(pairs(1, 2)))
    padding = draw(st.one_of(st.integers(0, 3), pairs(0, 3), st.sampled_from(["valid", "same"])))
    if padding == "same":
        stride = (1, 1)
    total = {"valid": (0, 0), "same": (dilation[0] * (kh - 1), dilation[1] * (kw - 1))}.get(
        padding, (2 * padding, 2 * padding) if isinstance(padding, int) else
        (2 * padding[0], 2 * padding[1]))
    # smallest input that gives one output position, plus a few rows/columns
    h = max(1, dilation[0] * (kh - 1) + 1 - total[0]) + draw(st.integers(0, 5))
    w = max(1, dilation[1] * (kw - 1) + 1 - total[1]) + draw(st.integers(0, 5))
    n = draw(st.integers(0, 3))
    unbatched = n == 1 and draw(st.booleans())
    x_shape = (groups * cg, h, w) if unbatched else (n, groups * cg, h, w)
    return dict(x_shape=x_shape, w_shape=(groups * kg, cg, kh, kw), bias=draw(st.booleans()),
                kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
                dtype=draw(dtypes), contiguous=draw(st.booleans()),
                algorithm=algorithm,
                threads=draw(num_threads), seed=draw(st.integers(0, 2**32 - 1)),
                needs=draw(st.tuples(st.booleans(), st.booleans(), st.booleans())))


def _winograd_applies(p, dtype):
    """Whether this build has the Winograd kernel (the portable one has not)."""
    return F._conv.kvec_block_limits(np.dtype(dtype).itemsize)[0] > 0


@settings(SETTINGS, max_examples=120)
@given(conv_problems())
def test_conv2d_forward_and_backward_match_the_reference(p):
    rng = np.random.default_rng(p["seed"])
    dtype = p["dtype"]
    x = _data(rng, p["x_shape"], dtype, p["contiguous"])
    w = _data(rng, p["w_shape"], dtype)
    b = _data(rng, p["w_shape"][:1], dtype) if p["bias"] else None
    expected = R.conv2d(x, w, b, **p["kwargs"])
    algorithm = p["algorithm"]
    if algorithm == "winograd" and not _winograd_applies(p, dtype):
        algorithm = "direct"
    with fastconv.threads(p["threads"]):
        out = F.conv2d(x, w, b, **p["kwargs"], algorithm=algorithm)
    _close(out, expected, dtype)

    g = _data(rng, expected.shape, dtype, p["contiguous"])
    flags = dict(zip(["needs_input_grad", "needs_weight_grad", "needs_bias_grad"], p["needs"]))
    ref_grads = R.conv2d_backward(g, x, w, **p["kwargs"], **flags)
    with fastconv.threads(p["threads"]):
        grads = F.conv2d_backward(g, x, w, **p["kwargs"], **flags)
    for got, want, needed in zip(grads, ref_grads, p["needs"]):
        if needed:
            _close(got, want, dtype)
        else:
            assert got is None and want is None


# ---------------------------------------------------------------------------------------
# im2col / col2im
# ---------------------------------------------------------------------------------------

@st.composite
def unfold_problems(draw):
    kernel, stride, dilation, padding = (draw(pairs(1, 4)), draw(pairs(1, 3)), draw(pairs(1, 2)),
                                         draw(pairs(0, 2)))
    size = tuple(max(1, dilation[i] * (kernel[i] - 1) + 1 - 2 * padding[i])
                 + draw(st.integers(0, 5)) for i in range(2))
    n = draw(st.integers(0, 3))
    c = draw(st.integers(1, 3))
    shape = (c,) + size if n == 1 and draw(st.booleans()) else (n, c) + size
    return dict(shape=shape, kwargs=dict(kernel_size=kernel, stride=stride, padding=padding,
                                         dilation=dilation),
                dtype=draw(dtypes), threads=draw(num_threads),
                contiguous=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


@SETTINGS
@given(unfold_problems())
def test_im2col_and_col2im_match_the_reference(p):
    rng = np.random.default_rng(p["seed"])
    dtype = p["dtype"]
    x = _data(rng, p["shape"], dtype, p["contiguous"])
    expected = R.im2col(x, **p["kwargs"])
    cols = _data(rng, expected.shape, dtype, p["contiguous"])
    with fastconv.threads(p["threads"]):
        # im2col only copies and col2im only adds: both are exact
        np.testing.assert_array_equal(F.im2col(x, **p["kwargs"]), expected)
        folded = F.col2im(cols, p["shape"][-2:], **p["kwargs"])
    _close(folded, R.col2im(cols, p["shape"][-2:], **p["kwargs"]), dtype)


# ---------------------------------------------------------------------------------------
# max / avg pooling forward and backward
# ---------------------------------------------------------------------------------------

@st.composite
def pool_problems(draw, op):
    kernel = draw(pairs(1, 4))
    stride = draw(st.one_of(st.none(), pairs(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = draw(pairs(1, 2)) if op == "max" else (1, 1)
    size = tuple(max(1, dilation[i] * (kernel[i] - 1) + 1 - 2 * padding[i])
                 + draw(st.integers(0, 5)) for i in range(2))
    n = draw(st.integers(0, 3))
    c = draw(st.integers(1, 3))
    shape = (c,) + size if n == 1 and draw(st.booleans()) else (n, c) + size
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding,
                  ceil_mode=draw(st.booleans()))
    if op == "max":
        kwargs["dilation"] = dilation
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        kwargs["divisor_override"] = draw(st.one_of(
            st.none(), st.integers(-3, 6).filter(lambda d: d != 0)))
    return dict(shape=shape, kwargs=kwargs, dtype=draw(dtypes), threads=draw(num_threads),
                contiguous=draw(st.booleans()), special=draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


def _pool_input(rng, p):
    """Small integers, so windows have ties; sometimes NaN and +-inf sprinkled in."""
    x = rng.integers(-3, 4, size=p["shape"]).astype(p["dtype"])
    if p["special"] and x.size:
        flat = x.reshape(-1)
        spots = rng.choice(flat.size, size=max(1, flat.size // 8), replace=True)
        flat[spots] = rng.choice([np.nan, np.inf, -np.inf], size=spots.size)
    if not p["contiguous"]:
        wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
        wide[..., ::2] = x
        x = wide[..., ::2]
    return x


def _valid(args_check, *args, **kwargs):
    """Keep only draws the shared validation accepts (a window of padding alone, for one)."""
    from fastconv import _validation
    try:
        getattr(_validation, args_check)(*args, **kwargs)
    except ValueError:
        assume(False)


@SETTINGS
@given(pool_problems("max"))
def test_max_pool2d_forward_and_backward_match_the_reference(p):
    rng = np.random.default_rng(p["seed"])
    x = _pool_input(rng, p)
    _valid("max_pool2d_args", x, **p["kwargs"])
    out_ref, ind_ref = R.max_pool2d(x, **p["kwargs"], return_indices=True)
    with fastconv.threads(p["threads"]):
        out, ind = F.max_pool2d(x, **p["kwargs"], return_indices=True)
        out_only = F.max_pool2d(x, **p["kwargs"])
    np.testing.assert_array_equal(out, out_ref)  # NaN == NaN here
    np.testing.assert_array_equal(out_only, out_ref)
    np.testing.assert_array_equal(ind, ind_ref)
    assert ind.dtype == np.int64

    g = _data(rng, out.shape, p["dtype"], p["contiguous"])
    expected = R.max_pool2d_backward(g, ind_ref, x.shape)
    with fastconv.threads(p["threads"]):
        _close(F.max_pool2d_backward(g, ind, x.shape), expected, p["dtype"])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf
@SETTINGS
@given(pool_problems("avg"))
def test_avg_pool2d_forward_and_backward_match_the_reference(p):
    rng = np.random.default_rng(p["seed"])
    x = _pool_input(rng, p)
    _valid("avg_pool2d_args", x, **p["kwargs"])
    expected = R.avg_pool2d(x, **p["kwargs"])
    with fastconv.threads(p["threads"]):
        out = F.avg_pool2d(x, **p["kwargs"])
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    _close(out, expected, p["dtype"])

    g = _data(rng, out.shape, p["dtype"], p["contiguous"])
    expected = R.avg_pool2d_backward(g, x.shape, **p["kwargs"])
    with fastconv.threads(p["threads"]):
        _close(F.avg_pool2d_backward(g, x.shape, **p["kwargs"]), expected, p["dtype"])


# ---------------------------------------------------------------------------------------
# anything at all: both refuse alike, or both agree
# ---------------------------------------------------------------------------------------

def mostly(good, bad):
    """``good`` seven times in eight, else ``bad``: most draws stay valid, a few parts not."""
    return st.integers(0, 7).flatmap(lambda i: bad if i == 0 else good)


wild = st.integers(-2, 9)
wild_pair = st.one_of(wild, st.tuples(wild, wild), st.sampled_from(["same", "valid", None]))
wild_shape = st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple)
wild_dtype = st.sampled_from([np.int32, np.float16, np.complex64, np.bool_])


def _result_shape(fallback, func, *args, **kwargs):
    """The shape ``func`` returns, or ``fallback`` when it refuses the arguments."""
    try:
        return func(*args, **kwargs).shape
    except (TypeError, ValueError):
        return fallback


@st.composite
def any_call(draw):
    """One of the functions on mostly plausible arguments, a few of them wrong."""
    name = draw(st.sampled_from(["conv2d", "conv2d_backward", "im2col", "col2im", "max_pool2d",
                                 "avg_pool2d", "max_pool2d_backward", "avg_pool2d_backward"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(mostly(dtypes, wild_dtype))

    def array(shape):
        return rng.integers(-3, 4, size=draw(mostly(st.just(shape), wild_shape))).astype(
            draw(mostly(st.just(dtype), wild_dtype)))

    n, groups = draw(st.integers(0, 2)), draw(mostly(st.integers(1, 2), wild))
    cg, k = draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2))
    c, h, w = abs(groups) * cg or 1, draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kernel = draw(mostly(pairs(1, 4), wild_pair))
    geo = dict(stride=draw(mostly(pairs(1, 3), wild_pair)),
               padding=draw(mostly(st.integers(0, 2), wild_pair)),
               dilation=draw(mostly(pairs(1, 2), wild_pair)))
    x = array((n, c, h, w))
    if name in ("conv2d", "conv2d_backward"):
        kh_kw = tuple(max(0, v) for v in kernel) if isinstance(kernel, tuple) else (3, 3)
        weight = array((k, cg) + kh_kw)
        if name == "conv2d":
            return name, (x, weight, array((k,)) if draw(st.booleans()) else None), dict(
                geo, groups=groups)
        grad_shape = _result_shape((n, k, h, w), R.conv2d, x, weight, **geo, groups=groups)
        return name, (array(grad_shape), x, weight), dict(geo, groups=groups)
    if name == "im2col":
        return name, (x, kernel), geo
    if name == "col2im":
        cols_shape = _result_shape((n, c * 4, h * w), R.im2col, x, kernel, **geo)
        return name, (array(cols_shape), (h, w), kernel), geo
    pool = dict(stride=geo["stride"], padding=draw(mostly(st.integers(0, 1), wild_pair)),
                ceil_mode=draw(st.booleans()))
    if name == "max_pool2d":
        return name, (x, kernel), dict(pool, dilation=geo["dilation"])
    if name == "avg_pool2d":
        return name, (x, kernel), dict(
            pool, divisor_override=draw(mostly(st.none(), wild)))
    input_shape = draw(mostly(st.just((n, c, 2 * h, 2 * w)), wild_shape))
    grad = array((n, c, h, w))
    if name == "max_pool2d_backward":
        return name, (grad, rng.integers(-1, 4 * h * w + 1, size=grad.shape), input_shape), {}
    return name, (grad, input_shape, 2), pool


def _outcome(module, name, args, kwargs):
    try:
        return "returned", getattr(module, name)(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)


@settings(SETTINGS, max_examples=400)
@given(any_call())
def test_any_arguments_are_refused_alike_or_agree(call):
    name, args, kwargs = call
    compiled = _outcome(F, name, args, kwargs)
    reference = _outcome(R, name, args, kwargs)
    assert compiled[0] == reference[0], (compiled, reference)
    if compiled[0] == "returned":
        got = compiled[1] if isinstance(compiled[1], tuple) else (compiled[1],)
        want = reference[1] if isinstance(reference[1], tuple) else (reference[1],)
        for a, b in zip(got, want):
            if a is None or b is None:
                assert a is b
            else:
                np.testing.assert_allclose(a, b, **TOL[a.dtype.type])
    else:
        assert compiled[1] == reference[1]
        assert compiled[1]  # a message, not a bare exception


def test_refusal_is_raised_for_most_wild_draws():
    """The wide strategy above must mostly produce refusals, or it would test little."""
    refused = []

    @settings(SETTINGS, max_examples=100)
    @given(any_call())
    def count(call):
        name, args, kwargs = call
        refused.append(_outcome(F, name, args, kwargs)[0] != "returned")

    count()
    assert 0.3 < np.mean(refused) < 0.9, np.mean(refused)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_batch_and_empty_gradients(dtype):
    """The zero-batch corner hypothesis draws only sometimes, pinned down once."""
    x, w = np.zeros((0, 2, 5, 5), dtype), np.ones((3, 2, 3, 3), dtype)
    assert F.conv2d(x, w).shape == (0, 3, 3, 3)
    gi, gw, gb = F.conv2d_backward(np.zeros((0, 3, 3, 3), dtype), x, w)
    assert gi.shape == x.shape
    np.testing.assert_array_equal(gw, np.zeros_like(w))
    np.testing.assert_array_equal(gb, np.zeros(3, dtype))


# ---------------------------------------------------------------------------------------
# the same sweep on every CPU level's build of the kernels
# ---------------------------------------------------------------------------------------

_SWEEP = ["test_conv2d_forward_and_backward_match_the_reference",
          "test_im2col_and_col2im_match_the_reference",
          "test_max_pool2d_forward_and_backward_match_the_reference",
          "test_avg_pool2d_forward_and_backward_match_the_reference"]


@pytest.mark.parametrize("level", ["generic", "x86_64_v3", "x86_64_v4"])
def test_sweep_holds_on_each_cpu_level(level):
    """The reference sweeps above, in a child process whose FASTCONV_CPU imports that
    level's kernels (each level has SIMD kernels of its own); the child also checks that
    those really are the kernels it runs. The level this process runs is swept above."""
    from fastconv import _kernels
    if level == _kernels.cpu_level():
        pytest.skip(f"{level} is this process's level: the tests above sweep it")
    needs = _kernels.CPU_LEVELS.get(level, ())
    if not all(_kernels._cpu_features().get(f) for f in needs):
        pytest.skip(f"this CPU does not run {level}")
    here = TESTS_DIR / "test_properties.py"
    nodes = [f"{here}::{name}" for name in _SWEEP]
    nodes.append(f"{TESTS_DIR / 'test_config.py'}::"
                 "test_the_kernels_in_this_process_are_the_level_fastconv_cpu_asks_for")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(TESTS_DIR), *nodes],
                          capture_output=True, text=True, env=child_env(FASTCONV_CPU=level),
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(nodes)} passed" in proc.stdout, proc.stdout[-2000:]
