"""Reusable scratch memory for the kernels: workspaces, not allocations (per-thread scratch
sized for one tile and reused across calls, the project's design principle).

Touching fresh pages costs about 30% of a LeNet training step on these machines, so the
column buffers and partial sums a kernel needs come from one buffer per Python thread,
kept between calls and grown only when a call needs more. Each Python thread has its own
buffer (``threading.local``): two threads calling kernels at once never share scratch.
The buffer is as large as the largest single call made on that thread so far (for a
convolution: the thread count times one tile's column matrix (about 1024 output positions,
see fastconv._conv_plan.gemm_tiles) or padded image, plus the per-chunk weight-gradient
partial sums); :func:`release` hands it back.
"""
import threading

import numpy as np

ALIGN = 64  # bytes: a cache line, and the widest SIMD register


class _Local(threading.local):
    # buffer: this thread's bytes; aligned: its view from the first ALIGN-byte boundary on
    # (found once: ndarray.ctypes builds a Python object per call, ~1 us). Class defaults,
    # so a thread without a buffer reads None without raising.
    buffer = aligned = None


_local = _Local()


def round_up(count, dtype):
    """``count`` items of ``dtype`` rounded up to a whole number of ALIGN-byte blocks, so
    consecutive slices of a scratch array each start on an aligned address."""
    per_block = ALIGN // np.dtype(dtype).itemsize
    return -(-count // per_block) * per_block


def scratch(count, dtype):
    """A 1-D array of ``count`` items of ``dtype`` whose contents are undefined.

    It is a view of the calling thread's buffer, aligned to ALIGN bytes, and valid until the
    next call of :func:`scratch` on this thread: use it within one kernel call, never return it.
    """
    dtype = np.dtype(dtype)
    nbytes = count * dtype.itemsize
    aligned = _local.aligned
    if aligned is None or aligned.nbytes < nbytes:
        buf = np.empty(nbytes + ALIGN, dtype=np.uint8)
        aligned = buf[-buf.ctypes.data % ALIGN:]
        _local.buffer, _local.aligned = buf, aligned
    return aligned[:nbytes].view(dtype)


def release():
    """Free this thread's buffer (the next kernel call allocates a fresh one)."""
    _local.buffer = _local.aligned = None


def nbytes():
    """Size in bytes of this thread's buffer (0 when it has none)."""
    buf = _local.buffer
    return 0 if buf is None else buf.nbytes
