"""Build the Cython kernels in fastconv/_kernels.

Environment switches (read once, at build time):

FASTCONV_USE_OPENMP=0   build without OpenMP (serial kernels; a warning is printed)
FASTCONV_NATIVE=1       add -march=native (not portable: never for wheels)
FASTCONV_DEBUG=1        Cython bounds/initialization checks on, -O0 -g
FASTCONV_CPU_DISPATCH=0 build only the portable kernels, no AVX2/AVX-512 variants
"""
import glob
import json
import os
import platform
import sys
import sysconfig

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name, default="0"):
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes", "on")


USE_OPENMP = _flag("FASTCONV_USE_OPENMP", "1")
NATIVE = _flag("FASTCONV_NATIVE")
DEBUG = _flag("FASTCONV_DEBUG")

# The hand-written loops that measured faster with wider SIMD (scripts/compare_native.py) are
# also built for these x86-64 levels, into fastconv/_kernels/_<level>/; at import,
# fastconv._kernels picks the best build the CPU runs (FASTCONV_CPU=generic overrides).
# _pool stops at v3: its 2x2 path measured slower with -march=x86-64-v4.
CPU_LEVEL_FLAGS = {
    "x86_64_v3": {"msvc": "/arch:AVX2", "unix": "-march=x86-64-v3"},    # AVX2, FMA
    "x86_64_v4": {"msvc": "/arch:AVX512", "unix": "-march=x86-64-v4"},  # AVX-512 F/BW/CD/DQ/VL
}
CPU_VARIANTS = {
    "_activation": ("x86_64_v3", "x86_64_v4"),  # float32 sigmoid 1.97 -> 0.43 ms on v4, (256,6,28,28)
    "_batchnorm": ("x86_64_v3", "x86_64_v4"),
    # compile's executor runs _conv's direct, channel-vector and Winograd kernels per image:
    # the same levels as _conv, so that its plans hold
    "_compiled": ("x86_64_v3", "x86_64_v4"),
    "_conv": ("x86_64_v3", "x86_64_v4"),
    "_im2col": ("x86_64_v3", "x86_64_v4"),
    "_pool": ("x86_64_v3",),
}
# The target platform (sysconfig honours cibuildwheel's _PYTHON_HOST_PLATFORM when it
# cross-compiles): x86-64 only.
# FASTCONV_DEBUG builds them too, so that the sanitizer build checks every SIMD kernel.
CPU_DISPATCH = (_flag("FASTCONV_CPU_DISPATCH", "1") and not NATIVE
                and sysconfig.get_platform().endswith(("x86_64", "amd64")))

# Set once for the whole build; FASTCONV_DEBUG=1 turns the checks back on.
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "nonecheck": False,
    "cdivision": True,
    "embedsignature": True,
}


def _openmp_flags(compiler_type):
    """(compile, link) flags that turn OpenMP on for this compiler."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang has no -fopenmp driver flag; libomp comes from Homebrew or
        # conda-forge llvm-openmp and is located through CPPFLAGS/LDFLAGS.
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def _optimization_flags(compiler_type):
    if compiler_type == "msvc":
        return ["/O2"] if not DEBUG else ["/Od", "/Zi"]
    # -g0: Python's own CFLAGS carry -g, and debug info would be most of each kernel's size.
    flags = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
    if NATIVE:
        flags.append("-march=native")
    # Portable default: the x86-64 baseline (SSE2). Exactness rules out -ffast-math.
    return flags + ["-fno-math-errno", "-Wno-unreachable-code"]


class BuildExt(build_ext):
    """Adds per-compiler OpenMP and optimization flags, and records them for show_config()."""

    def finalize_options(self):
        super().finalize_options()
        # pip and build never pass -j: compile the extensions on every core by default.
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        compile_args = _optimization_flags(ctype)
        link_args = []
        if USE_OPENMP:
            omp_compile, omp_link = _openmp_flags(ctype)
            compile_args += omp_compile
            link_args += omp_link
        else:
            print("WARNING: FASTCONV_USE_OPENMP=0: building fastconv without OpenMP; "
                  "every kernel will run on one thread.", file=sys.stderr)
        for ext in self.extensions:
            level_flags = []
            if getattr(ext, "cpu_level", None):
                level_flags = [CPU_LEVEL_FLAGS[ext.cpu_level]["msvc" if ctype == "msvc" else "unix"]]
            ext.extra_compile_args = compile_args + level_flags + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()
        compiler = getattr(self.compiler, "compiler_so", None) or [ctype]
        self._build_info = {
            "compiler": " ".join(compiler[:1]),
            "compiler_type": ctype,
            "compile_args": compile_args,
            "link_args": link_args,
            "openmp": USE_OPENMP,
            "native": NATIVE,
            "debug": DEBUG,
            "platform": sysconfig.get_platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "numpy_build": numpy.__version__,
            # What fastconv._kernels must be able to import: a missing one is a broken install.
            "modules": sorted(ext.name.rsplit(".", 1)[-1] for ext in self.extensions
                              if not getattr(ext, "cpu_level", None)),
            # Extra builds per module, by CPU level: fastconv._kernels chooses among them.
            "cpu_variants": {name: list(levels) for name, levels in _variant_levels(self.extensions).items()},
        }

    def run(self):
        if self.inplace:
            # The CPU-level builds go to _<level>/ folders that the in-place copy does not create.
            for ext in self.extensions:
                os.makedirs(os.path.dirname(self.get_ext_fullpath(ext.name)), exist_ok=True)
        super().run()
        # The record goes where the kernels went: the build tree (wheels) and, for
        # --inplace builds, the source tree as well.
        out_dirs = {os.path.join(self.build_lib, "fastconv", "_kernels")}
        if self.inplace:
            out_dirs.add(os.path.join("fastconv", "_kernels"))
        for out_dir in out_dirs:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "_build_info.json"), "w") as f:
                json.dump(getattr(self, "_build_info", {}), f, indent=1)


def _variant_levels(extensions):
    """{module: (level, ...)} for the CPU-level builds among ``extensions``."""
    levels = {}
    for ext in extensions:
        if getattr(ext, "cpu_level", None):
            levels.setdefault(ext.name.rsplit(".", 1)[-1], []).append(ext.cpu_level)
    return {name: tuple(sorted(found)) for name, found in sorted(levels.items())}


def _cpu_variant(ext, level):
    """The same Cython module compiled for ``level`` as fastconv._kernels._<level>.<module>.

    Its C source is a one-line file that includes the module's generated C: a source path of
    its own gives it an object file of its own. The module keeps its name (PyInit__conv), so
    fastconv._kernels imports it under the usual name.
    """
    package, module = ext.name.rsplit(".", 1)
    wrapper = os.path.join("build", "cpu-variants", level, module + ".c")
    os.makedirs(os.path.dirname(wrapper), exist_ok=True)
    include = os.path.relpath(ext.sources[0], os.path.dirname(wrapper)).replace(os.sep, "/")
    text = f'#include "{include}"\n'
    if not os.path.exists(wrapper) or open(wrapper).read() != text:
        with open(wrapper, "w") as f:
            f.write(text)
    variant = Extension(f"{package}._{level}.{module}", [wrapper], include_dirs=ext.include_dirs,
                        define_macros=ext.define_macros, depends=ext.sources + list(ext.depends))
    variant.cpu_level = level
    return variant


# The kernels' C, included by the .pyx/.pxd files (cdef extern from "x.h").
C_SOURCES = os.path.join("fastconv", "_kernels", "src")


def _extensions():
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    exts = []
    # Every C header, nested includes too (Cython's dependency scan sees only the first
    # level): a changed header rebuilds the modules and their CPU-level builds.
    headers = sorted(glob.glob(os.path.join(C_SOURCES, "*.h")))
    for pyx in sorted(glob.glob(os.path.join("fastconv", "_kernels", "*.pyx"))):
        name = os.path.splitext(pyx)[0].replace(os.sep, ".")
        exts.append(Extension(name, [pyx], include_dirs=[numpy.get_include(), C_SOURCES],
                              define_macros=macros, depends=headers))
    # Debug C sources live apart, so switching FASTCONV_DEBUG regenerates them.
    build_dir = os.path.join("build", "cython-debug") if DEBUG else None
    exts = cythonize(exts, compiler_directives=COMPILER_DIRECTIVES, build_dir=build_dir,
                     nthreads=os.cpu_count() or 1)
    if CPU_DISPATCH:
        exts += [_cpu_variant(ext, level) for ext in exts
                 for level in CPU_VARIANTS.get(ext.name.rsplit(".", 1)[-1], ())]
    return exts


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
