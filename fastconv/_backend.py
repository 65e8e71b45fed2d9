"""Which implementation of the ops the ``nn`` layers call: compiled kernels or NumPy reference.

:mod:`fastconv.functional` (the compiled kernels, the default) and :mod:`fastconv.reference`
(pure NumPy) have the same function names and signatures, so a layer asks :func:`ops` for the
module and calls ``conv2d``, ``max_pool2d`` ... on it. ``with fastconv.backend("reference"):``
runs the same model on the reference: tests compare the two, and the training benchmark uses
it as the NumPy baseline.
"""
import contextlib
import threading

from . import functional, reference

_MODULES = {"compiled": functional, "reference": reference}


class _Local(threading.local):
    # the default as a class attribute: a thread that never chose finds it without the
    # AttributeError that getattr(local, name, default) raises and formats inside
    module = functional


_local = _Local()  # per Python thread, like fastconv.threads()


def ops():
    """The module whose functions the layers call: :mod:`fastconv.functional` by default."""
    return _local.module


def get_backend():
    """Name of the backend in use on this Python thread: ``"compiled"`` or ``"reference"``."""
    return "reference" if ops() is reference else "compiled"


@contextlib.contextmanager
def backend(name):
    """``with fastconv.backend("reference"): ...`` runs the layers inside on that backend.

    Parameters
    ----------
    name : {"compiled", "reference"}
        ``"compiled"``: :mod:`fastconv.functional` (Cython + OpenMP kernels);
        ``"reference"``: :mod:`fastconv.reference` (NumPy im2col + matmul).
    """
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(map(repr, _MODULES))}")
    previous = ops()
    _local.module = _MODULES[name]
    try:
        yield
    finally:
        _local.module = previous
