# The pixel-vector weight gradient (src/pixvec.h; AVX-512 builds only).

cdef extern from "pixvec.h" nogil:
    enum:
        PIXVEC_LANES_F "FCP_LANES_F"
        PIXVEC_LANES_D "FCP_LANES_D"
        PIXVEC_KB "FCP_KB"
        PIXVEC_JB "FCP_JB"
    int fc_pixvec_wgrad_f(int kb, int jb, const float* x, const float* g, Py_ssize_t L,
                          Py_ssize_t ho, Py_ssize_t wo, Py_ssize_t wp, Py_ssize_t dw,
                          float* sums, Py_ssize_t k_stride)
    int fc_pixvec_wgrad_d(int kb, int jb, const double* x, const double* g, Py_ssize_t L,
                          Py_ssize_t ho, Py_ssize_t wo, Py_ssize_t wp, Py_ssize_t dw,
                          double* sums, Py_ssize_t k_stride)


def pixvec_lanes(int itemsize):
    """Columns per vector of the pixel-vector weight-gradient kernel for float32 (itemsize
    4) or float64 (8) in this build of the module; 0 where the build has none."""
    return PIXVEC_LANES_F if itemsize == 4 else PIXVEC_LANES_D


cdef inline int pixvec_block(int kb, int jb, const floating* x, const floating* g,
                             Py_ssize_t L, Py_ssize_t ho, Py_ssize_t wo, Py_ssize_t wp,
                             Py_ssize_t dw, floating* sums,
                             Py_ssize_t k_stride) noexcept nogil:
    """fc_pixvec_wgrad of the dtype: a kb x jb block of sums over an image's pixels; 0, or
    FC_UNAVAILABLE (nothing written) in a build without the kernel."""
    if floating is float:
        return fc_pixvec_wgrad_f(kb, jb, x, g, L, ho, wo, wp, dw, sums, k_stride)
    else:
        return fc_pixvec_wgrad_d(kb, jb, x, g, L, ho, wo, wp, dw, sums, k_stride)


def conv2d_weight_grad_pixvec(const floating[:, :, :, ::1] grad_output,
                              const floating[:, :, :, ::1] x, floating[::1] grad_weight,
                              floating[::1] work, Py_ssize_t work_stride,
                              floating[::1] partials, Py_ssize_t chunk, Py_ssize_t kh,
                              Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                              Py_ssize_t dw, Py_ssize_t Hp, Py_ssize_t Wp,
                              int num_threads):
    """grad_weight (K*C*kh*kw, the weight's layout) of a stride-1 conv2d with no groups,
    by the pixel-vector kernel (fc_pixvec_wgrad).

    Per image: the padded image (pad_image, Hp x Wp, work_stride items per thread), then
    per input channel, kernel row, block of at most FCP_KB output channels and block of
    FCP_JB taps, the block's sums over every output pixel. Images go in fixed chunks of ``chunk``,
    each summed in order into its own slot of partials (K*C*kh*kw items), and the slots
    are then added in chunk order: the bits do not depend on the thread count.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], K = grad_output.shape[1]
    cdef Py_ssize_t Ho = grad_output.shape[2], Wo = grad_output.shape[3], L = Ho * Wo
    cdef Py_ssize_t slot = K * C * kh * kw, k_stride = C * kh * kw
    cdef Py_ssize_t n_chunks = (N + chunk - 1) // chunk
    # the fewest blocks of channels, as even as whole channels allow
    cdef Py_ssize_t n_kb = (K + PIXVEC_KB - 1) // PIXVEC_KB
    cdef Py_ssize_t kbs = (K + n_kb - 1) // n_kb
    cdef Py_ssize_t b, n, c, i, kb, k0, jb, j0
    cdef Py_ssize_t failed = 0
    cdef floating* p
    cdef floating* part
    cdef const floating* src
    for b in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        p = &work[0] + threadid() * work_stride
        part = &partials[0] + b * slot
        memset(part, 0, slot * sizeof(floating))
        for n in range(b * chunk, min(b * chunk + chunk, N)):
            src = padded_image(&x[n, 0, 0, 0], p, C, x.shape[2], x.shape[3], ph, pw, Hp, Wp,
                               1)
            # channels outermost: a block's grad_output planes stay in L1 cache over every
            # input channel and kernel row (per (c, i), the image's whole grad_output
            # streamed from L2 and bounded the block)
            for kb in range(n_kb):
                k0 = kb * kbs
                for c in range(C):
                    for i in range(kh):
                        for jb in range((kw + PIXVEC_JB - 1) // PIXVEC_JB):
                            j0 = jb * PIXVEC_JB
                            failed += pixvec_block(
                                min(kbs, K - k0), min(PIXVEC_JB, kw - j0),
                                src + (c * Hp + i * dh) * Wp + j0 * dw,
                                &grad_output[n, k0, 0, 0], L, Ho, Wo, Wp, dw,
                                part + ((k0 * C + c) * kh + i) * kw + j0, k_stride) != 0
    check_built(failed, "pixel-vector")
    sum_slots(&partials[0], n_chunks, slot, 0, slot, &grad_weight[0], num_threads)
