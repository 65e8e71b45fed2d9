"""Adaptive pooling layers: a fixed output size whatever the input's, like torch's."""
from .. import _backend
from .layers import _cached, _IndexedPool
from .module import Module

__all__ = ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed (Ho, Wo), like ``torch.nn.AdaptiveAvgPool2d``.

    Parameters
    ----------
    output_size : int or (int or None, int or None)
        None keeps that input size. ``AdaptiveAvgPool2d(1)`` is global average pooling
        (the ResNet head).

    Shape: (N, C, H, W) -> (N, C, Ho, Wo); window (i, j) covers rows floor(i*H/Ho) ..
    ceil((i+1)*H/Ho) - 1 and the columns by the same rule.
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        self._input_shape = x.shape
        return _backend.ops().adaptive_avg_pool2d(x, self.output_size)

    def backward(self, grad_output):
        shape = _cached(self, "_input_shape")
        if not self.requires_input_grad:
            return None
        return _backend.ops().adaptive_avg_pool2d_backward(grad_output, shape)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(_IndexedPool):
    """Max pooling to a fixed (Ho, Wo), like ``torch.nn.AdaptiveMaxPool2d``; windows as
    :class:`AdaptiveAvgPool2d`. In train mode forward keeps the argmax indices for
    backward; in eval mode it does not (backward then raises).

    Parameters
    ----------
    output_size : int or (int or None, int or None)
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def _pool(self, ops, x, return_indices=False):
        return ops.adaptive_max_pool2d(x, self.output_size, return_indices=return_indices)

    @staticmethod
    def _pool_backward(ops, grad_output, indices, input_shape):
        return ops.adaptive_max_pool2d_backward(grad_output, indices, input_shape)

    def extra_repr(self):
        return f"output_size={self.output_size}"
