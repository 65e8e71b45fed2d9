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
    cdef Geometry g = make_geometry(x.shape[1], x.shape[2], x.shape[3], kh, kw, sh, sw,
                                    ph, pw, dh, dw, Ho, Wo)
    each_image(&x[0, 0, 0, 0], &cols[0, 0, 0], x.shape[0], &g, True, num_threads)


def col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int num_threads):
    """cols (N, C*kh*kw, Ho*Wo) -> x (N, C, H, W), overwritten with the summed columns."""
    cdef Geometry g = make_geometry(x.shape[1], x.shape[2], x.shape[3], kh, kw, sh, sw,
                                    ph, pw, dh, dw, Ho, Wo)
    each_image(&cols[0, 0, 0], &x[0, 0, 0, 0], x.shape[0], &g, False, num_threads)


cdef void each_image(const floating* src, floating* dst, Py_ssize_t n_images, const Geometry* g,
                     bint to_cols, int num_threads) noexcept nogil:
    """im2col (to_cols: src the images, dst their columns) or col2im (src the columns, dst
    the images, overwritten) of each image, one image per thread."""
    cdef Py_ssize_t n, image = g.C * g.H * g.W, columns = g.C * g.kh * g.kw * g.Ho * g.Wo
    for n in prange(n_images, schedule="static", num_threads=num_threads):
        if to_cols:
            im2col_image(src + n * image, dst + n * columns, g, 0, g.Ho, g.Ho * g.Wo)
        else:
            memset(dst + n * image, 0, image * sizeof(floating))
            col2im_image(src + n * columns, dst + n * image, g, 0, g.Ho, g.Ho * g.Wo)
