"""Losses: call with (output, target) for the loss, then ``.backward()`` for d loss / d output."""
import numpy as np

from .._softmax import cross_entropy_with_grad, nll
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss"]


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
    weight : array_like (classes,), optional
        A weight per class; the mean then divides by the summed weights of the targets.
    ignore_index : int, default -100
        Samples with this label add nothing to the loss, its divisor or the gradient.
    reduction : {'mean', 'sum'}, default 'mean'
    label_smoothing : float in [0, 1], default 0
        The target becomes ``(1 - e) * one_hot + e / classes`` (torch's definition).

    Call with ``input`` logits (N, classes) and ``target`` integer labels (N,) in
    [0, classes); returns the loss as a NumPy scalar of the logits' dtype (``.item()`` gives a
    float). ``backward()`` then returns d loss / d logits (N, classes):
    ``(softmax(input) - one_hot(target)) / N`` for the mean without smoothing or weights.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
        self.weight = None if weight is None else np.asarray(weight)
        self.ignore_index, self.label_smoothing = ignore_index, float(label_smoothing)

    def forward(self, input, target):
        input = np.asarray(input)
        if not np.issubdtype(input.dtype, np.floating):
            raise TypeError(f"CrossEntropyLoss: expected floating-point logits, got dtype "
                            f"{input.dtype}")
        loss, self._grad = cross_entropy_with_grad(
            input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing,
            name="CrossEntropyLoss")
        return loss

    def extra_repr(self):
        s = super().extra_repr()
        if self.label_smoothing:
            s += (", " if s else "") + f"label_smoothing={self.label_smoothing}"
        return s


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities, like ``torch.nn.NLLLoss``: pair it with
    :class:`LogSoftmax` (``dim=1``); the two together are :class:`CrossEntropyLoss`.

    Parameters
    ----------
    weight : array_like (classes,), optional
    ignore_index : int, default -100
    reduction : {'mean', 'sum'}, default 'mean'

    Call with ``input`` (N, classes) log-probabilities and ``target`` (N,) integer labels;
    ``backward()`` returns d loss / d input: ``-weight[target] / sum(weight[target])`` at
    each target, zero elsewhere.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        input = np.asarray(input)
        if not np.issubdtype(input.dtype, np.floating):
            raise TypeError(f"NLLLoss: expected floating-point log-probabilities, got dtype "
                            f"{input.dtype}")
        loss, self._grad = nll(input, target, self.weight, self.ignore_index, self.reduction,
                               name="NLLLoss")
        return loss


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
