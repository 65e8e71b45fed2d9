/* col2im of one image at stride 1 (see col2im_image in _im2col.pxd), image row by image
 * row: image row y takes kernel row i from output row oh = y + ph - i*dh, for the i that
 * put oh in the tile's rows [oh0, oh1), and tap j from output column x + pw - j*dw where
 * that is inside [0, wo). The rows are short (LeNet: 10-14 columns), and as one loop per
 * tap and output row (the strided code) every row paid a loop's set-up: col2im was half of
 * LeNet conv2's grad_input. With AVX-512 an image row is held in registers, lanes columns
 * at a time, and each tap is one masked load (masked-off lanes are never read, so the
 * address may start before the row). Per column the taps add in the same order (kernel
 * row, then column) as in the strided code: the same bits. */
#ifndef FASTCONV_COL2IM_H
#define FASTCONV_COL2IM_H

#include "simd.h"

#if defined(__AVX512F__)
#define FC_COL2IM_MAX_KW 16 /* wider kernels: the scalar code */

/* Lanes 0..L/2-1 (lo) or L/2..L-1 (hi) of a and b interleaved: a[k], b[k], a[k+1], ... */
static FC_INLINE __m512 fc_interleave_lo_f(__m512 a, __m512 b) {
    return _mm512_permutex2var_ps(
        a, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), b);
}
static FC_INLINE __m512 fc_interleave_hi_f(__m512 a, __m512 b) {
    return _mm512_permutex2var_ps(
        a, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), b);
}
static FC_INLINE __m512d fc_interleave_lo_d(__m512d a, __m512d b) {
    return _mm512_permutex2var_pd(a, _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), b);
}
static FC_INLINE __m512d fc_interleave_hi_d(__m512d a, __m512d b) {
    return _mm512_permutex2var_pd(a, _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), b);
}
#endif

/* Output rows oh in [*lo, *hi), within [oh0, oh1), whose kernel row at offset off (i*dh - ph)
 * lands inside the image's h rows: 0 <= oh*sh + off < h. */
static FC_INLINE void fc_col2im_row_span(Py_ssize_t off, Py_ssize_t sh, Py_ssize_t h,
                                         Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t* lo,
                                         Py_ssize_t* hi) {
    Py_ssize_t a = off < 0 ? (-off + sh - 1) / sh : 0;
    Py_ssize_t b = h > off ? (h - off + sh - 1) / sh : 0;
    a = a > oh0 ? a : oh0;
    b = b < oh1 ? b : oh1;
    *lo = a;
    *hi = b > a ? b : a;
}

/* Image row y's kernel rows [*i_lo, *i_hi) and *top = y + ph - oh0; 0 where it has none. */
static FC_INLINE int fc_col2im_kernel_rows(Py_ssize_t y, Py_ssize_t ph, Py_ssize_t oh0,
                                           Py_ssize_t oh1, Py_ssize_t kh, Py_ssize_t dh,
                                           Py_ssize_t* top, Py_ssize_t* i_lo, Py_ssize_t* i_hi) {
    Py_ssize_t t = y + ph - oh0; /* i*dh <= top keeps oh >= oh0 */
    if (t < 0) return 0;
    *top = t;
    *i_hi = t / dh + 1 < kh ? t / dh + 1 : kh;
    /* i*dh > top - (oh1 - oh0) keeps oh < oh1 */
    *i_lo = t >= oh1 - oh0 ? (t - (oh1 - oh0)) / dh + 1 : 0;
    return *i_lo < *i_hi;
}

#define FC_IMPL "col2im_impl.h"
#include "each_type.h"

#endif /* FASTCONV_COL2IM_H */
