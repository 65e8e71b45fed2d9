"""Kernels and models called at once from several Python threads give the serial results.

The kernels release the GIL, so Python threads really run them concurrently, each with its
own OpenMP team. Scratch memory is per Python thread (fastconv._workspace), and the BLAS
thread limit is set around each kernel call: both must hold up under concurrent callers.
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import threadpoolctl

import fastconv
import fastconv.optim
from fastconv import _workspace, nn
from fastconv import functional as F

from _isolated import child_env

THREADS = 4
REPEATS = 8


def _problems():
    """One job per Python thread, each on different shapes and ops: name -> callable."""
    rng = np.random.default_rng(0)

    def normal(*shape, dtype=np.float32):
        return rng.standard_normal(shape).astype(dtype)

    xa, wa = normal(6, 3, 13, 11), normal(5, 3, 3, 3)
    ga = normal(6, 5, 7, 6)
    xb, wb = normal(3, 8, 9, 9, dtype=np.float64), normal(8, 2, 5, 3, dtype=np.float64)
    gb = normal(3, 8, 9, 9, dtype=np.float64)
    xc = normal(4, 6, 17, 15)
    xd, wd = normal(5, 4, 8, 8), normal(4, 1, 3, 3)
    return {
        "conv-gemm": lambda: (F.conv2d(xa, wa, wa[:, 0, 0, 0].copy(), stride=2, padding=1),)
        + F.conv2d_backward(ga, xa, wa, stride=2, padding=1),
        "conv-grouped-f64": lambda: (F.conv2d(xb, wb, padding="same", groups=4),)
        + F.conv2d_backward(gb, xb, wb, padding="same", groups=4),
        "pool": lambda: _pools(xc),
        "depthwise-direct-and-im2col": lambda: (
            F.conv2d(xd, wd, padding=1, groups=4), F.im2col(xd, 3, padding=1),
            F.col2im(F.im2col(xd, 3, padding=1), (8, 8), 3, padding=1)),
    }


def _pools(x):
    out, ind = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    avg = F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    return (out, ind, F.max_pool2d_backward(out, ind, x.shape),
            avg, F.avg_pool2d_backward(avg, x.shape, 3, 2, 1, True, False))


def _run_concurrently(jobs):
    """Run every job REPEATS times, all jobs at once (one Python thread each); results per job."""
    barrier = threading.Barrier(len(jobs))
    results = {name: [] for name in jobs}
    errors = []

    def worker(name, job):
        try:
            barrier.wait()
            for _ in range(REPEATS):
                results[name].append(job())
        except BaseException as exc:  # reported below, not swallowed by the thread
            errors.append((name, exc))

    threads = [threading.Thread(target=worker, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors
    return results


def _assert_same(got, want):
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("omp_threads", [1, 2])
def test_kernels_from_several_python_threads_match_serial_calls(omp_threads):
    jobs = _problems()
    with fastconv.threads(omp_threads):
        serial = {name: job() for name, job in jobs.items()}

    def pinned(job):
        def run():
            with fastconv.threads(omp_threads):  # the override is per Python thread
                return job()
        return run

    concurrent = _run_concurrently({name: pinned(job) for name, job in jobs.items()})
    for name, runs in concurrent.items():
        for result in runs:
            _assert_same(result, serial[name])


def test_concurrent_calls_restore_the_blas_thread_limit():
    """Overlapping ``blas_single_threaded`` regions must leave BLAS as they found it."""
    blas = [m for m in threadpoolctl.threadpool_info() if m["user_api"] == "blas"]
    assert blas, "numpy and scipy load a BLAS"
    before = [m["num_threads"] for m in blas]
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        limited = [m["num_threads"] for m in threadpoolctl.threadpool_info()
                   if m["user_api"] == "blas"]
        _run_concurrently({name: job for name, job in _problems().items()})
        after = [m["num_threads"] for m in threadpoolctl.threadpool_info()
                 if m["user_api"] == "blas"]
        assert after == limited
    assert [m["num_threads"] for m in threadpoolctl.threadpool_info()
            if m["user_api"] == "blas"] == before


def _lenet_trainer(seed):
    """A LeNet, data and optimizer built now (the seeded generator is global); the returned
    job takes one training step and returns the logits and the new weights."""
    fastconv.manual_seed(seed)
    model = nn.lenet()
    rng = np.random.default_rng(seed)
    x = rng.random((16, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=16)
    loss_fn = nn.CrossEntropyLoss()
    opt = fastconv.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step():
        logits = model(x)
        loss_fn(logits, y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        return (logits,) + tuple(p.data.copy() for p in model.parameters())
    return step


def test_models_trained_in_several_python_threads_match_serial_training():
    serial = {seed: [] for seed in range(THREADS)}
    for seed in serial:
        step = _lenet_trainer(seed)
        serial[seed] = [step() for _ in range(REPEATS)]
    jobs = {seed: _lenet_trainer(seed) for seed in range(THREADS)}
    for seed, runs in _run_concurrently(jobs).items():
        for got, want in zip(runs, serial[seed], strict=True):
            _assert_same(got, want)


def test_one_model_predicts_from_several_python_threads():
    fastconv.manual_seed(5)
    model = nn.lenet().eval()
    batches = [np.random.default_rng(i).random((8 + i, 1, 28, 28), dtype=np.float32)
               for i in range(THREADS)]
    serial = [model(x) for x in batches]
    jobs = {f"batch-{i}": (lambda x=x: (model(x),)) for i, x in enumerate(batches)}
    for i, (name, runs) in enumerate(_run_concurrently(jobs).items()):
        for (logits,) in runs:
            np.testing.assert_array_equal(logits, serial[i])


def test_scratch_buffers_are_per_thread():
    """Two threads asking for scratch at once get different memory."""
    barrier = threading.Barrier(2)
    seen = []

    def take():
        buf = _workspace.scratch(1000, np.float64)
        barrier.wait()
        seen.append((buf.ctypes.data, buf.nbytes))
        barrier.wait()  # both alive while the other looks

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a, n), (b, _) = seen
    assert a + n <= b or b + n <= a


_FORK = textwrap.dedent(r"""
    import os, sys, time
    import numpy as np
    import fastconv
    from fastconv import functional as F
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)

    def work():
        out = F.conv2d(x, w, padding=1)
        return (out, F.max_pool2d(out, 2), *F.conv2d_backward(out, x, w, padding=1))

    with fastconv.threads(2):
        expected = work()  # the parent's OpenMP team now exists
    pid = os.fork()
    if pid == 0:
        with fastconv.threads(2):
            same = all(np.array_equal(a, b) for a, b in zip(work(), expected))
        os._exit(0 if same and fastconv.get_num_threads() == 1 else 3)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            sys.exit(os.waitstatus_to_exitcode(status))
        time.sleep(0.05)
    os.kill(pid, 9)
    sys.exit("the forked child hung")
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kernels_run_in_a_child_forked_after_multithreaded_calls():
    """GNU libgomp's team does not survive fork: a forked child used to hang in its first
    multi-threaded kernel. It now runs single-threaded, with the same results."""
    proc = subprocess.run([sys.executable, "-c", _FORK], capture_output=True, text=True,
                          env=child_env(), timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])


def test_nested_blas_single_threaded_regions_restore_on_the_outermost_exit():
    # a model's forward holds one region around its layers; theirs, inside it, change nothing
    from fastconv._threads import blas_single_threaded

    def counts():
        return [m["num_threads"] for m in threadpoolctl.threadpool_info()
                if m["user_api"] == "blas" and "openblas64_" not in (m["filepath"] or "")]

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        limited = counts()
        assert limited and all(n == 2 for n in limited)
        with blas_single_threaded():
            assert all(n == 1 for n in counts())
            with blas_single_threaded():
                assert all(n == 1 for n in counts())
            assert all(n == 1 for n in counts())  # the inner exit restores nothing
            model = nn.lenet()
            model.eval()
            model(np.zeros((2, 1, 28, 28), np.float32))
            assert all(n == 1 for n in counts())
        assert counts() == limited
        model(np.zeros((2, 1, 28, 28), np.float32))  # its own outermost region
        assert counts() == limited
