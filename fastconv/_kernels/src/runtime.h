/* What the module was compiled with: OpenMP or not, and the SIMD baseline. */
#ifndef FASTCONV_RUNTIME_H
#define FASTCONV_RUNTIME_H

#ifdef _OPENMP
static int fc_openmp_enabled(void) { return 1; }
#else
static int fc_openmp_enabled(void) { return 0; }
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

#endif /* FASTCONV_RUNTIME_H */
