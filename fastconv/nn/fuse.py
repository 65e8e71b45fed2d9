"""Inference fusion: fold each eval-mode BatchNorm into the convolution before it.

In eval mode a BatchNorm is a per-channel affine map, ``y = (x - mean) * s + beta`` with
``s = gamma / sqrt(running_var + eps)``. After a convolution ``x = W * input + b`` it folds
into that convolution: ``W' = W * s`` (per output channel) and ``b' = (b - mean) * s + beta``,
and the BatchNorm becomes an :class:`Identity`: one pass over the activations fewer per
pair, the same outputs up to rounding.
"""
import copy

import numpy as np

from .containers import Identity
from .layers import BatchNorm2d, Conv2d
from .parameter import Parameter
from .sequential import Sequential

__all__ = ["fuse"]


def fuse(model, inplace=False):
    """A copy of the eval-mode ``model`` with every BatchNorm2d folded into its convolution.

    The pairs found: a :class:`Conv2d` directly followed by a :class:`BatchNorm2d` of as many
    channels in a :class:`Sequential` (at any depth: inside Residual, Concat or any Module's
    children), and the pairs a Module names in its ``fuse_pairs`` attribute, a sequence of
    ``(conv_name, batchnorm_name)`` child names whose output flows from one straight into
    the other in its ``forward`` (:class:`fastconv.nn.models.BasicBlock` declares
    ``(("conv1", "bn1"), ("conv2", "bn2"))``). A BatchNorm without running statistics
    (``track_running_stats=False``) normalizes by the batch even in eval mode and is left
    alone.

    Parameters
    ----------
    model : Module
        In eval mode (``model.eval()``).
    inplace : bool, default False
        Fold into ``model`` itself instead of a deep copy.

    Returns
    -------
    Module
        The fused model (eval mode): each folded BatchNorm replaced by an Identity, its
        convolution given the folded weight and a bias. Its outputs match ``model``'s to the
        dtype's rounding; its state_dict lacks the folded BatchNorms' keys.

    Raises
    ------
    ValueError
        ``model`` (or a module inside it) is in train mode: training BatchNorm uses the
        batch's statistics, which cannot be folded.
    """
    training = [name or type(model).__name__ for name, m in _named_modules(model) if m.training]
    if training:
        raise ValueError(f"fuse needs a model in eval mode (call model.eval() first); in train "
                         f"mode: {', '.join(training[:3])}{' ...' if len(training) > 3 else ''}")
    fused = model if inplace else copy.deepcopy(model)
    _fuse_children(fused)
    return fused


def _named_modules(module, prefix=""):
    yield prefix, module
    for name, child in module._modules.items():
        if child is not None:
            yield from _named_modules(child, f"{prefix}.{name}" if prefix else name)


def _pairs(module):
    """(conv_name, bn_name) of the children of ``module`` whose output flows conv -> bn."""
    children = module._modules
    if isinstance(module, Sequential):
        names = list(children)
        return [(a, b) for a, b in zip(names, names[1:])
                if isinstance(children[a], Conv2d) and isinstance(children[b], BatchNorm2d)]
    return [(a, b) for a, b in getattr(module, "fuse_pairs", ())
            if isinstance(children.get(a), Conv2d) and isinstance(children.get(b), BatchNorm2d)]


def _fuse_children(module):
    for conv_name, bn_name in _pairs(module):
        children = module._modules
        if _fold(children[conv_name], children[bn_name]):
            identity = Identity()
            identity.eval()
            children[bn_name] = identity  # in place: the children keep their order
    for child in module._modules.values():
        if child is not None:
            _fuse_children(child)


def _fold(conv, bn):
    """Fold ``bn`` into ``conv``'s weight and bias (float64 arithmetic); False if it cannot be."""
    if not bn.track_running_stats or bn.num_features != conv.out_channels:
        return False
    dtype = conv.weight.data.dtype
    scale = 1 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    shift = -bn.running_mean.astype(np.float64) * scale
    if bn.affine:
        gamma = bn.weight.data.astype(np.float64)
        scale, shift = scale * gamma, shift * gamma + bn.bias.data.astype(np.float64)
    weight = conv.weight.data.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias.data.astype(np.float64) * scale + shift
    conv.weight.data[...] = weight.astype(dtype)
    if conv.bias is None:
        conv.bias = Parameter(bias.astype(dtype))
    else:
        conv.bias.data[...] = bias.astype(dtype)
    return True
