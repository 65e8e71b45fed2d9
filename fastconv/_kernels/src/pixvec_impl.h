/* The pixel-vector weight gradient for one element type FC_T (included by pixvec.h).
 *
 * Arguments: x, the padded image at the block's first tap (row stride wp, taps dw apart);
 * g, grad_output of the block's first channel (channels L items apart, ho x wo pixels);
 * sums[k * k_stride + j] += the block's sum for channel k, tap j. */
#define FCP_ARGS                                                                                   \
    const FC_T *x, const FC_T *g, Py_ssize_t L, Py_ssize_t ho, Py_ssize_t wo, Py_ssize_t wp,       \
        Py_ssize_t dw, FC_T *sums, Py_ssize_t k_stride
#define FCP_PASS x, g, L, ho, wo, wp, dw, sums, k_stride

#if defined(__AVX512F__)
static FC_INLINE void FC_FN(fcp_body)(const int KB, const int JB, FCP_ARGS) {
    const int lanes = FC_LANES;
    fcv_t acc[FCP_KB][FCP_JB];
    FC_PRAGMA(GCC unroll 4)
    for (int k = 0; k < KB; k++) {
        FC_PRAGMA(GCC unroll 8)
        for (int j = 0; j < JB; j++) acc[k][j] = fcv_setzero();
    }
    for (Py_ssize_t oh = 0; oh < ho; oh++)
        for (Py_ssize_t x0 = 0; x0 < wo; x0 += lanes) {
            Py_ssize_t n = wo - x0 < lanes ? wo - x0 : lanes;
            fcmask_t m = fcv_first(n);
            fcv_t gv[FCP_KB];
            FC_PRAGMA(GCC unroll 4)
            for (int k = 0; k < KB; k++) gv[k] = fcv_maskz_loadu(m, g + k * L + oh * wo + x0);
            FC_PRAGMA(GCC unroll 8)
            for (int j = 0; j < JB; j++) {
                fcv_t xv = fcv_maskz_loadu(m, x + oh * wp + x0 + j * dw);
                FC_PRAGMA(GCC unroll 4)
                for (int k = 0; k < KB; k++) acc[k][j] = fcv_fmadd(gv[k], xv, acc[k][j]);
            }
        }
    FC_PRAGMA(GCC unroll 4)
    for (int k = 0; k < KB; k++) {
        FC_PRAGMA(GCC unroll 8)
        for (int j = 0; j < JB; j++) sums[k * k_stride + j] += fcv_reduce_add(acc[k][j]);
    }
}

/* One never-inlined instance per (kb, jb) of FCP_LIST (fcp_wgrad_1_5_f, ...), with kb and
 * jb as constants, and the table fc_pixvec_wgrad dispatches through. */
#define FCP_INSTANCE(KB, JB)                                                                       \
    static FC_NOINLINE void FC_FN(fcp_wgrad_##KB##_##JB)(FCP_ARGS) {                               \
        FC_FN(fcp_body)(KB, JB, FCP_PASS);                                                         \
    }
#define FCP_ENTRY(KB, JB) FC_FN(fcp_wgrad_##KB##_##JB),
FCP_LIST(FCP_INSTANCE)
static void (*const FC_FN(fcp_table)[])(FCP_ARGS) = {FCP_LIST(FCP_ENTRY)};
#undef FCP_INSTANCE
#undef FCP_ENTRY

/* The kb x jb block, 1 <= kb <= FCP_KB, 1 <= jb <= FCP_JB (the callers keep to these). */
static int FC_FN(fc_pixvec_wgrad)(int kb, int jb, FCP_ARGS) {
    FC_FN(fcp_table)[(kb - 1) * FCP_JB + jb - 1](FCP_PASS);
    return 0;
}

#else
static int FC_FN(fc_pixvec_wgrad)(int kb, int jb, FCP_ARGS) {
    (void)kb, (void)jb, (void)x, (void)g, (void)L, (void)ho, (void)wo, (void)wp, (void)dw;
    (void)sums, (void)k_stride;
    return FC_UNAVAILABLE;
}
#endif

#undef FCP_ARGS
#undef FCP_PASS
