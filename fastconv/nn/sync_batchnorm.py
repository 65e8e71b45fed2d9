"""SyncBatchNorm: BatchNorm2d whose statistics are those of the global batch, over every rank."""
import sys

import numpy as np

from .. import _backend
from . import _leaves
from .layers import BatchNorm2d, _cached

__all__ = ["SyncBatchNorm"]


class SyncBatchNorm(BatchNorm2d):
    """Batch normalization of (N, C, H, W) with the mean and variance of the whole global
    batch, summed across the MPI ranks, like ``torch.nn.SyncBatchNorm``.

    Same parameters as :class:`BatchNorm2d`; without an MPI world (or on one rank) it
    normalizes like BatchNorm2d. The sums run over the same fixed tree of batch pieces as
    :meth:`fit`'s gradients, so the statistics, and the trained weights, are bitwise the
    same on any number of ranks. Costs two small collectives per forward and one per
    backward; eval mode with running statistics is BatchNorm2d's.
    """

    @staticmethod
    def _global_sum(per_leaf):
        """The sum over the global batch of ``per_leaf(slice of this rank's samples)``."""
        plan = _leaves.active()
        if plan is not None:  # under fit: per leaf, in the tree
            return plan.global_sum(plan.leaf_parts(per_leaf))
        whole = per_leaf(slice(None))
        distributed = sys.modules.get("fastconv.distributed")
        if distributed is None or not distributed.is_initialized() or distributed.world_size() == 1:
            return whole
        return distributed._world_plan().global_sum([whole])  # each rank's batch one leaf

    def forward(self, x):
        if not (self.training or not self.track_running_stats):
            return super().forward(x)
        self._check(x)
        x3 = x.reshape(x.shape[0], self.num_features, -1)
        c, length = x3.shape[1], x3.shape[2]
        # float64 sums: the count rides along exactly, and E[(x - mean)^2] is a second pass
        sums = self._global_sum(lambda leaf: np.append(
            x3[leaf].sum(axis=(0, 2), dtype=np.float64), x3[leaf].shape[0] * length))
        count = int(sums[c])
        if count < 2 and self.training:
            raise ValueError(f"SyncBatchNorm: expected more than 1 value per channel when training, "
                             f"got {count} over every rank")
        mean = sums[:c] / count
        var = self._global_sum(lambda leaf: np.square(x3[leaf] - mean[:, None]).sum(
            axis=(0, 2))) / count
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean[...] = (1 - m) * self.running_mean + m * mean
            self.running_var[...] = (1 - m) * self.running_var + m * var * (count / (count - 1))
        dtype = x.dtype
        save_mean, save_var = mean.astype(dtype), var.astype(dtype)
        out = _backend.ops().batch_norm(
            x, save_mean, save_var, self.weight.data if self.affine else None,
            self.bias.data if self.affine else None, training=False, eps=self.eps)
        invstd = (1 / np.sqrt(save_var.astype(np.float64) + self.eps)).astype(dtype)
        self._input, self._saved_stats, self._batch_stats = x, (save_mean, invstd), True
        self._count = count
        return out

    def backward(self, grad_output):
        if not self._batch_stats:
            return super().backward(grad_output)
        x = _cached(self, "_input")
        mean, invstd = self._saved_stats
        weight = self.weight.data if self.affine else None

        def sums(leaf):  # (sum of g, sum of g * xhat) per channel over a leaf
            _, gw, gb = _backend.ops().batch_norm_backward(
                grad_output[leaf], x[leaf], weight, save_mean=mean, save_invstd=invstd,
                training=True, eps=self.eps, input_grad=False)
            return np.concatenate([gb, gw])

        c = self.num_features
        plan = _leaves.active()
        parts = plan.leaf_parts(sums) if plan is not None else [sums(slice(None))]
        if self.affine:  # this rank's own sums: the optimizer adds the ranks up
            for param, half in ((self.bias, slice(0, c)), (self.weight, slice(c, None))):
                if param.requires_grad:
                    if plan is None:
                        param.accumulate_grad(parts[0][half].copy())
                    else:
                        plan.add(param, [p[half].copy() for p in parts])
        if not self.requires_input_grad:
            return None
        total = plan.global_sum(parts) if plan is not None else self._global_sum(lambda _: parts[0])
        sum_g, sum_gx = total[:c], total[c:]
        shape = (1, c) + (1,) * (x.ndim - 2)
        xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
        scale = invstd * (weight if weight is not None else 1)
        return ((grad_output - (sum_g / self._count).reshape(shape)
                 - xhat * (sum_gx / self._count).reshape(shape)) * scale.reshape(shape)).astype(x.dtype, copy=False)
