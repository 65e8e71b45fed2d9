"""Softmax and LogSoftmax along one dimension, like torch's modules of those names."""
from .. import _backend
from .layers import _cached
from .module import Module

__all__ = ["Softmax", "LogSoftmax"]


class _SoftmaxBase(Module):
    _op = None

    def __init__(self, dim=None):
        super().__init__()
        if dim is None:  # torch's implicit choice is deprecated there; here it is an error
            raise TypeError(f"{type(self).__name__} needs dim, e.g. {type(self).__name__}(dim=1)")
        self.dim = dim

    def forward(self, x):
        self._output = getattr(_backend.ops(), self._op)(x, self.dim)
        return self._output

    def backward(self, grad_output):
        y = _cached(self, "_output")
        if not self.requires_input_grad:
            return None
        return getattr(_backend.ops(), self._op + "_backward")(grad_output, y, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    """``exp(x) / sum(exp(x))`` along ``dim``, like ``torch.nn.Softmax(dim)``."""

    _op = "softmax"


class LogSoftmax(_SoftmaxBase):
    """``log(softmax(x))`` along ``dim``, computed stably, like ``torch.nn.LogSoftmax(dim)``;
    followed by :class:`NLLLoss` it is :class:`CrossEntropyLoss`."""

    _op = "log_softmax"
