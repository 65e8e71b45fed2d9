"""torch-compatible convolution, pooling and im2col/col2im on NumPy arrays, forward and backward.

Every function validates its arguments (clear ValueError/TypeError naming the argument and
the shapes), allocates the outputs and calls the compiled kernels in :mod:`fastconv._kernels`.
A convolution is validate -> plan -> run: :mod:`fastconv._conv_plan` chooses the route and
its blocks from the shapes and the loaded build, and the functions here only prepare the
buffers that the chosen kernel reads. :mod:`fastconv.reference` has the same functions in
pure NumPy.
"""

# ----------------------------------------------------------------------------------------
# im2col / col2im / conv2d / conv2d_backward
# ----------------------------------------------------------------------------------------

import functools
from typing import NamedTuple

import numpy as np

from . import _conv_plan, _validation, _workspace
from ._cache import BoundedCache
from ._conv_plan import Problem, Route
from ._kernels import _activation, _conv, _gemm, _im2col, _pool
from ._threads import blas_single_threaded, get_num_threads
from . import _adaptive_pool
from ._softmax import (cross_entropy, log_softmax, log_softmax_backward, nll_loss,  # noqa: F401
                       softmax, softmax_backward)

# The fully connected products' outputs are cut into blocks of _MATMUL_BLOCK_ROWS rows, the
# last one zero-padded: every BLAS call then has one shape. BLAS rounds differently for
# different sub-matrix shapes (OpenBLAS's small-matrix kernels), so a cut that moved with the
# thread count or with the number of rows (a rank's shard of a batch) would move the bits.
# 8 rows: OpenBLAS's small-matrix kernel takes LeNet's blocks (8x400x120: 5.6 us, where
# 32x400x120 took 30), which made batch 256 faster per row too and batch 1 pads 7 rows,
# not 31 (figures in benchmarks/README.md).
_MATMUL_BLOCK_ROWS = 8

def _contiguous(a):
    """``a`` if C-contiguous and aligned, else such a copy: the kernels read elements through
    typed C pointers, and a misaligned one is undefined behaviour (UBSan reports it)."""
    # flags.carray (C-contiguous, aligned, writeable) first: np.require costs ~2 us a call,
    # 18 calls of a batch-1 LeNet forward
    return a if a.flags.carray else np.require(a, requirements="CA")


# A fused kernel's specialization by dtype: kernel[_FUSED[dtype]] is a dict lookup, where
# calling the fused function inspects its arguments' buffers to choose one (~0.4 us of
# every call; a batch-1 LeNet forward makes 11).
_FUSED = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _pack_weight(w, groups, block, taps=None):
    """w (K, Cg, kh, kw) as (groups, ceil(K/groups/block), Cg*kh*kw, block): each block of
    output channels tap by tap, zero past the end of a group. taps: only these taps
    (indices in the (c, i, j) order), in this order."""
    k, cg, kh, kw = w.shape
    kg = k // groups
    nkb = -(-kg // block)
    by_tap = w.reshape(groups, kg, cg * kh * kw)
    if taps is not None:
        by_tap = by_tap[:, :, taps]
    wpack = np.zeros((groups, nkb * block, by_tap.shape[2]), dtype=w.dtype)
    wpack[:, :kg] = by_tap
    return np.ascontiguousarray(wpack.reshape(groups, nkb, block, -1).transpose(0, 1, 3, 2))


def _phase_split_buffer(p, columns, split=True):
    """(hp, wp, wq, items) of pad_image's buffer for one image of problem p: hp rows (all
    that the output rows read), wp columns (what ``columns`` output columns read), wq of
    them per column phase, and its size in items; with split False, the buffer not split
    by phase (wq = wp: the channel-vector block's, see kvec_blocks)."""
    _, _, kh, kw = p.weight_shape
    (sh, sw), (dh, dw) = p.stride, p.dilation
    sw = sw if split else 1
    hp = (p.out_shape[2] - 1) * sh + (kh - 1) * dh + 1
    wp = (columns - 1) * p.stride[1] + (kw - 1) * dw + 1
    wq = -(-wp // sw)
    return hp, wp, wq, p.x_shape[1] * sw * hp * wq
@functools.lru_cache(maxsize=256)
def _phase_split_taps(weight_shape, stride, dilation, hp, wq):
    """Offset of each kernel tap (c, i, j), in the weight's order, in pad_image's
    phase-split (C, sw, hp, wq) buffer: tap column j*dw is column phase (j*dw) % sw,
    (j*dw) // sw columns in. Cached (read-only): a layer asks for the same every call."""
    _, cg, kh, kw = weight_shape
    (_, sw), (dh, dw) = stride, dilation
    cols = np.arange(kw) * dw
    taps = ((np.arange(cg)[:, None, None] * sw + cols % sw) * hp * wq
            + (np.arange(kh) * dh * wq)[None, :, None] + (cols // sw)[None, None, :])
    return _read_only(taps.reshape(-1).astype(np.intp))


@functools.lru_cache(maxsize=256)
def _row_tap_runs(weight_shape, stride, padding, dilation, h, ho, skip_padding_rows):
    """(taps, row_taps) for conv2d_direct_kvec: the indices of the taps, in the weight's
    (c, i, j) order, in runs (None where that is every tap in order), and per output row
    the (start, length) of its run. With skip_padding_rows (row blocks only: raster blocks
    span rows), a row's run leaves out the kernel rows that fall on padding (with 1 row of
    padding, a 3x3 layer's first and last output rows skip a third of their taps: 2.4% of
    the work on 28 rows); else every row reads every tap. Cached (read-only)."""
    _, cg, kh, kw = weight_shape
    (sh, _), (ph, _), (dh, _) = stride, padding, dilation
    every_row = np.arange(kh)
    runs, row_taps, starts = [], np.empty((ho, 2), dtype=np.intp), {}
    for oh in range(ho):
        rows = every_row
        if skip_padding_rows:
            y = oh * sh - ph + every_row * dh
            rows = every_row[(y >= 0) & (y < h)]
        key = tuple(rows)
        if key not in starts:
            starts[key] = sum(map(len, runs))
            runs.append(((np.arange(cg)[:, None, None] * kh + rows[None, :, None]) * kw
                         + np.arange(kw)[None, None, :]).reshape(-1))
        row_taps[oh] = starts[key], cg * len(rows) * kw
    taps = np.concatenate(runs)
    if np.array_equal(taps, np.arange(cg * kh * kw)):
        taps = None
    return taps if taps is None else _read_only(taps), _read_only(row_taps)


@functools.lru_cache(maxsize=256)
def _raster_offsets(ho, wo, row_step, column_step, pixels):
    """Offset of each output pixel (raster order) in the padded buffer, oh*row_step +
    ow*column_step, then 0 up to whole blocks of ``pixels``. Cached (read-only)."""
    pix = np.zeros(-(-ho * wo // pixels) * pixels, dtype=np.intp)
    pix[:ho * wo] = (np.arange(ho)[:, None] * row_step
                     + np.arange(wo) * column_step).reshape(-1)
    return _read_only(pix)


def _read_only(a):
    a.flags.writeable = False
    return a




# -- running a plan -------------------------------------------------------------------------

def _run_forward(plan, p, x4, w, b, out4, nt, add=None):
    """Compute ``out4`` (N, K, Ho, Wo) = conv of ``x4`` with ``w`` (bias ``b``, empty for none)
    by ``plan`` (a :class:`fastconv._conv_plan.ConvPlan` of problem ``p``) on ``nt`` threads;
    plus ``add`` (an array like out4) when given: the direct kernels add it image by image
    while the output is in cache, the others after."""
    # the direct kernels share out images: no more threads than images (a team of two for
    # one image costs its wake-up, ~5 us, and computes nothing more)
    if plan.route is Route.DIRECT_KVEC:
        _run_direct_kvec(plan.block, p, x4, w, b, out4, min(nt, p.x_shape[0]), add)
        return
    if plan.route is Route.DIRECT:
        _run_direct(plan.block, p, x4, w, b, out4, min(nt, p.x_shape[0]), add)
        return
    if plan.route is Route.WINOGRAD:
        _run_winograd(plan.block, p, x4, w, b, out4, nt)
    else:
        images, rows, stride_items = plan.block
        (sh, sw), (ph, pw), (dh, dw) = p.stride, p.padding, p.dilation
        work = _workspace.scratch(nt * stride_items, w.dtype)
        with blas_single_threaded():
            _conv.conv2d_gemm(x4, w, b, out4, work, stride_items, images, rows, sh, sw, ph, pw,
                              dh, dw, p.groups, nt)
    if add is not None:
        np.add(out4, add, out=out4)


# Operands of the direct kernels by (maker, block, problem, weight identity), each with a
# copy of the weight's bytes: packing took ~4 us of a batch-1 LeNet layer whose kernel takes
# about as long, for the same weight every call in eval. A weight changed in place (an
# optimizer step) no longer matches its bytes and is packed again; so is any other array
# that takes a freed one's id. Weights up to _MOST_CACHED_WEIGHT bytes, _MOST_OPERANDS
# entries, then it starts over. The entries are only read, so threads may share them.
_MOST_OPERANDS = 64
_operand_cache = BoundedCache(_MOST_OPERANDS)
_MOST_CACHED_WEIGHT = 1 << 18


def _operands(make, block, p, w):
    """``make(block, p, w)``, from _operand_cache when ``w`` holds the bytes it had then."""
    if w.nbytes > _MOST_CACHED_WEIGHT:
        return make(block, p, w)
    key = (make, block, p, id(w))
    data = w.tobytes()
    hit = _operand_cache.get(key)
    if hit is not None and hit[0] == data:
        return hit[1]
    return _operand_cache.put(key, (data, make(block, p, w)))[1]


def _direct_operands(block, p, w):
    """(wpack, hp, wp, stride_items) of conv2d_direct for problem p: the weight packed in
    blocks of the kernel's output channels, the padded, phase-split image's rows and
    columns, and its scratch per thread in items."""
    wo = p.out_shape[3]
    hp, wp, _, image_items = _phase_split_buffer(p, -(-wo // block.columns) * block.columns)
    return (_pack_weight(w, p.groups, block.channels).reshape(-1), hp, wp,
            _workspace.round_up(image_items, w.dtype))


def _run_direct(block, p, x4, w, b, out4, nt, add=None):
    """conv2d_direct: the weight packed in blocks of the kernel's output channels, and
    scratch for one padded, phase-split image per thread (``add`` as _run_forward)."""
    _, _, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = p.stride, p.padding, p.dilation
    wpack, hp, wp, stride_items = _operands(_direct_operands, block, p, w)
    work = _workspace.scratch(nt * stride_items, w.dtype)
    _conv.conv2d_direct[_FUSED[w.dtype]](x4, wpack, b, out4, work, stride_items, kh, kw, sh, sw,
                                         ph, pw, dh, dw, hp, wp, p.groups, block.wide, block.six,
                                         nt, add)


class _KvecOperands(NamedTuple):
    """conv2d_direct_kvec's operands for one problem and weight (see _kvec_operands)."""
    wpack: np.ndarray
    taps: np.ndarray
    row_taps: np.ndarray
    pix: np.ndarray
    run: int
    hp: int
    wp: int
    stride_items: int


def _kvec_operands(block, p, w):
    """conv2d_direct_kvec's operands: the weight packed in blocks of kv vectors of output
    channels, the taps' and pixels' offsets in the padded image (not split by phase), its
    rows and columns and its scratch per thread; None where every window lies in the zero
    padding."""
    ho, wo = p.out_shape[2:]
    kv, pixels, by_rows = block
    # row blocks read whole blocks of columns
    hp, wp, wq, image_items = _phase_split_buffer(
        p, -(-wo // pixels) * pixels if by_rows else wo, split=False)
    h, w_ = p.x_shape[2:]
    if p.padding == (0, 0) and hp <= h and wp <= w_:
        # no padding and the windows inside the image: read it where it lies (a strided 1x1
        # layer too), its own rows and columns the buffer's
        hp, wp, wq, image_items = h, w_, w_, p.x_shape[1] * h * w_
    lanes = _conv_plan.build_support(w.itemsize).kvec_lanes
    # an inf or NaN weight times the padding's zeros is NaN, as in torch: no skipping
    skip = by_rows and bool(np.isfinite(w).all())
    tap_index, row_taps = _row_tap_runs(w.shape, p.stride, p.padding, p.dilation, p.x_shape[2],
                                        ho, skip)
    if tap_index is not None and tap_index.size == 0:
        return None
    taps = _phase_split_taps(w.shape, (p.stride[0], 1), p.dilation, hp, wq)
    if tap_index is not None:
        taps = taps[tap_index]
    wpack = _pack_weight(w, p.groups, kv * lanes, tap_index)
    pix = _raster_offsets(ho, wo, p.stride[0] * wq, p.stride[1], pixels)
    run = 3 if _conv_plan.kvec_reads_threes(p) else 1
    return _KvecOperands(wpack.reshape(-1), taps, row_taps, pix, run, hp, wp,
                         _workspace.round_up(image_items, w.dtype))


def _run_direct_kvec(block, p, x4, w, b, out4, nt, add=None):
    """conv2d_direct_kvec on its operands (_kvec_operands), scratch for one image per
    thread (``add`` as _run_forward)."""
    ops = _operands(_kvec_operands, block, p, w)
    if ops is None:
        # every window lies in the zero padding: each output is 0 + its bias, as the
        # kernel would sum it (and no empty tap list goes to the kernel)
        out4[...] = 0
        if b.size:
            out4 += b[:, None, None]
        if add is not None:
            out4 += add
        return
    (sh, sw), (ph, pw) = p.stride, p.padding
    work = _workspace.scratch(nt * ops.stride_items, w.dtype)
    _conv.conv2d_direct_kvec[_FUSED[w.dtype]](
        x4, ops.wpack, b, out4, work, ops.stride_items, ops.taps, ops.row_taps, ops.pix, ops.run,
        sh, sw, ph, pw, ops.hp, ops.wp, p.groups, block.kv, block.pixels, block.by_rows, nt, add)


def _winograd_operands(block, p, w, nt):
    """(upack, tap_off, stride_items) of conv2d_winograd: the transformed weight in blocks
    of output channels (zero past K, computed on nt threads), the channels' offsets in V,
    and the scratch per thread in items."""
    k, c = w.shape[:2]
    ho, wo = p.out_shape[2:]
    th, tw = -(-ho // 2), -(-wo // 2)
    stride_items = _workspace.round_up(
        c * (2 * th + 2) * (2 * tw + 2) + 16 * (c + k) * block.tile_block, w.dtype)
    kvl = block.kv * _conv_plan.build_support(w.itemsize).kvec_lanes
    upack = (np.zeros if k % kvl else np.empty)(16 * -(-k // kvl) * c * kvl, dtype=w.dtype)
    _conv.winograd_weight(w, upack, kvl, nt)
    return upack, np.arange(c, dtype=np.intp) * block.tile_block, stride_items


def _run_winograd(block, p, x4, w, b, out4, nt):
    """conv2d_winograd, then the images whose outputs are not all finite redone by direct
    convolution (block.redo), so that inf and NaN reach the outputs they reach in torch."""
    n = p.out_shape[0]
    kv, pixels, tile_block, redo_plan = block
    upack, tap_off, stride_items = _winograd_operands(block, p, w, nt)
    work = _workspace.scratch(nt * stride_items, w.dtype)
    bad = np.empty(n, dtype=np.uint8)
    _conv.conv2d_winograd(x4, upack, b, out4, bad, work, stride_items, tap_off,
                          p.padding[0], p.padding[1], tile_block, kv, pixels, nt)
    bad = np.flatnonzero(bad)
    if bad.size:
        x_bad = x4[bad]  # a contiguous copy
        redo = np.empty((bad.size,) + out4.shape[1:], dtype=w.dtype)
        _run_forward(redo_plan, p._replace(x_shape=x_bad.shape, out_shape=redo.shape), x_bad, w,
                     b, redo, nt)
        out4[bad] = redo


def _run_weight_grad_kvec(plan, args, grad_weight, nt):
    """grad_weight by conv2d_weight_grad_kvec (see _conv_plan.use_kvec_weight_grad)."""
    p = plan.problem
    x, grad_output = _contiguous(args.x), _contiguous(args.grad_output)
    if plan.as_rows:
        x, grad_output = x.reshape(p.x_shape), grad_output.reshape(p.out_shape)
    k, cg, kh, kw = p.weight_shape
    groups = p.groups
    kg = k // groups
    n, _, ho, wo = p.out_shape
    (sh, sw), (ph, pw) = p.stride, p.padding
    kvl = plan.kv * _conv_plan.build_support(p.itemsize).kvec_lanes
    ntaps = p.taps
    hp, wp, wq, image_items = _phase_split_buffer(p, wo)
    dtype = args.x.dtype
    # per thread: one image's phase-split input and its transposed grad_output
    stride_items = _workspace.round_up(image_items + ho * wo * kvl, dtype)
    nkb = -(-kg // kvl)
    slot = groups * nkb * ntaps * kvl
    work = _workspace.scratch(nt * stride_items + plan.n_chunks * slot, dtype)
    sums = np.empty(slot, dtype=dtype)
    _conv.conv2d_weight_grad_kvec(
        grad_output, x, sums, work[:nt * stride_items], stride_items, work[nt * stride_items:],
        plan.chunk, _phase_split_taps(p.weight_shape, p.stride, p.dilation, hp, wq),
        sh, sw, ph, pw, hp, wp, groups, plan.kv, plan.taps_per_block, plan.strip_rows, nt)
    by_channel = sums.reshape(groups, nkb, ntaps, kvl).transpose(0, 1, 3, 2)
    grad_weight[...] = by_channel.reshape(groups, nkb * kvl, ntaps)[:, :kg].reshape(
        grad_weight.shape)


def _run_weight_grad_pixvec(plan, args, grad_weight, nt):
    """grad_weight by conv2d_weight_grad_pixvec (see _conv_plan.use_pixvec_weight_grad)."""
    k, cg, kh, kw = args.weight.shape
    n, c = args.x.shape[:2]
    ho, wo = args.out_shape[2:]
    (ph, pw), (dh, dw) = args.padding, args.dilation
    hp, wp = ho + (kh - 1) * dh, wo + (kw - 1) * dw
    dtype = args.x.dtype
    stride_items = _workspace.round_up(c * hp * wp, dtype)
    work = _workspace.scratch(nt * stride_items + plan.n_chunks * args.weight.size, dtype)
    _conv.conv2d_weight_grad_pixvec(
        _contiguous(args.grad_output), _contiguous(args.x), grad_weight.reshape(-1),
        work[:nt * stride_items], stride_items, work[nt * stride_items:], plan.chunk, kh, kw,
        ph, pw, dh, dw, hp, wp, nt)


def _run_transposed_input_grad(plan, p, args, grad_input, nt, add=None):
    """grad_input (+ add) as the convolution of grad_output with the flipped, transposed
    weight, by ``plan`` (see _conv_plan.transposed_problem)."""
    k, cg, kh, kw = args.weight.shape
    groups, kg = args.groups, k // args.groups
    flipped = args.weight.reshape(groups, kg, cg, kh, kw)[:, :, :, ::-1, ::-1]
    weight_t = np.ascontiguousarray(flipped.transpose(0, 2, 1, 3, 4)).reshape(
        groups * cg, kg, kh, kw)
    _run_forward(plan, _conv_plan.transposed_problem(p), _contiguous(args.grad_output), weight_t,
                 np.empty(0, args.x.dtype), grad_input, nt, add)


def _run_gemm_backward(plan, args, grad_input, grad_weight, grad_bias, nt):
    """The GEMM backward kernel for what the plan gives it: grad_input by col2im, grad_weight
    and grad_bias summed over chunks of whole tiles."""
    dtype = args.x.dtype
    images, rows, stride_items = plan.gemm
    slot = args.weight.size + args.weight.shape[0]
    work = _workspace.scratch(nt * stride_items + plan.gemm_n_chunks * slot, dtype)
    empty = np.empty(0, dtype=dtype)
    (sh, sw), (ph, pw), (dh, dw) = args.stride, args.padding, args.dilation
    with blas_single_threaded():
        _conv.conv2d_backward(
            _contiguous(args.grad_output), _contiguous(args.x), _contiguous(args.weight),
            grad_input if plan.gemm_input else np.empty((0, 0, 0, 0), dtype=dtype),
            grad_weight.reshape(-1) if plan.gemm_weight else empty,
            grad_bias if plan.gemm_bias else empty,
            work[:nt * stride_items], stride_items, images, rows,
            work[nt * stride_items:], plan.gemm_chunk, sh, sw, ph, pw, dh, dw, args.groups,
            plan.gemm_input, plan.gemm_weight, plan.gemm_bias, nt)


# -- the public functions -------------------------------------------------------------------

def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto", out=None):
    """2-D convolution (cross-correlation), like ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W)
        Input, float32 or float64.
    weight : ndarray, (K, C / groups, kH, kW)
        Filters, of x's dtype.
    bias : ndarray, (K,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), 'valid' or 'same'
        Zero padding on both sides; 'same' keeps H and W (stride 1 only), putting any odd
        extra row/column at the bottom/right like torch.
    groups : int
        C and K are split into ``groups`` independent convolutions (``groups == C``:
        depthwise).
    algorithm : {'auto', 'gemm', 'direct', 'winograd'}
        'gemm': im2col of a cache-sized tile of images or rows, then one GEMM per group;
        'direct': register-blocked direct convolution, no column buffer; 'winograd':
        Winograd's F(2x2, 3x3), 16 products per 2x2 output tile instead of 36 (3x3 kernels
        at stride 1, no dilation or groups; rounding differs from direct convolution's by
        about as much as GEMM's does). 'auto' lets :mod:`fastconv._conv_plan` pick from the
        shapes and the loaded build: Winograd for wide 3x3 stride-1 layers, direct for
        layers of few taps (as LeNet's), depthwise 5x5 and wide pointwise layers, GEMM for
        the rest and always in the portable build.
    out : ndarray, (N, K, Ho, Wo) or (K, Ho, Wo), optional
        C-contiguous array of x's dtype that receives the result (saves an allocation).

    Returns
    -------
    ndarray, (N, K, Ho, Wo), or (K, Ho, Wo) for a 3-D input
        ``Ho = (H + pad_top + pad_bottom - dilation_h * (kH - 1) - 1) // stride_h + 1``,
        likewise Wo.

    Notes
    -----
    NaN and +-inf propagate as in torch: every product of a weight and an input or padding
    element is summed, so a NaN reaches every output whose window holds it, and an infinite
    weight gives NaN where its window covers a zero (padding included, inf * 0). Winograd
    mixes a tile's inputs, so images whose outputs are not all finite are redone by
    direct convolution.
    """
    problem, out_shape, unbatched = _conv2d_geometry(x, weight, bias, stride, padding,
                                                     dilation, groups)
    if algorithm not in _conv_plan.ALGORITHMS:
        raise ValueError("algorithm must be 'auto', 'gemm', 'direct' or 'winograd', got "
                         f"{algorithm!r}")
    if algorithm == "winograd":  # refused before out is checked, as any bad argument
        _conv_plan.plan_conv2d(problem, algorithm)
    dtype = x.dtype
    shape = out_shape[1:] if unbatched else out_shape
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != shape \
            or not out.flags.c_contiguous or not out.flags.writeable or not out.flags.aligned:
        raise ValueError(
            f"out must be a writeable C-contiguous {dtype} array of shape {shape} (aligned), got "
            + (f"{out.dtype} array of shape {out.shape}"
               + ("" if out.flags.aligned else ", unaligned") if isinstance(out, np.ndarray)
               else type(out).__name__))
    elif any(np.may_share_memory(out, a) for a in (x, weight, bias) if a is not None):
        raise ValueError("out must not share memory with input, weight or bias: the kernel "
                         "would read them while it writes out")
    if out_shape[0] == 0:
        return out
    plan = _conv_plan.cached_plan_conv2d(problem, algorithm)
    b = _contiguous(bias) if bias is not None else np.empty(0, dtype=dtype)
    _run_forward(plan, problem, _contiguous(x[np.newaxis] if unbatched else x),
                 _contiguous(weight), b, out.reshape(out_shape), get_num_threads())
    return out


# Validated arguments by what validation reads of them: each array's exact type, shape and
# dtype, each hyperparameter's exact value and type (2.0 == 2 == True hash alike, and
# validation refuses some of them), so a layer's repeat call skips its checks (~4 us of a
# batch-1 conv layer, ~2 of a pooling one). A call with other types (array subclasses,
# NumPy integers, lists) is validated each time. Refusals are never stored.
_validated_cache = BoundedCache(256)


def _plain(v):
    """``v`` as a key that only an argument validation cannot tell from it matches, or
    None."""
    t = type(v)
    if t is np.ndarray:
        return (v.shape, v.dtype)
    if t is tuple:
        return v if len(v) == 2 and type(v[0]) is int and type(v[1]) is int else None
    return (t, v) if t is int or t is str or t is bool or v is None else None


def _call_key(what, args):
    """(what, plain args...) or None when one of ``args`` has no plain key."""
    key = (what,) + tuple(map(_plain, args))
    return None if None in key else key


def _conv2d_geometry(*args):
    """(Problem, out_shape, unbatched) of conv2d's (x, weight, bias, stride, padding,
    dilation, groups), validated (raises as _validation.conv2d_args on bad ones)."""
    key = _call_key(_conv2d_geometry, args)
    hit = None if key is None else _validated_cache.get(key)
    if hit is not None:
        return hit
    a = _validation.conv2d_args(*args)
    geometry = (Problem.of(a), a.out_shape, a.unbatched)
    return geometry if key is None else _validated_cache.put(key, geometry)


def _pool_args(validate, x, *params):
    """(x4, a): ``a = validate(x, *params)`` (max_pool2d_args, avg_pool2d_args) with its x
    left out (None where it came from _validated_cache), and x as (N, C, H, W)."""
    key = _call_key(validate, (x,) + params)
    a = None if key is None else _validated_cache.get(key)
    if a is None:
        a = validate(x, *params)
        if key is not None:
            _validated_cache.put(key, a._replace(x=None))
    return x[np.newaxis] if a.unbatched else x, a


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    needs_input_grad=True, needs_weight_grad=True, needs_bias_grad=True,
                    grad_input_add=None):
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : ndarray, (N, K, Ho, Wo) or (K, Ho, Wo)
        Gradient of the loss with respect to conv2d's output.
    x, weight, stride, padding, dilation, groups
        The forward call's arguments (x: (N, C, H, W) or (C, H, W)).
    needs_input_grad, needs_weight_grad, needs_bias_grad : bool
        Which gradients to compute; the others come back as None and cost nothing.
    grad_input_add : ndarray of x's shape and dtype, or None, keyword only
        Added to grad_input (the other gradient of a residual block's input): the
        result is bitwise ``grad_input + grad_input_add``, the direct kernels adding each
        image while it is in cache instead of in a pass of its own.

    Returns
    -------
    grad_input : ndarray, (N, C, H, W) (3-D for a 3-D x), or None
    grad_weight : ndarray, (K, C / groups, kH, kW), or None
    grad_bias : ndarray, (K,), or None

    Notes
    -----
    grad_weight and grad_bias are summed over fixed-size chunks of images, and the chunk
    sums are added in order: the result is bitwise the same across runs and thread counts.
    """
    args = _validation.conv2d_backward_args(grad_output, x, weight, stride, padding,
                                            dilation, groups, grad_input_add, needs_input_grad)
    add = None
    if grad_input_add is not None:
        add = _contiguous(grad_input_add[np.newaxis] if args.unbatched else grad_input_add)
    dtype = args.x.dtype
    problem = Problem.of(args)
    plan = _conv_plan.plan_conv2d_backward(
        problem, needs_input_grad, needs_weight_grad, needs_bias_grad,
        weight_is_finite=lambda: bool(np.isfinite(args.weight).all()))
    grad_input = np.empty(args.x.shape, dtype=dtype) if needs_input_grad else None
    grad_weight = np.empty(args.weight.shape, dtype=dtype) if needs_weight_grad else None
    grad_bias = np.empty(args.weight.shape[0], dtype=dtype) if needs_bias_grad else None
    if args.x.shape[0] == 0:
        # no images: the weight and bias gradients are empty sums
        for g in (grad_weight, grad_bias):
            if g is not None:
                g[...] = 0
    nt = get_num_threads()
    if plan.input_plan is not None:
        _run_transposed_input_grad(plan.input_plan, problem, args, grad_input, nt, add)
    # GEMM before the weight-gradient kernels: a column matrix too large to allocate is
    # refused (MemoryError) before they have spent their time
    if plan.gemm is not None:
        _run_gemm_backward(plan, args, grad_input, grad_weight, grad_bias, nt)
        if add is not None and plan.gemm_input:
            np.add(grad_input, add, out=grad_input)
    if plan.weight_route is Route.WEIGHT_GRAD_KVEC:
        _run_weight_grad_kvec(plan.weight_plan, args, grad_weight, nt)
    elif plan.weight_route is Route.WEIGHT_GRAD_PIXVEC:
        _run_weight_grad_pixvec(plan.weight_plan, args, grad_weight, nt)
    if grad_input is not None and args.unbatched:
        grad_input = grad_input[0]
    return grad_input, grad_weight, grad_bias


def _matmul(a, b, trans_a=False, trans_b=False, bias=None):
    """op(a) @ op(b) (op: transpose when asked) of 2-D float arrays of one dtype, plus
    ``bias`` (n,) of that dtype on every row when given, in blocks of _MATMUL_BLOCK_ROWS
    output rows shared out over fastconv's threads, one BLAS call each: the fully connected
    layers' products, each row the same bits whatever the thread count and the number of
    rows. NumPy's matmul would run BLAS's own thread pool beside OpenMP's (the two fight
    over the cores), or run on one thread under blas_single_threaded (figures in
    docs/tuning.md). The bias is added to each block as it comes out of BLAS (the bits of
    adding it afterwards, without another pass over the output).
    """
    a, b = _contiguous(a), _contiguous(b)
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    n = b.shape[0] if trans_b else b.shape[1]
    _conv_plan.check_blas_dims(*a.shape, *b.shape)
    block = _MATMUL_BLOCK_ROWS
    out = np.empty((m, n), dtype=a.dtype)
    # the last rows' zero-padded block and its product
    tail = _workspace.scratch(block * (k + n) or 1, a.dtype) if m % block else None
    with blas_single_threaded():
        _gemm.matmul[_FUSED[a.dtype]](a, b, out, trans_a, trans_b, block,
                     None if bias is None else _contiguous(bias), tail,
                     min(get_num_threads(), -(-m // block)))
    return out


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Extract sliding blocks into columns, like ``torch.nn.functional.unfold``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W)
    kernel_size, stride, padding, dilation : int or (int, int)
        padding is symmetric zero padding.

    Returns
    -------
    ndarray, (N, C * kH * kW, L), or (C * kH * kW, L) for a 3-D input
        Row ``(c * kH + i) * kW + j`` holds kernel tap (i, j) of channel c for every block;
        ``L = Lh * Lw`` blocks,
        ``Lh = (H + 2 * pad_h - dilation_h * (kH - 1) - 1) // stride_h + 1``, likewise Lw.
    """
    args = _validation.unfold_args(x, kernel_size, stride, padding, dilation)
    cols = np.empty(args.out_shape, dtype=args.x.dtype)
    if args.out_shape[0]:
        _im2col.im2col(_contiguous(args.x), cols, *args.kernel_size, *args.stride,
                       *args.padding, *args.dilation, *args.blocks, get_num_threads())
    return _validation.unbatch(cols, args.unbatched)


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """Sum columns back into images, like ``torch.nn.functional.fold`` (the adjoint of
    :func:`im2col`: overlapping blocks add up).

    Parameters
    ----------
    cols : ndarray, (N, C * kH * kW, L) or (C * kH * kW, L)
    output_size : int or (int, int)
        (H, W) of the image.
    kernel_size, stride, padding, dilation : int or (int, int)
        As given to :func:`im2col`; L must equal its number of blocks.

    Returns
    -------
    ndarray, (N, C, H, W), or (C, H, W) for a 2-D cols
    """
    args = _validation.fold_args(cols, output_size, kernel_size, stride, padding, dilation)
    x = np.empty(args.out_shape, dtype=args.cols.dtype)
    if args.out_shape[0]:
        _im2col.col2im(_contiguous(args.cols), x, *args.kernel_size, *args.stride,
                       *args.padding, *args.dilation, *args.blocks, get_num_threads())
    return _validation.unbatch(x, args.unbatched)


# ----------------------------------------------------------------------------------------
# max_pool2d / max_pool2d_backward / avg_pool2d / avg_pool2d_backward
# ----------------------------------------------------------------------------------------


def _planes(a4):
    """(N, C, H, W) array -> C-contiguous (N*C, H, W): the layout the pool kernels take."""
    n, c, h, w = a4.shape
    return _contiguous(a4).reshape(n * c, h, w)


def _pool_forward(kernel, x4, a, *args, indices=None):
    """``kernel(planes, out, [indices,] *args, num_threads)``, a forward of _pool, on the
    validated arguments ``a`` of x4: as (N*C, H, W) planes, into a new output and, for max
    pooling (``indices`` True or False), a new int64 argmax array or None. Returns them
    unbatched as x was."""
    n, c, ho, wo = a.out_shape
    planes = (n * c, ho, wo)
    out = np.empty(planes, x4.dtype)
    kernel = kernel[_FUSED[x4.dtype]]
    if indices is None:  # average pooling
        kernel(_planes(x4), out, *args, get_num_threads())
        results = (out,)
    else:  # max pooling's argmax slot
        ind = np.empty(planes, np.int64) if indices else None
        kernel(_planes(x4), out, ind, *args, get_num_threads())
        results = (out, ind)
    shape = a.out_shape[1:] if a.unbatched else a.out_shape
    return tuple(r if r is None else r.reshape(shape) for r in results)


def _pool_doc(f):
    """Fill in the parameters the pooling forwards share ({pool_input}, {ceil_mode})."""
    if f.__doc__ is None:  # python -OO
        return f
    f.__doc__ = f.__doc__.format(
        pool_input="""x : ndarray, float32 or float64, (N, C, H, W) or (C, H, W)
        Any strides; a non-contiguous input is copied once.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.""",
        ceil_mode="""ceil_mode : bool, default False
        Round the output size up (the last window may overhang the padding).""")
    return f


@_pool_doc
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling over (N, C, H, W), like ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    {pool_input}
    padding : int or (int, int), default 0
        Implicit -inf padding on both sides, at most half the kernel size.
    dilation : int or (int, int), default 1
    {ceil_mode}
    return_indices : bool, default False
        Also return where each maximum came from.

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), x's dtype
    indices : ndarray of int64, same shape as ``out``; only if ``return_indices``
        Flat index of each maximum within its H*W input plane (torch's convention): the
        first maximum in row-major window order, or the last NaN if the window has one.
    """
    x4, a = _pool_args(_validation.max_pool2d_args, x, kernel_size, stride, padding, dilation,
                       ceil_mode)
    out, indices = _pool_forward(_pool.max_pool2d_forward, x4, a, a.kernel_size, a.stride,
                                 a.padding, a.dilation, indices=bool(return_indices))
    return (out, indices) if return_indices else out


def max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : ndarray, float32 or float64, (N, C, Ho, Wo) or (C, Ho, Wo)
    indices : ndarray of integers, same shape as ``grad_output``
        As returned by ``max_pool2d(..., return_indices=True)``; each in [0, H*W).
    input_shape : sequence of ints, (N, C, H, W) or (C, H, W)
        The forward input's shape.

    Returns
    -------
    grad_input : ndarray, ``input_shape``, grad_output's dtype
        Each grad_output element added at its index in its (n, c) plane; zero elsewhere.
    """
    a = _validation.max_pool2d_backward_args(grad_output, indices, input_shape,
                                             check_range=False)
    n, c, h, w = a.input_shape
    grad_input = np.empty(a.input_shape, grad_output.dtype)
    # The kernel skips and counts indices out of range (it writes only grad_input, ours):
    # any at all, and the check names one, as a check before the kernel would have.
    if _pool.max_pool2d_backward(
            _planes(a.grad_output), _planes(a.indices.astype(np.int64, copy=False)),
            grad_input.reshape(n * c, h, w), get_num_threads()):
        _validation.check_index_range(indices, input_shape)
        raise AssertionError("max_pool2d_backward: the kernel and the index check disagree")
    return _validation.unbatch(grad_input, a.unbatched)


@_pool_doc
def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling over (N, C, H, W), like ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    {pool_input}
    padding : int or (int, int), default 0
        Implicit zero padding on both sides, at most half the kernel size.
    {ceil_mode}
    count_include_pad : bool, default True
        Count the padding in the divisor (never the ceil_mode overhang beyond it).
    divisor_override : int, optional
        Nonzero; divide every window sum by it instead.

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), x's dtype
    """
    x4, a = _pool_args(_validation.avg_pool2d_args, x, kernel_size, stride, padding, ceil_mode,
                       count_include_pad, divisor_override)
    (out,) = _pool_forward(_pool.avg_pool2d_forward, x4, a, a.kernel_size, a.stride, a.padding,
                           a.count_include_pad, a.divisor_override or 0)
    return out


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : ndarray, float32 or float64, (N, C, Ho, Wo) or (C, Ho, Wo)
        The forward output's shape.
    input_shape : sequence of ints, (N, C, H, W) or (C, H, W)
        The forward input's shape.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to :func:`avg_pool2d`.

    Returns
    -------
    grad_input : ndarray, ``input_shape``, grad_output's dtype
        Each grad_output element divided by its window's divisor and added over the window.
    """
    a = _validation.avg_pool2d_backward_args(grad_output, input_shape, kernel_size, stride,
                                             padding, ceil_mode, count_include_pad,
                                             divisor_override)
    n, c, h, w = a.input_shape
    grad_input = np.empty(a.input_shape, grad_output.dtype)
    _pool.avg_pool2d_backward(
        _planes(a.grad_output), grad_input.reshape(n * c, h, w), a.kernel_size, a.stride,
        a.padding, a.count_include_pad, a.divisor_override or 0, get_num_threads())
    return _validation.unbatch(grad_input, a.unbatched)


# ----------------------------------------------------------------------------------------
# relu / leaky_relu / sigmoid / tanh, forward and backward
# ----------------------------------------------------------------------------------------


def _flat(a):
    """A flat C-contiguous, aligned view of ``a`` (a copy only when ``a`` is not one)."""
    return _contiguous(a).reshape(-1)


def _elementwise(kernel, x, inplace, *args):
    """Run ``kernel(x_flat, out_flat, *args, num_threads)`` into a new array, or into ``x``
    when ``inplace`` (through a contiguous copy when ``x`` is not C-contiguous)."""
    if inplace and x.flags.c_contiguous and x.flags.aligned:
        out = x
    else:
        out = np.empty(x.shape, x.dtype)
    kernel[_FUSED[x.dtype]](_flat(x), out.reshape(-1), *args, get_num_threads())
    if inplace and out is not x:
        np.copyto(x, out)
        return x
    return out


def _elementwise_backward(kernel, grad_output, saved, saved_name, *args):
    _validation.activation_backward_args(grad_output, saved, saved_name)
    grad_input = np.empty(grad_output.shape, grad_output.dtype)
    kernel[_FUSED[grad_output.dtype]](_flat(grad_output), _flat(saved), grad_input.reshape(-1),
                                      *args, get_num_threads())
    return grad_input


def relu(x, inplace=False):
    """``max(x, 0)`` elementwise, like ``torch.nn.functional.relu``.

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape (N, C, H, W for a conv layer's output)
    inplace : bool, default False
        Write the result into ``x`` and return it.

    Returns
    -------
    out : ndarray, x's shape and dtype
        NaN stays NaN and -0.0 stays -0.0, as in torch.
    """
    _validation.activation_args(x, inplace=inplace)
    return _elementwise(_activation.relu, x, inplace)


def leaky_relu(x, negative_slope=0.01, inplace=False):
    """``x if x > 0 else negative_slope * x`` elementwise, like
    ``torch.nn.functional.leaky_relu``.

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape
    negative_slope : float, default 0.01
        Rounded to x's dtype before multiplying, as torch does.
    inplace : bool, default False
        Write the result into ``x`` and return it.

    Returns
    -------
    out : ndarray, x's shape and dtype
    """
    _validation.activation_args(x, inplace)
    slope = _validation.slope_arg(negative_slope)
    return _elementwise(_activation.leaky_relu, x, inplace, slope)


def sigmoid(x):
    """``1 / (1 + exp(-x))`` elementwise, like ``torch.sigmoid``.

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape

    Returns
    -------
    out : ndarray, x's shape and dtype
        float64 through the C library's ``exp``; float32 through a vectorized exp, within
        3 ULP of the true value (see fastconv/_kernels/_activation.pyx).
    """
    _validation.activation_args(x)
    return _elementwise(_activation.sigmoid, x, False)


def tanh(x):
    """``tanh(x)`` elementwise, like ``torch.tanh``.

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape

    Returns
    -------
    out : ndarray, x's shape and dtype
        float64 through the C library's ``tanh``; float32 within 3 ULP of the true value.
    """
    _validation.activation_args(x)
    return _elementwise(_activation.tanh, x, False)


def relu_backward(grad_output, output):
    """Gradient of :func:`relu` with respect to its input, from its output.

    Parameters
    ----------
    grad_output : ndarray, float32 or float64, any shape
    output : ndarray, the forward's result: grad_output's shape and dtype

    Returns
    -------
    grad_input : ndarray, grad_output's shape and dtype
        0 where ``output <= 0``, else grad_output (a NaN output passes it), as torch's
        ``threshold_backward``.
    """
    return _elementwise_backward(_activation.relu_backward, grad_output, output, "output")


def leaky_relu_backward(grad_output, input, negative_slope=0.01):
    """Gradient of :func:`leaky_relu` with respect to its input.

    Parameters
    ----------
    grad_output : ndarray, float32 or float64, any shape
    input : ndarray, the forward's input: grad_output's shape and dtype
        With ``negative_slope >= 0`` the forward's output serves as well (it is > 0
        exactly where the input is): what an in-place forward leaves.
    negative_slope : float, default 0.01

    Returns
    -------
    grad_input : ndarray, grad_output's shape and dtype
        grad_output where ``input > 0``, else ``grad_output * negative_slope``.
    """
    slope = _validation.slope_arg(negative_slope)
    return _elementwise_backward(_activation.leaky_relu_backward, grad_output, input, "input",
                                 slope)


def sigmoid_backward(grad_output, output):
    """Gradient of :func:`sigmoid` with respect to its input, from its output.

    Parameters
    ----------
    grad_output : ndarray, float32 or float64, any shape
    output : ndarray, the forward's result: grad_output's shape and dtype

    Returns
    -------
    grad_input : ndarray, ``grad_output * (1 - output) * output`` (torch's order)
    """
    return _elementwise_backward(_activation.sigmoid_backward, grad_output, output, "output")


def tanh_backward(grad_output, output):
    """Gradient of :func:`tanh` with respect to its input, from its output.

    Parameters
    ----------
    grad_output : ndarray, float32 or float64, any shape
    output : ndarray, the forward's result: grad_output's shape and dtype

    Returns
    -------
    grad_input : ndarray, ``grad_output * ((1 - output) * (1 + output))``
        (torch: ``1 - output**2``; the same but for rounding, and more accurate near +-1)
    """
    return _elementwise_backward(_activation.tanh_backward, grad_output, output, "output")


# ----------------------------------------------------------------------------------------
# batch_norm / batch_norm_backward
# ----------------------------------------------------------------------------------------

from ._kernels import _batchnorm  # noqa: E402  (this section's kernels)


def _channel_f64(v, channels, fill):
    """A per-channel array as float64 for the kernels, ``fill`` everywhere when None."""
    return np.full(channels, fill, np.float64) if v is None else v.astype(np.float64)


def _update_running_stats(running_mean, running_var, mean, var, count, momentum):
    """torch's update, in float64 and stored in the buffers' dtype: running = (1 - momentum)
    * running + momentum * batch statistic, the variance unbiased (count / (count - 1))."""
    running_mean[...] = momentum * mean + (1 - momentum) * running_mean.astype(np.float64)
    running_var[...] = (momentum * var * (count / (count - 1))
                        + (1 - momentum) * running_var.astype(np.float64))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, return_stats=False, add=None, relu=False):
    """Batch normalization per channel (axis 1), like ``torch.nn.functional.batch_norm``.

    ``out = (input - mean) / sqrt(var + eps) * weight + bias``, with the batch's mean and
    biased variance over every axis but 1 when ``training``, else ``running_mean`` and
    ``running_var``.

    Parameters
    ----------
    input : ndarray (N, C, ...), float32 or float64 ((N, C), (N, C, L), (N, C, H, W))
    running_mean, running_var : ndarray (C,) or None
        float32 or float64 (read as float64: their dtype may differ from input's, as in a
        model whose buffers were cast apart). In training, when given, updated in place:
        ``running = (1 - momentum) * running + momentum * batch statistic``, the variance
        unbiased (torch's rule).
        Required when not training.
    weight, bias : ndarray (C,) or None
        None: 1 and 0.
    training : bool, default False
    momentum : float, default 0.1
    eps : float, default 1e-5
    return_stats : bool, keyword only, default False
        Also return the mean and 1 / sqrt(var + eps) used, for :func:`batch_norm_backward`.
    add : ndarray or None, keyword only
        input's shape and dtype: added to the normalized values (a residual block's
        shortcut), in the same pass.
    relu : bool, keyword only, default False
        Return ``relu(batch_norm(...) + add)`` in the same pass: the bits of the separate
        :func:`relu` (and ``+``). Its backward is :func:`batch_norm_backward` with
        ``relu_output``.

    Returns
    -------
    out : ndarray, input's shape and dtype
    save_mean, save_invstd : ndarray (C,), input's dtype (only with ``return_stats``)

    Notes
    -----
    Mean and variance come from one pass over each channel's values, summed in float64 in
    a fixed order by one thread per channel: the same bits on any thread count.
    """
    a = _validation.batch_norm_args(input, running_mean, running_var, weight, bias, training,
                                    momentum, eps, add)
    x3 = _contiguous(a.x3)
    add3 = None if add is None else _contiguous(add.reshape(x3.shape))
    channels = x3.shape[1]
    out = np.empty(x3.shape, x3.dtype)
    if training:
        mean, var = np.empty(channels), np.empty(channels)
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    invstd = np.empty(channels)
    if out.size:
        _batchnorm.forward(x3, out, _channel_f64(weight, channels, 1),
                           _channel_f64(bias, channels, 0), mean, var, invstd, bool(training),
                           float(eps), get_num_threads(), add3, bool(relu))
    else:  # no values (eval with an empty batch)
        invstd[...] = 1 / np.sqrt(var + float(eps))
    if training and running_mean is not None:
        _update_running_stats(running_mean, running_var, mean, var, a.count, float(momentum))
    out = out.reshape(input.shape)
    if return_stats:
        return out, mean.astype(input.dtype), invstd.astype(input.dtype)
    return out


def batch_norm_backward(grad_output, input, weight=None, running_mean=None, running_var=None,
                        save_mean=None, save_invstd=None, training=False, eps=1e-5, *,
                        input_grad=True, relu_output=None):
    """Gradients of :func:`batch_norm` (torch's ``native_batch_norm_backward`` arguments).

    Parameters
    ----------
    grad_output : ndarray, input's shape and dtype
    input : ndarray (N, C, ...), the forward's input
    weight : ndarray (C,) or None (1)
    running_mean, running_var : ndarray (C,) or None
        The statistics of an eval-mode forward, used when save_mean/save_invstd are not given.
    save_mean, save_invstd : ndarray (C,) or None
        The mean and 1 / sqrt(var + eps) the forward used (``return_stats=True``). In
        training, when None, they are computed again from ``input``.
    training : bool, default False
        Whether the forward used the batch's statistics (then the gradient flows through
        them) or fixed ones.
    eps : float, default 1e-5
    input_grad : bool, keyword only, default True
        False skips grad_input (returned as None).
    relu_output : ndarray or None, keyword only
        The output of a :func:`batch_norm` with ``relu=True`` (input's shape and dtype):
        grad_output is then the gradient of that output and is taken through the ReLU
        (0 where relu_output <= 0, as :func:`relu_backward`) in the same passes; the
        results are bitwise those of ``batch_norm_backward(relu_backward(grad_output,
        relu_output), ...)``.

    Returns
    -------
    grad_input : ndarray, input's shape and dtype, or None
    grad_weight, grad_bias : ndarray (C,), input's dtype
        ``sum(grad_output * (input - mean) * invstd)`` and ``sum(grad_output)`` per channel
        (the gradients a weight and bias would get, also when ``weight`` is None).
    """
    a = _validation.batch_norm_backward_args(grad_output, input, weight, running_mean,
                                             running_var, save_mean, save_invstd, training, eps,
                                             relu_output)
    x3 = _contiguous(a.x3)
    g3 = _contiguous(grad_output.reshape(x3.shape))
    y3 = None if relu_output is None else _contiguous(relu_output.reshape(x3.shape))
    channels = x3.shape[1]
    if save_mean is not None:
        mean, invstd = save_mean.astype(np.float64), save_invstd.astype(np.float64)
    elif training:
        mean, var, invstd = np.empty(channels), np.empty(channels), np.empty(channels)
        _batchnorm.moments(x3, mean, var, invstd, float(eps), get_num_threads())
    else:
        mean = running_mean.astype(np.float64)
        invstd = 1 / np.sqrt(running_var.astype(np.float64) + float(eps))
    grad_input = np.empty(x3.shape, x3.dtype) if input_grad else None
    sum_g, sum_gx = np.zeros(channels), np.zeros(channels)
    if x3.size:
        _batchnorm.backward(g3, x3, grad_input, _channel_f64(weight, channels, 1), mean, invstd,
                            sum_g, sum_gx, bool(training), bool(input_grad), get_num_threads(),
                            y3)
    if grad_input is not None:
        grad_input = grad_input.reshape(input.shape)
    return grad_input, (sum_gx * invstd).astype(input.dtype), sum_g.astype(input.dtype)


# ----------------------------------------------------------------------------------------
# adaptive pooling (geometry and checks in _adaptive_pool, shared with the reference)
# ----------------------------------------------------------------------------------------


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling, like ``torch.nn.functional.adaptive_avg_pool2d``.

    Parameters
    ----------
    x : ndarray, float32 or float64, (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
        (Ho, Wo); None keeps that input size. (1, 1) is global average pooling.

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), x's dtype
        The mean of each window of torch's start/end rule: rows floor(i*H/Ho) ..
        ceil((i+1)*H/Ho) - 1, columns likewise. (1, 1) is one mean per plane; windows that
        tile the input (Ho | H, Wo | W) run on the pooling kernels; others are summed
        separably, rows then columns.
    """
    x4, unbatched, out_hw = _adaptive_pool.adaptive_args(x, output_size)
    n, c, h, w = x4.shape
    kernel = _adaptive_pool.uniform_kernel((h, w), out_hw)
    if out_hw == (1, 1):
        out = x4.reshape(n, c, h * w).mean(axis=2).reshape(n, c, 1, 1)
    elif kernel is not None:
        out = avg_pool2d(x4, kernel)
    else:
        out = _adaptive_pool.separable_avg(x4, out_hw)
    return _validation.unbatch(out, unbatched)


def adaptive_avg_pool2d_backward(grad_output, input_shape):
    """Gradient of :func:`adaptive_avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : ndarray, float32 or float64, (N, C, Ho, Wo) or (C, Ho, Wo)
    input_shape : sequence of ints, (N, C, H, W) or (C, H, W)

    Returns
    -------
    grad_input : ndarray, ``input_shape``, grad_output's dtype
        Each output's gradient divided by its window's size and added over the window.
    """
    g4, shape, unbatched = _adaptive_pool.adaptive_backward_args(grad_output, input_shape)
    n, c, h, w = shape
    kernel = _adaptive_pool.uniform_kernel((h, w), g4.shape[2:])
    if g4.shape[2:] == (1, 1):
        grad = np.broadcast_to(g4 * np.asarray(1.0 / (h * w), g4.dtype), shape).copy()
    elif kernel is not None:
        grad = avg_pool2d_backward(np.ascontiguousarray(g4), shape, kernel)
    else:
        grad = _adaptive_pool.separable_avg_backward(g4, shape)
    return _validation.unbatch(grad, unbatched)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Adaptive max pooling, like ``torch.nn.functional.adaptive_max_pool2d``.

    Parameters
    ----------
    x : ndarray, float32 or float64, (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
        Windows as :func:`adaptive_avg_pool2d`.
    return_indices : bool, default False

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), x's dtype
    indices : ndarray of int64, same shape; only if ``return_indices``
        Flat index of each maximum within its H*W input plane: the first maximum in
        row-major window order, or the last NaN if the window has one (torch's rule).
    """
    x4, unbatched, out_hw = _adaptive_pool.adaptive_args(x, output_size)
    kernel = _adaptive_pool.uniform_kernel(x4.shape[2:], out_hw)
    if kernel is not None:
        out, indices = max_pool2d(x4, kernel, return_indices=True)
    elif np.isnan(x4).any():  # the separable form cannot follow the last-NaN rule
        out, indices = _adaptive_pool.max_by_window(x4, out_hw)
    else:
        out, indices = _adaptive_pool.separable_max(x4, out_hw)
    out = _validation.unbatch(out, unbatched)
    return (out, _validation.unbatch(indices, unbatched)) if return_indices else out


def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`adaptive_max_pool2d`: each output's gradient added at its index.

    Parameters
    ----------
    grad_output : ndarray, float32 or float64, (N, C, Ho, Wo) or (C, Ho, Wo)
    indices : integer ndarray, same shape, as ``adaptive_max_pool2d`` returned them
    input_shape : sequence of ints, (N, C, H, W) or (C, H, W)

    Returns
    -------
    grad_input : ndarray, ``input_shape``, grad_output's dtype
    """
    _adaptive_pool.adaptive_backward_args(grad_output, input_shape)
    return max_pool2d_backward(grad_output, indices, input_shape)
