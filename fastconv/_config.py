"""show_config(): what this fastconv was built with and what it runs on."""
import os
import platform
import sys

from ._kernels import _runtime, build_info, cpu_level, dispatched_levels
from ._threads import get_num_threads


def config_dict():
    """Everything show_config() prints, as a dict (for bug reports and tests)."""
    from . import __version__
    import numpy
    import scipy
    # A fresh scan, not the cached controller: it may predate the BLAS the kernels loaded.
    from threadpoolctl import threadpool_info

    info = build_info()
    return {
        "version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "openmp": _runtime.openmp_enabled(),
        "num_threads": get_num_threads(),
        "compiler": info.get("compiler", "unknown"),
        "compile_args": info.get("compile_args", []),
        "link_args": info.get("link_args", []),
        "simd_baseline": _runtime.simd_baseline(),
        "cpu_level": cpu_level(),
        "cpu_dispatch": dispatched_levels(),
        "debug_build": info.get("debug", False),
        "blas": [
            {k: lib.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer",
                                     "architecture", "filepath")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"
        ],
    }


def show_config(file=None):
    """Print the version, OpenMP status and threads, compiler and flags, SIMD baseline and BLAS."""
    cfg = config_dict()
    out = file or sys.stdout
    omp = (f"enabled ({cfg['num_threads']} threads)" if cfg["openmp"] else "disabled")
    lines = [
        f"fastconv {cfg['version']}",
        f"Python: {cfg['python']} on {cfg['platform']}",
        f"NumPy: {cfg['numpy']}   SciPy: {cfg['scipy']}",
        f"OpenMP: {omp}",
        f"Compiler: {cfg['compiler']}",
        f"Compile flags: {' '.join(cfg['compile_args']) or 'unknown'}",
        f"Link flags: {' '.join(cfg['link_args']) or '-'}",
        f"SIMD baseline: {cfg['simd_baseline']}",
        "CPU dispatch: " + (", ".join(f"{m} {level}" for m, level in cfg["cpu_dispatch"].items())
                            + (f" (FASTCONV_CPU={os.environ['FASTCONV_CPU']})"
                               if os.environ.get("FASTCONV_CPU")
                               else " (FASTCONV_CPU=generic for the portable kernels)")
                            if cfg["cpu_dispatch"] else "none (portable kernels only)"),
        f"Bounds checks: {'on (FASTCONV_DEBUG build)' if cfg['debug_build'] else 'off'}",
    ]
    for lib in cfg["blas"]:
        lines.append(f"BLAS: {lib['internal_api']} {lib['version']} ({lib['threading_layer']}, "
                     f"{lib['architecture']}, {lib['num_threads']} threads) {lib['filepath']}")
    if not cfg["blas"]:
        lines.append("BLAS: none loaded yet")
    print("\n".join(lines), file=out)
