/* Register-blocked direct convolution: one FC_KB x FC_VW block of outputs (output channels
 * x consecutive output columns of one row), kept in registers over every kernel tap.
 *
 * In C rather than Cython, and never inlined, because only then does GCC keep the
 * accumulators in SIMD registers (inlined into the OpenMP region it unrolls them into
 * scalar code, about 10x slower). The block is 8 registers of the instruction set this
 * build targets: 8 independent FMA chains hide the FMA latency. */
#ifndef FASTCONV_DIRECT_H
#define FASTCONV_DIRECT_H

#include "simd.h"

#if defined(__AVX512F__)
#define FC_KB 8
#define FC_VW_F 16
#define FC_VW_D 8
#define FC_WIDE 2 /* the wide block: 2 vectors of columns */
#define FC_KB6 6  /* 6 output channels (LeNet's conv1): a block of 8 would be a quarter zeros */
#elif defined(__AVX2__)
#define FC_KB 4
#define FC_VW_F 16
#define FC_VW_D 8
#define FC_WIDE 1
#define FC_KB6 FC_KB /* no 6-channel block: FC_KB6 == FC_KB tells the caller so */
#else
#define FC_KB 4
#define FC_VW_F 8
#define FC_VW_D 4
#define FC_WIDE 1
#define FC_KB6 FC_KB
#endif

#define FC_IMPL "direct_impl.h"
#include "each_type.h"

#endif /* FASTCONV_DIRECT_H */
