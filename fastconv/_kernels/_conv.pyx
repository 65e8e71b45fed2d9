"""2-D convolution forward and backward, OpenMP threads over tiles of images.

One algorithm a file: _conv_gemm.pxi (im2col + GEMM, forward and every gradient),
_conv_direct.pxi (register-blocked direct), _conv_kvec.pxi (channel-vector direct and its
weight gradient), _conv_winograd.pxi (Winograd F(2x2, 3x3)), _conv_pixvec.pxi (pixel-vector
weight gradient); their helpers in _conv_shared.pxi, the forward kernels' loops over one
image in _conv_image.pxd (shared with _compiled), their C in src/. One module, so that
every kernel keeps its name under fastconv._kernels._conv.

Callers (fastconv.functional) validate the arguments, pass C-contiguous arrays of one float
dtype, size the scratch buffers and keep BLAS at one thread; nothing here checks or
allocates. Shapes: x (N, C, H, W), weight (K, C/groups, kh, kw), out (N, K, Ho, Wo).
Padding is top/left; everything outside the input is zero.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset

from fastconv._kernels._blas cimport gemm

from fastconv._kernels._im2col cimport Geometry, make_geometry, im2col_image, col2im_image
from fastconv._kernels._conv_image cimport (
    KB, KB6, VW_F, VW_D, WIDE, KVEC_LANES_F, KVEC_LANES_D, KVEC_MAX_A1, KVEC_MAX_A2,
    KVEC_THREES_MAX_A1, KVEC_THREES_MAX_A2, pad_image, padded_image, direct_image, kvec_image,
    dense_plane, winograd_image)

include "_conv_shared.pxi"
include "_conv_gemm.pxi"
include "_conv_direct.pxi"
include "_conv_kvec.pxi"
include "_conv_winograd.pxi"
include "_conv_pixvec.pxi"
