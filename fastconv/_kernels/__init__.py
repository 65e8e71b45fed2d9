"""Compiled kernels (Cython, nogil, OpenMP). Nothing here validates input: see fastconv.functional.

Kernel modules are imported as ``from fastconv._kernels import _conv`` (or ``load("_conv")``).
Either way a module that is not built, or that the loader refuses (an undefined symbol, a
missing OpenMP runtime, a build for another Python or NumPy), raises an ImportError that
says how to rebuild, rather than the loader's bare message.

CPU dispatch: on x86-64, setup.py also builds the hand-written loops (direct convolution,
im2col, pooling) for the x86-64-v3 (AVX2, FMA) and x86-64-v4 (AVX-512) levels, into
``_x86_64_v3/`` and ``_x86_64_v4/`` beside the portable build. A finder on ``sys.meta_path``
imports ``fastconv._kernels._conv`` (say) from the best build this CPU runs, so every import
of it, Cython's own cross-module ones included, gets the same module. ``FASTCONV_CPU=generic``
(or ``x86_64_v3``) caps the level.
"""
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings

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


# Best first; each level's CPU features as NumPy's runtime detection names them.
CPU_LEVELS = {
    "x86_64_v4": ("AVX512F", "AVX512CD", "AVX512_SKX"),  # SKX: AVX-512 BW, DQ, VL
    "x86_64_v3": ("AVX", "AVX2", "FMA3", "F16C"),
}


def _cpu_features():
    """NumPy's runtime CPU feature detection (CPUID and OS support), {} where unavailable."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            return dict(importlib.import_module(module).__cpu_features__)
        except (ImportError, AttributeError):
            continue
    return {}


def cpu_level():
    """The best CPU level this machine runs, capped by FASTCONV_CPU; 'generic' if none."""
    features = _cpu_features()
    supported = [level for level, needs in CPU_LEVELS.items() if all(features.get(f) for f in needs)]
    best = supported[0] if supported else "generic"
    requested = os.environ.get("FASTCONV_CPU", "").strip().lower().replace("-", "_")
    if requested in ("", "auto") or requested == best:
        return best
    if requested == "generic" or requested in supported:
        return requested
    why = "this CPU lacks it" if requested in CPU_LEVELS else "not generic or " + ", ".join(CPU_LEVELS)
    warnings.warn(f"FASTCONV_CPU={requested!r} ignored ({why}): using {best}", RuntimeWarning)
    return best


def module_levels():
    """{module: CPU level it is imported for} for the modules built at several levels."""
    order = list(CPU_LEVELS)
    best = cpu_level()
    allowed = order[order.index(best):] if best in order else []
    chosen = {}
    for name, levels in build_info().get("cpu_variants", {}).items():
        usable = [level for level in allowed if level in levels]
        chosen[name] = usable[0] if usable else "generic"
    return chosen


class _CpuVariantFinder:
    """Finds ``fastconv._kernels.<module>`` in the ``_<level>/`` build chosen for this CPU."""

    def __init__(self, levels):
        self.levels = levels

    def find_spec(self, fullname, path=None, target=None):
        package, _, module = fullname.rpartition(".")
        level = self.levels.get(module, "generic") if package == __name__ else "generic"
        if level == "generic":
            return None
        for directory in __path__:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                origin = os.path.join(directory, "_" + level, module + suffix)
                if os.path.exists(origin):
                    return importlib.util.spec_from_file_location(fullname, origin)
        return None  # that build is missing: the portable one serves


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


def dispatched_levels():
    """{module: CPU level} chosen at import for the modules built at several levels."""
    return dict(_finder.levels)


_finder = _CpuVariantFinder(module_levels())
sys.meta_path.insert(0, _finder)
