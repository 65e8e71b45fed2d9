"""2-D convolution forward (GEMM and direct) and backward, one image per OpenMP thread.

Callers (fastconv.functional) validate the arguments, pass C-contiguous arrays of one float
dtype, size the scratch buffers and keep BLAS at one thread; nothing here checks or
allocates. Shapes: x (N, C, H, W), weight (K, C/groups, kh, kw), out (N, K, Ho, Wo).
Padding is top/left; everything outside the input is zero.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid

from fastconv._kernels._blas cimport gemm
from fastconv._kernels._im2col cimport Geometry, make_geometry, span, im2col_image, col2im_image


cdef inline bint is_pointwise(const Geometry* g) noexcept nogil:
    # 1x1, stride 1, no padding: an image (C, H*W) already is its column matrix
    return (g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.ph == 0 and g.pw == 0
            and g.Ho == g.H and g.Wo == g.W)


cdef inline void fill_bias(floating* out, const floating* bias, Py_ssize_t K,
                           Py_ssize_t L) noexcept nogil:
    cdef Py_ssize_t k, l
    for k in range(K):
        for l in range(L):
            out[k * L + l] = bias[k]


cdef inline void direct_plane(const floating* xc, const floating* wk, floating* o,
                              const Geometry* g) noexcept nogil:
    """o (Ho, Wo) += the cross-correlation of one input plane xc (H, W) with wk (kh, kw)."""
    cdef Py_ssize_t i, j, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi, row_off, col_off
    # locals, not g->, so the compiler need not reload them after each store (see _im2col.pxd)
    cdef Py_ssize_t H = g.H, W = g.W, kh = g.kh, kw = g.kw, sh = g.sh, sw = g.sw
    cdef Py_ssize_t ph = g.ph, pw = g.pw, dh = g.dh, dw = g.dw, Ho = g.Ho, Wo = g.Wo
    cdef floating wv
    cdef const floating* xr
    cdef floating* orow
    for i in range(kh):
        row_off = i * dh - ph
        span(row_off, sh, H, Ho, &oh_lo, &oh_hi)
        for j in range(kw):
            col_off = j * dw - pw
            span(col_off, sw, W, Wo, &ow_lo, &ow_hi)
            wv = wk[i * kw + j]
            for oh in range(oh_lo, oh_hi):
                orow = o + oh * Wo
                xr = xc + (oh * sh + row_off) * W + col_off
                if sw == 1:
                    for ow in range(ow_lo, ow_hi):
                        orow[ow] += wv * xr[ow]
                else:
                    for ow in range(ow_lo, ow_hi):
                        orow[ow] += wv * xr[ow * sw]


def conv2d_gemm(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                const floating[::1] bias, floating[:, :, :, ::1] out, floating[::1] work,
                Py_ssize_t col_stride, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, int groups, int num_threads):
    """out = conv(x, weight) + bias, by per-image im2col and one GEMM per group.

    bias is empty for no bias. work holds num_threads column buffers of col_stride items
    (Cg*kh*kw*Ho*Wo, rounded up), unused for pointwise convolutions.
    """
    cdef Py_ssize_t N = x.shape[0], K = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t Kg = K // groups, L = out.shape[2] * out.shape[3]
    cdef Py_ssize_t n, grp
    cdef int ckk = <int>(Cg * weight.shape[2] * weight.shape[3])
    cdef Geometry g = make_geometry(Cg, x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    sh, sw, ph, pw, dh, dw, out.shape[2], out.shape[3])
    cdef bint pointwise = is_pointwise(&g), has_bias = bias.shape[0] > 0
    cdef floating beta = 1 if has_bias else 0
    cdef floating* col
    cdef const floating* colp
    cdef floating* og
    for n in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        col = &work[0] + threadid() * col_stride
        for grp in range(groups):
            og = &out[n, grp * Kg, 0, 0]
            if has_bias:
                fill_bias(og, &bias[grp * Kg], Kg, L)
            if pointwise:
                colp = &x[n, grp * Cg, 0, 0]
            else:
                im2col_image(&x[n, grp * Cg, 0, 0], col, &g)
                colp = col
            gemm(False, False, <int>Kg, <int>L, ckk, <floating>1, &weight[grp * Kg, 0, 0, 0],
                 ckk, colp, <int>L, beta, og, <int>L)


def conv2d_direct(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                  const floating[::1] bias, floating[:, :, :, ::1] out,
                  Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                  Py_ssize_t dh, Py_ssize_t dw, int groups, int num_threads):
    """out = conv(x, weight) + bias, accumulated plane by plane without a column buffer."""
    cdef Py_ssize_t N = x.shape[0], K = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t Kg = K // groups, L = out.shape[2] * out.shape[3]
    cdef Py_ssize_t n, k, c, l
    cdef Geometry g = make_geometry(Cg, x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    sh, sw, ph, pw, dh, dw, out.shape[2], out.shape[3])
    cdef bint has_bias = bias.shape[0] > 0
    cdef floating* o
    for n in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        for k in range(K):
            o = &out[n, k, 0, 0]
            for l in range(L):
                o[l] = bias[k] if has_bias else 0
            for c in range(Cg):
                direct_plane(&x[n, (k // Kg) * Cg + c, 0, 0], &weight[k, c, 0, 0], o, &g)


def conv2d_backward(const floating[:, :, :, ::1] grad_output, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] weight, floating[:, :, :, ::1] grad_input,
                    floating[::1] grad_weight, floating[::1] grad_bias,
                    floating[::1] work, Py_ssize_t col_stride, floating[::1] partials,
                    Py_ssize_t chunk, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                    Py_ssize_t dh, Py_ssize_t dw, int groups, bint needs_input_grad,
                    bint needs_weight_grad, bint needs_bias_grad, int num_threads):
    """Gradients of conv2d, each only when asked for.

    grad_input (N, C, H, W) = col2im(W^T @ grad_output) per image and group.
    grad_weight (K*Cg*kh*kw,) and grad_bias (K,): images go in fixed-size chunks of
    ``chunk``; each chunk sums its images in order into its own slot of partials
    (ceil(N/chunk) slots of K*Cg*kh*kw + K items), then the slots are added in chunk order.
    The chunking does not depend on the thread count, so neither does the result, bit for bit.
    work holds num_threads column buffers of col_stride items, as in conv2d_gemm.
    """
    cdef Py_ssize_t N = x.shape[0], K = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t Kg = K // groups, L = grad_output.shape[2] * grad_output.shape[3]
    cdef Py_ssize_t CKK = Cg * weight.shape[2] * weight.shape[3]
    cdef Py_ssize_t wsize = K * CKK, slot = wsize + K
    cdef Py_ssize_t n_chunks = (N + chunk - 1) // chunk
    cdef Py_ssize_t b, n, grp, k, l, e, first, last
    cdef Geometry g = make_geometry(Cg, x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    sh, sw, ph, pw, dh, dw, grad_output.shape[2],
                                    grad_output.shape[3])
    cdef bint pointwise = is_pointwise(&g)
    # the slice of a slot to reduce: [weights][biases], each only when asked for
    cdef Py_ssize_t e_lo = 0 if needs_weight_grad else wsize
    cdef Py_ssize_t e_hi = slot if needs_bias_grad else wsize
    cdef floating acc, beta
    cdef floating* col
    cdef floating* part
    cdef const floating* go
    cdef const floating* colp
    for b in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        col = &work[0] + threadid() * col_stride
        part = &partials[0] + b * slot
        first = b * chunk
        last = min(first + chunk, N)
        for n in range(first, last):
            for grp in range(groups):
                go = &grad_output[n, grp * Kg, 0, 0]
                if needs_weight_grad:
                    if pointwise:
                        colp = &x[n, grp * Cg, 0, 0]
                    else:
                        im2col_image(&x[n, grp * Cg, 0, 0], col, &g)
                        colp = col
                    # the chunk's first image overwrites its slot, the others add to it
                    beta = 0 if n == first else 1
                    gemm(False, True, <int>Kg, <int>CKK, <int>L, <floating>1, go, <int>L,
                         colp, <int>L, beta, part + grp * Kg * CKK, <int>CKK)
                if needs_bias_grad:
                    for k in range(Kg):
                        acc = 0
                        for l in range(L):
                            acc = acc + go[k * L + l]
                        if n == first:
                            part[wsize + grp * Kg + k] = acc
                        else:
                            part[wsize + grp * Kg + k] += acc
                if needs_input_grad:
                    if pointwise:
                        gemm(True, False, <int>CKK, <int>L, <int>Kg, <floating>1,
                             &weight[grp * Kg, 0, 0, 0], <int>CKK, go, <int>L, <floating>0,
                             &grad_input[n, grp * Cg, 0, 0], <int>L)
                    else:
                        gemm(True, False, <int>CKK, <int>L, <int>Kg, <floating>1,
                             &weight[grp * Kg, 0, 0, 0], <int>CKK, go, <int>L, <floating>0,
                             col, <int>L)
                        col2im_image(col, &grad_input[n, grp * Cg, 0, 0], &g)
    for e in prange(e_lo, e_hi, nogil=True, schedule="static", num_threads=num_threads):
        acc = 0
        for b in range(n_chunks):
            acc = acc + partials[b * slot + e]
        if e < wsize:
            grad_weight[e] = acc
        else:
            grad_bias[e - wsize] = acc
