"""The checks and window rule of adaptive pooling (``functional.adaptive_*_pool2d``).

Output cell (i, j) pools rows ``floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1`` and the columns by the
same rule (torch's start/end rule), so windows may differ in size and overlap when H is not a
multiple of Ho. The checks (:func:`adaptive_args`, :func:`adaptive_backward_args`) and the
window rule (:func:`windows`) serve both :mod:`fastconv.functional` and
:mod:`fastconv.reference.adaptive`; this module imports neither, so neither imports the other.

Three routes in functional: (1, 1), global pooling, reduces each plane in one NumPy pass; when Ho
divides H and Wo divides W the windows are a plain pooling grid (kernel = stride = H/Ho), run by
the compiled pooling kernels; otherwise the window sums (or maxima) are taken separably, first
over the column windows of every row, then over the row windows, which is Ho + Wo vectorized
slices instead of Ho * Wo.
"""
import numpy as np

from . import _validation as V

__all__ = ["windows", "adaptive_args", "adaptive_backward_args", "uniform_kernel"]


def windows(size, out):
    """``(starts, ends)`` int arrays of the ``out`` windows torch's rule lays over ``size``."""
    i = np.arange(out)
    return (i * size) // out, ((i + 1) * size + out - 1) // out


def _output_size(output_size, hw):
    """output_size (int, pair, None entries keep the input's size) -> (Ho, Wo)."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise TypeError(f"output_size must be an int or a pair of ints (or None), got "
                            f"{output_size!r}")
        output_size = tuple(hw[k] if s is None else s for k, s in enumerate(output_size))
    return V.pair(output_size, "output_size")


def adaptive_args(x, output_size):
    """Validate ``adaptive_*_pool2d(x, output_size)``: ``(x4, unbatched, (Ho, Wo))``."""
    V.check_array(x, "input")
    x4, unbatched = V.batched(x, "input")
    V.check_nonempty(x4, x, "input")
    return x4, unbatched, _output_size(output_size, x4.shape[2:])


def adaptive_backward_args(grad_output, input_shape):
    """Validate a backward call: ``(grad4, (N, C, H, W), unbatched)``; grad_output must be
    (N, C, Ho, Wo) (3-D when input_shape is)."""
    V.check_array(grad_output, "grad_output")
    shape, unbatched = V._input_shape(input_shape)
    if grad_output.ndim != (3 if unbatched else 4) or grad_output.shape[:-2] != \
            (shape[1:2] if unbatched else shape[:2]):
        raise ValueError(f"expected grad_output of shape {tuple(input_shape[:-2]) + ('Ho', 'Wo')} "
                         f"for input_shape {tuple(input_shape)}, got grad_output of shape "
                         f"{grad_output.shape}")
    grad4 = grad_output[np.newaxis] if unbatched else grad_output
    return grad4, shape, unbatched


def uniform_kernel(hw, out_hw):
    """(kH, kW) when the windows are a plain pooling grid (Ho | H and Wo | W), else None."""
    (h, w), (ho, wo) = hw, out_hw
    return (h // ho, w // wo) if h % ho == 0 and w % wo == 0 else None
