"""Identity and the branching containers: Residual (skip connections) and Concat.

Each composes its children's ``forward`` and ``backward``, so a model with skip connections
needs no hand-written gradient: :class:`Residual` sends the output gradient to both branches
and adds their input gradients, :class:`Concat` splits it by channels and adds theirs. Both
are Modules, so they nest in :class:`Sequential` (and each other) and their parameters get
torch-style dotted names ("1.main.0.weight").
"""
import numpy as np

from .layers import _cached
from .module import Module

__all__ = ["Identity", "Residual", "Concat"]


class Identity(Module):
    """Returns its input unchanged, like ``torch.nn.Identity`` (extra arguments ignored)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output if self.requires_input_grad else None


def _branch_backward(branch, grad_output, needs_input_grad):
    """``branch.backward`` with its input gradient asked for exactly when the container's is
    (a Sequential branch would otherwise skip it: its flag is False by default)."""
    branch.requires_input_grad = needs_input_grad
    return branch.backward(grad_output)


def _sum_grads(grads):
    grads = [g for g in grads if g is not None]
    if not grads:
        return None
    total = grads[0].copy() if len(grads) > 1 else grads[0]
    for g in grads[1:]:
        total += g
    return total


class Residual(Module):
    """``main(x) + shortcut(x)``: a skip connection (He et al. 2016).

    Parameters
    ----------
    main : Module
        The residual branch, e.g. ``Sequential(Conv2d, BatchNorm2d, ReLU, Conv2d, BatchNorm2d)``.
    shortcut : Module, optional
        The projection when shapes change (e.g. a 1x1 stride-2 Conv2d and a BatchNorm2d);
        None for the identity.

    Children are named ``main`` and ``shortcut``. ``backward`` runs both branches on the same
    gradient and returns the sum of their input gradients. Follow it with a ReLU for the
    classic block: ``Sequential(Residual(...), ReLU())``.
    """

    def __init__(self, main, shortcut=None):
        super().__init__()
        for name, branch in (("main", main), ("shortcut", shortcut)):
            if branch is not None and not isinstance(branch, Module):
                raise TypeError(f"Residual: {name} must be a Module, got {type(branch).__name__}")
        self.main = main
        self.shortcut = shortcut

    def forward(self, x):
        out = self.main(x)
        skip = x if self.shortcut is None else self.shortcut(x)
        if out.shape != skip.shape:
            raise ValueError(f"Residual: the main branch gives shape {out.shape} but the "
                             f"shortcut gives {skip.shape} for input of shape {x.shape}; give a "
                             f"shortcut that maps the input to the main branch's shape")
        return out + skip

    def backward(self, grad_output):
        needs = self.requires_input_grad
        grad_main = _branch_backward(self.main, grad_output, needs)
        if self.shortcut is None:
            grad_skip = grad_output if needs else None
        else:
            grad_skip = _branch_backward(self.shortcut, grad_output, needs)
        return _sum_grads([grad_main, grad_skip]) if needs else None


class Concat(Module):
    """Branch outputs concatenated along the channel axis (Inception, DenseNet).

    Parameters
    ----------
    *branches : Module
        Each maps the input to (N, C_i, H, W) with one N, H and W; named "0", "1", ...
    dim : int, default 1
        The axis concatenated along.

    ``backward`` gives each branch its slice of the gradient and returns the sum of their
    input gradients. ``Concat(Identity(), layer)`` is a DenseNet connection.
    """

    def __init__(self, *branches, dim=1):
        super().__init__()
        if not branches:
            raise ValueError("Concat needs at least one branch")
        for i, branch in enumerate(branches):
            if not isinstance(branch, Module):
                raise TypeError(f"Concat takes Modules, got {type(branch).__name__} as branch {i}")
            self._modules[str(i)] = branch
        self.dim = dim

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def forward(self, x):
        outputs = [branch(x) for branch in self._modules.values()]
        shapes = [o.shape for o in outputs]
        axis = self.dim % outputs[0].ndim
        rest = {s[:axis] + s[axis + 1:] for s in shapes}
        if len(rest) > 1 or len({len(s) for s in shapes}) > 1:
            raise ValueError(f"Concat: branch outputs must match in every dimension but {self.dim}, "
                             f"got shapes {', '.join(map(str, shapes))}")
        self._sizes = [s[axis] for s in shapes]
        return np.concatenate(outputs, axis=axis)

    def backward(self, grad_output):
        sizes = _cached(self, "_sizes")
        axis = self.dim % grad_output.ndim
        pieces = np.split(grad_output, np.cumsum(sizes)[:-1], axis=axis)
        needs = self.requires_input_grad
        grads = [_branch_backward(branch, np.ascontiguousarray(piece), needs)
                 for branch, piece in zip(self._modules.values(), pieces)]
        return _sum_grads(grads) if needs else None

    def extra_repr(self):
        return "" if self.dim == 1 else f"dim={self.dim}"
