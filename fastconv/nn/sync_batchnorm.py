"""SyncBatchNorm: BatchNorm2d whose statistics are those of the global batch, over every rank."""
import sys

import numpy as np

from . import _leaves
from .layers import BatchNorm2d

__all__ = ["SyncBatchNorm"]


class SyncBatchNorm(BatchNorm2d):
    """Batch normalization of (N, C, H, W) with the mean and variance of the whole global
    batch, summed across the MPI ranks, like ``torch.nn.SyncBatchNorm``.

    Same parameters as :class:`BatchNorm2d`; without an MPI world (or on one rank) it
    normalizes like BatchNorm2d. The sums run over the same fixed tree of batch pieces as
    :meth:`fit`'s gradients, so the statistics, and the trained weights, are bitwise the
    same on any number of ranks. Costs two small collectives per forward and one per
    backward.
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

    def _statistics(self, x3):
        # float64 sums: the count rides along exactly, and E[(x - mean)^2] is a second pass
        c, length = x3.shape[1], x3.shape[2]
        sums = self._global_sum(lambda leaf: np.append(
            x3[leaf].sum(axis=(0, 2), dtype=np.float64), x3[leaf].shape[0] * length))
        count = int(sums[c])
        mean = sums[:c] / count
        squares = self._global_sum(lambda leaf: np.square(
            x3[leaf] - mean[:, None].astype(x3.dtype)).sum(axis=(0, 2), dtype=np.float64))
        self._count = count
        return mean.astype(x3.dtype), (squares / count).astype(x3.dtype), count

    def _grad_sums(self, g3, xhat, sum_g, sum_gx):
        c = g3.shape[1]
        sums = self._global_sum(lambda leaf: np.concatenate(
            [g3[leaf].sum(axis=(0, 2)), (g3[leaf] * xhat[leaf]).sum(axis=(0, 2))]))
        return sums[:c], sums[c:], self._count
