"""The ResNet-era vocabulary: adaptive pooling, softmax, NLL / cross-entropy with weights and
label smoothing, Dropout2d, Identity, and the branching containers Residual and Concat.
Each against the reference, torch (when installed) and central differences in float64."""
import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import nn, optim
from fastconv import reference as R

BACKENDS = ["compiled", "reference"]
SIZES = [(1, 1), (2, 2), (3, 3), (4, 5), (7, 3), (None, 2), 5]
SHAPE = (2, 3, 7, 9)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar f at x (float64)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        plus = f()
        x[i] = saved - eps
        minus = f()
        x[i] = saved
        grad[i] = (plus - minus) / (2 * eps)
    return grad


# -- adaptive pooling ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("threads", [1, 2])
def test_adaptive_pools_match_reference(size, dtype, tol, threads):
    x = _rng().standard_normal(SHAPE).astype(dtype)
    with fastconv.threads(threads):
        avg = F.adaptive_avg_pool2d(x, size)
        mx, idx = F.adaptive_max_pool2d(x, size, return_indices=True)
        g = _rng(1).standard_normal(avg.shape).astype(dtype)
        gavg = F.adaptive_avg_pool2d_backward(g, x.shape)
        gmax = F.adaptive_max_pool2d_backward(g, idx, x.shape)
    np.testing.assert_allclose(avg, R.adaptive_avg_pool2d(x, size), rtol=tol, atol=tol)
    ref_max, ref_idx = R.adaptive_max_pool2d(x, size, return_indices=True)
    np.testing.assert_array_equal(mx, ref_max)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(gavg, R.adaptive_avg_pool2d_backward(g, x.shape), rtol=tol, atol=tol)
    np.testing.assert_array_equal(gmax, R.adaptive_max_pool2d_backward(g, ref_idx, x.shape))
    assert avg.dtype == mx.dtype == gavg.dtype == dtype and idx.dtype == np.int64


def test_adaptive_max_ties_and_nan_follow_torchs_rule():
    x = np.zeros((1, 1, 5, 5))           # all ties: the first of each window, row-major
    x[0, 0, 3, 1] = np.nan               # NaN wins its windows
    for size in [(2, 2), (3, 3)]:
        out, idx = F.adaptive_max_pool2d(x, size, return_indices=True)
        ref_out, ref_idx = R.adaptive_max_pool2d(x, size, return_indices=True)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(out, ref_out)
    starts = (np.arange(2) * 5) // 2
    np.testing.assert_array_equal(F.adaptive_max_pool2d(np.zeros((1, 1, 5, 5)), 2, True)[1][0, 0],
                                  starts[:, None] * 5 + starts[None, :])
    assert np.isnan(out[0, 0, 2, 0]) and idx[0, 0, 2, 0] == 3 * 5 + 1


@pytest.mark.parametrize("size", [(1, 1), (3, 4), 2])
def test_adaptive_pool_layers_finite_differences(size):
    rng = _rng(3)
    x = rng.standard_normal((2, 2, 5, 7))
    for layer in (nn.AdaptiveAvgPool2d(size), nn.AdaptiveMaxPool2d(size)):
        g = rng.standard_normal(layer(x).shape)
        layer(x)
        analytic = layer.backward(g)
        numeric = _numeric_grad(lambda: float((layer(x) * g).sum()), x)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_adaptive_pool_unbatched_and_refusals():
    x = _rng().standard_normal((3, 6, 6))
    assert F.adaptive_avg_pool2d(x, 2).shape == (3, 2, 2)
    assert F.adaptive_max_pool2d_backward(np.ones((3, 2, 2)), F.adaptive_max_pool2d(x, 2, True)[1],
                                          x.shape).shape == x.shape
    with pytest.raises(ValueError, match="output_size must be at least 1"):
        F.adaptive_avg_pool2d(x, 0)
    with pytest.raises(TypeError, match="output_size"):
        F.adaptive_avg_pool2d(x, (1, 2, 3))
    with pytest.raises(TypeError, match="float32 or float64"):
        F.adaptive_avg_pool2d(x.astype(np.int64), 2)
    with pytest.raises(ValueError, match="grad_output"):
        F.adaptive_avg_pool2d_backward(np.ones((2, 2, 2)), x.shape)
    with pytest.raises(RuntimeError, match="before forward"):
        nn.AdaptiveMaxPool2d(2).eval().backward(np.ones((3, 2, 2)))


# -- softmax, losses ----------------------------------------------------------------------

@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_softmax_matches_reference(op, dim, dtype, tol):
    x = (_rng().standard_normal((4, 5, 3)) * 10).astype(dtype)
    g = _rng(1).standard_normal(x.shape).astype(dtype)
    y = getattr(F, op)(x, dim)
    np.testing.assert_allclose(y, getattr(R, op)(x, dim), rtol=tol, atol=tol)
    np.testing.assert_allclose(getattr(F, op + "_backward")(g, y, dim),
                               getattr(R, op + "_backward")(g, y, dim), rtol=tol, atol=tol)
    assert y.dtype == dtype


@pytest.mark.parametrize("cls", [nn.Softmax, nn.LogSoftmax])
def test_softmax_layers_finite_differences(cls):
    rng = _rng(4)
    x = rng.standard_normal((3, 4))
    layer = cls(dim=1)
    g = rng.standard_normal(x.shape)
    layer(x)
    analytic = layer.backward(g)
    np.testing.assert_allclose(analytic, _numeric_grad(lambda: float((layer(x) * g).sum()), x),
                               rtol=1e-6, atol=1e-9)
    with pytest.raises(TypeError, match="needs dim"):
        cls()


LOSS_CASES = [
    dict(),
    dict(reduction="sum"),
    dict(label_smoothing=0.1),
    dict(weight=np.array([0.5, 2.0, 1.0, 0.25])),
    dict(weight=np.array([0.5, 2.0, 1.0, 0.25]), label_smoothing=0.2, ignore_index=2),
    dict(ignore_index=1, reduction="sum", label_smoothing=0.3),
]
TARGET = np.array([0, 2, 1, 3, 2, 1])


@pytest.mark.parametrize("kwargs", LOSS_CASES)
def test_cross_entropy_against_reference_and_finite_differences(kwargs):
    x = _rng(5).standard_normal((6, 4))
    loss = nn.CrossEntropyLoss(**kwargs)
    value = loss(x, TARGET)
    np.testing.assert_allclose(value, R.cross_entropy(x, TARGET, **kwargs), rtol=1e-12)
    np.testing.assert_allclose(F.cross_entropy(x, TARGET, **kwargs), value, rtol=1e-12)
    analytic = loss.backward()
    np.testing.assert_allclose(analytic, _numeric_grad(lambda: float(loss(x, TARGET)), x),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kwargs", [k for k in LOSS_CASES if "label_smoothing" not in k])
def test_nll_loss_against_reference_and_finite_differences(kwargs):
    x = F.log_softmax(_rng(6).standard_normal((6, 4)), 1)
    loss = nn.NLLLoss(**kwargs)
    value = loss(x, TARGET)
    np.testing.assert_allclose(value, R.nll_loss(x, TARGET, **kwargs), rtol=1e-12)
    np.testing.assert_allclose(F.nll_loss(x, TARGET, **kwargs), value, rtol=1e-12)
    analytic = loss.backward()
    np.testing.assert_allclose(analytic, _numeric_grad(lambda: float(loss(x, TARGET)), x),
                               rtol=1e-6, atol=1e-9)


def test_log_softmax_then_nll_is_cross_entropy():
    x = _rng(7).standard_normal((6, 4)).astype(np.float32)
    ce, lsm, nll = nn.CrossEntropyLoss(), nn.LogSoftmax(dim=1), nn.NLLLoss()
    np.testing.assert_allclose(nll(lsm(x), TARGET), ce(x, TARGET), rtol=1e-6)
    np.testing.assert_allclose(lsm.backward(nll.backward()), ce.backward(), rtol=1e-5, atol=1e-7)


def test_loss_refusals():
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight of shape \(4,\)"):
        nn.CrossEntropyLoss(weight=np.ones(3))(np.zeros((2, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        nn.NLLLoss()(np.zeros((2, 4)), np.array([0, 4]))
    ignored = nn.NLLLoss(ignore_index=4)(np.zeros((2, 4)), np.array([0, 4]))
    assert ignored == 0


# -- Dropout2d, Identity --------------------------------------------------------------------

def test_dropout2d_drops_whole_channels_reproducibly():
    x = np.ones((4, 8, 3, 3), np.float32)
    layer = nn.Dropout2d(0.5)
    fastconv.manual_seed(1)
    out = layer(x)
    per_channel = out.reshape(4, 8, 9)
    assert set(np.unique(out)) <= {0.0, 2.0} and (per_channel.min(2) == per_channel.max(2)).all()
    assert 0 < (out == 0).mean() < 1
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), out)
    fastconv.manual_seed(1)
    np.testing.assert_array_equal(layer(x), out)
    assert layer.eval()(x) is x
    with pytest.raises(ValueError, match="Dropout2d"):
        nn.Dropout2d().train()(np.ones((2, 3)))


def test_identity():
    x = np.arange(6.0).reshape(2, 3)
    layer = nn.Identity(54, unused="argument")
    assert layer(x) is x and layer.backward(x) is x and not layer.parameters()


# -- Residual and Concat --------------------------------------------------------------------

def _block(c_in, c_out, stride):
    main = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
    shortcut = None if stride == 1 and c_in == c_out else nn.Sequential(
        nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
    return nn.Sequential(nn.Residual(main, shortcut), nn.ReLU())


def _branchy_model():
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), _block(3, 3, 1), _block(3, 4, 2),
        nn.Concat(nn.Identity(), nn.Sequential(nn.Conv2d(4, 2, 1), nn.Tanh())),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def _all_params(model, rng):
    for p in model.parameters():
        p.data[...] = rng.uniform(-1, 1, p.shape)


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_and_concat_gradients_by_finite_differences(backend):
    rng = _rng(8)
    fastconv.manual_seed(0)
    model = _branchy_model().double()
    _all_params(model, rng)
    model.requires_input_grad = True
    x = rng.standard_normal((3, 2, 6, 6))
    g = rng.standard_normal((3, 3))
    with fastconv.backend(backend):
        model(x)
        model.zero_grad()
        grad_x = model.backward(g)
        objective = lambda: float((model(x) * g).sum())
        np.testing.assert_allclose(grad_x, _numeric_grad(objective, x), rtol=1e-5, atol=1e-7)
        for name, p in model.named_parameters():
            numeric = _numeric_grad(objective, p.data)
            np.testing.assert_allclose(p.grad, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def test_residual_identity_shortcut_adds_the_gradient():
    rng = _rng(9)
    inner = nn.Linear(4, 4)
    block = nn.Residual(inner)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(block(x), inner(x) + x, rtol=1e-6)
    g = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(block.backward(g), g + g @ inner.weight.data, rtol=1e-5)
    block.requires_input_grad = False
    assert block.backward(g) is None
    with pytest.raises(ValueError, match="shortcut"):
        nn.Residual(nn.Linear(4, 3))(x)
    with pytest.raises(TypeError, match="main must be a Module"):
        nn.Residual(lambda v: v)
    with pytest.raises(ValueError, match="every dimension but 1"):
        nn.Concat(nn.Identity(), nn.AdaptiveAvgPool2d(1))(np.ones((2, 3, 4, 4), np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_branchy_model_compiled_matches_reference_and_thread_count(threads):
    rng = _rng(10)
    fastconv.manual_seed(0)
    model = _branchy_model()
    x = rng.standard_normal((4, 2, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    loss = nn.CrossEntropyLoss()

    def step(backend, n):
        with fastconv.backend(backend), fastconv.threads(n):
            out = model(x)
            loss(out, y)
            model.zero_grad()
            model.backward(loss.backward())
        return out, [p.grad.copy() for p in model.parameters()]

    out, grads = step("compiled", threads)
    ref_out, ref_grads = step("reference", 1)
    one_out, one_grads = step("compiled", 1)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    for a, b, c in zip(grads, ref_grads, one_grads):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
        np.testing.assert_array_equal(a, c)  # the same bits on any thread count


def test_branchy_model_names_summary_save_load_modes_and_fit(tmp_path):
    fastconv.manual_seed(0)
    model = _branchy_model()
    keys = list(model.state_dict())
    assert "1.0.main.0.weight" in keys and "2.0.shortcut.1.running_mean" in keys
    assert "3.1.0.weight" in keys
    table = model.summary((2, 8, 8), print_fn=None)
    assert "Residual" not in table and "(None, 6, 4, 4)" in table and "(None, 3)" in table
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    x = _rng(11).standard_normal((32, 2, 8, 8)).astype(np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64)
    history = model.fit(x, y, loss=nn.CrossEntropyLoss(), batch_size=8, epochs=8, verbose=0,
                        optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    assert history["loss"][-1] < history["loss"][0]
    path = tmp_path / "branchy.npz"
    model.save(path)
    clone = _branchy_model().load(path)
    model.eval(), clone.eval()
    np.testing.assert_array_equal(clone(x), model(x))


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("size", SIZES)
def test_adaptive_pools_against_torch(size):
    torch = _torch()
    x = _rng(12).standard_normal(SHAPE)
    g = _rng(13).standard_normal(F.adaptive_avg_pool2d(x, size).shape)
    for name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        xt = torch.tensor(x, requires_grad=True)
        out_t = getattr(torch.nn.functional, name)(xt, size if not isinstance(size, tuple) else size)
        out_t.backward(torch.tensor(g))
        layer = getattr(nn, "AdaptiveAvgPool2d" if "avg" in name else "AdaptiveMaxPool2d")(size)
        out = layer(x)
        np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    _, idx_t = torch.nn.functional.adaptive_max_pool2d(torch.tensor(x), size, return_indices=True)
    np.testing.assert_array_equal(F.adaptive_max_pool2d(x, size, return_indices=True)[1], idx_t.numpy())


@pytest.mark.parametrize("kwargs", LOSS_CASES)
def test_losses_against_torch(kwargs):
    torch = _torch()
    x = _rng(14).standard_normal((6, 4))
    tkw = dict(kwargs)
    if "weight" in tkw:
        tkw["weight"] = torch.tensor(tkw["weight"])
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.CrossEntropyLoss(**tkw)(xt, torch.tensor(TARGET))
    ref.backward()
    loss = nn.CrossEntropyLoss(**kwargs)
    np.testing.assert_allclose(loss(x, TARGET), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(loss.backward(), xt.grad.numpy(), rtol=1e-10, atol=1e-14)
    if "label_smoothing" not in kwargs:
        lp = F.log_softmax(x, 1)
        lpt = torch.tensor(lp, requires_grad=True)
        ref = torch.nn.NLLLoss(**tkw)(lpt, torch.tensor(TARGET))
        ref.backward()
        nll = nn.NLLLoss(**kwargs)
        np.testing.assert_allclose(nll(lp, TARGET), ref.item(), rtol=1e-12)
        np.testing.assert_allclose(nll.backward(), lpt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("cls", ["Softmax", "LogSoftmax"])
def test_softmax_against_torch(cls):
    torch = _torch()
    x = _rng(15).standard_normal((3, 5, 2)) * 5
    g = _rng(16).standard_normal(x.shape)
    xt = torch.tensor(x, requires_grad=True)
    out_t = getattr(torch.nn, cls)(dim=1)(xt)
    out_t.backward(torch.tensor(g))
    layer = getattr(nn, cls)(dim=1)
    np.testing.assert_allclose(layer(x), out_t.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-10, atol=1e-14)
