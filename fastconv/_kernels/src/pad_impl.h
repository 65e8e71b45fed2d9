/* The phase-split rows for one element type FC_T (included by pad.h per type). */

#if defined(__AVX512F__)
/* Rows are short (a 32-column row is 2 vectors, or 16 pairs at stride 2), and GCC's vector
 * loops spent more on their checks and scalar remainders than on the items: AVX-512 takes
 * every run of a row as whole vectors and one masked vector (3x faster on ResNet-20's
 * stride-2 inputs, rows of 16 pairs and a padding item per phase). Masked loads read
 * only their lanes. */
/* d[0 .. n) = fill */
static FC_INLINE void FC_FN(fc_fill_run)(FC_T* d, Py_ssize_t n, FC_T fill) {
    fcv_t v = fcv_set1(fill);
    for (Py_ssize_t i = 0; i < n; i += FC_LANES)
        fcv_store_n(d + i, v, (int)(n - i < FC_LANES ? n - i : FC_LANES));
}
/* d[0 .. n) = s[0 .. n) */
static FC_INLINE void FC_FN(fc_copy_run)(FC_T* d, const FC_T* s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i += FC_LANES) {
        int k = (int)(n - i < FC_LANES ? n - i : FC_LANES);
        fcv_store_n(d + i, fcv_load_n(s + i, k), k);
    }
}
/* even[b] = s[2b], odd[b] = s[2b + 1], b < n */
static FC_INLINE void FC_FN(fc_deinterleave_run)(const FC_T* s, FC_T* even, FC_T* odd,
                                                 Py_ssize_t n) {
    for (Py_ssize_t b = 0; b < n; b += FC_LANES) {
        int k = (int)(n - b < FC_LANES ? n - b : FC_LANES);
        fcv_t e, o;
        fcv_deinterleave(s + 2 * b, k, &e, &o);
        fcv_store_n(even + b, e, k);
        fcv_store_n(odd + b, o, k);
    }
}
#else
static FC_INLINE void FC_FN(fc_fill_run)(FC_T* d, Py_ssize_t n, FC_T fill) {
    for (Py_ssize_t i = 0; i < n; i++) d[i] = fill;
}
static FC_INLINE void FC_FN(fc_copy_run)(FC_T* d, const FC_T* s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) d[i] = s[i];
}
static FC_INLINE void FC_FN(fc_deinterleave_run)(const FC_T* s, FC_T* even, FC_T* odd,
                                                 Py_ssize_t n) {
    for (Py_ssize_t b = 0; b < n; b++) {
        even[b] = s[2 * b];
        odd[b] = s[2 * b + 1];
    }
}
#endif

/* fc_split_row phase by phase: each phase's padding items, and its columns where copy. */
static FC_INLINE void FC_FN(fc_split_phases)(const FC_T* src, FC_T* dst, Py_ssize_t w,
                                             Py_ssize_t pad, Py_ssize_t sw, Py_ssize_t len,
                                             Py_ssize_t phase_stride, FC_T fill, int copy) {
    for (Py_ssize_t q = 0; q < sw; q++) {
        Py_ssize_t lo, hi;
        fc_phase_span(q, pad, sw, len, w, &lo, &hi);
        FC_T* d = dst + q * phase_stride;
        const FC_T* s = src + q - pad; /* s[m * sw] is item m (m >= lo: inside src) */
        FC_FN(fc_fill_run)(d, lo, fill);
        if (copy && sw == 1)
            FC_FN(fc_copy_run)(d + lo, s + lo, hi - lo);
        else if (copy)
            for (Py_ssize_t m = lo; m < hi; m++) d[m] = s[m * sw];
        FC_FN(fc_fill_run)(d + hi, len - hi, fill);
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
        FC_FN(fc_deinterleave_run)(src, even, odd, nb);
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
