"""The one thread pool: how many OpenMP threads a kernel uses, and BLAS kept to one thread.

During a kernel, OpenMP is the only source of parallelism; BLAS is called single-threaded
from inside ``prange``. A multi-threaded OpenBLAS running inside or next to an OpenMP
region stalls both pools, so kernels run under :func:`blas_single_threaded`.
"""
import contextlib
import os
import threading

from ._kernels import _runtime

_global_num_threads = None   # set_num_threads(); None means the default


class _Local(threading.local):
    num_threads = None  # no override; a class default, so reading it raises nothing


_local = _Local()            # `with threads(n)` overrides, per Python thread
_controller = None           # threadpoolctl scans every loaded library: do it once
_controller_lock = threading.Lock()


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _default_num_threads():
    """OMP_NUM_THREADS when set to a positive integer, else every core this process may use.

    Read once, as OpenMP itself reads OMP_NUM_THREADS once at start-up: reading the
    environment and the CPU affinity cost ~5 us of every kernel call.
    """
    global _default
    if _default is None:
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        if not _runtime.openmp_enabled():
            _default = 1
        elif env.isdigit() and int(env) > 0:
            _default = int(env)
        else:
            _default = _available_cores()
    return _default


_default = None


# Far beyond any useful count for these CPU-bound kernels, and below where creating the
# OpenMP team fails: libgomp exits the process at ~50,000 threads here, and segfaults at
# 100,000.
MAX_THREADS = 1024


def _check_count(n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of threads must be a positive int, got {n!r}")
    if n > MAX_THREADS:
        raise ValueError(f"number of threads must be at most {MAX_THREADS}, got {n!r}")
    return n


def get_num_threads():
    """Number of OpenMP threads the next kernel call on this Python thread will use.

    1 in a process forked after this one (or an ancestor) ran kernels on several threads:
    GNU libgomp's thread team does not survive ``fork``, and a parallel region of more than
    one thread in the child waits for it forever. Results do not depend on the thread
    count, only speed does (use the "spawn" start method for multi-threaded workers).
    """
    global _team_started
    if not _runtime.openmp_enabled() or _forked_after_team:
        return 1
    n = _local.num_threads or _global_num_threads or _default_num_threads()
    if n > 1:
        _team_started = True
    return n


_team_started = False       # a kernel may have started an OpenMP team of several threads
_forked_after_team = False  # this process is a fork of one where _team_started held


def _after_fork_in_child():
    global _forked_after_team
    _forked_after_team = _forked_after_team or _team_started


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Set the number of OpenMP threads kernels use (like ``torch.set_num_threads``)."""
    global _global_num_threads
    _global_num_threads = _check_count(n)


@contextlib.contextmanager
def threads(n):
    """``with fastconv.threads(2): ...`` runs the kernels inside on ``n`` threads.

    The override belongs to the calling Python thread, so concurrent callers do not
    see each other's settings.
    """
    _check_count(n)
    previous = _local.num_threads
    _local.num_threads = n
    try:
        yield
    finally:
        _local.num_threads = previous


def blas_controller():
    """The cached threadpoolctl controller (one library scan per process)."""
    global _controller
    if _controller is None:
        with _controller_lock:
            if _controller is None:
                from threadpoolctl import ThreadpoolController
                _controller = ThreadpoolController()
    return _controller


class blas_single_threaded:
    """``with blas_single_threaded(): ...`` keeps the BLAS libraries the kernels call (see
    _blas_libraries) at one thread while OpenMP kernels run, then restores each one's count.

    Talks to the cached controller's libraries directly (``limit()`` builds a limiter
    object per call: ~15 µs of every kernel call, a tenth of a small one), and is a plain
    class, not a generator-based context manager (~3 µs more per call). Inside another one
    on the same thread it does nothing: a model's forward holds one around all its layers
    (each asking costs ~2 µs: a tenth of eager LeNet's batch-1 forward went to five of
    them).
    """
    __slots__ = ("_changed",)

    def __enter__(self):
        changed = []
        depth = getattr(_blas_held, "depth", 0)
        _blas_held.depth = depth + 1
        if depth == 0:
            for lib in _blas_libraries():
                n = lib.get_num_threads()
                if n != 1:
                    lib.set_num_threads(1)
                    changed.append((lib, n))
        self._changed = changed
        return self

    def __exit__(self, *exc):
        _blas_held.depth -= 1
        for lib, n in self._changed:
            lib.set_num_threads(n)
        return False


# per thread: how many blas_single_threaded regions are open
_blas_held = threading.local()


def _blas_libraries():
    """The BLAS libraries the kernels' scipy.linalg.cython_blas calls may reach, from the
    cached controller (the list never changes).

    An OpenBLAS built with the ``64_`` symbol suffix (NumPy's own ILP64 copy in its wheels)
    exports no ``sgemm_``, so cython_blas never calls it: leaving it alone halves the cost
    of every blas_single_threaded region.
    """
    global _blas_libs
    if _blas_libs is None:
        _blas_libs = [lib for lib in blas_controller().lib_controllers
                      if lib.user_api == "blas"
                      and "openblas64_" not in os.path.basename(lib.filepath or "")]
    return _blas_libs


_blas_libs = None
