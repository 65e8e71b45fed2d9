"""fastconv.reference: the vectorized form against the textbook loops, finite differences,
the im2col/col2im adjoint identity, and torch."""
import numpy as np
import pytest

from fastconv import reference as R
from fastconv.reference import loops as L

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}

# (input shape, weight shape, bias, keyword arguments)
CONV_CASES = [
    ((2, 4, 7, 6), (3, 4, 3, 3), True, {}),
    ((2, 4, 7, 6), (3, 4, 3, 3), False, dict(stride=2, padding=1)),
    ((2, 4, 7, 6), (4, 2, 3, 2), True,
     dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
    ((1, 4, 7, 6), (4, 1, 3, 3), True, dict(padding=1, groups=4)),            # depthwise
    ((1, 4, 7, 6), (8, 1, 3, 3), False, dict(padding="same", groups=4)),      # multiplier 2
    ((2, 3, 7, 6), (2, 3, 2, 4), True, dict(padding="same", dilation=(2, 1))),  # asymmetric
    ((2, 3, 7, 6), (2, 3, 3, 3), True, dict(padding="valid", dilation=2)),
    ((3, 7, 6), (2, 3, 3, 3), True, dict(padding=(2, 1))),                    # unbatched
    ((0, 3, 7, 6), (2, 3, 3, 3), True, dict(padding=1)),                      # zero batch
    ((2, 3, 5, 5), (4, 3, 1, 1), True, dict(stride=2)),                       # 1x1
    ((1, 2, 6, 7), (2, 2, 5, 5), False, dict(stride=3, padding=2)),           # unused rows
]

# (input shape, keyword arguments)
MAX_CASES = [
    ((2, 3, 7, 6), dict(kernel_size=2)),
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1)),
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 3, 7, 6), dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1), dilation=(2, 1))),
    ((2, 3, 8, 7), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
    ((1, 2, 9, 9), dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    ((1, 2, 5, 5), dict(kernel_size=4, stride=3, ceil_mode=True)),
    ((3, 7, 6), dict(kernel_size=3, stride=1, padding=1)),
    ((0, 3, 7, 6), dict(kernel_size=2)),
]

AVG_CASES = [
    ((2, 3, 7, 6), dict(kernel_size=2)),
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1)),
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                        count_include_pad=False)),
    ((2, 3, 8, 7), dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1), ceil_mode=True)),
    ((2, 3, 7, 6), dict(kernel_size=(3, 2), padding=(1, 0), divisor_override=5)),
    ((3, 7, 6), dict(kernel_size=3, stride=1, padding=1, ceil_mode=True, divisor_override=-2)),
    ((0, 3, 7, 6), dict(kernel_size=2)),
]

UNFOLD_CASES = [
    ((2, 3, 7, 6), dict(kernel_size=3)),
    ((2, 3, 7, 6), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2))),
    ((3, 7, 6), dict(kernel_size=2, stride=2, padding=1)),
    ((0, 3, 7, 6), dict(kernel_size=2)),
    ((1, 2, 5, 5), dict(kernel_size=5, padding=2, stride=3)),
]


def ids(cases):
    return [f"case{i}" for i in range(len(cases))]


def rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def distinct(rng, shape, dtype=np.float64):
    """Values at least 0.5 apart, so no pooling window holds a tie."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.5 - 3.0).astype(dtype)


def assert_same(actual, expected, dtype):
    assert actual.dtype == expected.dtype == np.dtype(dtype)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **TOL[dtype])


def conv_inputs(rng, case, dtype):
    x_shape, w_shape, with_bias, kwargs = case
    x, w = rand(rng, x_shape, dtype), rand(rng, w_shape, dtype)
    b = rand(rng, w_shape[0], dtype) if with_bias else None
    return x, w, b, kwargs


# ---------------------------------------------------------------------------------------
# vectorized == loops
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=ids(CONV_CASES))
def test_conv2d_vectorized_matches_loops(case, dtype):
    rng = np.random.default_rng(0)
    x, w, b, kwargs = conv_inputs(rng, case, dtype)
    out = R.conv2d(x, w, b, **kwargs)
    assert_same(out, L.conv2d(x, w, b, **kwargs), dtype)
    g = rand(rng, out.shape, dtype)
    grads = R.conv2d_backward(g, x, w, **kwargs)
    for got, want, like in zip(grads, L.conv2d_backward(g, x, w, **kwargs),
                               (x, w, w[:, 0, 0, 0])):
        assert got.shape == like.shape
        assert_same(got, want, dtype)


def test_conv2d_backward_computes_only_what_is_asked():
    rng = np.random.default_rng(1)
    x, w = rand(rng, (2, 3, 6, 6)), rand(rng, (4, 3, 3, 3))
    g = rand(rng, (2, 4, 4, 4))
    full = R.conv2d_backward(g, x, w)
    for module in (R, L):
        for mask in [(True, False, False), (False, True, False), (False, False, True),
                     (False, False, False)]:
            got = module.conv2d_backward(g, x, w, needs_input_grad=mask[0],
                                         needs_weight_grad=mask[1], needs_bias_grad=mask[2])
            for wanted, value, reference in zip(mask, got, full):
                if wanted:
                    np.testing.assert_allclose(value, reference, rtol=1e-12, atol=1e-12)
                else:
                    assert value is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES, ids=ids(MAX_CASES))
def test_max_pool2d_vectorized_matches_loops(case, dtype):
    rng = np.random.default_rng(2)
    shape, kwargs = case
    x = rand(rng, shape, dtype)
    out, idx = R.max_pool2d(x, return_indices=True, **kwargs)
    out_l, idx_l = L.max_pool2d(x, return_indices=True, **kwargs)
    assert_same(out, out_l, dtype)
    assert idx.dtype == np.int64 and np.array_equal(idx, idx_l)
    assert_same(R.max_pool2d(x, **kwargs), out_l, dtype)
    g = rand(rng, out.shape, dtype)
    assert_same(R.max_pool2d_backward(g, idx, shape), L.max_pool2d_backward(g, idx, shape),
                dtype)


def test_max_pool2d_ties_pick_the_first_in_image_position():
    x = np.ones((1, 1, 4, 4))
    _, idx = R.max_pool2d(x, 2, stride=1, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], [[0, 1, 2], [4, 5, 6], [8, 9, 10]])
    # an all -inf window points at its first in-image element, never at the padding
    x = np.full((1, 1, 3, 3), -np.inf)
    for module in (R, L):
        out, idx = module.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
        assert np.all(out == -np.inf)
        np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1], [0, 0, 1], [3, 3, 4]])


def test_max_pool2d_nan_wins_and_the_last_nan_is_kept():
    x = np.array([[[[1.0, np.nan, 3.0, np.nan], [np.nan, 5.0, 3.0, 2.0]]]])
    for module in (R, L):
        out, idx = module.max_pool2d(x, (1, 4), return_indices=True)
        assert np.isnan(out).all()
        np.testing.assert_array_equal(idx[0, 0, :, 0], [3, 4])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES, ids=ids(AVG_CASES))
def test_avg_pool2d_vectorized_matches_loops(case, dtype):
    rng = np.random.default_rng(3)
    shape, kwargs = case
    x = rand(rng, shape, dtype)
    out = R.avg_pool2d(x, **kwargs)
    assert_same(out, L.avg_pool2d(x, **kwargs), dtype)
    g = rand(rng, out.shape, dtype)
    assert_same(R.avg_pool2d_backward(g, shape, **kwargs),
                L.avg_pool2d_backward(g, shape, **kwargs), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", UNFOLD_CASES, ids=ids(UNFOLD_CASES))
def test_im2col_col2im_vectorized_match_loops(case, dtype):
    rng = np.random.default_rng(4)
    shape, kwargs = case
    x = rand(rng, shape, dtype)
    cols = R.im2col(x, **kwargs)
    assert_same(cols, L.im2col(x, **kwargs), dtype)
    c = rand(rng, cols.shape, dtype)
    image = R.col2im(c, shape[-2:], **kwargs)
    assert image.shape == shape
    assert_same(image, L.col2im(c, shape[-2:], **kwargs), dtype)


def test_non_contiguous_inputs_give_the_same_results():
    rng = np.random.default_rng(5)
    base = rand(rng, (3, 8, 7, 10), np.float32)
    x = base.transpose(1, 0, 2, 3)[:, :, :, ::2]  # (8, 3, 7, 5), no axis contiguous
    xc = np.ascontiguousarray(x)
    w = rand(rng, (6, 3, 2, 3), np.float32)[:, :, ::-1]
    wc = np.ascontiguousarray(w)
    np.testing.assert_array_equal(R.conv2d(x, w, padding=1), R.conv2d(xc, wc, padding=1))
    g = rand(rng, (8, 6, 8, 10), np.float32)[:, :, :, ::2]
    gc = np.ascontiguousarray(g)
    for a, b in zip(R.conv2d_backward(g, x, w, padding=1),
                    R.conv2d_backward(gc, xc, wc, padding=1)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(R.max_pool2d(x, 2), R.max_pool2d(xc, 2))
    np.testing.assert_array_equal(R.avg_pool2d(x, 3, 1, 1), R.avg_pool2d(xc, 3, 1, 1))
    np.testing.assert_array_equal(R.im2col(x, 2), R.im2col(xc, 2))


# ---------------------------------------------------------------------------------------
# refusals are those of fastconv._validation, in both forms
# ---------------------------------------------------------------------------------------

BAD_CALLS = [
    ("conv2d", (np.zeros((2, 5, 8, 8)), np.zeros((4, 3, 3, 3))), {}, ValueError),
    ("conv2d", (np.zeros((2, 3, 8, 8)), np.zeros((4, 3, 3, 3), np.float32)), {}, TypeError),
    ("conv2d", (np.zeros((2, 3, 8, 8)), np.zeros((4, 3, 3, 3))), dict(stride=2, padding="same"),
     ValueError),
    ("conv2d_backward", (np.zeros((2, 4, 5, 5)), np.zeros((2, 3, 8, 8)), np.zeros((4, 3, 3, 3))),
     {}, ValueError),
    ("max_pool2d", (np.zeros((1, 2, 8, 8)), 3), dict(padding=2), ValueError),
    ("max_pool2d_backward", (np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), 16), (1, 1, 4, 4)),
     {}, ValueError),
    ("avg_pool2d", (np.zeros((1, 2, 8, 8), int), 2), {}, TypeError),
    ("avg_pool2d_backward", (np.zeros((1, 1, 3, 3)), (1, 1, 4, 4), 2), {}, ValueError),
    ("im2col", (np.zeros((1, 2, 4, 4)), 5), {}, ValueError),
    ("col2im", (np.zeros((1, 17, 4)), (4, 4), 3), {}, ValueError),
]


@pytest.mark.parametrize("name, args, kwargs, error", BAD_CALLS,
                         ids=[c[0] + str(i) for i, c in enumerate(BAD_CALLS)])
def test_refusals_are_identical_in_both_forms(name, args, kwargs, error):
    messages = []
    for module in (R, L):
        with pytest.raises(error) as info:
            getattr(module, name)(*args, **kwargs)
        messages.append(str(info.value))
    assert messages[0] == messages[1] and messages[0]


# ---------------------------------------------------------------------------------------
# finite differences (float64) and the adjoint identity
# ---------------------------------------------------------------------------------------

def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar f at every element of x."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = f()
        flat[i] = saved - eps
        down = f()
        flat[i] = saved
        gflat[i] = (up - down) / (2 * eps)
    return grad


FD_CONV_CASES = [
    ((1, 2, 5, 4), (3, 2, 3, 2), True, dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    ((1, 4, 5, 5), (4, 2, 2, 3), True, dict(padding="same", groups=2)),
    ((2, 5, 4), (2, 1, 3, 3), False, dict(padding=1, groups=2)),
]


@pytest.mark.parametrize("case", FD_CONV_CASES, ids=ids(FD_CONV_CASES))
def test_conv2d_backward_matches_finite_differences(case):
    rng = np.random.default_rng(6)
    x, w, b, kwargs = conv_inputs(rng, case, np.float64)
    g = rand(rng, R.conv2d(x, w, b, **kwargs).shape)

    def loss():
        return np.sum(R.conv2d(x, w, b, **kwargs) * g)

    gx, gw, gb = R.conv2d_backward(g, x, w, **kwargs)
    np.testing.assert_allclose(gx, numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, numeric_grad(loss, w), rtol=1e-6, atol=1e-8)
    if b is not None:
        np.testing.assert_allclose(gb, numeric_grad(loss, b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", [AVG_CASES[i] for i in (2, 4, 5, 7)], ids=ids(range(4)))
def test_avg_pool2d_backward_matches_finite_differences(case):
    rng = np.random.default_rng(7)
    shape, kwargs = case
    x = rand(rng, shape)
    g = rand(rng, R.avg_pool2d(x, **kwargs).shape)
    numeric = numeric_grad(lambda: np.sum(R.avg_pool2d(x, **kwargs) * g), x)
    np.testing.assert_allclose(R.avg_pool2d_backward(g, shape, **kwargs), numeric,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", [MAX_CASES[i] for i in (2, 3, 5, 7)], ids=ids(range(4)))
def test_max_pool2d_backward_matches_finite_differences(case):
    rng = np.random.default_rng(8)
    shape, kwargs = case
    x = distinct(rng, shape)
    out, idx = R.max_pool2d(x, return_indices=True, **kwargs)
    g = rand(rng, out.shape)
    numeric = numeric_grad(lambda: np.sum(R.max_pool2d(x, **kwargs) * g), x)
    np.testing.assert_allclose(R.max_pool2d_backward(g, idx, shape), numeric,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", UNFOLD_CASES, ids=ids(UNFOLD_CASES))
def test_col2im_is_the_adjoint_of_im2col(case):
    rng = np.random.default_rng(9)
    shape, kwargs = case
    x = rand(rng, shape)
    c = rand(rng, R.im2col(x, **kwargs).shape)
    lhs = np.sum(R.im2col(x, **kwargs) * c)
    rhs = np.sum(x * R.col2im(c, shape[-2:], **kwargs))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# torch (float64, autograd for the backward passes)
# ---------------------------------------------------------------------------------------

TORCH_TOL = dict(rtol=1e-10, atol=1e-12)


def torch_leaf(torch, a):
    return torch.tensor(a, requires_grad=True)


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on its own copy
@pytest.mark.parametrize("case", CONV_CASES, ids=ids(CONV_CASES))
def test_conv2d_matches_torch(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    x, w, b, kwargs = conv_inputs(rng, case, np.float64)
    tx, tw = torch_leaf(torch, x), torch_leaf(torch, w)
    tb = None if b is None else torch_leaf(torch, b)
    tout = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    out = R.conv2d(x, w, b, **kwargs)
    np.testing.assert_allclose(out, tout.detach().numpy(), **TORCH_TOL)
    g = rand(rng, out.shape)
    tout.backward(torch.tensor(g))
    gx, gw, gb = R.conv2d_backward(g, x, w, **kwargs)
    np.testing.assert_allclose(gx, tx.grad.numpy(), **TORCH_TOL)
    np.testing.assert_allclose(gw, tw.grad.numpy(), **TORCH_TOL)
    if b is not None:
        np.testing.assert_allclose(gb, tb.grad.numpy(), **TORCH_TOL)


@pytest.mark.parametrize("case", MAX_CASES, ids=ids(MAX_CASES))
def test_max_pool2d_matches_torch(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    shape, kwargs = case
    x = rand(rng, shape)
    tx = torch_leaf(torch, x)
    tout, tidx = torch.nn.functional.max_pool2d(tx, return_indices=True, **kwargs)
    out, idx = R.max_pool2d(x, return_indices=True, **kwargs)
    np.testing.assert_array_equal(out, tout.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    g = rand(rng, out.shape)
    tout.backward(torch.tensor(g))
    np.testing.assert_allclose(R.max_pool2d_backward(g, idx, shape), tx.grad.numpy(),
                               **TORCH_TOL)


def test_max_pool2d_nan_and_infinities_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    x = rand(rng, (2, 3, 7, 6))
    x[0, 0, 1, 1] = x[0, 0, 2, 3] = x[1, 2, 5, 0] = np.nan
    x[0, 1] = -np.inf
    tout, tidx = torch.nn.functional.max_pool2d(torch.tensor(x), 3, stride=2, padding=1,
                                                ceil_mode=True, return_indices=True)
    out, idx = R.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(out, tout.numpy())  # NaN == NaN here
    np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("case", AVG_CASES, ids=ids(AVG_CASES))
def test_avg_pool2d_matches_torch(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    shape, kwargs = case
    x = rand(rng, shape)
    tx = torch_leaf(torch, x)
    tout = torch.nn.functional.avg_pool2d(tx, **kwargs)
    out = R.avg_pool2d(x, **kwargs)
    np.testing.assert_allclose(out, tout.detach().numpy(), **TORCH_TOL)
    g = rand(rng, out.shape)
    tout.backward(torch.tensor(g))
    np.testing.assert_allclose(R.avg_pool2d_backward(g, shape, **kwargs), tx.grad.numpy(),
                               **TORCH_TOL)


@pytest.mark.parametrize("case", UNFOLD_CASES, ids=ids(UNFOLD_CASES))
def test_im2col_col2im_match_torch(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    shape, kwargs = case
    x = rand(rng, shape)
    cols = R.im2col(x, **kwargs)
    np.testing.assert_array_equal(cols, torch.nn.functional.unfold(torch.tensor(x), **kwargs))
    c = rand(rng, cols.shape)
    np.testing.assert_allclose(
        R.col2im(c, shape[-2:], **kwargs),
        torch.nn.functional.fold(torch.tensor(c), shape[-2:], **kwargs).numpy(), **TORCH_TOL)
