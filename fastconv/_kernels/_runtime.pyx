"""What the kernels were compiled with: OpenMP on/off, thread counts, SIMD baseline."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fc_openmp_enabled(void) { return 1; }
    static int fc_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fc_openmp_enabled(void) { return 0; }
    static int fc_omp_max_threads(void) { return 1; }
    #endif

    static const char* fc_simd_baseline(void) {
    #if defined(__AVX512F__)
        return "AVX-512F";
    #elif defined(__AVX2__)
        return "AVX2";
    #elif defined(__AVX__)
        return "AVX";
    #elif defined(__SSE4_2__)
        return "SSE4.2";
    #elif defined(__SSE2__) || defined(_M_X64)
        return "SSE2";
    #elif defined(__ARM_NEON) || defined(__aarch64__)
        return "NEON";
    #else
        return "none";
    #endif
    }
    """
    int fc_openmp_enabled() nogil
    int fc_omp_max_threads() nogil
    const char* fc_simd_baseline() nogil


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(fc_openmp_enabled())


def omp_max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS if set, else the cores OpenMP sees (1 without OpenMP)."""
    return fc_omp_max_threads()


def simd_baseline():
    """The widest SIMD instruction set the compiler was allowed to assume."""
    return fc_simd_baseline().decode()
