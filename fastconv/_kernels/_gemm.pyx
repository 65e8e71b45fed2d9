"""Matrix products split over the OpenMP threads, for the fully connected layers.

The output is cut into pieces of ``piece`` rows (or columns, ``by_rows`` False), the last one
shorter, and each piece is one single-threaded BLAS call, run on whichever thread takes it.
The caller picks the cut from the shape alone, never from the thread count: BLAS takes
different code paths (and so rounds differently) for different sub-matrix shapes, and a cut
that moved with the threads would move the bits with them. So no two threads write the same
element, and each element comes from the same BLAS call on any thread count. Callers keep
BLAS at one thread (fastconv._threads) and pass C-contiguous arrays of one float dtype.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels._blas cimport gemm


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
           bint trans_a, bint trans_b, bint by_rows, Py_ssize_t piece, int num_threads):
    """out (m, n) = op(a) @ op(b); op(a) is a.T when trans_a (likewise b); piece >= 1."""
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef int lda = <int>a.shape[1], ldb = <int>b.shape[1], ldc = <int>n
    cdef Py_ssize_t length = m if by_rows else n
    cdef Py_ssize_t pieces = (length + piece - 1) // piece
    cdef Py_ssize_t t, lo, hi
    for t in prange(pieces, nogil=True, schedule="static", num_threads=num_threads):
        lo = t * piece
        hi = min(lo + piece, length)
        if by_rows:
            gemm(trans_a, trans_b, <int>(hi - lo), <int>n, <int>k, <floating>1,
                 &a[0, lo] if trans_a else &a[lo, 0], lda, &b[0, 0], ldb, <floating>0,
                 &out[lo, 0], ldc)
        else:
            gemm(trans_a, trans_b, <int>m, <int>(hi - lo), <int>k, <floating>1,
                 &a[0, 0], lda, &b[lo, 0] if trans_b else &b[0, lo], ldb, <floating>0,
                 &out[0, lo], ldc)
