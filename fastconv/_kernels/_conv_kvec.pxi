# Direct convolution in channel-vector blocks, and its weight gradient (src/kvec.h; one
# image of the forward: _conv_image.pxd).

cdef extern from "kvec.h" nogil:
    int fc_kvec_wgrad_f(int kv, int a, const float* p, const Py_ssize_t* tap_off,
                        Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_step,
                        const float* got, int accumulate, float* sums)
    int fc_kvec_wgrad_d(int kv, int a, const double* p, const Py_ssize_t* tap_off,
                        Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_step,
                        const double* got, int accumulate, double* sums)
    int fc_load_tile_f(const float* g, float* tile, Py_ssize_t channels, Py_ssize_t pixels,
                       Py_ssize_t kvl)
    int fc_load_tile_d(const double* g, double* tile, Py_ssize_t channels, Py_ssize_t pixels,
                       Py_ssize_t kvl)


cdef inline int kvec_wgrad_block(int kv, int a, const floating* p, const Py_ssize_t* tap_off,
                                 Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_step,
                                 const floating* got, int accumulate,
                                 floating* sums) noexcept nogil:
    """fc_kvec_wgrad of the dtype: a taps x kv vectors of weight-gradient sums; 0, or
    FC_UNAVAILABLE (nothing written)."""
    if floating is float:
        return fc_kvec_wgrad_f(kv, a, p, tap_off, rows, cols, row_step, got, accumulate, sums)
    else:
        return fc_kvec_wgrad_d(kv, a, p, tap_off, rows, cols, row_step, got, accumulate, sums)


cdef inline int load_tile(const floating* g, floating* tile, Py_ssize_t channels,
                          Py_ssize_t pixels, Py_ssize_t kvl) noexcept nogil:
    """fc_load_tile of the dtype: grad_output's planes transposed to (pixels, kvl); 0, or
    FC_UNAVAILABLE (nothing written)."""
    if floating is float:
        return fc_load_tile_f(g, tile, channels, pixels, kvl)
    else:
        return fc_load_tile_d(g, tile, channels, pixels, kvl)


def kvec_block_limits(int itemsize):
    """(lanes, {kv: most pixels per block}) of the channel-vector direct kernel in this build
    of the module, for float32 (itemsize 4) or float64 (8); lanes is 0 where the build has
    none (the portable SSE2 build)."""
    lanes = KVEC_LANES_F if itemsize == 4 else KVEC_LANES_D
    return lanes, {1: KVEC_MAX_A1, 2: KVEC_MAX_A2}


def kvec_threes_limits():
    """{kv: most pixels per block} where the channel-vector block reads taps in threes (a
    3x3 kernel's rows at stride 1: each input broadcast once for three taps); both dtypes
    (the same registers hold either); 0 in the portable build."""
    return {1: KVEC_THREES_MAX_A1, 2: KVEC_THREES_MAX_A2}


def conv2d_direct_kvec(const floating[:, :, :, ::1] x, const floating[::1] wpack,
                       const floating[::1] bias, floating[:, :, :, ::1] out,
                       floating[::1] work, Py_ssize_t work_stride,
                       const Py_ssize_t[::1] tap_off, const Py_ssize_t[:, ::1] row_taps,
                       const Py_ssize_t[::1] pix_off, int run,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t Hp, Py_ssize_t Wp, int groups, int kv, int pixels,
                       bint by_rows, int num_threads,
                       const floating[:, :, :, ::1] add=None):
    """out = conv(x, weight) + bias (+ add, an array like out, when given) by direct
    convolution in channel-vector blocks.

    Each image is copied into the zero-padded (C, Hp, Wp) buffer of pad_image, not split by
    column phase (work: work_stride items per thread), then every block of ``pixels`` output
    pixels (raster order) x kv*lanes output channels runs fc_kvec over its taps.
    tap_off: the taps' offsets in the buffer, in runs: output row oh reads the run of
    row_taps[oh, 1] taps from row_taps[oh, 0] (row blocks skip the kernel rows that fall
    on padding); raster blocks read the run of row_taps[0]. run: 3 where the taps come in
    threes of consecutive offsets (a 3x3 kernel at dilation 1 along the rows, in row
    blocks), else 1.
    by_rows: a block is ``pixels`` columns of one output row, sw (1 or 2) apart in the buffer
    (which holds whole blocks of columns); else the blocks run through the image in raster order, and pix_off
    (ceil(Ho*Wo / pixels) * pixels entries) gives each pixel's offset, 0 past the last.
    wpack: (groups, ceil(K/groups/(kv*lanes)), len(tap_off), kv*lanes), the weights of the
    taps of tap_off, zero past each group.
    bias is empty for no bias.
    """
    check_built(not (KVEC_LANES_F if floating is float else KVEC_LANES_D), "channel-vector")
    cdef Py_ssize_t n, N = x.shape[0]
    cdef Py_ssize_t failed = 0
    cdef bint has_bias = bias.shape[0] > 0, has_add = add is not None
    for n in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        failed += kvec_image(&x[n, 0, 0, 0], &work[0] + threadid() * work_stride, &wpack[0],
                             &bias[0] if has_bias else NULL, &out[n, 0, 0, 0], x.shape[1],
                             x.shape[2], x.shape[3], out.shape[1], out.shape[2], out.shape[3],
                             &tap_off[0], tap_off.shape[0], run, &row_taps[0, 0], &pix_off[0], sh,
                             sw, ph, pw, Hp, Wp, groups, kv, pixels, by_rows,
                             &add[n, 0, 0, 0] if has_add else NULL, False,
                             dense_plane(out.shape[2], out.shape[3]),
                             dense_plane(out.shape[2], out.shape[3]), False)
    check_built(failed, "channel-vector")


def conv2d_weight_grad_kvec(const floating[:, :, :, ::1] grad_output,
                            const floating[:, :, :, ::1] x, floating[::1] sums,
                            floating[::1] work, Py_ssize_t work_stride, floating[::1] partials,
                            Py_ssize_t chunk, const Py_ssize_t[::1] tap_off,
                            Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                            Py_ssize_t Hp, Py_ssize_t Wp, int groups, int kv, int taps,
                            Py_ssize_t rows_per_strip, int num_threads):
    """grad_weight of conv2d in the channel-vector layout: sums (groups,
    ceil(K/groups/(kv*lanes)), Cg*kh*kw, kv*lanes), zero past each group's channels.

    Per image (padded and phase-split as in conv2d_direct_kvec, then a (Ho*Wo, kv*lanes)
    transposed block of grad_output; work_stride items per thread), per strip of
    rows_per_strip output rows (so the strip's inputs stay in cache across tap blocks), per
    block of ``taps`` taps (the last may be short), fc_kvec_wgrad adds the strip's
    products to the chunk's slot of partials. Images go in fixed chunks of ``chunk`` added
    in order, and the slots are then summed in chunk order: the result does not depend on
    the thread count, bit for bit.
    """
    check_built(not (KVEC_LANES_F if floating is float else KVEC_LANES_D), "channel-vector")
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], K = grad_output.shape[1]
    cdef Py_ssize_t Ho = grad_output.shape[2], Wo = grad_output.shape[3], L = Ho * Wo
    cdef Py_ssize_t Kg = K // groups, Cg = C // groups, ntaps = tap_off.shape[0]
    cdef Py_ssize_t kvl = kv * (KVEC_LANES_F if floating is float else KVEC_LANES_D)
    cdef Py_ssize_t nkb = (Kg + kvl - 1) // kvl, slot = sums.shape[0]
    cdef Py_ssize_t Wq = (Wp + sw - 1) // sw, image = C * sw * Hp * Wq
    cdef Py_ssize_t n_chunks = (N + chunk - 1) // chunk
    cdef Py_ssize_t n_strips = (Ho + rows_per_strip - 1) // rows_per_strip
    cdef Py_ssize_t n_tap_blocks = (ntaps + taps - 1) // taps
    cdef Py_ssize_t b, n, grp, kb, k0, kb_n, strip, oh0, rows, tb, t0
    cdef Py_ssize_t failed = 0
    cdef int accumulate
    cdef floating* p
    cdef const floating* src
    cdef floating* got
    cdef floating* part
    cdef const floating* pg
    for b in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        p = &work[0] + threadid() * work_stride
        got = p + image
        part = &partials[0] + b * slot
        for n in range(b * chunk, min(b * chunk + chunk, N)):
            src = padded_image(&x[n, 0, 0, 0], p, C, x.shape[2], x.shape[3], ph, pw, Hp, Wp,
                               sw)
            for grp in range(groups):
                pg = src + grp * Cg * sw * Hp * Wq
                for kb in range(nkb):
                    k0 = grp * Kg + kb * kvl
                    kb_n = min(kvl, (grp + 1) * Kg - k0)
                    failed += load_tile(&grad_output[n, k0, 0, 0], got, kb_n, L, kvl) != 0
                    for strip in range(n_strips):
                        oh0 = strip * rows_per_strip
                        rows = min(rows_per_strip, Ho - oh0)
                        # the chunk's first image starts its slot, the others add to it
                        accumulate = n > b * chunk or oh0 > 0
                        for tb in range(n_tap_blocks):
                            t0 = tb * taps
                            failed += kvec_wgrad_block(
                                kv, min(taps, ntaps - t0), pg + oh0 * sh * Wq, &tap_off[t0],
                                rows, Wo, sh * Wq, got + oh0 * Wo * kvl, accumulate,
                                part + ((grp * nkb + kb) * ntaps + t0) * kvl) != 0
    check_built(failed, "channel-vector")
    sum_slots(&partials[0], n_chunks, slot, 0, slot, &sums[0], num_threads)
