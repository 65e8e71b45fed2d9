"""Batch im2col / col2im (torch unfold / fold), one image per OpenMP thread.

Callers (fastconv.functional) validate the arguments and pass C-contiguous arrays of one
float dtype; nothing here checks or allocates.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastconv._kernels._im2col cimport Geometry, make_geometry, im2col_image, col2im_image


def im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int num_threads):
    """x (N, C, H, W) -> cols (N, C*kh*kw, Ho*Wo), written in place."""
    cdef Py_ssize_t n
    cdef Geometry g = make_geometry(x.shape[1], x.shape[2], x.shape[3], kh, kw, sh, sw,
                                    ph, pw, dh, dw, Ho, Wo)
    for n in prange(x.shape[0], nogil=True, schedule="static", num_threads=num_threads):
        im2col_image(&x[n, 0, 0, 0], &cols[n, 0, 0], &g, 0, Ho, Ho * Wo)


def col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int num_threads):
    """cols (N, C*kh*kw, Ho*Wo) -> x (N, C, H, W), overwritten with the summed columns."""
    cdef Py_ssize_t n
    cdef Geometry g = make_geometry(x.shape[1], x.shape[2], x.shape[3], kh, kw, sh, sw,
                                    ph, pw, dh, dw, Ho, Wo)
    for n in prange(x.shape[0], nogil=True, schedule="static", num_threads=num_threads):
        memset(&x[n, 0, 0, 0], 0, g.C * g.H * g.W * sizeof(floating))
        col2im_image(&cols[n, 0, 0], &x[n, 0, 0, 0], &g, 0, Ho, Ho * Wo)
