"""Softmax, log-softmax and the log-likelihood losses written out sample by sample: the ground
truth for :mod:`fastconv._softmax` (same names, signatures and checks)."""
import numpy as np

from .. import _softmax as S

__all__ = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "nll_loss",
           "cross_entropy"]


def _slices(x, dim):
    """Yield index tuples selecting each 1-D slice of ``x`` along ``dim``."""
    axis = S._axis(x, dim)
    other = x.shape[:axis] + x.shape[axis + 1:]
    for idx in np.ndindex(other):
        yield idx[:axis] + (slice(None),) + idx[axis:]


def softmax(x, dim):
    S.softmax(x, dim)  # the same checks
    out = np.empty_like(x)
    for s in _slices(x, dim):
        e = np.exp(x[s] - x[s].max())
        out[s] = e / e.sum()
    return out


def log_softmax(x, dim):
    S.log_softmax(x, dim)
    out = np.empty_like(x)
    for s in _slices(x, dim):
        m = x[s].max()
        out[s] = x[s] - m - np.log(np.exp(x[s] - m).sum())
    return out


def softmax_backward(grad_output, output, dim):
    """Row by row, the Jacobian diag(y) - y y^T applied to the gradient."""
    S._backward_args(grad_output, output, dim)
    grad = np.empty_like(output)
    for s in _slices(output, dim):
        y = output[s]
        grad[s] = (np.diag(y) - np.outer(y, y)) @ grad_output[s]
    return grad


def log_softmax_backward(grad_output, output, dim):
    """Row by row, the Jacobian I - 1 softmax^T applied to the gradient."""
    S._backward_args(grad_output, output, dim)
    grad = np.empty_like(output)
    for s in _slices(output, dim):
        p = np.exp(output[s])
        grad[s] = (np.eye(len(p)) - p[None, :]).T @ grad_output[s]
    return grad


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    S._check_reduction(reduction)
    target, valid, weight = S._target_args(input, target, weight, ignore_index, "nll_loss")
    losses, weights = [], []
    for n in range(len(target)):
        w = 0.0 if not valid[n] else (1.0 if weight is None else weight[target[n]])
        losses.append(0.0 if not valid[n] else -w * input[n, target[n]])
        weights.append(w)
    losses = np.array(losses, input.dtype)
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / np.array(weights, input.dtype).sum()).astype(input.dtype)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Each sample's loss against its smoothed target distribution, then reduced."""
    S._check_reduction(reduction)
    target, valid, weight = S._target_args(input, target, weight, ignore_index, "cross_entropy")
    logp = log_softmax(input, 1)
    n, classes = input.shape
    w_class = np.ones(classes) if weight is None else weight.astype(np.float64)
    e = label_smoothing
    losses, divisor = np.zeros(n), 0.0
    for i in range(n):
        if not valid[i]:
            continue
        nll = -w_class[target[i]] * logp[i, target[i]]
        smooth = -(w_class * logp[i]).sum()
        losses[i] = (1 - e) * nll + e / classes * smooth
        divisor += w_class[target[i]]
    if reduction == "none":
        return losses.astype(input.dtype)
    total = losses.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total if reduction == "sum" else total / divisor, input.dtype)[()]
