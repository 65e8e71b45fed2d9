# Register-blocked direct convolution (src/direct.h).

cdef extern from "direct.h" nogil:
    enum:
        KB "FC_KB"
        KB6 "FC_KB6"
        VW_F "FC_VW_F"
        VW_D "FC_VW_D"
        WIDE "FC_WIDE"
    void fc_direct_f(bint wide, bint six, const float* p, const float* wb, float* o,
                     const float* bias, Py_ssize_t kb_n, Py_ssize_t vw_n, Py_ssize_t cg,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                     Py_ssize_t hp, Py_ssize_t wq, Py_ssize_t L)
    void fc_direct_d(bint wide, bint six, const double* p, const double* wb, double* o,
                     const double* bias, Py_ssize_t kb_n, Py_ssize_t vw_n, Py_ssize_t cg,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                     Py_ssize_t hp, Py_ssize_t wq, Py_ssize_t L)


def direct_block_shape(int itemsize, bint wide, bint six=False):
    """(output channels, output columns) of the direct kernel's register block, narrow or
    wide, of 6 channels or the full count, for float32 (itemsize 4) or float64 (8), in this
    build of the module (builds without a wide or a 6-channel block give the other)."""
    return KB6 if six else KB, (VW_F if itemsize == 4 else VW_D) * (WIDE if wide else 1)


cdef inline void direct_block(bint wide, bint six, const floating* p, const floating* wb,
                              floating* o, const floating* bias, Py_ssize_t kb_n, Py_ssize_t vw_n,
                              Py_ssize_t Cg, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw,
                              Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Hp, Py_ssize_t Wq,
                              Py_ssize_t L) noexcept nogil:
    """One KB x VW block of outputs over every kernel tap (KB, VW: direct_block_shape).

    p: the phase-split padded input (see pad_image) at the block's first row and column;
    wb: the block's weights packed (Cg*kh*kw, KB); o: the first output, channels L items
    apart. Stores the first kb_n channels and vw_n columns (the rest of the block is
    padding), adding bias when given.
    """
    if floating is float:
        fc_direct_f(wide, six, p, wb, o, bias, kb_n, vw_n, Cg, kh, kw, sw, dh, dw, Hp, Wq, L)
    else:
        fc_direct_d(wide, six, p, wb, o, bias, kb_n, vw_n, Cg, kh, kw, sw, dh, dw, Hp, Wq, L)


def conv2d_direct(const floating[:, :, :, ::1] x, const floating[::1] wpack,
                  const floating[::1] bias, floating[:, :, :, ::1] out, floating[::1] work,
                  Py_ssize_t work_stride, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                  Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                  Py_ssize_t Hp, Py_ssize_t Wp, int groups, bint wide, bint six,
                  int num_threads):
    """out = conv(x, weight) + bias by register-blocked direct convolution, no im2col.

    Each image is first copied into a zero-padded, phase-split (C, sw, Hp, ceil(Wp/sw))
    buffer (work, work_stride items per thread; Wp covers whole blocks of VW columns), so
    the inner loops have no bounds and read contiguous columns. (KB, VW) is
    direct_block_shape(itemsize, wide, six).
    wpack is the weight in blocks of KB output channels per group:
    (groups, ceil(K/groups/KB), Cg*kh*kw, KB), zero where a block runs past the group.
    bias is empty for no bias.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], K = out.shape[1]
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3], L = Ho * Wo
    cdef Py_ssize_t Kg = K // groups, Cg = C // groups
    cdef Py_ssize_t VW = (VW_F if floating is float else VW_D) * (WIDE if wide else 1)
    cdef Py_ssize_t kbs = KB6 if six else KB
    cdef Py_ssize_t nkb = (Kg + kbs - 1) // kbs, blk = Cg * kh * kw * kbs
    cdef Py_ssize_t Wq = (Wp + sw - 1) // sw
    cdef Py_ssize_t n, grp, kb, k0, oh, ob, ow
    cdef bint has_bias = bias.shape[0] > 0
    cdef const floating* src
    cdef const floating* pg
    for n in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        src = padded_image(&x[n, 0, 0, 0], &work[0] + threadid() * work_stride, C,
                           x.shape[2], x.shape[3], ph, pw, Hp, Wp, sw)
        for grp in range(groups):
            pg = src + grp * Cg * sw * Hp * Wq
            for kb in range(nkb):
                k0 = grp * Kg + kb * kbs
                for oh in range(Ho):
                    for ob in range((Wo + VW - 1) // VW):
                        ow = ob * VW
                        direct_block(wide, six, pg + oh * sh * Wq + ow,
                                     &wpack[(grp * nkb + kb) * blk], &out[n, k0, oh, ow],
                                     &bias[k0] if has_bias else NULL,
                                     min(kbs, (grp + 1) * Kg - k0), min(VW, Wo - ow),
                                     Cg, kh, kw, sw, dh, dw, Hp, Wq, L)
