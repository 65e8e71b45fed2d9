"""Refusals of fastconv._validation: each error's type and what its message names."""
import itertools

import numpy as np
import pytest

from fastconv import _validation as V

f32, f64 = np.float32, np.float64


def arr(*shape, dtype=f64):
    return np.zeros(shape, dtype=dtype)


# ---------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, got", [(None, "NoneType"), ("abc", "str"), ([1.0], "list"),
                                        (3.0, "float")])
def test_check_array_refuses_non_arrays(value, got):
    with pytest.raises(TypeError, match=f"weight must be a numpy.ndarray, got {got}"):
        V.check_array(value, "weight")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex128, object,
                                   np.float16])
def test_check_array_refuses_non_float_dtypes(dtype):
    with pytest.raises(TypeError, match=f"input must have dtype float32 or float64, got "
                                        f"{np.dtype(dtype)}"):
        V.check_array(np.zeros(3, dtype=dtype), "input")


@pytest.mark.parametrize("dtype", [f32, f64])
def test_check_array_returns_the_array_itself(dtype):
    a = arr(2, 3, dtype=dtype)[:, ::2]
    assert V.check_array(a, "input") is a


def test_check_index_array():
    with pytest.raises(TypeError, match="indices must have an integer dtype, got float64"):
        V.check_index_array(arr(2), "indices")
    with pytest.raises(TypeError, match="indices must have an integer dtype, got bool"):
        V.check_index_array(np.zeros(2, bool), "indices")
    with pytest.raises(TypeError, match="indices must be a numpy.ndarray, got list"):
        V.check_index_array([1], "indices")
    a = np.zeros(2, np.int32)
    assert V.check_index_array(a, "indices") is a


def test_same_dtype():
    with pytest.raises(TypeError, match="expected input and weight to have the same dtype, "
                                        "got float32 and float64"):
        V.same_dtype(input=arr(1, dtype=f32), weight=arr(1))
    with pytest.raises(TypeError, match="expected input and bias to have the same dtype, "
                                        "got float64 and float32"):
        V.same_dtype(input=arr(1), weight=arr(1), bias=arr(1, dtype=f32))
    V.same_dtype(input=arr(1), weight=arr(1), bias=None)


@pytest.mark.parametrize("value, expected", [(3, (3, 3)), ((2, 5), (2, 5)), ([1, 4], (1, 4)),
                                             (np.int64(2), (2, 2)),
                                             ((np.int32(1), 7), (1, 7))])
def test_pair_accepts(value, expected):
    result = V.pair(value, "stride", 1)
    assert result == expected and all(type(v) is int for v in result)


@pytest.mark.parametrize("value", [True, 1.0, "2", None, (1,), (1, 2, 3), (1.0, 2), (1, False),
                                   np.array(2), {1, 2}])
def test_pair_refuses_types(value):
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
        V.pair(value, "stride", 1)


def test_pair_refuses_small_and_huge_values():
    with pytest.raises(ValueError, match=r"dilation must be at least 1, got \(0, 1\)"):
        V.pair((0, 1), "dilation", 1)
    with pytest.raises(ValueError, match=r"padding must be at least 0, got \(-1, -1\)"):
        V.pair(-1, "padding", 0)
    with pytest.raises(ValueError, match="padding must be at most"):
        V.pair(10**30, "padding", 0)
    assert V.pair(0, "padding", 0) == (0, 0)


def test_batched():
    x = arr(2, 3, 4)
    x4, unbatched = V.batched(x, "input")
    assert unbatched and x4.shape == (1, 2, 3, 4) and np.shares_memory(x4, x)
    y = arr(1, 2, 3, 4)
    assert V.batched(y, "input") == (y, False)
    for shape in [(3, 4), (1, 1, 1, 1, 1)]:
        with pytest.raises(ValueError, match=r"expected 3-D \(C, H, W\) or 4-D \(N, C, H, W\) "
                                             r"input, got input of shape \(" + str(shape[0])):
            V.batched(arr(*shape), "input")


def test_output_size_formulas():
    # Conv2d(k=3, s=2, p=1) on 7 -> 4; dilation 2, k=3 on 10 -> 6
    assert V.conv_output_size(7, 3, 2, 2, 1) == 4
    assert V.conv_output_size(10, 3, 1, 0, 2) == 6
    # MaxPool2d(2, 2) on 5: floor -> 2, ceil -> 3
    assert V.pool_output_size(5, 2, 2, 0, 1, False) == 2
    assert V.pool_output_size(5, 2, 2, 0, 1, True) == 3
    # ceil_mode: k2 s2 p1 on 5 would give 4 windows, the 4th starting at 6 - 1 = 5, past
    # the input: it is dropped
    assert V.pool_output_size(5, 2, 2, 1, 1, True) == 3
    assert V.pool_output_size(6, 2, 2, 1, 1, True) == 4


def test_pool_output_size_and_refusals_match_torch_on_a_grid():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for h, k, s, p, d, ceil in itertools.product(range(1, 8), range(1, 5), range(1, 4),
                                                 range(3), range(1, 4), (False, True)):
        x = torch.arange(float(h * h)).reshape(1, 1, h, h)
        try:
            out, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
            # torch's own output for a window that reads only padding: -inf, bad index
            torch_ok = bool(torch.isfinite(out).all()) and int(idx.max()) < h * h
            torch_shape = tuple(out.shape)
        except RuntimeError:
            torch_ok, torch_shape = False, None
        try:
            shape = V.max_pool2d_args(x.numpy(), k, s, p, d, ceil).out_shape
        except ValueError:
            shape = None
        assert (shape is not None) == torch_ok, (h, k, s, p, d, ceil)
        if torch_ok:
            assert shape == torch_shape
        if d == 1:
            try:
                torch_shape = tuple(F.avg_pool2d(x, k, s, p, ceil).shape)
            except RuntimeError:
                torch_shape = None
            try:
                shape = V.avg_pool2d_args(x.numpy(), k, s, p, ceil).out_shape
            except ValueError:
                shape = None
            assert shape == torch_shape, (h, k, s, p, ceil)


# ---------------------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------------------

def test_conv2d_args_normalizes():
    x, w, b = arr(2, 4, 9, 8, dtype=f32), arr(6, 2, 3, 2, dtype=f32), arr(6, dtype=f32)
    a = V.conv2d_args(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    assert a.x is x and a.weight is w and a.bias is b
    assert a.stride == (2, 1) and a.padding == (1, 1) and a.dilation == (1, 2)
    assert a.groups == 2 and not a.unbatched
    assert a.out_shape == (2, 6, 5, 8)


def test_conv2d_args_same_and_valid_padding():
    x, w = arr(3, 7, 6), arr(5, 3, 4, 3)
    a = V.conv2d_args(x, w, padding="same", dilation=(1, 2))
    # total pad d*(k-1) = (3, 4): top/left get half, the extra row goes to the bottom
    assert a.padding == (1, 2) and a.out_shape == (1, 5, 7, 6) and a.unbatched
    assert a.x.shape == (1, 3, 7, 6)
    a = V.conv2d_args(x, w, padding="valid")
    assert a.padding == (0, 0) and a.out_shape == (1, 5, 4, 4)


def test_conv2d_args_zero_batch():
    assert V.conv2d_args(arr(0, 2, 5, 5), arr(3, 2, 3, 3)).out_shape == (0, 3, 3, 3)


def test_conv2d_refusals():
    x, w = arr(2, 5, 8, 8), arr(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"expected input\[2, 5, 8, 8\] to have 3 channels, "
                                         r"but got 5 channels"):
        V.conv2d_args(x, w)
    with pytest.raises(TypeError, match="input must be a numpy.ndarray, got list"):
        V.conv2d_args([[1.0]], w)
    with pytest.raises(TypeError, match="weight must have dtype float32 or float64, got int64"):
        V.conv2d_args(x, np.zeros((4, 5, 3, 3), np.int64))
    with pytest.raises(TypeError, match="expected input and weight to have the same dtype"):
        V.conv2d_args(x, arr(4, 5, 3, 3, dtype=f32))
    with pytest.raises(TypeError, match="expected input and bias to have the same dtype"):
        V.conv2d_args(x, arr(4, 5, 3, 3), arr(4, dtype=f32))
    with pytest.raises(ValueError, match=r"got input of shape \(5, 8\)"):
        V.conv2d_args(arr(5, 8), w)
    with pytest.raises(ValueError, match=r"expected 4-D weight .* got weight of shape \(4, 5, 3\)"):
        V.conv2d_args(x, arr(4, 5, 3))
    with pytest.raises(ValueError, match=r"expected bias to be 1-D with 4 elements, but got "
                                         r"bias of shape \(3,\)"):
        V.conv2d_args(x, arr(4, 5, 3, 3), arr(3))
    with pytest.raises(ValueError, match="non-positive groups"):
        V.conv2d_args(x, arr(4, 5, 3, 3), groups=0)
    with pytest.raises(TypeError, match="groups must be an int"):
        V.conv2d_args(x, arr(4, 5, 3, 3), groups=1.0)
    with pytest.raises(ValueError, match=r"Given groups=3, expected weight to be divisible by 3"):
        V.conv2d_args(arr(2, 6, 8, 8), arr(4, 2, 3, 3), groups=3)
    with pytest.raises(ValueError, match=r"Given groups=2, weight of size \[4, 2, 3, 3\], "
                                         r"expected input\[2, 5, 8, 8\] to have 4 channels"):
        V.conv2d_args(x, arr(4, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        V.conv2d_args(x, arr(4, 5, 3, 3), stride=0)
    with pytest.raises(ValueError, match="dilation must be at least 1"):
        V.conv2d_args(x, arr(4, 5, 3, 3), dilation=(1, 0))
    with pytest.raises(ValueError, match="padding must be at least 0"):
        V.conv2d_args(x, arr(4, 5, 3, 3), padding=-1)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        V.conv2d_args(x, arr(4, 5, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="invalid padding string 'full'"):
        V.conv2d_args(x, arr(4, 5, 3, 3), padding="full")
    with pytest.raises(ValueError, match="positive kernel size"):
        V.conv2d_args(x, arr(4, 5, 0, 3))


def test_conv2d_output_too_small_names_sizes():
    with pytest.raises(ValueError, match=r"input size \(8, 8\), kernel \(9, 9\), padding 0"):
        V.conv2d_args(arr(1, 2, 8, 8), arr(3, 2, 9, 9))
    with pytest.raises(ValueError, match=r"dilated kernel size \(9 x 5\)"):
        V.conv2d_args(arr(1, 2, 8, 8), arr(3, 2, 3, 3), dilation=(4, 2), padding="valid")


def test_conv2d_absurd_sizes_are_value_errors():
    with pytest.raises(ValueError, match="more than can be addressed"):
        V.conv2d_args(arr(1, 1, 1, 1), arr(1, 1, 1, 1), padding=2**31 - 1)


def test_conv2d_backward_args():
    x, w = arr(2, 4, 6, 6), arr(3, 4, 3, 3)
    a = V.conv2d_backward_args(arr(2, 3, 4, 4), x, w)
    assert a.out_shape == (2, 3, 4, 4) and a.grad_output.shape == (2, 3, 4, 4)
    a = V.conv2d_backward_args(arr(3, 4, 4), x[0], w)
    assert a.unbatched and a.grad_output.shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(2, 3, 4, 4\), got "
                                         r"grad_output of shape \(2, 3, 4, 5\)"):
        V.conv2d_backward_args(arr(2, 3, 4, 5), x, w)
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(3, 4, 4\)"):
        V.conv2d_backward_args(arr(1, 3, 4, 4), x[0], w)
    with pytest.raises(TypeError, match="expected input and grad_output to have the same dtype"):
        V.conv2d_backward_args(arr(2, 3, 4, 4, dtype=f32), x, w)
    with pytest.raises(TypeError, match="grad_output must be a numpy.ndarray, got NoneType"):
        V.conv2d_backward_args(None, x, w)


# ---------------------------------------------------------------------------------------
# unfold / fold
# ---------------------------------------------------------------------------------------

def test_unfold_args():
    a = V.unfold_args(arr(2, 3, 7, 6), (3, 2), stride=(2, 1), padding=1, dilation=1)
    assert a.blocks == (4, 7) and a.out_shape == (2, 18, 28) and not a.unbatched
    a = V.unfold_args(arr(3, 7, 6), 2)
    assert a.unbatched and a.out_shape == (1, 12, 30)
    with pytest.raises(ValueError, match=r"calculated shape of the array of sliding blocks as "
                                         r"\(0, 0\), but its components must be at least one"):
        V.unfold_args(arr(1, 2, 8, 8), 9)
    with pytest.raises(ValueError, match="kernel_size must be at least 1"):
        V.unfold_args(arr(1, 2, 8, 8), 0)
    with pytest.raises(ValueError, match="got input of shape"):
        V.unfold_args(arr(8, 8), 2)


def test_fold_args():
    a = V.fold_args(arr(2, 18, 16), (4, 4), 3, padding=1)
    assert a.out_shape == (2, 2, 4, 4) and a.blocks == (4, 4) and not a.unbatched
    a = V.fold_args(arr(18, 16), (4, 4), 3, padding=1)
    assert a.unbatched and a.cols.shape == (1, 18, 16) and a.out_shape == (1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"Expected size of input's dimension 1 to be divisible "
                                         r"by the product of kernel_size, but got "
                                         r"input.size\(1\)=17"):
        V.fold_args(arr(1, 17, 4), (4, 4), 3)
    with pytest.raises(ValueError, match=r"dimension 0 to be divisible"):
        V.fold_args(arr(17, 4), (4, 4), 3)
    with pytest.raises(ValueError, match=r"calculated number of sliding blocks 4 \* 4 = 16, but "
                                         r"got input.size\(2\)=4"):
        V.fold_args(arr(1, 18, 4), (4, 4), 3, padding=1)
    with pytest.raises(ValueError, match=r"expected 2-D \(C\*kH\*kW, L\) or 3-D"):
        V.fold_args(arr(1, 1, 18, 4), (4, 4), 3)
    with pytest.raises(ValueError, match="at least one"):
        V.fold_args(arr(1, 18, 4), (2, 2), 3)
    with pytest.raises(ValueError, match="output_size must be at least 1"):
        V.fold_args(arr(1, 18, 4), (0, 2), 3)
    big = 2**31 - 1
    with pytest.raises(ValueError, match="col2im output of shape .* more than can be addressed"):
        V.fold_args(arr(1, 2, 1), (big, big), 1, stride=big)


# ---------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------

def test_max_pool2d_args():
    a = V.max_pool2d_args(arr(2, 3, 5, 5), 2, ceil_mode=True)
    assert a.stride == (2, 2) and a.out_shape == (2, 3, 3, 3) and a.ceil_mode is True
    a = V.max_pool2d_args(arr(3, 5, 5), 2, stride=())
    assert a.stride == (2, 2) and a.unbatched and a.out_shape == (1, 3, 2, 2)
    a = V.max_pool2d_args(arr(1, 1, 8, 8), 2, padding=1, dilation=2)
    assert a.out_shape == (1, 1, 4, 4) and a.dilation == (2, 2)


def test_pool_refusals():
    x = arr(1, 2, 8, 8)
    # torch compares padding with kernel_size // 2, whatever the dilation
    with pytest.raises(ValueError, match=r"pad should be at most half of kernel size, but got "
                                         r"padding=\(2, 2\) and kernel_size=\(3, 3\)"):
        V.max_pool2d_args(x, 3, padding=2, dilation=2)
    with pytest.raises(ValueError, match="pad should be at most half"):
        V.avg_pool2d_args(x, 3, padding=2)
    with pytest.raises(ValueError, match=r"calculated output size \(2x0x0\) is too small"):
        V.max_pool2d_args(x, 9)
    with pytest.raises(ValueError, match=r"input size \(2x8x8\)"):
        V.avg_pool2d_args(x, 9)
    with pytest.raises(ValueError, match="kernel_size must be at least 1"):
        V.max_pool2d_args(x, 0)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        V.max_pool2d_args(x, 2, stride=0)
    with pytest.raises(ValueError, match="dilation must be at least 1"):
        V.max_pool2d_args(x, 2, dilation=0)
    with pytest.raises(ValueError, match="padding must be at least 0"):
        V.avg_pool2d_args(x, 2, padding=-1)
    with pytest.raises(ValueError, match="divisor_override must be nonzero"):
        V.avg_pool2d_args(x, 2, divisor_override=0)
    with pytest.raises(TypeError, match="divisor_override must be an int or None, got float"):
        V.avg_pool2d_args(x, 2, divisor_override=2.0)
    with pytest.raises(TypeError, match="input must have dtype float32 or float64, got int64"):
        V.max_pool2d_args(np.zeros((1, 1, 4, 4), np.int64), 2)
    with pytest.raises(ValueError, match=r"got input of shape \(4, 4\)"):
        V.avg_pool2d_args(arr(4, 4), 2)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints"):
        V.max_pool2d_args(x, "2")
    # torch would return -inf with index 6 in a 2x2 plane: the window rows -1 and 2 miss
    with pytest.raises(ValueError, match="the window at output row 0 reads only padding"):
        V.max_pool2d_args(arr(1, 1, 2, 2), (2, 1), stride=1, padding=(1, 0), dilation=(3, 1))
    with pytest.raises(ValueError, match="the window at output column 0 reads only padding"):
        V.max_pool2d_args(arr(1, 1, 3, 2), (1, 2), stride=1, padding=(0, 1), dilation=(1, 3))


def test_avg_pool2d_args():
    a = V.avg_pool2d_args(arr(1, 1, 5, 5), 3, stride=2, padding=1, ceil_mode=True,
                          count_include_pad=False, divisor_override=-3)
    assert a.out_shape == (1, 1, 3, 3) and a.divisor_override == -3
    assert a.count_include_pad is False and a.ceil_mode is True


def test_max_pool2d_backward_args():
    g, idx = arr(2, 3, 2, 2), np.zeros((2, 3, 2, 2), np.int64)
    a = V.max_pool2d_backward_args(g, idx, (2, 3, 4, 4))
    assert a.input_shape == (2, 3, 4, 4) and not a.unbatched and a.indices is idx
    a = V.max_pool2d_backward_args(g[0], idx[0], [3, 4, 4])
    assert a.unbatched and a.input_shape == (1, 3, 4, 4) and a.grad_output.shape == (1, 3, 2, 2)
    assert V.max_pool2d_backward_args(arr(0, 3, 2, 2), np.zeros((0, 3, 2, 2), np.int32),
                                      (0, 3, 4, 4)).input_shape == (0, 3, 4, 4)
    bad = idx.copy()
    bad[1, 2, 1, 0] = 16
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H\*W\) = \[0, 16\) .* "
                                         r"got index 16"):
        V.max_pool2d_backward_args(g, bad, (2, 3, 4, 4))
    bad[1, 2, 1, 0] = -2
    with pytest.raises(ValueError, match="got index -2"):
        V.max_pool2d_backward_args(g, bad, (2, 3, 4, 4))
    with pytest.raises(TypeError, match="indices must have an integer dtype, got float64"):
        V.max_pool2d_backward_args(g, g, (2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"expected indices of the shape of grad_output"):
        V.max_pool2d_backward_args(g, idx[:, :2], (2, 3, 4, 4))
    with pytest.raises(ValueError, match="batch size and channels of input_shape"):
        V.max_pool2d_backward_args(g, idx, (2, 4, 4, 4))
    with pytest.raises(ValueError, match="with 3 dimensions like input_shape"):
        V.max_pool2d_backward_args(g, idx, (3, 4, 4))
    with pytest.raises(ValueError, match="expected input_shape of length 3"):
        V.max_pool2d_backward_args(g, idx, (4, 4))
    with pytest.raises(ValueError, match="positive C, H, W"):
        V.max_pool2d_backward_args(g, idx, (2, 3, 0, 4))
    with pytest.raises(TypeError, match="input_shape must be a sequence of 3 or 4 ints"):
        V.max_pool2d_backward_args(g, idx, 16)
    with pytest.raises(TypeError, match="input_shape must be a sequence of ints, got float"):
        V.max_pool2d_backward_args(g, idx, (2, 3, 4.0, 4))
    with pytest.raises(ValueError, match="more than can be addressed"):
        V.max_pool2d_backward_args(g, idx, (2, 3, 2**31 - 1, 2**31 - 1))


def test_avg_pool2d_backward_args():
    a = V.avg_pool2d_backward_args(arr(2, 3, 3, 3), (2, 3, 5, 5), 2, ceil_mode=True,
                                   count_include_pad=False, divisor_override=5)
    assert a.input_shape == (2, 3, 5, 5) and a.stride == (2, 2) and a.divisor_override == 5
    a = V.avg_pool2d_backward_args(arr(3, 2, 2), (3, 5, 5), 2)
    assert a.unbatched and a.grad_output.shape == (1, 3, 2, 2)
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(2, 3, 2, 2\), got "
                                         r"grad_output of shape \(2, 3, 3, 3\)"):
        V.avg_pool2d_backward_args(arr(2, 3, 3, 3), (2, 3, 5, 5), 2)
    with pytest.raises(ValueError, match="pad should be at most half"):
        V.avg_pool2d_backward_args(arr(2, 3, 3, 3), (2, 3, 5, 5), 2, padding=2)
    with pytest.raises(TypeError, match="grad_output must have dtype float32 or float64"):
        V.avg_pool2d_backward_args(np.zeros((2, 3, 2, 2), int), (2, 3, 5, 5), 2)
