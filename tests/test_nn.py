"""fastconv.nn: layer gradients by finite differences, layers against torch, state_dict,
save/load, Sequential, seeding and init."""
import math

import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import nn

BACKENDS = ["compiled", "reference"]


def _layers():
    """(id, constructor, input shape) of every layer, on small float64 shapes."""
    return [
        ("conv", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 6, 5)),
        ("conv_groups_dilation", lambda: nn.Conv2d(4, 4, (3, 2), padding=(2, 1), dilation=(2, 1), groups=2),
         (2, 4, 5, 5)),
        ("conv_same_nobias", lambda: nn.Conv2d(2, 3, 4, padding="same", bias=False), (1, 2, 5, 6)),
        ("conv_reflect", lambda: nn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode="reflect"), (2, 2, 5, 4)),
        ("conv_replicate", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=2, padding_mode="replicate"),
         (1, 2, 5, 5)),
        ("conv_circular", lambda: nn.Conv2d(2, 2, 3, padding="same", padding_mode="circular"), (2, 2, 4, 5)),
        ("maxpool", lambda: nn.MaxPool2d(2), (2, 3, 6, 6)),
        ("maxpool_pad_ceil", lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 2, 6, 5)),
        ("avgpool", lambda: nn.AvgPool2d(2), (2, 3, 6, 6)),
        ("avgpool_pad", lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 2, 5, 6)),
        ("linear", lambda: nn.Linear(5, 3), (4, 5)),
        ("linear_3d", lambda: nn.Linear(5, 3, bias=False), (2, 3, 5)),
        ("flatten", lambda: nn.Flatten(), (2, 3, 2, 2)),
        ("relu", lambda: nn.ReLU(), (3, 7)),
        ("leaky_relu", lambda: nn.LeakyReLU(0.2), (3, 7)),
        ("sigmoid", lambda: nn.Sigmoid(), (3, 7)),
        ("tanh", lambda: nn.Tanh(), (3, 7)),
        ("dropout", lambda: nn.Dropout(0.4), (3, 7)),
        ("batchnorm2d", lambda: nn.BatchNorm2d(3), (4, 3, 3, 2)),
        ("batchnorm1d", lambda: nn.BatchNorm1d(5), (6, 5)),
        ("batchnorm1d_3d", lambda: nn.BatchNorm1d(3, momentum=None), (4, 3, 2)),
    ]


LAYERS = _layers()


def _randomize(layer, rng):
    """Non-trivial parameters (BatchNorm starts at ones/zeros)."""
    for p in layer.parameters():
        p.data[...] = rng.uniform(-1, 1, p.shape)


def _forward(layer, x):
    fastconv.manual_seed(7)  # the same dropout mask on every call
    return layer(x)


def _check_gradients(layer, x, rng, eps=1e-6):
    """d sum(layer(x) * g) by backward against central differences, for x and each parameter."""
    g = rng.standard_normal(_forward(layer, x).shape)
    for p in layer.parameters():
        p.grad = None
    _forward(layer, x)
    grad_x = layer.backward(g)
    targets = [("input", x, grad_x)] + [(name, p.data, p.grad) for name, p in layer.named_parameters()]
    for name, array, analytic in targets:
        assert analytic is not None and analytic.shape == array.shape, name
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            saved = array[i]
            array[i] = saved + eps
            plus = np.sum(_forward(layer, x) * g)
            array[i] = saved - eps
            minus = np.sum(_forward(layer, x) * g)
            array[i] = saved
            numeric[i] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[case[0] for case in LAYERS])
def test_layer_gradients_finite_differences(name, make, shape, backend):
    rng = np.random.default_rng(0)
    # One thread: hundreds of tiny kernel calls, each a parallel region that waits for every
    # core of this shared machine (the kernels' thread counts have their own tests).
    with fastconv.backend(backend), fastconv.threads(1):
        layer = make().double()
        _randomize(layer, rng)
        x = rng.standard_normal(shape)
        _check_gradients(layer, x, rng)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_eval_gradient(backend):
    rng = np.random.default_rng(1)
    with fastconv.backend(backend):
        bn = nn.BatchNorm2d(3).double()
        _randomize(bn, rng)
        bn.running_mean[...] = rng.standard_normal(3)
        bn.running_var[...] = rng.uniform(0.5, 2, 3)
        bn.eval()
        _check_gradients(bn, rng.standard_normal((2, 3, 2, 2)), rng)


@pytest.mark.parametrize("loss_fn,target", [
    (nn.CrossEntropyLoss(), np.array([0, 2, 1, 2])),
    (nn.CrossEntropyLoss(reduction="sum"), np.array([1, 1, 0, 2])),
    (nn.MSELoss(), np.linspace(-1, 1, 12).reshape(4, 3)),
    (nn.MSELoss(reduction="sum"), np.linspace(-1, 1, 12).reshape(4, 3)),
])
def test_loss_gradients_finite_differences(loss_fn, target):
    x = np.random.default_rng(2).standard_normal((4, 3))
    loss_fn(x, target)
    analytic = loss_fn.backward()
    numeric = np.zeros_like(x)
    eps = 1e-6
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        plus = loss_fn(x, target)
        x[i] = saved - eps
        minus = loss_fn(x, target)
        x[i] = saved
        numeric[i] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_cross_entropy_refuses_bad_targets():
    loss = nn.CrossEntropyLoss()
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        loss(x, np.array([0, 4, 1]))
    with pytest.raises(TypeError, match="integer"):
        loss(x, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"target of shape \(3,\)"):
        loss(x, np.array([0, 1]))
    with pytest.raises(RuntimeError, match="before"):
        nn.CrossEntropyLoss().backward()


def test_float32_stays_float32():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(2, 3), nn.Sigmoid(), nn.Dropout(0.5), nn.Linear(3, 2))
    with fastconv.backend("reference"):
        out = model(np.ones((2, 1, 4, 4), np.float32))
        loss = nn.CrossEntropyLoss()
        value = loss(out, np.array([0, 1]))
        model.backward(loss.backward())
    assert out.dtype == np.float32 and value.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in model.parameters())


# -- Sequential, state_dict, save/load ----------------------------------------------------------

def _small_model():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8, 3))


def test_state_dict_keys_are_torchs():
    assert list(_small_model().state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked", "5.weight", "5.bias"]


def test_load_state_dict_refuses_mismatches_and_copies_nothing():
    model = _small_model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = {k: np.full_like(v, 3) for k, v in before.items()}
    bad_key = dict(state, extra=np.zeros(1))
    del bad_key["5.bias"]
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: 'extra'(.|\n)*"
                                           r"Missing key\(s\) in state_dict: '5.bias'"):
        model.load_state_dict(bad_key)
    bad_shape = dict(state, **{"0.weight": np.zeros((2, 1, 5, 5))})
    with pytest.raises(RuntimeError, match=r"size mismatch for 0.weight: .*\(2, 1, 5, 5\).*\(2, 1, 3, 3\)"):
        model.load_state_dict(bad_shape)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    missing, unexpected = model.load_state_dict(bad_key, strict=False)
    assert (missing, unexpected) == (["5.bias"], ["extra"])
    assert np.all(model[0].weight.data == 3) and np.all(model[5].bias.data == before["5.bias"])


def test_load_state_dict_keeps_parameter_arrays():
    """Optimizers hold the Parameters: loading must write into them, in their dtype."""
    model = _small_model()
    weight = model[0].weight.data
    model.load_state_dict({k: np.ones(v.shape, np.float64) for k, v in model.state_dict().items()})
    assert model[0].weight.data is weight and weight.dtype == np.float32 and np.all(weight == 1)


def test_save_load_roundtrip(tmp_path):
    fastconv.manual_seed(3)
    model = _small_model()
    x = np.random.default_rng(0).random((4, 1, 4, 4), dtype=np.float32)
    with fastconv.backend("reference"):
        model(x)  # running statistics and num_batches_tracked change
        model.eval()
        expected = model(x)
        path = tmp_path / "model.npz"
        model.save(path)
        fastconv.manual_seed(4)
        other = _small_model().load(path).eval()
        np.testing.assert_array_equal(other(x), expected)
    assert int(other[1].num_batches_tracked) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_sequential_input_grad_flag():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = rng.standard_normal((5, 3)).astype(np.float32)
    g = rng.standard_normal((5, 2)).astype(np.float32)
    model(x)
    assert model.backward(g) is None
    model.requires_input_grad = True
    model(x)
    expected = ((g @ model[2].weight.data) * (1 - np.tanh(x @ model[0].weight.data.T + model[0].bias.data) ** 2)
                ) @ model[0].weight.data
    np.testing.assert_allclose(model.backward(g), expected, rtol=1e-5)
    # A slice shares layers; its flags must not leak into the whole model.
    tail = model[1:]
    tail(model[0](x))
    tail.backward(g)
    model(x)
    assert model.backward(g) is not None


def test_gradients_accumulate_until_zero_grad():
    model = nn.Sequential(nn.Linear(3, 2))
    x = np.ones((2, 3), np.float32)
    g = np.ones((2, 2), np.float32)
    model(x)
    model.backward(g)
    first = model[0].weight.grad.copy()
    model(x)
    model.backward(g)
    np.testing.assert_array_equal(model[0].weight.grad, 2 * first)
    model.zero_grad()
    assert model[0].weight.grad is None


def test_frozen_parameter_gets_no_gradient():
    layer = nn.Linear(3, 2)
    layer.weight.requires_grad = False
    layer(np.ones((2, 3), np.float32))
    layer.backward(np.ones((2, 2), np.float32))
    assert layer.weight.grad is None and layer.bias.grad is not None


def test_summary_table():
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(6 * 14 * 14, 10))
    with fastconv.backend("reference"):
        table = model.summary((1, 28, 28), print_fn=None)
    lines = table.splitlines()
    assert "Layer (type)" in lines[1] and "Output Shape" in lines[1] and "Param #" in lines[1]
    assert "0 (Conv2d)" in table and "(None, 6, 28, 28)" in table and "156" in table
    assert "(None, 6, 14, 14)" in table and "(None, 1176)" in table and "11,770" in table
    assert f"Total params: {156 + 11770:,}" in table
    assert model.training
    assert "?" in model.summary(print_fn=None)


def test_module_repr_and_registration():
    model = _small_model()
    assert "(0): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))" in repr(model)
    assert len(model.parameters()) == 6
    with pytest.raises(TypeError, match="parameter 'bias'"):
        model[5].bias = np.zeros(3)
    model.eval()
    assert not any(m.training for m in model.modules())


def test_dropout_train_and_eval():
    fastconv.manual_seed(0)
    drop = nn.Dropout(0.25)
    x = np.ones((200, 100), np.float32)
    y = drop(x)
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs(np.mean(y == 0) - 0.25) < 0.02
    np.testing.assert_array_equal(drop.backward(x), y)
    drop.eval()
    assert drop(x) is x
    assert np.all(nn.Dropout(1.0)(x) == 0)


def test_batchnorm_running_statistics():
    rng = np.random.default_rng(5)
    bn = nn.BatchNorm2d(2, momentum=0.5)
    x = rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 2 + 1
    bn(x)
    np.testing.assert_allclose(bn.running_mean, 0.5 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var, 0.5 + 0.5 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    expected = (x - bn.running_mean[:, None, None]) / np.sqrt(bn.running_var[:, None, None] + 1e-5)
    np.testing.assert_allclose(bn(x), expected, rtol=1e-5, atol=1e-6)


def test_conv_refusals():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="reflect padding of 3 is too large"):
        nn.Conv2d(1, 1, 3, padding=3, padding_mode="reflect")(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Conv2d(1, 1, 3).backward(np.zeros((1, 1, 1, 1), np.float32))


# -- backends, seeding, init ------------------------------------------------------------------

def test_backend_selection():
    assert fastconv._backend.ops() is fastconv.functional
    with fastconv.backend("reference"):
        assert fastconv._backend.ops() is fastconv.reference
    assert fastconv._backend.get_backend() == "compiled"
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        with fastconv.backend("torch"):
            pass


def test_manual_seed_reproduces_init_and_dropout():
    def run():
        fastconv.manual_seed(42)
        model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
        return model.state_dict(), model(np.ones((3, 4), np.float32))
    (state1, out1), (state2, out2) = run(), run()
    for key in state1:
        np.testing.assert_array_equal(state1[key], state2[key])
    np.testing.assert_array_equal(out1, out2)
    fastconv.manual_seed(43)
    assert not np.array_equal(nn.Linear(4, 8).weight.data, state1["0.weight"])


def test_default_init_bounds():
    fastconv.manual_seed(0)
    conv = nn.Conv2d(6, 16, 5)
    bound = 1 / math.sqrt(6 * 25)
    for p in (conv.weight.data, conv.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.8 * bound
    assert conv.weight.dtype == np.float32


@pytest.mark.parametrize("fn,kwargs,expected_std", [
    (nn.init.xavier_uniform_, {}, math.sqrt(2 / (300 + 200))),
    (nn.init.xavier_normal_, dict(gain=2.0), 2 * math.sqrt(2 / (300 + 200))),
    (nn.init.kaiming_uniform_, dict(nonlinearity="relu"), math.sqrt(2 / 300)),
    (nn.init.kaiming_normal_, dict(mode="fan_out", nonlinearity="relu"), math.sqrt(2 / 200)),
    (nn.init.kaiming_normal_, dict(a=0.1), math.sqrt(2 / (1 + 0.01)) / math.sqrt(300)),
])
def test_init_std(fn, kwargs, expected_std):
    fastconv.manual_seed(0)
    w = nn.Parameter(np.zeros((8, 12, 5, 5), np.float32))   # fan_in 300, fan_out 200
    assert fn(w, **kwargs) is w
    assert abs(w.data.std() - expected_std) < 0.05 * expected_std
    if "uniform" in fn.__name__:
        assert np.abs(w.data).max() <= math.sqrt(3) * expected_std


def test_init_gain_and_refusals():
    assert nn.init.calculate_gain("tanh") == 5 / 3
    assert nn.init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.xavier_uniform_(np.zeros(3))
    with pytest.raises(ValueError, match="mode"):
        nn.init.kaiming_uniform_(np.zeros((2, 2)), mode="fan_avg")


def test_first_conv_skips_grad_input(monkeypatch):
    """The images' gradient is wasted work: Sequential asks the first layer not to compute it."""
    calls = []
    real = fastconv.functional.conv2d_backward

    def spy(*args, **kwargs):
        calls.append(kwargs["needs_input_grad"])
        return real(*args, **kwargs)
    monkeypatch.setattr(fastconv.functional, "conv2d_backward", spy)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    x = np.ones((2, 1, 6, 6), np.float32)
    g = np.ones((2, 2, 2, 2), np.float32)
    model(x)
    assert model.backward(g) is None and calls == [True, False]
    model.requires_input_grad = True
    model(x)
    assert model.backward(g).shape == x.shape and calls[2:] == [True, True]


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [(7, 5, 3), (3, 5, 7), (1, 4, 1), (64, 33, 10)])
def test_threaded_matmul_matches_numpy(m, k, n, dtype, n_threads):
    # Linear's products: rows or columns of the output split over the threads
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    with fastconv.threads(n_threads):
        for ta, tb in [(False, False), (True, False), (False, True), (True, True)]:
            out = F._matmul(a.T.copy() if ta else a, b.T.copy() if tb else b, ta, tb)
            assert out.dtype == dtype and out.shape == (m, n)
            np.testing.assert_allclose(out, a @ b, rtol=tol, atol=tol * k)
