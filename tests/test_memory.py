"""Memory: bounded scratch space, flat RSS over many training steps, and impossible
allocations refused with MemoryError or ValueError instead of a crash."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv
import fastconv.optim
from fastconv import _workspace, nn
from fastconv import functional as F

from _isolated import child_env

TILE = 256 * 1024  # bytes: the column tile conv2d's GEMM path may fill with small images
MAX_CHUNKS = 32    # conv2d_backward sums weight gradients over at most this many chunks


def _one_image_im2col_bytes(x, w, out_hw):
    c_per_group, kh, kw = w.shape[1:]
    return c_per_group * kh * kw * out_hw[0] * out_hw[1] * x.itemsize


def _scratch_after(call, nt):
    """Bytes of this thread's scratch buffer after one ``call()`` from an empty one."""
    _workspace.release()
    with fastconv.threads(nt):
        call()
    return _workspace.nbytes()


# (x shape, weight shape, conv kwargs): LeNet's layers and a large 3x3 layer
SHAPES = [
    ((64, 1, 28, 28), (6, 1, 5, 5), dict(padding=2)),
    ((64, 6, 14, 14), (16, 6, 5, 5), {}),
    ((4, 32, 56, 56), (32, 32, 3, 3), dict(padding=1)),
    ((8, 16, 30, 30), (16, 4, 3, 3), dict(stride=2, groups=4)),
]


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", SHAPES)
def test_scratch_is_bounded_by_one_image_per_thread(x_shape, w_shape, kwargs, nt):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    y = F.conv2d(x, w, **kwargs)
    g = np.ones_like(y)
    # per thread: one image's column matrix (or one tile of small images) and a
    # result/padded-image buffer no larger; plus the chunked weight-gradient partial sums
    per_thread = 2 * max(_one_image_im2col_bytes(x, w, y.shape[2:]), TILE) \
        + x[0].nbytes * 4
    partials = MAX_CHUNKS * (w.size + w.shape[0]) * x.itemsize
    bound = nt * per_thread + partials + _workspace.ALIGN
    forward = _scratch_after(lambda: F.conv2d(x, w, **kwargs), nt)
    backward = _scratch_after(lambda: F.conv2d_backward(g, x, w, **kwargs), nt)
    assert forward <= bound and backward <= bound, (forward, backward, bound)


@pytest.mark.parametrize("op", ["forward", "backward"])
def test_scratch_does_not_grow_with_the_batch(op):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    sizes = {}
    for n in (256, 2048):
        x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
        if op == "forward":
            call = lambda: F.conv2d(x, w, padding=1)  # noqa: E731
        else:
            g = np.ones((n, 8, 16, 16), np.float32)
            call = lambda: F.conv2d_backward(g, x, w, padding=1)  # noqa: E731
        sizes[n] = _scratch_after(call, 2)
    assert sizes[256] == sizes[2048] > 0


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_rss_stays_flat_over_1000_training_steps():
    fastconv.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * 5 * 5, 10))
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=8)
    loss_fn = nn.CrossEntropyLoss()
    opt = fastconv.optim.Adam(model.parameters(), lr=1e-3)

    def steps(count):
        for _ in range(count):
            loss_fn(model(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()

    # one thread: on a loaded 2-core machine, waking a second OpenMP thread for these tiny
    # kernels costs more than the work
    with fastconv.threads(1):
        steps(100)  # warm up: workspaces, optimizer state, allocator pools
        before = _rss_bytes()
        steps(1000)
        grown = _rss_bytes() - before
    # A step allocates ~0.3 MB of activations; leaking even a small part of that per step
    # would add hundreds of MB. 32 MB allows for allocator (and sanitizer) slack.
    assert grown < 32 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 1000 steps"


# ---------------------------------------------------------------------------------------
# impossible allocations
# ---------------------------------------------------------------------------------------

_IMPOSSIBLE = textwrap.dedent(r"""
    import json, os, resource, sys
    import numpy as np
    # Cap the address space: with vm.overcommit_memory=1 a 40 TB np.empty could otherwise
    # succeed and the kernel would then fault the pages in. (AddressSanitizer needs its
    # huge shadow mapping: under it, _capped_env caps each allocation instead.)
    if "asan" not in os.environ.get("LD_PRELOAD", ""):
        cap = 8 * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import fastconv
    from fastconv import functional as F, reference as R

    one = np.ones((1, 1, 1, 1), np.float32)
    p = 1_581_139  # (2p + 1)**2 ~ 1e13 output elements: 40 TB of float32
    cases = {
        "conv2d-1e13-outputs": lambda m: m.conv2d(one, one, padding=p),
        "im2col-1e13-columns": lambda m: m.im2col(one, 1, padding=p),
        "col2im-1e13-outputs": lambda m: m.col2im(np.ones((1, 1, 1), np.float32),
                                                  (2 * p + 1, 2 * p + 1), 1, stride=2 * p + 1),
        "max_pool2d_backward-1e13-inputs": lambda m: m.max_pool2d_backward(
            one, np.zeros((1, 1, 1, 1), np.int64), (1, 1, 2 * p + 1, 2 * p + 1)),
        "avg_pool2d_backward-1e13-inputs": lambda m: m.avg_pool2d_backward(
            one, (1, 1, 2 * p + 1, 2 * p + 1), 1, stride=2 * p + 1),
        # small arrays, but one image's column matrix is 2.5e12 floats (10 TB), and even
        # one output row of it (a backward tile) is 6 GB per thread
        "conv2d_backward-huge-column-matrix": lambda m: m.conv2d_backward(
            np.ones((1, 1, 1582, 1582), np.float32), one,
            np.ones((1, 1, 1000, 1000), np.float32), padding=1290),
    }
    report = {}
    for name, case in cases.items():
        for tag, module in (("compiled", F), ("reference", R)):
            try:
                case(module)
                report[f"{tag}:{name}"] = "returned"
            except (MemoryError, ValueError) as exc:
                report[f"{tag}:{name}"] = type(exc).__name__
    # afterwards the process still computes correctly
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    g = rng.standard_normal((3, 5, 9, 9)).astype(np.float32)
    report["still-correct"] = bool(
        np.allclose(F.conv2d(x, w, padding=1), R.conv2d(x, w, padding=1), atol=1e-4)
        and all(np.allclose(a, b, atol=1e-3) for a, b in zip(
            F.conv2d_backward(g, x, w, padding=1), R.conv2d_backward(g, x, w, padding=1))))
    print(json.dumps(report))
""")


def _capped_env(megabytes):
    """The child's environment; under AddressSanitizer (scripts/debug_check.sh), which
    cannot run with an address-space limit, no single allocation may exceed ``megabytes``."""
    options = os.environ.get("ASAN_OPTIONS", "")
    return child_env(ASAN_OPTIONS=f"{options}:max_allocation_size_mb={megabytes}")


def test_impossible_allocations_raise_instead_of_crashing():
    proc = subprocess.run([sys.executable, "-c", _IMPOSSIBLE], capture_output=True, text=True,
                          env=_capped_env(4096), timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report.pop("still-correct") is True
    assert len(report) == 12
    for case, outcome in report.items():
        assert outcome in ("MemoryError", "ValueError"), (case, outcome)
    assert report["compiled:conv2d-1e13-outputs"] == "MemoryError"


_HUGE_WINDOW = textwrap.dedent(r"""
    import os, resource
    import numpy as np
    from fastconv import functional as F
    x = np.ones((1, 1, 3, 3), np.float32)
    F.max_pool2d(x, 2), F.avg_pool2d(x, 2)  # thread stacks and libraries mapped first
    if "asan" not in os.environ.get("LD_PRELOAD", ""):
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = mapped + 128 * 2**20  # room for the outputs, not for O(window) tables
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    k = 2**25  # padding k // 2 keeps the output at 3 x 4 elements
    out = F.max_pool2d(x, (1, k), stride=1, padding=(0, k // 2))
    avg = F.avg_pool2d(x, (1, k), stride=1, padding=(0, k // 2), count_include_pad=False)
    assert out.shape == avg.shape == (1, 1, 3, 4)
    assert (out == 1).all() and (avg == 1).all()
    # A huge stride over a single output column: the stride never applies.
    out = F.max_pool2d(x, (1, 3), stride=(1, 2**27), padding=(0, 1))
    avg = F.avg_pool2d(x, (1, 3), stride=(1, 2**27), padding=(0, 1))
    assert out.shape == avg.shape == (1, 1, 3, 1)
    assert (out == 1).all() and np.allclose(avg, 2 / 3)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_a_huge_window_or_stride_on_a_tiny_input_costs_little_memory():
    proc = subprocess.run([sys.executable, "-c", _HUGE_WINDOW], capture_output=True,
                          text=True, env=_capped_env(128), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
