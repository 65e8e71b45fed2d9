/* What every kernel header shares: inlining control, loop pragmas, and the vector type and
 * operations of the instruction set this build of a module targets (setup.py builds the
 * SIMD modules for the x86-64 baseline, x86-64-v3 and x86-64-v4), per element type.
 *
 * Kernels are written once per element type through FC_FN: a *_impl.h file, included by
 * its family's header through each_type.h once with FC_T float and FC_FN(name) name##_f,
 * once with double and name##_d, uses fcv_t and the fcv_* operations below, which map to
 * that type's. */
#ifndef FASTCONV_SIMD_H
#define FASTCONV_SIMD_H

#include <Python.h>
#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#define FC_NOINLINE __attribute__((noinline))
#define FC_INLINE inline __attribute__((always_inline))
#define FC_PRAGMA(x) _Pragma(#x)
#elif defined(_MSC_VER)
#define FC_NOINLINE __declspec(noinline)
#define FC_INLINE __forceinline
#define FC_PRAGMA(x)
#else
#define FC_NOINLINE
#define FC_INLINE inline
#define FC_PRAGMA(x)
#endif

/* The error code of an entry point that this build does not have (see kvec.h, pixvec.h):
 * the Cython caller raises RuntimeError on it. */
#define FC_UNAVAILABLE (-1)

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define FC_LANES_F 16
#define FC_LANES_D 8
typedef __m512 fcv_f;
typedef __m512d fcv_d;
typedef __mmask16 fcmask_f;
typedef __mmask8 fcmask_d;
static FC_INLINE fcv_f fcv_setzero_f(void) { return _mm512_setzero_ps(); }
static FC_INLINE fcv_d fcv_setzero_d(void) { return _mm512_setzero_pd(); }
static FC_INLINE fcv_f fcv_loadu_f(const float* p) { return _mm512_loadu_ps(p); }
static FC_INLINE fcv_d fcv_loadu_d(const double* p) { return _mm512_loadu_pd(p); }
static FC_INLINE void fcv_storeu_f(float* p, fcv_f v) { _mm512_storeu_ps(p, v); }
static FC_INLINE void fcv_storeu_d(double* p, fcv_d v) { _mm512_storeu_pd(p, v); }
static FC_INLINE fcv_f fcv_set1_f(float x) { return _mm512_set1_ps(x); }
static FC_INLINE fcv_d fcv_set1_d(double x) { return _mm512_set1_pd(x); }
static FC_INLINE fcv_f fcv_add_f(fcv_f a, fcv_f b) { return _mm512_add_ps(a, b); }
static FC_INLINE fcv_d fcv_add_d(fcv_d a, fcv_d b) { return _mm512_add_pd(a, b); }
/* a * b + c, one rounding */
static FC_INLINE fcv_f fcv_fmadd_f(fcv_f a, fcv_f b, fcv_f c) { return _mm512_fmadd_ps(a, b, c); }
static FC_INLINE fcv_d fcv_fmadd_d(fcv_d a, fcv_d b, fcv_d c) { return _mm512_fmadd_pd(a, b, c); }
/* max(0, v): the maximum returns its second operand where one is NaN, so NaN stays NaN (and
 * -0 stays -0), as an `if (v < 0) v = 0` ReLU leaves them */
static FC_INLINE fcv_f fcv_relu_f(fcv_f v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }
static FC_INLINE fcv_d fcv_relu_d(fcv_d v) { return _mm512_max_pd(_mm512_setzero_pd(), v); }
/* the lanes' sum, in the intrinsic's fixed tree */
static FC_INLINE float fcv_reduce_add_f(fcv_f v) { return _mm512_reduce_add_ps(v); }
static FC_INLINE double fcv_reduce_add_d(fcv_d v) { return _mm512_reduce_add_pd(v); }
/* masked loads read (and fault on) only the lanes of the mask; the others are zero */
static FC_INLINE fcv_f fcv_maskz_loadu_f(fcmask_f m, const float* p) {
    return _mm512_maskz_loadu_ps(m, p);
}
static FC_INLINE fcv_d fcv_maskz_loadu_d(fcmask_d m, const double* p) {
    return _mm512_maskz_loadu_pd(m, p);
}
static FC_INLINE void fcv_mask_storeu_f(float* p, fcmask_f m, fcv_f v) {
    _mm512_mask_storeu_ps(p, m, v);
}
static FC_INLINE void fcv_mask_storeu_d(double* p, fcmask_d m, fcv_d v) {
    _mm512_mask_storeu_pd(p, m, v);
}
/* the first n lanes, 0 <= n <= lanes */
static FC_INLINE fcmask_f fcv_first_f(Py_ssize_t n) { return (fcmask_f)((1ull << n) - 1u); }
static FC_INLINE fcmask_d fcv_first_d(Py_ssize_t n) { return (fcmask_d)((1ull << n) - 1u); }
static FC_INLINE fcv_f fcv_load_n_f(const float* p, int n) {
    return _mm512_maskz_loadu_ps(fcv_first_f(n), p);
}
static FC_INLINE fcv_d fcv_load_n_d(const double* p, int n) {
    return _mm512_maskz_loadu_pd(fcv_first_d(n), p);
}
static FC_INLINE void fcv_store_n_f(float* p, fcv_f v, int n) {
    _mm512_mask_storeu_ps(p, fcv_first_f(n), v);
}
static FC_INLINE void fcv_store_n_d(double* p, fcv_d v, int n) {
    _mm512_mask_storeu_pd(p, fcv_first_d(n), v);
}
/* the 2n items from p (n <= lanes; only those are read) split into *even = p[0], p[2], ...
 * and *odd = p[1], p[3], ... (their first n lanes) */
static FC_INLINE void fcv_deinterleave_f(const float* p, int n, fcv_f* even, fcv_f* odd) {
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const int m = 2 * n;
    fcv_f lo = _mm512_maskz_loadu_ps(fcv_first_f(m < 16 ? m : 16), p);
    fcv_f hi = _mm512_maskz_loadu_ps(fcv_first_f(m > 16 ? m - 16 : 0), p + 16);
    *even = _mm512_permutex2var_ps(lo, ev, hi);
    *odd = _mm512_permutex2var_ps(lo, _mm512_add_epi32(ev, _mm512_set1_epi32(1)), hi);
}
static FC_INLINE void fcv_deinterleave_d(const double* p, int n, fcv_d* even, fcv_d* odd) {
    const __m512i ev = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const int m = 2 * n;
    fcv_d lo = _mm512_maskz_loadu_pd(fcv_first_d(m < 8 ? m : 8), p);
    fcv_d hi = _mm512_maskz_loadu_pd(fcv_first_d(m > 8 ? m - 8 : 0), p + 8);
    *even = _mm512_permutex2var_pd(lo, ev, hi);
    *odd = _mm512_permutex2var_pd(lo, _mm512_add_epi64(ev, _mm512_set1_epi64(1)), hi);
}

#elif defined(__AVX2__)
#define FC_LANES_F 8
#define FC_LANES_D 4
typedef __m256 fcv_f;
typedef __m256d fcv_d;
static FC_INLINE fcv_f fcv_setzero_f(void) { return _mm256_setzero_ps(); }
static FC_INLINE fcv_d fcv_setzero_d(void) { return _mm256_setzero_pd(); }
static FC_INLINE fcv_f fcv_loadu_f(const float* p) { return _mm256_loadu_ps(p); }
static FC_INLINE fcv_d fcv_loadu_d(const double* p) { return _mm256_loadu_pd(p); }
static FC_INLINE void fcv_storeu_f(float* p, fcv_f v) { _mm256_storeu_ps(p, v); }
static FC_INLINE void fcv_storeu_d(double* p, fcv_d v) { _mm256_storeu_pd(p, v); }
static FC_INLINE fcv_f fcv_set1_f(float x) { return _mm256_set1_ps(x); }
static FC_INLINE fcv_d fcv_set1_d(double x) { return _mm256_set1_pd(x); }
static FC_INLINE fcv_f fcv_add_f(fcv_f a, fcv_f b) { return _mm256_add_ps(a, b); }
static FC_INLINE fcv_d fcv_add_d(fcv_d a, fcv_d b) { return _mm256_add_pd(a, b); }
static FC_INLINE fcv_f fcv_fmadd_f(fcv_f a, fcv_f b, fcv_f c) { return _mm256_fmadd_ps(a, b, c); }
static FC_INLINE fcv_d fcv_fmadd_d(fcv_d a, fcv_d b, fcv_d c) { return _mm256_fmadd_pd(a, b, c); }
static FC_INLINE fcv_f fcv_relu_f(fcv_f v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
static FC_INLINE fcv_d fcv_relu_d(fcv_d v) { return _mm256_max_pd(_mm256_setzero_pd(), v); }
/* AVX2 has no lane masks to hand: partial vectors go through a buffer */
static FC_INLINE fcv_f fcv_load_n_f(const float* p, int n) {
    if (n == 8) return _mm256_loadu_ps(p);
    float buf[8] = {0};
    for (int i = 0; i < n; i++) buf[i] = p[i];
    return _mm256_loadu_ps(buf);
}
static FC_INLINE fcv_d fcv_load_n_d(const double* p, int n) {
    if (n == 4) return _mm256_loadu_pd(p);
    double buf[4] = {0};
    for (int i = 0; i < n; i++) buf[i] = p[i];
    return _mm256_loadu_pd(buf);
}
static FC_INLINE void fcv_store_n_f(float* p, fcv_f v, int n) {
    if (n == 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    float buf[8];
    _mm256_storeu_ps(buf, v);
    for (int i = 0; i < n; i++) p[i] = buf[i];
}
static FC_INLINE void fcv_store_n_d(double* p, fcv_d v, int n) {
    if (n == 4) {
        _mm256_storeu_pd(p, v);
        return;
    }
    double buf[4];
    _mm256_storeu_pd(buf, v);
    for (int i = 0; i < n; i++) p[i] = buf[i];
}
#endif

/* The names a *_impl.h kernel uses: each maps to the type of the FC_FN in force where it is
 * used (fcv_loadu: fcv_loadu_f under FC_FN(name) name##_f). */
#define fcv_t FC_FN(fcv)
#define fcmask_t FC_FN(fcmask)
#define fcv_setzero FC_FN(fcv_setzero)
#define fcv_loadu FC_FN(fcv_loadu)
#define fcv_storeu FC_FN(fcv_storeu)
#define fcv_set1 FC_FN(fcv_set1)
#define fcv_add FC_FN(fcv_add)
#define fcv_fmadd FC_FN(fcv_fmadd)
#define fcv_relu FC_FN(fcv_relu)
#define fcv_reduce_add FC_FN(fcv_reduce_add)
#define fcv_maskz_loadu FC_FN(fcv_maskz_loadu)
#define fcv_mask_storeu FC_FN(fcv_mask_storeu)
#define fcv_first FC_FN(fcv_first)
#define fcv_load_n FC_FN(fcv_load_n)
#define fcv_store_n FC_FN(fcv_store_n)
#define fcv_deinterleave FC_FN(fcv_deinterleave)
/* lanes of fcv_t */
#define FC_LANES ((int)(sizeof(fcv_t) / sizeof(FC_T)))

#endif /* FASTCONV_SIMD_H */
