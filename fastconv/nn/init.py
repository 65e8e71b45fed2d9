"""Weight initialization, ``torch.nn.init``'s names and formulas.

Every function fills its argument in place (a :class:`~fastconv.nn.Parameter` or an ndarray)
and returns it. Random draws come from fastconv's generator (see :func:`fastconv.manual_seed`)
unless ``generator`` is given.
"""
import math

import numpy as np

from .. import _random
from .parameter import Parameter

__all__ = [
    "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
]


def _array(tensor):
    array = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(array, np.ndarray):
        raise TypeError(f"init expects a Parameter or an ndarray, got {type(tensor).__name__}")
    return array


def _fill_random(tensor, draw, generator):
    """Write ``draw(rng, shape)`` (float64 draws) into ``tensor``, cast to its dtype."""
    array = _array(tensor)
    rng = _random.generator() if generator is None else generator
    array[...] = draw(rng, array.shape)
    return tensor


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity (``torch.nn.init.calculate_gain``).

    Parameters
    ----------
    nonlinearity : str
        'linear', 'conv1d', 'conv2d', 'conv3d', 'conv_transpose1d/2d/3d', 'sigmoid', 'tanh',
        'relu', 'leaky_relu' or 'selu'.
    param : float, optional
        The negative slope of 'leaky_relu' (default 0.01).
    """
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d")
    if nonlinearity in linear or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _fans(array):
    """(fan_in, fan_out) of a weight (out, in, *kernel): torch's definition."""
    if array.ndim < 2:
        raise ValueError(f"fan in and fan out need an array with at least 2 dimensions, got shape "
                         f"{array.shape}")
    receptive = math.prod(array.shape[2:])
    return array.shape[1] * receptive, array.shape[0] * receptive


def _fan(array, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode {mode!r} not supported, please use one of 'fan_in', 'fan_out'")
    fan_in, fan_out = _fans(array)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with draws from U(a, b)."""
    return _fill_random(tensor, lambda rng, shape: rng.uniform(a, b, shape), generator)


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with draws from N(mean, std**2)."""
    return _fill_random(tensor, lambda rng, shape: rng.normal(mean, std, shape), generator)


def constant_(tensor, val):
    """Fill with ``val``."""
    _array(tensor)[...] = val
    return tensor


def zeros_(tensor):
    """Fill with 0."""
    return constant_(tensor, 0)


def ones_(tensor):
    """Fill with 1."""
    return constant_(tensor, 1)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot uniform: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(_array(tensor))
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot normal: N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(_array(tensor))
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He uniform: U(-b, b) with b = gain * sqrt(3 / fan), gain from ``nonlinearity`` and ``a``.

    torch's default Conv2d and Linear weights are ``kaiming_uniform_(w, a=math.sqrt(5))``,
    i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(_array(tensor), mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He normal: N(0, std**2) with std = gain / sqrt(fan)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(_array(tensor), mode))
    return normal_(tensor, 0.0, std, generator)


def _default_(weight, bias):
    """torch's default for Conv2d and Linear: weight and bias both U(-1/sqrt(fan_in), ...)."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(_fans(_array(weight))[0])
        uniform_(bias, -bound, bound)
