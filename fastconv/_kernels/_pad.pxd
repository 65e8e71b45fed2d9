# Rows split by column phase (src/pad.h): the padded images of the direct, channel-vector,
# Winograd and pixel-vector convolutions, the pooling kernels' scratch rows and col2im's
# strided rows, by one piece of code.
from cython cimport floating


cdef extern from "pad.h" nogil:
    void fc_split_row_f(const float* src, float* dst, Py_ssize_t w, Py_ssize_t pad,
                        Py_ssize_t sw, Py_ssize_t len, Py_ssize_t phase_stride, float fill)
    void fc_split_row_d(const double* src, double* dst, Py_ssize_t w, Py_ssize_t pad,
                        Py_ssize_t sw, Py_ssize_t len, Py_ssize_t phase_stride, double fill)
    void fc_merge_row_f(const float* src, float* dst, Py_ssize_t w, Py_ssize_t pad,
                        Py_ssize_t sw, Py_ssize_t len, Py_ssize_t phase_stride, int add)
    void fc_merge_row_d(const double* src, double* dst, Py_ssize_t w, Py_ssize_t pad,
                        Py_ssize_t sw, Py_ssize_t len, Py_ssize_t phase_stride, int add)


cdef inline void split_row(const floating* src, floating* dst, Py_ssize_t w, Py_ssize_t pad,
                           Py_ssize_t sw, Py_ssize_t len, Py_ssize_t phase_stride,
                           floating fill) noexcept nogil:
    """Split src (w columns, at padded column pad on) by column phase: phase q, at
    dst + q * phase_stride, gets len items, item m = padded column m*sw + q (fill outside
    src)."""
    if floating is float:
        fc_split_row_f(src, dst, w, pad, sw, len, phase_stride, fill)
    else:
        fc_split_row_d(src, dst, w, pad, sw, len, phase_stride, fill)


cdef inline void merge_row(const floating* src, floating* dst, Py_ssize_t w, Py_ssize_t pad,
                           Py_ssize_t sw, Py_ssize_t len, Py_ssize_t phase_stride,
                           bint add) noexcept nogil:
    """The inverse of split_row for dst's w columns: dst[x] = (add: +=) the item of padded
    column x + pad."""
    if floating is float:
        fc_merge_row_f(src, dst, w, pad, sw, len, phase_stride, add)
    else:
        fc_merge_row_d(src, dst, w, pad, sw, len, phase_stride, add)
