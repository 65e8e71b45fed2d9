"""torch-compatible convolution, pooling and im2col/col2im on NumPy arrays, forward and backward.

Every function validates its arguments (clear ValueError/TypeError naming the argument and
the shapes), picks the algorithm, allocates the outputs and calls the compiled kernels in
:mod:`fastconv._kernels`. :mod:`fastconv.reference` has the same functions in pure NumPy.
"""

# ----------------------------------------------------------------------------------------
# im2col / col2im / conv2d / conv2d_backward
# ----------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------
# max_pool2d / max_pool2d_backward / avg_pool2d / avg_pool2d_backward
# ----------------------------------------------------------------------------------------
