"""What the kernels were compiled with: OpenMP on/off and the SIMD baseline."""

cdef extern from "runtime.h" nogil:
    int fc_openmp_enabled()
    const char* fc_simd_baseline()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(fc_openmp_enabled())


def simd_baseline():
    """The widest SIMD instruction set the compiler was allowed to assume."""
    return fc_simd_baseline().decode()
