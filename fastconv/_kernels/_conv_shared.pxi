# Helpers of every convolution algorithm of _conv.pyx: the chunk sums of the weight
# gradients, the addition of a second array into an image just computed, and the error of a
# kernel this build does not have (padding: _conv_image.pxd).

cdef inline bint is_pointwise(const Geometry* g) noexcept nogil:
    # 1x1, stride 1, no padding: an image (C, H*W) already is its column matrix
    return (g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.ph == 0 and g.pw == 0
            and g.Ho == g.H and g.Wo == g.W)


cdef enum:
    LANES = 16


cdef inline void add_into(floating* out, const floating* add, Py_ssize_t n) noexcept nogil:
    """out[:n] += add[:n]: one image's output plus its residual while the output is still in
    cache (the bits of a separate addition, at a quarter of its memory traffic)."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = out[i] + add[i]


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


cdef int check_built(Py_ssize_t failed, str kernel) except -1:
    """RuntimeError where ``failed``: this build of the module has no such kernel (the
    portable build has no channel-vector kernel, and only AVX-512 builds have the
    pixel-vector one), or some call of it returned FC_UNAVAILABLE."""
    if failed:
        raise RuntimeError(f"this build of fastconv._kernels._conv has no {kernel} kernel "
                           "(see fastconv.show_config()); its output was not written")
    return 0
