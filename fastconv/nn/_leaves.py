"""Gradients as one fixed summation tree over fixed pieces ("leaves") of the global batch.

A parameter's gradient over a batch is a sum over its images. Summed over the whole batch by
one kernel call, its rounding depends on how many images that call saw, so the same global
batch split over 1, 2 or 4 MPI ranks would give three different gradients. :func:`fit`
therefore cuts every global batch into at most :data:`LEAVES` leaves of one size (a function
of the batch size only), computes each parameter gradient leaf by leaf (the kernels then chunk
each leaf's images the same way whatever rank holds it), and adds the leaves up in one binary
tree fixed by the leaf count. A rank holds a contiguous run of leaves; it sums the whole
subtrees inside its run, and the ranks exchange those subtree sums and add the tree's top in
the same order. The result is bitwise the same on any number of ranks and threads.

This module needs no MPI: a single process is the world of one rank that holds every leaf.
"""
import contextlib

import numpy as np

__all__ = ["LEAVES", "leaf_bounds", "rank_leaves", "subtrees", "tree_sum", "LeafPlan", "active"]

# Leaves per global batch: at most this many ranks share one batch. Each leaf costs one more
# weight-gradient call per conv layer, so the count stays small.
LEAVES = 8

_active = None


def leaf_bounds(batch):
    """[(start, stop), ...] of the leaves of a global batch of ``batch`` images: equal
    leaves of ceil(batch / LEAVES) images, the last one possibly shorter."""
    size = -(-batch // LEAVES)
    return [(start, min(start + size, batch)) for start in range(0, batch, size)]


def rank_leaves(n_leaves, rank, world_size):
    """(first, stop) leaf indices of ``rank``'s contiguous run (as even as the count allows)."""
    return n_leaves * rank // world_size, n_leaves * (rank + 1) // world_size


def _mid(lo, hi):
    return lo + (hi - lo + 1) // 2


def subtrees(lo, hi, first, stop):
    """The largest subtrees of the tree over leaves [lo, hi) that lie inside [first, stop),
    left to right, as (lo, hi) pairs."""
    if stop <= lo or hi <= first:
        return []
    if first <= lo and hi <= stop:
        return [(lo, hi)]
    mid = _mid(lo, hi)
    return subtrees(lo, mid, first, stop) + subtrees(mid, hi, first, stop)


def tree_sum(lo, hi, value):
    """The tree's sum over leaves [lo, hi): ``value(lo, hi)`` where that returns an array
    (a leaf or an exchanged subtree), else the sum of the two halves, left + right."""
    known = value(lo, hi)
    if known is not None:
        return known
    mid = _mid(lo, hi)
    return tree_sum(lo, mid, value) + tree_sum(mid, hi, value)


class LeafPlan:
    """This rank's leaves of one global batch, and their per-leaf parameter gradients.

    Parameters
    ----------
    batch : int
        The global batch size.
    rank, world_size : int
        Which contiguous run of the leaves this process holds.

    Attributes
    ----------
    local : list of slice
        Each held leaf as a slice of this rank's images (its shard of the batch, in order).
    shard : slice
        This rank's images as a slice of the global batch.
    """

    def __init__(self, batch, rank=0, world_size=1):
        self.batch = batch
        bounds = leaf_bounds(batch)
        self.n_leaves = len(bounds)
        if world_size > self.n_leaves:
            raise ValueError(f"a global batch of {batch} images has {self.n_leaves} leaves, fewer "
                             f"than the {world_size} ranks: use a batch_size of at least "
                             f"{world_size} (or fewer ranks)")
        self.first, self.stop = rank_leaves(self.n_leaves, rank, world_size)
        start = bounds[self.first][0]
        self.shard = slice(start, bounds[self.stop - 1][1])
        self.local = [slice(a - start, b - start) for a, b in bounds[self.first:self.stop]]
        self.nodes = subtrees(0, self.n_leaves, self.first, self.stop)
        # exchange(sums) -> {(lo, hi): array} of every rank's subtree sums, given this rank's
        # (set by fastconv.distributed; None in a single process, which holds the whole tree)
        self.exchange = None
        self._grads = {}

    def add(self, param, parts):
        """Accumulate ``parts`` (one gradient per held leaf, in order) into ``param``."""
        held = self._grads.get(id(param))
        if held is None:
            self._grads[id(param)] = (param, list(parts))
        else:
            for mine, part in zip(held[1], parts):
                mine += part

    def leaf_parts(self, fn):
        """[fn(leaf slice) for each held leaf]: the per-leaf gradients of a layer."""
        return [fn(leaf) for leaf in self.local]

    def node_sums(self, parts):
        """The sums of this rank's subtrees (:attr:`nodes`) from its per-leaf ``parts``."""
        def leaf(lo, hi):
            return parts[lo - self.first] if hi - lo == 1 else None
        return [tree_sum(lo, hi, leaf) for lo, hi in self.nodes]

    def global_sum(self, parts):
        """The whole tree's sum over every rank's leaves, given this rank's per-leaf ``parts``
        (SyncBatchNorm's statistics)."""
        sums = self.node_sums(parts)
        known = dict(zip(self.nodes, sums)) if self.exchange is None else self.exchange(sums)
        return tree_sum(0, self.n_leaves, lambda lo, hi: known.get((lo, hi)))

    def finish(self):
        """{id(param): (param, [subtree sums])} of every parameter given gradients, then forget them."""
        grads, self._grads = self._grads, {}
        return {key: (param, self.node_sums(parts)) for key, (param, parts) in grads.items()}


def active():
    """The :class:`LeafPlan` of the step now running, or None (layers then sum as usual)."""
    return _active


@contextlib.contextmanager
def using(plan):
    """Make ``plan`` the active one while the block runs (the backward pass of a step)."""
    global _active
    previous, _active = _active, plan
    try:
        yield plan
    finally:
        _active = previous


def accumulate(param, whole, per_leaf):
    """Give ``param`` its gradient: ``whole()`` as usual, or, under an active plan,
    ``per_leaf(leaf slice)`` for each of the rank's leaves (slices of the batch axis)."""
    plan = _active
    if plan is None:
        param.accumulate_grad(whole())
    else:
        plan.add(param, plan.leaf_parts(per_leaf))
