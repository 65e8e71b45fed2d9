"""NaN and Inf follow torch: max pooling propagates NaN (its index is the window's last NaN),
and convolution and average pooling give NaN and +-inf where torch does (inf * 0 is NaN,
padding included)."""
import numpy as np
import pytest

from fastconv import functional as F
from fastconv import reference as R

nan, inf = np.nan, np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_propagates_nan(dtype):
    x = np.array([[[[1, nan, 5, 2],
                    [3, 2, nan, nan],
                    [-inf, -inf, inf, 1],
                    [-inf, -inf, 0, nan]]]], dtype)
    out, ind = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(out, np.array([[[[nan, nan], [-inf, nan]]]], dtype))
    # a NaN wins its window, the last one when there are several; else the first maximum
    np.testing.assert_array_equal(ind, [[[[1, 7], [8, 15]]]])
    out_ref, ind_ref = R.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(ind, ind_ref)
    # the gradient goes to the NaN that won
    grad = F.max_pool2d_backward(np.ones_like(out), ind, x.shape)
    assert grad[0, 0, 0, 1] == 1 and grad[0, 0, 1, 3] == 1 and grad[0, 0, 2, 0] == 1


def test_functional_docstrings_say_what_nan_and_inf_do():
    assert "NaN" in F.max_pool2d.__doc__
    assert "NaN" in F.conv2d.__doc__


def _special(rng, shape, dtype, fraction=0.1):
    x = rng.standard_normal(shape).astype(dtype)
    spots = rng.random(shape) < fraction
    x[spots] = rng.choice([nan, inf, -inf], size=int(spots.sum()))
    return x


def _same_specials(actual, expected, rtol):
    """NaN and +-inf in the same places, the finite values close."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=rtol)


MAX_CONFIGS = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=3, stride=1, padding=1, dilation=2, ceil_mode=True),
               dict(kernel_size=(2, 3), stride=(1, 2), ceil_mode=True)]


@pytest.mark.parametrize("kwargs", MAX_CONFIGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_nan_and_inf_match_torch(kwargs, dtype):
    torch = pytest.importorskip("torch")
    x = _special(np.random.default_rng(3), (2, 3, 9, 8), dtype, fraction=0.15)
    out, ind = F.max_pool2d(x, **kwargs, return_indices=True)
    xt = torch.from_numpy(x).requires_grad_()
    out_t, ind_t = torch.nn.functional.max_pool2d(xt, **kwargs, return_indices=True)
    np.testing.assert_array_equal(out, out_t.detach().numpy())
    np.testing.assert_array_equal(ind, ind_t.numpy())
    g = np.random.default_rng(4).standard_normal(out.shape).astype(dtype)
    out_t.backward(torch.from_numpy(g))
    np.testing.assert_allclose(F.max_pool2d_backward(g, ind, x.shape), xt.grad.numpy(),
                               rtol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1,
                                                             count_include_pad=False)])
def test_avg_pool_nan_and_inf_match_torch(kwargs):
    torch = pytest.importorskip("torch")
    x = _special(np.random.default_rng(5), (2, 3, 8, 8), np.float64)
    _same_specials(F.avg_pool2d(x, **kwargs),
                   torch.nn.functional.avg_pool2d(torch.from_numpy(x), **kwargs).numpy(), 1e-12)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("where", ["input", "weight"])
@pytest.mark.parametrize("algorithm", ["gemm", "direct", "winograd"])
def test_conv_nan_and_inf_match_torch(where, algorithm):
    torch = pytest.importorskip("torch")
    if algorithm == "winograd" and F._conv.kvec_block_limits(8)[0] == 0:
        pytest.skip("the portable build has no Winograd path")
    rng = np.random.default_rng(6)
    groups = 3 if algorithm == "direct" else 1  # direct: one input channel per group
    x = rng.standard_normal((2, 3, 7, 7))
    w = rng.standard_normal((6, 3 // groups, 3, 3))
    if where == "input":
        x = _special(rng, x.shape, np.float64, fraction=0.03)
    else:
        w.reshape(-1)[[0, 7, 20]] = [inf, -inf, nan]
    kwargs = dict(stride=1, padding=1, groups=groups)
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    out_t = torch.nn.functional.conv2d(xt, wt, **kwargs)
    out = F.conv2d(x, w, **kwargs, algorithm=algorithm)
    _same_specials(out, out_t.detach().numpy(), 1e-10)
    _same_specials(out, R.conv2d(x, w, **kwargs), 1e-10)

    g = rng.standard_normal(out.shape)
    out_t.backward(torch.from_numpy(g))
    gi, gw, _ = F.conv2d_backward(g, x, w, **kwargs)
    _same_specials(gi, xt.grad.numpy(), 1e-10)
    _same_specials(gw, wt.grad.numpy(), 1e-10)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("where", ["input", "weight"])
def test_conv_nan_and_inf_on_a_winograd_layer_match_torch(where):
    # Winograd mixes a tile's inputs: the images with non-finite outputs are redone by
    # direct convolution, forward and grad_input alike
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 64, 14, 14))
    w = rng.standard_normal((64, 64, 3, 3))
    if where == "input":
        x[1] = _special(rng, x[1].shape, np.float64, fraction=0.0005)
    else:
        w.reshape(-1)[[5, 900, 20000]] = [inf, -inf, nan]
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    out_t = torch.nn.functional.conv2d(xt, wt, padding=1)
    out = F.conv2d(x, w, padding=1)
    _same_specials(out, out_t.detach().numpy(), 1e-10)
    g = rng.standard_normal(out.shape)
    out_t.backward(torch.from_numpy(g))
    gi, _, _ = F.conv2d_backward(g, x, w, padding=1)
    _same_specials(gi, xt.grad.numpy(), 1e-10)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_an_infinite_gradient_through_padding_modes_stays_where_torch_puts_it(mode):
    """Conv2d's non-zero padding modes fold the padded cells' gradients back onto the cells
    they copied: an infinite gradient reaches only the inputs under its window (it used to
    be multiplied by the zeros of one-hot maps, NaN over whole rows and columns)."""
    from fastconv import nn
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode=mode, bias=False).double()
    conv.weight.data[...] = 1.0
    x = np.ones((1, 1, 5, 6))
    g = np.zeros((1, 1, 5, 6))
    g[0, 0, 0, 0] = inf
    gi = conv.backward(conv(x) * 0 + g)
    assert not np.isnan(gi).any()
    assert np.isinf(gi[0, 0, :2, :2]).all()         # under the window at the corner
    assert (gi[0, 0, 2:4, 2:4] == 0).all()           # far from it
    torch = pytest.importorskip("torch")
    tconv = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode=mode, bias=False).double()
    with torch.no_grad():
        tconv.weight.fill_(1.0)
    xt = torch.from_numpy(x).requires_grad_()
    tconv(xt).backward(torch.from_numpy(g))
    np.testing.assert_array_equal(gi, xt.grad.numpy())
