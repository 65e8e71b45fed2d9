/* Direct convolution with output channels across the vector ("channel-vector" block):
 * A output pixels (consecutive in the image's raster order) x KV vectors of output
 * channels, kept in A*KV registers over every kernel tap. Per tap it loads KV weight
 * vectors and broadcasts one input value per pixel, so no lane is padding when the
 * channels fill whole vectors, whatever the output width (LeNet's conv2 has 10-column
 * rows: a block of 16 output columns would be 37% padding). A and KV are compile-time
 * constants of each instance, so the accumulators stay in registers; fc_kvec_* dispatches
 * to the instance. The block is transposed in registers, lanes pixels at a time, and
 * stored straight into the NCHW output (a scalar transpose through a tile in memory cost
 * 3-5% of the large 3x3 layers' time, 10% of a 1x1 layer's).
 *
 * The weight gradient (fc_kvec_wgrad_*) is the same block turned around, and
 * fc_load_tile_* transposes grad_output for it. The portable build has none of them: its
 * entry points return FC_UNAVAILABLE and write nothing, and FCK_LANES_* is 0. */
#ifndef FASTCONV_KVEC_H
#define FASTCONV_KVEC_H

#include "simd.h"

#if defined(__AVX512F__)
#define FCK_AVAILABLE 1
#define FCK_LANES_F 16
#define FCK_LANES_D 8
/* 32 registers: KV weights, one broadcast input, A*KV accumulators */
#define FCK_MAX_A1 28
#define FCK_MAX_A2 14
/* taps in threes: 3*KV weights, the broadcast, A*KV accumulators and a register to spare
 * (with none, GCC spills: 15% slower than tap by tap at KV 1, A 28) */
#define FCK_THREES_MAX_A1 27
#define FCK_THREES_MAX_A2 12
/* every (kv, a) instance, kv in {1, 2}, 1 <= a <= FCK_MAX_A<kv> */
// clang-format off
#define FCK_LIST1(X) \
    X(1, 1)  X(1, 2)  X(1, 3)  X(1, 4)  X(1, 5)  X(1, 6)  X(1, 7)  X(1, 8)  X(1, 9)  X(1, 10) \
    X(1, 11) X(1, 12) X(1, 13) X(1, 14) X(1, 15) X(1, 16) X(1, 17) X(1, 18) X(1, 19) X(1, 20) \
    X(1, 21) X(1, 22) X(1, 23) X(1, 24) X(1, 25) X(1, 26) X(1, 27) X(1, 28)
#define FCK_LIST2(X) \
    X(2, 1)  X(2, 2)  X(2, 3)  X(2, 4)  X(2, 5)  X(2, 6)  X(2, 7)  X(2, 8)  X(2, 9)  X(2, 10) \
    X(2, 11) X(2, 12) X(2, 13) X(2, 14)
// clang-format on

/* This width's intrinsic (_mm512_unpacklo_ps for FCV_OP(unpacklo_ps)): the transposes below
 * are one algorithm at both widths, written once. */
#define FCV_OP(op) _mm512_##op
/* 128-bit blocks per vector */
#define FCV_BLOCKS 4
/* x[0..3] as a 4x4 matrix of 128-bit blocks, transposed: block q of o[p] is block p of x[q] */
static FC_INLINE void fcv_block_transpose(const __m512 x[4], __m512 o[4]) {
    __m512 v0 = _mm512_shuffle_f32x4(x[0], x[1], 0x44);
    __m512 v1 = _mm512_shuffle_f32x4(x[0], x[1], 0xEE);
    __m512 w0 = _mm512_shuffle_f32x4(x[2], x[3], 0x44);
    __m512 w1 = _mm512_shuffle_f32x4(x[2], x[3], 0xEE);
    o[0] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    o[1] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
    o[2] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    o[3] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
}

#elif defined(__AVX2__)
#define FCK_AVAILABLE 1
#define FCK_LANES_F 8
#define FCK_LANES_D 4
/* 16 registers: KV weights, one broadcast input, A*KV accumulators */
#define FCK_MAX_A1 12
#define FCK_MAX_A2 6
#define FCK_THREES_MAX_A1 11
#define FCK_THREES_MAX_A2 4
// clang-format off
#define FCK_LIST1(X) \
    X(1, 1)  X(1, 2)  X(1, 3)  X(1, 4)  X(1, 5)  X(1, 6)  X(1, 7)  X(1, 8)  X(1, 9)  X(1, 10) \
    X(1, 11) X(1, 12)
#define FCK_LIST2(X) X(2, 1) X(2, 2) X(2, 3) X(2, 4) X(2, 5) X(2, 6)
// clang-format on

#define FCV_OP(op) _mm256_##op
#define FCV_BLOCKS 2
/* x[0..1] as a 2x2 matrix of 128-bit blocks, transposed */
static FC_INLINE void fcv_block_transpose(const __m256 x[2], __m256 o[2]) {
    o[0] = _mm256_permute2f128_ps(x[0], x[1], 0x20);
    o[1] = _mm256_permute2f128_ps(x[0], x[1], 0x31);
}

#else
#define FCK_AVAILABLE 0
#define FCK_LANES_F 0
#define FCK_LANES_D 0
#define FCK_MAX_A1 0
#define FCK_MAX_A2 0
#define FCK_THREES_MAX_A1 0
#define FCK_THREES_MAX_A2 0
#endif

#if FCK_AVAILABLE
/* For each m < s: the vectors v[m + s*b], b < FCV_BLOCKS, as a matrix of 128-bit blocks,
 * transposed into r[m + s*b] (s = items per block, so that this is the last step of a
 * lanes x lanes transpose whose earlier steps stayed within the blocks). */
static FC_INLINE void fcv_transpose_blocks(const fcv_f v[], const int s, fcv_f r[]) {
    FC_PRAGMA(GCC unroll 4)
    for (int m = 0; m < s; m++) {
        fcv_f x[FCV_BLOCKS], o[FCV_BLOCKS];
        FC_PRAGMA(GCC unroll 4)
        for (int b = 0; b < FCV_BLOCKS; b++) x[b] = v[m + s * b];
        fcv_block_transpose(x, o);
        FC_PRAGMA(GCC unroll 4)
        for (int b = 0; b < FCV_BLOCKS; b++) r[m + s * b] = o[b];
    }
}

/* r[i] (pixel i's channels) -> r[k] (channel k's pixels), lanes x lanes floats: within the
 * 128-bit blocks, unpack pairs of rows, then 4-row groups; then transpose the blocks */
static FC_INLINE void fcv_transpose_f(fcv_f r[FC_LANES_F]) {
    fcv_f t[FC_LANES_F], u[FC_LANES_F];
    FC_PRAGMA(GCC unroll 8)
    for (int i = 0; i < FC_LANES_F / 2; i++) {
        t[2 * i] = FCV_OP(unpacklo_ps)(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = FCV_OP(unpackhi_ps)(r[2 * i], r[2 * i + 1]);
    }
    FC_PRAGMA(GCC unroll 4)
    for (int g = 0; g < FC_LANES_F / 4; g++) { /* u[4g+m], block l: rows 4g.., column 4l+m */
        u[4 * g] = FCV_OP(shuffle_ps)(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = FCV_OP(shuffle_ps)(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = FCV_OP(shuffle_ps)(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = FCV_OP(shuffle_ps)(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    fcv_transpose_blocks(u, 4, r);
}
/* The same for doubles: unpack pairs of rows within the blocks, then transpose the blocks
 * (as floats: moving whole blocks does not look at the items) */
static FC_INLINE void fcv_transpose_d(fcv_d r[FC_LANES_D]) {
    fcv_f t[FC_LANES_D], o[FC_LANES_D];
    FC_PRAGMA(GCC unroll 4)
    for (int i = 0; i < FC_LANES_D / 2; i++) { /* t[2i+m], block l: rows 2i, 2i+1, column 2l+m */
        t[2 * i] = FCV_OP(castpd_ps)(FCV_OP(unpacklo_pd)(r[2 * i], r[2 * i + 1]));
        t[2 * i + 1] = FCV_OP(castpd_ps)(FCV_OP(unpackhi_pd)(r[2 * i], r[2 * i + 1]));
    }
    fcv_transpose_blocks(t, 2, o);
    FC_PRAGMA(GCC unroll 8)
    for (int k = 0; k < FC_LANES_D; k++) r[k] = FCV_OP(castps_pd)(o[k]);
}
#undef FCV_OP
#endif

#define fcv_transpose FC_FN(fcv_transpose)

#define FC_IMPL "kvec_impl.h"
#include "each_type.h"

#endif /* FASTCONV_KVEC_H */
