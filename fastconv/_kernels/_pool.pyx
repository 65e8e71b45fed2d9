"""Max and average 2-D pooling, forward and backward, on contiguous (P, H, W) planes.

P = N*C: every plane is pooled independently, so the planes are split over OpenMP threads
(``prange(schedule='static')``) and backward scatters stay race-free. Each plane is
computed by one thread in a fixed order, so results do not depend on the thread count.

Callers (fastconv.functional) validate the arguments, make the buffers contiguous and
allocate the outputs; nothing here raises or touches a Python object inside ``nogil``.
The semantics follow torch's CPU kernels: window placement, the ceil_mode clipping, the
avg-pool divisor rules, the max-pool tie-break (first maximum in row-major window order),
NaN propagation (a NaN in the window wins; its index is the last NaN's, as in torch) and
the order of every sum, so results match torch bit for bit.

How the loops vectorize. The general kernels run tap by tap over a whole output row held
in a per-thread scratch row (L1-resident), each pass a plain loop over the row's columns
that GCC vectorizes (max: three taps per pass, the running max and argmax in registers).
Every pass covers the same Wp columns (Wo rounded up to a multiple of 8): the input row is
first copied into a scratch row padded with the neutral value (-inf for max, 0 for sums)
and split by stride phase, so the taps read contiguous columns and no pass needs a bounds
test or a scalar remainder. (A scalar remainder of the max update branches on the data
and mispredicts; partial vectors overlapping earlier stores stall store forwarding.)
The kernels see only the column taps that reach the input (see _Plan), so the padding of
a window that is mostly padding costs neither time nor scratch. The avg-pool divisors
come from one table per call. 2x2 stride-2 windows (LeNet) get fused single-pass loops
instead.
"""
import threading

import numpy as np

from fastconv._cache import BoundedCache

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int32_t, int64_t, INT32_MAX
from libc.math cimport INFINITY
from libc.string cimport memcpy, memset

from fastconv._kernels._pad cimport merge_row, split_row


cdef enum:
    # Scratch rows are padded to a multiple of this many columns (whole vectors).
    COLUMN_BLOCK = 8
    CACHE_LINE = 64


def _thread_rows(Py_ssize_t num_threads, Py_ssize_t n, dtype):
    """(num_threads, >= n) scratch whose rows start on their own cache lines: two threads
    writing rows that share a line would keep stealing it from each other."""
    cdef Py_ssize_t itemsize = np.dtype(dtype).itemsize
    cdef Py_ssize_t per_line = CACHE_LINE // itemsize
    cdef Py_ssize_t stride = (n + per_line - 1) // per_line * per_line
    buf = np.empty(num_threads * stride + per_line, dtype)
    start = (-buf.ctypes.data % CACHE_LINE) // itemsize
    return buf[start:start + num_threads * stride].reshape(num_threads, stride)


cdef struct Pool:
    # Plane and output sizes; kernel, stride, padding, dilation per axis, where the columns'
    # kw and pw are those of the taps that reach the input (see _Plan).
    Py_ssize_t H, W, Ho, Wo
    Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw
    Py_ssize_t Wp                    # Wo rounded up to a multiple of COLUMN_BLOCK
    Py_ssize_t Lk                    # one stride phase of the padded row (see _Plan)
    # The same for every row of every plane, so built once per call (see _Plan): the
    # kernels' inner loops then do no integer division.
    const Py_ssize_t* col_first      # (Wo,) first in-bounds input column of each window
    const Py_ssize_t* tap_at         # (kw,) where tap j's columns start in a phase-split row


cdef inline Py_ssize_t _first_tap(Py_ssize_t start, Py_ssize_t step) noexcept nogil:
    """Smallest t >= 0 with start + t*step >= 0."""
    if start >= 0:
        return 0
    return (step - 1 - start) // step


cdef inline Py_ssize_t _tap_end(Py_ssize_t start, Py_ssize_t step, Py_ssize_t count,
                                Py_ssize_t size) noexcept nogil:
    """One past the last t < count with start + t*step < size (0 when there is none)."""
    cdef Py_ssize_t t
    if start >= size:
        return 0
    t = (size - 1 - start) // step + 1
    return t if t < count else count


cdef inline Py_ssize_t _avg_span(Py_ssize_t o, Py_ssize_t s, Py_ssize_t p, Py_ssize_t k,
                                 Py_ssize_t size, Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    """Window o along one axis: [a, b) in bounds; returns its length counting padding.

    As in torch, a window never counts padding beyond size + p (the ceil_mode overhang).
    """
    cdef Py_ssize_t start = o * s - p
    cdef Py_ssize_t end = start + k
    if end > size + p:
        end = size + p
    a[0] = start if start > 0 else 0
    b[0] = end if end < size else size
    return end - start


# _Plan.divisors tables by geometry.
_divisor_cache = BoundedCache(256)


cdef class _Plan:
    """The geometry of one pooling call and its tables, built once per call."""
    cdef Pool p
    cdef Py_ssize_t kw, pw                # the window's own columns: taps, padding
    cdef Py_ssize_t[::1] tables

    def __init__(self, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo, kernel_size,
                 stride, padding, dilation=(1, 1)):
        cdef Pool* g = &self.p
        cdef Py_ssize_t ow, w0, j, L, ja, jb
        cdef Py_ssize_t* t
        g.H, g.W, g.Ho, g.Wo = H, W, Ho, Wo
        g.kh, self.kw = kernel_size
        g.sh, g.sw = stride
        g.ph, self.pw = padding
        g.dh, g.dw = dilation
        if Wo == 1:
            # One output column: the stride never applies, and a huge one would size the
            # scratch row below by (COLUMN_BLOCK - 1) strides of nothing.
            g.sw = 1
        # Column tap j of output column ow reads input column ow*sw - pw + j*dw. Only the
        # taps [ja, jb) reach the input for some ow < Wo; the others read padding alone,
        # which changes nothing (-inf never takes a max, +0 never changes a sum). So the
        # kernels get the window of those taps: jb - ja of them, starting ja*dw later
        # (pw may turn negative: the window then starts inside the input). The scratch
        # row and the tap loops stay within the input plus the outputs' span: a 2**28-wide
        # window on a 3x3 input runs a few taps, not 2**28.
        jb = _tap_end(-self.pw, g.dw, self.kw, W)
        ja = min(_first_tap((Wo - 1) * g.sw - self.pw, g.dw), jb)
        g.kw, g.pw = jb - ja, self.pw - ja * g.dw
        g.Wp = (Wo + COLUMN_BLOCK - 1) // COLUMN_BLOCK * COLUMN_BLOCK
        # The padded row holds input column w at w + pw (from max(-pw, 0) on) and reaches
        # every tap of Wp windows.
        L = max((g.Wp - 1) * g.sw + (g.kw - 1) * g.dw + 1, W + g.pw)
        g.Lk = (L + g.sw - 1) // g.sw
        self.tables = np.empty(Wo + g.kw, np.intp)
        t = &self.tables[0]
        g.col_first, g.tap_at = t, t + Wo
        for ow in range(Wo):
            w0 = ow * g.sw - g.pw
            t[ow] = w0 + _first_tap(w0, g.dw) * g.dw
        for j in range(g.kw):
            t[Wo + j] = j * g.dw % g.sw * g.Lk + j * g.dw // g.sw

    def divisors(self, bint count_include_pad, Py_ssize_t divisor_override, dtype):
        """(Ho*Wo,) torch's avg-pool divisor of every window, as dtype (read-only).

        The override if nonzero, else the window's area with or without the padding. A
        window with nothing in bounds (torch's argument rules leave none) gets inf, so its
        mean is 0 as in torch. One table for all planes keeps the kernels' divisions in
        vectorized loops. Cached by geometry: building it took half of a small call (a
        layer asks for the same table every step).
        """
        key = (self.p.H, self.p.W, self.p.Ho, self.p.Wo, self.p.sh, self.p.sw, self.p.ph,
               self.pw, self.p.kh, self.kw, count_include_pad, divisor_override,
               np.dtype(dtype).char)
        div = _divisor_cache.get(key)
        if div is None:
            div = _divisor_cache.put(key, self._divisors(count_include_pad, divisor_override,
                                                         dtype))
        return div

    def _divisors(self, bint count_include_pad, Py_ssize_t divisor_override, dtype):
        cdef Py_ssize_t o, a, b
        spans, counts = [], []
        for size, out, s, p, k in ((self.p.H, self.p.Ho, self.p.sh, self.p.ph, self.p.kh),
                                    (self.p.W, self.p.Wo, self.p.sw, self.pw, self.kw)):
            span, count = np.empty(out), np.empty(out)
            for o in range(out):
                span[o] = _avg_span(o, s, p, k, size, &a, &b)
                count[o] = max(b - a, 0)
            spans.append(span)
            counts.append(count)
        inside = np.multiply.outer(*counts)
        if divisor_override != 0:
            div = np.full(inside.shape, float(divisor_override))
        else:
            div = np.multiply.outer(*spans) if count_include_pad else inside.copy()
        div[inside == 0] = np.inf
        div = div.astype(dtype).reshape(-1)
        div.flags.writeable = False
        return div

    def work(self, num_threads, dtype, avg_backward=False):
        """Per-thread floating scratch: two rows of Wp, then padded rows split by stride
        phase (sw * Lk each; see _phases): kh of them where the forward kernels hold them
        (_holds_rows), else one, or for avg_backward H."""
        cdef Py_ssize_t rows = self.p.kh if _holds_rows(&self.p) else 1
        if avg_backward:
            rows = self.p.H
        return _thread_rows(num_threads, 2 * self.p.Wp + self.p.sw * self.p.Lk * rows, dtype)


# What a call needs besides its arrays, by geometry, per Python thread: (_Plan, floating
# scratch, int32 and int64 argmax rows), or None where a kind of call needs none. Building
# them took 9 us of a batch-1 LeNet pooling call whose pooling takes under 1; a layer asks
# for the same every call. Per Python thread, so two threads never share scratch; at most
# _MOST_PREPARED geometries each, then it starts over.
_prepared_local = threading.local()
_MOST_PREPARED = 64

cdef enum:
    MAX_FORWARD = 0
    AVG_FORWARD = 1
    AVG_BACKWARD = 2


cdef enum:
    # Below this many input items a call runs on one thread: waking the team's other
    # threads costs ~5 us here, more than pooling them (LeNet's batch-1 layers: 4704 and
    # 1600). Each plane is one thread's either way, so the bits do not change.
    SERIAL_ITEMS = 16384


cdef inline int _threads_for(Py_ssize_t items, int num_threads) noexcept nogil:
    return 1 if items < SERIAL_ITEMS else num_threads


cdef tuple _prepared(Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo, kernel_size,
                     stride, padding, dilation, int num_threads, dtype, int kind):
    """(plan, work, track32, track64, narrow) of one call (see _prepared_local)."""
    cdef _Plan plan
    cdef bint narrow
    cache = getattr(_prepared_local, "cache", None)
    if cache is None:
        cache = _prepared_local.cache = BoundedCache(_MOST_PREPARED)
    key = (H, W, Ho, Wo, kernel_size, stride, padding, dilation, num_threads, dtype, kind)
    hit = cache.get(key)
    if hit is not None:
        return hit
    plan = _Plan(H, W, Ho, Wo, kernel_size, stride, padding, dilation)
    track32 = track64 = None
    narrow = False
    if kind == MAX_FORWARD:
        # Offsets within a window, and flat indices: int32 when they fit. One argmax row
        # per thread, reused for every row of every plane it pools.
        narrow = (plan.p.H + 2 * plan.p.ph + 1) * (plan.p.W + 2 * plan.pw + 1) <= INT32_MAX
        track32 = _thread_rows(num_threads, plan.p.Wp if narrow else 1, np.int32)
        track64 = _thread_rows(num_threads, 1 if narrow else plan.p.Wp, np.int64)
    work = plan.work(num_threads, dtype, avg_backward=kind == AVG_BACKWARD and not _is_2x2(&plan.p))
    hit = cache.put(key, (plan, work, track32, track64, narrow))
    return hit


cdef inline bint _is_2x2(const Pool* g) noexcept nogil:
    """2x2 windows, stride 2, no padding or dilation, every window inside the plane: the
    LeNet pooling, which gets fused single-pass loops (on its 28x28 planes the short rows
    make the general kernels' per-row and per-tap overhead dominate)."""
    return (g.kh == 2 and g.kw == 2 and g.sh == 2 and g.sw == 2 and g.ph == 0 and g.pw == 0
            and g.dh == 1 and g.dw == 1 and 2 * g.Ho <= g.H and 2 * g.Wo <= g.W)


cdef inline void _phases(const floating* src, floating* dst, const Pool* g,
                         floating fill) noexcept nogil:
    """The padded input row (src at offset pw, fill elsewhere), split by stride phase.

    dst[r*Lk + k] is padded column k*sw + r, so the tap at padded offset o reads its Wp
    columns contiguously from dst + (o % sw)*Lk + o // sw (g.tap_at): no strided loads in
    the tap loops.
    """
    split_row(src, dst, g.W, g.pw, g.sw, g.Lk, g.Lk, fill)


cdef inline void _unphase(const floating* src, floating* dst, const Pool* g) noexcept nogil:
    """The inverse of _phases for the input columns: dst (W,) from a phase-split padded row."""
    merge_row(src, dst, g.W, g.pw, g.sw, g.Lk, g.Lk, False)


cdef enum:
    # Most window rows whose phase-split copies the forward kernels keep (_holds_rows).
    MOST_HELD_ROWS = 8


cdef inline bint _holds_rows(const Pool* g) noexcept nogil:
    """Whether the forward kernels keep the phase-split copies of kh input rows for the
    next windows (overlapping windows of at most MOST_HELD_ROWS rows): at 3x3 stride 2
    each input row is then split once, not 1.5 times on average ((16,64,112,112), 2
    threads: avg 4.3 -> 2.75 ms). Row h goes to slot (h // dh) % kh, and is checked
    against the row the slot holds, so any slot is correct; these ones keep a window's
    rows apart."""
    return g.sh < g.kh <= MOST_HELD_ROWS


cdef inline floating* _split_row(const floating* x, floating* rows, Py_ssize_t* held,
                                 bint hold, Py_ssize_t h, floating fill,
                                 const Pool* g) noexcept nogil:
    """The phase-split copy (_phases) of input row h, from rows' slots where it is held
    (see _holds_rows), else made there now."""
    cdef Py_ssize_t slot = h // g.dh % g.kh if hold else 0
    cdef floating* phases = rows + slot * g.sw * g.Lk
    if not hold or held[slot] != h:
        _phases(x + h * g.W, phases, g, fill)
        held[slot] = h
    return phases


# ---------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------

ctypedef fused track_t:
    # The running argmax of one output row: int32 where the plane allows, because GCC
    # vectorizes a float/int32 select loop but not a float/int64 one.
    int32_t
    int64_t


ctypedef fused index_t:
    # Where a 2x2 row's indices go: the int64 output, or a track_t scratch row.
    int32_t
    int64_t


cdef inline bint _takes(floating v, floating m) noexcept nogil:
    """torch's update rule: a larger value or a NaN replaces the running max."""
    return (v > m) | (v != v)


cdef inline void _max_taps(const floating* p0, const floating* p1, const floating* p2,
                           track_t o0, track_t o1, track_t o2, floating* yrow, track_t* track,
                           Py_ssize_t n) noexcept nogil:
    """Three window taps, in order, over columns [0, n): tap t reads pt[ow], and a win
    records its offset ot within the window. One pass keeps the running max in registers."""
    cdef Py_ssize_t ow
    cdef floating v, m
    cdef track_t t
    cdef bint take
    for ow in range(n):
        m = yrow[ow]
        t = track[ow]
        # Selects, not branches: the loop vectorizes.
        v = p0[ow]
        take = _takes(v, m)
        m = v if take else m
        t = o0 if take else t
        v = p1[ow]
        take = _takes(v, m)
        m = v if take else m
        t = o1 if take else t
        v = p2[ow]
        take = _takes(v, m)
        m = v if take else m
        t = o2 if take else t
        yrow[ow] = m
        track[ow] = t


cdef void _max_plane(const floating* x, floating* y, int64_t* ind, track_t* track,
                     floating* work, const Pool* g) noexcept nogil:
    """y, ind (Ho, Wo) = max over each window of x (H, W), and its flat index in x.

    ind may be NULL (indices not wanted); track (Wp,) and work (Wp, then the split rows:
    _Plan.work) are scratch.
    Per output the taps are visited in torch's row-major window order, with its update
    rule, three at a time; a last group of fewer repeats its last tap, which changes
    nothing (a tap cannot beat itself). track holds each winner's offset from its window's
    top-left corner (h0, w0), turned into a flat index once per row.
    """
    cdef Py_ssize_t H = g.H, W = g.W, Wo = g.Wo, Wp = g.Wp
    cdef Py_ssize_t sw = g.sw, dh = g.dh, dw = g.dw, kw = g.kw
    cdef Py_ssize_t oh, ow, i, j, q, h0, h, i0
    cdef Py_ssize_t tap[3]
    cdef const Py_ssize_t* tap_at = g.tap_at
    cdef Py_ssize_t held[MOST_HELD_ROWS]
    cdef bint hold = _holds_rows(g)
    cdef floating* yrow = work
    cdef floating* phases
    for q in range(MOST_HELD_ROWS):
        held[q] = -1
    for oh in range(g.Ho):
        h0 = oh * g.sh - g.ph
        i0 = _first_tap(h0, dh)
        # torch starts each window at -inf with the index of its first in-bounds element.
        for ow in range(Wp):
            yrow[ow] = -INFINITY
        for ow in range(Wo):
            track[ow] = <track_t>(i0 * dh * W + g.col_first[ow] - (ow * sw - g.pw))
        for i in range(i0, _tap_end(h0, dh, g.kh, H)):
            h = h0 + i * dh
            phases = _split_row(x, work + Wp, held, hold, h, -INFINITY, g)
            for j in range(0, kw, 3):
                for q in range(3):
                    tap[q] = j + q if j + q < kw else kw - 1
                _max_taps(phases + tap_at[tap[0]], phases + tap_at[tap[1]],
                          phases + tap_at[tap[2]], <track_t>(i * dh * W + tap[0] * dw),
                          <track_t>(i * dh * W + tap[1] * dw),
                          <track_t>(i * dh * W + tap[2] * dw), yrow, track, Wp)
        memcpy(y + oh * Wo, yrow, Wo * sizeof(floating))
        if ind != NULL:
            for ow in range(Wo):
                ind[oh * Wo + ow] = h0 * W + ow * sw - g.pw + track[ow]


cdef inline void _max_2x2_run(const floating* r0, const floating* r1, floating* yrow,
                              index_t* irow, index_t base, int32_t w, Py_ssize_t lo,
                              Py_ssize_t hi) noexcept nogil:
    """Output columns [lo, hi) of a 2x2 stride-2 row from input rows r0, r1 (flat r0 = base).

    The winner within the window is tracked as an int32 offset, which keeps the loop
    vectorized whatever irow's type.
    """
    cdef Py_ssize_t ow
    cdef int32_t t
    cdef floating a, b, c, d, m
    cdef bint take
    for ow in range(lo, hi):
        a = r0[2 * ow]
        b = r0[2 * ow + 1]
        c = r1[2 * ow]
        d = r1[2 * ow + 1]
        m = a
        t = 0
        take = _takes(b, m)
        m = b if take else m
        t = 1 if take else t
        take = _takes(c, m)
        m = c if take else m
        t = w if take else t
        take = _takes(d, m)
        m = d if take else m
        t = w + 1 if take else t
        yrow[ow] = m
        irow[ow] = base + <index_t>(2 * ow + t)


cdef inline void _max_2x2_row(const floating* r0, Py_ssize_t W, floating* yrow, index_t* irow,
                              index_t base, Py_ssize_t Wo) noexcept nogil:
    """Output row from input rows r0 and r0 + W.

    Whole 4-column blocks, then the last 4 columns again (recomputing a column rewrites
    the same values): no scalar remainder, whose data-dependent branches mispredict.
    """
    cdef Py_ssize_t blocks = Wo - Wo % 4
    _max_2x2_run(r0, r0 + W, yrow, irow, base, <int32_t>W, 0, blocks)
    if blocks < Wo:
        _max_2x2_run(r0, r0 + W, yrow, irow, base, <int32_t>W,
                     Wo - 4 if Wo >= 4 else 0, Wo)


cdef void _max_plane_2x2(const floating* x, floating* y, int64_t* ind, track_t* track,
                         const Pool* g) noexcept nogil:
    """_max_plane for _is_2x2 geometries: the four taps in one pass.

    The indices are written straight into ind when wanted, else into the scratch track.
    """
    cdef Py_ssize_t W = g.W, Wo = g.Wo, oh
    for oh in range(g.Ho):
        if ind != NULL:
            _max_2x2_row(x + 2 * oh * W, W, y + oh * Wo, ind + oh * Wo, <int64_t>(2 * oh * W), Wo)
        else:
            _max_2x2_row(x + 2 * oh * W, W, y + oh * Wo, track, <track_t>(2 * oh * W), Wo)


cdef void _max_plane_any(const floating* x, floating* y, int64_t* ind, track_t* track,
                         floating* work, const Pool* g) noexcept nogil:
    if _is_2x2(g):
        _max_plane_2x2(x, y, ind, track, g)
    else:
        _max_plane(x, y, ind, track, work, g)


def max_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                       int64_t[:, :, ::1] indices, kernel_size, stride, padding, dilation,
                       int num_threads):
    """out, indices (P, Ho, Wo) = max pool of x (P, H, W); indices may be None.

    kernel_size, stride, padding, dilation are validated (h, w) pairs.
    """
    cdef Py_ssize_t P = x.shape[0], p
    if P == 0:
        return
    dtype = np.float32 if floating is float else np.float64
    num_threads = _threads_for(P * x.shape[1] * x.shape[2], num_threads)
    prepared = _prepared(x.shape[1], x.shape[2], out.shape[1], out.shape[2], kernel_size,
                         stride, padding, dilation, num_threads, dtype, MAX_FORWARD)
    cdef _Plan plan = prepared[0]
    cdef const Pool* g = &plan.p
    cdef bint want = indices is not None
    cdef bint narrow = prepared[4]
    cdef int64_t* ind
    cdef floating[:, ::1] work = prepared[1]
    cdef int32_t[:, ::1] track32 = prepared[2]
    cdef int64_t[:, ::1] track64 = prepared[3]
    with nogil:
        for p in prange(P, schedule="static", num_threads=num_threads):
            ind = &indices[p, 0, 0] if want else NULL
            if narrow:
                _max_plane_any(&x[p, 0, 0], &out[p, 0, 0], ind, &track32[threadid(), 0],
                               &work[threadid(), 0], g)
            else:
                _max_plane_any(&x[p, 0, 0], &out[p, 0, 0], ind, &track64[threadid(), 0],
                               &work[threadid(), 0], g)


cdef Py_ssize_t _max_backward_plane(const floating* gy, const int64_t* ind, floating* gx,
                                    Py_ssize_t n_out, Py_ssize_t n_in) noexcept nogil:
    """gx (n_in,) = scatter-add of gy (n_out,) at ind, in output order (as torch).

    Indices outside [0, n_in) are skipped, never written, and counted: the count is
    returned.
    """
    cdef Py_ssize_t k, skipped = 0
    cdef size_t t
    memset(gx, 0, n_in * sizeof(floating))
    for k in range(n_out):
        t = <size_t>ind[k]  # negative indices wrap to huge: one test covers both ends
        if t < <size_t>n_in:
            gx[t] += gy[k]
        else:
            skipped += 1
    return skipped


def max_pool2d_backward(const floating[:, :, ::1] grad_output, const int64_t[:, :, ::1] indices,
                        floating[:, :, ::1] grad_input, int num_threads):
    """grad_input (P, H, W) = scatter-add of grad_output (P, Ho, Wo) at indices (P, Ho, Wo).

    Returns how many indices lay outside [0, H*W) and were skipped: the range check rides
    on the scatter, where a separate pass over the indices cost ~20% of the time.
    """
    cdef Py_ssize_t P = grad_input.shape[0], p, skipped = 0
    cdef Py_ssize_t n_in = grad_input.shape[1] * grad_input.shape[2]
    cdef Py_ssize_t n_out = grad_output.shape[1] * grad_output.shape[2]
    if P == 0:
        return 0
    num_threads = _threads_for(P * grad_input.shape[1] * grad_input.shape[2], num_threads)
    with nogil:
        for p in prange(P, schedule="static", num_threads=num_threads):
            skipped += _max_backward_plane(&grad_output[p, 0, 0], &indices[p, 0, 0],
                                           &grad_input[p, 0, 0], n_out, n_in)
    return skipped



# ---------------------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------------------

cdef inline void _sum_taps(const floating* p0, const floating* p1, const floating* p2,
                           floating* yrow, Py_ssize_t n) noexcept nogil:
    """yrow[ow] += p0[ow], then p1[ow], then p2[ow], over columns [0, n), in one pass."""
    cdef Py_ssize_t ow
    for ow in range(n):
        yrow[ow] = ((yrow[ow] + p0[ow]) + p1[ow]) + p2[ow]


cdef void _avg_plane(const floating* x, floating* y, floating* work, const floating* divs,
                     const Pool* g) noexcept nogil:
    """y (Ho, Wo) = mean over each window of x (H, W): its sum / divs (Ho*Wo,).

    Per output the sum runs in torch's row-major window order, from 0, three taps per
    pass; the zeros of the padding and of a short last group's missing taps change no bit
    (a sum from +0 is never -0, and s + 0 == s). work (2*Wp, then the split rows:
    _Plan.work) is scratch.
    """
    cdef Py_ssize_t Wo = g.Wo, Wp = g.Wp, kw = g.kw
    cdef Py_ssize_t oh, ow, h, j, q, ha, hb, slot
    cdef Py_ssize_t held[MOST_HELD_ROWS]
    cdef bint hold = _holds_rows(g)
    cdef floating* yrow = work
    cdef floating* zeros = work + Wp
    cdef floating* phases
    cdef const floating* tap[3]
    for ow in range(Wp):
        zeros[ow] = 0
    for slot in range(MOST_HELD_ROWS):
        held[slot] = -1
    for oh in range(g.Ho):
        _avg_span(oh, g.sh, g.ph, g.kh, g.H, &ha, &hb)
        for ow in range(Wp):
            yrow[ow] = 0
        for h in range(ha, hb):
            phases = _split_row(x, work + 2 * Wp, held, hold, h, 0, g)
            for j in range(0, kw, 3):
                for q in range(3):
                    tap[q] = phases + g.tap_at[j + q] if j + q < kw else zeros
                _sum_taps(tap[0], tap[1], tap[2], yrow, Wp)
        for ow in range(Wo):
            y[oh * Wo + ow] = yrow[ow] / divs[oh * Wo + ow]


cdef void _avg_plane_2x2(const floating* x, floating* y, floating div,
                         const Pool* g) noexcept nogil:
    """_avg_plane for _is_2x2 geometries (whose windows share one divisor, div): the four
    taps in one pass, summed as torch does."""
    cdef Py_ssize_t W = g.W, Wo = g.Wo, oh, ow
    cdef floating zero = 0
    cdef const floating* r0
    cdef const floating* r1
    cdef floating* yrow
    for oh in range(g.Ho):
        r0 = x + 2 * oh * W
        r1 = r0 + W
        yrow = y + oh * Wo
        for ow in range(Wo):
            # From 0, as torch: the same result to the sign of a zero.
            yrow[ow] = ((((zero + r0[2 * ow]) + r0[2 * ow + 1]) + r1[2 * ow])
                        + r1[2 * ow + 1]) / div


cdef void _avg_backward_plane(const floating* gy, floating* gx, floating* work,
                              const floating* divs, const Pool* g) noexcept nogil:
    """gx (H, W) = the sum over windows of gy (Ho, Wo) / divs (Ho*Wo,).

    work (Wp + H*sw*Lk,) is scratch: a row of per-window terms (0 past Wo, so whole-row
    passes add nothing there) and the plane with padded rows split by stride phase (see
    _phases), so every tap adds into contiguous columns; what lands in the padding
    (including the terms of windows with nothing in bounds) is dropped.
    Each input element receives its terms in torch's order, outputs in row-major order:
    within an output row, taps run right to left so output columns come left to right.
    """
    cdef Py_ssize_t W = g.W, Wo = g.Wo, Wp = g.Wp, L = g.sw * g.Lk
    cdef Py_ssize_t oh, ow, h, j, ha, hb
    cdef floating* delta = work
    cdef floating* gpad = work + Wp
    cdef floating* gs
    memset(gpad, 0, g.H * L * sizeof(floating))
    for ow in range(Wo, Wp):
        delta[ow] = 0
    for oh in range(g.Ho):
        _avg_span(oh, g.sh, g.ph, g.kh, g.H, &ha, &hb)
        for ow in range(Wo):
            delta[ow] = gy[oh * Wo + ow] / divs[oh * Wo + ow]
        for h in range(ha, hb):
            for j in range(g.kw - 1, -1, -1):
                gs = gpad + h * L + g.tap_at[j]
                for ow in range(Wp):
                    gs[ow] += delta[ow]
    for h in range(g.H):
        _unphase(gpad + h * L, gx + h * W, g)


cdef void _avg_backward_plane_2x2(const floating* gy, floating* gx, floating div,
                                  const Pool* g) noexcept nogil:
    """_avg_backward_plane for _is_2x2 geometries (one divisor, div): each input element is
    written once."""
    cdef Py_ssize_t H = g.H, W = g.W, Ho = g.Ho, Wo = g.Wo, oh, ow, w
    cdef floating zero = 0, d
    cdef floating* r0
    cdef floating* r1
    cdef const floating* gyrow
    for oh in range(Ho):
        r0 = gx + 2 * oh * W
        r1 = r0 + W
        gyrow = gy + oh * Wo
        for ow in range(Wo):
            d = zero + gyrow[ow] / div
            r0[2 * ow] = d
            r0[2 * ow + 1] = d
            r1[2 * ow] = d
            r1[2 * ow + 1] = d
        for w in range(2 * Wo, W):  # a last odd column no window covers
            r0[w] = 0
            r1[w] = 0
    memset(gx + 2 * Ho * W, 0, (H - 2 * Ho) * W * sizeof(floating))


def avg_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out, kernel_size,
                       stride, padding, bint count_include_pad, Py_ssize_t divisor_override,
                       int num_threads):
    """out (P, Ho, Wo) = average pool of x (P, H, W); divisor_override 0 means none."""
    _avg_pool(x, out, x, out, kernel_size, stride, padding, count_include_pad,
              divisor_override, num_threads, AVG_FORWARD)


def avg_pool2d_backward(const floating[:, :, ::1] grad_output, floating[:, :, ::1] grad_input,
                        kernel_size, stride, padding, bint count_include_pad,
                        Py_ssize_t divisor_override, int num_threads):
    """grad_input (P, H, W) from grad_output (P, Ho, Wo); divisor_override 0 means none."""
    _avg_pool(grad_output, grad_input, grad_input, grad_output, kernel_size, stride, padding,
              count_include_pad, divisor_override, num_threads, AVG_BACKWARD)


cdef void _avg_pool(const floating[:, :, ::1] src, floating[:, :, ::1] dst,
                    const floating[:, :, ::1] planes, const floating[:, :, ::1] pooled,
                    kernel_size, stride, padding, bint count_include_pad,
                    Py_ssize_t divisor_override, int num_threads, int kind) except *:
    """Average pooling's forward (kind AVG_FORWARD: src the input planes, dst the pooled)
    or backward (AVG_BACKWARD: src the pooled gradient, dst the input's); ``planes`` and
    ``pooled`` are the (P, H, W) and (P, Ho, Wo) sides, for their shapes."""
    cdef Py_ssize_t P = planes.shape[0], p
    if P == 0:
        return
    dtype = np.float32 if floating is float else np.float64
    num_threads = _threads_for(P * planes.shape[1] * planes.shape[2], num_threads)
    prepared = _prepared(planes.shape[1], planes.shape[2], pooled.shape[1], pooled.shape[2],
                         kernel_size, stride, padding, (1, 1), num_threads, dtype, kind)
    cdef _Plan plan = prepared[0]
    cdef const Pool* g = &plan.p
    cdef floating[:, ::1] work = prepared[1]
    cdef const floating[::1] divs = plan.divisors(count_include_pad, divisor_override, dtype)
    cdef bint forward = kind == AVG_FORWARD, two = _is_2x2(g)
    with nogil:
        for p in prange(P, schedule="static", num_threads=num_threads):
            if forward and two:
                _avg_plane_2x2(&src[p, 0, 0], &dst[p, 0, 0], divs[0], g)
            elif forward:
                _avg_plane(&src[p, 0, 0], &dst[p, 0, 0], &work[threadid(), 0], &divs[0], g)
            elif two:
                _avg_backward_plane_2x2(&src[p, 0, 0], &dst[p, 0, 0], divs[0], g)
            else:
                _avg_backward_plane(&src[p, 0, 0], &dst[p, 0, 0], &work[threadid(), 0],
                                    &divs[0], g)
