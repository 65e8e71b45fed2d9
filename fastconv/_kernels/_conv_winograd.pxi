# Winograd F(2x2, 3x3): 3x3 kernels at stride 1, in 2x2 output tiles. The transforms are in
# src/winograd.h; the products M = U V run on the channel-vector kernel (_conv_kvec.pxi).

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
    cdef Py_ssize_t n, N = x.shape[0]
    cdef Py_ssize_t failed = 0
    cdef bint has_bias = bias.shape[0] > 0
    for n in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        bad[n] = winograd_image(&x[n, 0, 0, 0], &work[0] + threadid() * work_stride,
                                &upack[0], &bias[0] if has_bias else NULL, &out[n, 0, 0, 0],
                                x.shape[1], x.shape[2], x.shape[3], out.shape[1], out.shape[2],
                                out.shape[3], &tap_off[0], ph, pw, tile_block, kv, pixels,
                                &failed)
    check_built(failed, "channel-vector")
