/* 2x2 pooling at stride 2 with every window inside the plane (LeNet's and many small
 * networks' downsampling), float32, for the compiled executor: output row oh from input
 * rows 2 oh and 2 oh + 1. Each window's taps go in the order (0, 0), (0, 1), (1, 0), (1, 1),
 * as the general loop takes them, so the bits are its bits: max by torch's rule (a larger
 * value or a NaN replaces the running max: the last NaN wins, ties keep the first), average
 * as ((((0 + a) + b) + c) + d) / area.
 *
 * A LeNet row has 14 or 5 outputs: too short for GCC's vectorized loops, which ran them in
 * their scalar remainder (half of LeNet's compiled batch-256 time was its two poolings).
 * With AVX-512 a row of up to 16 outputs is one masked vector: its 32 inputs in two
 * masked loads, split into even and odd columns by two permutes. */
#ifndef FASTCONV_POOL2X2_H
#define FASTCONV_POOL2X2_H

#include "simd.h"

/* torch's rule, without a branch: on random data the branch mispredicted about every other
 * window (10x slower) */
static FC_INLINE float fc_take_max(float v, float best) {
    return (v > best) | (v != v) ? v : best;
}

#if defined(__AVX512F__)
/* where v replaces the running max best: v > best, or v is NaN */
static FC_INLINE __m512 fcv_take_max(__m512 v, __m512 best) {
    __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_mov_ps(best, take, v);
}

/* n <= 16 outputs of a row from input rows r0, r1 (2n columns each, read through masks) */
static FC_INLINE void fc_pool2x2_run(const float* r0, const float* r1, float* y, int n,
                                     int is_max, __m512 area) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4,
                                          2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    int m = 2 * n;
    __mmask16 lo = fcv_first_f(m < 16 ? m : 16), hi = fcv_first_f(m > 16 ? m - 16 : 0);
    __m512 l0 = _mm512_maskz_loadu_ps(lo, r0), h0 = _mm512_maskz_loadu_ps(hi, r0 + 16);
    __m512 l1 = _mm512_maskz_loadu_ps(lo, r1), h1 = _mm512_maskz_loadu_ps(hi, r1 + 16);
    __m512 a = _mm512_permutex2var_ps(l0, even, h0), b = _mm512_permutex2var_ps(l0, odd, h0);
    __m512 c = _mm512_permutex2var_ps(l1, even, h1), d = _mm512_permutex2var_ps(l1, odd, h1);
    __m512 r;
    if (is_max) {
        r = fcv_take_max(d, fcv_take_max(c, fcv_take_max(b, a)));
    } else {
        r = _mm512_add_ps(_mm512_add_ps(_mm512_setzero_ps(), a), b);
        r = _mm512_div_ps(_mm512_add_ps(_mm512_add_ps(r, c), d), area);
    }
    _mm512_mask_storeu_ps(y, fcv_first_f(n), r);
}
#endif

/* y (planes, H/2, W/2) = 2x2 max (is_max) or average (sum / area) pooling at stride 2 of
 * x (planes, H, W) */
static void fc_pool2x2_f(const float* x, float* y, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                         int is_max, float area) {
    Py_ssize_t Ho = H / 2, Wo = W / 2;
#if defined(__AVX512F__)
    __m512 varea = _mm512_set1_ps(area);
#endif
    for (Py_ssize_t c = 0; c < planes; c++)
        for (Py_ssize_t oh = 0; oh < Ho; oh++) {
            const float* r0 = x + (c * H + 2 * oh) * W;
            const float* r1 = r0 + W;
            float* yr = y + (c * Ho + oh) * Wo;
#if defined(__AVX512F__)
            for (Py_ssize_t ow = 0; ow < Wo; ow += 16)
                fc_pool2x2_run(r0 + 2 * ow, r1 + 2 * ow, yr + ow,
                               (int)(Wo - ow < 16 ? Wo - ow : 16), is_max, varea);
#else
            for (Py_ssize_t ow = 0; ow < Wo; ow++) {
                float a = r0[2 * ow], b = r0[2 * ow + 1], c2 = r1[2 * ow], d = r1[2 * ow + 1];
                yr[ow] = is_max ? fc_take_max(d, fc_take_max(c2, fc_take_max(b, a)))
                                : ((((0.0f + a) + b) + c2) + d) / area;
            }
#endif
        }
}

#endif /* FASTCONV_POOL2X2_H */
