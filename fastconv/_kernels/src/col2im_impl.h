/* col2im for one element type FC_T (included by col2im.h per type): add col (c_n*kh*kw
 * rows, ldc apart, of the output rows [oh0, oh1) of wo columns) into x (c_n, h, w); at
 * stride 1 (fc_col2im_s1) and at column stride 2 (fc_col2im_s2). */

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

/* Column stride 2, as col2im_image_by_phase_rows (_im2col.pxd) with its bits, for kernels up
 * to FC_COL2IM_MAX_KW wide: per channel, kernel row and output row, the image row gets the
 * kw column rows. There they went tap by tap into a stack row split by column phase (each
 * add a load of the vector just stored one item over: a store-forwarding stall per tap, and
 * col2im took as long as the GEMM in ResNet-20's 32->64 grad_input). Here, 2 * lanes image
 * columns at a time, each phase's taps are summed in a register (0 + tap j, ascending j, as
 * the stack row did), the two phases interleaved and added into the image row. Image column
 * x0 + 2k + r (r 0 or 1) is padded column p = x0 + r + pw + 2k; tap j adds output column
 * (p - j*dw) / 2 where p - j*dw is even. Returns 0 (nothing done) for wider kernels. */
static int FC_FN(fc_col2im_s2)(const FC_T* col, FC_T* x, Py_ssize_t c_n, Py_ssize_t h,
                               Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                               Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                               Py_ssize_t wo, Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc) {
    const int lanes = FC_LANES;
    if (kw > FC_COL2IM_MAX_KW) return 0;
    for (Py_ssize_t x0 = 0; x0 < w; x0 += 2 * lanes) {
        Py_ssize_t n = w - x0 < 2 * lanes ? w - x0 : 2 * lanes;
        fcmask_t m_lo = fcv_first(n < lanes ? n : lanes);
        fcmask_t m_hi = fcv_first(n > lanes ? n - lanes : 0);
        /* per phase r, its taps' masks and offsets (from the kernel row's start), the same
         * for every row */
        fcmask_t masks[2][FC_COL2IM_MAX_KW];
        Py_ssize_t offs[2][FC_COL2IM_MAX_KW];
        int taps[2] = {0, 0};
        for (int r = 0; r < 2; r++)
            for (Py_ssize_t j = 0; j < kw; j++) {
                Py_ssize_t p = x0 + r + pw - j * dw;
                if (p % 2) continue; /* tap j lands on the other phase */
                Py_ssize_t base = p / 2; /* output column of lane 0 */
                Py_ssize_t lo = base < 0 ? -base : 0, hi = wo - base < lanes ? wo - base : lanes;
                if (lo >= hi) continue;
                masks[r][taps[r]] = (fcmask_t)(((1ull << hi) - 1u) & ~((1ull << lo) - 1u));
                offs[r][taps[r]++] = j * ldc + base;
            }
        for (Py_ssize_t c = 0; c < c_n; c++)
            for (Py_ssize_t i = 0; i < kh; i++) {
                Py_ssize_t off = i * dh - ph, oh_lo, oh_hi;
                fc_col2im_row_span(off, sh, h, oh0, oh1, &oh_lo, &oh_hi);
                for (Py_ssize_t oh = oh_lo; oh < oh_hi; oh++) {
                    const FC_T* row = col + (c * kh + i) * kw * ldc + (oh - oh0) * wo;
                    fcv_t v[2];
                    for (int r = 0; r < 2; r++) {
                        v[r] = fcv_setzero();
                        for (int t = 0; t < taps[r]; t++)
                            v[r] = fcv_add(v[r], fcv_maskz_loadu(masks[r][t], row + offs[r][t]));
                    }
                    FC_T* dst = x + (c * h + oh * sh + off) * w + x0;
                    fcv_mask_storeu(dst, m_lo, fcv_add(fcv_maskz_loadu(m_lo, dst),
                                                       FC_FN(fc_interleave_lo)(v[0], v[1])));
                    if (n > lanes)
                        fcv_mask_storeu(dst + lanes, m_hi,
                                        fcv_add(fcv_maskz_loadu(m_hi, dst + lanes),
                                                FC_FN(fc_interleave_hi)(v[0], v[1])));
                }
            }
    }
    return 1;
}
#else
static int FC_FN(fc_col2im_s2)(const FC_T* col, FC_T* x, Py_ssize_t c_n, Py_ssize_t h,
                               Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                               Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                               Py_ssize_t wo, Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc) {
    return 0; /* without lane masks: the stack row's code */
}

static void FC_FN(fc_col2im_s1)(const FC_T* col, FC_T* x, Py_ssize_t c_n, Py_ssize_t h,
                                Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                                Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t wo,
                                Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc) {
    FC_FN(fc_col2im_scalar)(col, x, c_n, h, w, kh, kw, ph, pw, dh, dw, wo, oh0, oh1, ldc);
}
#endif
