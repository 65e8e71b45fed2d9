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
#endif

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
