/* Batch normalization kernels: per-channel statistics, the normalizing affine map and the
 * backward pass, for float32 and float64 (batchnorm_body.h instantiated once per type).
 *
 * The sums work on one channel c of an (N, C, L) array: `x` points at x[0, c, 0], image
 * i's L values start at x + i * stride (stride = C * L). The caller runs channels in
 * parallel; a channel's sums are formed by one thread in a fixed order (FC_BN_LANES running
 * sums, lane k taking the elements j = k mod FC_BN_LANES of each image's run, the runs'
 * leftover elements into a tail sum, the lanes added in a fixed tree at the end and the
 * tail after them), so the bits
 * never depend on the thread count. The lanes are independent sums, not a reassociated
 * one: with GCC or clang they are vectors (vector extensions, of the build level's width;
 * GCC's own vectorizer kept 16 scalar lanes in scalar registers), elsewhere a plain array,
 * the same sums either way. Sums are
 * in double for either type
 * (as torch's CPU kernels accumulate float32 statistics), taken about the channel's first
 * value: the shifted sums keep the variance accurate when the mean is large against the
 * spread, at no cost in passes.
 */
#ifndef FASTCONV_BATCHNORM_H
#define FASTCONV_BATCHNORM_H

#include <stddef.h>
#include <string.h>

/* Independent running sums per channel: 16 doubles are two AVX-512 or four AVX2 registers,
 * enough to hide the adds' latency. */
#define FC_BN_LANES 16

#if defined(__GNUC__) || defined(__clang__)
#define FC_BN_VECTORS 1
#if !defined(__clang__)
/* The vector helpers are static inline: no call passes a vector across an ABI boundary. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
/* The lanes as FC_BN_NV vectors of the build's width: one zmm each under AVX-512, else a
 * ymm (or two xmm): vectors wider than the build's registers live on the stack. */
#if defined(__AVX512F__)
#define FC_BN_VW 8
#else
#define FC_BN_VW 4
#endif
#define FC_BN_NV (FC_BN_LANES / FC_BN_VW)
typedef double fc_bn_vd __attribute__((vector_size(FC_BN_VW * sizeof(double))));
typedef float fc_bn_vf __attribute__((vector_size(FC_BN_VW * sizeof(float))));
/* What a comparison of two fc_bn_vd gives: all ones where true. */
typedef long long fc_bn_vl __attribute__((vector_size(FC_BN_VW * sizeof(long long))));

/* FC_BN_VW consecutive values as doubles (memcpy: an unaligned load). */
static inline fc_bn_vd fc_bn_load_f32(const float *p)
{
    fc_bn_vf v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, fc_bn_vd);
}

static inline fc_bn_vd fc_bn_load_f64(const double *p)
{
    fc_bn_vd v;
    memcpy(&v, p, sizeof v);
    return v;
}
#endif

/* The lanes added pairwise, always in the same tree. */
static inline double fc_bn_lane_total(const double *lane)
{
    double t[FC_BN_LANES];
    for (int k = 0; k < FC_BN_LANES; k++)
        t[k] = lane[k];
    for (int width = FC_BN_LANES / 2; width >= 1; width /= 2)
        for (int k = 0; k < width; k++)
            t[k] += t[k + width];
    return t[0];
}

#define FC_BN_T float
#define FC_BN_NAME(name) name##_f32
#include "batchnorm_body.h"
#undef FC_BN_T
#undef FC_BN_NAME

#define FC_BN_T double
#define FC_BN_NAME(name) name##_f64
#include "batchnorm_body.h"
#undef FC_BN_T
#undef FC_BN_NAME

#endif
