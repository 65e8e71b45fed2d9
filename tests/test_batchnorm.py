"""batch_norm / batch_norm_backward and the BatchNorm layers: compiled against
fastconv.reference, torch, float64 finite differences, and bitwise across thread counts."""
import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import nn
from fastconv import reference as R

DTYPES = [np.float32, np.float64]
THREADS = [1, 2]
# (N, C, ...) shapes: runs of L shorter than, equal to and longer than the 16 lanes, not
# multiples of them, (N, C) inputs, and one large enough to be spread over threads.
SHAPES = [(8, 5, 6, 7), (16, 6), (4, 3, 10), (3, 4, 16), (2, 3, 33), (4, 8, 32, 32)]


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)


def _args(shape, dtype, seed=0, affine=True):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    stats = ((rng.standard_normal(c) * 0.1).astype(dtype), (rng.random(c) + 0.5).astype(dtype))
    params = ((rng.random(c) + 0.5).astype(dtype), rng.standard_normal(c).astype(dtype)) \
        if affine else (None, None)
    return x, stats, params


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_reference(shape, training, affine, threads, dtype):
    x, (rm, rv), (w, b) = _args(shape, dtype, affine=affine)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    with fastconv.threads(threads):
        out, mean, invstd = F.batch_norm(x, rm, rv, w, b, training, 0.3, 1e-5, return_stats=True)
    want, want_mean, want_invstd = R.batch_norm(x, rm_ref, rv_ref, w, b, training, 0.3, 1e-5,
                                                return_stats=True)
    for got, ref in ((out, want), (mean, want_mean), (invstd, want_invstd), (rm, rm_ref),
                     (rv, rv_ref)):
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, **_tol(dtype))
    if not training:
        np.testing.assert_array_equal(rm, _args(shape, dtype)[1][0])  # untouched


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_reference(shape, training, threads, dtype):
    x, (rm, rv), (w, b) = _args(shape, dtype)
    g = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    _, mean, invstd = R.batch_norm(x, rm.copy(), rv.copy(), w, b, training, return_stats=True)
    want = R.batch_norm_backward(g, x, w, rm, rv, mean, invstd, training)
    with fastconv.threads(threads):
        saved = F.batch_norm_backward(g, x, w, rm, rv, mean, invstd, training)
        # Without the saved statistics: recomputed from x (training) or the running ones.
        again = F.batch_norm_backward(g, x, w, rm, rv, None, None, training)
        no_input = F.batch_norm_backward(g, x, w, rm, rv, mean, invstd, training, input_grad=False)
    for got in (saved, again):
        for part, ref in zip(got, want):
            assert part.dtype == dtype and part.shape == ref.shape
            np.testing.assert_allclose(part, ref, **_tol(dtype))
    assert no_input[0] is None
    np.testing.assert_array_equal(no_input[1], saved[1])
    np.testing.assert_array_equal(no_input[2], saved[2])


def _numeric_grad(f, a, h=1e-6):
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + h
        up = f()
        a[i] = keep - h
        down = f()
        a[i] = keep
        grad[i] = (up - down) / (2 * h)
    return grad


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 3, 2), (5, 3)])
def test_float64_gradients_match_finite_differences(training, shape):
    x, (rm, rv), (w, b) = _args(shape, np.float64, seed=3)
    r = np.random.default_rng(4).standard_normal(shape)

    def loss():  # running statistics untouched: None in training
        stats = (None, None) if training else (rm, rv)
        return float(np.sum(F.batch_norm(x, *stats, w, b, training) * r))

    gi, gw, gb = F.batch_norm_backward(r, x, w, rm, rv, None, None, training)
    np.testing.assert_allclose(gi, _numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, _numeric_grad(loss, w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, _numeric_grad(loss, b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_the_same_on_any_thread_count(training, dtype):
    shape = (6, 12, 20, 21)  # past the parallel threshold, channels not a multiple of 2 or 3 threads' share
    x, (rm, rv), (w, b) = _args(shape, dtype, seed=5)
    g = np.random.default_rng(6).standard_normal(shape).astype(dtype)
    results = []
    for threads in (1, 2, 3, 5):
        rm_t, rv_t = rm.copy(), rv.copy()
        with fastconv.threads(threads):
            out, mean, invstd = F.batch_norm(x, rm_t, rv_t, w, b, training, return_stats=True)
            grads = F.batch_norm_backward(g, x, w, rm, rv, None, None, training)
        results.append((out, mean, invstd, rm_t, rv_t) + grads)
    for other in results[1:]:
        for got, first in zip(other, results[0]):
            np.testing.assert_array_equal(got, first)


def test_variance_stays_accurate_under_a_large_mean():
    # Sum-of-squares in float64 about zero would lose ~1e-8 relative here; the shifted sums do not.
    x = (1e4 + np.random.default_rng(7).standard_normal((64, 3, 50))).astype(np.float64)
    _, mean, invstd = F.batch_norm(x, None, None, training=True, eps=0.0, return_stats=True)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2)), rtol=1e-14)
    np.testing.assert_allclose(invstd, 1 / x.std(axis=(0, 2)), rtol=1e-11)
    x32 = x.astype(np.float32)
    _, _, invstd32 = F.batch_norm(x32, None, None, training=True, eps=0.0, return_stats=True)
    np.testing.assert_allclose(invstd32, 1 / x32.astype(np.float64).std(axis=(0, 2)), rtol=1e-6)


def test_constant_channel_has_zero_variance_and_non_finite_values_spread():
    x = np.ones((4, 2, 5))
    x[2, 1, 3] = np.nan
    out, mean, invstd = F.batch_norm(x, None, None, training=True, eps=1e-5, return_stats=True)
    assert mean[0] == 1 and invstd[0] == np.float64(1 / np.sqrt(1e-5))
    np.testing.assert_array_equal(out[:, 0], 0)
    assert np.isnan(mean[1]) and np.isnan(out[:, 1]).all()


def test_non_contiguous_input_and_empty_eval_batch():
    x, (rm, rv), (w, b) = _args((6, 4, 5, 5), np.float64)
    view = x[:, :, ::2, 1:]
    np.testing.assert_allclose(F.batch_norm(view, None, None, w, b, True),
                               R.batch_norm(view, None, None, w, b, True), rtol=1e-12)
    empty = np.zeros((0, 4, 5, 5))
    assert F.batch_norm(empty, rm, rv, w, b).shape == empty.shape
    gi, gw, gb = F.batch_norm_backward(empty, empty, w, rm, rv)
    assert gi.shape == empty.shape
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


@pytest.mark.parametrize("module", [F, R], ids=["compiled", "reference"])
@pytest.mark.parametrize("call, error, match", [
    (lambda m, x, c: m.batch_norm(x, c(3), c(4), training=True), ValueError, r"running_mean of shape \(4,\)"),
    (lambda m, x, c: m.batch_norm(x, c(4), c(4), c(4).astype(np.float64)), TypeError, "same dtype"),
    (lambda m, x, c: m.batch_norm(x, None, None), ValueError, "evaluation mode"),
    (lambda m, x, c: m.batch_norm(x, c(4), None, training=True), ValueError, "together"),
    (lambda m, x, c: m.batch_norm(x[:1, :, :1, :1], None, None, training=True), ValueError,
     "more than 1 value per channel"),
    (lambda m, x, c: m.batch_norm(x, None, None, training=True, eps=-1.0), ValueError, "eps"),
    (lambda m, x, c: m.batch_norm(x, None, None, training=True, momentum="a"), TypeError, "momentum"),
    (lambda m, x, c: m.batch_norm(x[0, 0, 0], None, None, training=True), ValueError, "at least 2 dims"),
    (lambda m, x, c: m.batch_norm(x.astype(int), None, None, training=True), TypeError, "float32"),
    (lambda m, x, c: m.batch_norm(x, np.broadcast_to(c(1), (4,)), c(4), training=True), ValueError,
     "writeable"),
    (lambda m, x, c: m.batch_norm_backward(x[:1], x, training=True), ValueError, "grad_output of shape"),
    (lambda m, x, c: m.batch_norm_backward(x, x, save_mean=c(4), training=True), ValueError, "together"),
    (lambda m, x, c: m.batch_norm_backward(x, x), ValueError, "evaluation mode"),
])
def test_bad_arguments_are_refused_before_any_work(module, call, error, match):
    x = np.ones((2, 4, 3, 3), np.float32)

    def channels(n):
        return np.ones(n, np.float32)

    with pytest.raises(error, match=match):
        call(module, x, channels)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_matches_reference_backend_in_train_and_eval(momentum, dtype):
    x, _, _ = _args((8, 3, 5, 5), dtype, seed=8)
    g = np.random.default_rng(9).standard_normal(x.shape).astype(dtype)
    layers = {name: nn.BatchNorm2d(3, momentum=momentum, dtype=dtype) for name in ("compiled", "reference")}
    for name, layer in layers.items():
        layer.weight.data[:] = [0.5, 1.5, 2.0]
        layer.bias.data[:] = [0.1, -0.2, 0.3]
        with fastconv.backend(name):
            for step in range(3):
                layer.train()
                layer(x + step)
                layer.backward(g)
            layer.eval()
            layer.out, layer.gi = layer(x), layer.backward(g)
    a, b = layers["compiled"], layers["reference"]
    assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 3
    for name in ("running_mean", "running_var", "out", "gi"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), **_tol(dtype), err_msg=name)
    np.testing.assert_allclose(a.weight.grad, b.weight.grad, **_tol(dtype))
    np.testing.assert_allclose(a.bias.grad, b.bias.grad, **_tol(dtype))


@pytest.mark.parametrize("module", [F, R], ids=["compiled", "reference"])
@pytest.mark.parametrize("training", [True, False])
def test_running_statistics_of_another_dtype(module, training):
    x, (rm, rv), (w, b) = _args((6, 3, 4, 4), np.float32)
    rm64, rv64 = rm.astype(np.float64), rv.astype(np.float64)
    out = module.batch_norm(x, rm64, rv64, w, b, training)
    want = module.batch_norm(x, rm, rv, w, b, training)
    assert out.dtype == np.float32 and rm64.dtype == np.float64
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm64, rm, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rv64, rv, rtol=1e-6, atol=1e-7)
    grads = module.batch_norm_backward(x, x, w, rm64, rv64, training=training)
    assert all(g.dtype == np.float32 for g in grads)


def test_layer_refusal_leaves_the_running_statistics_alone():
    layer = nn.BatchNorm1d(4)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(np.ones((1, 4), np.float32))
    assert int(layer.num_batches_tracked) == 0
    np.testing.assert_array_equal(layer.running_var, 1)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 5, 6, 7), (16, 6), (4, 3, 10)])
def test_matches_torch(training, dtype, shape):
    torch = pytest.importorskip("torch")
    x, (rm, rv), (w, b) = _args(shape, dtype, seed=10)
    g = np.random.default_rng(11).standard_normal(shape).astype(dtype)
    t_x = torch.tensor(x, requires_grad=True)
    t_w, t_b = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    t_rm, t_rv = torch.tensor(rm), torch.tensor(rv)
    t_out = torch.nn.functional.batch_norm(t_x, t_rm, t_rv, t_w, t_b, training, 0.2, 1e-3)
    t_out.backward(torch.tensor(g))
    out, mean, invstd = F.batch_norm(x, rm, rv, w, b, training, 0.2, 1e-3, return_stats=True)
    gi, gw, gb = F.batch_norm_backward(g, x, w, rm, rv, mean, invstd, training, 1e-3)
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    for got, want in ((out, t_out), (rm, t_rm), (rv, t_rv), (gi, t_x.grad), (gw, t_w.grad),
                      (gb, t_b.grad)):
        np.testing.assert_allclose(got, want.detach().numpy(), **tol)


# -- batch_norm with the ReLU (and a residual add) in the same passes ------------------------


def _fused_and_unfused(module, x, stats, params, training, add, g, threads):
    """``(out, grads)`` of the fused forward and backward and of the separate passes."""
    with fastconv.threads(threads):
        out, mean, invstd = module.batch_norm(x, *stats, *params, training, return_stats=True,
                                              add=add, relu=True)
        grads = module.batch_norm_backward(g, x, params[0], *stats, mean, invstd, training,
                                           relu_output=out)
        no_input = module.batch_norm_backward(g, x, params[0], *stats, mean, invstd, training,
                                              input_grad=False, relu_output=out)
        bn = module.batch_norm(x, *stats, *params, training)
        plain = module.relu(bn if add is None else bn + add)
        g_relu = module.relu_backward(g, plain)
        plain_grads = module.batch_norm_backward(g_relu, x, params[0], *stats, mean, invstd,
                                                 training)
    return (out, grads, no_input), (plain, plain_grads)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_add_in_the_same_pass_give_the_bits_of_the_separate_passes(
        shape, training, residual, threads, dtype):
    x, stats, params = _args(shape, dtype, seed=12)
    rng = np.random.default_rng(13)
    add = rng.standard_normal(shape).astype(dtype) if residual else None
    g = rng.standard_normal(shape).astype(dtype)
    (out, grads, no_input), (plain, plain_grads) = _fused_and_unfused(
        F, x, (None, None) if training else stats, params, training, add, g, threads)
    assert (out == 0).any() and (out > 0).any()  # the mask does something
    np.testing.assert_array_equal(out, plain)
    for got, want in zip(grads, plain_grads):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
    assert no_input[0] is None
    np.testing.assert_array_equal(no_input[1], grads[1])
    np.testing.assert_array_equal(no_input[2], grads[2])


def test_relu_in_the_same_pass_keeps_signed_zeros_and_nan_as_relu_does():
    # Channel 0 constant, weight -1 and bias -0.0: bn gives 0 * -scale + -0.0 = -0.0; channel 1
    # has a NaN.
    x = np.ones((4, 3, 20), np.float32)
    x[:, 2] = np.random.default_rng(14).standard_normal((4, 20))
    x[1, 1, 5] = np.nan
    w, b = np.array([-1, 1, 1], np.float32), np.array([-0.0, 0, 0], np.float32)
    g = np.ones_like(x)
    (out, grads, _), (plain, plain_grads) = _fused_and_unfused(F, x, (None, None), (w, b),
                                                               True, None, g, 1)
    assert np.signbit(out[:, 0]).all() and np.isnan(out[:, 1]).all()
    np.testing.assert_array_equal(out, plain)
    assert np.array_equal(np.signbit(out), np.signbit(plain))
    for got, want in zip(grads, plain_grads):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_add_in_the_same_pass_match_the_reference(residual, training, dtype):
    shape = (6, 4, 9, 7)
    x, stats, params = _args(shape, dtype, seed=15)
    rng = np.random.default_rng(16)
    add = rng.standard_normal(shape).astype(dtype) if residual else None
    g = rng.standard_normal(shape).astype(dtype)
    stats = (None, None) if training else stats
    (out, grads, _), _ = _fused_and_unfused(F, x, stats, params, training, add, g, 2)
    (want, want_grads, _), _ = _fused_and_unfused(R, x, stats, params, training, add, g, 1)
    np.testing.assert_allclose(out, want, **_tol(dtype))
    for got, ref in zip(grads, want_grads):
        np.testing.assert_allclose(got, ref, **_tol(dtype))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_relu_and_add_in_the_same_pass_float64_finite_differences(residual, training):
    shape = (3, 2, 3, 2)
    x, stats, (w, b) = _args(shape, np.float64, seed=17)
    rng = np.random.default_rng(18)
    add = rng.standard_normal(shape) if residual else None
    r = rng.standard_normal(shape)
    stats = (None, None) if training else stats

    def loss():
        return float(np.sum(F.batch_norm(x, *stats, w, b, training, add=add, relu=True) * r))

    out, mean, invstd = F.batch_norm(x, *stats, w, b, training, return_stats=True, add=add,
                                     relu=True)
    assert (out == 0).any() and (out > 0).any()
    gi, gw, gb = F.batch_norm_backward(r, x, w, *stats, mean, invstd, training, relu_output=out)
    np.testing.assert_allclose(gi, _numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, _numeric_grad(loss, w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, _numeric_grad(loss, b), rtol=1e-6, atol=1e-8)
    if residual:  # the add's gradient is the one through the ReLU
        np.testing.assert_allclose(F.relu_backward(r, out), _numeric_grad(loss, add),
                                   rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_add_in_the_same_pass_bitwise_the_same_on_any_thread_count(dtype):
    shape = (6, 12, 20, 21)
    x, _, (w, b) = _args(shape, dtype, seed=19)
    rng = np.random.default_rng(20)
    add, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    results = []
    for threads in (1, 2, 3, 5):
        with fastconv.threads(threads):
            out, mean, invstd = F.batch_norm(x, None, None, w, b, True, return_stats=True,
                                             add=add, relu=True)
            grads = F.batch_norm_backward(g, x, w, None, None, mean, invstd, True,
                                          relu_output=out)
        results.append((out,) + grads)
    for other in results[1:]:
        for got, first in zip(other, results[0]):
            np.testing.assert_array_equal(got, first)


@pytest.mark.parametrize("module", [F, R], ids=["compiled", "reference"])
@pytest.mark.parametrize("call, error, match", [
    (lambda m, x: m.batch_norm(x, None, None, training=True, add=x[:1]), ValueError,
     r"add of the input's shape"),
    (lambda m, x: m.batch_norm(x, None, None, training=True, add=x.astype(np.float64)),
     TypeError, "same dtype"),
    (lambda m, x: m.batch_norm(x, None, None, training=True, add=[1.0]), TypeError,
     "numpy.ndarray"),
    (lambda m, x: m.batch_norm_backward(x, x, training=True, relu_output=x[:, :1]), ValueError,
     r"relu_output of the input's shape"),
    (lambda m, x: m.batch_norm_backward(x, x, training=True, relu_output=x.astype(np.float64)),
     TypeError, "same dtype"),
])
def test_bad_add_or_relu_output_is_refused(module, call, error, match):
    with pytest.raises(error, match=match):
        call(module, np.ones((2, 4, 3, 3), np.float32))
