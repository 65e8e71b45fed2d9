/* The phase-split rows for one element type FC_T (included by pad.h per type). */

/* Split src (w columns, at padded column pad on) by column phase into dst: phase q, at
 * dst + q * phase_stride, gets len items, item m = padded column m*sw + q, fill where that
 * is outside src. Rows are short (tens of items): loops, not memset/memcpy calls, with a
 * constant stride for sw 1 and 2, so that they vectorize. */
static FC_INLINE void FC_FN(fc_split_row)(const FC_T* src, FC_T* dst, Py_ssize_t w, Py_ssize_t pad,
                                          Py_ssize_t sw, Py_ssize_t len, Py_ssize_t phase_stride,
                                          FC_T fill) {
    for (Py_ssize_t q = 0; q < sw; q++) {
        Py_ssize_t lo, hi;
        fc_phase_span(q, pad, sw, len, w, &lo, &hi);
        FC_T* d = dst + q * phase_stride;
        const FC_T* s = src + q - pad; /* s[m * sw] is item m */
        for (Py_ssize_t m = 0; m < lo; m++) d[m] = fill;
        if (sw == 1)
            for (Py_ssize_t m = lo; m < hi; m++) d[m] = s[m];
        else if (sw == 2)
            for (Py_ssize_t m = lo; m < hi; m++) d[m] = s[2 * m];
        else
            for (Py_ssize_t m = lo; m < hi; m++) d[m] = s[m * sw];
        for (Py_ssize_t m = hi; m < len; m++) d[m] = fill;
    }
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
