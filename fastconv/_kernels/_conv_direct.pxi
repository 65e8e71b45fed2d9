# Register-blocked direct convolution (src/direct.h; one image: _conv_image.pxd).

def direct_block_shape(int itemsize, bint wide, bint six=False):
    """(output channels, output columns) of the direct kernel's register block, narrow or
    wide, of 6 channels or the full count, for float32 (itemsize 4) or float64 (8), in this
    build of the module (builds without a wide or a 6-channel block give the other)."""
    return KB6 if six else KB, (VW_F if itemsize == 4 else VW_D) * (WIDE if wide else 1)


def conv2d_direct(const floating[:, :, :, ::1] x, const floating[::1] wpack,
                  const floating[::1] bias, floating[:, :, :, ::1] out, floating[::1] work,
                  Py_ssize_t work_stride, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                  Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                  Py_ssize_t Hp, Py_ssize_t Wp, int groups, bint wide, bint six,
                  int num_threads, const floating[:, :, :, ::1] add=None):
    """out = conv(x, weight) + bias (+ add, an array like out, when given) by
    register-blocked direct convolution, no im2col.

    Each image is first copied into a zero-padded, phase-split (C, sw, Hp, ceil(Wp/sw))
    buffer (work, work_stride items per thread; Wp covers whole blocks of VW columns), so
    the inner loops have no bounds and read contiguous columns. (KB, VW) is
    direct_block_shape(itemsize, wide, six).
    wpack is the weight in blocks of KB output channels per group:
    (groups, ceil(K/groups/KB), Cg*kh*kw, KB), zero where a block runs past the group.
    bias is empty for no bias.
    """
    cdef Py_ssize_t n, N = x.shape[0]
    cdef bint has_bias = bias.shape[0] > 0, has_add = add is not None
    cdef Py_ssize_t image = out.shape[1] * out.shape[2] * out.shape[3]
    for n in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        direct_image(&x[n, 0, 0, 0], &work[0] + threadid() * work_stride, &wpack[0],
                     &bias[0] if has_bias else NULL, &out[n, 0, 0, 0], x.shape[1],
                     x.shape[2], x.shape[3], out.shape[1], out.shape[2], out.shape[3], kh, kw,
                     sh, sw, ph, pw, dh, dw, Hp, Wp, groups, wide, six)
        if has_add:
            add_into(&out[n, 0, 0, 0], &add[n, 0, 0, 0], image)
