"""Matrix products split over the OpenMP threads, for the fully connected layers.

Each thread makes one single-threaded BLAS call on its own slice of the output's rows (or
columns, when there are more of those), so no two threads write the same element and each
element's sum runs in BLAS's own order, whatever the thread count. Callers keep BLAS at one
thread (fastconv._threads) and pass C-contiguous arrays of one float dtype.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels._blas cimport gemm


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
           bint trans_a, bint trans_b, int num_threads):
    """out (m, n) = op(a) @ op(b); op(a) is a.T when trans_a (likewise b)."""
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef int lda = <int>a.shape[1], ldb = <int>b.shape[1], ldc = <int>n
    cdef bint by_rows = m >= n
    cdef Py_ssize_t parts = max(1, min(num_threads, m if by_rows else n))
    cdef Py_ssize_t size = ((m if by_rows else n) + parts - 1) // parts
    cdef Py_ssize_t t, lo, hi
    for t in prange(parts, nogil=True, schedule="static", num_threads=num_threads):
        lo = t * size
        hi = min(lo + size, m if by_rows else n)
        if lo >= hi:
            continue
        if by_rows:
            gemm(trans_a, trans_b, <int>(hi - lo), <int>n, <int>k, <floating>1,
                 &a[0, lo] if trans_a else &a[lo, 0], lda, &b[0, 0], ldb, <floating>0,
                 &out[lo, 0], ldc)
        else:
            gemm(trans_a, trans_b, <int>m, <int>(hi - lo), <int>k, <floating>1,
                 &a[0, 0], lda, &b[lo, 0] if trans_b else &b[0, lo], ldb, <floating>0,
                 &out[0, lo], ldc)
