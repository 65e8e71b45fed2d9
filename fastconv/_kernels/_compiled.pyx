# The executor of fastconv.compile: a whole network as an array of op structs, run on
# each image in one nogil call. Images are independent, so a thread runs every op of its
# images in turn, with its own slice of the arena; the result does not depend on how the
# images were split over threads, bit for bit.
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, exp, tanh
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from scipy.linalg.cython_blas cimport sgemv

from fastconv._kernels._blas cimport gemm
from fastconv._kernels._conv_image cimport (
    KB, KB6, VW_F, WIDE, KVEC_LANES_F, KVEC_MAX_A1, KVEC_MAX_A2, Plane, reads_in_place,
    pad_rows, direct_tasks, direct_rows, direct_image, kvec_tasks, kvec_blocks, kvec_image,
    winograd_image)
from fastconv._kernels._im2col cimport Geometry, make_geometry, im2col_image

import numpy as np


cdef extern from "pool2x2.h" nogil:
    float fc_take_max(float v, float best)
    void fc_pool2x2_f(const float* x, float* y, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                      bint is_max, float area)


cdef extern from "team.h" nogil:
    void fc_team_barrier()
    int fc_team_size()


cdef enum:
    MAX_BUFFERS = 1024


cdef enum OpKind:
    OP_CONV = 0
    OP_LINEAR = 1
    OP_MAXPOOL = 2
    OP_AVGPOOL = 3
    OP_ACT = 4
    OP_AFFINE = 5
    OP_ADD = 6
    OP_CONCAT = 7
    OP_COPY = 8


cdef enum Route:
    # a convolution's kernel: _conv_plan.Route, as compile planned it
    ROUTE_GEMM = 0
    ROUTE_DIRECT = 1
    ROUTE_KVEC = 2
    ROUTE_WINOGRAD = 3


cdef enum Act:
    ACT_NONE = 0
    ACT_RELU = 1
    ACT_LEAKY = 2
    ACT_SIGMOID = 3
    ACT_TANH = 4


ctypedef struct Op:
    int kind, act, route
    float slope
    # buffer ids: 0 is the image's input, 1 its output, the others live in the arena
    int src, src2, dst
    Py_ssize_t C, H, W, K, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo
    Py_ssize_t size, size2      # items per image of src (and src2)
    Py_ssize_t in_items, in2_items, out_items  # items per image of src, src2, dst
    const float* weight         # conv (K, C*kh*kw) / linear (K, C); affine: scale
    const float* bias           # may be NULL; affine: shift
    bint count_include_pad
    float divisor               # avg pool: 0 means the window's own count
    # planned convolutions (route other than GEMM): weight is packed for the route; the
    # blocks and operands as fastconv.functional passes them to _conv (see _conv_image.pxd)
    bint wide, six, by_rows
    bint split                  # large enough to split one image's blocks over threads
    bint by_channels            # ... by its blocks of output channels (channel-vector)
    bint residual               # conv (channel-vector route): src2 added in its blocks
    # channel-vector route: src already in the padded layout the kernel reads (its
    # producer wrote it so: no padding pass), and where dst's and src2's pixels lie
    bint src_padded
    Plane out_at, res_at
    int kv, pixels, run          # channel-vector: taps in threes (3) or not (1)
    Py_ssize_t Hp, Wp, tile_block, ntaps
    const Py_ssize_t* tap_off
    const Py_ssize_t* row_taps
    const Py_ssize_t* pix_off
    const Op* redo              # Winograd: the direct op that redoes an image not all finite


cdef inline void activate(float* y, Py_ssize_t n, int act, float slope) noexcept nogil:
    cdef Py_ssize_t i
    if act == ACT_RELU:
        for i in range(n):
            if y[i] < 0:
                y[i] = 0
    elif act == ACT_LEAKY:
        for i in range(n):
            if y[i] < 0:
                y[i] = y[i] * slope
    elif act == ACT_SIGMOID:
        for i in range(n):
            y[i] = <float>(1.0 / (1.0 + exp(-<double>y[i])))
    elif act == ACT_TANH:
        for i in range(n):
            y[i] = <float>tanh(<double>y[i])


cdef void run_conv(const Op* op, const float* x, float* y, float* col) noexcept nogil:
    """One image: y (K, Ho*Wo) = bias + W @ im2col(x), as conv2d_gemm's one-image tiles."""
    cdef Py_ssize_t L = op.Ho * op.Wo, CKK = op.C * op.kh * op.kw, k, l
    cdef Geometry g = make_geometry(op.C, op.H, op.W, op.kh, op.kw, op.sh, op.sw, op.ph, op.pw,
                                    op.dh, op.dw, op.Ho, op.Wo)
    cdef float beta = 0
    cdef const float* colp = x
    if op.bias != NULL:
        beta = 1
        for k in range(op.K):
            for l in range(L):
                y[k * L + l] = op.bias[k]
    if not (op.kh == 1 and op.kw == 1 and op.sh == 1 and op.sw == 1 and op.ph == 0
            and op.pw == 0 and op.Ho == op.H and op.Wo == op.W):
        im2col_image(x, col, &g, 0, op.Ho, L)
        colp = col
    gemm(False, False, <int>op.K, <int>L, <int>CKK, <float>1, op.weight, <int>CKK, colp, <int>L,
         beta, y, <int>L)
    activate(y, op.K * L, op.act, op.slope)


cdef inline int after_kernel(const Op* op) noexcept nogil:
    """The activation left to apply after op's kernel: none where the channel-vector block
    applied the ReLU itself."""
    return ACT_NONE if op.route == ROUTE_KVEC and op.act == ACT_RELU else op.act


cdef void planned_conv(const Op* op, const float* x, float* y, float* work,
                       const float* res) noexcept nogil:
    """One image on the kernel compile planned (the eager planner's), bias added; the
    channel-vector route also adds res (NULL for none) and applies a ReLU, in its blocks."""
    cdef Py_ssize_t failed = 0
    if op.route == ROUTE_DIRECT:
        direct_image(x, work, op.weight, op.bias, y, op.C, op.H, op.W, op.K, op.Ho, op.Wo,
                     op.kh, op.kw, op.sh, op.sw, op.ph, op.pw, op.dh, op.dw, op.Hp, op.Wp, 1,
                     op.wide, op.six)
    elif op.route == ROUTE_KVEC:
        # compile checked that this build has the channel-vector kernel: nothing fails
        kvec_image(x, work, op.weight, op.bias, y, op.C, op.H, op.W, op.K, op.Ho, op.Wo,
                   op.tap_off, op.ntaps, op.run, op.row_taps, op.pix_off, op.sh, op.sw, op.ph,
                   op.pw, op.Hp, op.Wp, 1, op.kv, op.pixels, op.by_rows, res, op.act == ACT_RELU,
                   op.out_at, op.res_at, op.src_padded)
    elif winograd_image(x, work, op.weight, op.bias, y, op.C, op.H, op.W, op.K, op.Ho, op.Wo,
                        op.tap_off, op.ph, op.pw, op.tile_block, op.kv, op.pixels, &failed):
        # an inf, NaN or overflow: direct convolution, as eager redoes such images
        planned_conv(op.redo, x, y, work, NULL)


cdef void conv_part(const Op* op, const float* x, const float* res, float* y, float* work,
                    Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    """Part ``part`` of ``parts`` of planned_conv on one image (direct and channel-vector
    routes), residual res (NULL for none) and activation included: the part's share of the
    channel-vector blocks of output channels where the op splits by channels and has a block
    for each part (layers whose weights outweigh their input: each thread then reads a share
    of the weights, not all of them), else its share of output rows (channel-vector raster
    blocks: of pixel blocks), every channel. It pads the input rows it reads into its own
    work: the rows the previous split layer left in this thread's cache, mostly. Each
    output is computed as planned_conv computes it, so the bits are the same."""
    cdef Py_ssize_t L = op.Ho * op.Wo, kvl = op.kv * KVEC_LANES_F
    cdef Py_ssize_t nkb = (op.K + kvl - 1) // kvl
    cdef Py_ssize_t per, units, u0, u1, p0, p1, oh0, oh1, rb, k, kb0 = 0, kb1 = nkb, split_sw
    cdef const float* src = x
    if op.route == ROUTE_DIRECT:
        per = direct_tasks(op.K, 1, 1, op.six)  # tasks per output row
        units = op.Ho
    else:
        per = nkb  # tasks per pixel block
        units = kvec_tasks(op.K, op.Ho, op.Wo, 1, kvl, op.pixels, op.by_rows) // per
    if op.route == ROUTE_KVEC and op.by_channels and parts <= nkb:
        kb0, kb1 = nkb * part // parts, nkb * (part + 1) // parts
        u0, u1, p0, p1 = 0, units, 0, L
    else:
        u0, u1 = units * part // parts, units * (part + 1) // parts
        if u0 >= u1:
            return
        if op.route == ROUTE_DIRECT:
            p0, p1 = u0 * op.Wo, u1 * op.Wo
        elif op.by_rows:
            rb = (op.Wo + op.pixels - 1) // op.pixels
            p0 = u0 // rb * op.Wo + u0 % rb * op.pixels
            p1 = L if u1 == units else u1 // rb * op.Wo + u1 % rb * op.pixels
        else:
            p0, p1 = u0 * op.pixels, min(u1 * op.pixels, L)
    # the direct kernel's padded input is split by column phase, the channel-vector one's not
    split_sw = op.sw if op.route == ROUTE_DIRECT else 1
    if not (op.src_padded or reads_in_place(op.H, op.W, op.ph, op.pw, op.Hp, op.Wp, split_sw)):
        oh0, oh1 = p0 // op.Wo, (p1 - 1) // op.Wo + 1
        pad_rows(x, work, op.C, op.H, op.W, op.ph, op.pw, op.Hp, op.Wp, split_sw, oh0 * op.sh,
                 (oh1 - 1) * op.sh + (op.kh - 1) * op.dh + 1)
        src = work
    if op.route == ROUTE_DIRECT:
        direct_rows(src, op.weight, op.bias, y, op.C, op.K, op.Ho, op.Wo, op.kh, op.kw, op.sh,
                    op.sw, op.dh, op.dw, op.Hp, op.Wp, 1, op.wide, op.six, u0 * per, u1 * per)
    else:
        kvec_blocks(src, op.weight, op.bias, y, op.C, op.K, op.Ho, op.Wo, op.tap_off,
                    op.ntaps, op.run, op.row_taps, op.pix_off, op.sh, op.sw, op.Hp, op.Wp, 1,
                    op.kv, op.pixels, op.by_rows, res, op.act == ACT_RELU, op.out_at,
                    op.res_at, u0 * per, u1 * per, kb0, kb1)
    for k in range(kb0 * kvl, min(kb1 * kvl, op.K)):
        activate(y + k * L + p0, p1 - p0, after_kernel(op), op.slope)


cdef void add_rows(const Op* op, const float* x, const float* x2, float* y, Py_ssize_t r0,
                   Py_ssize_t r1) noexcept nogil:
    """Rows r0 .. r1-1 of every channel of y (C, H, W) = x + x2, activated."""
    cdef Py_ssize_t c, l, hw = op.H * op.W
    for c in range(op.C):
        for l in range(c * hw + r0 * op.W, c * hw + r1 * op.W):
            y[l] = x[l] + x2[l]
        activate(y + c * hw + r0 * op.W, (r1 - r0) * op.W, op.act, op.slope)


cdef void run_conv_group(const Op* op, const float* x, float* y, float* col,
                         Py_ssize_t nb) noexcept nogil:
    """nb images: their im2col side by side, one GEMM (K, nb*Ho*Wo), as conv2d_gemm's
    multi-image tiles; bias and activation on the way out."""
    cdef Py_ssize_t L = op.Ho * op.Wo, CKK = op.C * op.kh * op.kw, k, l, b
    cdef Geometry g = make_geometry(op.C, op.H, op.W, op.kh, op.kw, op.sh, op.sw, op.ph, op.pw,
                                    op.dh, op.dw, op.Ho, op.Wo)
    cdef float* res = col + CKK * nb * L
    cdef const float* rk
    cdef float* yk
    cdef float bk
    for b in range(nb):
        im2col_image(x + b * op.in_items, col + b * L, &g, 0, op.Ho, nb * L)
    gemm(False, False, <int>op.K, <int>(nb * L), <int>CKK, <float>1, op.weight, <int>CKK, col,
         <int>(nb * L), <float>0, res, <int>(nb * L))
    for b in range(nb):
        for k in range(op.K):
            rk = res + k * nb * L + b * L
            yk = y + b * op.out_items + k * L
            bk = op.bias[k] if op.bias != NULL else 0
            for l in range(L):
                yk[l] = rk[l] + bk
    activate(y, nb * op.out_items, op.act, op.slope)


cdef void run_linear(const Op* op, const float* x, float* y, Py_ssize_t nb) noexcept nogil:
    """nb images: y (nb, K) = bias + x (nb, C) W^T; one image as a matrix-vector product."""
    cdef Py_ssize_t k, b
    cdef float alpha = 1, beta = 0
    cdef int m = <int>op.C, n = <int>op.K, one = 1
    cdef char trans = b'T'
    if op.bias != NULL:
        beta = 1
        for b in range(nb):
            for k in range(op.K):
                y[b * op.K + k] = op.bias[k]
    if nb == 1:
        # row-major W is column-major W^T (C, K): y = (W^T)^T x
        sgemv(&trans, &m, &n, &alpha, <float*>op.weight, &m, <float*>x, &one, &beta, y, &one)
    else:
        gemm(False, True, <int>nb, <int>op.K, <int>op.C, <float>1, x, <int>op.C, op.weight,
             <int>op.C, beta, y, <int>op.K)
    activate(y, nb * op.K, op.act, op.slope)


cdef void run_pool_inside(const Op* op, const float* x, float* y) noexcept nogil:
    """run_pool when every window lies inside the image (no padding, no dilation): no
    bounds checks in the loop."""
    cdef Py_ssize_t c, oh, ow, i, j, kh = op.kh, kw = op.kw, sh = op.sh, sw = op.sw
    cdef Py_ssize_t H = op.H, W = op.W, Ho = op.Ho, Wo = op.Wo
    cdef float best, total, area = op.divisor if op.divisor > 0 else <float>(kh * kw)
    cdef bint is_max = op.kind == OP_MAXPOOL
    cdef const float* xc
    cdef const float* win
    cdef float* yc
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:
        fc_pool2x2_f(x, y, op.C, H, W, is_max, area)
        activate(y, op.C * Ho * Wo, op.act, op.slope)
        return
    for c in range(op.C):
        xc = x + c * H * W
        yc = y + c * Ho * Wo
        for oh in range(Ho):
            for ow in range(Wo):
                win = xc + oh * sh * W + ow * sw
                if is_max:
                    best = win[0]
                    for i in range(kh):
                        for j in range(kw):
                            best = fc_take_max(win[i * W + j], best)
                    yc[oh * Wo + ow] = best
                else:
                    total = 0
                    for i in range(kh):
                        for j in range(kw):
                            total = total + win[i * W + j]
                    yc[oh * Wo + ow] = total / area
    activate(y, op.C * Ho * Wo, op.act, op.slope)


cdef void run_pool(const Op* op, const float* x, float* y) noexcept nogil:
    """Max or average pooling of one image; windows clipped to the image (padding)."""
    cdef Py_ssize_t c, oh, ow, i, j, h0, w0, hh, ww, count
    cdef float best, total, v
    cdef bint is_max = op.kind == OP_MAXPOOL
    if (op.ph == 0 and op.pw == 0 and op.dh == 1 and op.dw == 1
            and (op.Ho - 1) * op.sh + op.kh <= op.H and (op.Wo - 1) * op.sw + op.kw <= op.W):
        run_pool_inside(op, x, y)
        return
    for c in range(op.C):
        for oh in range(op.Ho):
            for ow in range(op.Wo):
                h0 = oh * op.sh - op.ph
                w0 = ow * op.sw - op.pw
                best = -INFINITY
                total = 0
                count = 0
                for i in range(op.kh):
                    hh = h0 + i * op.dh
                    if hh < 0 or hh >= op.H:
                        continue
                    for j in range(op.kw):
                        ww = w0 + j * op.dw
                        if ww < 0 or ww >= op.W:
                            continue
                        v = x[(c * op.H + hh) * op.W + ww]
                        if is_max:
                            best = fc_take_max(v, best)
                        else:
                            total = total + v
                            count = count + 1
                if is_max:
                    y[(c * op.Ho + oh) * op.Wo + ow] = best
                else:
                    if op.divisor > 0:
                        y[(c * op.Ho + oh) * op.Wo + ow] = total / op.divisor
                    elif op.count_include_pad:
                        y[(c * op.Ho + oh) * op.Wo + ow] = total / (op.kh * op.kw)
                    else:
                        y[(c * op.Ho + oh) * op.Wo + ow] = total / count
    activate(y, op.C * op.Ho * op.Wo, op.act, op.slope)


cdef void run_group(const Op* ops, Py_ssize_t n_ops, float** bufs, float* col,
                    Py_ssize_t nb) noexcept nogil:
    """Every op on nb images, on the calling thread (its scratch at col); each buffer holds
    the nb images one after the other."""
    cdef Py_ssize_t i, b
    cdef const Op* op
    for i in range(n_ops):
        op = &ops[i]
        if op.kind == OP_CONV and op.route != ROUTE_GEMM:
            for b in range(nb):
                planned_conv(op, bufs[op.src] + b * op.in_items,
                             bufs[op.dst] + b * op.out_items, col,
                             bufs[op.src2] + b * op.in2_items if op.residual else NULL)
            activate(bufs[op.dst], nb * op.out_items, after_kernel(op), op.slope)
        elif op.kind == OP_CONV and nb > 1:
            run_conv_group(op, bufs[op.src], bufs[op.dst], col, nb)
        elif op.kind == OP_LINEAR:
            run_linear(op, bufs[op.src], bufs[op.dst], nb)
        else:
            for b in range(nb):
                run_op(op, bufs[op.src] + b * op.in_items, bufs[op.src2] + b * op.in2_items,
                       bufs[op.dst] + b * op.out_items, col)


cdef void run_group_team(const Op* ops, Py_ssize_t n_ops, float** bufs, float* col,
                         Py_ssize_t col_stride, Py_ssize_t nb, int tid,
                         int n_threads) noexcept nogil:
    """run_group by each thread tid of an OpenMP region of n_threads (thread t's scratch at
    col + t * col_stride): the large direct and channel-vector convolutions and the
    additions (op.split) each split by output rows (conv_part, add_rows: layer after layer,
    each thread keeps to about the same rows) or, for conv_part, by blocks of output
    channels, the other ops on thread 0; the threads meet after each op whose output
    another thread may read next. Each output is computed as run_group computes it, so the
    bits are the same."""
    cdef Py_ssize_t i, b
    cdef const Op* op
    for i in range(n_ops):
        op = &ops[i]
        if op.split:
            for b in range(nb):
                if op.kind == OP_CONV:
                    conv_part(op, bufs[op.src] + b * op.in_items,
                              bufs[op.src2] + b * op.in2_items if op.residual else NULL,
                              bufs[op.dst] + b * op.out_items, col + tid * col_stride, tid,
                              n_threads)
                else:
                    add_rows(op, bufs[op.src] + b * op.in_items, bufs[op.src2] + b * op.in2_items,
                             bufs[op.dst] + b * op.out_items, op.H * tid // n_threads,
                             op.H * (tid + 1) // n_threads)
        elif tid == 0:
            run_group(op, 1, bufs, col, nb)
        # consecutive ops of thread 0 alone need no meeting between them
        if op.split or i + 1 == n_ops or ops[i + 1].split:
            fc_team_barrier()


cdef void run_op(const Op* op, const float* x, const float* x2, float* y,
                 float* col) noexcept nogil:
    """One op on one image."""
    cdef Py_ssize_t c, l, hw
    if op.kind == OP_CONV:
        run_conv(op, x, y, col)
    elif op.kind == OP_MAXPOOL or op.kind == OP_AVGPOOL:
        run_pool(op, x, y)
    elif op.kind == OP_ACT:
        if y != x:
            memcpy(y, x, op.size * sizeof(float))
        activate(y, op.size, op.act, op.slope)
    elif op.kind == OP_AFFINE:
        hw = op.H * op.W
        for c in range(op.C):
            for l in range(hw):
                y[c * hw + l] = x[c * hw + l] * op.weight[c] + op.bias[c]
        activate(y, op.size, op.act, op.slope)
    elif op.kind == OP_ADD:
        add_rows(op, x, x2, y, 0, op.H)
    elif op.kind == OP_CONCAT:
        memcpy(y, x, op.size * sizeof(float))
        memcpy(y + op.size, x2, op.size2 * sizeof(float))
    elif op.kind == OP_COPY:
        memcpy(y, x, op.size * sizeof(float))


def kernel_shapes():
    """(direct block channels, 6-channel block channels, float32 columns, wide factor,
    channel-vector lanes, {kv: most pixels}) of the kernels this build of the module runs:
    compile checks them against the _conv build its plans are made for."""
    return KB, KB6, VW_F, WIDE, KVEC_LANES_F, {1: KVEC_MAX_A1, 2: KVEC_MAX_A2}


cdef class Program:
    """The ops of one compiled network, with references to the arrays they point into.

    ops: a list of dicts with Op's fields (weight/bias as C-contiguous float32 arrays or
    None; tap_off, row_taps, pix_off as intp arrays; a Winograd op's "redo", the dict of its
    direct op); buffer_sizes: items per image of each buffer id (ids 0 and 1, the input and
    output, take none of the arena); col_items: per image, the largest im2col matrix and
    GEMM result of a convolution; work_items: the largest scratch of one image on a
    planned (direct, channel-vector, Winograd) kernel. Images run in groups of ``group``
    consecutive ones (the last may be smaller), fixed by the batch alone, so the bits do
    not depend on threads.
    """
    cdef Op* ops
    cdef Op* redo_ops
    cdef readonly Py_ssize_t n_ops
    cdef Py_ssize_t n_bufs, col_offset, in_items, out_items, group
    cdef bint any_split          # some op splits an image over the threads
    cdef Py_ssize_t[::1] offsets
    cdef readonly Py_ssize_t thread_items
    cdef list keep

    def __cinit__(self, list ops, buffer_sizes, Py_ssize_t col_items, Py_ssize_t work_items,
                  Py_ssize_t in_items, Py_ssize_t out_items, Py_ssize_t group):
        cdef Py_ssize_t i, total = 0
        self.n_ops = len(ops)
        self.ops = <Op*>calloc(max(self.n_ops, 1), sizeof(Op))
        self.redo_ops = <Op*>calloc(max(self.n_ops, 1), sizeof(Op))
        if self.ops == NULL or self.redo_ops == NULL:
            raise MemoryError()
        self.keep = []
        for i, d in enumerate(ops):
            self.fill(&self.ops[i], d)
            if d.get("redo") is not None:
                self.fill(&self.redo_ops[i], d["redo"])
                self.ops[i].redo = &self.redo_ops[i]
        self.any_split = any(self.ops[i].split for i in range(self.n_ops))
        self.n_bufs = len(buffer_sizes)
        self.offsets = np.zeros(self.n_bufs, dtype=np.intp)
        self.group = group
        for i in range(2, self.n_bufs):
            self.offsets[i] = total
            total += group * buffer_sizes[i]
        if self.n_bufs > MAX_BUFFERS:
            raise ValueError(f"compile: the network needs {self.n_bufs} activation buffers; "
                             f"at most {MAX_BUFFERS} are supported")
        self.col_offset = total
        self.in_items, self.out_items = in_items, out_items
        # each thread: its buffers, then the im2col matrix or a planned kernel's scratch;
        # 16 items apart (cache lines)
        self.thread_items = (total + max(group * col_items, work_items) + 16) // 16 * 16

    cdef void fill(self, Op* o, dict d) except *:
        o.kind = d["kind"]
        o.act = d.get("act", ACT_NONE)
        o.slope = d.get("slope", 0.0)
        o.route = d.get("route", ROUTE_GEMM)
        o.src, o.src2, o.dst = d.get("src", 0), d.get("src2", 0), d.get("dst", 0)
        o.C, o.H, o.W, o.K = d.get("C", 0), d.get("H", 0), d.get("W", 0), d.get("K", 0)
        o.kh, o.kw, o.sh, o.sw = d.get("kh", 0), d.get("kw", 0), d.get("sh", 0), d.get("sw", 0)
        o.ph, o.pw, o.dh, o.dw = d.get("ph", 0), d.get("pw", 0), d.get("dh", 0), d.get("dw", 0)
        o.Ho, o.Wo = d.get("Ho", 0), d.get("Wo", 0)
        o.size, o.size2 = d.get("size", 0), d.get("size2", 0)
        o.in_items, o.in2_items = d.get("in_items", 0), d.get("in2_items", 0)
        o.out_items = d.get("out_items", 0)
        o.count_include_pad = d.get("count_include_pad", True)
        o.divisor = d.get("divisor", 0.0)
        o.wide, o.six = d.get("wide", False), d.get("six", False)
        o.by_rows = d.get("by_rows", False)
        # convolutions on the direct and channel-vector routes split, and additions
        o.split = d.get("split", False) and (
            o.kind == OP_ADD or o.kind == OP_CONV and o.route in (ROUTE_DIRECT, ROUTE_KVEC))
        o.by_channels = o.split and o.route == ROUTE_KVEC and d.get("by_channels", False)
        o.residual = d.get("residual", False)
        if o.residual and not (o.kind == OP_CONV and o.route == ROUTE_KVEC):
            raise ValueError("Program: only channel-vector convolutions add a residual")
        o.kv, o.pixels, o.run = d.get("kv", 0), d.get("pixels", 0), d.get("run", 1)
        o.src_padded = d.get("src_padded", False)
        o.out_at = self.plane(d, "out_at", o.Ho, o.Wo)
        o.res_at = self.plane(d, "res_at", o.Ho, o.Wo)
        kvec = o.kind == OP_CONV and o.route == ROUTE_KVEC
        padded_out, padded_res = "out_at" in d, "res_at" in d
        # only the channel-vector block reads padded layouts; raster blocks span rows, and
        # activations other than its ReLU run over a dense output
        if (o.src_padded or padded_out or padded_res) and not kvec or (
                (padded_out or padded_res) and not o.by_rows) or (
                padded_out and after_kernel(o) != ACT_NONE):
            raise ValueError("Program: padded layouts are read by channel-vector "
                             "convolutions, and written by those in row blocks with no "
                             "activation or a ReLU")
        o.Hp, o.Wp, o.tile_block = d.get("Hp", 0), d.get("Wp", 0), d.get("tile_block", 0)
        o.weight = <const float*>self.pointer(d, "weight", np.float32)
        o.bias = <const float*>self.pointer(d, "bias", np.float32)
        o.tap_off = <const Py_ssize_t*>self.pointer(d, "tap_off", np.intp)
        o.row_taps = <const Py_ssize_t*>self.pointer(d, "row_taps", np.intp)
        o.pix_off = <const Py_ssize_t*>self.pointer(d, "pix_off", np.intp)
        if o.tap_off != NULL:
            o.ntaps = len(d["tap_off"])

    cdef Plane plane(self, dict d, str key, Py_ssize_t Ho, Py_ssize_t Wo) except *:
        """d[key], (stride, first, row) of a buffer's (Ho, Wo) planes (see Plane), or
        dense ones where d has none."""
        cdef Plane at
        at.stride, at.first, at.row = d.get(key, (Ho * Wo, 0, Wo))
        if at.row < Wo or at.stride < at.first + (Ho - 1) * at.row + Wo or at.first < 0:
            raise ValueError(f"Program: {key} {d[key]} does not hold {Ho}x{Wo} planes")
        return at

    cdef const void* pointer(self, dict d, str key, dtype) except? NULL:
        """The data of d[key], a C-contiguous 1-D array of dtype kept alive with the
        program; NULL where d has none."""
        a = d.get(key)
        if a is None:
            return NULL
        if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.ndim == 1
                and a.flags.c_contiguous and a.size > 0):
            raise ValueError(f"Program: {key} must be a non-empty C-contiguous 1-D {dtype} "
                             f"array")
        self.keep.append(a)
        return <const void*><size_t>a.ctypes.data

    def __dealloc__(self):
        free(self.ops)
        free(self.redo_ops)

    def run(self, const float[::1] x, float[::1] out, float[::1] arena, Py_ssize_t n_images,
            int num_threads):
        """Run the network on n_images images: x (n_images*in_items,) -> out; arena holds
        thread_items items per thread of num_threads. With fewer groups than threads, the
        groups run one after the other, all threads sharing each op that splits
        (run_group_team); one group of a network with no such op runs on the calling thread
        alone (a region that leaves the other threads idle cost ~1.5 us: a tenth of LeNet's
        batch-1 call)."""
        cdef Py_ssize_t t, n_groups = (n_images + self.group - 1) // self.group
        cdef int tid, team
        if n_images <= 0:
            return
        if num_threads <= 1 or n_groups == 1 and not self.any_split:
            with nogil:
                for t in range(n_groups):
                    self.run_images(&x[0], &out[0], &arena[0], t * self.group,
                                    min(self.group, n_images - t * self.group))
        elif n_groups < num_threads and self.any_split:
            # one region for the whole call, its threads sharing each group's split ops
            with nogil, parallel(num_threads=num_threads):
                tid, team = threadid(), fc_team_size()
                for t in range(n_groups):
                    self.run_images_team(&x[0], &out[0], &arena[0], t * self.group,
                                         min(self.group, n_images - t * self.group), tid, team)
        else:
            with nogil:
                for t in prange(n_groups, schedule="static", num_threads=num_threads):
                    self.run_images(&x[0], &out[0], &arena[0] + threadid() * self.thread_items,
                                    t * self.group, min(self.group, n_images - t * self.group))

    cdef void buffers(self, const float* x, float* out, float* arena, Py_ssize_t n,
                      float** bufs) noexcept nogil:
        """bufs[id]: buffer id of the group of images from image n."""
        cdef Py_ssize_t i
        bufs[0] = <float*>(x + n * self.in_items)
        bufs[1] = out + n * self.out_items
        for i in range(2, self.n_bufs):
            bufs[i] = arena + self.offsets[i]

    cdef void run_images(self, const float* x, float* out, float* arena, Py_ssize_t n,
                         Py_ssize_t nb) noexcept nogil:
        cdef float* bufs[MAX_BUFFERS]
        self.buffers(x, out, arena, n, bufs)
        run_group(self.ops, self.n_ops, bufs, arena + self.col_offset, nb)

    cdef void run_images_team(self, const float* x, float* out, float* arena, Py_ssize_t n,
                              Py_ssize_t nb, int tid, int n_threads) noexcept nogil:
        cdef float* bufs[MAX_BUFFERS]
        self.buffers(x, out, arena, n, bufs)
        run_group_team(self.ops, self.n_ops, bufs, arena + self.col_offset, self.thread_items,
                       nb, tid, n_threads)
