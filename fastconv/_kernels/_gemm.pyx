"""Matrix products split over the OpenMP threads, for the fully connected layers.

The output's rows are cut into pieces of ``piece`` rows, and each piece is one
single-threaded BLAS call, run on whichever thread takes it. The caller picks the cut from
the shape alone, never from the thread count: BLAS takes different code paths (and so
rounds differently) for different sub-matrix shapes, and a cut that moved with the threads
would move the bits with them. A last piece of fewer rows is computed as a whole one, its
rows copied into a zero-padded block: every call then has the same shape, and a row's bits
do not depend on how many rows came with it. So no two threads write the same element, and
each element comes from the same BLAS call on any thread count. Callers keep BLAS at one
thread (fastconv._threads) and pass C-contiguous arrays of one float dtype.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from fastconv._kernels._blas cimport gemm


cdef void _piece(Py_ssize_t lo, const floating* a, const floating* b, floating* out,
                 const floating* bias, floating* tail, bint trans_a, bint trans_b,
                 Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, int lda, int ldb,
                 Py_ssize_t piece) noexcept nogil:
    """Rows lo .. lo + piece (or m) of out = op(a) @ op(b) (+ bias on each row)."""
    cdef Py_ssize_t rows = min(piece, m - lo), r, j
    cdef floating* c = out + lo * n
    cdef floating* padded
    if rows == piece:
        gemm(trans_a, trans_b, <int>rows, <int>n, <int>k, <floating>1,
             a + lo if trans_a else a + lo * lda, lda, b, ldb, <floating>0, c, <int>n)
    else:
        # op(a)'s last rows into a zero-padded piece, its product into the tail's rest
        padded = tail + piece * n
        if trans_a:  # a (k, m): columns lo.. of each of its k rows
            for r in range(k):
                memcpy(padded + r * piece, a + r * lda + lo, rows * sizeof(floating))
                memset(padded + r * piece + rows, 0, (piece - rows) * sizeof(floating))
        else:
            memcpy(padded, a + lo * lda, rows * k * sizeof(floating))
            memset(padded + rows * k, 0, (piece - rows) * k * sizeof(floating))
        gemm(trans_a, trans_b, <int>piece, <int>n, <int>k, <floating>1, padded,
             <int>piece if trans_a else <int>k, b, ldb, <floating>0, tail, <int>n)
        memcpy(c, tail, rows * n * sizeof(floating))
    if bias != NULL:
        for r in range(rows):
            for j in range(n):
                c[r * n + j] = c[r * n + j] + bias[j]


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
           bint trans_a, bint trans_b, Py_ssize_t piece, const floating[::1] bias,
           floating[::1] tail, int num_threads):
    """out (m, n) = op(a) @ op(b), plus bias (n,) on every row unless bias is None; op(a) is
    a.T when trans_a (likewise b); piece >= 1.

    tail: scratch of at least piece * (n + k) items when piece does not divide m (else
    unused; may be None), k the inner dimension.
    """
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef int lda = <int>a.shape[1], ldb = <int>b.shape[1]
    cdef Py_ssize_t pieces = (m + piece - 1) // piece
    cdef Py_ssize_t t
    cdef const floating* bias_ptr = NULL if bias is None or bias.shape[0] == 0 else &bias[0]
    cdef floating* tail_ptr = NULL if tail is None else &tail[0]
    if pieces == 0:
        return
    with nogil:
        if num_threads == 1 or pieces == 1:  # no team to wake
            for t in range(pieces):
                _piece(t * piece, &a[0, 0], &b[0, 0], &out[0, 0], bias_ptr, tail_ptr,
                       trans_a, trans_b, m, n, k, lda, ldb, piece)
        else:
            for t in prange(pieces, schedule="static", num_threads=num_threads):
                _piece(t * piece, &a[0, 0], &b[0, 0], &out[0, 0], bias_ptr, tail_ptr,
                       trans_a, trans_b, m, n, k, lda, ldb, piece)
