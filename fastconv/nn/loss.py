"""Losses: call with (output, target) for the loss, then ``.backward()`` for d loss / d output."""
import numpy as np

from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]


def _check_reduction(reduction):
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return reduction


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def __call__(self, input, target):
        return self.forward(input, target)

    def backward(self, grad_output=1.0):
        """d loss / d input of the last call, times ``grad_output`` (the loss's own gradient)."""
        grad = self.__dict__.get("_grad")
        if grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before the loss was computed")
        return grad if grad_output == 1.0 else grad * np.asarray(grad_output, grad.dtype)

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy between logits and class labels, like ``torch.nn.CrossEntropyLoss``.

    Parameters
    ----------
    reduction : {'mean', 'sum'}, default 'mean'

    Call with ``input`` logits (N, classes) and ``target`` integer labels (N,) in
    [0, classes); returns the loss as a NumPy scalar of the logits' dtype (``.item()`` gives a
    float). ``backward()`` then returns d loss / d logits (N, classes):
    ``(softmax(input) - one_hot(target)) / N`` for the mean.
    """

    def forward(self, input, target):
        input, target = np.asarray(input), np.asarray(target)
        if input.ndim != 2:
            raise ValueError(f"CrossEntropyLoss: expected input logits of shape (N, classes), got "
                             f"shape {input.shape}")
        if target.shape != input.shape[:1]:
            raise ValueError(f"CrossEntropyLoss: expected target of shape ({input.shape[0]},) for "
                             f"input of shape {input.shape}, got shape {target.shape}")
        if not np.issubdtype(input.dtype, np.floating):
            raise TypeError(f"CrossEntropyLoss: expected floating-point logits, got dtype "
                            f"{input.dtype}")
        if not np.issubdtype(target.dtype, np.integer):
            raise TypeError(f"CrossEntropyLoss: target must hold integer class labels, got dtype "
                            f"{target.dtype}")
        n, classes = input.shape
        if n and (target.min() < 0 or target.max() >= classes):
            raise ValueError(f"CrossEntropyLoss: target labels must be in [0, {classes}), got "
                             f"values in [{target.min()}, {target.max()}]")
        shifted = input - input.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        picked_log_prob = shifted[rows, target] - np.log(sum_exp[:, 0])
        divisor = max(n, 1) if self.reduction == "mean" else 1
        grad = exp / sum_exp
        grad[rows, target] -= 1
        grad /= np.asarray(divisor, grad.dtype)
        self._grad = grad
        loss = -picked_log_prob.sum()
        return _reduce(loss, n, self.reduction)


class MSELoss(_Loss):
    """Mean squared error, like ``torch.nn.MSELoss``.

    Parameters
    ----------
    reduction : {'mean', 'sum'}, default 'mean'

    Call with ``input`` and ``target`` of the same shape; returns the loss as a NumPy scalar;
    ``backward()`` then returns ``2 * (input - target) / input.size`` (for the mean).
    """

    def forward(self, input, target):
        input, target = np.asarray(input), np.asarray(target, dtype=np.asarray(input).dtype)
        if input.shape != target.shape:
            raise ValueError(f"MSELoss: input and target must have the same shape, got "
                             f"{input.shape} and {target.shape}")
        diff = input - target
        divisor = max(diff.size, 1) if self.reduction == "mean" else 1
        self._grad = diff * np.asarray(2.0 / divisor, diff.dtype)
        loss = np.square(diff).sum()
        return _reduce(loss, diff.size, self.reduction)


def _reduce(total, count, reduction):
    """The loss from the sum of ``count`` terms: the mean (NaN for none, as torch gives:
    an empty batch has no mean) or the sum itself."""
    if reduction != "mean":
        return total
    if count == 0:
        return np.asarray(np.nan, total.dtype)[()]
    return total / np.asarray(count, total.dtype)
