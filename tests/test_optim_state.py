"""Optimizer and scheduler state: torch's state_dict layout, a state that loads into a fresh
optimizer continues the same trajectory bitwise, torch's state loads into fastconv's and back,
and CosineAnnealingLR / MultiStepLR follow torch's learning rates exactly."""
import copy

import numpy as np
import pytest

from fastconv import nn, optim

OPTIMIZERS = [
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=5e-4)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
]
STATE_NAMES = {"SGD": ["momentum_buffer"], "Adam": ["step", "exp_avg", "exp_avg_sq"]}


def _start(dtype):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(5).astype(dtype),
            rng.standard_normal(2).astype(dtype)]


def _grads(rng, arrays):
    return [rng.standard_normal(a.shape).astype(a.dtype) for a in arrays]


def _groups(params):
    """Two groups, the second with its own learning rate (indices run across groups)."""
    return [{"params": params[:2]}, {"params": params[2:], "lr": 0.02}]


def _steps(opt, params, grads_list):
    for grads in grads_list:
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.grad = g.copy()
        opt.step()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,kwargs", OPTIMIZERS)
def test_state_dict_layout_and_resumed_trajectory_is_bitwise(kind, kwargs, dtype):
    rng = np.random.default_rng(1)
    start = _start(dtype)
    grads = [_grads(rng, start) for _ in range(6)]
    straight = [nn.Parameter(a.copy()) for a in start]
    opt = getattr(optim, kind)(_groups(straight), **kwargs)
    _steps(opt, straight, grads)

    first = [nn.Parameter(a.copy()) for a in start]
    opt1 = getattr(optim, kind)(_groups(first), **kwargs)
    _steps(opt1, first, grads[:3])
    state = opt1.state_dict()
    assert sorted(state) == ["param_groups", "state"]
    assert [g["params"] for g in state["param_groups"]] == [[0, 1], [2]]
    assert [g["lr"] for g in state["param_groups"]] == [kwargs["lr"], 0.02]
    assert sorted(state["state"]) == [0, 1, 2]
    assert sorted(state["state"][0]) == sorted(STATE_NAMES[kind])
    if kind == "Adam":
        assert state["state"][2]["step"] == 3

    resumed = [nn.Parameter(p.data.copy()) for p in first]
    opt2 = getattr(optim, kind)(_groups(resumed), lr=1.0)  # hyperparameters come from the state
    opt2.load_state_dict(state)
    assert opt2.param_groups[1]["lr"] == 0.02 and opt2.param_groups[0]["lr"] == kwargs["lr"]
    _steps(opt2, resumed, grads[3:])
    for p, q in zip(straight, resumed):
        np.testing.assert_array_equal(p.data, q.data)
    # the loaded state is a copy: stepping the new optimizer left the old one's alone
    _steps(opt1, first, grads[3:])
    for p, q in zip(straight, first):
        np.testing.assert_array_equal(p.data, q.data)


def _sgd(params=None):
    params = params or [nn.Parameter(np.zeros((2, 3), np.float32)), nn.Parameter(np.zeros(3, np.float32))]
    return optim.SGD(params, lr=0.1, momentum=0.9)


def _stepped_sgd():
    opt = _sgd()
    for p in opt.param_groups[0]["params"]:
        p.grad = np.ones_like(p.data)
    opt.step()
    return opt


@pytest.mark.parametrize("edit,message", [
    (lambda s: s["param_groups"].append(dict(s["param_groups"][0])), "number of parameter groups"),
    (lambda s: s["param_groups"][0]["params"].pop(), "doesn't match the size"),
    (lambda s: s["state"].__setitem__(5, s["state"][0]), "state for parameter 5"),
    (lambda s: s["state"][1].__setitem__("momentum_buffer", np.zeros(4)), r"shape \(4,\)"),
    (lambda s: s["state"][1].__setitem__("exp_avg", np.zeros(3)), "SGD keeps"),
    (lambda s: s["param_groups"][0].__setitem__("maximize", True), "maximize=True"),
    (lambda s: s.pop("state"), "'state' and 'param_groups'"),
])
def test_load_state_dict_refuses_a_mismatch_and_changes_nothing(edit, message):
    source = _stepped_sgd().state_dict()
    edit(source)
    opt = _stepped_sgd()
    before = opt.state_dict()
    buffers = {i: s["momentum_buffer"].copy() for i, s in before["state"].items()}
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(source)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for i, buf in buffers.items():
        np.testing.assert_array_equal(after["state"][i]["momentum_buffer"], buf)


def test_adam_refuses_amsgrad_state():
    p = nn.Parameter(np.zeros(3))
    state = optim.Adam([p]).state_dict()
    state["param_groups"][0]["amsgrad"] = True
    with pytest.raises(ValueError, match="amsgrad=True"):
        optim.Adam([p]).load_state_dict(state)


# -- schedulers ---------------------------------------------------------------------------------

SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=4)),
    ("CosineAnnealingLR", dict(T_max=3, eta_min=0.01)),
]


@pytest.mark.parametrize("name,kwargs", SCHEDULERS)
def test_scheduler_state_dict_resumes_exactly(name, kwargs):
    opt = _sgd()
    sched = getattr(optim, name)(opt, **kwargs)
    for _ in range(4):
        sched.step()
    state, opt_state = sched.state_dict(), copy.deepcopy(opt.state_dict())
    assert state["last_epoch"] == 4 and "optimizer" not in state
    expected = []
    for _ in range(8):
        sched.step()
        expected.append(sched.get_last_lr())
    # torch's order when resuming: build both, then load the optimizer, then the scheduler
    opt2 = _sgd()
    sched2 = getattr(optim, name)(opt2, **kwargs)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    got = []
    for _ in range(8):
        sched2.step()
        got.append(sched2.get_last_lr())
    assert got == expected


def test_scheduler_load_state_dict_refuses_missing_keys():
    sched = optim.CosineAnnealingLR(_sgd(), T_max=5)
    state = sched.state_dict()
    del state["T_max"]
    with pytest.raises(ValueError, match="missing T_max"):
        optim.CosineAnnealingLR(_sgd(), T_max=7).load_state_dict(state)


# -- against torch ------------------------------------------------------------------------------

def _torch_twin(torch, kind, kwargs, start):
    params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.02}]
    return params, getattr(torch.optim, kind)(groups, **kwargs)


@pytest.mark.parametrize("kind,kwargs", OPTIMIZERS)
def test_torch_state_loads_into_fastconv_and_back(kind, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    start = _start(np.float64)
    grads = [_grads(rng, start) for _ in range(6)]
    theirs, opt_t = _torch_twin(torch, kind, kwargs, start)
    for step, gs in enumerate(grads):
        if step == 3:
            state_t = opt_t.state_dict()
            ours = [nn.Parameter(p.detach().numpy().copy()) for p in theirs]
            opt = getattr(optim, kind)(_groups(ours), lr=1.0)
            opt.load_state_dict(state_t)  # tensors as they are: read with np.asarray
        opt_t.zero_grad()
        for p, g in zip(theirs, gs):
            p.grad = torch.from_numpy(g.copy())
        opt_t.step()
        if step >= 3:
            _steps(opt, ours, [gs])
    for p, pt in zip(ours, theirs):
        np.testing.assert_allclose(p.data, pt.detach().numpy(), rtol=1e-13, atol=1e-15)

    # ... and back: fastconv's state into a fresh torch optimizer, which then steps as ours does
    state = opt.state_dict()
    assert sorted(state["state"][0]) == sorted(STATE_NAMES[kind])
    back, opt_back = _torch_twin(torch, kind, kwargs, [p.data for p in ours])
    opt_back.load_state_dict({
        "state": {i: {k: torch.tensor(v) for k, v in s.items()} for i, s in state["state"].items()},
        "param_groups": state["param_groups"]})
    gs = _grads(rng, start)
    _steps(opt, ours, [gs])
    for p, g in zip(back, gs):
        p.grad = torch.from_numpy(g.copy())
    opt_back.step()
    for p, pt in zip(ours, back):
        np.testing.assert_allclose(p.data, pt.detach().numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name,kwargs", SCHEDULERS)
def test_scheduler_matches_torch_bitwise_and_state_moves_both_ways(name, kwargs):
    torch = pytest.importorskip("torch")
    opt = optim.SGD([nn.Parameter(np.zeros(2))], lr=0.1)
    opt_t = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    sched = getattr(optim, name)(opt, **kwargs)
    sched_t = getattr(torch.optim.lr_scheduler, name)(opt_t, **kwargs)
    for epoch in range(14):
        if epoch == 6:  # swap states: each continues from the other's
            ours, theirs = sched.state_dict(), sched_t.state_dict()
            sched.load_state_dict(theirs)
            sched_t.load_state_dict(ours)
        opt_t.step()
        sched.step()
        sched_t.step()
        assert sched.get_last_lr() == sched_t.get_last_lr(), epoch
        assert opt.param_groups[0]["lr"] == opt_t.param_groups[0]["lr"], epoch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum,dampening,nesterov,weight_decay", [
    (0, 0, False, 0.1), (0.9, 0, False, 5e-4), (0.9, 0.5, False, 5e-4), (0.9, 0, True, 5e-4),
    (0.5, 0, True, 0.3)])
def test_sgd_weight_decay_nesterov_dampening_match_torch(momentum, dampening, nesterov, weight_decay,
                                                         dtype):
    torch = pytest.importorskip("torch")
    kwargs = dict(lr=0.1, momentum=momentum, dampening=dampening, nesterov=nesterov,
                  weight_decay=weight_decay)
    rng = np.random.default_rng(3)
    start = [rng.standard_normal((4, 3)).astype(dtype)]
    ours = [nn.Parameter(start[0].copy())]
    theirs = [torch.nn.Parameter(torch.from_numpy(start[0].copy()))]
    opt, opt_t = optim.SGD(ours, **kwargs), torch.optim.SGD(theirs, **kwargs)
    for _ in range(8):
        g = rng.standard_normal(start[0].shape).astype(dtype)
        ours[0].grad, theirs[0].grad = g.copy(), torch.from_numpy(g.copy())
        opt.step()
        opt_t.step()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ours[0].data, theirs[0].detach().numpy(), **tol)
    if momentum:
        np.testing.assert_allclose(opt.state_dict()["state"][0]["momentum_buffer"],
                                   opt_t.state_dict()["state"][0]["momentum_buffer"].numpy(), **tol)


def test_nesterov_with_dampening_is_refused_as_torch_does():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9, dampening=0.1,
                        nesterov=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        optim.SGD([nn.Parameter(np.zeros(2))], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
