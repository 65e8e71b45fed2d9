"""What the eager path caches or skips to cut its per-call cost (issue #16): every cache
gives the bits of the uncached path, whatever was called before, on any thread count.

- fully connected products in fixed 8-row blocks (each row's bits its own, whatever the
  number of rows or threads);
- the pooling kernels' geometry and scratch, kept per Python thread and geometry, and one
  thread below a size;
- conv2d's plan, cached by problem;
- Module attributes set again on the forward path.
"""
import threading

import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import _conv_plan, nn
from fastconv import reference as R
from fastconv._cache import BoundedCache
from fastconv._kernels import _pool
from fastconv.nn.parameter import Parameter

DTYPES = [np.float32, np.float64]


# -- fully connected products -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False)])
def test_matmul_rows_do_not_depend_on_the_number_of_rows_or_threads(dtype, trans_a, trans_b):
    # a batch of 1, a part of a block, whole blocks and a tail: each output row as the
    # same row of the largest product (what an MPI shard of a batch computes)
    rng = np.random.default_rng(0)
    k, n, most = 400, 120, 41
    a = rng.standard_normal((most, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    whole = F._matmul(a.T.copy() if trans_a else a, b, trans_a, trans_b)
    np.testing.assert_allclose(whole, a @ (b.T if trans_b else b), rtol=1e-4, atol=1e-3)
    for threads in (1, 2, 3):
        with fastconv.threads(threads):
            for lo, hi in [(0, 1), (5, 6), (3, 10), (8, 16), (1, 41), (0, 41), (17, 40)]:
                part = a[lo:hi]
                out = F._matmul(part.T.copy() if trans_a else part, b, trans_a, trans_b)
                assert out.shape == (hi - lo, n) and out.flags.c_contiguous
                np.testing.assert_array_equal(out, whole[lo:hi])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False)])
def test_matmul_bias_gives_the_bits_of_adding_it_afterwards(dtype, trans_a, trans_b):
    # the bias rides on each block as it leaves BLAS: the bits of NumPy's out += bias, for
    # whole blocks, a padded tail alone and behind whole blocks, on any thread count
    rng = np.random.default_rng(2)
    k, n = 84, 10
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    for m in (1, 5, 8, 13, 41):
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
        expected = F._matmul(a, b, trans_a, trans_b)
        expected += bias
        for threads in (1, 2, 3):
            with fastconv.threads(threads):
                got = F._matmul(a, b, trans_a, trans_b, bias)
            np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got, (a.T if trans_a else a) @ (b.T if trans_b else b) + bias,
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)


def test_linear_with_a_bias_of_another_dtype_adds_it_as_numpy_does():
    # a float64 bias on a float32 layer is not added in the product's pass: NumPy's
    # in-place add rounds float32(out + bias) from float64, which the float32 pass would not
    fastconv.manual_seed(0)
    layer = nn.Linear(400, 120)
    layer.bias = Parameter(np.random.default_rng(3).standard_normal(120))
    x = np.random.default_rng(1).standard_normal((5, 400)).astype(np.float32)
    expected = F._matmul(x, layer.weight.data, False, True)
    expected += layer.bias.data
    np.testing.assert_array_equal(layer(x), expected)
    layer.bias = None
    np.testing.assert_array_equal(layer(x), F._matmul(x, layer.weight.data, False, True))


def test_matmul_of_no_rows_is_empty():
    out = F._matmul(np.zeros((0, 4), np.float32), np.ones((4, 3), np.float32))
    assert out.shape == (0, 3) and out.dtype == np.float32


def test_linear_batch_one_is_the_row_of_a_batch():
    fastconv.manual_seed(0)
    layer = nn.Linear(400, 120)
    x = np.random.default_rng(1).standard_normal((37, 400)).astype(np.float32)
    batch = layer(x)
    for i in (0, 8, 36):
        np.testing.assert_array_equal(layer(x[i:i + 1]), batch[i:i + 1])


# -- pooling: plans and scratch kept per Python thread ------------------------------------------

def _forget_pool_plans():
    _pool._prepared_local.__dict__.pop("cache", None)


# LeNet's batch-1 and batch-8 layers (one thread below _pool's SERIAL_ITEMS, the team above),
# the general tap loops, an odd plane
POOL_SHAPES = [(1, 6, 28, 28), (8, 6, 28, 28), (1, 16, 10, 10), (3, 5, 11, 13), (40, 3, 17, 15)]


def _pool_all(x):
    out, ind = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    out2 = F.max_pool2d(x, 2)
    avg = F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    avg2 = F.avg_pool2d(x, 2)
    return (out, ind, out2, F.max_pool2d_backward(out, ind, x.shape), avg, avg2,
            F.avg_pool2d_backward(avg, x.shape, 3, 2, 1, True, False),
            F.avg_pool2d_backward(avg2, x.shape, 2))


def _cold(x, threads):
    """Every op with nothing prepared before it."""
    results = []
    with fastconv.threads(threads):
        for op in range(len(_pool_all(x))):
            _forget_pool_plans()
            results.append(_pool_all(x)[op])
    return results


@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_plans_give_the_uncached_bits_across_shapes_dtypes_and_threads(dtype):
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(s).astype(dtype) for s in POOL_SHAPES]
    expected = [_cold(x, 1) for x in inputs]
    # warm: every shape, dtype and thread count in turn, twice, the other dtype between
    other = [x.astype(np.float64 if dtype == np.float32 else np.float32) for x in inputs]
    for _ in range(2):
        for threads in (2, 1, 3):
            with fastconv.threads(threads):
                for x, y, want in zip(inputs, other, expected):
                    _pool_all(y)
                    for got, exp in zip(_pool_all(x), want):
                        np.testing.assert_array_equal(got, exp)
    # and the values are right, not only stable
    np.testing.assert_allclose(expected[3][0], R.max_pool2d(inputs[3], 3, 2, 1), rtol=0)
    np.testing.assert_allclose(expected[3][4], R.avg_pool2d(inputs[3], 3, 2, 1, True, False),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_pool_plans_start_over_past_their_limit():
    x = np.random.default_rng(0).standard_normal((1, 2, 30, 30)).astype(np.float32)
    _forget_pool_plans()
    for side in range(4, 30):
        got = F.max_pool2d(x[..., :side, :side], 2)
        np.testing.assert_array_equal(got, R.max_pool2d(x[..., :side, :side], 2))
        assert 0 < len(_pool._prepared_local.cache) <= _pool._MOST_PREPARED
    for side in range(4, 30):
        F.avg_pool2d(x[..., :side, :side], 3, 1, 1)
        F.avg_pool2d_backward(np.ones((1, 2, side, side), np.float32), (1, 2, side, side), 3, 1, 1)
        F.max_pool2d(x[..., :side, :side], 3, 1, 1)
        assert len(_pool._prepared_local.cache) <= _pool._MOST_PREPARED


def test_python_threads_pooling_at_once_keep_their_own_scratch():
    # the same geometry on several Python threads at once (shared plans would share rows)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((40, 3, 17, 15)).astype(np.float32) for _ in range(4)]
    expected = [_cold(x, 2) for x in inputs]
    results, errors = [None] * len(inputs), []
    start = threading.Barrier(len(inputs))

    def job(i):
        try:
            start.wait()
            results[i] = [_pool_all(inputs[i]) for _ in range(20)]
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for runs, want in zip(results, expected):
        for run in runs:
            for got, exp in zip(run, want):
                np.testing.assert_array_equal(got, exp)


# -- conv2d: the plan by problem ----------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["auto", "gemm", "direct"])
def test_cached_conv_plan_is_the_planned_one(algorithm):
    rng = np.random.default_rng(0)
    for x_shape, w_shape, padding in [((1, 1, 28, 28), (6, 1, 5, 5), 2),
                                      ((8, 6, 14, 14), (16, 6, 5, 5), 0),
                                      ((2, 16, 16, 16), (16, 16, 3, 3), 1)]:
        for dtype in DTYPES:
            x = rng.standard_normal(x_shape).astype(dtype)
            w = rng.standard_normal(w_shape).astype(dtype)
            args = fastconv._validation.conv2d_args(x, w, None, 1, padding)
            p = _conv_plan.Problem.of(args)
            assert _conv_plan.cached_plan_conv2d(p, algorithm) == _conv_plan.plan_conv2d(
                p, algorithm)
            for threads in (1, 2):
                with fastconv.threads(threads):
                    np.testing.assert_allclose(
                        F.conv2d(x, w, padding=padding, algorithm=algorithm),
                        R.conv2d(x, w, padding=padding),
                        rtol=1e-4 if dtype == np.float32 else 1e-10,
                        atol=1e-4 if dtype == np.float32 else 1e-10)


def test_conv2d_out_that_overlaps_is_still_refused():
    x = np.zeros((1, 1, 8, 8), np.float32)
    w = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="share memory"):
        F.conv2d(x, w, out=x)


# -- Module attributes ------------------------------------------------------------------------

def test_a_plain_attribute_becomes_a_parameter_module_or_buffer_when_assigned_one():
    m = nn.Module()
    m.thing = np.zeros(3)            # a plain attribute
    m.thing = np.ones(3)             # set again: still plain
    assert "thing" in m.__dict__ and not list(m.named_parameters())
    m.thing = Parameter(np.zeros(2, np.float32))
    assert [name for name, _ in m.named_parameters()] == ["thing"]
    assert "thing" not in m.__dict__ and m.thing is m._parameters["thing"]
    m.other = 1
    m.other = nn.ReLU()
    assert list(m._modules) == ["other"] and "other" not in m.__dict__
    m.buf = 5
    m.register_buffer("buf", np.arange(3))
    m.buf = np.arange(4)             # a buffer set again stays a buffer
    assert list(m._buffers) == ["buf"] and m.buf.shape == (4,)
    with pytest.raises(TypeError):
        m.thing = np.zeros(2)        # a parameter slot takes a Parameter or None


# -- conv2d: packed weights kept while their bytes stay --------------------------------------

def _cold_conv(*args, **kwargs):
    F._operand_cache.clear()
    return F.conv2d(*args, **kwargs)


# LeNet's direct layer, its channel-vector layer, a grouped one
CONV_CASES = [((1, 1, 28, 28), (6, 1, 5, 5), 2, 1), ((2, 6, 14, 14), (16, 6, 5, 5), 0, 1),
              ((1, 4, 9, 9), (4, 1, 3, 3), 1, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, padding, groups", CONV_CASES)
def test_packed_weights_follow_in_place_changes(x_shape, w_shape, padding, groups, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    for threads in (1, 2):
        with fastconv.threads(threads):
            first = F.conv2d(x, w, b, padding=padding, groups=groups)
            np.testing.assert_array_equal(F.conv2d(x, w, b, padding=padding, groups=groups),
                                          first)
            # changed in place, as an optimizer does: the same array, other bytes
            for change in (lambda a: a.__imul__(0.5), lambda a: a.__setitem__((0, 0, 0, 0), 3.0),
                           lambda a: a.__setitem__((-1, 0, -1, -1), -0.0),
                           lambda a: a.__setitem__((0, 0, 1, 1), np.nan)):
                change(w)
                got = F.conv2d(x, w, b, padding=padding, groups=groups)
                np.testing.assert_array_equal(got, _cold_conv(x, w, b, padding=padding,
                                                              groups=groups))
            np.testing.assert_allclose(
                F.conv2d(x, np.nan_to_num(w), b, padding=padding, groups=groups),
                R.conv2d(x, np.nan_to_num(w), b, padding=padding, groups=groups),
                rtol=1e-4, atol=1e-4)
            w[...] = rng.standard_normal(w_shape)


def test_bounded_cache_starts_over_when_full_and_keeps_a_replaced_key():
    cache = BoundedCache(3)
    assert cache.put("a", 1) == 1
    cache.put("b", 2)
    cache.put("c", 3)
    cache.put("b", 20)  # a key already there replaces its value, clears nothing
    assert cache == {"a": 1, "b": 20, "c": 3}
    cache.put("d", 4)  # full: starts over
    assert cache == {"d": 4}
    with pytest.raises(ValueError, match="at least 1"):
        BoundedCache(0)


def test_conv_plans_of_many_problems_stay_bounded_and_right():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 1, 3, 3))
    _conv_plan._plans.clear()
    for size in range(4, 4 + _conv_plan._plans.most + 3):
        args = fastconv._validation.conv2d_args(rng.standard_normal((1, 1, size, 5)), w, None,
                                                 1, 1)
        p = _conv_plan.Problem.of(args)
        assert _conv_plan.cached_plan_conv2d(p) == _conv_plan.plan_conv2d(p)
        assert _conv_plan.cached_plan_conv2d(p) is _conv_plan.cached_plan_conv2d(p)
        assert len(_conv_plan._plans) <= _conv_plan._plans.most
    with pytest.raises(ValueError, match="algorithm"):
        _conv_plan.cached_plan_conv2d(p, "fft")  # a refusal is raised again, never cached
    with pytest.raises(ValueError, match="algorithm"):
        _conv_plan.cached_plan_conv2d(p, "fft")


def test_packed_weights_of_many_layers_and_dtypes_start_over_past_their_limit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 8, 8))
    weights = [rng.standard_normal((4, 3, 3, 3)) for _ in range(F._MOST_OPERANDS + 5)]
    expected = [R.conv2d(x, w, padding=1) for w in weights]
    for _ in range(2):
        for w, want in zip(weights, expected):
            for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-4)):
                got = F.conv2d(x.astype(dtype), w.astype(dtype), padding=1, algorithm="direct")
                np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
            assert len(F._operand_cache) <= F._MOST_OPERANDS


def test_training_with_cached_packs_gives_the_uncached_weights():
    # SGD changes every weight in place each step: each step must see the new weights
    def train(cold):
        fastconv.manual_seed(0)
        model = nn.lenet()
        rng = np.random.default_rng(0)
        x = rng.random((4, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, size=4)
        loss = nn.CrossEntropyLoss()
        opt = fastconv.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            if cold:
                F._operand_cache.clear()
            loss(model(x), y)
            opt.zero_grad()
            model.backward(loss.backward())
            opt.step()
        model.eval()
        return [model(x)] + [p.data.copy() for p in model.parameters()]
    for got, want in zip(train(False), train(True)):
        np.testing.assert_array_equal(got, want)


# -- conv2d's validated geometry, memoized by what validation reads ------------------------------

def _conv_error(*args, **kwargs):
    try:
        F.conv2d(*args, **kwargs)
    except (TypeError, ValueError) as e:
        return type(e), str(e)
    return None


BAD_CONV_CALLS = [  # (why, x, weight, bias, hyperparameters)
    ("channels", (1, 2, 8, 8), (4, 1, 3, 3), None, {}),
    ("weight dtype", (1, 1, 8, 8), (4, 1, 3, 3, "f8"), None, {}),
    ("bias shape", (1, 1, 8, 8), (4, 1, 3, 3), (3,), {}),
    ("bias dtype", (1, 1, 8, 8), (4, 1, 3, 3), (4, "f8"), {}),
    ("2-D input", (8, 8), (4, 1, 3, 3), None, {}),
    ("float stride", (1, 1, 8, 8), (4, 1, 3, 3), None, {"stride": 2.0}),
    ("bool stride", (1, 1, 8, 8), (4, 1, 3, 3), None, {"stride": True}),
    ("float pair", (1, 1, 8, 8), (4, 1, 3, 3), None, {"padding": (1, 1.0)}),
    ("bool groups", (1, 1, 8, 8), (4, 1, 3, 3), None, {"groups": True}),
    ("too small", (1, 1, 2, 2), (4, 1, 3, 3), None, {}),
    ("same, stride 2", (1, 1, 8, 8), (4, 1, 3, 3), None, {"padding": "same", "stride": 2}),
]


def _array(spec, rng):
    dtype = spec[-1] if isinstance(spec[-1], str) else "f4"
    shape = spec[:-1] if isinstance(spec[-1], str) else spec
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("why, x, w, b, params", BAD_CONV_CALLS, ids=[c[0] for c in BAD_CONV_CALLS])
def test_warm_conv_geometry_still_refuses_bad_calls_as_a_cold_one(why, x, w, b, params):
    rng = np.random.default_rng(0)
    x, w = _array(x, rng), _array(w, rng)
    b = None if b is None else _array(b, rng)
    F._validated_cache.clear()
    cold = _conv_error(x, w, b, **params)
    assert cold is not None, why
    # warm every key the bad call comes near: the good call of the same shapes and values
    good = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    gw = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    for kwargs in ({}, {"stride": 2}, {"padding": (1, 1)}, {"padding": "same"}, {"groups": 1}):
        F.conv2d(good, gw, gw[:, 0, 0, 0].copy(), **kwargs)
        F.conv2d(good, gw, **kwargs)
    assert _conv_error(x, w, b, **params) == cold
    assert _conv_error(x, w, b, **params) == cold  # and again, after its own refusal


def test_warm_conv_geometry_takes_any_strides_and_other_types_like_a_cold_one():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    base = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)
    calls = [(base, {}), (base[:, :, :, ::2], {}), (base[:, :, ::-1], {}),
             (np.asfortranarray(base), {}), (base[0], {}), (base, {"stride": np.int64(2)}),
             (base, {"padding": [1, 1]}), (base, {"padding": "same"}), (base, {"stride": (2, 1)})]
    F._validated_cache.clear()
    cold = [F.conv2d(x, w, b, **kw) for x, kw in calls]
    for _ in range(2):
        for (x, kw), want in zip(calls, cold):
            got = F.conv2d(x, w, b, **kw)
            assert got.shape == want.shape
            np.testing.assert_array_equal(got, want)
            want64 = R.conv2d(*(a.astype(np.float64) for a in (x, w, b)), **kw)
            np.testing.assert_allclose(got, want64, rtol=1e-4, atol=1e-4)
    assert 0 < len(F._validated_cache) <= F._validated_cache.most


def _error(f, *args, **kwargs):
    try:
        f(*args, **kwargs)
    except (TypeError, ValueError) as e:
        return type(e), str(e)
    return None


BAD_POOL_CALLS = [  # (why, op, x shape, arguments)
    ("window too big", "max", (1, 2, 3, 3), {"kernel_size": 4}),
    ("padding over half", "max", (1, 2, 8, 8), {"kernel_size": 2, "padding": 2}),
    ("float kernel", "max", (1, 2, 8, 8), {"kernel_size": 2.0}),
    ("bool kernel", "max", (1, 2, 8, 8), {"kernel_size": True}),
    ("float stride pair", "max", (1, 2, 8, 8), {"kernel_size": 2, "stride": (2, 2.0)}),
    ("2-D input", "max", (8, 8), {"kernel_size": 2}),
    ("zero dilation", "max", (1, 2, 8, 8), {"kernel_size": 2, "dilation": 0}),
    ("avg window too big", "avg", (1, 2, 3, 3), {"kernel_size": 4}),
    ("avg divisor 0", "avg", (1, 2, 8, 8), {"kernel_size": 2, "divisor_override": 0}),
    ("avg float divisor", "avg", (1, 2, 8, 8), {"kernel_size": 2, "divisor_override": 2.0}),
    ("avg int dtype", "avg", (1, 2, 8, 8, "i4"), {"kernel_size": 2}),
]


@pytest.mark.parametrize("why, op, shape, kwargs", BAD_POOL_CALLS,
                         ids=[c[0] for c in BAD_POOL_CALLS])
def test_warm_pool_args_still_refuse_bad_calls_as_cold_ones(why, op, shape, kwargs):
    f = F.max_pool2d if op == "max" else F.avg_pool2d
    rng = np.random.default_rng(0)
    x = _array(shape, rng)
    F._validated_cache.clear()
    cold = _error(f, x, **kwargs)
    assert cold is not None, why
    good = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    for kw in ({"kernel_size": 2}, {"kernel_size": 1}, {"kernel_size": 2, "stride": (2, 2)},
               {"kernel_size": 2, "padding": 1}):
        f(good, **kw)
        f(rng.standard_normal((1, 2, 3, 3)).astype(np.float32), **kw)
    assert _error(f, x, **kwargs) == cold
    assert _error(f, x, **kwargs) == cold


def test_warm_pool_args_give_a_cold_call_s_results_for_any_strides_and_types():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 3, 12, 10))
    calls = [(base, {}), (base[:, :, ::-1], {}), (base[0], {}), (base.astype(np.float32), {}),
             (base, {"stride": np.int64(2)}), (base, {"kernel_size": [3, 2]}),
             (base, {"ceil_mode": 1}), (base, {"ceil_mode": True}), (base, {"padding": (1, 0)})]
    for op, f, ref in (("max", F.max_pool2d, R.max_pool2d), ("avg", F.avg_pool2d, R.avg_pool2d)):
        F._validated_cache.clear()
        args = [(x, {"kernel_size": 2, **kw}) for x, kw in calls]
        cold = [f(x, **kw) for x, kw in args]
        for _ in range(2):
            for (x, kw), want in zip(args, cold):
                got = f(x, **kw)
                np.testing.assert_array_equal(got, want)
                np.testing.assert_allclose(got, ref(x, **kw), rtol=1e-6, atol=1e-6)
        if op == "max":
            out, idx = f(base, 2, return_indices=True)  # a warm call keeps its indices
            np.testing.assert_array_equal(out, cold[0])
            assert idx.shape == out.shape
