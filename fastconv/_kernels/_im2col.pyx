"""Batch im2col / col2im (torch unfold / fold), one image per OpenMP thread.

Callers (fastconv.functional) validate the arguments and pass C-contiguous arrays of one
float dtype; nothing here checks or allocates.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastconv._kernels._im2col cimport (Geometry, make_geometry, im2col_image, col2im_image,
                                        direction, ToCol, ToImage)


cdef void each_image(floating* x, floating* cols, Py_ssize_t N, const Geometry* g,
                     int num_threads, direction* to) noexcept nogil:
    """The batch of both directions, an image per thread: ToCol x -> cols (im2col); ToImage
    cols -> x, which is overwritten (col2im)."""
    cdef Py_ssize_t n, image = g.C * g.H * g.W, L = g.Ho * g.Wo, rows = g.C * g.kh * g.kw
    for n in prange(N, schedule="static", num_threads=num_threads):
        if direction is ToCol:
            im2col_image(x + n * image, cols + n * rows * L, g, 0, g.Ho, L)
        else:
            memset(x + n * image, 0, image * sizeof(floating))
            col2im_image(cols + n * rows * L, x + n * image, g, 0, g.Ho, L)


def im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int num_threads):
    """x (N, C, H, W) -> cols (N, C*kh*kw, Ho*Wo), written in place."""
    cdef Geometry g = make_geometry(x.shape[1], x.shape[2], x.shape[3], kh, kw, sh, sw,
                                    ph, pw, dh, dw, Ho, Wo)
    # x is only read (ToCol)
    each_image(<floating*>&x[0, 0, 0, 0], &cols[0, 0, 0], x.shape[0], &g, num_threads,
               <ToCol*>NULL)


def col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int num_threads):
    """cols (N, C*kh*kw, Ho*Wo) -> x (N, C, H, W), overwritten with the summed columns."""
    cdef Geometry g = make_geometry(x.shape[1], x.shape[2], x.shape[3], kh, kw, sh, sw,
                                    ph, pw, dh, dw, Ho, Wo)
    # cols is only read (ToImage)
    each_image(&x[0, 0, 0, 0], <floating*>&cols[0, 0, 0], x.shape[0], &g, num_threads,
               <ToImage*>NULL)
