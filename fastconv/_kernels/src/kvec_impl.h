/* The channel-vector kernels for one element type FC_T (included by kvec.h per type). */

/* Forward block arguments: p, the padded input at the block; tap_off[t], tap t's offset in
 * it (ntaps taps); run: 3 where the taps come in threes of consecutive offsets (a 3x3
 * kernel's rows at dilation 1), else 1; wb, the taps' weights, (ntaps, kv*lanes); pix_off,
 * pixel a's offset, or NULL where the pixels are step apart in p (one output row of a
 * padded image, step its stride across: 1 or 2); o, the block's first output (channel k at o + k*L), kb_n channels and npix
 * pixels of it real (the rest is padding); bias (of the block's channels) NULL for none;
 * res, NULL or a residual laid out as o, added after the bias; relu: max(0, .) last (a
 * network's residual addition and ReLU in the block's registers, with the bits of the
 * separate passes). */
#define FCK_ARGS                                                                                   \
    const FC_T *p, const Py_ssize_t *tap_off, Py_ssize_t ntaps, int run, const FC_T *wb,           \
        const Py_ssize_t *pix_off, int step, FC_T *o, Py_ssize_t L, int kb_n, int npix,            \
        const FC_T *bias, const FC_T *res, Py_ssize_t res_L, int relu
#define FCK_PASS                                                                                   \
    p, tap_off, ntaps, run, wb, pix_off, step, o, L, kb_n, npix, bias, res, res_L, relu
/* Weight-gradient block arguments: the A taps' offsets tap_off in p, summed over `rows`
 * output rows (row_step apart in p) of `cols` columns: sums[a] (+)= sum over pixels of
 * p[tap_off[a] + pixel] * got[pixel], with got the grad_output block transposed to
 * (pixels, kv*lanes) (fc_load_tile); accumulate: add to sums, else overwrite them. */
#define FCKW_ARGS                                                                                  \
    const FC_T *p, const Py_ssize_t *tap_off, Py_ssize_t rows, Py_ssize_t cols,                    \
        Py_ssize_t row_step, const FC_T *got, int accumulate, FC_T *sums
#define FCKW_PASS p, tap_off, rows, cols, row_step, got, accumulate, sums

#if FCK_AVAILABLE
/* acc[a][v] += sum over the taps of the weights times pixel a's input. pix_off is NULL or
 * not, and step a constant, at each call site, so the test folds away in each copy. */
static FC_INLINE void FC_FN(fck_taps)(const int kv, const int A, fcv_t acc[][2], const FC_T* p,
                                      const Py_ssize_t* tap_off, Py_ssize_t ntaps, const FC_T* wb,
                                      const Py_ssize_t* pix_off, const int step) {
    const int lanes = FC_LANES;
    for (Py_ssize_t t = 0; t < ntaps; t++) {
        const FC_T* pt = p + tap_off[t];
        fcv_t w[2];
        FC_PRAGMA(GCC unroll 4)
        for (int v = 0; v < kv; v++) w[v] = fcv_loadu(wb + (t * kv + v) * lanes);
        FC_PRAGMA(GCC unroll 32)
        for (int a = 0; a < A; a++) {
            fcv_t xa = fcv_set1(pt[pix_off ? pix_off[a] : a * step]);
            FC_PRAGMA(GCC unroll 4)
            for (int v = 0; v < kv; v++) acc[a][v] = fcv_fmadd(w[v], xa, acc[a][v]);
        }
    }
}

/* The accumulators of both blocks: acc[a][v] = from[(a*kv + v)*lanes ..], or zero where from
 * is NULL (a constant NULL in the forward block, so the test folds away there). */
static FC_INLINE void FC_FN(fck_start)(const int kv, const int A, fcv_t acc[][2],
                                       const FC_T* from) {
    const int lanes = FC_LANES;
    FC_PRAGMA(GCC unroll 32)
    for (int a = 0; a < A; a++) {
        FC_PRAGMA(GCC unroll 4)
        for (int v = 0; v < kv; v++)
            acc[a][v] = from ? fcv_loadu(from + (a * kv + v) * lanes) : fcv_setzero();
    }
}

/* fck_taps for taps in threes of consecutive offsets and pixels step apart: pixel a at tap
 * 3g+r reads pt[step*a + r], so each input value, broadcast once, feeds the pixels of all
 * the row's taps that read it (at step 1 three FMAs a load where fck_taps does 1: it is
 * bound by the loads; at step 2 two loads for three FMAs). Each accumulator still adds its
 * taps in order (input j feeds tap r of pixel (j - r) / step, and j grows), so the bits
 * are fck_taps'. */
static FC_INLINE void FC_FN(fck_taps3)(const int kv, const int A, fcv_t acc[][2], const FC_T* p,
                                       const Py_ssize_t* tap_off, Py_ssize_t ntaps,
                                       const FC_T* wb, const int step) {
    const int lanes = FC_LANES;
    for (Py_ssize_t t = 0; t < ntaps; t += 3) {
        const FC_T* pt = p + tap_off[t];
        fcv_t w[3][2];
        FC_PRAGMA(GCC unroll 3)
        for (int r = 0; r < 3; r++) {
            FC_PRAGMA(GCC unroll 4)
            for (int v = 0; v < kv; v++) w[r][v] = fcv_loadu(wb + ((t + r) * kv + v) * lanes);
        }
        FC_PRAGMA(GCC unroll 64)
        for (int j = 0; j < step * (A - 1) + 3; j++) {
            fcv_t xj = fcv_set1(pt[j]);
            FC_PRAGMA(GCC unroll 3)
            for (int r = 0; r < 3; r++) {
                const int a = (j - r) / step;
                if (j < r || (j - r) % step || a >= A) continue;
                const int in = a < 0 ? 0 : a; /* keeps the skipped index in bounds for GCC */
                FC_PRAGMA(GCC unroll 4)
                for (int v = 0; v < kv; v++) acc[in][v] = fcv_fmadd(w[r][v], xj, acc[in][v]);
            }
        }
    }
}

static FC_INLINE void FC_FN(fck_body)(const int kv, const int A, FCK_ARGS) {
    const int lanes = FC_LANES;
    fcv_t acc[FCK_MAX_A1][2];
    FC_FN(fck_start)(kv, A, acc, NULL);
    const int threes =
        run == 3 && pix_off == NULL && A <= (kv == 1 ? FCK_THREES_MAX_A1 : FCK_THREES_MAX_A2);
    if (threes && step == 2)
        FC_FN(fck_taps3)(kv, A, acc, p, tap_off, ntaps, wb, 2);
    else if (threes)
        FC_FN(fck_taps3)(kv, A, acc, p, tap_off, ntaps, wb, 1);
    else if (pix_off == NULL && step == 2)
        FC_FN(fck_taps)(kv, A, acc, p, tap_off, ntaps, wb, NULL, 2);
    else if (pix_off == NULL)
        FC_FN(fck_taps)(kv, A, acc, p, tap_off, ntaps, wb, NULL, 1);
    else
        FC_FN(fck_taps)(kv, A, acc, p, tap_off, ntaps, wb, pix_off, 1);
    /* vector v holds output channels v*lanes.., lanes pixels a0.. turn into one vector per
     * channel: o + channel * L + a0 */
    FC_PRAGMA(GCC unroll 4)
    for (int v = 0; v < kv; v++) {
        if (v * lanes >= kb_n) break;
        int channels = kb_n - v * lanes < lanes ? kb_n - v * lanes : lanes;
        FC_PRAGMA(GCC unroll 4)
        for (int a0 = 0; a0 < A; a0 += lanes) {
            if (a0 >= npix) break;
            fcv_t r[sizeof(fcv_t) / sizeof(FC_T)];
            FC_PRAGMA(GCC unroll 16)
            for (int i = 0; i < lanes; i++) /* pixels past A: zero rows (the inner test only
                                             * keeps the unused index in bounds for GCC) */
                r[i] = a0 + i < A ? acc[a0 + i < A ? a0 + i : 0][v] : fcv_setzero();
            fcv_transpose(r);
            int n = npix - a0 < lanes ? npix - a0 : lanes;
            for (int k = 0; k < channels; k++) {
                Py_ssize_t at = (Py_ssize_t)(v * lanes + k) * L + a0;
                fcv_t y = bias ? fcv_add(r[k], fcv_set1(bias[v * lanes + k])) : r[k];
                if (res)
                    y = fcv_add(y, fcv_load_n(res + (Py_ssize_t)(v * lanes + k) * res_L + a0, n));
                if (relu) y = fcv_relu(y);
                fcv_store_n(o + at, y, n);
            }
        }
    }
}

static FC_INLINE void FC_FN(fckw_body)(const int kv, const int A, FCKW_ARGS) {
    const int lanes = FC_LANES;
    fcv_t acc[FCK_MAX_A1][2];
    FC_FN(fck_start)(kv, A, acc, accumulate ? sums : NULL);
    for (Py_ssize_t r = 0; r < rows; r++) {
        const FC_T* pr[FCK_MAX_A1];
        FC_PRAGMA(GCC unroll 32)
        for (int a = 0; a < A; a++) pr[a] = p + r * row_step + tap_off[a];
        const FC_T* gr = got + r * cols * kv * lanes;
        for (Py_ssize_t c = 0; c < cols; c++) {
            fcv_t g[2];
            FC_PRAGMA(GCC unroll 4)
            for (int v = 0; v < kv; v++) g[v] = fcv_loadu(gr + (c * kv + v) * lanes);
            FC_PRAGMA(GCC unroll 32)
            for (int a = 0; a < A; a++) {
                fcv_t xa = fcv_set1(pr[a][c]);
                FC_PRAGMA(GCC unroll 4)
                for (int v = 0; v < kv; v++) acc[a][v] = fcv_fmadd(xa, g[v], acc[a][v]);
            }
        }
    }
    FC_PRAGMA(GCC unroll 32)
    for (int a = 0; a < A; a++) {
        FC_PRAGMA(GCC unroll 4)
        for (int v = 0; v < kv; v++) fcv_storeu(sums + (a * kv + v) * lanes, acc[a][v]);
    }
}

/* One never-inlined instance of each body per (kv, a) of FCK_LIST1/2, with kv and a as
 * constants (fck_f_1_5, fckw_f_1_5, ...), and the tables fc_kvec* dispatch through. */
#define FCK_INSTANCE(KV, A)                                                                        \
    static FC_NOINLINE void FC_FN(fck_##KV##_##A)(FCK_ARGS) { FC_FN(fck_body)(KV, A, FCK_PASS); }  \
    static FC_NOINLINE void FC_FN(fckw_##KV##_##A)(FCKW_ARGS) {                                    \
        FC_FN(fckw_body)(KV, A, FCKW_PASS);                                                        \
    }
#define FCK_ENTRY(KV, A) FC_FN(fck_##KV##_##A),
#define FCKW_ENTRY(KV, A) FC_FN(fckw_##KV##_##A),
FCK_LIST1(FCK_INSTANCE)
FCK_LIST2(FCK_INSTANCE)
static void (*const FC_FN(fck_table1)[])(FCK_ARGS) = {FCK_LIST1(FCK_ENTRY)};
static void (*const FC_FN(fck_table2)[])(FCK_ARGS) = {FCK_LIST2(FCK_ENTRY)};
static void (*const FC_FN(fckw_table1)[])(FCKW_ARGS) = {FCK_LIST1(FCKW_ENTRY)};
static void (*const FC_FN(fckw_table2)[])(FCKW_ARGS) = {FCK_LIST2(FCKW_ENTRY)};
#undef FCK_INSTANCE
#undef FCK_ENTRY
#undef FCKW_ENTRY

/* The forward block of instance (kv, a): kv in {1, 2}, 1 <= a <= FCK_MAX_A<kv> (the
 * callers keep to these). */
static int FC_FN(fc_kvec)(int kv, int a, FCK_ARGS) {
    (kv == 1 ? FC_FN(fck_table1) : FC_FN(fck_table2))[a - 1](FCK_PASS);
    return 0;
}
/* The weight-gradient block of instance (kv, a), as fc_kvec. */
static int FC_FN(fc_kvec_wgrad)(int kv, int a, FCKW_ARGS) {
    (kv == 1 ? FC_FN(fckw_table1) : FC_FN(fckw_table2))[a - 1](FCKW_PASS);
    return 0;
}

/* grad_output's planes as the weight-gradient kernel reads them: tile (pixels, kvl)
 * [a, k] = g[k*pixels + a] for the first `channels` channels, 0 for the rest of the
 * vectors; lanes x lanes squares through the register transpose (element by element it
 * cost ~3% of a 3x3 layer's weight gradient). */
static int FC_FN(fc_load_tile)(const FC_T* g, FC_T* tile, Py_ssize_t channels, Py_ssize_t pixels,
                               Py_ssize_t kvl) {
    const int lanes = FC_LANES;
    for (Py_ssize_t c0 = 0; c0 < kvl; c0 += lanes)
        for (Py_ssize_t a0 = 0; a0 < pixels; a0 += lanes) {
            int n = pixels - a0 < lanes ? (int)(pixels - a0) : lanes;
            fcv_t r[sizeof(fcv_t) / sizeof(FC_T)];
            for (int i = 0; i < lanes; i++)
                r[i] =
                    c0 + i < channels ? fcv_load_n(g + (c0 + i) * pixels + a0, n) : fcv_setzero();
            fcv_transpose(r);
            for (int j = 0; j < n; j++) fcv_storeu(tile + (a0 + j) * kvl + c0, r[j]);
        }
    return 0;
}

#else
/* The portable build has no channel-vector kernel: its callers get FC_UNAVAILABLE. */
static int FC_FN(fc_kvec)(int kv, int a, FCK_ARGS) {
    (void)kv, (void)a, (void)p, (void)tap_off, (void)ntaps, (void)run, (void)wb, (void)pix_off;
    (void)step;
    (void)o, (void)L, (void)kb_n, (void)npix, (void)bias, (void)res, (void)res_L, (void)relu;
    return FC_UNAVAILABLE;
}
static int FC_FN(fc_kvec_wgrad)(int kv, int a, FCKW_ARGS) {
    (void)kv, (void)a, (void)p, (void)tap_off, (void)rows, (void)cols, (void)row_step;
    (void)got, (void)accumulate, (void)sums;
    return FC_UNAVAILABLE;
}
static int FC_FN(fc_load_tile)(const FC_T* g, FC_T* tile, Py_ssize_t channels, Py_ssize_t pixels,
                               Py_ssize_t kvl) {
    (void)g, (void)tile, (void)channels, (void)pixels, (void)kvl;
    return FC_UNAVAILABLE;
}
#endif

#undef FCK_ARGS
#undef FCK_PASS
#undef FCKW_ARGS
#undef FCKW_PASS
