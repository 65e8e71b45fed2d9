/* The Winograd transforms for one element type FC_T (included by winograd.h per type). */

/* V = B^T d B for the tiles t0 .. t0+nt-1 (raster order, TW tiles a row) of each channel
 * of p (C, Hp, Wp; tile (ti, tj) reads its 4x4 patch d from row 2ti, column 2tj):
 * v[(4i + j) * C * TB + c * TB + t - t0] = V[i, j].
 * B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]. */
static FC_NOINLINE void FC_FN(fc_winograd_input)(const FC_T* __restrict p, Py_ssize_t C,
                                                 Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t TW,
                                                 Py_ssize_t t0, Py_ssize_t nt, Py_ssize_t TB,
                                                 FC_T* __restrict v) {
    const Py_ssize_t cs = C * TB;
    for (Py_ssize_t c = 0; c < C; c++)
        for (Py_ssize_t t = t0; t < t0 + nt;) {
            Py_ssize_t ti = t / TW, tj = t - ti * TW;
            Py_ssize_t n = TW - tj < t0 + nt - t ? TW - tj : t0 + nt - t;
            const FC_T* r0 = p + (c * Hp + 2 * ti) * Wp + 2 * tj;
            const FC_T* r1 = r0 + Wp;
            const FC_T* r2 = r1 + Wp;
            const FC_T* r3 = r2 + Wp;
            FC_T* __restrict o = v + c * TB + (t - t0);
            FCW_IVDEP
            for (Py_ssize_t m = 0; m < n; m++) {
                FC_T a[4], b[4], e[4], f[4]; /* rows of B^T d */
                for (int j = 0; j < 4; j++) {
                    a[j] = r0[2 * m + j] - r2[2 * m + j];
                    b[j] = r1[2 * m + j] + r2[2 * m + j];
                    e[j] = r2[2 * m + j] - r1[2 * m + j];
                    f[j] = r1[2 * m + j] - r3[2 * m + j];
                }
                const FC_T* rows[4] = {a, b, e, f};
                for (int i = 0; i < 4; i++) { /* times B */
                    const FC_T* s = rows[i];
                    o[(4 * i + 0) * cs + m] = s[0] - s[2];
                    o[(4 * i + 1) * cs + m] = s[1] + s[2];
                    o[(4 * i + 2) * cs + m] = s[2] - s[1];
                    o[(4 * i + 3) * cs + m] = s[1] - s[3];
                }
            }
            t += n;
        }
}

/* Row y of A^T M A + bk for tile m, into y01[0], y01[1]; M[i, j] at mk[(4i + j) * ks + m]. */
static FC_INLINE void FC_FN(fcw_tile_row)(const FC_T* mk, Py_ssize_t ks, Py_ssize_t m, int y,
                                          FC_T bk, FC_T* y0, FC_T* y1) {
    FC_T s[4];
    for (int j = 0; j < 4; j++)
        s[j] = y == 0 ? mk[j * ks + m] + mk[(4 + j) * ks + m] + mk[(8 + j) * ks + m]
                      : mk[(4 + j) * ks + m] - mk[(8 + j) * ks + m] - mk[(12 + j) * ks + m];
    *y0 = s[0] + s[1] + s[2] + bk;
    *y1 = s[1] - s[2] - s[3] + bk;
}

/* out[k, 2ti + y, 2tj + x] = (A^T M A)[y, x] + bias[k] for the tiles t0 .. t0+nt-1, where
 * inside (Ho, Wo); M[i, j] = mbuf[(4i + j) * K * TB + k * TB + t - t0]; bias NULL for
 * none. A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]. Returns whether some output is not finite
 * (inf, NaN). */
static FC_NOINLINE int FC_FN(fc_winograd_output)(const FC_T* __restrict mbuf, Py_ssize_t K,
                                                 Py_ssize_t TB, Py_ssize_t TW, Py_ssize_t t0,
                                                 Py_ssize_t nt, FC_T* __restrict out, Py_ssize_t Ho,
                                                 Py_ssize_t Wo, const FC_T* bias) {
    const Py_ssize_t ks = K * TB;
    int bad = 0;
    for (Py_ssize_t k = 0; k < K; k++) {
        const FC_T bk = bias ? bias[k] : (FC_T)0;
        for (Py_ssize_t t = t0; t < t0 + nt;) {
            Py_ssize_t ti = t / TW, tj = t - ti * TW;
            Py_ssize_t n = TW - tj < t0 + nt - t ? TW - tj : t0 + nt - t;
            /* an odd Wo leaves the row's last tile one column; an odd Ho, the last row of
             * tiles one row */
            Py_ssize_t n_whole = 2 * (tj + n) <= Wo ? n : n - 1;
            int rows = 2 * ti + 1 < Ho ? 2 : 1;
            const FC_T* mk = mbuf + k * TB + (t - t0);
            FC_T* o0 = out + (k * Ho + 2 * ti) * Wo + 2 * tj;
            for (int y = 0; y < rows; y++) {
                FC_T* __restrict oy = o0 + y * Wo;
                Py_ssize_t m = 0;
                FC_T y0, y1;
                FCW_IVDEP
                for (; m < n_whole; m++) {
                    FC_FN(fcw_tile_row)(mk, ks, m, y, bk, &y0, &y1);
                    bad |= (y0 + y1) * 0 != 0;
                    oy[2 * m] = y0;
                    oy[2 * m + 1] = y1;
                }
                if (m < n) {
                    FC_FN(fcw_tile_row)(mk, ks, m, y, bk, &y0, &y1);
                    bad |= y0 * 0 != 0;
                    oy[2 * m] = y0;
                }
            }
            t += n;
        }
    }
    return bad;
}
