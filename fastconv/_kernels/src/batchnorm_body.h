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
    for (ptrdiff_t i = 0; i < n; i++) {
        const FC_BN_T *row = x + i * stride;
        ptrdiff_t j = 0;
        for (; j + FC_BN_LANES <= l; j += FC_BN_LANES)
            for (int u = 0; u < FC_BN_NV; u++) {
                fc_bn_vd d = FC_BN_NAME(fc_bn_load)(row + j + u * FC_BN_VW) - shift;
                s[u] += d;
                q[u] += d * d;
            }
        for (; j < l; j++) {
            double d = (double)row[j] - shift;
            sum_tail += d;
            sumsq_tail += d * d;
        }
    }
    for (int u = 0; u < FC_BN_NV; u++)  /* element by element: a memcpy kept s in memory */
        for (int k = 0; k < FC_BN_VW; k++) {
            sum[u * FC_BN_VW + k] = s[u][k];
            sumsq[u * FC_BN_VW + k] = q[u][k];
        }
#else
    for (ptrdiff_t i = 0; i < n; i++) {
        const FC_BN_T *row = x + i * stride;
        ptrdiff_t j = 0;
        for (; j + FC_BN_LANES <= l; j += FC_BN_LANES)
            for (int k = 0; k < FC_BN_LANES; k++) {
                double d = (double)row[j + k] - shift;
                sum[k] += d;
                sumsq[k] += d * d;
            }
        for (; j < l; j++) {
            double d = (double)row[j] - shift;
            sum_tail += d;
            sumsq_tail += d * d;
        }
    }
#endif
    const double count = (double)n * (double)l;
    const double centered = (fc_bn_lane_total(sum) + sum_tail) / count;  /* mean - shift */
    const double v = (fc_bn_lane_total(sumsq) + sumsq_tail) / count - centered * centered;
    *mean = shift + centered;
    *var = v < 0 ? 0 : v;  /* rounding can take a constant channel below 0; NaN stays */
}

/* y = (x - mean) * scale + shift, the normalization with its affine parameters folded in. */
static void FC_BN_NAME(fc_bn_affine)(const FC_BN_T *x, FC_BN_T *y, ptrdiff_t n,
                                     ptrdiff_t stride, ptrdiff_t l, FC_BN_T mean,
                                     FC_BN_T scale, FC_BN_T shift)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const FC_BN_T *restrict in = x + i * stride;
        FC_BN_T *restrict out = y + i * stride;
        for (ptrdiff_t j = 0; j < l; j++)
            out[j] = (in[j] - mean) * scale + shift;
    }
}

/* The backward's sums: sum of g and of g * (x - mean) over one channel. */
static void FC_BN_NAME(fc_bn_grad_sums)(const FC_BN_T *g, const FC_BN_T *x, ptrdiff_t n,
                                        ptrdiff_t stride, ptrdiff_t l, double mean,
                                        double *sum_g, double *sum_gx)
{
    double sg[FC_BN_LANES] = {0}, sgx[FC_BN_LANES] = {0}, sg_tail = 0, sgx_tail = 0;
#ifdef FC_BN_VECTORS
    fc_bn_vd s[FC_BN_NV] = {{0}}, p[FC_BN_NV] = {{0}};
    for (ptrdiff_t i = 0; i < n; i++) {
        const FC_BN_T *grow = g + i * stride, *xrow = x + i * stride;
        ptrdiff_t j = 0;
        for (; j + FC_BN_LANES <= l; j += FC_BN_LANES)
            for (int u = 0; u < FC_BN_NV; u++) {
                fc_bn_vd gv = FC_BN_NAME(fc_bn_load)(grow + j + u * FC_BN_VW);
                s[u] += gv;
                p[u] += gv * (FC_BN_NAME(fc_bn_load)(xrow + j + u * FC_BN_VW) - mean);
            }
        for (; j < l; j++) {
            double gv = (double)grow[j];
            sg_tail += gv;
            sgx_tail += gv * ((double)xrow[j] - mean);
        }
    }
    for (int u = 0; u < FC_BN_NV; u++)
        for (int k = 0; k < FC_BN_VW; k++) {
            sg[u * FC_BN_VW + k] = s[u][k];
            sgx[u * FC_BN_VW + k] = p[u][k];
        }
#else
    for (ptrdiff_t i = 0; i < n; i++) {
        const FC_BN_T *grow = g + i * stride, *xrow = x + i * stride;
        ptrdiff_t j = 0;
        for (; j + FC_BN_LANES <= l; j += FC_BN_LANES)
            for (int k = 0; k < FC_BN_LANES; k++) {
                double gv = (double)grow[j + k];
                sg[k] += gv;
                sgx[k] += gv * ((double)xrow[j + k] - mean);
            }
        for (; j < l; j++) {
            double gv = (double)grow[j];
            sg_tail += gv;
            sgx_tail += gv * ((double)xrow[j] - mean);
        }
    }
#endif
    *sum_g = fc_bn_lane_total(sg) + sg_tail;
    *sum_gx = fc_bn_lane_total(sgx) + sgx_tail;
}

/* dx = g * a + (x - mean) * b + c: the training backward with its per-channel coefficients
 * (a = weight * invstd, b = -a * invstd^2 * mean(g * (x - mean)), c = -a * mean(g)). */
static void FC_BN_NAME(fc_bn_grad_input)(const FC_BN_T *g, const FC_BN_T *x, FC_BN_T *dx,
                                         ptrdiff_t n, ptrdiff_t stride, ptrdiff_t l,
                                         FC_BN_T mean, FC_BN_T a, FC_BN_T b, FC_BN_T c)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const FC_BN_T *restrict grow = g + i * stride, *restrict xrow = x + i * stride;
        FC_BN_T *restrict out = dx + i * stride;
        for (ptrdiff_t j = 0; j < l; j++)
            out[j] = grow[j] * a + (xrow[j] - mean) * b + c;
    }
}

/* dx = g * a: the backward through fixed (running) statistics. */
static void FC_BN_NAME(fc_bn_grad_input_fixed)(const FC_BN_T *g, FC_BN_T *dx, ptrdiff_t n,
                                               ptrdiff_t stride, ptrdiff_t l, FC_BN_T a)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const FC_BN_T *restrict grow = g + i * stride;
        FC_BN_T *restrict out = dx + i * stride;
        for (ptrdiff_t j = 0; j < l; j++)
            out[j] = grow[j] * a;
    }
}
