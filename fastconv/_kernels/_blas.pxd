# Single-threaded, nogil GEMM on row-major buffers, through scipy's BLAS.
# Callers limit BLAS to one thread around their prange regions (fastconv._threads).
from scipy.linalg.cython_blas cimport sgemm, dgemm
from cython cimport floating


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """C[m, n] = alpha * op(A) @ op(B) + beta * C, all row-major.

    op(A) is (m, k): A is stored (m, k) with lda >= k, or (k, m) with lda >= m when trans_a.
    op(B) is (k, n): B is stored (k, n) with ldb >= n, or (n, k) with ldb >= k when trans_b.
    """
    # A row-major matrix is its column-major transpose, so C^T = op(B)^T op(A)^T:
    # BLAS gets the operands swapped, each with its own transpose flag.
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)
