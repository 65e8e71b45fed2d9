# im2col / col2im of ONE image, shared by the batch entry points (_im2col.pyx) and by the
# convolution kernels (_conv.pyx), so there is a single implementation of the geometry.
# Everything outside the input is zero: padding is given as top/left plus the output size,
# which also covers 'same' padding with an odd total (the extra row/column goes bottom/right).
from cython cimport floating
from libc.string cimport memcpy, memset

from fastconv._kernels._pad cimport merge_row


cdef extern from "col2im.h" nogil:
    void fc_col2im_s1_f(const float* col, float* x, Py_ssize_t c_n, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t wo, Py_ssize_t oh0,
                        Py_ssize_t oh1, Py_ssize_t ldc)
    void fc_col2im_s1_d(const double* col, double* x, Py_ssize_t c_n, Py_ssize_t h,
                        Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                        Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t wo,
                        Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc)
    int fc_col2im_s2_f(const float* col, float* x, Py_ssize_t c_n, Py_ssize_t h, Py_ssize_t w,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t ph,
                       Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t wo,
                       Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc)
    int fc_col2im_s2_d(const double* col, double* x, Py_ssize_t c_n, Py_ssize_t h,
                       Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t wo, Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc)


ctypedef struct Geometry:
    # one image: C channels of H x W; a kh x kw kernel; Ho x Wo output positions
    Py_ssize_t C, H, W
    Py_ssize_t kh, kw
    Py_ssize_t sh, sw
    Py_ssize_t ph, pw
    Py_ssize_t dh, dw
    Py_ssize_t Ho, Wo


cdef inline Geometry make_geometry(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                   Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                                   Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                                   Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    return Geometry(C=C, H=H, W=W, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, dh=dh, dw=dw,
                    Ho=Ho, Wo=Wo)


cdef inline void span(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size, Py_ssize_t n_out,
                      Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Output positions o in [lo, hi) read input o * stride + offset inside [0, size)."""
    cdef Py_ssize_t a = 0, b = 0
    if offset < 0:
        a = (-offset + stride - 1) // stride
    if size > offset:
        b = (size - offset + stride - 1) // stride
    if b > n_out:
        b = n_out
    if a > b:
        a = b
    lo[0] = a
    hi[0] = b


# the two directions of walk_taps, as types: `direction is ToCol` is decided at compile time,
# so each gets its own loops without relying on GCC to inline the walk at both sites
cdef struct ToCol:
    char unused
cdef struct ToImage:
    char unused
ctypedef fused direction:
    ToCol
    ToImage


cdef inline void walk_taps(floating* x, floating* col, const Geometry* g, Py_ssize_t oh0,
                           Py_ssize_t oh1, Py_ssize_t ldc, direction* to) noexcept nogil:
    """The walk of im2col_image (ToCol: col from x) and of its adjoint
    col2im_image_by_columns (ToImage: x += col, col only read): for each tap (c, i, j),
    the output rows and columns that read inside x, and their rows of col and of x."""
    cdef Py_ssize_t c, i, j, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi, row_off, col_off
    # locals, not g->: stores through the data pointers could alias *g for the compiler,
    # which would then reload every field and never vectorize the inner loops
    cdef Py_ssize_t C = g.C, H = g.H, W = g.W, kh = g.kh, kw = g.kw, sh = g.sh, sw = g.sw
    cdef Py_ssize_t ph = g.ph, pw = g.pw, dh = g.dh, dw = g.dw, Ho = g.Ho, Wo = g.Wo
    cdef floating* xr
    cdef floating* cr
    cdef floating* xc
    cdef floating* row = col
    for c in range(C):
        xc = x + c * H * W
        for i in range(kh):
            row_off = i * dh - ph
            span(row_off, sh, H, Ho, &oh_lo, &oh_hi)
            # rows [oh0, oh1) split into rows in the padding, rows that read x, rows in the
            # padding
            oh_lo = min(max(oh_lo, oh0), oh1)
            oh_hi = min(max(oh_hi, oh_lo), oh1)
            for j in range(kw):
                col_off = j * dw - pw
                span(col_off, sw, W, Wo, &ow_lo, &ow_hi)
                if direction is ToCol and oh_lo > oh0:
                    memset(row, 0, (oh_lo - oh0) * Wo * sizeof(floating))
                for oh in range(oh_lo, oh_hi):
                    cr = row + (oh - oh0) * Wo
                    xr = xc + (oh * sh + row_off) * W + col_off
                    if direction is ToCol:
                        if ow_lo > 0:
                            memset(cr, 0, ow_lo * sizeof(floating))
                        if sw == 1:
                            memcpy(cr + ow_lo, xr + ow_lo, (ow_hi - ow_lo) * sizeof(floating))
                        else:
                            for ow in range(ow_lo, ow_hi):
                                cr[ow] = xr[ow * sw]
                        if ow_hi < Wo:
                            memset(cr + ow_hi, 0, (Wo - ow_hi) * sizeof(floating))
                    elif sw == 1:
                        for ow in range(ow_lo, ow_hi):
                            xr[ow] += cr[ow]
                    else:
                        for ow in range(ow_lo, ow_hi):
                            xr[ow * sw] += cr[ow]
                if direction is ToCol and oh_hi < oh1:
                    memset(row + (oh_hi - oh0) * Wo, 0, (oh1 - oh_hi) * Wo * sizeof(floating))
                row += ldc


cdef inline void im2col_image(const floating* x, floating* col, const Geometry* g,
                              Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc) noexcept nogil:
    """x (C, H, W) -> col (C*kh*kw, (oh1-oh0)*Wo): the columns of output rows [oh0, oh1).

    Row (c*kh + i)*kw + j of col starts ldc items after the previous one; column
    (oh-oh0)*Wo + ow holds x[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw], or 0 outside x.
    The whole image is oh0=0, oh1=Ho, ldc=Ho*Wo.
    """
    # x is only read (ToCol)
    walk_taps(<floating*>x, col, g, oh0, oh1, ldc, <ToCol*>NULL)


cdef enum:
    # items of col2im's stack row for strided columns (16 KiB of float32); rows wider than
    # that take the element-by-element loop
    COL2IM_ROW_ITEMS = 4096


cdef inline void col2im_image(const floating* col, floating* x, const Geometry* g,
                              Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc) noexcept nogil:
    """Add col (C*kh*kw, (oh1-oh0)*Wo), the columns of output rows [oh0, oh1) laid out as
    in im2col_image, into x (C, H, W) at the input positions they were read from (the
    adjoint of im2col_image); entries in the padding are dropped. The caller zeroes x."""
    if g.sh == 1 and g.sw == 1:
        col2im_image_by_rows(col, x, g, oh0, oh1, ldc)
    elif g.sw == 2 and col2im_image_s2(col, x, g, oh0, oh1, ldc):
        pass
    elif g.sw > 1 and g.sw * phase_row_items(g) <= COL2IM_ROW_ITEMS:
        col2im_image_by_phase_rows(col, x, g, oh0, oh1, ldc)
    else:
        col2im_image_by_columns(col, x, g, oh0, oh1, ldc)


cdef inline void col2im_image_by_columns(const floating* col, floating* x, const Geometry* g,
                                         Py_ssize_t oh0, Py_ssize_t oh1,
                                         Py_ssize_t ldc) noexcept nogil:
    """col2im_image one column row at a time, each added where it lands (at column strides
    > 1 element by element): the code for the geometries the others leave."""
    # col is only read (ToImage)
    walk_taps(x, <floating*>col, g, oh0, oh1, ldc, <ToImage*>NULL)


cdef inline Py_ssize_t phase_row_items(const Geometry* g) noexcept nogil:
    """Items per column phase of col2im_image_by_phase_rows's row: every padded column
    that an output position reads (ow*sw + j*dw) or that lies in the image (x + pw)."""
    return max(g.Wo + (g.kw - 1) * g.dw // g.sw, (g.W - 1 + g.pw) // g.sw + 1)


cdef inline void col2im_image_by_phase_rows(const floating* col, floating* x,
                                            const Geometry* g, Py_ssize_t oh0,
                                            Py_ssize_t oh1, Py_ssize_t ldc) noexcept nogil:
    """col2im_image for column strides > 1, where adding each column into the image is a
    strided store that does not vectorize ((16,64,56,56)->128 3x3 s2: a fifth of
    grad_input's time). Per kernel row and output row, the kw column rows are added
    contiguously into a padded row split by column phase (row[q, m] is padded column
    m*sw + q, as in src/pad.h), which is then added into the image row (merge_row)."""
    cdef floating row[COL2IM_ROW_ITEMS]
    cdef Py_ssize_t C = g.C, H = g.H, W = g.W, kh = g.kh, kw = g.kw, sh = g.sh, sw = g.sw
    cdef Py_ssize_t ph = g.ph, pw = g.pw, dh = g.dh, dw = g.dw, Ho = g.Ho, Wo = g.Wo
    cdef Py_ssize_t wq = phase_row_items(g)
    cdef Py_ssize_t c, i, j, oh, ow, oh_lo, oh_hi
    cdef const floating* src
    cdef floating* tap
    for c in range(C):
        for i in range(kh):
            span(i * dh - ph, sh, H, Ho, &oh_lo, &oh_hi)
            oh_lo = min(max(oh_lo, oh0), oh1)
            oh_hi = min(max(oh_hi, oh_lo), oh1)
            for oh in range(oh_lo, oh_hi):
                memset(row, 0, sw * wq * sizeof(floating))
                src = col + (c * kh + i) * kw * ldc + (oh - oh0) * Wo
                for j in range(kw):
                    # padded column ow*sw + j*dw: phase (j*dw) % sw, ow + (j*dw) // sw in
                    tap = row + (j * dw) % sw * wq + (j * dw) // sw
                    for ow in range(Wo):
                        tap[ow] += src[ow]
                    src += ldc
                # image column xx is padded column xx + pw
                merge_row(row, x + (c * H + oh * sh + i * dh - ph) * W, W, pw, sw, wq, wq, True)


cdef inline bint col2im_image_s2(const floating* col, floating* x, const Geometry* g,
                                 Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldc) noexcept nogil:
    """col2im_image at column stride 2 with lane masks: fc_col2im_s2 (src/col2im.h), the
    bits of col2im_image_by_phase_rows; False (nothing done) where the build or the kernel
    width leaves it to that."""
    cdef int done
    if floating is float:
        done = fc_col2im_s2_f(col, x, g.C, g.H, g.W, g.kh, g.kw, g.sh, g.ph, g.pw, g.dh, g.dw,
                              g.Wo, oh0, oh1, ldc)
    else:
        done = fc_col2im_s2_d(col, x, g.C, g.H, g.W, g.kh, g.kw, g.sh, g.ph, g.pw, g.dh, g.dw,
                              g.Wo, oh0, oh1, ldc)
    return done != 0


cdef inline void col2im_image_by_rows(const floating* col, floating* x, const Geometry* g,
                                      Py_ssize_t oh0, Py_ssize_t oh1,
                                      Py_ssize_t ldc) noexcept nogil:
    """col2im_image at stride 1: fc_col2im_s1 (src/col2im.h)."""
    if floating is float:
        fc_col2im_s1_f(col, x, g.C, g.H, g.W, g.kh, g.kw, g.ph, g.pw, g.dh, g.dw, g.Wo,
                       oh0, oh1, ldc)
    else:
        fc_col2im_s1_d(col, x, g.C, g.H, g.W, g.kh, g.kw, g.ph, g.pw, g.dh, g.dw, g.Wo,
                       oh0, oh1, ldc)
