"""Matrix products split over the OpenMP threads, for the fully connected layers.

The threads take blocks of a fixed number of the output's rows, one single-threaded BLAS call
each, all of one shape: BLAS picks its kernel by the call's shape (OpenBLAS has small-matrix
kernels with their own summation order), so each element's sum is then the same whatever the
thread count and however many rows the product has. Callers keep BLAS at one
thread (fastconv._threads) and pass C-contiguous arrays of one float dtype.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels._blas cimport gemm


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
           bint trans_a, bint trans_b, Py_ssize_t block_rows, int num_threads):
    """out (m, n) = op(a) @ op(b) in blocks of block_rows rows of out (op(a) is a.T when
    trans_a, likewise b); m must be a multiple of block_rows."""
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef int lda = <int>a.shape[1], ldb = <int>b.shape[1], ldc = <int>n
    cdef Py_ssize_t t, lo
    for t in prange(m // block_rows, nogil=True, schedule="static", num_threads=num_threads):
        lo = t * block_rows
        gemm(trans_a, trans_b, <int>block_rows, <int>n, <int>k, <floating>1,
             &a[0, lo] if trans_a else &a[lo, 0], lda, &b[0, 0], ldb, <floating>0,
             &out[lo, 0], ldc)
