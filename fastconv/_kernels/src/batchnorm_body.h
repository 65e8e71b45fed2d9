/* One type's batch normalization kernels: included by batchnorm.h with FC_BN_T (float or
 * double) and FC_BN_NAME (the suffix). See batchnorm.h for the layout and the sums. */

/* Mean and biased variance of one channel's n * l values. */
static void FC_BN_NAME(fc_bn_moments)(const FC_BN_T *x, ptrdiff_t n, ptrdiff_t stride,
                                      ptrdiff_t l, double *mean, double *var)
{
    double sum[FC_BN_LANES] = {0}, sumsq[FC_BN_LANES] = {0}, sum_tail = 0, sumsq_tail = 0;
    const double shift = (double)x[0];
#ifdef FC_BN_VECTORS
    fc_bn_vd s[FC_BN_NV] = {{0}}, q[FC_BN_NV] = {{0}};
#endif
    for (ptrdiff_t i = 0; i < n; i++) {
        const FC_BN_T *row = x + i * stride;
        ptrdiff_t j = 0;
        for (; j + FC_BN_LANES <= l; j += FC_BN_LANES) {
#ifdef FC_BN_VECTORS
            for (int u = 0; u < FC_BN_NV; u++) {
                fc_bn_vd d = FC_BN_NAME(fc_bn_load)(row + j + u * FC_BN_VW) - shift;
                s[u] += d;
                q[u] += d * d;
            }
#else
            for (int k = 0; k < FC_BN_LANES; k++) {
                double d = (double)row[j + k] - shift;
                sum[k] += d;
                sumsq[k] += d * d;
            }
#endif
        }
        for (; j < l; j++) {
            double d = (double)row[j] - shift;
            sum_tail += d;
            sumsq_tail += d * d;
        }
    }
#ifdef FC_BN_VECTORS
    for (int u = 0; u < FC_BN_NV; u++)  /* element by element: a memcpy kept s in memory */
        for (int k = 0; k < FC_BN_VW; k++) {
            sum[u * FC_BN_VW + k] = s[u][k];
            sumsq[u * FC_BN_VW + k] = q[u][k];
        }
#endif
    const double count = (double)n * (double)l;
    const double centered = (fc_bn_lane_total(sum) + sum_tail) / count;  /* mean - shift */
    const double v = (fc_bn_lane_total(sumsq) + sumsq_tail) / count - centered * centered;
    *mean = shift + centered;
    *var = v < 0 ? 0 : v;  /* rounding can take a constant channel below 0; NaN stays */
}

/* One element of the normalization: the one place the expression is written, so every
 * caller rounds it the same way (a build level with FMA may contract it, the same for all). */
static inline FC_BN_T FC_BN_NAME(fc_bn_affine1)(FC_BN_T v, FC_BN_T m, FC_BN_T s, FC_BN_T t)
{
    return (v - m) * s + t;
}

/* y = (x - mean) * scale + shift over `rows` consecutive runs of l values (the (n, c) rows
 * of an (N, C, L) array in memory order, the first of channel c0): the normalization with
 * its affine parameters folded in, per-channel coefficients rounded to the data's type. In
 * memory order, not channel by channel: one stream, as a copy (channel by channel, each
 * run of l values is a new stream for the prefetchers: 1.5-1.7x the time).
 * With `add` (an array like x, or NULL) y = that + add, and with `relu` y = relu(that):
 * each step rounded to the type as the separate passes round it, relu as fc's ReLU
 * (v < 0 ? 0 : v keeps -0.0 and NaN), so the bits are those of the unfused passes. */
static void FC_BN_NAME(fc_bn_affine_rows)(const FC_BN_T *x, FC_BN_T *y, ptrdiff_t rows,
                                          ptrdiff_t l, ptrdiff_t c0, ptrdiff_t channels,
                                          const double *mean, const double *scale,
                                          const double *shift, const FC_BN_T *add, int relu)
{
    ptrdiff_t c = c0;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_BN_T *restrict in = x + r * l;
        FC_BN_T *restrict out = y + r * l;
        const FC_BN_T m = (FC_BN_T)mean[c], s = (FC_BN_T)scale[c], t = (FC_BN_T)shift[c];
        if (add != NULL) {
            const FC_BN_T *restrict skip = add + r * l;
            for (ptrdiff_t j = 0; j < l; j++) {
                FC_BN_T v = FC_BN_NAME(fc_bn_affine1)(in[j], m, s, t) + skip[j];
                out[j] = relu && v < 0 ? 0 : v;
            }
        } else if (relu) {
            for (ptrdiff_t j = 0; j < l; j++) {
                FC_BN_T v = FC_BN_NAME(fc_bn_affine1)(in[j], m, s, t);
                out[j] = v < 0 ? 0 : v;
            }
        } else {
            for (ptrdiff_t j = 0; j < l; j++)
                out[j] = FC_BN_NAME(fc_bn_affine1)(in[j], m, s, t);
        }
        if (++c == channels)
            c = 0;
    }
}

/* Element j of a run of the gradient, through a ReLU when `y` (its output) is not NULL: 0
 * where y <= 0 (a NaN passes g), as fc's relu_backward, so the sums and the input gradient
 * see exactly the floats of the unfused relu_backward pass. */
static inline FC_BN_T FC_BN_NAME(fc_bn_grad_at)(const FC_BN_T *g, const FC_BN_T *y, ptrdiff_t j)
{
    FC_BN_T v = g[j];  /* loaded unconditionally, so the compiler selects */
    return y != NULL && y[j] <= 0 ? 0 : v;
}

#ifdef FC_BN_VECTORS
/* FC_BN_VW values of the gradient as doubles, through the ReLU as fc_bn_grad_at. */
static inline fc_bn_vd FC_BN_NAME(fc_bn_grad_load)(const FC_BN_T *g, const FC_BN_T *y)
{
    fc_bn_vd v = FC_BN_NAME(fc_bn_load)(g);
    if (y == NULL)
        return v;
    const fc_bn_vd zero = {0};
    return (fc_bn_vd)((fc_bn_vl)v & ~(fc_bn_vl)(FC_BN_NAME(fc_bn_load)(y) <= zero));
}
#endif

/* The backward's sums: sum of g and of g * (x - mean) over one channel, g through the ReLU
 * whose output is y when y is not NULL (fc_bn_grad_at; y laid out as g). */
static void FC_BN_NAME(fc_bn_grad_sums)(const FC_BN_T *g, const FC_BN_T *x, const FC_BN_T *y,
                                        ptrdiff_t n, ptrdiff_t stride, ptrdiff_t l,
                                        double mean, double *sum_g, double *sum_gx)
{
    double sg[FC_BN_LANES] = {0}, sgx[FC_BN_LANES] = {0}, sg_tail = 0, sgx_tail = 0;
#ifdef FC_BN_VECTORS
    fc_bn_vd s[FC_BN_NV] = {{0}}, p[FC_BN_NV] = {{0}};
#endif
    for (ptrdiff_t i = 0; i < n; i++) {
        const FC_BN_T *grow = g + i * stride, *xrow = x + i * stride;
        const FC_BN_T *yrow = y == NULL ? NULL : y + i * stride;
        ptrdiff_t j = 0;
        for (; j + FC_BN_LANES <= l; j += FC_BN_LANES) {
#ifdef FC_BN_VECTORS
            for (int u = 0; u < FC_BN_NV; u++) {
                const ptrdiff_t o = j + u * FC_BN_VW;
                fc_bn_vd gv = FC_BN_NAME(fc_bn_grad_load)(grow + o, yrow == NULL ? NULL : yrow + o);
                s[u] += gv;
                p[u] += gv * (FC_BN_NAME(fc_bn_load)(xrow + o) - mean);
            }
#else
            for (int k = 0; k < FC_BN_LANES; k++) {
                double gv = (double)FC_BN_NAME(fc_bn_grad_at)(grow, yrow, j + k);
                sg[k] += gv;
                sgx[k] += gv * ((double)xrow[j + k] - mean);
            }
#endif
        }
        for (; j < l; j++) {
            double gv = (double)FC_BN_NAME(fc_bn_grad_at)(grow, yrow, j);
            sg_tail += gv;
            sgx_tail += gv * ((double)xrow[j] - mean);
        }
    }
#ifdef FC_BN_VECTORS
    for (int u = 0; u < FC_BN_NV; u++)
        for (int k = 0; k < FC_BN_VW; k++) {
            sg[u * FC_BN_VW + k] = s[u][k];
            sgx[u * FC_BN_VW + k] = p[u][k];
        }
#endif
    *sum_g = fc_bn_lane_total(sg) + sg_tail;
    *sum_gx = fc_bn_lane_total(sgx) + sgx_tail;
}

/* One element of the training backward's input gradient (the one place it is written, as
 * fc_bn_affine1). */
static inline FC_BN_T FC_BN_NAME(fc_bn_grad1)(FC_BN_T gv, FC_BN_T xv, FC_BN_T m, FC_BN_T av,
                                             FC_BN_T bv, FC_BN_T cv)
{
    return gv * av + (xv - m) * bv + cv;
}

/* dx = g * a + (x - mean) * b + c over `rows` consecutive (n, c) rows, the first of channel
 * c0 (memory order, as fc_bn_affine_rows): the training backward with its per-channel
 * coefficients (a = weight * invstd, b = -a * invstd^2 * mean(g * (x - mean)),
 * c = -a * mean(g)). With b NULL, dx = g * a: the backward through fixed statistics. With
 * y (laid out as g) not NULL, g is taken through the ReLU whose output y is (fc_bn_grad_at). */
static void FC_BN_NAME(fc_bn_grad_input_rows)(const FC_BN_T *g, const FC_BN_T *x,
                                              const FC_BN_T *y, FC_BN_T *dx, ptrdiff_t rows,
                                              ptrdiff_t l, ptrdiff_t c0, ptrdiff_t channels,
                                              const double *mean, const double *a,
                                              const double *b, const double *c)
{
    ptrdiff_t ch = c0;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_BN_T *restrict grow = g + r * l, *restrict xrow = x + r * l;
        const FC_BN_T *restrict yrow = y == NULL ? NULL : y + r * l;
        FC_BN_T *restrict out = dx + r * l;
        const FC_BN_T av = (FC_BN_T)a[ch];
        if (b == NULL) {
            if (yrow == NULL)
                for (ptrdiff_t j = 0; j < l; j++)
                    out[j] = grow[j] * av;
            else
                for (ptrdiff_t j = 0; j < l; j++)
                    out[j] = FC_BN_NAME(fc_bn_grad_at)(grow, yrow, j) * av;
        } else {
            const FC_BN_T m = (FC_BN_T)mean[ch], bv = (FC_BN_T)b[ch], cv = (FC_BN_T)c[ch];
            if (yrow == NULL)
                for (ptrdiff_t j = 0; j < l; j++)
                    out[j] = FC_BN_NAME(fc_bn_grad1)(grow[j], xrow[j], m, av, bv, cv);
            else
                for (ptrdiff_t j = 0; j < l; j++)
                    out[j] = FC_BN_NAME(fc_bn_grad1)(FC_BN_NAME(fc_bn_grad_at)(grow, yrow, j),
                                                     xrow[j], m, av, bv, cv);
        }
        if (++ch == channels)
            ch = 0;
    }
}
