/* The phase-split rows for one element type FC_T (included by pad.h per type). */

/* fc_split_row phase by phase: each phase's padding items, and its columns where copy. */
static FC_INLINE void FC_FN(fc_split_phases)(const FC_T* src, FC_T* dst, Py_ssize_t w,
                                             Py_ssize_t pad, Py_ssize_t sw, Py_ssize_t len,
                                             Py_ssize_t phase_stride, FC_T fill, int copy) {
    for (Py_ssize_t q = 0; q < sw; q++) {
        Py_ssize_t lo, hi;
        fc_phase_span(q, pad, sw, len, w, &lo, &hi);
        FC_T* d = dst + q * phase_stride;
        const FC_T* s = src + q - pad; /* s[m * sw] is item m */
        for (Py_ssize_t m = 0; m < lo; m++) d[m] = fill;
        if (copy)
            for (Py_ssize_t m = lo; m < hi; m++) d[m] = s[m * sw];
        for (Py_ssize_t m = hi; m < len; m++) d[m] = fill;
    }
}

/* Split src (w columns, at padded column pad on) by column phase into dst: phase q, at
 * dst + q * phase_stride, gets len items, item m = padded column m*sw + q, fill where that
 * is outside src. Rows are short (tens of items): loops, not memset/memcpy calls, with a
 * constant stride for sw 1, so that they vectorize. At sw 2 columns 2b and 2b + 1 go out
 * together, to the two phases side by side, as in fc_merge_row: one de-interleaving pass,
 * which GCC vectorizes (item by item at stride 2 it stayed scalar: a third of a stride-2
 * 3x3 convolution's time went to padding its input). */
static FC_INLINE void FC_FN(fc_split_row)(const FC_T* src, FC_T* dst, Py_ssize_t w, Py_ssize_t pad,
                                          Py_ssize_t sw, Py_ssize_t len, Py_ssize_t phase_stride,
                                          FC_T fill) {
    if (sw == 2 && pad >= 0) {
        /* the padding items (sw 2 as a constant: the spans need no idiv), then the columns */
        FC_FN(fc_split_phases)(src, dst, w, pad, 2, len, phase_stride, fill, 0);
        /* column x goes to phase (x + pad) % 2, item (x + pad) / 2; items past len dropped */
        FC_T* even = dst + pad % 2 * phase_stride + pad / 2;
        FC_T* odd = dst + (pad + 1) % 2 * phase_stride + (pad + 1) / 2;
        Py_ssize_t half = w / 2, room = len - (pad + 1) / 2;
        Py_ssize_t nb = half < room ? half : room;
        for (Py_ssize_t b = 0; b < nb; b++) {
            even[b] = src[2 * b];
            odd[b] = src[2 * b + 1];
        }
        for (Py_ssize_t x = nb > 0 ? 2 * nb : 0; x < w; x++)
            if ((x + pad) / 2 < len) dst[(x + pad) % 2 * phase_stride + (x + pad) / 2] = src[x];
        return;
    }
    if (sw == 1) /* a constant stride: the copy vectorizes, the spans need no idiv */
        FC_FN(fc_split_phases)(src, dst, w, pad, 1, len, phase_stride, fill, 1);
    else
        FC_FN(fc_split_phases)(src, dst, w, pad, sw, len, phase_stride, fill, 1);
}

/* The inverse of fc_split_row for the columns inside the row: dst[x] = (or, with add,
 * +=) the split row's item of padded column x + pad, x in [0, w). At sw 2 columns 2b and
 * 2b + 1 go together, from the two phases side by side: one interleaving pass, which GCC
 * vectorizes (strided scalar stores were 40% of an average-pool gradient's time). */
static FC_INLINE void FC_FN(fc_merge_row)(const FC_T* src, FC_T* dst, Py_ssize_t w, Py_ssize_t pad,
                                          Py_ssize_t sw, Py_ssize_t len, Py_ssize_t phase_stride,
                                          int add) {
    if (sw == 2 && pad >= 0) {
        const FC_T* even = src + pad % 2 * phase_stride + pad / 2;
        const FC_T* odd = src + (pad + 1) % 2 * phase_stride + (pad + 1) / 2;
        Py_ssize_t half = w / 2;
        if (add) {
            for (Py_ssize_t b = 0; b < half; b++) {
                dst[2 * b] += even[b];
                dst[2 * b + 1] += odd[b];
            }
            if (w % 2) dst[w - 1] += even[half];
        } else {
            for (Py_ssize_t b = 0; b < half; b++) {
                dst[2 * b] = even[b];
                dst[2 * b + 1] = odd[b];
            }
            if (w % 2) dst[w - 1] = even[half];
        }
        return;
    }
    for (Py_ssize_t q = 0; q < sw; q++) {
        Py_ssize_t lo, hi;
        fc_phase_span(q, pad, sw, len, w, &lo, &hi);
        const FC_T* s = src + q * phase_stride;
        FC_T* d = dst + q - pad; /* d[m * sw] is item m's column */
        if (add)
            for (Py_ssize_t m = lo; m < hi; m++) d[m * sw] += s[m];
        else
            for (Py_ssize_t m = lo; m < hi; m++) d[m * sw] = s[m];
    }
}
