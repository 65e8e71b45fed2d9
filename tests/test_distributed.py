"""fastconv.distributed: mpiexec runs of tests/_mpi_worker.py, launched as subprocesses and
compared with the same trainings in this (single) process."""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import fastconv
from fastconv import nn
from fastconv.nn import _leaves

from _isolated import TESTS_DIR, child_env

WORKER = str(TESTS_DIR / "_mpi_worker.py")


def _mpiexec():
    pytest.importorskip("mpi4py")
    found = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    assert found, "mpi4py is installed but mpiexec is not on PATH (pip install 'fastconv[mpi]')"
    return found


def _launch(n, mode, out_dir, timeout=120):
    # root in containers needs Open MPI's consent; --oversubscribe: more ranks than cores
    env = child_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                    OMPI_MCA_rmaps_base_oversubscribe="1")
    env.pop("OMP_NUM_THREADS", None)
    start = time.perf_counter()
    proc = subprocess.run([_mpiexec(), "-n", str(n), "--oversubscribe", sys.executable, WORKER,
                           mode, str(out_dir)], capture_output=True, text=True, env=env,
                          timeout=timeout)
    return proc, time.perf_counter() - start


@pytest.fixture(scope="module")
def single_process():
    """The worker's trainings in this process (no MPI), on 1 and on 2 threads."""
    import _mpi_worker
    runs = {}
    for threads in (1, 2):
        with fastconv.threads(threads):
            runs[threads] = _mpi_worker.train_cases()
    return runs


@pytest.fixture(scope="module", params=[2, 3])
def world(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"mpi{request.param}")
    proc, _ = _launch(request.param, "train", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(out / "result.npz") as f:
        return request.param, dict(f), proc.stdout, out


def test_single_process_thread_counts_agree(single_process):
    for name in single_process[1]:
        for a, b in zip(single_process[1][name], single_process[2][name]):
            assert np.array_equal(a, b), name


@pytest.mark.parametrize("name", ["plain", "sync"])
def test_deterministic_fit_is_bitwise_the_single_process_one(world, single_process, name):
    _, result, _, _ = world
    weights, buffers, losses = single_process[1][name]
    assert np.array_equal(result[f"{name}_weights"], weights)
    assert np.array_equal(result[f"{name}_buffers"], buffers)  # SyncBatchNorm's running stats
    np.testing.assert_allclose(result[f"{name}_losses"], losses, rtol=1e-6)


def test_fast_mode_matches_to_rounding(world, single_process):
    _, result, _, _ = world
    np.testing.assert_allclose(result["fast_weights"], single_process[1]["plain"][0], rtol=0, atol=1e-6)


def test_broadcast_gives_every_rank_rank0s_weights(world):
    _, result, _, _ = world
    assert result["broadcast_equal"]
    fastconv.manual_seed(0)  # rank 0 seeded 0 and set running_mean to 0
    import _mpi_worker
    expected = _mpi_worker.small_cnn(nn.BatchNorm2d)
    flat = np.concatenate([p.data.ravel() for p in expected.parameters()] + [np.zeros(4, np.float32)])
    assert np.array_equal(result["broadcast_rank0"], flat)


def test_batchnorm_ranks_end_with_the_same_weights_and_buffers(world):
    _, result, _, _ = world
    assert result["bn_ranks_equal"]


def test_rank0s_checkpoint_resumes_in_one_process(world, single_process):
    import _mpi_worker
    *_, out = world
    resumed = _mpi_worker.train(_mpi_worker._Identity, resume=str(out / "epoch1.npz"))
    assert np.array_equal(resumed[0], single_process[1]["plain"][0])


def test_shards_cover_every_sample_once(world):
    import _mpi_worker
    _, result, _, _ = world
    assert np.array_equal(np.sort(result["shards"]), np.arange(_mpi_worker.SAMPLES))


def test_mismatches_refused_on_every_rank(world):
    _, result, _, _ = world
    assert result["errors_everywhere"]
    assert "broadcast_parameters: model is" in str(result["model_error"])
    assert "fit: batch_size is 49 on rank 1 but 48 on rank 0" in str(result["batch_error"])


def test_rank0_alone_prints_progress(world):
    _, _, stdout, _ = world
    # three trainings of 2 epochs and two of 1, verbose=2: one line per epoch, from rank 0 only
    assert stdout.count("epoch 1/2") == 3 and stdout.count("epoch 2/2") == 3, stdout
    assert stdout.count("epoch 1/1") == 2, stdout


def test_a_failing_rank_ends_every_rank(tmp_path):
    proc, seconds = _launch(2, "raise", tmp_path, timeout=60)
    assert proc.returncode != 0
    assert "rank 1 failed on purpose" in proc.stderr
    assert seconds < 30


def test_leaves_tree_is_the_same_for_any_split():
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal(5).astype(np.float32) for _ in range(7)]
    whole = _leaves.tree_sum(0, 7, lambda lo, hi: parts[lo] if hi - lo == 1 else None)
    for world_size in (2, 3, 4, 7):
        known = {}
        for r in range(world_size):
            first, stop = _leaves.rank_leaves(7, r, world_size)
            for lo, hi in _leaves.subtrees(0, 7, first, stop):
                known[lo, hi] = _leaves.tree_sum(lo, hi, lambda a, b: parts[a] if b - a == 1 else None)
        assert np.array_equal(_leaves.tree_sum(0, 7, lambda lo, hi: known.get((lo, hi))), whole)


def test_sync_batchnorm_is_batchnorm_in_one_process():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 3, 5, 5))
    g = rng.standard_normal(x.shape)
    bn, sync = nn.BatchNorm2d(3).double(), nn.SyncBatchNorm(3).double()
    for layer in (bn, sync):
        layer.zero_grad()
    np.testing.assert_allclose(sync(x), bn(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sync.backward(g), bn.backward(g), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sync.running_var, bn.running_var, rtol=1e-12)


def test_import_fastconv_does_not_import_mpi4py():
    code = "import sys, fastconv; fastconv.nn.Sequential; assert 'mpi4py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=child_env())


def test_without_mpi4py_the_error_says_what_to_install():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "try:\n    import fastconv.distributed\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env(), check=True).stdout
    assert 'pip install "fastconv[mpi]"' in out
