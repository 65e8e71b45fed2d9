/* Winograd F(2x2, 3x3) input and output transforms. In C, with restrict pointers and one
 * tile per iteration, so that GCC vectorizes across tiles (in Cython they stayed scalar: a
 * third of the 128-channel 3x3 layer's time). The products M = U V between them run on
 * the channel-vector kernel (kvec.h). */
#ifndef FASTCONV_WINOGRAD_H
#define FASTCONV_WINOGRAD_H

#include "simd.h"

#if defined(__GNUC__) || defined(__clang__)
#define FCW_IVDEP _Pragma("GCC ivdep")
#else
#define FCW_IVDEP
#endif

#define FC_IMPL "winograd_impl.h"
#include "each_type.h"

#endif /* FASTCONV_WINOGRAD_H */
