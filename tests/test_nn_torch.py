"""fastconv.nn and fastconv.optim against torch: the same weights give the same outputs and
gradients, state_dicts move both ways, optimizers and schedulers follow the same trajectories."""
import numpy as np
import pytest

import fastconv
from fastconv import nn, optim

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
BACKENDS = ["compiled", "reference"]

# (id, fastconv layer, torch layer, input shape); the torch layer gets the fastconv weights.
LAYERS = [
    ("conv", lambda m: m.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 6)),
    ("conv_groups", lambda m: m.Conv2d(4, 6, (3, 2), padding=(1, 2), dilation=(2, 1), groups=2), (2, 4, 6, 5)),
    ("conv_same", lambda m: m.Conv2d(2, 3, 4, padding="same", bias=False), (2, 2, 6, 5)),
    ("conv_reflect", lambda m: m.Conv2d(2, 3, 3, padding=2, padding_mode="reflect"), (2, 2, 5, 6)),
    ("conv_replicate", lambda m: m.Conv2d(2, 3, 3, stride=2, padding=(1, 3), padding_mode="replicate"),
     (2, 2, 5, 6)),
    ("conv_circular", lambda m: m.Conv2d(2, 3, (3, 5), padding="same", padding_mode="circular"), (2, 2, 5, 6)),
    ("maxpool", lambda m: m.MaxPool2d(2), (2, 3, 6, 7)),
    ("maxpool_args", lambda m: m.MaxPool2d(3, stride=2, padding=1, dilation=1, ceil_mode=True), (2, 3, 7, 6)),
    ("avgpool", lambda m: m.AvgPool2d(2), (2, 3, 6, 7)),
    ("avgpool_args", lambda m: m.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
     (2, 3, 7, 6)),
    ("avgpool_divisor", lambda m: m.AvgPool2d(2, divisor_override=3), (2, 3, 6, 6)),
    ("linear", lambda m: m.Linear(7, 5), (4, 7)),
    ("flatten", lambda m: m.Flatten(), (2, 3, 4, 5)),
    ("relu", lambda m: m.ReLU(), (4, 9)),
    ("leaky_relu", lambda m: m.LeakyReLU(0.1), (4, 9)),
    ("sigmoid", lambda m: m.Sigmoid(), (4, 9)),
    ("tanh", lambda m: m.Tanh(), (4, 9)),
    ("batchnorm2d", lambda m: m.BatchNorm2d(3), (4, 3, 5, 5)),
    ("batchnorm1d", lambda m: m.BatchNorm1d(6, momentum=None), (8, 6)),
]


def _to_torch(state):
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def _to_numpy(state):
    return {k: v.detach().numpy() for k, v in state.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[case[0] for case in LAYERS])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layer_matches_torch(name, make, shape, training, backend):
    rng = np.random.default_rng(0)
    fastconv.manual_seed(0)
    ours, theirs = make(nn), make(torch.nn)
    for p in ours.parameters():  # BatchNorm starts at ones/zeros: make the test meaningful
        p.data[...] = rng.uniform(-1, 1, p.shape)
    theirs.load_state_dict(_to_torch(ours.state_dict()))
    ours.train(training)
    theirs.train(training)
    x = rng.standard_normal(shape).astype(np.float32)
    with fastconv.backend(backend):
        out = ours(x)
        g = rng.standard_normal(out.shape).astype(np.float32)
        ours.requires_input_grad = True
        if training or not isinstance(ours, nn.MaxPool2d):
            grad_x = ours.backward(g)
    xt = torch.from_numpy(x).requires_grad_()
    out_t = theirs(xt)
    out_t.backward(torch.from_numpy(g))

    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **tol)
    if training or not isinstance(ours, nn.MaxPool2d):
        np.testing.assert_allclose(grad_x, xt.grad.numpy(), **tol)
    grads_t = dict(theirs.named_parameters())
    for key, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, grads_t[key].grad.numpy(), err_msg=key, **tol)
    state_t = _to_numpy(theirs.state_dict())
    assert list(ours.state_dict()) == list(state_t)
    for key, value in ours.state_dict().items():  # running statistics too
        np.testing.assert_allclose(value, state_t[key], err_msg=key, **tol)


def _lenet(m):
    return m.Sequential(m.Conv2d(1, 6, 5, padding=2), m.BatchNorm2d(6), m.ReLU(), m.MaxPool2d(2),
                        m.Conv2d(6, 16, 5), m.Sigmoid(), m.AvgPool2d(2), m.Flatten(),
                        m.Linear(400, 84), m.Tanh(), m.Linear(84, 10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_moves_between_torch_and_fastconv(backend, tmp_path):
    torch.manual_seed(0)
    theirs = _lenet(torch.nn)
    theirs(torch.rand(8, 1, 28, 28))  # running statistics away from their defaults
    theirs.eval()
    ours = _lenet(nn)
    ours.load_state_dict(_to_numpy(theirs.state_dict()))
    ours.eval()
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with fastconv.backend(backend):
        np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    # ... and back, through a saved file.
    ours.save(tmp_path / "lenet.npz")
    back = _lenet(torch.nn)
    with np.load(tmp_path / "lenet.npz") as data:
        back.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    for key, value in back.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), theirs.state_dict()[key].numpy())


# -- optimizers and schedulers ------------------------------------------------------------------

OPTIMIZERS = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("adam", dict()),
    ("adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,kwargs", OPTIMIZERS)
def test_optimizer_trajectory_matches_torch(kind, kwargs, dtype):
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(5).astype(dtype)]
    ours = [nn.Parameter(a.copy()) for a in start]
    theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    opt = {"sgd": optim.SGD, "adam": optim.Adam}[kind](ours, **kwargs)
    opt_t = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[kind](theirs, **kwargs)
    for step in range(6):
        grads = [rng.standard_normal(a.shape).astype(dtype) for a in start]
        opt.zero_grad()
        opt_t.zero_grad()
        for p, pt, g in zip(ours, theirs, grads):
            if step != 2 or p.ndim == 2:  # a parameter without a gradient is left alone
                p.grad = g.copy()
                pt.grad = torch.from_numpy(g.copy())
        opt.step()
        opt_t.step()
        tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
        for p, pt in zip(ours, theirs):
            assert p.data.dtype == dtype
            np.testing.assert_allclose(p.data, pt.detach().numpy(), err_msg=f"step {step}", **tol)


@pytest.mark.parametrize("name,kwargs", [("StepLR", dict(step_size=3, gamma=0.5)),
                                         ("ExponentialLR", dict(gamma=0.9))])
def test_scheduler_matches_torch(name, kwargs):
    opt = optim.SGD([nn.Parameter(np.zeros(2))], lr=0.1)
    opt_t = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    sched = getattr(optim, name)(opt, **kwargs)
    sched_t = getattr(torch.optim.lr_scheduler, name)(opt_t, **kwargs)
    for _ in range(8):
        opt_t.step()
        sched.step()
        sched_t.step()
        assert sched.get_last_lr() == pytest.approx(sched_t.get_last_lr(), rel=1e-15)
        assert opt.param_groups[0]["lr"] == pytest.approx(opt_t.param_groups[0]["lr"], rel=1e-15)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 3, 4, 5)])
@pytest.mark.parametrize("dims", [(1, -1), (0, -1), (0, 1), (-2, -1), (2, 1)])
def test_flatten_shapes_and_refusals_match_torch(shape, dims):
    torch = pytest.importorskip("torch")
    x = np.zeros(shape, np.float32)
    try:
        expected = tuple(torch.nn.Flatten(*dims)(torch.from_numpy(x)).shape)
    except (IndexError, RuntimeError):
        with pytest.raises((IndexError, ValueError)):
            nn.Flatten(*dims)(x)
        return
    assert nn.Flatten(*dims)(x).shape == expected
