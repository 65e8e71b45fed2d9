"""How :func:`fit` runs a training step: in this process, or over MPI (:mod:`fastconv.distributed`).

Either way a step computes the gradient of the global batch as the fixed tree of leaves of
:mod:`fastconv.nn._leaves`, so one process and any number of ranks give the same bits.
"""
import os
import sys

import numpy as np

from .. import _random
from . import _leaves

# Set to the world size by the launchers (Open MPI's mpiexec, MPICH/Intel hydra, Slurm's srun).
_LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS")


def _launched_by_mpi():
    for name in _LAUNCHER_SIZE_VARIABLES:
        try:
            if int(os.environ.get(name, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


def for_fit(model, optimizer, loss):
    """The strategy of one fit: over MPI when a world is initialized or when this process
    was started by mpiexec or srun with more than one rank, else in this process."""
    distributed = sys.modules.get("fastconv.distributed")
    if (distributed is not None and distributed.is_initialized()) or _launched_by_mpi():
        from .. import distributed
        distributed.init()
        return MPIStrategy(distributed, model, optimizer, loss)
    return LocalStrategy(model, optimizer, loss)


def scaled_loss(loss, out, target, batch):
    """(loss value, d loss / d out) of this rank's ``out`` as its share of a global batch of
    ``batch`` samples: a mean loss is divided by the global count, not the rank's."""
    from .loss import CrossEntropyLoss, MSELoss  # not at the top: loss -> module -> fit -> here
    if isinstance(loss, (CrossEntropyLoss, MSELoss)) and loss.reduction == "mean":
        loss.reduction = "sum"
        try:
            total = loss(out, target)
            grad = loss.backward()
        finally:
            loss.reduction = "mean"
        per_sample = 1 if isinstance(loss, CrossEntropyLoss) else out[0].size
        grad /= np.asarray(batch * per_sample, grad.dtype)  # CrossEntropyLoss's own division
        return float(total) / (per_sample * max(len(out), 1)), grad
    value = loss(out, target)
    grad = loss.backward()
    if len(out) != batch:  # any other loss is taken to be a mean over the samples
        grad = grad * np.asarray(len(out) / batch, grad.dtype)
    return float(value), grad


class LocalStrategy:
    """One process holding every leaf of each global batch."""

    rank, world_size, is_root, deterministic = 0, 1, True, True

    def __init__(self, model, optimizer, loss):
        self.model, self.optimizer, self.loss = model, optimizer, loss

    def check(self, **settings):
        """Refuse settings that differ between ranks (nothing to compare in one process)."""

    def order(self, n):
        """This epoch's shuffled order of the n samples."""
        return _random.generator().permutation(n)

    def _plan(self, batch):
        return _leaves.LeafPlan(batch, self.rank, self.world_size)

    def step(self, x, y, index, transform=None):
        """One step on the global batch ``x[index]``: this rank's shard of it forward and
        backward, the gradients reduced, the optimizer stepped. Returns (x shard, y shard,
        output, mean loss of the shard)."""
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(x))
            plan = self._plan(stop - start)
            shard = slice(start + plan.shard.start, start + plan.shard.stop)
        else:
            plan = self._plan(len(index))
            shard = index[plan.shard]
        if transform is None:
            xb, yb = x[shard], y[shard]
        else:  # the whole batch on every rank: the random draws stay those of one process
            xb, yb = transform(x[index])[plan.shard], y[shard]
        with _leaves.using(plan if self.deterministic else None):
            out = self.model(xb)
            value, grad = scaled_loss(self.loss, out, yb, plan.batch)
            self.optimizer.zero_grad()
            self.model.backward(grad)
        self._reduce(plan)
        return xb, yb, out, value

    def _reduce(self, plan):
        for param, sums in plan.finish().values():
            param.accumulate_grad(sums[0])  # the tree's root: this process holds every leaf
        self.optimizer.step()

    def end_epoch(self, *totals):
        """The epoch's totals (loss sum, correct, seen) summed over the ranks, once every rank
        holds rank 0's buffers (BatchNorm's running statistics are per rank, as in torch DDP)."""
        return totals


class MPIStrategy(LocalStrategy):
    """fit over MPI: this rank's shard of each global batch; gradients and metrics summed."""

    def __init__(self, distributed, model, optimizer, loss):
        if not isinstance(optimizer, distributed.DistributedOptimizer):
            optimizer = distributed.DistributedOptimizer(optimizer)
        super().__init__(model, optimizer, loss)
        self.mpi = distributed
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_root, self.deterministic = self.rank == 0, optimizer.deterministic
        distributed.broadcast_parameters(model)

    def check(self, **settings):
        self.mpi._agree("fit", **settings)

    def order(self, n):
        order = super().order(n)  # drawn on every rank: their generators stay in step
        self.mpi._world().Bcast(order, root=0)
        return order

    def _plan(self, batch):
        plan = super()._plan(batch)
        plan.exchange = lambda sums: self.mpi._exchange(plan, sums)
        return plan

    def _reduce(self, plan):
        if self.deterministic:
            self.optimizer._reduce_plan(plan)
        else:
            self.optimizer._views_in_place()
            self.optimizer._sum_ranks()
        self.optimizer.optimizer.step()

    def end_epoch(self, total_loss, correct, seen):
        self.mpi._broadcast_arrays([b for _, b in self.model.named_buffers()])
        gathered = self.mpi._world().allgather((total_loss, correct, seen))
        loss = sum(g[0] for g in gathered)
        correct = None if any(g[1] is None for g in gathered) else sum(g[1] for g in gathered)
        return loss, correct, sum(g[2] for g in gathered)
