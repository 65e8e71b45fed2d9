"""2-D convolution forward (GEMM and direct) and backward, OpenMP threads over tiles of images.

Callers (fastconv.functional) validate the arguments, pass C-contiguous arrays of one float
dtype, size the scratch buffers and keep BLAS at one thread; nothing here checks or
allocates. Shapes: x (N, C, H, W), weight (K, C/groups, kh, kw), out (N, K, Ho, Wo).
Padding is top/left; everything outside the input is zero.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset

from fastconv._kernels._blas cimport gemm

from fastconv._kernels._im2col cimport Geometry, make_geometry, im2col_image, col2im_image


cdef inline bint is_pointwise(const Geometry* g) noexcept nogil:
    # 1x1, stride 1, no padding: an image (C, H*W) already is its column matrix
    return (g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.ph == 0 and g.pw == 0
            and g.Ho == g.H and g.Wo == g.W)


def conv2d_gemm(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                const floating[::1] bias, floating[:, :, :, ::1] out, floating[::1] work,
                Py_ssize_t work_stride, Py_ssize_t images_per_tile, Py_ssize_t rows_per_tile,
                Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                Py_ssize_t dh, Py_ssize_t dw, int groups, int num_threads):
    """out = conv(x, weight) + bias: im2col of a tile, then one GEMM per group.

    A tile is ``images_per_tile`` whole images (their columns side by side, so small
    images still make a wide GEMM; the result goes through a buffer into out), or output
    rows [oh0, oh0 + rows_per_tile) of one image (so a large image's columns stay in cache;
    the GEMM writes out directly). Each thread has work_stride items of work: the tile's
    column matrix (Cg*kh*kw, tile columns), then for multi-image tiles a (K/groups, tile
    columns) result. Pointwise convolutions with one-image tiles read x as the columns.
    bias is empty for no bias.
    """
    cdef Py_ssize_t N = x.shape[0], K = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t Kg = K // groups, Ho = out.shape[2], Wo = out.shape[3], L = Ho * Wo
    cdef Py_ssize_t CKK = Cg * weight.shape[2] * weight.shape[3]
    cdef Py_ssize_t strips = (Ho + rows_per_tile - 1) // rows_per_tile
    cdef Py_ssize_t n_tiles = (N + images_per_tile - 1) // images_per_tile * strips
    cdef Py_ssize_t t, n0, nb, oh0, oh1, width, grp, b, k, l
    cdef Geometry g = make_geometry(Cg, x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    sh, sw, ph, pw, dh, dw, Ho, Wo)
    cdef bint pointwise = is_pointwise(&g), has_bias = bias.shape[0] > 0
    cdef floating beta
    cdef floating* col
    cdef floating* res
    cdef floating* og
    cdef const floating* colp
    cdef const floating* rk
    for t in prange(n_tiles, nogil=True, schedule="static", num_threads=num_threads):
        col = &work[0] + threadid() * work_stride
        n0 = t // strips * images_per_tile
        nb = min(images_per_tile, N - n0)
        oh0 = t % strips * rows_per_tile
        oh1 = min(oh0 + rows_per_tile, Ho)
        width = (oh1 - oh0) * Wo
        res = col + CKK * nb * width
        for grp in range(groups):
            if nb == 1:
                og = &out[n0, grp * Kg, oh0, 0]
                beta = 0
                if has_bias:
                    beta = 1
                    for k in range(Kg):
                        for l in range(width):
                            og[k * L + l] = bias[grp * Kg + k]
                if pointwise:
                    colp = &x[n0, grp * Cg, oh0, 0]
                else:
                    im2col_image(&x[n0, grp * Cg, 0, 0], col, &g, oh0, oh1, width)
                    colp = col
                gemm(False, False, <int>Kg, <int>width, <int>CKK, <floating>1,
                     &weight[grp * Kg, 0, 0, 0], <int>CKK, colp, <int>(L if pointwise else width),
                     beta, og, <int>L)
            else:
                for b in range(nb):
                    im2col_image(&x[n0 + b, grp * Cg, 0, 0], col + b * L, &g, 0, Ho, nb * L)
                gemm(False, False, <int>Kg, <int>(nb * L), <int>CKK, <floating>1,
                     &weight[grp * Kg, 0, 0, 0], <int>CKK, col, <int>(nb * L), <floating>0,
                     res, <int>(nb * L))
                for b in range(nb):
                    og = &out[n0 + b, grp * Kg, 0, 0]
                    for k in range(Kg):
                        rk = res + k * nb * L + b * L
                        if has_bias:
                            for l in range(L):
                                og[k * L + l] = rk[l] + bias[grp * Kg + k]
                        else:
                            for l in range(L):
                                og[k * L + l] = rk[l]



cdef inline void pad_image(const floating* x, floating* p, Py_ssize_t C, Py_ssize_t H,
                           Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Hp,
                           Py_ssize_t Wp, Py_ssize_t sw) noexcept nogil:
    """Zero-pad x (C, H, W) into p (C, sw, Hp, Wq), Wq = ceil(Wp / sw), split by column phase.

    p[c, q, r, m] = x[c, r - ph, m*sw + q - pw], or 0 outside x: the columns a strided
    output row reads at one kernel tap are then contiguous, as with stride 1.
    """
    cdef Py_ssize_t c, q, r, m, m0, m1, last
    cdef Py_ssize_t Wq = (Wp + sw - 1) // sw
    cdef const floating* xr
    cdef floating* row
    for q in range(sw):
        # row[m] is inside x for m in [m0, m1): zero, copy, zero, with no test per
        # element (with one, the copy was 4-14% of a 3x3 layer's time)
        m0 = (pw - q + sw - 1) // sw
        last = W - 1 + pw - q
        m1 = min(Wq, last // sw + 1) if last >= 0 else 0
        m0 = min(m0, m1)
        for c in range(C):
            for r in range(Hp):
                row = p + ((c * sw + q) * Hp + r) * Wq
                if r < ph or r - ph >= H:
                    memset(row, 0, Wq * sizeof(floating))
                    continue
                xr = x + (c * H + r - ph) * W + q - pw
                # rows are short (tens of items): loops, not memset/memcpy calls, and a
                # constant stride, so that they vectorize
                for m in range(m0):
                    row[m] = 0
                if sw == 1:
                    for m in range(m0, m1):
                        row[m] = xr[m]
                elif sw == 2:
                    for m in range(m0, m1):
                        row[m] = xr[2 * m]
                else:
                    for m in range(m0, m1):
                        row[m] = xr[m * sw]
                for m in range(m1, Wq):
                    row[m] = 0


cdef inline const floating* padded_image(const floating* x, floating* p, Py_ssize_t C,
                                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t ph,
                                        Py_ssize_t pw, Py_ssize_t Hp, Py_ssize_t Wp,
                                        Py_ssize_t sw) noexcept nogil:
    """pad_image's buffer for x, in p, or x itself where that buffer would be a plain copy
    of it (no padding, stride 1 across, the image's own height and width): a 1x1 layer
    then reads its input where it lies."""
    if ph == 0 and pw == 0 and sw == 1 and Hp == H and Wp == W:
        return x
    pad_image(x, p, C, H, W, ph, pw, Hp, Wp, sw)
    return p


cdef enum:
    LANES = 16


cdef inline floating row_sum(const floating* a, Py_ssize_t n) noexcept nogil:
    """sum(a[:n]) in LANES interleaved partial sums, added up in a fixed order: vectorizes,
    and gives the same bits for the same n on every call."""
    cdef floating lanes[LANES]
    cdef floating total = 0
    cdef Py_ssize_t i, blocks = n // LANES
    cdef int v
    for v in range(LANES):
        lanes[v] = 0
    for i in range(blocks):
        for v in range(LANES):
            lanes[v] += a[i * LANES + v]
    for i in range(blocks * LANES, n):
        total += a[i]
    for v in range(LANES):
        total += lanes[v]
    return total


cdef enum:
    # result items per task of sum_slots: 8 KiB of float32, which stay in L1 cache
    SUM_BLOCK = 2048


cdef void sum_slots(const floating* partials, Py_ssize_t n_slots, Py_ssize_t slot,
                    Py_ssize_t lo, Py_ssize_t hi, floating* out,
                    int num_threads) noexcept nogil:
    """out[e - lo] = 0 + partials[e] + partials[slot + e] + ... (the n_slots slots in
    order) for e in [lo, hi): the same additions in the same order whatever the threads.

    Threads take blocks of the result and add the slots into them one after another, each
    a sequential stream. Element by element across the slots instead, every load was a
    cache miss: slots a multiple of 64 KiB apart fall on the same cache sets (32 slots of
    a 1x1 layer's weight gradient: 1 ms of its 2.9, 1 thread).
    """
    cdef Py_ssize_t n_blocks = (hi - lo + SUM_BLOCK - 1) // SUM_BLOCK
    cdef Py_ssize_t blk, b, e, e0, e1
    for blk in prange(n_blocks, schedule="static", num_threads=num_threads):
        e0 = lo + blk * SUM_BLOCK
        e1 = min(e0 + SUM_BLOCK, hi)
        for e in range(e0, e1):
            out[e - lo] = 0
        for b in range(n_slots):
            for e in range(e0, e1):
                out[e - lo] = out[e - lo] + partials[b * slot + e]


cdef extern from *:
    """
    /* One FC_KB x FC_VW block of direct-convolution outputs, kept in registers over every
     * kernel tap. In C rather than Cython, and never inlined, because only then does GCC
     * keep the accumulators in SIMD registers (inlined into the OpenMP region it unrolls
     * them into scalar code, ~10x slower). The block is 8 registers of the instruction set
     * this build of the module targets (setup.py also builds it for x86-64-v3 and v4):
     * 8 independent FMA chains hide the FMA latency. */
    #if defined(__GNUC__) || defined(__clang__)
    #define FC_NOINLINE __attribute__((noinline))
    #define FC_INLINE inline __attribute__((always_inline))
    #elif defined(_MSC_VER)
    #define FC_NOINLINE __declspec(noinline)
    #define FC_INLINE __forceinline
    #else
    #define FC_NOINLINE
    #define FC_INLINE inline
    #endif
    #if defined(__AVX512F__)
    #include <immintrin.h>
    #define FC_KB 8
    #define FC_VW_F 16
    #define FC_VW_D 8
    #define FC_WIDE 2
    #elif defined(__AVX2__)
    #define FC_KB 4
    #define FC_VW_F 16
    #define FC_VW_D 8
    #define FC_WIDE 1
    #else
    #define FC_KB 4
    #define FC_VW_F 8
    #define FC_VW_D 4
    #define FC_WIDE 1
    #endif

    #if defined(__AVX512F__)
    /* AVX-512: NV zmm of columns per output channel, 8 channels, in intrinsics: GCC's own
     * code for 8 zmm accumulators (4x32 or 8x16 floats) kept them on the stack and
     * measured 2x slower than its 4-zmm block. The wide block (NV = 2, 16 accumulators)
     * measured 1.1x the narrow one where its columns are not mostly padding. */
    #define FC_DIRECT_BLOCK(NAME, T, NV, VEC, SETZERO, LOADU, SET1, FMADD, ADD, MSTOREU, KBN) \
    static FC_NOINLINE void NAME(const T* p, const T* wb, T* o, const T* bias,              \
                                 Py_ssize_t kb_n, Py_ssize_t vw_n, Py_ssize_t cg,           \
                                 Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh, \
                                 Py_ssize_t dw, Py_ssize_t hp, Py_ssize_t wq, Py_ssize_t L) \
    {                                                                                        \
        const int lanes = (int)(sizeof(VEC) / sizeof(T));                                    \
        VEC acc[KBN][NV], x[NV];                                                             \
        for (int k = 0; k < KBN; k++)                                                        \
            for (int u = 0; u < NV; u++) acc[k][u] = SETZERO();                              \
        const T* wt = wb;                                                                    \
        for (Py_ssize_t c = 0; c < cg; c++) {                                                \
            for (Py_ssize_t i = 0; i < kh; i++) {                                            \
                const T* xr = p + (c * sw * hp + i * dh) * wq;                               \
                Py_ssize_t q = 0, m = 0;  /* tap column j*dw: phase q, m columns in */       \
                for (Py_ssize_t j = 0; j < kw; j++) {                                        \
                    for (int u = 0; u < NV; u++) x[u] = LOADU(xr + q * hp * wq + m + u * lanes); \
                    for (int k = 0; k < KBN; k++) {                                          \
                        VEC w = SET1(wt[k]);                                                 \
                        for (int u = 0; u < NV; u++) acc[k][u] = FMADD(w, x[u], acc[k][u]);  \
                    }                                                                        \
                    wt += KBN;                                                               \
                    for (q += dw; q >= sw; q -= sw) m++;                                     \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        for (int u = 0; u < NV && u * lanes < vw_n; u++) {                                   \
            Py_ssize_t n = vw_n - u * lanes < lanes ? vw_n - u * lanes : lanes;              \
            __mmask16 mask = (__mmask16)((1u << n) - 1u);                                    \
            for (Py_ssize_t k = 0; k < kb_n; k++)                                            \
                MSTOREU(o + k * L + u * lanes, mask,                                         \
                        ADD(acc[k][u], SET1(bias ? bias[k] : (T)0)));                        \
        }                                                                                    \
    }
    #define FC_AVX512_F(NAME, NV, KBN) FC_DIRECT_BLOCK(NAME, float, NV, __m512,                 \
        _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps,      \
        _mm512_mask_storeu_ps, KBN)
    #define FC_AVX512_D(NAME, NV, KBN) FC_DIRECT_BLOCK(NAME, double, NV, __m512d,                \
        _mm512_setzero_pd, _mm512_loadu_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd,      \
        _mm512_mask_storeu_pd, KBN)
    FC_AVX512_F(fc_direct_block_f, 1, FC_KB)
    FC_AVX512_D(fc_direct_block_d, 1, FC_KB)
    FC_AVX512_F(fc_direct_block_wide_f, 2, FC_KB)
    FC_AVX512_D(fc_direct_block_wide_d, 2, FC_KB)
    /* 6 output channels (LeNet's conv1): a block of 8 would be a quarter zero weights */
    #define FC_KB6 6
    FC_AVX512_F(fc_direct_block6_f, 1, 6)
    FC_AVX512_D(fc_direct_block6_d, 1, 6)
    FC_AVX512_F(fc_direct_block_wide6_f, 2, 6)
    FC_AVX512_D(fc_direct_block_wide6_d, 2, 6)
    #else
    #define FC_DIRECT_BLOCK(NAME, T, VW)                                                     \
    static FC_NOINLINE void NAME(const T* p, const T* wb, T* o, const T* bias,              \
                                 Py_ssize_t kb_n, Py_ssize_t vw_n, Py_ssize_t cg,           \
                                 Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh, \
                                 Py_ssize_t dw, Py_ssize_t hp, Py_ssize_t wq, Py_ssize_t L) \
    {                                                                                        \
        T acc[FC_KB][VW] = {{0}};                                                            \
        const T* wt = wb;                                                                    \
        for (Py_ssize_t c = 0; c < cg; c++) {                                                \
            for (Py_ssize_t i = 0; i < kh; i++) {                                            \
                const T* xr = p + (c * sw * hp + i * dh) * wq;                               \
                Py_ssize_t q = 0, m = 0;  /* tap column j*dw: phase q, m columns in */       \
                for (Py_ssize_t j = 0; j < kw; j++) {                                        \
                    const T* xp = xr + q * hp * wq + m;                                      \
                    T x[VW];                                                                 \
                    for (int v = 0; v < VW; v++) x[v] = xp[v];                               \
                    for (int k = 0; k < FC_KB; k++) {                                        \
                        T w = wt[k];                                                         \
                        for (int v = 0; v < VW; v++) acc[k][v] += w * x[v];                  \
                    }                                                                        \
                    wt += FC_KB;                                                             \
                    for (q += dw; q >= sw; q -= sw) m++;                                     \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        for (Py_ssize_t k = 0; k < kb_n; k++)                                                \
            for (Py_ssize_t v = 0; v < vw_n; v++)                                            \
                o[k * L + v] = acc[k][v] + (bias ? bias[k] : (T)0);                          \
    }
    FC_DIRECT_BLOCK(fc_direct_block_f, float, FC_VW_F)
    FC_DIRECT_BLOCK(fc_direct_block_d, double, FC_VW_D)
    #define fc_direct_block_wide_f fc_direct_block_f
    #define fc_direct_block_wide_d fc_direct_block_d
    /* no 6-channel block here: FC_KB6 == FC_KB tells the caller so */
    #define FC_KB6 FC_KB
    #define fc_direct_block6_f fc_direct_block_f
    #define fc_direct_block6_d fc_direct_block_d
    #define fc_direct_block_wide6_f fc_direct_block_f
    #define fc_direct_block_wide6_d fc_direct_block_d
    #endif
    /* The instance for (wide, six); builds without one get the one they have. */
    #define FC_DIRECT_DISPATCH(NAME, T, SUFFIX)                                              \
    static void NAME(int wide, int six, const T* p, const T* wb, T* o, const T* bias,       \
                     Py_ssize_t kb_n, Py_ssize_t vw_n, Py_ssize_t cg, Py_ssize_t kh,        \
                     Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,            \
                     Py_ssize_t hp, Py_ssize_t wq, Py_ssize_t L)                            \
    {                                                                                        \
        (six ? (wide ? fc_direct_block_wide6_##SUFFIX : fc_direct_block6_##SUFFIX)            \
             : (wide ? fc_direct_block_wide_##SUFFIX : fc_direct_block_##SUFFIX))             \
            (p, wb, o, bias, kb_n, vw_n, cg, kh, kw, sw, dh, dw, hp, wq, L);                  \
    }
    FC_DIRECT_DISPATCH(fc_direct_f, float, f)
    FC_DIRECT_DISPATCH(fc_direct_d, double, d)
    """
    enum:
        KB "FC_KB"
        KB6 "FC_KB6"
        VW_F "FC_VW_F"
        VW_D "FC_VW_D"
        WIDE "FC_WIDE"
    void fc_direct_f(bint wide, bint six, const float* p, const float* wb, float* o,
                     const float* bias, Py_ssize_t kb_n, Py_ssize_t vw_n, Py_ssize_t cg,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                     Py_ssize_t hp, Py_ssize_t wq, Py_ssize_t L) noexcept nogil
    void fc_direct_d(bint wide, bint six, const double* p, const double* wb, double* o,
                     const double* bias, Py_ssize_t kb_n, Py_ssize_t vw_n, Py_ssize_t cg,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                     Py_ssize_t hp, Py_ssize_t wq, Py_ssize_t L) noexcept nogil

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


cdef extern from *:
    """
    /* Direct convolution with output channels across the vector ("channel-vector" block):
     * A output pixels (consecutive in the image's raster order) x KV vectors of output
     * channels, kept in A*KV registers over every kernel tap. Per tap it loads KV weight
     * vectors and broadcasts one input value per pixel, so no lane is padding when the
     * channels fill whole vectors, whatever the output width (LeNet's conv2 has 10-column
     * rows: a block of 16 output columns would be 37% padding). A and KV are compile-time
     * constants of each instance, so the accumulators stay in registers; fc_kvec_*
     * dispatches to the instance. The block is transposed in registers, lanes pixels at a
     * time, and stored straight into the NCHW output (a scalar transpose through a tile in
     * memory cost 3-5% of the large 3x3 layers' time, 10% of a 1x1 layer's). */
    #if defined(__AVX512F__) || defined(__AVX2__)
    #include <immintrin.h>
    #define FCK_PRAGMA(x) _Pragma(#x)
    #define FCK_TAPS(T, VEC, LOADU, SET1, FMADD, KV, A, PIXEL_OFFSET)                        \
        for (Py_ssize_t t = 0; t < ntaps; t++) {                                             \
            const T* pt = p + tap_off[t];                                                    \
            VEC w[KV];                                                                       \
            FCK_PRAGMA(GCC unroll 4)                                                         \
            for (int v = 0; v < KV; v++) w[v] = LOADU(wb + (t * KV + v) * lanes);            \
            FCK_PRAGMA(GCC unroll 32)                                                        \
            for (int a = 0; a < A; a++) {                                                    \
                VEC xa = SET1(pt[PIXEL_OFFSET]);                                             \
                FCK_PRAGMA(GCC unroll 4)                                                     \
                for (int v = 0; v < KV; v++) acc[a][v] = FMADD(w[v], xa, acc[a][v]);         \
            }                                                                                \
        }
    #define FCK_BODY(T, VEC, SETZERO, LOADU, SET1, FMADD, STOREU, KV, A, TRANSPOSE,         \
                     STORE_N, ADD)                                                           \
    {                                                                                        \
        const int lanes = (int)(sizeof(VEC) / sizeof(T));                                    \
        VEC acc[A][KV];                                                                      \
        FCK_PRAGMA(GCC unroll 32)                                                            \
        for (int a = 0; a < A; a++)                                                          \
            FCK_PRAGMA(GCC unroll 4)                                                         \
            for (int v = 0; v < KV; v++) acc[a][v] = SETZERO();                              \
        /* pix_off NULL: the pixels are consecutive in p (one output row), and their        \
         * offsets fold into the broadcasts' addresses */                                    \
        if (pix_off == NULL) FCK_TAPS(T, VEC, LOADU, SET1, FMADD, KV, A, a)                  \
        else FCK_TAPS(T, VEC, LOADU, SET1, FMADD, KV, A, pix_off[a])                         \
        /* vector v holds output channels v*lanes.., lanes pixels a0.. turn into one vector \
         * per channel: o + channel * L + a0 */                                              \
        FCK_PRAGMA(GCC unroll 4)                                                             \
        for (int v = 0; v < KV; v++) {                                                       \
            if (v * lanes >= kb_n) break;                                                    \
            int channels = kb_n - v * lanes < lanes ? kb_n - v * lanes : lanes;              \
            FCK_PRAGMA(GCC unroll 4)                                                         \
            for (int a0 = 0; a0 < A; a0 += lanes) {                                          \
                if (a0 >= npix) break;                                                       \
                VEC r[sizeof(VEC) / sizeof(T)];                                              \
                FCK_PRAGMA(GCC unroll 16)                                                    \
                for (int i = 0; i < lanes; i++) /* pixels past A: zero rows (the inner  \
                     * test only keeps the unused index in bounds for the compiler) */        \
                    r[i] = a0 + i < A ? acc[a0 + i < A ? a0 + i : 0][v] : SETZERO();         \
                TRANSPOSE(r);                                                                \
                int n = npix - a0 < lanes ? npix - a0 : lanes;                               \
                for (int k = 0; k < channels; k++) {                                         \
                    T* ok = o + (Py_ssize_t)(v * lanes + k) * L + a0;                        \
                    STORE_N(ok, bias ? ADD(r[k], SET1(bias[v * lanes + k])) : r[k], n);      \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }
    /* o: the block's first output (channel k at o + k*L), kb_n channels and npix pixels of
     * it real (the rest is padding); bias (of the block's channels) NULL for none */
    #define FCK_BODY_ARGS(T) (const T* p, const Py_ssize_t* tap_off, Py_ssize_t ntaps,       \
                              const T* wb, const Py_ssize_t* pix_off, T* o, Py_ssize_t L,   \
                              int kb_n, int npix, const T* bias)
    /* Weight gradient, the same block turned around: A taps x KV vectors of output
     * channels in registers, summed over the pixels of `rows` output rows of `cols`
     * columns: sums[a] (+)= sum over pixels of p[tap_off[a] + pixel] * got[pixel], with
     * got the grad_output block transposed to (pixels, KV*lanes). */
    /* (TRANSPOSE, STORE_N and ADD are the forward's; the instance macros pass them to both) */
    #define FCKW_BODY(T, VEC, SETZERO, LOADU, SET1, FMADD, STOREU, KV, A, TRANSPOSE,        \
                      STORE_N, ADD)                                                          \
    {                                                                                        \
        const int lanes = (int)(sizeof(VEC) / sizeof(T));                                    \
        VEC acc[A][KV];                                                                      \
        FCK_PRAGMA(GCC unroll 32)                                                            \
        for (int a = 0; a < A; a++)                                                          \
            FCK_PRAGMA(GCC unroll 4)                                                         \
            for (int v = 0; v < KV; v++)                                                     \
                acc[a][v] = accumulate ? LOADU(sums + (a * KV + v) * lanes) : SETZERO();     \
        for (Py_ssize_t r = 0; r < rows; r++) {                                              \
            const T* pr[A];                                                                  \
            FCK_PRAGMA(GCC unroll 32)                                                        \
            for (int a = 0; a < A; a++) pr[a] = p + r * row_step + tap_off[a];               \
            const T* gr = got + r * cols * KV * lanes;                                       \
            for (Py_ssize_t c = 0; c < cols; c++) {                                          \
                VEC g[KV];                                                                   \
                FCK_PRAGMA(GCC unroll 4)                                                     \
                for (int v = 0; v < KV; v++) g[v] = LOADU(gr + (c * KV + v) * lanes);        \
                FCK_PRAGMA(GCC unroll 32)                                                    \
                for (int a = 0; a < A; a++) {                                                \
                    VEC xa = SET1(pr[a][c]);                                                 \
                    FCK_PRAGMA(GCC unroll 4)                                                 \
                    for (int v = 0; v < KV; v++) acc[a][v] = FMADD(xa, g[v], acc[a][v]);     \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        FCK_PRAGMA(GCC unroll 32)                                                            \
        for (int a = 0; a < A; a++)                                                          \
            FCK_PRAGMA(GCC unroll 4)                                                         \
            for (int v = 0; v < KV; v++) STOREU(sums + (a * KV + v) * lanes, acc[a][v]);     \
    }
    #define FCKW_BODY_ARGS(T) (const T* p, const Py_ssize_t* tap_off, Py_ssize_t rows,      \
                               Py_ssize_t cols, Py_ssize_t row_step, const T* got,         \
                               int accumulate, T* sums)
    #if defined(__AVX512F__)
    /* r[i] (pixel i's channels) -> r[k] (channel k's pixels), 16x16 floats: unpack pairs of
     * rows, then 4-row groups within 128-bit lanes, then the lanes themselves */
    static FC_INLINE void fck_transpose_f(__m512 r[16]) {
        __m512 t[16], u[16];
        for (int i = 0; i < 8; i++) {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for (int g = 0; g < 4; g++) {  /* u[4g+m], 128-bit lane l: rows 4g.., column 4l+m */
            u[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
            u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
            u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
            u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
        }
        for (int m = 0; m < 4; m++) {
            __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);
            __m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
            __m512 w0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
            __m512 w1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
            r[m] = _mm512_shuffle_f32x4(v0, w0, 0x88);
            r[4 + m] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
            r[8 + m] = _mm512_shuffle_f32x4(v1, w1, 0x88);
            r[12 + m] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
        }
    }
    /* 8x8 doubles: unpack pairs of rows, then the 128-bit lanes */
    static FC_INLINE void fck_transpose_d(__m512d r[8]) {
        __m512d t[8];
        for (int i = 0; i < 4; i++) {  /* t[2i+m], lane l: rows 2i, 2i+1, column 2l+m */
            t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
        }
        for (int m = 0; m < 2; m++) {
            __m512d v0 = _mm512_shuffle_f64x2(t[m], t[2 + m], 0x44);
            __m512d v1 = _mm512_shuffle_f64x2(t[m], t[2 + m], 0xEE);
            __m512d w0 = _mm512_shuffle_f64x2(t[4 + m], t[6 + m], 0x44);
            __m512d w1 = _mm512_shuffle_f64x2(t[4 + m], t[6 + m], 0xEE);
            r[m] = _mm512_shuffle_f64x2(v0, w0, 0x88);
            r[2 + m] = _mm512_shuffle_f64x2(v0, w0, 0xDD);
            r[4 + m] = _mm512_shuffle_f64x2(v1, w1, 0x88);
            r[6 + m] = _mm512_shuffle_f64x2(v1, w1, 0xDD);
        }
    }
    #define FCK_STORE_N_F(o, x, n) _mm512_mask_storeu_ps(o, (__mmask16)((1u << (n)) - 1u), x)
    #define FCK_STORE_N_D(o, x, n) _mm512_mask_storeu_pd(o, (__mmask8)((1u << (n)) - 1u), x)
    #define FCK_LOAD_N_F(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1u), p)
    #define FCK_LOAD_N_D(p, n) _mm512_maskz_loadu_pd((__mmask8)((1u << (n)) - 1u), p)
    #define FCK_INSTANCE_F(BODY, NAME, KV, A) static FC_NOINLINE void NAME##_f_##KV##_##A  \
        BODY##_ARGS(float) BODY(float, __m512, _mm512_setzero_ps, _mm512_loadu_ps,          \
                                _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, KV, A,   \
                                fck_transpose_f, FCK_STORE_N_F, _mm512_add_ps)
    #define FCK_INSTANCE_D(BODY, NAME, KV, A) static FC_NOINLINE void NAME##_d_##KV##_##A  \
        BODY##_ARGS(double) BODY(double, __m512d, _mm512_setzero_pd, _mm512_loadu_pd,       \
                                 _mm512_set1_pd, _mm512_fmadd_pd, _mm512_storeu_pd, KV, A,  \
                                 fck_transpose_d, FCK_STORE_N_D, _mm512_add_pd)
    #define FCK_LANES_F 16
    #define FCK_LANES_D 8
    /* 32 registers: KV weights, one broadcast input, A*KV accumulators */
    #define FCK_MAX_A1 28
    #define FCK_MAX_A2 14
    #define FCK_LIST1(X) X(1,1) X(1,2) X(1,3) X(1,4) X(1,5) X(1,6) X(1,7) X(1,8) X(1,9)       \
        X(1,10) X(1,11) X(1,12) X(1,13) X(1,14) X(1,15) X(1,16) X(1,17) X(1,18) X(1,19)      \
        X(1,20) X(1,21) X(1,22) X(1,23) X(1,24) X(1,25) X(1,26) X(1,27) X(1,28)
    #define FCK_LIST2(X) X(2,1) X(2,2) X(2,3) X(2,4) X(2,5) X(2,6) X(2,7) X(2,8) X(2,9)       \
        X(2,10) X(2,11) X(2,12) X(2,13) X(2,14)
    #else
    /* 8x8 floats: unpack pairs of rows, then 4-row groups within 128-bit lanes, then the
     * lanes */
    static FC_INLINE void fck_transpose_f(__m256 r[8]) {
        __m256 t[8], u[8];
        for (int i = 0; i < 4; i++) {
            t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for (int g = 0; g < 2; g++) {  /* u[4g+m], 128-bit lane l: rows 4g.., column 4l+m */
            u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
            u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
            u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
            u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
        }
        for (int m = 0; m < 4; m++) {
            r[m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
            r[4 + m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
        }
    }
    /* 4x4 doubles: unpack pairs of rows, then the 128-bit lanes */
    static FC_INLINE void fck_transpose_d(__m256d r[4]) {
        __m256d t[4];
        for (int i = 0; i < 2; i++) {  /* t[2i+m], lane l: rows 2i, 2i+1, column 2l+m */
            t[2 * i] = _mm256_unpacklo_pd(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_pd(r[2 * i], r[2 * i + 1]);
        }
        for (int m = 0; m < 2; m++) {
            r[m] = _mm256_permute2f128_pd(t[m], t[2 + m], 0x20);
            r[2 + m] = _mm256_permute2f128_pd(t[m], t[2 + m], 0x31);
        }
    }
    /* AVX2 has no store mask of n lanes to hand: the vector goes through a buffer */
    #define FCK_STORE_N(T, STOREU, o, x, n)                                                  \
        do {                                                                                 \
            if ((n) == (int)(sizeof(x) / sizeof(T))) { STOREU(o, x); break; }                \
            T buf_[sizeof(x) / sizeof(T)];                                                   \
            STOREU(buf_, x);                                                                 \
            for (int i_ = 0; i_ < (n); i_++) (o)[i_] = buf_[i_];                             \
        } while (0)
    #define FCK_STORE_N_F(o, x, n) FCK_STORE_N(float, _mm256_storeu_ps, o, x, n)
    #define FCK_STORE_N_D(o, x, n) FCK_STORE_N(double, _mm256_storeu_pd, o, x, n)
    static FC_INLINE __m256 fck_load_n_f(const float* p, int n) {
        if (n == 8) return _mm256_loadu_ps(p);
        float buf[8] = {0};
        for (int i = 0; i < n; i++) buf[i] = p[i];
        return _mm256_loadu_ps(buf);
    }
    static FC_INLINE __m256d fck_load_n_d(const double* p, int n) {
        if (n == 4) return _mm256_loadu_pd(p);
        double buf[4] = {0};
        for (int i = 0; i < n; i++) buf[i] = p[i];
        return _mm256_loadu_pd(buf);
    }
    #define FCK_LOAD_N_F fck_load_n_f
    #define FCK_LOAD_N_D fck_load_n_d
    #define FCK_INSTANCE_F(BODY, NAME, KV, A) static FC_NOINLINE void NAME##_f_##KV##_##A  \
        BODY##_ARGS(float) BODY(float, __m256, _mm256_setzero_ps, _mm256_loadu_ps,          \
                                _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, KV, A,   \
                                fck_transpose_f, FCK_STORE_N_F, _mm256_add_ps)
    #define FCK_INSTANCE_D(BODY, NAME, KV, A) static FC_NOINLINE void NAME##_d_##KV##_##A  \
        BODY##_ARGS(double) BODY(double, __m256d, _mm256_setzero_pd, _mm256_loadu_pd,       \
                                 _mm256_set1_pd, _mm256_fmadd_pd, _mm256_storeu_pd, KV, A,  \
                                 fck_transpose_d, FCK_STORE_N_D, _mm256_add_pd)
    #define FCK_LANES_F 8
    #define FCK_LANES_D 4
    /* 16 registers: KV weights, one broadcast input, A*KV accumulators */
    #define FCK_MAX_A1 12
    #define FCK_MAX_A2 6
    #define FCK_LIST1(X) X(1,1) X(1,2) X(1,3) X(1,4) X(1,5) X(1,6) X(1,7) X(1,8) X(1,9)       \
        X(1,10) X(1,11) X(1,12)
    #define FCK_LIST2(X) X(2,1) X(2,2) X(2,3) X(2,4) X(2,5) X(2,6)
    #endif
    #define FCK_ALL(X) FCK_LIST1(X) FCK_LIST2(X)
    /* grad_output's planes as the weight-gradient kernel reads them: tile (pixels, kvl)
     * [a, k] = g[k*pixels + a] for the first `channels` channels, 0 for the rest of the
     * vectors; lanes x lanes squares through the register transpose (element by element it
     * cost ~3% of a 3x3 layer's weight gradient) */
    #define FCK_LOAD_TILE(NAME, T, VEC, SETZERO, STOREU, TRANSPOSE, LOAD_N)                  \
    static void NAME(const T* g, T* tile, Py_ssize_t channels, Py_ssize_t pixels,           \
                     Py_ssize_t kvl)                                                         \
    {                                                                                        \
        const int lanes = (int)(sizeof(VEC) / sizeof(T));                                    \
        for (Py_ssize_t c0 = 0; c0 < kvl; c0 += lanes)                                      \
            for (Py_ssize_t a0 = 0; a0 < pixels; a0 += lanes) {                             \
                int n = pixels - a0 < lanes ? (int)(pixels - a0) : lanes;                    \
                VEC r[sizeof(VEC) / sizeof(T)];                                              \
                for (int i = 0; i < lanes; i++)                                              \
                    r[i] = c0 + i < channels ? LOAD_N(g + (c0 + i) * pixels + a0, n)         \
                                             : SETZERO();                                    \
                TRANSPOSE(r);                                                                \
                for (int j = 0; j < n; j++) STOREU(tile + (a0 + j) * kvl + c0, r[j]);       \
            }                                                                                \
    }
    #define FCK_DEFINE(KV, A) FCK_INSTANCE_F(FCK_BODY, fck, KV, A)                          \
        FCK_INSTANCE_D(FCK_BODY, fck, KV, A) FCK_INSTANCE_F(FCKW_BODY, fckw, KV, A)          \
        FCK_INSTANCE_D(FCKW_BODY, fckw, KV, A)
    FCK_ALL(FCK_DEFINE)
    #if defined(__AVX512F__)
    FCK_LOAD_TILE(fc_load_tile_f, float, __m512, _mm512_setzero_ps, _mm512_storeu_ps,
                  fck_transpose_f, FCK_LOAD_N_F)
    FCK_LOAD_TILE(fc_load_tile_d, double, __m512d, _mm512_setzero_pd, _mm512_storeu_pd,
                  fck_transpose_d, FCK_LOAD_N_D)
    #else
    FCK_LOAD_TILE(fc_load_tile_f, float, __m256, _mm256_setzero_ps, _mm256_storeu_ps,
                  fck_transpose_f, FCK_LOAD_N_F)
    FCK_LOAD_TILE(fc_load_tile_d, double, __m256d, _mm256_setzero_pd, _mm256_storeu_pd,
                  fck_transpose_d, FCK_LOAD_N_D)
    #endif
    typedef void (*fck_f_fn) FCK_BODY_ARGS(float);
    typedef void (*fck_d_fn) FCK_BODY_ARGS(double);
    typedef void (*fckw_f_fn) FCKW_BODY_ARGS(float);
    typedef void (*fckw_d_fn) FCKW_BODY_ARGS(double);
    #define FCK_ENTRY(NAME, KV, A) NAME##_##KV##_##A,
    #define FCK_ENTRY_F(KV, A) FCK_ENTRY(fck_f, KV, A)
    #define FCK_ENTRY_D(KV, A) FCK_ENTRY(fck_d, KV, A)
    #define FCKW_ENTRY_F(KV, A) FCK_ENTRY(fckw_f, KV, A)
    #define FCKW_ENTRY_D(KV, A) FCK_ENTRY(fckw_d, KV, A)
    static const fck_f_fn fck_f_table1[] = {FCK_LIST1(FCK_ENTRY_F)};
    static const fck_f_fn fck_f_table2[] = {FCK_LIST2(FCK_ENTRY_F)};
    static const fck_d_fn fck_d_table1[] = {FCK_LIST1(FCK_ENTRY_D)};
    static const fck_d_fn fck_d_table2[] = {FCK_LIST2(FCK_ENTRY_D)};
    static const fckw_f_fn fckw_f_table1[] = {FCK_LIST1(FCKW_ENTRY_F)};
    static const fckw_f_fn fckw_f_table2[] = {FCK_LIST2(FCKW_ENTRY_F)};
    static const fckw_d_fn fckw_d_table1[] = {FCK_LIST1(FCKW_ENTRY_D)};
    static const fckw_d_fn fckw_d_table2[] = {FCK_LIST2(FCKW_ENTRY_D)};
    #define FCK_AVAILABLE 1
    #else
    /* the portable build has no channel-vector block: conv2d_direct_kvec is never chosen */
    #define FCK_LANES_F 0
    #define FCK_LANES_D 0
    #define FCK_MAX_A1 0
    #define FCK_MAX_A2 0
    #define FCK_AVAILABLE 0
    static void fc_load_tile_f(const float* g, float* tile, Py_ssize_t channels,
                               Py_ssize_t pixels, Py_ssize_t kvl) {}
    static void fc_load_tile_d(const double* g, double* tile, Py_ssize_t channels,
                               Py_ssize_t pixels, Py_ssize_t kvl) {}
    #endif

    /* One block, of instance (kv, a): kv in {1, 2}, 1 <= a <= FCK_MAX_A<kv> (the callers
     * keep to these). */
    #if FCK_AVAILABLE
    #define FCK_DISPATCH(TABLE, ARGS) (kv == 1 ? TABLE##1 : TABLE##2)[a - 1] ARGS
    #else
    #define FCK_DISPATCH(TABLE, ARGS)
    #endif
    static void fc_kvec_f(int kv, int a, const float* p, const Py_ssize_t* tap_off,
                          Py_ssize_t ntaps, const float* wb, const Py_ssize_t* pix_off,
                          float* o, Py_ssize_t L, int kb_n, int npix, const float* bias)
    { FCK_DISPATCH(fck_f_table, (p, tap_off, ntaps, wb, pix_off, o, L, kb_n, npix, bias)); }
    static void fc_kvec_d(int kv, int a, const double* p, const Py_ssize_t* tap_off,
                          Py_ssize_t ntaps, const double* wb, const Py_ssize_t* pix_off,
                          double* o, Py_ssize_t L, int kb_n, int npix, const double* bias)
    { FCK_DISPATCH(fck_d_table, (p, tap_off, ntaps, wb, pix_off, o, L, kb_n, npix, bias)); }
    static void fc_kvec_wgrad_f(int kv, int a, const float* p, const Py_ssize_t* tap_off,
                                Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_step,
                                const float* got, int accumulate, float* sums)
    { FCK_DISPATCH(fckw_f_table, (p, tap_off, rows, cols, row_step, got, accumulate, sums)); }
    static void fc_kvec_wgrad_d(int kv, int a, const double* p, const Py_ssize_t* tap_off,
                                Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_step,
                                const double* got, int accumulate, double* sums)
    { FCK_DISPATCH(fckw_d_table, (p, tap_off, rows, cols, row_step, got, accumulate, sums)); }
    """
    enum:
        KVEC_LANES_F "FCK_LANES_F"
        KVEC_LANES_D "FCK_LANES_D"
        KVEC_MAX_A1 "FCK_MAX_A1"
        KVEC_MAX_A2 "FCK_MAX_A2"
    void fc_kvec_f(int kv, int a, const float* p, const Py_ssize_t* tap_off, Py_ssize_t ntaps,
                   const float* wb, const Py_ssize_t* pix_off, float* o, Py_ssize_t L,
                   int kb_n, int npix, const float* bias) noexcept nogil
    void fc_kvec_d(int kv, int a, const double* p, const Py_ssize_t* tap_off, Py_ssize_t ntaps,
                   const double* wb, const Py_ssize_t* pix_off, double* o, Py_ssize_t L,
                   int kb_n, int npix, const double* bias) noexcept nogil
    void fc_kvec_wgrad_f(int kv, int a, const float* p, const Py_ssize_t* tap_off,
                         Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_step,
                         const float* got, int accumulate, float* sums) noexcept nogil
    void fc_kvec_wgrad_d(int kv, int a, const double* p, const Py_ssize_t* tap_off,
                         Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_step,
                         const double* got, int accumulate, double* sums) noexcept nogil
    void fc_load_tile_f(const float* g, float* tile, Py_ssize_t channels, Py_ssize_t pixels,
                        Py_ssize_t kvl) noexcept nogil
    void fc_load_tile_d(const double* g, double* tile, Py_ssize_t channels, Py_ssize_t pixels,
                        Py_ssize_t kvl) noexcept nogil


def kvec_block_limits(int itemsize):
    """(lanes, {kv: most pixels per block}) of the channel-vector direct kernel in this build
    of the module, for float32 (itemsize 4) or float64 (8); lanes is 0 where the build has
    none (the portable SSE2 build)."""
    lanes = KVEC_LANES_F if itemsize == 4 else KVEC_LANES_D
    return lanes, {1: KVEC_MAX_A1, 2: KVEC_MAX_A2}


def conv2d_direct_kvec(const floating[:, :, :, ::1] x, const floating[::1] wpack,
                       const floating[::1] bias, floating[:, :, :, ::1] out,
                       floating[::1] work, Py_ssize_t work_stride,
                       const Py_ssize_t[::1] tap_off, const Py_ssize_t[:, ::1] row_taps,
                       const Py_ssize_t[::1] pix_off,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t Hp, Py_ssize_t Wp, int groups, int kv, int pixels,
                       bint by_rows, int num_threads):
    """out = conv(x, weight) + bias by direct convolution in channel-vector blocks.

    Each image is copied into the padded, phase-split buffer of pad_image (work:
    work_stride items per thread), then every block of ``pixels`` output pixels (raster
    order) x kv*lanes output channels runs fc_kvec over its taps.
    tap_off: the taps' offsets in the buffer, in runs: output row oh reads the run of
    row_taps[oh, 1] taps from row_taps[oh, 0] (row blocks skip the kernel rows that fall
    on padding); raster blocks read the run of row_taps[0].
    by_rows: a block is ``pixels`` columns of one output row (the buffer holds whole blocks
    of columns); else the blocks run through the image in raster order, and pix_off
    (ceil(Ho*Wo / pixels) * pixels entries) gives each pixel's offset, 0 past the last.
    wpack: (groups, ceil(K/groups/(kv*lanes)), len(tap_off), kv*lanes), the weights of the
    taps of tap_off, zero past each group.
    bias is empty for no bias.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], K = out.shape[1]
    cdef Py_ssize_t L = out.shape[2] * out.shape[3]
    cdef Py_ssize_t Kg = K // groups, Cg = C // groups, ntaps = tap_off.shape[0]
    cdef Py_ssize_t kvl = kv * (KVEC_LANES_F if floating is float else KVEC_LANES_D)
    cdef Py_ssize_t nkb = (Kg + kvl - 1) // kvl, blk = ntaps * kvl
    cdef Py_ssize_t Wq = (Wp + sw - 1) // sw
    cdef Py_ssize_t Wo = out.shape[3]
    cdef Py_ssize_t row_blocks = (Wo + pixels - 1) // pixels
    cdef Py_ssize_t nblocks = out.shape[2] * row_blocks if by_rows else (L + pixels - 1) // pixels
    cdef Py_ssize_t n, grp, kb, k0, kb_n, b, f0, npix, oh, ow, t0, nt
    cdef bint has_bias = bias.shape[0] > 0
    cdef const floating* src
    cdef const floating* pg
    cdef const floating* block_start
    cdef const Py_ssize_t* block_pix
    for n in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        src = padded_image(&x[n, 0, 0, 0], &work[0] + threadid() * work_stride, C,
                           x.shape[2], x.shape[3], ph, pw, Hp, Wp, sw)
        for grp in range(groups):
            pg = src + grp * Cg * sw * Hp * Wq
            for kb in range(nkb):
                k0 = grp * Kg + kb * kvl
                kb_n = min(kvl, (grp + 1) * Kg - k0)
                for b in range(nblocks):
                    if by_rows:
                        oh = b // row_blocks
                        ow = b % row_blocks * pixels
                        f0 = oh * Wo + ow
                        npix = min(pixels, Wo - ow)
                        block_start = pg + oh * sh * Wq + ow
                        block_pix = NULL
                        t0 = row_taps[oh, 0]
                        nt = row_taps[oh, 1]
                    else:
                        f0 = b * pixels
                        npix = min(pixels, L - f0)
                        block_start = pg
                        block_pix = &pix_off[f0]
                        t0 = row_taps[0, 0]
                        nt = row_taps[0, 1]
                    # pointer arithmetic, not indexing: an empty run may start at the end
                    if floating is float:
                        fc_kvec_f(kv, pixels, block_start, &tap_off[0] + t0, nt,
                                  &wpack[0] + (grp * nkb + kb) * blk + t0 * kvl, block_pix,
                                  &out[n, k0, 0, 0] + f0, L, kb_n, npix,
                                  &bias[k0] if has_bias else NULL)
                    else:
                        fc_kvec_d(kv, pixels, block_start, &tap_off[0] + t0, nt,
                                  &wpack[0] + (grp * nkb + kb) * blk + t0 * kvl, block_pix,
                                  &out[n, k0, 0, 0] + f0, L, kb_n, npix,
                                  &bias[k0] if has_bias else NULL)


# --------------------------------------------------------------------------------------
# Winograd F(2x2, 3x3): 3x3 kernels at stride 1, in 2x2 output tiles
# --------------------------------------------------------------------------------------

cdef extern from *:
    """
    /* Winograd F(2x2, 3x3) transforms. In C, with restrict pointers and one tile per
     * iteration, so that GCC vectorizes across tiles (in Cython they stayed scalar: a third
     * of the 128-channel 3x3 layer's time). */
    #if defined(__GNUC__) || defined(__clang__)
    #define FCW_IVDEP _Pragma("GCC ivdep")
    #else
    #define FCW_IVDEP
    #endif
    /* V = B^T d B for the tiles t0 .. t0+nt-1 (raster order, TW tiles a row) of each
     * channel of p (C, Hp, Wp; tile (ti, tj) reads its 4x4 patch d from row 2ti, column
     * 2tj): v[(4i + j) * C * TB + c * TB + t - t0] = V[i, j].
     * B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]. */
    #define FCW_INPUT(NAME, T)                                                                \
    static FC_NOINLINE void NAME(const T* __restrict p, Py_ssize_t C, Py_ssize_t Hp,         \
                                 Py_ssize_t Wp, Py_ssize_t TW, Py_ssize_t t0, Py_ssize_t nt, \
                                 Py_ssize_t TB, T* __restrict v)                             \
    {                                                                                        \
        const Py_ssize_t cs = C * TB;                                                        \
        for (Py_ssize_t c = 0; c < C; c++)                                                   \
            for (Py_ssize_t t = t0; t < t0 + nt; ) {                                         \
                Py_ssize_t ti = t / TW, tj = t - ti * TW;                                    \
                Py_ssize_t n = TW - tj < t0 + nt - t ? TW - tj : t0 + nt - t;                \
                const T* r0 = p + (c * Hp + 2 * ti) * Wp + 2 * tj;                           \
                const T* r1 = r0 + Wp;                                                       \
                const T* r2 = r1 + Wp;                                                       \
                const T* r3 = r2 + Wp;                                                       \
                T* __restrict o = v + c * TB + (t - t0);                                     \
                FCW_IVDEP                                                                    \
                for (Py_ssize_t m = 0; m < n; m++) {                                         \
                    T a[4], b[4], e[4], f[4]; /* rows of B^T d */                            \
                    for (int j = 0; j < 4; j++) {                                            \
                        a[j] = r0[2 * m + j] - r2[2 * m + j];                                \
                        b[j] = r1[2 * m + j] + r2[2 * m + j];                                \
                        e[j] = r2[2 * m + j] - r1[2 * m + j];                                \
                        f[j] = r1[2 * m + j] - r3[2 * m + j];                                \
                    }                                                                        \
                    const T* rows[4] = {a, b, e, f};                                         \
                    for (int i = 0; i < 4; i++) { /* times B */                              \
                        const T* s = rows[i];                                                \
                        o[(4 * i + 0) * cs + m] = s[0] - s[2];                               \
                        o[(4 * i + 1) * cs + m] = s[1] + s[2];                               \
                        o[(4 * i + 2) * cs + m] = s[2] - s[1];                               \
                        o[(4 * i + 3) * cs + m] = s[1] - s[3];                               \
                    }                                                                        \
                }                                                                            \
                t += n;                                                                      \
            }                                                                                \
    }
    /* row y of A^T M A + bk for tile m: y0, y1 */
    #define FCW_TILE_ROW(T)                                                                   \
        T s[4];                                                                              \
        for (int j = 0; j < 4; j++)                                                          \
            s[j] = y == 0 ? mk[j * ks + m] + mk[(4 + j) * ks + m] + mk[(8 + j) * ks + m]      \
                          : mk[(4 + j) * ks + m] - mk[(8 + j) * ks + m] - mk[(12 + j) * ks + m]; \
        T y0 = s[0] + s[1] + s[2] + bk, y1 = s[1] - s[2] - s[3] + bk;
    /* out[k, 2ti + y, 2tj + x] = (A^T M A)[y, x] + bias[k] for the tiles t0 .. t0+nt-1,
     * where inside (Ho, Wo); M[i, j] = mbuf[(4i + j) * K * TB + k * TB + t - t0]; bias
     * NULL for none. A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]. Returns whether some output is
     * not finite (inf, NaN). */
    #define FCW_OUTPUT(NAME, T)                                                               \
    static FC_NOINLINE int NAME(const T* __restrict mbuf, Py_ssize_t K, Py_ssize_t TB,       \
                                Py_ssize_t TW, Py_ssize_t t0, Py_ssize_t nt,                 \
                                T* __restrict out, Py_ssize_t Ho, Py_ssize_t Wo,             \
                                const T* bias)                                               \
    {                                                                                        \
        const Py_ssize_t ks = K * TB;                                                        \
        int bad = 0;                                                                         \
        for (Py_ssize_t k = 0; k < K; k++) {                                                 \
            const T bk = bias ? bias[k] : (T)0;                                              \
            for (Py_ssize_t t = t0; t < t0 + nt; ) {                                         \
                Py_ssize_t ti = t / TW, tj = t - ti * TW;                                    \
                Py_ssize_t n = TW - tj < t0 + nt - t ? TW - tj : t0 + nt - t;                \
                /* an odd Wo leaves the row's last tile one column; an odd Ho, the last  \
                 * row of tiles one row */                                                   \
                Py_ssize_t n_whole = 2 * (tj + n) <= Wo ? n : n - 1;                         \
                int rows = 2 * ti + 1 < Ho ? 2 : 1;                                          \
                const T* mk = mbuf + k * TB + (t - t0);                                      \
                T* o0 = out + (k * Ho + 2 * ti) * Wo + 2 * tj;                               \
                for (int y = 0; y < rows; y++) {                                             \
                    T* __restrict oy = o0 + y * Wo;                                          \
                    Py_ssize_t m = 0;                                                        \
                    FCW_IVDEP                                                                \
                    for (; m < n_whole; m++) {                                               \
                        FCW_TILE_ROW(T)                                                      \
                        bad |= (y0 + y1) * 0 != 0;                                           \
                        oy[2 * m] = y0;                                                      \
                        oy[2 * m + 1] = y1;                                                  \
                    }                                                                        \
                    if (m < n) {                                                             \
                        FCW_TILE_ROW(T)                                                      \
                        bad |= y0 * 0 != 0;                                                  \
                        oy[2 * m] = y0;                                                      \
                    }                                                                        \
                }                                                                            \
                t += n;                                                                      \
            }                                                                                \
        }                                                                                    \
        return bad;                                                                          \
    }
    FCW_INPUT(fc_winograd_input_f, float)
    FCW_INPUT(fc_winograd_input_d, double)
    FCW_OUTPUT(fc_winograd_output_f, float)
    FCW_OUTPUT(fc_winograd_output_d, double)
    """
    void fc_winograd_input_f(const float* p, Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp,
                             Py_ssize_t TW, Py_ssize_t t0, Py_ssize_t nt, Py_ssize_t TB,
                             float* v) noexcept nogil
    void fc_winograd_input_d(const double* p, Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp,
                             Py_ssize_t TW, Py_ssize_t t0, Py_ssize_t nt, Py_ssize_t TB,
                             double* v) noexcept nogil
    int fc_winograd_output_f(const float* mbuf, Py_ssize_t K, Py_ssize_t TB, Py_ssize_t TW,
                             Py_ssize_t t0, Py_ssize_t nt, float* out, Py_ssize_t Ho,
                             Py_ssize_t Wo, const float* bias) noexcept nogil
    int fc_winograd_output_d(const double* mbuf, Py_ssize_t K, Py_ssize_t TB, Py_ssize_t TW,
                             Py_ssize_t t0, Py_ssize_t nt, double* out, Py_ssize_t Ho,
                             Py_ssize_t Wo, const double* bias) noexcept nogil


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
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t TH = (Ho + 1) // 2, TW = (Wo + 1) // 2, T = TH * TW
    cdef Py_ssize_t Hp = 2 * TH + 2, Wp = 2 * TW + 2
    cdef Py_ssize_t kvl = kv * (KVEC_LANES_F if floating is float else KVEC_LANES_D)
    cdef Py_ssize_t nkb = (K + kvl - 1) // kvl
    cdef Py_ssize_t n_blocks = (T + tile_block - 1) // tile_block
    cdef Py_ssize_t n, blk, t0, nt, xi, kb, k0, a0
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
            if floating is float:
                fc_winograd_input_f(p, C, Hp, Wp, TW, t0, nt, tile_block, v)
            else:
                fc_winograd_input_d(p, C, Hp, Wp, TW, t0, nt, tile_block, v)
            for xi in range(16):
                for kb in range(nkb):
                    k0 = kb * kvl
                    a0 = 0
                    while a0 < nt:
                        if floating is float:
                            fc_kvec_f(kv, pixels, v + xi * C * tile_block + a0, &tap_off[0],
                                      C, &upack[0] + (xi * nkb + kb) * C * kvl, NULL,
                                      mbuf + (xi * K + k0) * tile_block + a0, tile_block,
                                      min(kvl, K - k0), min(pixels, nt - a0), NULL)
                        else:
                            fc_kvec_d(kv, pixels, v + xi * C * tile_block + a0, &tap_off[0],
                                      C, &upack[0] + (xi * nkb + kb) * C * kvl, NULL,
                                      mbuf + (xi * K + k0) * tile_block + a0, tile_block,
                                      min(kvl, K - k0), min(pixels, nt - a0), NULL)
                        a0 = a0 + pixels
            if floating is float:
                bad[n] |= fc_winograd_output_f(mbuf, K, tile_block, TW, t0, nt,
                                               &out[n, 0, 0, 0], Ho, Wo,
                                               &bias[0] if has_bias else NULL)
            else:
                bad[n] |= fc_winograd_output_d(mbuf, K, tile_block, TW, t0, nt,
                                               &out[n, 0, 0, 0], Ho, Wo,
                                               &bias[0] if has_bias else NULL)


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
                    if floating is float:
                        fc_load_tile_f(&grad_output[n, k0, 0, 0], got, kb_n, L, kvl)
                    else:
                        fc_load_tile_d(&grad_output[n, k0, 0, 0], got, kb_n, L, kvl)
                    for strip in range(n_strips):
                        oh0 = strip * rows_per_strip
                        rows = min(rows_per_strip, Ho - oh0)
                        # the chunk's first image starts its slot, the others add to it
                        accumulate = n > b * chunk or oh0 > 0
                        for tb in range(n_tap_blocks):
                            t0 = tb * taps
                            if floating is float:
                                fc_kvec_wgrad_f(kv, min(taps, ntaps - t0), pg + oh0 * sh * Wq,
                                                &tap_off[t0], rows, Wo, sh * Wq,
                                                got + oh0 * Wo * kvl, accumulate,
                                                part + ((grp * nkb + kb) * ntaps + t0) * kvl)
                            else:
                                fc_kvec_wgrad_d(kv, min(taps, ntaps - t0), pg + oh0 * sh * Wq,
                                                &tap_off[t0], rows, Wo, sh * Wq,
                                                got + oh0 * Wo * kvl, accumulate,
                                                part + ((grp * nkb + kb) * ntaps + t0) * kvl)
    sum_slots(&partials[0], n_chunks, slot, 0, slot, &sums[0], num_threads)


cdef extern from *:
    """
    /* Weight gradient with pixels across the vector ("pixel-vector"), for the layers the
     * channel-vector kernel leaves to GEMM: few output channels (LeNet's conv1: 6) or few
     * taps (one input channel, 5x5). A block of KB output channels x JB taps of one kernel
     * row keeps its KB*JB partial sums in registers over every output pixel of an image,
     * LANES columns of a row at a time: per step KB grad_output loads and JB input loads
     * feed KB*JB FMAs. Each sum's lanes are then added up (a fixed tree) into the chunk's
     * slot, so the result does not depend on the threads. Stride 1; the image padded as
     * in conv2d_direct (pad_image). Masked-off lanes load zeros: no inf * 0 beyond the
     * row. */
    #if defined(__AVX512F__)
    #define FCP_LANES_F 16
    #define FCP_LANES_D 8
    #define FCP_BODY(NAME, T, VEC, MASK, LANES, MLOAD, FMADD, SETZERO, REDUCE, KB, JB)      \
    static FC_NOINLINE void NAME##_##KB##_##JB(                                             \
        const T* x, const T* g, Py_ssize_t L, Py_ssize_t ho, Py_ssize_t wo, Py_ssize_t wp,  \
        Py_ssize_t dw, T* sums, Py_ssize_t k_stride)                                        \
    {                                                                                       \
        VEC acc[KB][JB];                                                                    \
        FCK_PRAGMA(GCC unroll 4)                                                            \
        for (int k = 0; k < KB; k++)                                                        \
            FCK_PRAGMA(GCC unroll 8)                                                        \
            for (int j = 0; j < JB; j++) acc[k][j] = SETZERO();                             \
        for (Py_ssize_t oh = 0; oh < ho; oh++)                                              \
            for (Py_ssize_t x0 = 0; x0 < wo; x0 += LANES) {                                 \
                Py_ssize_t n = wo - x0 < LANES ? wo - x0 : LANES;                           \
                MASK m = (MASK)((1ull << n) - 1u);                                          \
                VEC gv[KB];                                                                 \
                FCK_PRAGMA(GCC unroll 4)                                                    \
                for (int k = 0; k < KB; k++) gv[k] = MLOAD(m, g + k * L + oh * wo + x0);    \
                FCK_PRAGMA(GCC unroll 8)                                                    \
                for (int j = 0; j < JB; j++) {                                              \
                    VEC xv = MLOAD(m, x + oh * wp + x0 + j * dw);                           \
                    FCK_PRAGMA(GCC unroll 4)                                                \
                    for (int k = 0; k < KB; k++) acc[k][j] = FMADD(gv[k], xv, acc[k][j]);   \
                }                                                                           \
            }                                                                               \
        FCK_PRAGMA(GCC unroll 4)                                                            \
        for (int k = 0; k < KB; k++)                                                        \
            FCK_PRAGMA(GCC unroll 8)                                                        \
            for (int j = 0; j < JB; j++) sums[k * k_stride + j] += REDUCE(acc[k][j]);       \
    }
    #define FCP_F(KB, JB) FCP_BODY(fcp_wgrad_f, float, __m512, __mmask16, 16,               \
        _mm512_maskz_loadu_ps, _mm512_fmadd_ps, _mm512_setzero_ps, _mm512_reduce_add_ps, KB, JB)
    #define FCP_D(KB, JB) FCP_BODY(fcp_wgrad_d, double, __m512d, __mmask8, 8,               \
        _mm512_maskz_loadu_pd, _mm512_fmadd_pd, _mm512_setzero_pd, _mm512_reduce_add_pd, KB, JB)
    /* blocks of up to 3 channels x 5 taps: 15 sums, 3 + 1 loaded vectors */
    #define FCP_LIST(X) X(1,1) X(1,2) X(1,3) X(1,4) X(1,5) X(2,1) X(2,2) X(2,3) X(2,4) X(2,5) \
        X(3,1) X(3,2) X(3,3) X(3,4) X(3,5)
    FCP_LIST(FCP_F)
    FCP_LIST(FCP_D)
    #define FCP_CASE_F(KB, JB) case (KB) * 8 + (JB): fcp_wgrad_f_##KB##_##JB(x, g, L, ho, wo, wp, dw, sums, k_stride); break;
    #define FCP_CASE_D(KB, JB) case (KB) * 8 + (JB): fcp_wgrad_d_##KB##_##JB(x, g, L, ho, wo, wp, dw, sums, k_stride); break;
    #define FCP_DISPATCH(NAME, T, CASE)                                                     \
    static void NAME(int kb, int jb, const T* x, const T* g, Py_ssize_t L, Py_ssize_t ho,   \
                     Py_ssize_t wo, Py_ssize_t wp, Py_ssize_t dw, T* sums,                  \
                     Py_ssize_t k_stride)                                                   \
    {                                                                                       \
        switch (kb * 8 + jb) { FCP_LIST(CASE) default: break; }                             \
    }
    FCP_DISPATCH(fcp_wgrad_f, float, FCP_CASE_F)
    FCP_DISPATCH(fcp_wgrad_d, double, FCP_CASE_D)
    #else
    /* no pixel-vector kernel in this build: FCP_LANES 0 tells the caller */
    #define FCP_LANES_F 0
    #define FCP_LANES_D 0
    #define fcp_wgrad_f(...) ((void)0)
    #define fcp_wgrad_d(...) ((void)0)
    #endif
    #define FCP_KB 3
    #define FCP_JB 5
    """
    enum:
        PIXVEC_LANES_F "FCP_LANES_F"
        PIXVEC_LANES_D "FCP_LANES_D"
        PIXVEC_KB "FCP_KB"
        PIXVEC_JB "FCP_JB"
    void fcp_wgrad_f(int kb, int jb, const float* x, const float* g, Py_ssize_t L,
                     Py_ssize_t ho, Py_ssize_t wo, Py_ssize_t wp, Py_ssize_t dw, float* sums,
                     Py_ssize_t k_stride) noexcept nogil
    void fcp_wgrad_d(int kb, int jb, const double* x, const double* g, Py_ssize_t L,
                     Py_ssize_t ho, Py_ssize_t wo, Py_ssize_t wp, Py_ssize_t dw,
                     double* sums, Py_ssize_t k_stride) noexcept nogil


def pixvec_lanes(int itemsize):
    """Columns per vector of the pixel-vector weight-gradient kernel for float32 (itemsize
    4) or float64 (8) in this build of the module; 0 where the build has none."""
    return PIXVEC_LANES_F if itemsize == 4 else PIXVEC_LANES_D


cdef inline void pixvec_block(int kb, int jb, const floating* x, const floating* g,
                              Py_ssize_t L, Py_ssize_t ho, Py_ssize_t wo, Py_ssize_t wp,
                              Py_ssize_t dw, floating* sums,
                              Py_ssize_t k_stride) noexcept nogil:
    """fcp_wgrad of the dtype: a kb x jb block of sums over an image's pixels."""
    if floating is float:
        fcp_wgrad_f(kb, jb, x, g, L, ho, wo, wp, dw, sums, k_stride)
    else:
        fcp_wgrad_d(kb, jb, x, g, L, ho, wo, wp, dw, sums, k_stride)


def conv2d_weight_grad_pixvec(const floating[:, :, :, ::1] grad_output,
                              const floating[:, :, :, ::1] x, floating[::1] grad_weight,
                              floating[::1] work, Py_ssize_t work_stride,
                              floating[::1] partials, Py_ssize_t chunk, Py_ssize_t kh,
                              Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                              Py_ssize_t dw, Py_ssize_t Hp, Py_ssize_t Wp,
                              int num_threads):
    """grad_weight (K*C*kh*kw, the weight's layout) of a stride-1 conv2d with no groups,
    by the pixel-vector kernel (fcp_wgrad).

    Per image: the padded image (pad_image, Hp x Wp, work_stride items per thread), then
    per input channel, kernel row, block of FCP_KB output channels and block of FCP_JB
    taps, the block's sums over every output pixel. Images go in fixed chunks of ``chunk``,
    each summed in order into its own slot of partials (K*C*kh*kw items), and the slots
    are then added in chunk order: the bits do not depend on the thread count.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], K = grad_output.shape[1]
    cdef Py_ssize_t Ho = grad_output.shape[2], Wo = grad_output.shape[3], L = Ho * Wo
    cdef Py_ssize_t slot = K * C * kh * kw, k_stride = C * kh * kw
    cdef Py_ssize_t n_chunks = (N + chunk - 1) // chunk
    cdef Py_ssize_t b, n, c, i, kb, k0, jb, j0
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
            for c in range(C):
                for i in range(kh):
                    for kb in range((K + PIXVEC_KB - 1) // PIXVEC_KB):
                        k0 = kb * PIXVEC_KB
                        for jb in range((kw + PIXVEC_JB - 1) // PIXVEC_JB):
                            j0 = jb * PIXVEC_JB
                            pixvec_block(min(PIXVEC_KB, K - k0), min(PIXVEC_JB, kw - j0),
                                         src + (c * Hp + i * dh) * Wp + j0 * dw,
                                         &grad_output[n, k0, 0, 0], L, Ho, Wo, Wp, dw,
                                         part + ((k0 * C + c) * kh + i) * kw + j0, k_stride)
    sum_slots(&partials[0], n_chunks, slot, 0, slot, &grad_weight[0], num_threads)


def conv2d_backward(const floating[:, :, :, ::1] grad_output, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] weight, floating[:, :, :, ::1] grad_input,
                    floating[::1] grad_weight, floating[::1] grad_bias,
                    floating[::1] work, Py_ssize_t work_stride, Py_ssize_t images_per_tile,
                    Py_ssize_t rows_per_tile, floating[::1] partials, Py_ssize_t chunk,
                    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                    Py_ssize_t dh, Py_ssize_t dw, int groups, bint needs_input_grad,
                    bint needs_weight_grad, bint needs_bias_grad, int num_threads):
    """Gradients of conv2d, each only when asked for, over the tiles of conv2d_gemm.

    With G the tile's grad_output as a (K/groups, tile columns) matrix per group:
    grad_input += col2im(W^T @ G); grad_weight += G @ im2col(x)^T; grad_bias += G's row sums.
    Images go in fixed-size chunks of ``chunk`` (a multiple of images_per_tile); each chunk
    sums its tiles in order into its own slot of partials (ceil(N/chunk) slots of
    K*Cg*kh*kw + K items), then the slots are added in chunk order. Neither the chunks nor
    the tiles depend on the thread count, so neither does the result, bit for bit.
    work: per thread, work_stride items: a column matrix (Cg*kh*kw, tile columns), then for
    multi-image tiles G gathered from grad_output.
    """
    cdef Py_ssize_t N = x.shape[0], K = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t Kg = K // groups, Ho = grad_output.shape[2], Wo = grad_output.shape[3]
    cdef Py_ssize_t L = Ho * Wo, CKK = Cg * weight.shape[2] * weight.shape[3]
    cdef Py_ssize_t HW = x.shape[2] * x.shape[3]
    cdef Py_ssize_t wsize = K * CKK, slot = wsize + K
    cdef Py_ssize_t n_chunks = (N + chunk - 1) // chunk
    cdef Py_ssize_t strips = (Ho + rows_per_tile - 1) // rows_per_tile
    cdef Py_ssize_t b, n0, nb, s, oh0, oh1, width, cols, ld, grp, k, l, i, first, last
    cdef Geometry g = make_geometry(Cg, x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    sh, sw, ph, pw, dh, dw, Ho, Wo)
    cdef bint pointwise = is_pointwise(&g)
    cdef floating acc, beta
    cdef floating* col
    cdef floating* gbuf
    cdef floating* part
    cdef const floating* go
    cdef const floating* colp
    for b in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        col = &work[0] + threadid() * work_stride
        # partials is empty when only grad_input is asked for: no slot to point at
        part = (&partials[0] + b * slot) if partials.shape[0] > 0 else NULL
        first = b * chunk
        last = min(first + chunk, N)
        n0 = first
        while n0 < last:
            nb = min(images_per_tile, last - n0)
            for s in range(strips):
                oh0 = s * rows_per_tile
                oh1 = min(oh0 + rows_per_tile, Ho)
                width = (oh1 - oh0) * Wo
                cols = nb * width
                gbuf = col + CKK * cols
                # the chunk's first tile overwrites its slot, the others add to it
                beta = 0 if n0 == first and s == 0 else 1
                for grp in range(groups):
                    if nb == 1:
                        go = &grad_output[n0, grp * Kg, oh0, 0]
                        ld = L
                    else:
                        for k in range(Kg):
                            for i in range(nb):
                                memcpy(gbuf + k * cols + i * L,
                                       &grad_output[n0 + i, grp * Kg + k, 0, 0],
                                       L * sizeof(floating))
                        go = gbuf
                        ld = cols
                    if needs_weight_grad:
                        if pointwise and nb == 1:
                            colp = &x[n0, grp * Cg, oh0, 0]
                        else:
                            for i in range(nb):
                                im2col_image(&x[n0 + i, grp * Cg, 0, 0], col + i * width, &g,
                                             oh0, oh1, cols)
                            colp = col
                        gemm(False, True, <int>Kg, <int>CKK, <int>cols, <floating>1, go, <int>ld,
                             colp, <int>(L if pointwise and nb == 1 else cols), beta,
                             part + grp * Kg * CKK, <int>CKK)
                    if needs_bias_grad:
                        for k in range(Kg):
                            acc = row_sum(go + k * ld, cols)
                            if beta == 0:
                                part[wsize + grp * Kg + k] = acc
                            else:
                                part[wsize + grp * Kg + k] += acc
                    if needs_input_grad:
                        if pointwise and nb == 1:
                            gemm(True, False, <int>CKK, <int>width, <int>Kg, <floating>1,
                                 &weight[grp * Kg, 0, 0, 0], <int>CKK, go, <int>ld, <floating>0,
                                 &grad_input[n0, grp * Cg, oh0, 0], <int>HW)
                        else:
                            gemm(True, False, <int>CKK, <int>cols, <int>Kg, <floating>1,
                                 &weight[grp * Kg, 0, 0, 0], <int>CKK, go, <int>ld, <floating>0,
                                 col, <int>cols)
                            for i in range(nb):
                                if s == 0:
                                    memset(&grad_input[n0 + i, grp * Cg, 0, 0], 0,
                                           Cg * HW * sizeof(floating))
                                col2im_image(col + i * width, &grad_input[n0 + i, grp * Cg, 0, 0],
                                             &g, oh0, oh1, cols)
            n0 = n0 + nb
    if needs_weight_grad:
        sum_slots(&partials[0], n_chunks, slot, 0, wsize, &grad_weight[0], num_threads)
    if needs_bias_grad:
        sum_slots(&partials[0], n_chunks, slot, wsize, slot, &grad_bias[0], num_threads)
