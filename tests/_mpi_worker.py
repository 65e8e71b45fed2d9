"""One MPI rank of tests/test_distributed.py: ``mpiexec -n N python _mpi_worker.py MODE OUT_DIR``.

MODE "train": the trainings of :func:`train_cases` under MPI, plus the checks that need a
world (broadcast, sharding, mismatches); rank 0 saves what it found to OUT_DIR/result.npz.
MODE "raise": rank 1 raises, the others wait
in a collective.
"""
import sys

import numpy as np

import fastconv
from fastconv import nn, optim

GLOBAL_BATCH = 48  # 8 leaves of 6 images: 1, 2, 3 (3+3+2 leaves) and 4 ranks
SAMPLES = 120      # two full batches and a last one of 24 per epoch


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, 1, 12, 12)).astype(np.float32)
    return x, rng.integers(0, 10, SAMPLES)


def small_cnn(batchnorm):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), batchnorm(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 10))


def train(batchnorm, deterministic=True, epochs=2, checkpoint=None, resume=None):
    """The weights (flat) and History after fit from seed 0; on every rank."""
    fastconv.manual_seed(0)
    model = small_cnn(batchnorm)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if not deterministic:
        from fastconv import distributed
        optimizer = distributed.DistributedOptimizer(optimizer, deterministic=False)
    x, y = data()
    history = model.fit(x, y, loss=nn.CrossEntropyLoss(), optimizer=optimizer, epochs=epochs,
                        batch_size=GLOBAL_BATCH, verbose=2, checkpoint=checkpoint, resume=resume)
    weights = np.concatenate([p.data.ravel() for p in model.parameters()])
    buffers = np.concatenate([np.zeros(0)] + [b.ravel().astype(np.float64) for _, b in model.named_buffers()])
    return weights, buffers, np.array(history["loss"])


def train_cases():
    """name -> (weights, buffers, losses), also run in one process by the test."""
    return {"plain": train(_Identity), "sync": train(nn.SyncBatchNorm)}


class _Identity(nn.Module):
    def __init__(self, channels):
        super().__init__()

    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output


def _error(fn):
    try:
        fn()
    except ValueError as exc:
        return str(exc)
    return ""


def main(mode, out_dir):
    from fastconv import distributed
    distributed.init()
    rank = distributed.rank()
    if mode == "raise":
        if rank == 1:
            raise RuntimeError("rank 1 failed on purpose")
        distributed.barrier()  # the others would wait here for ever
        return
    results = {f"{name}_{part}": value for name, parts in train_cases().items()
               for part, value in zip(("weights", "buffers", "losses"), parts)}
    results["fast_weights"] = train(_Identity, deterministic=False)[0]
    train(_Identity, epochs=1, checkpoint=f"{out_dir}/epoch1.npz")  # rank 0 writes it
    # plain BatchNorm: per-rank statistics, but every rank ends with rank 0's running ones
    weights, buffers, _ = train(nn.BatchNorm2d, epochs=1)
    results["bn_ranks_equal"] = all(np.array_equal(w, weights) and np.array_equal(b, buffers)
                                    for w, b in distributed._world().allgather((weights, buffers)))

    # broadcast: every rank ends with rank 0's weights
    fastconv.manual_seed(rank)
    model = small_cnn(nn.BatchNorm2d)
    model[1].running_mean[...] = rank
    distributed.broadcast_parameters(model)
    flat = np.concatenate([p.data.ravel() for p in model.parameters()] + [model[1].running_mean])
    gathered = distributed._world().allgather(flat)
    results["broadcast_equal"] = all(np.array_equal(g, gathered[0]) for g in gathered)
    results["broadcast_rank0"] = gathered[0]

    # sharding: each epoch's shards of all ranks cover every sample once
    sampler = distributed.DistributedSampler(SAMPLES, GLOBAL_BATCH, seed=3)
    mine = np.concatenate(list(sampler))
    results["shards"] = np.concatenate(distributed._world().allgather(mine))

    # mismatches are refused on every rank with the same message
    bigger = small_cnn(nn.BatchNorm2d) if rank == 0 else nn.Sequential(nn.Linear(3, 4))
    results["model_error"] = _error(lambda: distributed.broadcast_parameters(bigger))
    x, y = data()
    results["batch_error"] = _error(lambda: model.fit(
        x, y, loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(model.parameters(), lr=0.1),
        batch_size=GLOBAL_BATCH + rank, verbose=0))
    errors = distributed._world().allgather((results["model_error"], results["batch_error"]))
    results["errors_everywhere"] = all(all(e) for pair in errors for e in pair)

    if rank == 0:
        np.savez(f"{out_dir}/result.npz", **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
