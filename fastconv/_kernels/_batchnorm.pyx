"""Batch normalization over (N, C, L) arrays, forward and backward, OpenMP over channels.

The C loops are in src/batchnorm.h. Each channel is one task: its statistics and its
backward sums are formed by one thread, in an order fixed by the shape alone, so results
are bitwise the same on any thread count. Per channel the forward reads x twice (moments,
then the normalization) and the backward reads grad_output and x twice (sums, then the
input gradient); the second read of a channel follows the first at once, while its values
are still in cache for the ResNet layers' channel sizes (up to ~0.5 MB).

Per-channel parameters and statistics are float64 arrays of length C; the elementwise maps
run in the data's dtype. Callers (fastconv.functional) validate and allocate.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

cdef extern from "src/batchnorm.h" nogil:
    void fc_bn_moments_f32(const float* x, Py_ssize_t n, Py_ssize_t stride, Py_ssize_t l,
                           double* mean, double* var)
    void fc_bn_moments_f64(const double* x, Py_ssize_t n, Py_ssize_t stride, Py_ssize_t l,
                           double* mean, double* var)
    void fc_bn_affine_f32(const float* x, float* y, Py_ssize_t n, Py_ssize_t stride,
                          Py_ssize_t l, float mean, float scale, float shift)
    void fc_bn_affine_f64(const double* x, double* y, Py_ssize_t n, Py_ssize_t stride,
                          Py_ssize_t l, double mean, double scale, double shift)
    void fc_bn_grad_sums_f32(const float* g, const float* x, Py_ssize_t n, Py_ssize_t stride,
                             Py_ssize_t l, double mean, double* sum_g, double* sum_gx)
    void fc_bn_grad_sums_f64(const double* g, const double* x, Py_ssize_t n,
                             Py_ssize_t stride, Py_ssize_t l, double mean, double* sum_g,
                             double* sum_gx)
    void fc_bn_grad_input_f32(const float* g, const float* x, float* dx, Py_ssize_t n,
                              Py_ssize_t stride, Py_ssize_t l, float mean, float a, float b,
                              float c)
    void fc_bn_grad_input_f64(const double* g, const double* x, double* dx, Py_ssize_t n,
                              Py_ssize_t stride, Py_ssize_t l, double mean, double a,
                              double b, double c)
    void fc_bn_grad_input_fixed_f32(const float* g, float* dx, Py_ssize_t n, Py_ssize_t stride,
                                    Py_ssize_t l, float a)
    void fc_bn_grad_input_fixed_f64(const double* g, double* dx, Py_ssize_t n,
                                    Py_ssize_t stride, Py_ssize_t l, double a)

cdef enum:
    # Fewest elements for which the channels are spread over threads: below, waking the
    # team costs more than the work.
    PARALLEL_MIN_ELEMENTS = 32768


cdef inline int _threads(Py_ssize_t channels, Py_ssize_t elements, int num_threads) noexcept nogil:
    if elements < PARALLEL_MIN_ELEMENTS or num_threads < 1:
        return 1
    return <int>channels if channels < num_threads else num_threads


cdef inline void _moments_channel(const floating[:, :, ::1] x, double[::1] mean, double[::1] var,
                                  double[::1] invstd, double eps, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], stride = x.shape[1] * x.shape[2], l = x.shape[2]
    if floating is float:
        fc_bn_moments_f32(&x[0, c, 0], n, stride, l, &mean[c], &var[c])
    else:
        fc_bn_moments_f64(&x[0, c, 0], n, stride, l, &mean[c], &var[c])
    invstd[c] = 1.0 / sqrt(var[c] + eps)


cdef inline void _forward_channel(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                                  const double[::1] weight, const double[::1] bias,
                                  double[::1] mean, double[::1] var, double[::1] invstd,
                                  bint batch_stats, double eps, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], stride = x.shape[1] * x.shape[2], l = x.shape[2]
    if batch_stats:
        _moments_channel(x, mean, var, invstd, eps, c)
    else:
        invstd[c] = 1.0 / sqrt(var[c] + eps)
    cdef double inv = invstd[c]
    if floating is float:
        fc_bn_affine_f32(&x[0, c, 0], &out[0, c, 0], n, stride, l, <float>mean[c],
                         <float>(weight[c] * inv), <float>bias[c])
    else:
        fc_bn_affine_f64(&x[0, c, 0], &out[0, c, 0], n, stride, l, mean[c],
                         weight[c] * inv, bias[c])


def forward(const floating[:, :, ::1] x, floating[:, :, ::1] out, const double[::1] weight,
            const double[::1] bias, double[::1] mean, double[::1] var, double[::1] invstd,
            bint batch_stats, double eps, int num_threads):
    """out = (x - mean) * weight * invstd + bias per channel of x (N, C, L), N * L >= 1.

    batch_stats: mean and var (biased) are computed from x into ``mean`` and ``var``;
    otherwise they are read from them (running statistics). invstd = 1 / sqrt(var + eps)
    is written either way.
    """
    cdef Py_ssize_t channels = x.shape[1], c
    cdef int nt = _threads(channels, x.shape[0] * channels * x.shape[2], num_threads)
    with nogil:
        if nt == 1:
            for c in range(channels):
                _forward_channel(x, out, weight, bias, mean, var, invstd, batch_stats, eps, c)
        else:
            for c in prange(channels, schedule="static", num_threads=nt):
                _forward_channel(x, out, weight, bias, mean, var, invstd, batch_stats, eps, c)


def moments(const floating[:, :, ::1] x, double[::1] mean, double[::1] var, double[::1] invstd,
            double eps, int num_threads):
    """The batch statistics of :func:`forward` alone (the same bits), x (N, C, L), N * L >= 1."""
    cdef Py_ssize_t channels = x.shape[1], c
    cdef int nt = _threads(channels, x.shape[0] * channels * x.shape[2], num_threads)
    with nogil:
        if nt == 1:
            for c in range(channels):
                _moments_channel(x, mean, var, invstd, eps, c)
        else:
            for c in prange(channels, schedule="static", num_threads=nt):
                _moments_channel(x, mean, var, invstd, eps, c)


cdef inline void _backward_channel(const floating[:, :, ::1] g, const floating[:, :, ::1] x,
                                   floating[:, :, ::1] grad_input, const double[::1] weight,
                                   const double[::1] mean, const double[::1] invstd,
                                   double[::1] sum_g, double[::1] sum_gx, bint batch_stats,
                                   bint input_grad, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], stride = x.shape[1] * x.shape[2], l = x.shape[2]
    cdef double count = <double>n * <double>l
    cdef double a, b, shift
    if floating is float:
        fc_bn_grad_sums_f32(&g[0, c, 0], &x[0, c, 0], n, stride, l, mean[c], &sum_g[c],
                            &sum_gx[c])
    else:
        fc_bn_grad_sums_f64(&g[0, c, 0], &x[0, c, 0], n, stride, l, mean[c], &sum_g[c],
                            &sum_gx[c])
    if not input_grad:
        return
    a = weight[c] * invstd[c]
    if batch_stats:
        b = -a * invstd[c] * invstd[c] * (sum_gx[c] / count)
        shift = -a * (sum_g[c] / count)
        if floating is float:
            fc_bn_grad_input_f32(&g[0, c, 0], &x[0, c, 0], &grad_input[0, c, 0], n, stride, l,
                                 <float>mean[c], <float>a, <float>b, <float>shift)
        else:
            fc_bn_grad_input_f64(&g[0, c, 0], &x[0, c, 0], &grad_input[0, c, 0], n, stride, l,
                                 mean[c], a, b, shift)
    elif floating is float:
        fc_bn_grad_input_fixed_f32(&g[0, c, 0], &grad_input[0, c, 0], n, stride, l, <float>a)
    else:
        fc_bn_grad_input_fixed_f64(&g[0, c, 0], &grad_input[0, c, 0], n, stride, l, a)


def backward(const floating[:, :, ::1] grad_output, const floating[:, :, ::1] x,
             floating[:, :, ::1] grad_input, const double[::1] weight, const double[::1] mean,
             const double[::1] invstd, double[::1] sum_g, double[::1] sum_gx,
             bint batch_stats, bint input_grad, int num_threads):
    """Backward of :func:`forward` over x (N, C, L), N * L >= 1.

    Writes sum_g = sum(grad_output) and sum_gx = sum(grad_output * (x - mean)) per channel
    and, when ``input_grad``, grad_input: through the batch statistics (batch_stats) or
    through fixed ones (grad_output * weight * invstd). grad_input may be None otherwise.
    """
    cdef Py_ssize_t channels = x.shape[1], c
    cdef int nt = _threads(channels, x.shape[0] * channels * x.shape[2], num_threads)
    with nogil:
        if nt == 1:
            for c in range(channels):
                _backward_channel(grad_output, x, grad_input, weight, mean, invstd, sum_g,
                                  sum_gx, batch_stats, input_grad, c)
        else:
            for c in prange(channels, schedule="static", num_threads=nt):
                _backward_channel(grad_output, x, grad_input, weight, mean, invstd, sum_g,
                                  sum_gx, batch_stats, input_grad, c)
