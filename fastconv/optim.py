"""Optimizers and learning-rate schedulers with torch's exact update rules.

``opt = SGD(model.parameters(), lr=0.1, momentum=0.9)``, then per batch ``opt.zero_grad()``,
``model.backward(...)``, ``opt.step()``. Parameters are updated in place, in their own dtype.
"""
import math
from collections import Counter

import numpy as np

from .nn.parameter import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR",
           "CosineAnnealingLR"]


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad``.

    Parameters
    ----------
    params : iterable of Parameter, or of dicts
        Parameters, or torch-style groups ``{"params": [...], "lr": ...}`` whose keys override
        ``defaults`` for that group.
    defaults : dict
        Hyperparameters of every group.

    Attributes
    ----------
    param_groups : list of dict
        Each with "params" and its hyperparameters (schedulers change "lr" here).
    state : dict
        Per-parameter state, keyed by Parameter: a dict of torch's names (SGD's
        "momentum_buffer"; Adam's "step", "exp_avg", "exp_avg_sq").
    """

    # The per-parameter state a subclass keeps: arrays shaped like the parameter, and integers.
    _state_arrays = ()
    _state_integers = ()
    # torch options fastconv does not implement, with the value that means "off": a torch
    # state_dict that turns one on is refused rather than silently run without it.
    _unsupported = {"maximize": False}

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        seen = set()
        for group in groups:
            group = dict(group)
            group["params"] = list(group["params"])
            for p in group["params"]:
                if not isinstance(p, Parameter):
                    raise TypeError(f"optimizer can only optimize Parameters, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError("some parameters appear in more than one parameter group")
                seen.add(id(p))
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Reset the gradients of every parameter: to None (torch's default) or to zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad[...] = 0

    def _with_grads(self, group):
        """The group's parameters that have a gradient to apply."""
        return [p for p in group["params"] if p.grad is not None and p.requires_grad]

    def step(self):
        raise NotImplementedError

    def state_dict(self):
        """The optimizer's state in torch's layout.

        Returns
        -------
        dict
            ``{"state": {index: {name: value}}, "param_groups": [{..., "params": [index, ...]}]}``,
            parameters numbered 0, 1, ... across the groups in order. State arrays are the
            optimizer's own (not copies), as torch returns its tensors.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        params = [p for group in self.param_groups for p in group["params"]]
        state = {index[id(p)]: dict(self.state[p]) for p in params if p in self.state}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a :meth:`state_dict`, fastconv's or torch's (tensors are read with ``np.asarray``).

        Hyperparameters come from the saved groups (torch's extra keys, e.g. "foreach", are
        kept); state arrays are copied and cast to each parameter's dtype. Everything is
        checked before anything changes: on error the optimizer is as it was.

        Raises
        ------
        ValueError
            A different number of groups or of parameters in a group, state that does not
            fit its parameter (unknown or missing names, shapes), or an option fastconv does
            not implement (e.g. ``maximize=True``).
        """
        name = type(self).__name__
        if not hasattr(state_dict, "keys") or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError(f"{name}.load_state_dict expects a dict with 'state' and 'param_groups'")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        by_index = {}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match "
                                 "the size of optimizer's group")
            for option, off in self._unsupported.items():
                if saved.get(option, off) != off:
                    raise ValueError(f"loaded state dict has {option}={saved[option]!r}, which "
                                     f"fastconv's {name} does not implement")
            by_index.update(zip((int(i) for i in saved["params"]), group["params"]))
            new_group = {**group, **{k: v for k, v in saved.items() if k != "params"}}
            for key, default in self.defaults.items():  # JSON gives lists for tuples (betas)
                if isinstance(default, tuple):
                    new_group[key] = tuple(new_group[key])
            new_groups.append(new_group)
        new_state = {}
        for index, saved in state_dict["state"].items():
            p = by_index.get(int(index))
            if p is None:
                raise ValueError(f"loaded state dict has state for parameter {index}, but "
                                 f"the optimizer has {len(by_index)} parameters")
            new_state[p] = self._checked_state(int(index), p, saved)
        for group, new_group in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new_group)
        self.state = new_state

    def _checked_state(self, index, p, saved):
        """One parameter's saved state as this optimizer keeps it, or ValueError."""
        names = set(self._state_arrays) | set(self._state_integers)
        saved = {key: value for key, value in saved.items()
                 if not (key == "momentum_buffer" and value is None)}  # torch's "no buffer yet"
        if saved and set(saved) != names:
            raise ValueError(f"state of parameter {index} has {sorted(saved)}, "
                             f"{type(self).__name__} keeps {sorted(names)}")
        state = {}
        for key, value in saved.items():
            value = np.asarray(value)
            if key in self._state_integers:
                if value.shape != () or value != int(value):
                    raise ValueError(f"state '{key}' of parameter {index} must be a whole number, "
                                     f"got {value!r}")
                state[key] = int(value)
            elif value.shape != p.shape or value.dtype.kind not in "biuf":
                raise ValueError(f"state '{key}' of parameter {index} has shape {value.shape} and "
                                 f"dtype {value.dtype}, the parameter {p.shape} and {p.dtype}")
            else:
                state[key] = np.array(value, dtype=p.dtype)
        return state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _check_nonnegative(name, value):
    if not 0.0 <= value:  # torch's test, which refuses NaN too
        raise ValueError(f"Invalid {name}: {value}")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, like ``torch.optim.SGD``.

    Per parameter, with g its gradient::

        g = g + weight_decay * p
        buf = g (first step), else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf          (when momentum != 0)
        p = p - lr * g
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        for name, value in (("learning rate", lr), ("momentum value", momentum),
                            ("weight_decay value", weight_decay)):
            _check_nonnegative(name, value)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    _state_arrays = ("momentum_buffer",)

    def step(self):
        """Update every parameter that has a gradient."""
        for group in self.param_groups:
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            weight_decay, nesterov = group["weight_decay"], group["nesterov"]
            for p in self._with_grads(group):
                d_p = p.grad
                if weight_decay != 0:
                    d_p = d_p + weight_decay * p.data
                if momentum != 0:
                    state = self.state.setdefault(p, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d_p.copy()
                    else:
                        buf *= momentum
                        buf += (1 - dampening) * d_p
                    d_p = d_p + momentum * buf if nesterov else buf
                p.data -= lr * d_p


class Adam(Optimizer):
    """Adam, like ``torch.optim.Adam`` (amsgrad off). Per parameter, at step t::

        g = g + weight_decay * p
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        _check_nonnegative("learning rate", lr)
        _check_nonnegative("epsilon value", eps)
        _check_nonnegative("weight_decay value", weight_decay)
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    _state_arrays = ("exp_avg", "exp_avg_sq")
    _state_integers = ("step",)
    _unsupported = {"maximize": False, "amsgrad": False, "decoupled_weight_decay": False}

    def step(self):
        """Update every parameter that has a gradient."""
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, weight_decay = group["eps"], group["weight_decay"]
            for p in self._with_grads(group):
                grad = p.grad
                if weight_decay != 0:
                    grad = grad + weight_decay * p.data
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {"step": 0, "exp_avg": np.zeros_like(p.data),
                                             "exp_avg_sq": np.zeros_like(p.data)}
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                m += (1 - beta1) * (grad - m)
                v *= beta2
                v += (1 - beta2) * grad * grad
                step_size = lr / (1 - beta1 ** t)
                denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps
                p.data += (-step_size * m) / denom


class LRScheduler:
    """Base class of the schedulers: ``step()`` once per epoch, after the optimizer's steps.

    Attributes
    ----------
    last_epoch : int
        How many times ``step`` was called (0 after construction, as in torch).

    ``state_dict()`` / ``load_state_dict()`` hold every attribute but the optimizer, under
    torch's names, so a torch scheduler's state loads into the fastconv one and back.
    """

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError("param 'initial_lr' is not specified in param_groups when resuming")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0  # steps taken, the one in the constructor included (torch's)
        self.step()

    def get_lr(self):
        """The learning rates for ``last_epoch``, from the current ones (torch's recursive form)."""
        raise NotImplementedError

    def step(self):
        """Advance one epoch and write the new learning rates into the optimizer."""
        self._step_count += 1
        self.last_epoch += 1
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs

    def get_last_lr(self):
        """The learning rates the last ``step`` set, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """Every attribute but the optimizer, as torch's ``LRScheduler.state_dict``."""
        return {key: (list(value) if isinstance(value, list) else value)
                for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        """Load a :meth:`state_dict`, fastconv's or torch's (torch's private bookkeeping that
        fastconv has no use for, such as "_is_initial", is ignored).

        Raises
        ------
        ValueError
            An attribute of this scheduler is missing; nothing is changed then.
        """
        own = self.state_dict()
        missing = [key for key in own if key not in state_dict]
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing {', '.join(missing)}")
        self.__dict__.update({key: self._loaded(key, state_dict[key]) for key in own})

    def _loaded(self, key, value):
        """A saved attribute as this scheduler keeps it (lists copied)."""
        return list(value) if isinstance(value, (list, tuple)) else value


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs, like
    ``torch.optim.lr_scheduler.StepLR``."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        decay = self.last_epoch != 0 and self.last_epoch % self.step_size == 0
        return [g["lr"] * self.gamma if decay else g["lr"] for g in self.optimizer.param_groups]


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at each epoch in ``milestones`` (by
    ``gamma ** k`` at one listed k times), like ``torch.optim.lr_scheduler.MultiStepLR``."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return [g["lr"] for g in self.optimizer.param_groups]
        return [g["lr"] * self.gamma ** self.milestones[self.last_epoch]
                for g in self.optimizer.param_groups]

    def _loaded(self, key, value):
        if key == "milestones":  # a Counter, or JSON's dict of strings from a checkpoint
            return Counter({int(epoch): int(count) for epoch, count in dict(value).items()})
        return super()._loaded(key, value)


class CosineAnnealingLR(LRScheduler):
    """Anneal the learning rate from its initial value to ``eta_min`` along half a cosine
    over ``T_max`` epochs (and back up over the next ``T_max``), like
    ``torch.optim.lr_scheduler.CosineAnnealingLR``, in torch's recursive form::

        lr_t = eta_min + (lr_{t-1} - eta_min) * (1 + cos(pi t / T_max)) / (1 + cos(pi (t-1) / T_max))
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self._step_count == 1:  # the constructor's step keeps the learning rates
            return [g["lr"] for g in groups]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [g["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, g in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max))
                / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
                * (g["lr"] - self.eta_min) + self.eta_min for g in groups]


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every epoch, like
    ``torch.optim.lr_scheduler.ExponentialLR``."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        decay = self.last_epoch != 0
        return [g["lr"] * self.gamma if decay else g["lr"] for g in self.optimizer.param_groups]
