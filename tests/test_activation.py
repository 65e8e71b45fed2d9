"""relu / leaky_relu / sigmoid / tanh, forward and backward: compiled against
fastconv.reference, torch and float64 truth.

relu and leaky_relu, and every backward, compute the reference's expressions element by
element, with nothing a compiler could fuse into an FMA, so they compare exactly on every
CPU level. sigmoid and tanh do not: float64 calls the C library
(numpy has its own SIMD exp and tanh) and float32 a vectorized Cephes exp/tanh; both are
checked within a few ULP of the true value.
"""
import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import nn
from fastconv import reference as R

DTYPES = [np.float32, np.float64]
THREADS = [1, 2]
SPECIAL = [np.nan, 0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 1e-30, -1e-30, 20.0, -20.0,
           88.0, -88.0, 100.0, -100.0, 800.0, -800.0]


def _data(shape, dtype, seed=0, scale=4.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _ulp_error(got, x, fn):
    """Largest error of ``got`` in units of the float32/float64 spacing at the true value,
    over the elements whose true value (computed in float64 or, for float64, in long
    double) is a normal number."""
    wide = np.longdouble if x.dtype == np.float64 else np.float64
    with np.errstate(over="ignore"):
        true = fn(x.astype(wide))
    rounded = true.astype(x.dtype)
    normal = np.isfinite(true) & (np.abs(rounded) >= np.finfo(x.dtype).tiny)
    spacing = np.spacing(np.abs(rounded[normal])).astype(wide)
    return float(np.max(np.abs(got[normal].astype(wide) - true[normal]) / spacing))


def _sigmoid_true(x):
    return 1 / (1 + np.exp(-x))


def _forward_cases():
    return [("relu", {}), ("leaky_relu", {"negative_slope": 0.1}),
            ("leaky_relu", {"negative_slope": -0.3}), ("sigmoid", {}), ("tanh", {})]


# ----------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("name,kwargs", _forward_cases())
def test_forward_matches_reference(name, kwargs, threads, dtype):
    x = np.concatenate([_data(70_001, dtype), np.array(SPECIAL, dtype)])
    with fastconv.threads(threads), np.errstate(all="ignore"):
        got = getattr(F, name)(x, **kwargs)
        want = getattr(R, name)(x, **kwargs)
    assert got.dtype == dtype and got.shape == x.shape
    if name in ("relu", "leaky_relu"):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))  # -0.0 kept
    else:
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-14,
                                   atol=1e-37)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,fn", [("sigmoid", _sigmoid_true), ("tanh", np.tanh)])
def test_sigmoid_tanh_within_3_ulp(name, fn, dtype):
    # Dense over the range where the values change, and far out where they saturate.
    x = np.concatenate([np.linspace(-20, 20, 400_001), np.linspace(-110, 110, 20_001)]).astype(dtype)
    got = getattr(F, name)(x)
    # float32: the Cephes exp/tanh within 1 ULP, then 1 / (1 + e) rounded twice more;
    # float64: the C library's bound (glibc lists tanh at 2 ULP).
    assert _ulp_error(got, x, fn) <= 3.0
    assert np.all(np.diff(got[:400_001]) >= 0)  # monotone, as the true functions


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_follow_torch(dtype):
    x = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-30, -1e-30], dtype)
    nan, inf = np.nan, np.inf
    expected = {
        "relu": [nan, 0.0, -0.0, inf, 0.0, 1e-30, 0.0],
        "sigmoid": [nan, 0.5, 0.5, 1.0, 0.0, 0.5, 0.5],
        "tanh": [nan, 0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30],
    }
    for name, want in expected.items():
        got = getattr(F, name)(x)
        want = np.array(want, dtype)
        np.testing.assert_array_equal(got, want, err_msg=name)
        number = ~np.isnan(want)  # a NaN's sign is not specified
        np.testing.assert_array_equal(np.signbit(got[number]), np.signbit(want[number]), err_msg=name)
    got = F.leaky_relu(x, 0.5)
    np.testing.assert_array_equal(got, np.array([nan, 0.0, -0.0, inf, -inf, 1e-30, -5e-31], dtype))
    assert np.signbit(got[2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kwargs", _forward_cases())
def test_threads_bitwise_equal(name, kwargs, dtype):
    x = _data((3, 7, 41, 43), dtype)  # several chunks, the last one partial
    with fastconv.threads(1):
        one = getattr(F, name)(x, **kwargs)
    with fastconv.threads(2):
        two = getattr(F, name)(x, **kwargs)
    assert one.tobytes() == two.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kwargs", _forward_cases())
def test_non_contiguous_and_shapes(name, kwargs, dtype):
    base = _data((6, 5, 9, 8), dtype)
    for x in (base.transpose(0, 2, 3, 1), base[:, ::2, 1::3], base[..., ::-1],
              np.asarray(base[0, 0, 0, 0]), base[:0]):
        got = getattr(F, name)(x, **kwargs)
        assert got.shape == x.shape and got.dtype == dtype
        np.testing.assert_array_equal(got, getattr(F, name)(np.ascontiguousarray(x), **kwargs))


@pytest.mark.parametrize("module", [F, R], ids=["compiled", "reference"])
@pytest.mark.parametrize("name,kwargs", [("relu", {}), ("leaky_relu", {"negative_slope": 0.2})])
def test_inplace(module, name, kwargs):
    base = _data((4, 6, 10), np.float32)
    want = getattr(module, name)(base.copy(), **kwargs)
    for view in (lambda a: a, lambda a: a[:, ::2], lambda a: a.transpose(2, 0, 1)):
        x = base.copy()
        before = view(x).copy()
        out = getattr(module, name)(view(x), inplace=True, **kwargs)
        np.testing.assert_array_equal(view(x), getattr(module, name)(before, **kwargs))
        assert np.shares_memory(out, x)
    x = base.copy()
    getattr(module, name)(x, inplace=True, **kwargs)
    np.testing.assert_array_equal(x, want)


# ----------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------

def _backward_cases(dtype):
    """(name, grad_output, saved, extra args, forward of x for the gradient check)."""
    x = np.concatenate([_data(50_001, dtype, seed=1), np.array(SPECIAL, dtype)])
    g = np.concatenate([_data(50_001, dtype, seed=2), np.array([1, 2, 3, np.inf, -np.inf, np.nan]
                                                               + [1.5] * (len(SPECIAL) - 6), dtype)])
    with np.errstate(all="ignore"):
        return [
            ("relu_backward", g, R.relu(x), ()),
            ("leaky_relu_backward", g, x, (0.1,)),
            ("leaky_relu_backward", g, x, (-0.3,)),
            ("sigmoid_backward", g, R.sigmoid(x), ()),
            ("tanh_backward", g, R.tanh(x), ()),
        ]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", THREADS)
def test_backward_matches_reference(threads, dtype):
    for name, g, saved, args in _backward_cases(dtype):
        with fastconv.threads(threads), np.errstate(all="ignore"):
            got = getattr(F, name)(g, saved, *args)
            want = getattr(R, name)(g, saved, *args)
        assert got.dtype == dtype and got.shape == g.shape
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_relu_backward_selects_like_torch():
    # threshold_backward: 0 where output <= 0 (even for an infinite gradient), the
    # gradient elsewhere, a NaN output included.
    y = np.array([0.0, -0.0, 2.0, np.nan, 0.0, 3.0], np.float32)
    g = np.array([5.0, 6.0, 7.0, 8.0, np.inf, np.nan], np.float32)
    np.testing.assert_array_equal(F.relu_backward(g, y), [0, 0, 7, 8, 0, np.nan])
    np.testing.assert_array_equal(R.relu_backward(g, y), [0, 0, 7, 8, 0, np.nan])


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_threads_and_layouts(dtype):
    x = _data((5, 3, 40, 41), dtype)
    g = _data(x.shape, dtype, seed=3)
    for name, saved, args in [("relu_backward", F.relu(x), ()), ("sigmoid_backward", F.sigmoid(x), ()),
                              ("tanh_backward", F.tanh(x), ()), ("leaky_relu_backward", x, (0.2,))]:
        fn = getattr(F, name)
        with fastconv.threads(1):
            one = fn(g, saved, *args)
        with fastconv.threads(2):
            two = fn(g, saved, *args)
        assert one.tobytes() == two.tobytes()
        strided = fn(g.transpose(3, 1, 2, 0), saved.transpose(3, 1, 2, 0), *args)
        np.testing.assert_array_equal(strided, one.transpose(3, 1, 2, 0))
        assert fn(g[:0], saved[:0], *args).shape == (0, 3, 40, 41)


@pytest.mark.parametrize("name,kwargs", _forward_cases())
def test_gradient_matches_finite_differences(name, kwargs):
    rng = np.random.default_rng(4)
    x = rng.uniform(-3, 3, (3, 4, 5))
    if name in ("relu", "leaky_relu"):
        x[np.abs(x) < 1e-3] = 0.5  # away from the kink
    g = rng.standard_normal(x.shape)
    forward = getattr(F, name)
    y = forward(x, **kwargs)
    if name == "leaky_relu":
        grad = F.leaky_relu_backward(g, x, **kwargs)
    else:
        grad = getattr(F, name + "_backward")(g, y)
    eps = 1e-6
    numeric = (forward(x + eps, **kwargs) - forward(x - eps, **kwargs)) / (2 * eps) * g
    np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------------------
# refusals: the same on both backends
# ----------------------------------------------------------------------------------------

def _refusals():
    x = _data((2, 3), np.float32)
    ro = x.copy()
    ro.flags.writeable = False
    return [
        (lambda m: m.relu([1.0, 2.0]), TypeError, "input must be a numpy.ndarray, got list"),
        (lambda m: m.sigmoid(x.astype(np.int32)), TypeError, "float32 or float64, got int32"),
        (lambda m: m.tanh(x.astype(np.float16)), TypeError, "float32 or float64, got float16"),
        (lambda m: m.leaky_relu(x, "0.1"), TypeError, "negative_slope must be a number"),
        (lambda m: m.leaky_relu(x, True), TypeError, "negative_slope must be a number"),
        (lambda m: m.relu(ro, inplace=True), ValueError, "read-only"),
        (lambda m: m.leaky_relu(ro, 0.1, inplace=True), ValueError, "read-only"),
        (lambda m: m.relu_backward(x, x.astype(np.float64)), TypeError,
         "grad_output and output to have the same dtype, got float32 and float64"),
        (lambda m: m.sigmoid_backward(x, x.T), ValueError,
         "grad_output of shape (3, 2) like output, got grad_output of shape (2, 3)"),
        (lambda m: m.tanh_backward(None, x), TypeError, "grad_output must be a numpy.ndarray"),
        (lambda m: m.leaky_relu_backward(x, x[:1], 0.1), ValueError, "like input"),
        (lambda m: m.leaky_relu_backward(x, x, None), TypeError, "negative_slope"),
    ]


@pytest.mark.parametrize("case", range(len(_refusals())))
def test_refusals_identical_on_both_backends(case):
    call, exc, message = _refusals()[case]
    for module in (F, R):
        with pytest.raises(exc) as info:
            call(module)
        assert message in str(info.value), module.__name__


# ----------------------------------------------------------------------------------------
# layers: compiled and reference backends agree
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: nn.ReLU(), lambda: nn.ReLU(inplace=True),
                                  lambda: nn.LeakyReLU(0.2), lambda: nn.LeakyReLU(0.2, inplace=True),
                                  lambda: nn.LeakyReLU(-0.5, inplace=True), lambda: nn.Sigmoid(),
                                  lambda: nn.Tanh()])
def test_layers_on_both_backends(make):
    x = _data((4, 3, 6, 6), np.float64)
    g = _data(x.shape, np.float64, seed=5)
    results = []
    for backend in ("compiled", "reference"):
        layer = make()
        with fastconv.backend(backend):
            out = layer(x.copy())
            results.append((out, layer.backward(g)))
    (out_c, gi_c), (out_r, gi_r) = results
    np.testing.assert_allclose(out_c, out_r, rtol=1e-14, atol=0)
    # tanh's 1 - y*y turns the outputs' last-bit differences into ~1e-14 * |g|.
    np.testing.assert_allclose(gi_c, gi_r, rtol=1e-14, atol=1e-13)
    layer = make()
    y = layer(x.copy())
    slope = getattr(layer, "negative_slope", None)
    if slope is not None:  # in place or not, the gradient follows the input's sign
        np.testing.assert_array_equal(layer.backward(g), np.where(x > 0, g, g * slope))
    assert y.shape == x.shape


# ----------------------------------------------------------------------------------------
# torch
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kwargs", _forward_cases())
def test_against_torch(name, kwargs, dtype):
    torch = pytest.importorskip("torch")
    x = np.concatenate([_data(20_000, dtype, seed=6), np.array(SPECIAL, dtype)])
    g = _data(x.shape, dtype, seed=7)
    xt = torch.tensor(x, requires_grad=True)
    fn = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
          "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, **kwargs)}[name]
    yt = fn(xt)
    yt.backward(torch.tensor(g))
    y = getattr(F, name)(x, **kwargs)
    if name == "leaky_relu":
        gi = F.leaky_relu_backward(g, x, **kwargs)
    else:
        gi = getattr(F, name + "_backward")(g, y)
    if name in ("relu", "leaky_relu"):
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(gi, xt.grad.numpy())
        return
    eps = np.finfo(dtype).eps
    # torch is not always within a few eps of the truth: its float32 tanh has been seen, on
    # the first call in a fresh process, to be 9e-5 off on one worker thread's half of the
    # array. So compare with torch only where torch itself is right, and hold ours to the
    # truth everywhere.
    yt_np = yt.detach().numpy()
    wide = np.longdouble if dtype == np.float64 else np.float64
    with np.errstate(over="ignore"):
        true = {"sigmoid": _sigmoid_true, "tanh": np.tanh}[name](x.astype(wide))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(true))
    number = ~np.isnan(true)
    tol = 8 * eps * np.abs(true[number]) + 1e-37
    assert np.all(np.abs(y[number] - true[number]) <= tol)
    torch_right = np.abs(yt_np[number] - true[number]) <= tol
    np.testing.assert_allclose(y[number][torch_right], yt_np[number][torch_right],
                               rtol=8 * eps, atol=1e-37)
    # From torch's own output, ours differs only by rounding (torch may fuse a multiply and
    # an add): within a few eps of |g|, whatever the cancellation in 1 - y*y.
    gi = getattr(F, name + "_backward")(g, yt.detach().numpy())
    want = xt.grad.numpy()
    np.testing.assert_array_equal(np.isnan(gi), np.isnan(want))
    number = ~np.isnan(want)
    assert np.all(np.abs(gi - want)[number] <= 4 * eps * np.abs(g[number]))
