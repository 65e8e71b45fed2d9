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

/* r[i] (pixel i's channels) -> r[k] (channel k's pixels), 16x16 floats: unpack pairs of
 * rows, then 4-row groups within 128-bit lanes, then the lanes themselves */
static FC_INLINE void fcv_transpose_f(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) { /* u[4g+m], 128-bit lane l: rows 4g.., column 4l+m */
        u[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int m = 0; m < 4; m++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);
        __m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
        __m512 w0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
        r[m] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[4 + m] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
        r[8 + m] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + m] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
}
/* 8x8 doubles: unpack pairs of rows, then the 128-bit lanes */
static FC_INLINE void fcv_transpose_d(__m512d r[8]) {
    __m512d t[8];
    for (int i = 0; i < 4; i++) { /* t[2i+m], lane l: rows 2i, 2i+1, column 2l+m */
        t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
    for (int m = 0; m < 2; m++) {
        __m512d v0 = _mm512_shuffle_f64x2(t[m], t[2 + m], 0x44);
        __m512d v1 = _mm512_shuffle_f64x2(t[m], t[2 + m], 0xEE);
        __m512d w0 = _mm512_shuffle_f64x2(t[4 + m], t[6 + m], 0x44);
        __m512d w1 = _mm512_shuffle_f64x2(t[4 + m], t[6 + m], 0xEE);
        r[m] = _mm512_shuffle_f64x2(v0, w0, 0x88);
        r[2 + m] = _mm512_shuffle_f64x2(v0, w0, 0xDD);
        r[4 + m] = _mm512_shuffle_f64x2(v1, w1, 0x88);
        r[6 + m] = _mm512_shuffle_f64x2(v1, w1, 0xDD);
    }
}

#elif defined(__AVX2__)
#define FCK_AVAILABLE 1
#define FCK_LANES_F 8
#define FCK_LANES_D 4
/* 16 registers: KV weights, one broadcast input, A*KV accumulators */
#define FCK_MAX_A1 12
#define FCK_MAX_A2 6
// clang-format off
#define FCK_LIST1(X) \
    X(1, 1)  X(1, 2)  X(1, 3)  X(1, 4)  X(1, 5)  X(1, 6)  X(1, 7)  X(1, 8)  X(1, 9)  X(1, 10) \
    X(1, 11) X(1, 12)
#define FCK_LIST2(X) X(2, 1) X(2, 2) X(2, 3) X(2, 4) X(2, 5) X(2, 6)
// clang-format on

/* 8x8 floats: unpack pairs of rows, then 4-row groups within 128-bit lanes, then the
 * lanes */
static FC_INLINE void fcv_transpose_f(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 2; g++) { /* u[4g+m], 128-bit lane l: rows 4g.., column 4l+m */
        u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int m = 0; m < 4; m++) {
        r[m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
        r[4 + m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
    }
}
/* 4x4 doubles: unpack pairs of rows, then the 128-bit lanes */
static FC_INLINE void fcv_transpose_d(__m256d r[4]) {
    __m256d t[4];
    for (int i = 0; i < 2; i++) { /* t[2i+m], lane l: rows 2i, 2i+1, column 2l+m */
        t[2 * i] = _mm256_unpacklo_pd(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
    for (int m = 0; m < 2; m++) {
        r[m] = _mm256_permute2f128_pd(t[m], t[2 + m], 0x20);
        r[2 + m] = _mm256_permute2f128_pd(t[m], t[2 + m], 0x31);
    }
}

#else
#define FCK_AVAILABLE 0
#define FCK_LANES_F 0
#define FCK_LANES_D 0
#define FCK_MAX_A1 0
#define FCK_MAX_A2 0
#endif

#define fcv_transpose FC_FN(fcv_transpose)

#define FC_IMPL "kvec_impl.h"
#include "each_type.h"

#endif /* FASTCONV_KVEC_H */
