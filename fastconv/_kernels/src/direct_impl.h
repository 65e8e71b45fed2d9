/* The direct-convolution block for one element type FC_T (included by direct.h per type).
 *
 * Arguments of every block: p, the phase-split padded input (see pad.h) at the block's
 * first row and column, cg channels of sw phases of hp rows of wq columns; wb, the block's
 * weights packed (cg*kh*kw, block channels); o, the first output, channels L items apart.
 * The first kb_n channels and vw_n columns are stored (the rest of the block is padding),
 * plus bias[k] when bias is not NULL. */

/* The block's taps in packed-weight order (input channel c, kernel row i, kernel column j),
 * one walk for both blocks below: runs the statements given with xp at the tap's first
 * input, then moves wt past the tap's `wstep` weights. Column j*dw of the phase-split input
 * is phase q, m columns in. A macro, not a function taking the body: the accumulators must
 * stay in the caller's registers. */
#define FC_DIRECT_EACH_TAP(wstep, ...)                                                             \
    for (Py_ssize_t c = 0; c < cg; c++)                                                            \
        for (Py_ssize_t i = 0; i < kh; i++) {                                                      \
            const FC_T* xr = p + (c * sw * hp + i * dh) * wq;                                      \
            Py_ssize_t q = 0, m = 0;                                                               \
            for (Py_ssize_t j = 0; j < kw; j++) {                                                  \
                const FC_T* xp = xr + q * hp * wq + m;                                             \
                __VA_ARGS__                                                                        \
                wt += (wstep);                                                                     \
                for (q += dw; q >= sw; q -= sw) m++;                                               \
            }                                                                                      \
        }

#if defined(__AVX512F__)
/* AVX-512: nv zmm of columns per output channel, kbn channels, in intrinsics: GCC's own
 * code for 8 zmm accumulators (4x32 or 8x16 floats) kept them on the stack and measured 2x
 * slower than its 4-zmm block. The wide block (nv = 2, 16 accumulators) measured 1.1x the
 * narrow one where its columns are not mostly padding. nv and kbn are constants in each
 * instance below, so the accumulators stay in registers. */
static FC_INLINE void FC_FN(fc_direct_body)(const int nv, const int kbn, const FC_T* p,
                                            const FC_T* wb, FC_T* o, const FC_T* bias,
                                            Py_ssize_t kb_n, Py_ssize_t vw_n, Py_ssize_t cg,
                                            Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw,
                                            Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t hp,
                                            Py_ssize_t wq, Py_ssize_t L) {
    const int lanes = FC_LANES;
    fcv_t acc[FC_KB][FC_WIDE], x[FC_WIDE];
    for (int k = 0; k < kbn; k++)
        for (int u = 0; u < nv; u++) acc[k][u] = fcv_setzero();
    const FC_T* wt = wb;
    FC_DIRECT_EACH_TAP(kbn, {
        for (int u = 0; u < nv; u++) x[u] = fcv_loadu(xp + u * lanes);
        for (int k = 0; k < kbn; k++) {
            fcv_t w = fcv_set1(wt[k]);
            for (int u = 0; u < nv; u++) acc[k][u] = fcv_fmadd(w, x[u], acc[k][u]);
        }
    })
    for (int u = 0; u < nv && u * lanes < vw_n; u++) {
        Py_ssize_t n = vw_n - u * lanes < lanes ? vw_n - u * lanes : lanes;
        fcmask_t mask = fcv_first(n);
        for (Py_ssize_t k = 0; k < kb_n; k++)
            fcv_mask_storeu(o + k * L + u * lanes, mask,
                            fcv_add(acc[k][u], fcv_set1(bias ? bias[k] : (FC_T)0)));
    }
}

/* The four blocks: (narrow, wide) x (FC_KB, FC_KB6 channels). */
#define FC_DIRECT_ARGS                                                                             \
    const FC_T *p, const FC_T *wb, FC_T *o, const FC_T *bias, Py_ssize_t kb_n, Py_ssize_t vw_n,    \
        Py_ssize_t cg, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,  \
        Py_ssize_t hp, Py_ssize_t wq, Py_ssize_t L
#define FC_DIRECT_PASS p, wb, o, bias, kb_n, vw_n, cg, kh, kw, sw, dh, dw, hp, wq, L
static FC_NOINLINE void FC_FN(fc_direct_block)(FC_DIRECT_ARGS) {
    FC_FN(fc_direct_body)(1, FC_KB, FC_DIRECT_PASS);
}
static FC_NOINLINE void FC_FN(fc_direct_block_wide)(FC_DIRECT_ARGS) {
    FC_FN(fc_direct_body)(2, FC_KB, FC_DIRECT_PASS);
}
static FC_NOINLINE void FC_FN(fc_direct_block6)(FC_DIRECT_ARGS) {
    FC_FN(fc_direct_body)(1, FC_KB6, FC_DIRECT_PASS);
}
static FC_NOINLINE void FC_FN(fc_direct_block_wide6)(FC_DIRECT_ARGS) {
    FC_FN(fc_direct_body)(2, FC_KB6, FC_DIRECT_PASS);
}

/* The block for (wide, six). */
static void FC_FN(fc_direct)(int wide, int six, FC_DIRECT_ARGS) {
    (six ? (wide ? FC_FN(fc_direct_block_wide6) : FC_FN(fc_direct_block6))
         : (wide ? FC_FN(fc_direct_block_wide) : FC_FN(fc_direct_block)))(FC_DIRECT_PASS);
}
#undef FC_DIRECT_ARGS
#undef FC_DIRECT_PASS

#else
/* the columns of the portable block */
#define FC_VW (sizeof(FC_T) == sizeof(float) ? FC_VW_F : FC_VW_D)

/* Portable C, FC_KB x FC_VW, which GCC vectorizes for the build's instruction set; one
 * block, whatever wide and six say (FC_WIDE and FC_KB6 tell the caller). */
static FC_NOINLINE void FC_FN(fc_direct_block)(const FC_T* p, const FC_T* wb, FC_T* o,
                                               const FC_T* bias, Py_ssize_t kb_n, Py_ssize_t vw_n,
                                               Py_ssize_t cg, Py_ssize_t kh, Py_ssize_t kw,
                                               Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                                               Py_ssize_t hp, Py_ssize_t wq, Py_ssize_t L) {
    FC_T acc[FC_KB][FC_VW] = {{0}};
    const FC_T* wt = wb;
    FC_DIRECT_EACH_TAP(FC_KB, {
        FC_T x[FC_VW];
        for (int v = 0; v < FC_VW; v++) x[v] = xp[v];
        for (int k = 0; k < FC_KB; k++) {
            FC_T w = wt[k];
            for (int v = 0; v < FC_VW; v++) acc[k][v] += w * x[v];
        }
    })
    for (Py_ssize_t k = 0; k < kb_n; k++)
        for (Py_ssize_t v = 0; v < vw_n; v++) o[k * L + v] = acc[k][v] + (bias ? bias[k] : (FC_T)0);
}

static void FC_FN(fc_direct)(int wide, int six, const FC_T* p, const FC_T* wb, FC_T* o,
                             const FC_T* bias, Py_ssize_t kb_n, Py_ssize_t vw_n, Py_ssize_t cg,
                             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh,
                             Py_ssize_t dw, Py_ssize_t hp, Py_ssize_t wq, Py_ssize_t L) {
    (void)wide;
    (void)six;
    FC_FN(fc_direct_block)(p, wb, o, bias, kb_n, vw_n, cg, kh, kw, sw, dh, dw, hp, wq, L);
}
#undef FC_VW
#endif
#undef FC_DIRECT_EACH_TAP
