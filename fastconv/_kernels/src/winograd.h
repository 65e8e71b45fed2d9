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

#define FC_T float
#define FC_FN(name) name##_f
#include "winograd_impl.h"
#undef FC_T
#undef FC_FN

#define FC_T double
#define FC_FN(name) name##_d
#include "winograd_impl.h"
#undef FC_T
#undef FC_FN

#endif /* FASTCONV_WINOGRAD_H */
