/* Rows split by column phase, the layout of the direct, channel-vector, Winograd and
 * pixel-vector convolutions' padded images, of the pooling kernels' scratch rows and of
 * col2im's strided rows: phase q of a padded row holds its columns q, q + sw, q + 2 sw, ...
 * contiguously, so that a strided output row reads (or adds into) contiguous columns at
 * every tap, as at stride 1. */
#ifndef FASTCONV_PAD_H
#define FASTCONV_PAD_H

#include "simd.h"

/* Phase q of a row that holds column x of a w-wide row at padded column x + pad: its items
 * m in [*lo, *hi) (of the first len) hold columns m*sw + q - pad inside [0, w); the rest
 * is padding. */
static FC_INLINE void fc_phase_span(Py_ssize_t q, Py_ssize_t pad, Py_ssize_t sw, Py_ssize_t len,
                                    Py_ssize_t w, Py_ssize_t* lo, Py_ssize_t* hi) {
    Py_ssize_t start = q - pad; /* the column of item 0 */
    Py_ssize_t a = start >= 0 ? 0 : (sw - 1 - start) / sw;
    Py_ssize_t b = start >= w ? 0 : (w - 1 - start) / sw + 1;
    if (b > len) b = len;
    *lo = a < b ? a : b;
    *hi = b;
}

#define FC_IMPL "pad_impl.h"
#include "each_type.h"

#endif /* FASTCONV_PAD_H */
