/* Batch normalization kernels: per-channel statistics, the normalizing affine map and the
 * backward pass, for float32 and float64 (batchnorm_body.h instantiated once per type).
 *
 * Every function works on one channel c of an (N, C, L) array: `x` points at x[0, c, 0],
 * image i's L values start at x + i * stride (stride = C * L). The caller runs channels in
 * parallel; a channel's sums are formed by one thread in a fixed order (FC_BN_LANES running
 * sums, lane k taking the elements j = k mod FC_BN_LANES of each image's run, the runs'
 * leftover elements into lane 0, the lanes added in a fixed tree at the end), so the bits
 * never depend on the thread count. The lanes are independent sums, not a reassociated
 * one, so GCC vectorizes them without -ffast-math. Sums are in double for either type
 * (as torch's CPU kernels accumulate float32 statistics), taken about the channel's first
 * value: the shifted sums keep the variance accurate when the mean is large against the
 * spread, at no cost in passes.
 */
#ifndef FASTCONV_BATCHNORM_H
#define FASTCONV_BATCHNORM_H

#include <stddef.h>

/* Independent running sums per channel: 16 doubles are two AVX-512 or four AVX2 registers,
 * enough to hide the adds' latency. */
#define FC_BN_LANES 16

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
