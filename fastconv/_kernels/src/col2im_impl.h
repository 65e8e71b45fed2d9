/* col2im at stride 1 for one element type FC_T (included by col2im.h per type): add col
 * (c_n*kh*kw rows, ldc apart, of the output rows [oh0, oh1) of wo columns) into x
 * (c_n, h, w). */

/* a column at a time */
static void FC_FN(fc_col2im_scalar)(const FC_T* col, FC_T* x, Py_ssize_t c_n, Py_ssize_t h,
                                    Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                                    Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t wo,
                                    Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc) {
    for (Py_ssize_t c = 0; c < c_n; c++)
        for (Py_ssize_t y = 0; y < h; y++) {
            Py_ssize_t top, i_lo, i_hi;
            if (!fc_col2im_kernel_rows(y, ph, oh0, oh1, kh, dh, &top, &i_lo, &i_hi)) continue;
            FC_T* dst = x + (c * h + y) * w;
            for (Py_ssize_t i = i_lo; i < i_hi; i++)
                for (Py_ssize_t j = 0; j < kw; j++) {
                    const FC_T* tap = col + ((c * kh + i) * kw + j) * ldc + (top - i * dh) * wo;
                    Py_ssize_t off = pw - j * dw; /* dst[x] += tap[x + off] */
                    Py_ssize_t lo = off < 0 ? -off : 0;
                    Py_ssize_t hi = wo - off < w ? wo - off : w;
                    for (Py_ssize_t xx = lo; xx < hi; xx++) dst[xx] += tap[xx + off];
                }
        }
}

#if defined(__AVX512F__)
static void FC_FN(fc_col2im_s1)(const FC_T* col, FC_T* x, Py_ssize_t c_n, Py_ssize_t h,
                                Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                                Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t wo,
                                Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc) {
    const int lanes = FC_LANES;
    if (kw > FC_COL2IM_MAX_KW) {
        FC_FN(fc_col2im_scalar)(col, x, c_n, h, w, kh, kw, ph, pw, dh, dw, wo, oh0, oh1, ldc);
        return;
    }
    for (Py_ssize_t x0 = 0; x0 < w; x0 += lanes) {
        Py_ssize_t n = w - x0 < lanes ? w - x0 : lanes;
        fcmask_t all = fcv_first(n);
        /* each tap's mask and offset, the same for every row */
        fcmask_t masks[FC_COL2IM_MAX_KW];
        Py_ssize_t offs[FC_COL2IM_MAX_KW];
        int taps = 0;
        for (Py_ssize_t j = 0; j < kw; j++) {
            Py_ssize_t off = x0 + pw - j * dw; /* output column of lane 0 */
            Py_ssize_t lo = off < 0 ? -off : 0, hi = wo - off < n ? wo - off : n;
            if (lo >= hi) continue;
            masks[taps] = (fcmask_t)(((1ull << hi) - 1u) & ~((1ull << lo) - 1u));
            offs[taps++] = j * ldc + off;
        }
        for (Py_ssize_t c = 0; c < c_n; c++)
            for (Py_ssize_t y = 0; y < h; y++) {
                Py_ssize_t top, i_lo, i_hi;
                if (!fc_col2im_kernel_rows(y, ph, oh0, oh1, kh, dh, &top, &i_lo, &i_hi)) continue;
                FC_T* dst = x + (c * h + y) * w + x0;
                fcv_t acc = fcv_maskz_loadu(all, dst);
                for (Py_ssize_t i = i_lo; i < i_hi; i++) {
                    const FC_T* row = col + (c * kh + i) * kw * ldc + (top - i * dh) * wo;
                    for (int t = 0; t < taps; t++)
                        acc = fcv_add(acc, fcv_maskz_loadu(masks[t], row + offs[t]));
                }
                fcv_mask_storeu(dst, all, acc);
            }
    }
}
#else
static void FC_FN(fc_col2im_s1)(const FC_T* col, FC_T* x, Py_ssize_t c_n, Py_ssize_t h,
                                Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                                Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t wo,
                                Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc) {
    FC_FN(fc_col2im_scalar)(col, x, c_n, h, w, kh, kw, ph, pw, dh, dw, wo, oh0, oh1, ldc);
}
#endif
