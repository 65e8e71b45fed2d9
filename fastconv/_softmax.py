"""Softmax, log-softmax and the log-likelihood losses, like torch's functional forms.

Memory-bound elementwise work, so vectorized NumPy: one max, one exp, one sum per call.
:func:`nll` and :func:`cross_entropy_with_grad` also return d loss / d input, which the loss
modules hand to ``backward``.
"""
import numpy as np

from . import _validation as V

__all__ = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "nll_loss",
           "cross_entropy"]


def _axis(x, dim):
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"dim must be an int, got {type(dim).__name__} {dim!r}")
    size = max(x.ndim, 1)
    if not -size <= dim < size:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-size}, "
                         f"{size - 1}], but got {dim})")
    return int(dim) % size


def softmax(x, dim):
    """``exp(x) / sum(exp(x))`` along ``dim``, like ``torch.nn.functional.softmax``.

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape
    dim : int

    Returns
    -------
    ndarray, x's shape and dtype; each slice along ``dim`` sums to 1
    """
    V.check_array(x, "input")
    axis = _axis(x, dim)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def log_softmax(x, dim):
    """``x - log(sum(exp(x)))`` along ``dim``, like ``torch.nn.functional.log_softmax``;
    shifted by the maximum first, so large logits do not overflow."""
    V.check_array(x, "input")
    axis = _axis(x, dim)
    shifted = x - x.max(axis=axis, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


def _backward_args(grad_output, output, dim):
    V.check_array(grad_output, "grad_output")
    V.check_array(output, "output")
    V.same_dtype(grad_output=grad_output, output=output)
    if grad_output.shape != output.shape:
        raise ValueError(f"expected grad_output of shape {output.shape}, got grad_output of "
                         f"shape {grad_output.shape}")
    return _axis(output, dim)


def softmax_backward(grad_output, output, dim):
    """Gradient of :func:`softmax` from its ``output`` y: ``y * (g - sum(g * y))``."""
    axis = _backward_args(grad_output, output, dim)
    return output * (grad_output - (grad_output * output).sum(axis=axis, keepdims=True))


def log_softmax_backward(grad_output, output, dim):
    """Gradient of :func:`log_softmax` from its ``output``: ``g - exp(output) * sum(g)``."""
    axis = _backward_args(grad_output, output, dim)
    return grad_output - np.exp(output) * grad_output.sum(axis=axis, keepdims=True)


def _check_reduction(reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _target_args(input, target, weight, ignore_index, name):
    """Check (N, C) scores, (N,) integer targets and an optional (C,) weight."""
    V.check_array(input, "input")
    if input.ndim != 2:
        raise ValueError(f"{name}: expected input of shape (N, classes), got shape {input.shape}")
    target = np.asarray(target)
    if target.shape != input.shape[:1]:
        raise ValueError(f"{name}: expected target of shape ({input.shape[0]},) for input of "
                         f"shape {input.shape}, got shape {target.shape}")
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"{name}: target must hold integer class labels, got dtype {target.dtype}")
    n, classes = input.shape
    valid = target != ignore_index
    labels = target[valid]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{name}: target labels must be in [0, {classes}) (or ignore_index "
                         f"{ignore_index}), got values in [{labels.min()}, {labels.max()}]")
    if weight is not None:
        weight = np.asarray(weight)
        if weight.shape != (classes,):
            raise ValueError(f"{name}: expected weight of shape ({classes},), got shape {weight.shape}")
        weight = weight.astype(input.dtype, copy=False)
    return target, valid, weight


def _reduce(per_sample, sample_weight, reduction, dtype):
    """The loss and the factor each sample's gradient is scaled by."""
    if reduction == "none":
        return per_sample, np.asarray(1, dtype)
    total = per_sample.sum(dtype=dtype)
    if reduction == "sum":
        return total, np.asarray(1, dtype)
    divisor = sample_weight.sum(dtype=dtype)
    # An empty (or wholly ignored) batch has no mean: NaN, as torch gives.
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / divisor, np.asarray(1, dtype) / divisor


def nll(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
        name="nll_loss"):
    """``(loss, grad_input)`` of the negative log-likelihood of log-probabilities ``input``.

    With ``label_smoothing`` e the loss is ``(1 - e) * nll + e / C * smooth`` where smooth is
    ``-sum_c weight_c * input[n, c]`` per sample (torch's definition), reduced like nll.
    """
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    target, valid, weight = _target_args(input, target, weight, ignore_index, name)
    n, classes = input.shape
    dtype = input.dtype
    rows = np.arange(n)
    safe_target = np.where(valid, target, 0)
    class_weight = np.ones(classes, dtype) if weight is None else weight
    sample_weight = np.where(valid, class_weight[safe_target], 0).astype(dtype)
    picked = input[rows, safe_target]
    per_sample = -picked * sample_weight
    grad = np.zeros_like(input)
    grad[rows, safe_target] = -sample_weight
    if label_smoothing:
        e = np.asarray(label_smoothing, dtype)
        smooth = -(input * class_weight).sum(axis=1) * valid
        per_sample = (1 - e) * per_sample + (e / classes) * smooth
        grad *= 1 - e
        grad -= (e / classes) * class_weight[None, :] * valid[:, None].astype(dtype)
    loss, scale = _reduce(per_sample, sample_weight, reduction, dtype)
    grad *= scale if reduction != "none" else 1
    return loss, grad


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood, like ``torch.nn.functional.nll_loss``.

    Parameters
    ----------
    input : ndarray (N, C), float32 or float64
        Log-probabilities (e.g. from :func:`log_softmax`).
    target : integer ndarray (N,)
        Class labels in [0, C), or ``ignore_index``.
    weight : ndarray (C,), optional
        A weight per class; 'mean' divides by the summed weights of the targets.
    ignore_index : int, default -100
        Samples with this target add nothing to the loss or its divisor.
    reduction : {'mean', 'sum', 'none'}, default 'mean'

    Returns
    -------
    loss : input's dtype scalar, or (N,) for 'none'
    """
    return nll(input, target, weight, ignore_index, reduction)[0]


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Cross-entropy of logits and class labels, like ``torch.nn.functional.cross_entropy``:
    :func:`nll_loss` of :func:`log_softmax` (``input``, 1), with optional label smoothing.

    Returns
    -------
    loss : input's dtype scalar, or (N,) for 'none'
    """
    return cross_entropy_with_grad(input, target, weight, ignore_index, reduction,
                                   label_smoothing)[0]


def cross_entropy_with_grad(input, target, weight=None, ignore_index=-100, reduction="mean",
                            label_smoothing=0.0, name="cross_entropy"):
    """``(loss, d loss / d input)`` of :func:`cross_entropy` (the gradient for a loss of 1
    per sample when ``reduction`` is 'none')."""
    V.check_array(input, "input")
    if input.ndim != 2:
        raise ValueError(f"{name}: expected input logits of shape (N, classes), got shape {input.shape}")
    log_prob = log_softmax(input, 1)
    loss, grad_log_prob = nll(log_prob, target, weight, ignore_index, reduction, label_smoothing, name)
    return loss, log_softmax_backward(grad_log_prob, log_prob, 1)
