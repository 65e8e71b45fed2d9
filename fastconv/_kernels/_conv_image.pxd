# One image of the planned forward convolutions (register-blocked direct, channel-vector
# direct, Winograd): the loops over an image's blocks, nogil, on a caller-given scratch
# buffer. fastconv._kernels._conv runs them over a batch on OpenMP threads, and
# fastconv._kernels._compiled image by image inside its own threads, so both compute the same
# bits from one piece of code. Inline (a .pxd): each module that cimports them compiles them
# for its own CPU level, with the C blocks of src/ they call.
from cython cimport floating
from libc.string cimport memset

from fastconv._kernels._pad cimport split_row


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


cdef extern from "kvec.h" nogil:
    enum:
        KVEC_LANES_F "FCK_LANES_F"
        KVEC_LANES_D "FCK_LANES_D"
        KVEC_MAX_A1 "FCK_MAX_A1"
        KVEC_MAX_A2 "FCK_MAX_A2"
        KVEC_THREES_MAX_A1 "FCK_THREES_MAX_A1"
        KVEC_THREES_MAX_A2 "FCK_THREES_MAX_A2"
    int fc_kvec_f(int kv, int a, const float* p, const Py_ssize_t* tap_off, Py_ssize_t ntaps,
                  int run, const float* wb, const Py_ssize_t* pix_off, int step, float* o,
                  Py_ssize_t L,
                  int kb_n, int npix, const float* bias, const float* res, Py_ssize_t res_L,
                  int relu)
    int fc_kvec_d(int kv, int a, const double* p, const Py_ssize_t* tap_off, Py_ssize_t ntaps,
                  int run, const double* wb, const Py_ssize_t* pix_off, int step, double* o,
                  Py_ssize_t L,
                  int kb_n, int npix, const double* bias, const double* res, Py_ssize_t res_L,
                  int relu)


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


# -- padding --------------------------------------------------------------------------------

cdef inline void pad_rows(const floating* x, floating* p, Py_ssize_t C, Py_ssize_t H,
                          Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Hp,
                          Py_ssize_t Wp, Py_ssize_t sw, Py_ssize_t r0,
                          Py_ssize_t r1) noexcept nogil:
    """Rows r0 .. r1-1 (of Hp) of every channel of pad_image's buffer."""
    cdef Py_ssize_t c, q, r
    cdef Py_ssize_t Wq = (Wp + sw - 1) // sw
    cdef floating* row
    for c in range(C):
        for r in range(r0, r1):
            row = p + (c * sw * Hp + r) * Wq
            if r < ph or r - ph >= H:
                for q in range(sw):
                    memset(row + q * Hp * Wq, 0, Wq * sizeof(floating))
            else:
                split_row(x + (c * H + r - ph) * W, row, W, pw, sw, Wq, Hp * Wq, 0)


cdef inline void pad_image(const floating* x, floating* p, Py_ssize_t C, Py_ssize_t H,
                           Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Hp,
                           Py_ssize_t Wp, Py_ssize_t sw) noexcept nogil:
    """Zero-pad x (C, H, W) into p (C, sw, Hp, Wq), Wq = ceil(Wp / sw), split by column phase.

    p[c, q, r, m] = x[c, r - ph, m*sw + q - pw], or 0 outside x: the columns a strided
    output row reads at one kernel tap are then contiguous, as with stride 1 (split_row).
    """
    pad_rows(x, p, C, H, W, ph, pw, Hp, Wp, sw, 0, Hp)


cdef inline bint reads_in_place(Py_ssize_t H, Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                                Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t sw) noexcept nogil:
    """Whether pad_image's buffer would be a plain copy of the image: no padding, stride 1
    across, the image's own height and width."""
    return ph == 0 and pw == 0 and sw == 1 and Hp == H and Wp == W


cdef inline const floating* padded_image(const floating* x, floating* p, Py_ssize_t C,
                                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t ph,
                                        Py_ssize_t pw, Py_ssize_t Hp, Py_ssize_t Wp,
                                        Py_ssize_t sw) noexcept nogil:
    """pad_image's buffer for x, in p, or x itself where that buffer would be a plain copy
    of it (reads_in_place): a 1x1 layer then reads its input where it lies."""
    if reads_in_place(H, W, ph, pw, Hp, Wp, sw):
        return x
    pad_image(x, p, C, H, W, ph, pw, Hp, Wp, sw)
    return p


# -- the blocks of src/, by dtype -----------------------------------------------------------

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


cdef inline int kvec_block(int kv, int a, const floating* p, const Py_ssize_t* tap_off,
                           Py_ssize_t ntaps, int run, const floating* wb,
                           const Py_ssize_t* pix_off, int step, floating* o, Py_ssize_t L,
                           int kb_n, int npix, const floating* bias, const floating* res,
                           Py_ssize_t res_L, bint relu) noexcept nogil:
    """fc_kvec of the dtype: one block of a pixels x kv vectors of output channels (+ bias,
    + res, then ReLU where asked); 0, or FC_UNAVAILABLE (nothing written) in a build without
    the kernel. run: 3 where the taps come in threes of consecutive offsets, else 1; the
    pixels at pix_off, or (NULL) step apart (1 or 2). L and res_L: items from one channel to
    the next in o and res."""
    if floating is float:
        return fc_kvec_f(kv, a, p, tap_off, ntaps, run, wb, pix_off, step, o, L, kb_n, npix,
                         bias, res, res_L, relu)
    else:
        return fc_kvec_d(kv, a, p, tap_off, ntaps, run, wb, pix_off, step, o, L, kb_n, npix,
                         bias, res, res_L, relu)


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


# -- one image ------------------------------------------------------------------------------

cdef inline Py_ssize_t direct_tasks(Py_ssize_t K, Py_ssize_t Ho, Py_ssize_t groups,
                                    bint six) noexcept nogil:
    """direct_rows' tasks in one image: per output row, its blocks of output channels."""
    cdef Py_ssize_t kbs = KB6 if six else KB
    return groups * ((K // groups + kbs - 1) // kbs) * Ho


cdef inline void direct_rows(const floating* src, const floating* wpack, const floating* bias,
                             floating* out, Py_ssize_t C, Py_ssize_t K, Py_ssize_t Ho,
                             Py_ssize_t Wo, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                             Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Hp,
                             Py_ssize_t Wp, Py_ssize_t groups, bint wide, bint six,
                             Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """Tasks t0 .. t1-1 of direct_image (task t: output row t // (tasks per row), then the
    blocks of output channels of each group) on src, pad_image's buffer of the image (only
    the rows the tasks read need be there). Each output is one task's, the same whichever
    tasks a call takes."""
    cdef Py_ssize_t L = Ho * Wo, Kg = K // groups, Cg = C // groups
    cdef Py_ssize_t VW = (VW_F if floating is float else VW_D) * (WIDE if wide else 1)
    cdef Py_ssize_t kbs = KB6 if six else KB
    cdef Py_ssize_t nkb = (Kg + kbs - 1) // kbs, blk = Cg * kh * kw * kbs
    cdef Py_ssize_t Wq = (Wp + sw - 1) // sw
    cdef Py_ssize_t t, grp, kb, k0, oh, ob, ow
    cdef const floating* pg
    for t in range(t0, t1):
        oh = t // (groups * nkb)
        kb = t % nkb
        grp = t // nkb % groups
        k0 = grp * Kg + kb * kbs
        pg = src + grp * Cg * sw * Hp * Wq
        for ob in range((Wo + VW - 1) // VW):
            ow = ob * VW
            direct_block(wide, six, pg + oh * sh * Wq + ow, wpack + (grp * nkb + kb) * blk,
                         out + k0 * L + oh * Wo + ow, bias + k0 if bias != NULL else NULL,
                         min(kbs, (grp + 1) * Kg - k0), min(VW, Wo - ow),
                         Cg, kh, kw, sw, dh, dw, Hp, Wq, L)


cdef inline void direct_image(const floating* x, floating* work, const floating* wpack,
                              const floating* bias, floating* out, Py_ssize_t C, Py_ssize_t H,
                              Py_ssize_t W, Py_ssize_t K, Py_ssize_t Ho, Py_ssize_t Wo,
                              Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                              Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                              Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t groups, bint wide,
                              bint six) noexcept nogil:
    """out (K, Ho, Wo) = conv(x (C, H, W), weight) + bias (NULL for none) of one image by
    register-blocked direct convolution; work: pad_image's buffer (see conv2d_direct)."""
    direct_rows(padded_image(x, work, C, H, W, ph, pw, Hp, Wp, sw), wpack, bias, out, C, K, Ho,
                Wo, kh, kw, sh, sw, dh, dw, Hp, Wp, groups, wide, six, 0,
                direct_tasks(K, Ho, groups, six))


cdef inline Py_ssize_t kvec_tasks(Py_ssize_t K, Py_ssize_t Ho, Py_ssize_t Wo,
                                  Py_ssize_t groups, Py_ssize_t kvl, int pixels,
                                  bint by_rows) noexcept nogil:
    """kvec_blocks' tasks in one image: per pixel block, its blocks of kvl output
    channels."""
    cdef Py_ssize_t nblocks = (Ho * ((Wo + pixels - 1) // pixels) if by_rows
                               else (Ho * Wo + pixels - 1) // pixels)
    return groups * ((K // groups + kvl - 1) // kvl) * nblocks


ctypedef struct Plane:
    # where the pixels of a buffer of (C, Ho, Wo) planes lie: pixel (c, oh, ow) at
    # c*stride + first + oh*row + ow. A dense buffer: (Ho*Wo, 0, Wo); the compiled
    # executor's buffers that the next layer reads in place: its padded layout
    Py_ssize_t stride, first, row


cdef inline Plane dense_plane(Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    cdef Plane d
    d.stride, d.first, d.row = Ho * Wo, 0, Wo
    return d


cdef inline Py_ssize_t kvec_blocks(const floating* src, const floating* wpack,
                                   const floating* bias, floating* out, Py_ssize_t C,
                                   Py_ssize_t K, Py_ssize_t Ho, Py_ssize_t Wo,
                                   const Py_ssize_t* tap_off, Py_ssize_t ntaps, int run,
                                   const Py_ssize_t* row_taps, const Py_ssize_t* pix_off,
                                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t Hp, Py_ssize_t Wp,
                                   Py_ssize_t groups, int kv, int pixels, bint by_rows,
                                   const floating* res, bint relu, Plane out_at, Plane res_at,
                                   Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t kb0,
                                   Py_ssize_t kb1) noexcept nogil:
    """Tasks t0 .. t1-1 of kvec_image (task t: pixel block t // (tasks per block), then the
    blocks of output channels of each group), those of each group's channel blocks kb0 ..
    kb1-1 only (0, K: all), on src, the image zero-padded to (C, Hp, Wp) (pad_image at
    stride 1 across: the block broadcasts its pixels one by one, so a stride across needs no
    phase split; only the rows the tasks read need be there); the number of blocks this
    build has no kernel for (0). Each output is one task's. out_at, res_at: where out's and
    res's pixels lie (raster blocks, which span rows: dense only). Row blocks need sw <= 2
    (the kernel's pixel steps)."""
    cdef Py_ssize_t L = Ho * Wo, Kg = K // groups, Cg = C // groups
    cdef Py_ssize_t kvl = kv * (KVEC_LANES_F if floating is float else KVEC_LANES_D)
    cdef Py_ssize_t nkb = (Kg + kvl - 1) // kvl, blk = ntaps * kvl
    cdef Py_ssize_t row_blocks = (Wo + pixels - 1) // pixels
    cdef Py_ssize_t nblocks = Ho * row_blocks if by_rows else (L + pixels - 1) // pixels
    cdef Py_ssize_t t, grp, kb, k0, kb_n, b, f0, fo, fr, npix, oh, ow, r0, nt
    cdef Py_ssize_t failed = 0
    cdef const floating* pg
    cdef const floating* block_start
    cdef const Py_ssize_t* block_pix
    for t in range(t0, t1):
        b = t // (groups * nkb)
        kb = t % nkb
        if kb < kb0 or kb >= kb1:
            continue
        grp = t // nkb % groups
        pg = src + grp * Cg * Hp * Wp
        k0 = grp * Kg + kb * kvl
        kb_n = min(kvl, (grp + 1) * Kg - k0)
        if by_rows:
            oh = b // row_blocks
            ow = b % row_blocks * pixels
            fo = out_at.first + oh * out_at.row + ow
            fr = res_at.first + oh * res_at.row + ow
            npix = min(pixels, Wo - ow)
            block_start = pg + oh * sh * Wp + ow * sw
            block_pix = NULL
            r0 = row_taps[2 * oh]
            nt = row_taps[2 * oh + 1]
        else:
            f0 = b * pixels
            fo = fr = f0
            npix = min(pixels, L - f0)
            block_start = pg
            block_pix = pix_off + f0
            r0 = row_taps[0]
            nt = row_taps[1]
        # pointer arithmetic, not indexing: an empty run may start at the end
        failed += kvec_block(kv, pixels, block_start, tap_off + r0, nt, run,
                             wpack + (grp * nkb + kb) * blk + r0 * kvl,
                             block_pix, <int>sw, out + k0 * out_at.stride + fo,
                             out_at.stride, kb_n,
                             npix, bias + k0 if bias != NULL else NULL,
                             res + k0 * res_at.stride + fr if res != NULL else NULL,
                             res_at.stride, relu) != 0
    return failed


cdef inline Py_ssize_t kvec_image(const floating* x, floating* work, const floating* wpack,
                                  const floating* bias, floating* out, Py_ssize_t C,
                                  Py_ssize_t H, Py_ssize_t W, Py_ssize_t K, Py_ssize_t Ho,
                                  Py_ssize_t Wo, const Py_ssize_t* tap_off, Py_ssize_t ntaps,
                                  int run, const Py_ssize_t* row_taps,
                                  const Py_ssize_t* pix_off,
                                  Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                                  Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t groups, int kv,
                                  int pixels, bint by_rows, const floating* res,
                                  bint relu, Plane out_at, Plane res_at,
                                  bint x_padded) noexcept nogil:
    """out (K, Ho, Wo) = conv(x (C, H, W), weight) + bias (NULL for none) + res (NULL for
    none; (K, Ho, Wo)), then ReLU where asked, of one image in channel-vector blocks (the
    operands as conv2d_direct_kvec documents them; row_taps: (Ho, 2), row-major); the number
    of blocks this build has no kernel for (0). out_at, res_at: where out's and res's pixels
    lie (dense_plane for plain arrays); x_padded: x is already pad_image's buffer."""
    return kvec_blocks(x if x_padded else padded_image(x, work, C, H, W, ph, pw, Hp, Wp, 1),
                       wpack, bias, out, C, K, Ho, Wo, tap_off, ntaps, run, row_taps, pix_off,
                       sh, sw, Hp, Wp, groups, kv, pixels, by_rows, res, relu, out_at, res_at,
                       0, kvec_tasks(K, Ho, Wo, groups,
                                     kv * (KVEC_LANES_F if floating is float else KVEC_LANES_D),
                                     pixels, by_rows), 0, K)


cdef inline bint winograd_image(const floating* x, floating* work, const floating* upack,
                                const floating* bias, floating* out, Py_ssize_t C,
                                Py_ssize_t H, Py_ssize_t W, Py_ssize_t K, Py_ssize_t Ho,
                                Py_ssize_t Wo, const Py_ssize_t* tap_off, Py_ssize_t ph,
                                Py_ssize_t pw, Py_ssize_t tile_block, int kv, int pixels,
                                Py_ssize_t* failed) noexcept nogil:
    """out (K, Ho, Wo) = conv(x (C, H, W), weight) + bias (NULL for none) of one image by
    Winograd F(2x2, 3x3) (the operands and work as conv2d_winograd documents them); whether
    some output is not finite (the caller redoes the image by direct convolution). Adds to
    *failed the blocks this build has no kernel for."""
    cdef Py_ssize_t TH = (Ho + 1) // 2, TW = (Wo + 1) // 2, T = TH * TW
    cdef Py_ssize_t Hp = 2 * TH + 2, Wp = 2 * TW + 2
    cdef Py_ssize_t kvl = kv * (KVEC_LANES_F if floating is float else KVEC_LANES_D)
    cdef Py_ssize_t nkb = (K + kvl - 1) // kvl
    cdef Py_ssize_t n_blocks = (T + tile_block - 1) // tile_block
    cdef Py_ssize_t blk, t0, nt, xi, kb, k0, a0
    cdef floating* v = work + C * Hp * Wp
    cdef floating* mbuf = v + 16 * C * tile_block
    cdef bint bad = False
    pad_image(x, work, C, H, W, ph, pw, Hp, Wp, 1)
    for blk in range(n_blocks):
        t0 = blk * tile_block
        nt = min(tile_block, T - t0)
        winograd_input(work, C, Hp, Wp, TW, t0, nt, tile_block, v)
        for xi in range(16):
            for kb in range(nkb):
                k0 = kb * kvl
                a0 = 0
                while a0 < nt:
                    failed[0] += kvec_block(kv, pixels, v + xi * C * tile_block + a0, tap_off,
                                            C, 1,
                                            upack + (xi * nkb + kb) * C * kvl, NULL, 1,
                                            mbuf + (xi * K + k0) * tile_block + a0,
                                            tile_block, min(kvl, K - k0),
                                            min(pixels, nt - a0), NULL, NULL, 0, False) != 0
                    a0 = a0 + pixels
        bad |= winograd_output(mbuf, K, tile_block, TW, t0, nt, out, Ho, Wo, bias)
    return bad
