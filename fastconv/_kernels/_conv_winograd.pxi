# Winograd F(2x2, 3x3): 3x3 kernels at stride 1, in 2x2 output tiles. The transforms are in
# src/winograd.h; the products M = U V run on the channel-vector kernel (_conv_kvec.pxi).

cdef extern from "winograd.h" nogil:
    void fc_winograd_input_f(const float* p, Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp,
                             Py_ssize_t TW, Py_ssize_t t0, Py_ssize_t nt, Py_ssize_t TB,
                             float* v)
    void fc_winograd_input_d(const double* p, Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp,
                             Py_ssize_t TW, Py_ssize_t t0, Py_ssize_t nt, Py_ssize_t TB,
                             double* v)
    int fc_winograd_output_f(const float* mbuf, Py_ssize_t K, Py_ssize_t TB, Py_ssize_t TW,
                             Py_ssize_t t0, Py_ssize_t nt, float* out, Py_ssize_t Ho,
                             Py_ssize_t Wo, const float* bias)
    int fc_winograd_output_d(const double* mbuf, Py_ssize_t K, Py_ssize_t TB, Py_ssize_t TW,
                             Py_ssize_t t0, Py_ssize_t nt, double* out, Py_ssize_t Ho,
                             Py_ssize_t Wo, const double* bias)


cdef inline void winograd_input(const floating* p, Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp,
                                Py_ssize_t TW, Py_ssize_t t0, Py_ssize_t nt, Py_ssize_t TB,
                                floating* v) noexcept nogil:
    """fc_winograd_input of the dtype: V = B^T d B of tiles t0 .. t0+nt-1."""
    if floating is float:
        fc_winograd_input_f(p, C, Hp, Wp, TW, t0, nt, TB, v)
    else:
        fc_winograd_input_d(p, C, Hp, Wp, TW, t0, nt, TB, v)


cdef inline bint winograd_output(const floating* mbuf, Py_ssize_t K, Py_ssize_t TB,
                                 Py_ssize_t TW, Py_ssize_t t0, Py_ssize_t nt, floating* out,
                                 Py_ssize_t Ho, Py_ssize_t Wo,
                                 const floating* bias) noexcept nogil:
    """fc_winograd_output of the dtype: Y = A^T M A (+ bias); whether some output is not
    finite."""
    if floating is float:
        return fc_winograd_output_f(mbuf, K, TB, TW, t0, nt, out, Ho, Wo, bias)
    else:
        return fc_winograd_output_d(mbuf, K, TB, TW, t0, nt, out, Ho, Wo, bias)


cdef inline void winograd_weight_row(floating* u, Py_ssize_t step, double a0, double a1,
                                     double a2) noexcept nogil:
    # one row of t G^T: u[0], u[step], u[2 step], u[3 step]
    u[0] = <floating>a0
    u[step] = <floating>((a0 + a1 + a2) * 0.5)
    u[2 * step] = <floating>((a0 - a1 + a2) * 0.5)
    u[3 * step] = <floating>a2


def winograd_weight(const floating[:, :, :, ::1] w, floating[::1] upack, Py_ssize_t block,
                    int num_threads):
    """upack (16, ceil(K/block), C, block) = U = G g G^T of each 3x3 kernel g = w[k, c],
    computed in double (rows, then columns), as conv2d_winograd reads it: U[4i + j] of
    output channel k at [(4i + j), k // block, c, k % block]. The lanes past K are the
    caller's to zero. G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]."""
    cdef Py_ssize_t K = w.shape[0], C = w.shape[1]
    cdef Py_ssize_t nkb = (K + block - 1) // block, step = nkb * C * block
    cdef Py_ssize_t k, c
    cdef floating* u
    cdef double g00, g01, g02, g10, g11, g12, g20, g21, g22
    for k in prange(K, nogil=True, schedule="static", num_threads=num_threads):
        for c in range(C):
            g00 = w[k, c, 0, 0]
            g01 = w[k, c, 0, 1]
            g02 = w[k, c, 0, 2]
            g10 = w[k, c, 1, 0]
            g11 = w[k, c, 1, 1]
            g12 = w[k, c, 1, 2]
            g20 = w[k, c, 2, 0]
            g21 = w[k, c, 2, 1]
            g22 = w[k, c, 2, 2]
            u = &upack[0] + ((k // block) * C + c) * block + k % block
            # rows of t = G g, each then times G^T
            winograd_weight_row(u, step, g00, g01, g02)
            winograd_weight_row(u + 4 * step, step, (g00 + g10 + g20) * 0.5,
                                (g01 + g11 + g21) * 0.5, (g02 + g12 + g22) * 0.5)
            winograd_weight_row(u + 8 * step, step, (g00 - g10 + g20) * 0.5,
                                (g01 - g11 + g21) * 0.5, (g02 - g12 + g22) * 0.5)
            winograd_weight_row(u + 12 * step, step, g20, g21, g22)


def conv2d_winograd(const floating[:, :, :, ::1] x, const floating[::1] upack,
                    const floating[::1] bias, floating[:, :, :, ::1] out, unsigned char[::1] bad,
                    floating[::1] work, Py_ssize_t work_stride, const Py_ssize_t[::1] tap_off,
                    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t tile_block, int kv, int pixels,
                    int num_threads):
    """out = conv(x, weight) + bias for a 3x3 kernel at stride 1 (no dilation, no groups)
    by Winograd's F(2x2, 3x3): 16 products per 2x2 output tile where direct convolution
    takes 36.

    Per image (zero-padded by pad_image to 2 * tiles + 2 rows and columns), per block of
    tile_block tiles (raster order): V = B^T d B of every channel into work, then for each
    of the 16 tile positions the channel-vector kernel (fc_kvec, blocks of ``pixels``
    tiles, kv vectors of output channels) takes M = U V, the channels of V its taps
    (tap_off: c * tile_block); then Y = A^T M A (+ bias) into out.
    upack: U = G g G^T of the weight, (16, ceil(K / (kv*lanes)), C, kv*lanes), zero past K.
    work: per thread, work_stride items: the padded image, then V (16, C, tile_block), then
    M (16, K, tile_block). tile_block is a multiple of ``pixels``. bias is empty for none.
    bad[n]: whether some output of image n is not finite. Winograd's transforms
    mix the inputs (and the weights) of a tile, so an inf or NaN, or an overflow, reaches
    outputs that direct convolution keeps apart or finite: the caller redoes such images.
    """
    check_built(not (KVEC_LANES_F if floating is float else KVEC_LANES_D), "channel-vector")
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t TH = (Ho + 1) // 2, TW = (Wo + 1) // 2, T = TH * TW
    cdef Py_ssize_t Hp = 2 * TH + 2, Wp = 2 * TW + 2
    cdef Py_ssize_t kvl = kv * (KVEC_LANES_F if floating is float else KVEC_LANES_D)
    cdef Py_ssize_t nkb = (K + kvl - 1) // kvl
    cdef Py_ssize_t n_blocks = (T + tile_block - 1) // tile_block
    cdef Py_ssize_t n, blk, t0, nt, xi, kb, k0, a0
    cdef Py_ssize_t failed = 0
    cdef bint has_bias = bias.shape[0] > 0
    cdef floating* p
    cdef floating* v
    cdef floating* mbuf
    for n in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        p = &work[0] + threadid() * work_stride
        v = p + C * Hp * Wp
        mbuf = v + 16 * C * tile_block
        pad_image(&x[n, 0, 0, 0], p, C, H, W, ph, pw, Hp, Wp, 1)
        bad[n] = 0
        for blk in range(n_blocks):
            t0 = blk * tile_block
            nt = min(tile_block, T - t0)
            winograd_input(p, C, Hp, Wp, TW, t0, nt, tile_block, v)
            for xi in range(16):
                for kb in range(nkb):
                    k0 = kb * kvl
                    a0 = 0
                    while a0 < nt:
                        failed += kvec_block(kv, pixels, v + xi * C * tile_block + a0,
                                             &tap_off[0], C,
                                             &upack[0] + (xi * nkb + kb) * C * kvl, NULL,
                                             mbuf + (xi * K + k0) * tile_block + a0,
                                             tile_block, min(kvl, K - k0),
                                             min(pixels, nt - a0), NULL) != 0
                        a0 = a0 + pixels
            bad[n] |= winograd_output(mbuf, K, tile_block, TW, t0, nt, &out[n, 0, 0, 0], Ho,
                                      Wo, &bias[0] if has_bias else NULL)
    check_built(failed, "channel-vector")
