"""Softmax and LogSoftmax along one dimension, like torch's modules of those names."""
from .layers import _Activation

__all__ = ["Softmax", "LogSoftmax"]


class _SoftmaxBase(_Activation):
    """An activation along one dimension: the op and its derivative take ``dim``."""

    def __init__(self, dim=None):
        super().__init__()
        if dim is None:  # torch's implicit choice is deprecated there; here it is an error
            raise TypeError(f"{type(self).__name__} needs dim, e.g. {type(self).__name__}(dim=1)")
        self.dim = dim

    def _arguments(self):
        return {"dim": self.dim}

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    """``exp(x) / sum(exp(x))`` along ``dim``, like ``torch.nn.Softmax(dim)``."""

    op = "softmax"


class LogSoftmax(_SoftmaxBase):
    """``log(softmax(x))`` along ``dim``, computed stably, like ``torch.nn.LogSoftmax(dim)``;
    followed by :class:`NLLLoss` it is :class:`CrossEntropyLoss`."""

    op = "log_softmax"
