"""Compiled kernels (Cython, nogil, OpenMP). Nothing here validates input: see fastconv.functional.

Kernel modules are imported as ``from fastconv._kernels import _conv`` (or ``load("_conv")``).
Either way a module that is not built, or that the loader refuses (an undefined symbol, a
missing OpenMP runtime, a build for another Python or NumPy), raises an ImportError that
says how to rebuild, rather than the loader's bare message.
"""
import importlib
import importlib.util
import json
import os

REBUILD_HINT = (
    "If you installed fastconv from source, rebuild it: "
    "pip install --force-reinstall --no-cache-dir . "
    "(or, in a source checkout, python setup.py build_ext --inplace). "
    "If you installed a wheel, reinstall it: pip install --force-reinstall --no-cache-dir fastconv."
)


def load(name):
    """Import the kernel module ``fastconv._kernels.<name>``.

    Raises
    ------
    ImportError
        The module is not built or fails to load; the message names it, quotes the loader's
        error and says how to rebuild. The loader's error is kept as ``__cause__``.
    """
    qualified = f"{__name__}.{name}"
    try:
        return importlib.import_module(qualified)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name not in (qualified, None):
            raise  # a missing dependency (numpy, say), not a broken build
        what = "are not built" if isinstance(exc, ModuleNotFoundError) else "failed to import"
        raise ImportError(f"fastconv's compiled kernels {what} ({qualified}: {exc}). {REBUILD_HINT}",
                          name=qualified) from exc


def build_info():
    """The record setup.py writes next to the kernels: compiler, flags, OpenMP, module names.

    Empty when the kernels were never built here.
    """
    try:
        with open(os.path.join(os.path.dirname(__file__), "_build_info.json")) as f:
            return json.load(f)
    except OSError:
        return {}


def _is_kernel_module(name):
    """A compiled module of that name is here, the build record lists it (an install that lost
    it), or its Cython source is here (a checkout not yet built)."""
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return True
    if name in build_info().get("modules", ()):
        return True
    return any(os.path.exists(os.path.join(d, name + ".pyx")) for d in __path__)


def __getattr__(name):
    # ``from fastconv._kernels import _conv`` looks the name up here before importing the
    # submodule, so every kernel import goes through load() and its readable error.
    if name.startswith("__") or not _is_kernel_module(name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return load(name)
