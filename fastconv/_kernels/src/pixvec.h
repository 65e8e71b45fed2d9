/* Weight gradient with pixels across the vector ("pixel-vector"), for the layers the
 * channel-vector kernel leaves to GEMM: few output channels (LeNet's conv1: 6) or few taps
 * (one input channel, 5x5). A block of KB output channels x JB taps of one kernel row keeps
 * its KB*JB partial sums in registers over every output pixel of an image, lanes columns of
 * a row at a time: per step KB grad_output loads and JB input loads feed KB*JB FMAs. Each
 * sum's lanes are then added up (a fixed tree) into the chunk's slot, so the result does
 * not depend on the threads. Stride 1; the image zero-padded (pad.h). Masked-off lanes load
 * zeros: no inf * 0 beyond the row.
 *
 * AVX-512 only (it needs lane masks): elsewhere fc_pixvec_wgrad_* returns FC_UNAVAILABLE
 * and writes nothing, and FCP_LANES_* is 0. */
#ifndef FASTCONV_PIXVEC_H
#define FASTCONV_PIXVEC_H

#include "simd.h"

/* the largest block: 4 channels x 5 taps, 20 sums, 4 + 1 loaded vectors (4 channels: a
 * 16-channel layer, ResNet's stem, in whole blocks) */
#define FCP_KB 4
#define FCP_JB 5

#if defined(__AVX512F__)
#define FCP_LANES_F 16
#define FCP_LANES_D 8
/* every (kb, jb) block, 1 <= kb <= FCP_KB, 1 <= jb <= FCP_JB */
// clang-format off
#define FCP_LIST(X) \
    X(1, 1) X(1, 2) X(1, 3) X(1, 4) X(1, 5) \
    X(2, 1) X(2, 2) X(2, 3) X(2, 4) X(2, 5) \
    X(3, 1) X(3, 2) X(3, 3) X(3, 4) X(3, 5) \
    X(4, 1) X(4, 2) X(4, 3) X(4, 4) X(4, 5)
// clang-format on
#else
#define FCP_LANES_F 0
#define FCP_LANES_D 0
#endif

#define FC_IMPL "pixvec_impl.h"
#include "each_type.h"

#endif /* FASTCONV_PIXVEC_H */
