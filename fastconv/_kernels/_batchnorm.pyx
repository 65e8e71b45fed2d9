"""Batch normalization over (N, C, L) arrays, forward and backward, OpenMP.

The C loops are in src/batchnorm.h. Each pass that sums (the forward's moments, the
backward's two sums) takes one channel per task: a channel's sums are formed by one thread,
in an order fixed by the shape alone, so results are bitwise the same on any thread count.
The elementwise passes (the normalization, the input gradient) then run over the array in
memory order, in fixed chunks of (n, c) rows, with per-channel coefficients.

Per-channel parameters and statistics are float64 arrays of length C; the elementwise maps
run in the data's dtype. Callers (fastconv.functional) validate and allocate.

The passes can take a ReLU (and a residual add) along: the forward writes relu(bn(x) + add)
and the backward takes its gradient through the ReLU, from the ReLU's output, in the same
pass, each element rounded as the separate passes round it (see src/batchnorm_body.h).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

cdef extern from "src/batchnorm.h" nogil:
    void fc_bn_moments_f32(const float* x, Py_ssize_t n, Py_ssize_t stride, Py_ssize_t l,
                           double* mean, double* var)
    void fc_bn_moments_f64(const double* x, Py_ssize_t n, Py_ssize_t stride, Py_ssize_t l,
                           double* mean, double* var)
    void fc_bn_affine_rows_f32(const float* x, float* y, Py_ssize_t rows, Py_ssize_t l,
                               Py_ssize_t c0, Py_ssize_t channels, const double* mean,
                               const double* scale, const double* shift, const float* add,
                               int relu)
    void fc_bn_affine_rows_f64(const double* x, double* y, Py_ssize_t rows, Py_ssize_t l,
                               Py_ssize_t c0, Py_ssize_t channels, const double* mean,
                               const double* scale, const double* shift, const double* add,
                               int relu)
    void fc_bn_grad_sums_f32(const float* g, const float* x, const float* y, Py_ssize_t n,
                             Py_ssize_t stride, Py_ssize_t l, double mean, double* sum_g,
                             double* sum_gx)
    void fc_bn_grad_sums_f64(const double* g, const double* x, const double* y, Py_ssize_t n,
                             Py_ssize_t stride, Py_ssize_t l, double mean, double* sum_g,
                             double* sum_gx)
    void fc_bn_grad_input_rows_f32(const float* g, const float* x, const float* y, float* dx,
                                   Py_ssize_t rows, Py_ssize_t l, Py_ssize_t c0,
                                   Py_ssize_t channels, const double* mean, const double* a,
                                   const double* b, const double* c)
    void fc_bn_grad_input_rows_f64(const double* g, const double* x, const double* y,
                                   double* dx, Py_ssize_t rows, Py_ssize_t l, Py_ssize_t c0,
                                   Py_ssize_t channels, const double* mean, const double* a,
                                   const double* b, const double* c)

cdef enum:
    # Fewest elements for which the work is spread over threads (waking the team costs more
    # than the work below), and about the elements of one chunk of the elementwise passes.
    PARALLEL_MIN_ELEMENTS = 32768


cdef inline int _threads(Py_ssize_t tasks, Py_ssize_t elements, int num_threads) noexcept nogil:
    if elements < PARALLEL_MIN_ELEMENTS or num_threads < 1:
        return 1
    return <int>tasks if tasks < num_threads else num_threads


cdef inline const floating* _data(const floating[:, :, ::1] a) noexcept nogil:
    """The first element of an optional array: NULL for None."""
    if a is None:
        return NULL
    return &a[0, 0, 0]


cdef inline void _channel(const floating* g, const floating* x, const floating* y,
                          Py_ssize_t n, Py_ssize_t channels, Py_ssize_t l, double* mean,
                          double* first, double* second, Py_ssize_t c) noexcept nogil:
    """Channel c's sums: with g NULL the moments of x (mean[c], first[c] = biased var),
    else the backward's sums about mean[c] (first[c] = sum of g, second[c] = of
    g * (x - mean)), g through the ReLU of output y when y is not NULL."""
    cdef Py_ssize_t stride = channels * l, o = c * l
    cdef const floating* yc = NULL
    if y != NULL:
        yc = y + o
    if g == NULL:
        if floating is float:
            fc_bn_moments_f32(x + o, n, stride, l, &mean[c], &first[c])
        else:
            fc_bn_moments_f64(x + o, n, stride, l, &mean[c], &first[c])
    elif floating is float:
        fc_bn_grad_sums_f32(g + o, x + o, yc, n, stride, l, mean[c],
                            &first[c], &second[c])
    else:
        fc_bn_grad_sums_f64(g + o, x + o, yc, n, stride, l, mean[c],
                            &first[c], &second[c])


cdef void _channels(const floating* g, const floating* x, const floating* y, Py_ssize_t n,
                    Py_ssize_t channels, Py_ssize_t l, double* mean, double* first,
                    double* second, int num_threads) noexcept nogil:
    """:func:`_channel` for every channel, one channel per task."""
    cdef int nt = _threads(channels, n * channels * l, num_threads)
    cdef Py_ssize_t c
    if nt == 1:
        for c in range(channels):
            _channel(g, x, y, n, channels, l, mean, first, second, c)
    else:
        for c in prange(channels, schedule="static", num_threads=nt):
            _channel(g, x, y, n, channels, l, mean, first, second, c)


def moments(const floating[:, :, ::1] x, double[::1] mean, double[::1] var, double[::1] invstd,
            double eps, int num_threads):
    """mean, biased var and invstd = 1 / sqrt(var + eps) per channel of x (N, C, L),
    N * L >= 1."""
    cdef Py_ssize_t c
    with nogil:
        _channels(<const floating*>NULL, &x[0, 0, 0], <const floating*>NULL, x.shape[0],
                  x.shape[1], x.shape[2], &mean[0], &var[0], NULL, num_threads)
    for c in range(x.shape[1]):
        invstd[c] = 1.0 / sqrt(var[c] + eps)


cdef inline void _rows_chunk(const floating* g, const floating* x, const floating* y,
                             floating* out, Py_ssize_t k, Py_ssize_t chunk, Py_ssize_t rows,
                             Py_ssize_t l, Py_ssize_t channels, const double* mean,
                             const double* a, const double* b, const double* c, bint affine,
                             bint relu) noexcept nogil:
    """Chunk k (``chunk`` rows) of the elementwise pass: the normalization (affine: mean,
    scale a, shift b; y the array to add or NULL, relu) or the input gradient (mean, a, b,
    c; y the ReLU's output or NULL)."""
    cdef Py_ssize_t r0 = k * chunk
    cdef Py_ssize_t count = chunk if chunk < rows - r0 else rows - r0
    cdef const floating* yk = NULL
    if y != NULL:
        yk = y + r0 * l
    if affine:
        if floating is float:
            fc_bn_affine_rows_f32(x + r0 * l, out + r0 * l, count, l, r0 % channels, channels,
                                  mean, a, b, yk, relu)
        else:
            fc_bn_affine_rows_f64(x + r0 * l, out + r0 * l, count, l, r0 % channels, channels,
                                  mean, a, b, yk, relu)
    elif floating is float:
        fc_bn_grad_input_rows_f32(g + r0 * l, x + r0 * l, yk, out + r0 * l, count, l,
                                  r0 % channels, channels, mean, a, b, c)
    else:
        fc_bn_grad_input_rows_f64(g + r0 * l, x + r0 * l, yk, out + r0 * l, count, l,
                                  r0 % channels, channels, mean, a, b, c)


cdef void _rows(const floating* g, const floating* x, const floating* y, floating* out,
                Py_ssize_t rows, Py_ssize_t l, Py_ssize_t channels, const double* mean,
                const double* a, const double* b, const double* c, bint affine, bint relu,
                int num_threads) noexcept nogil:
    """The elementwise pass over all (n, c) rows, in chunks of about PARALLEL_MIN_ELEMENTS."""
    cdef Py_ssize_t chunk = PARALLEL_MIN_ELEMENTS // l if l < PARALLEL_MIN_ELEMENTS else 1
    cdef Py_ssize_t chunks = (rows + chunk - 1) // chunk, k
    cdef int nt = _threads(chunks, rows * l, num_threads)
    if nt == 1:
        for k in range(chunks):
            _rows_chunk(g, x, y, out, k, chunk, rows, l, channels, mean, a, b, c, affine, relu)
    else:
        for k in prange(chunks, schedule="static", num_threads=nt):
            _rows_chunk(g, x, y, out, k, chunk, rows, l, channels, mean, a, b, c, affine, relu)


def forward(const floating[:, :, ::1] x, floating[:, :, ::1] out, const double[::1] weight,
            const double[::1] bias, double[::1] mean, double[::1] var, double[::1] invstd,
            bint batch_stats, double eps, int num_threads,
            const floating[:, :, ::1] add=None, bint relu=False):
    """out = (x - mean) * weight * invstd + bias per channel of x (N, C, L), N * L >= 1;
    then out += add (an array like x) when given, and out = relu(out) with ``relu``.

    batch_stats: mean and var (biased) are computed from x into ``mean`` and ``var``;
    otherwise they are read from them (running statistics). invstd = 1 / sqrt(var + eps)
    is written either way.
    """
    cdef Py_ssize_t channels = x.shape[1], c
    if batch_stats:
        moments(x, mean, var, invstd, eps, num_threads)
    cdef double[::1] scale = weight.copy()
    for c in range(channels):
        if not batch_stats:
            invstd[c] = 1.0 / sqrt(var[c] + eps)
        scale[c] = weight[c] * invstd[c]
    with nogil:
        _rows(<const floating*>NULL, &x[0, 0, 0], _data(add), &out[0, 0, 0],
              x.shape[0] * channels, x.shape[2], channels, &mean[0], &scale[0], &bias[0], NULL,
              True, relu, num_threads)


def backward(const floating[:, :, ::1] grad_output, const floating[:, :, ::1] x,
             floating[:, :, ::1] grad_input, const double[::1] weight, const double[::1] mean,
             const double[::1] invstd, double[::1] sum_g, double[::1] sum_gx,
             bint batch_stats, bint input_grad, int num_threads,
             const floating[:, :, ::1] relu_output=None):
    """Backward of :func:`forward` over x (N, C, L), N * L >= 1.

    Writes sum_g = sum(grad_output) and sum_gx = sum(grad_output * (x - mean)) per channel
    and, when ``input_grad``, grad_input: through the batch statistics (batch_stats) or
    through fixed ones (grad_output * weight * invstd). grad_input may be None otherwise.
    With ``relu_output`` (a forward's relu=True output) grad_output is taken through that
    ReLU first: 0 where relu_output <= 0.
    """
    cdef Py_ssize_t channels = x.shape[1], c
    cdef double count = <double>x.shape[0] * <double>x.shape[2]
    cdef const floating* y = _data(relu_output)
    with nogil:
        _channels(&grad_output[0, 0, 0], &x[0, 0, 0], y, x.shape[0], channels, x.shape[2],
                  <double*>&mean[0], &sum_g[0], &sum_gx[0], num_threads)
    if not input_grad:
        return
    cdef double[::1] a = weight.copy(), b = weight.copy(), shift = weight.copy()
    for c in range(channels):
        a[c] = weight[c] * invstd[c]
        b[c] = -a[c] * invstd[c] * invstd[c] * (sum_gx[c] / count)
        shift[c] = -a[c] * (sum_g[c] / count)
    with nogil:
        _rows(&grad_output[0, 0, 0], &x[0, 0, 0], y, &grad_input[0, 0, 0],
              x.shape[0] * channels, x.shape[2], channels, &mean[0], &a[0],
              &b[0] if batch_stats else NULL, &shift[0], False, False, num_threads)
