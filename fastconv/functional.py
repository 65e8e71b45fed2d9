"""torch-compatible convolution, pooling and im2col/col2im on NumPy arrays, forward and backward.

Every function validates its arguments (clear ValueError/TypeError naming the argument and
the shapes), picks the algorithm, allocates the outputs and calls the compiled kernels in
:mod:`fastconv._kernels`. :mod:`fastconv.reference` has the same functions in pure NumPy.
"""

# ----------------------------------------------------------------------------------------
# im2col / col2im / conv2d / conv2d_backward
# ----------------------------------------------------------------------------------------

import functools

import numpy as np

from . import _validation, _workspace
from ._kernels import _activation, _conv, _gemm, _im2col, _pool
from ._threads import blas_single_threaded, get_num_threads
from . import _adaptive_pool as _adaptive
from ._softmax import (cross_entropy, log_softmax, log_softmax_backward, nll_loss,  # noqa: F401
                       softmax, softmax_backward)

# BLAS takes C ints: every GEMM dimension must fit one.
_INT_MAX = 2**31 - 1

# Images per weight-gradient chunk: ceil(N / _GRAD_CHUNKS), so there are at most
# _GRAD_CHUNKS partial sums to reduce. A function of N only, never of the thread count,
# which keeps grad_weight bitwise identical across thread counts.
_GRAD_CHUNKS = 32

# The fully connected products' outputs are cut into blocks of _MATMUL_BLOCK_ROWS rows, the
# last one zero-padded: every BLAS call then has one shape. BLAS rounds differently for
# different sub-matrix shapes (OpenBLAS's small-matrix kernels), so a cut that moved with the
# thread count or with the number of rows (a rank's shard of a batch) would move the bits.
_MATMUL_BLOCK_ROWS = 32

# Output positions (GEMM columns) per tile of the GEMM paths; see _tiles. Measured
# (float32, 1 thread) over 256..2048: the large 3x3 layers are flat from 512 up, LeNet's
# layers and the 1x1 layer best at 512-1024; a fixed byte budget instead (64 KiB..1 MiB)
# suited either the LeNet or the large layers, never both.
_TILE_COLUMNS = 1024
# Cap on the column matrix of a tile of several small images (measured as good as
# uncapped on LeNet's layers: 4 images of conv2 at 256 KiB).
_BATCH_TILE_BYTES = 256 * 1024
# Output pixels per strip of the channel-vector weight gradient (see _weight_grad_by_kvec).
_KVEC_STRIP_PIXELS = 512
# Fewest pixels per image for which pointwise layers take the channel-vector kernels (see
# _choose_algorithm and _weight_grad_by_kvec): below, the blocks are too short to pay for
# their set-up (7x7 images: 0.67-0.96x GEMM).
_POINTWISE_DIRECT_MIN_PIXELS = 196
# Most output channels for which the pixel-vector weight gradient is taken over GEMM
# (see _weight_grad_by_pixvec).
_PIXVEC_MOST_CHANNELS = 16
# Bytes of Winograd's transformed inputs and products per tile block (see _winograd): with
# the padded image they stay in L2 cache. Measured (float32, 2 threads) on the 128-channel
# 3x3 layer: 128 and 256 KiB alike (12.7 ms), 512 KiB 13.4 ms, and past L2 21 ms.
_WINOGRAD_BLOCK_BYTES = 256 * 1024
# Largest transformed weight (16 * K * C items) for which 'auto' takes Winograd: each tile
# block reads all of it, and past L2 cache that stalls (float32, 2 threads: 128 -> 256
# channels 1.5x direct, 2 MiB; 256 -> 256 channels 0.75x, 4 MiB; 512 -> 512 0.17x).
_WINOGRAD_MAX_WEIGHT_BYTES = 2 * 1024 * 1024
# Fewest output pixels per image for which 'auto' takes Winograd (0.64x direct on 7x7).
_WINOGRAD_MIN_PIXELS = 196


def _contiguous(a):
    return np.ascontiguousarray(a)


def _check_blas_dims(*dims):
    if max(dims) > _INT_MAX:
        raise ValueError(f"conv2d: a matrix dimension of {max(dims)} exceeds what BLAS "
                         f"addresses ({_INT_MAX})")


def _tiles(args):
    """(images_per_tile, rows_per_tile, work items per thread) for conv2d_gemm and
    conv2d_backward.

    A tile is about _TILE_COLUMNS output positions (GEMM columns): large images are cut
    into strips of output rows, small ones batched several to a tile (whose column matrix
    stays within _BATCH_TILE_BYTES, so scratch never grows much past one image's), so every
    GEMM is about as wide.
    """
    n, k, ho, wo = args.out_shape
    ckk = int(np.prod(args.weight.shape[1:]))
    pointwise = args.weight.shape[2:] == (1, 1) and args.stride == (1, 1) \
        and args.padding == (0, 0) and args.x.shape[2:] == (ho, wo)
    images, rows = 1, ho
    if ho * wo > _TILE_COLUMNS:
        rows = max(1, _TILE_COLUMNS // wo)
    elif not pointwise:
        image_bytes = ckk * ho * wo * args.x.itemsize
        images = max(1, min(n, _TILE_COLUMNS // (ho * wo), _BATCH_TILE_BYTES // image_bytes))
    width = images * rows * wo
    # ho * wo: the output's row length is the GEMM's leading dimension
    _check_blas_dims(ckk, width, k, ho * wo)
    items = ckk * width + (k // args.groups * width if images > 1 else 0)
    return images, rows, _workspace.round_up(items, args.x.dtype)


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


def _kvec_vectors(channels, lanes):
    """Vectors of output channels per channel-vector block: 2 where the group fills them,
    else 1 (measured on the large 3x3 layers, float32: 2 vectors by 14 pixels 1.07x 4 by 6,
    1.05x 1 by 28)."""
    return 2 if channels >= 2 * lanes else 1


def _pointwise(args):
    """A 1x1 kernel at stride 1 with no padding: every output pixel is one input pixel."""
    return (args.weight.shape[2:] == (1, 1) and args.stride == (1, 1)
            and args.padding == (0, 0))


def _kvec_block(args):
    """(kv, pixels, by_rows) of the channel-vector direct block for this layer, or None
    where the build has no such block, the group's output channels fill less than one
    vector, or the column-vector block measured faster.

    kv vectors of output channels (_kvec_vectors).
    Blocks of one output row (the pixels' offsets are then constants of the code:
    1.0-1.05x blocks in raster order across rows, even for LeNet's 10-column conv2) where
    a row holds the 8 independent accumulator chains that hide the FMA latency, else
    blocks in raster order. Pixels per block: the fewest blocks the registers allow,
    spread evenly, so the last is about as full as the others.
    """
    lanes, most_pixels = _conv.kvec_block_limits(args.x.itemsize)
    k, cg, kh, kw = args.weight.shape
    kg = k // args.groups
    if lanes == 0 or kg < lanes:
        return None
    ho, wo = args.out_shape[2:]
    # Up to a few hundred taps, the column-vector block measured as fast or faster where
    # at most a quarter of its lanes are padding ((64,1,28,28)->32 5x5: 25 taps, 28 of 32
    # columns, 1.25x; 72 taps 1.15x; 144 taps 1.05x; 288 taps 1.0x; 576 taps 0.76x).
    _, vw = _conv.direct_block_shape(args.x.itemsize, False)
    if cg * kh * kw < 288 and wo / (-(-wo // vw) * vw) >= 0.75 and not _pointwise(args):
        return None
    kv = _kvec_vectors(kg, lanes)
    # a pointwise layer reads its input in place (see padded_image) only in raster blocks:
    # row blocks read whole blocks of columns, past the end of a row
    by_rows = wo * kv >= 8 and not _pointwise(args)
    n_pixels = wo if by_rows else ho * wo
    blocks = -(-n_pixels // most_pixels[kv])
    return kv, -(-n_pixels // blocks), by_rows


def _phase_split_buffer(args, columns):
    """(hp, wp, wq, items) of pad_image's buffer for one image of args.x: hp rows (all
    that the output rows read), wp columns (what ``columns`` output columns read), wq of
    them per column phase, and its size in items."""
    _, _, kh, kw = args.weight.shape
    (sh, sw), (dh, dw) = args.stride, args.dilation
    hp = (args.out_shape[2] - 1) * sh + (kh - 1) * dh + 1
    wp = (columns - 1) * sw + (kw - 1) * dw + 1
    wq = -(-wp // sw)
    return hp, wp, wq, args.x.shape[1] * sw * hp * wq


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
def _raster_offsets(ho, wo, row_step, pixels):
    """Offset of each output pixel (raster order) in the phase-split buffer, oh*row_step +
    ow, then 0 up to whole blocks of ``pixels``. Cached (read-only)."""
    pix = np.zeros(-(-ho * wo // pixels) * pixels, dtype=np.intp)
    pix[:ho * wo] = (np.arange(ho)[:, None] * row_step + np.arange(wo)).reshape(-1)
    return _read_only(pix)


def _read_only(a):
    a.flags.writeable = False
    return a


def _grad_chunks(n, images=1):
    """(images per chunk, chunks) of the weight-gradient sums over n images: about
    n / _GRAD_CHUNKS, in whole tiles of ``images``, never a function of the threads."""
    chunk = -(-(-(-n // _GRAD_CHUNKS)) // images) * images
    return chunk, -(-n // chunk)


def _weight_grad_by_kvec(args, grad_weight, nt):
    """Write grad_weight with the channel-vector weight-gradient kernel where it applies
    (>= 16 float32 output channels per group, at least 4 taps per output channel of a
    block, and a kernel larger than 1x1 or a pointwise layer of >= 196 pixels per image);
    False (nothing written) elsewhere.

    Measured against GEMM over im2col tiles (float32, 2 threads): LeNet's conv2 2.4x
    (0.84 ms, 147 GFLOP/s), the large 3x3 layers 1.1-1.3x (175-196 GFLOP/s). Pointwise
    layers, where GEMM needs no im2col: 1.3x on (32,256,14,14)->64 (0.98 ms, 210 GFLOP/s),
    1.1x on (16,128,28,28)->256 and (16,256,14,14)->256, 0.96x on (8,512,7,7)->512 (GEMM
    there); other 1x1 layers (stride, padding) stay on GEMM.
    """
    lanes, most_taps = _conv.kvec_block_limits(args.x.itemsize)
    k, cg, kh, kw = args.weight.shape
    groups = args.groups
    kg = k // groups
    if lanes == 0 or kg < lanes:
        return False
    if _pointwise(args):
        n, c, h, w = args.x.shape
        if h * w < _POINTWISE_DIRECT_MIN_PIXELS:
            return False
        # every output pixel is one input pixel: each image as one row, which the kernel
        # sums over in one pass (not Ho short rows)
        args = args._replace(
            x=_contiguous(args.x).reshape(n, c, 1, h * w),
            grad_output=_contiguous(args.grad_output).reshape(n, k, 1, h * w),
            out_shape=(n, k, 1, h * w))
    elif kh * kw == 1:
        return False
    n, _, ho, wo = args.out_shape
    (sh, sw), (ph, pw), (dh, dw) = args.stride, args.padding, args.dilation
    kv = _kvec_vectors(kg, lanes)
    kvl = kv * lanes
    ntaps = cg * kh * kw
    # Each image's grad_output is first transposed element by element: against few taps
    # that costs more than it saves ((64,1,28,28)->32 5x5, 25 taps: 0.58 -> 1.0 ms).
    if ntaps < 4 * kvl:
        return False
    taps_per_block = -(-ntaps // -(-ntaps // most_taps[kv]))
    hp, wp, wq, image_items = _phase_split_buffer(args, wo)
    dtype = args.x.dtype
    stride_items = _workspace.round_up(image_items + ho * wo * kvl, dtype)
    nkb = -(-kg // kvl)
    slot = groups * nkb * ntaps * kvl
    chunk, n_slots = _grad_chunks(n)
    work = _workspace.scratch(nt * stride_items + n_slots * slot, dtype)
    sums = np.empty(slot, dtype=dtype)
    _conv.conv2d_weight_grad_kvec(
        _contiguous(args.grad_output), _contiguous(args.x), sums, work[:nt * stride_items],
        stride_items, work[nt * stride_items:], chunk,
        _phase_split_taps(args.weight.shape, args.stride, args.dilation, hp, wq),
        sh, sw, ph, pw, hp, wp, groups, kv, taps_per_block, max(1, _KVEC_STRIP_PIXELS // wo),
        nt)
    by_channel = sums.reshape(groups, nkb, ntaps, kvl).transpose(0, 1, 3, 2)
    grad_weight[...] = by_channel.reshape(groups, nkb * kvl, ntaps)[:, :kg].reshape(
        grad_weight.shape)
    return True


def _weight_grad_by_pixvec(args, grad_weight, nt):
    """Write grad_weight with the pixel-vector weight-gradient kernel where the build has
    it and the layer is one it serves: stride 1, no groups, a kernel larger than 1x1 and
    at most _PIXVEC_MOST_CHANNELS output channels (the layers the channel-vector kernel
    leaves to GEMM, whose products are then thin); False (nothing written) elsewhere.

    Measured against GEMM over im2col tiles (float32, 2 threads): LeNet's conv1
    (256,1,28,28)->6 5x5 p2 1.7x (0.45 ms, 135 GFLOP/s), 8 output channels 1.3-2.4x,
    (16,3,32,32)->16 3x3 1.2x; (64,1,28,28)->32 5x5 0.96x (GEMM there).
    """
    k, cg, kh, kw = args.weight.shape
    if (_conv.pixvec_lanes(args.x.itemsize) == 0 or args.stride != (1, 1)
            or args.groups != 1 or kh * kw == 1 or k > _PIXVEC_MOST_CHANNELS):
        return False
    n, c = args.x.shape[:2]
    ho, wo = args.out_shape[2:]
    (ph, pw), (dh, dw) = args.padding, args.dilation
    hp, wp = ho + (kh - 1) * dh, wo + (kw - 1) * dw
    dtype = args.x.dtype
    stride_items = _workspace.round_up(c * hp * wp, dtype)
    chunk, n_slots = _grad_chunks(n)
    work = _workspace.scratch(nt * stride_items + n_slots * args.weight.size, dtype)
    _conv.conv2d_weight_grad_pixvec(
        _contiguous(args.grad_output), _contiguous(args.x), grad_weight.reshape(-1),
        work[:nt * stride_items], stride_items, work[nt * stride_items:], chunk, kh, kw,
        ph, pw, dh, dw, hp, wp, nt)
    return True


def _direct(args, x4, w, b, out4, nt):
    """Run conv2d_direct or conv2d_direct_kvec: pack the weight in blocks of the kernel's
    output channels and size the padded, phase-split image buffer."""
    k, cg, kh, kw = w.shape
    n, c, ho, wo = args.out_shape
    (sh, sw), (ph, pw), (dh, dw) = args.stride, args.padding, args.dilation
    kvec = _kvec_block(args)
    if kvec is not None:
        kv, pixels, by_rows = kvec
        # row blocks read whole blocks of columns
        hp, wp, wq, image_items = _phase_split_buffer(
            args, -(-wo // pixels) * pixels if by_rows else wo)
        lanes = _conv.kvec_block_limits(w.itemsize)[0]
        # an inf or NaN weight times the padding's zeros is NaN, as in torch: no skipping
        skip = by_rows and bool(np.isfinite(w).all())
        tap_index, row_taps = _row_tap_runs(w.shape, args.stride, args.padding,
                                            args.dilation, args.x.shape[2], ho, skip)
        taps = _phase_split_taps(w.shape, args.stride, args.dilation, hp, wq)
        if tap_index is not None:
            taps = taps[tap_index]
        wpack = _pack_weight(w, args.groups, kv * lanes, tap_index)
        pix = _raster_offsets(ho, wo, sh * wq, pixels)
        stride_items = _workspace.round_up(image_items, w.dtype)
        work = _workspace.scratch(nt * stride_items, w.dtype)
        _conv.conv2d_direct_kvec(x4, wpack.reshape(-1), b, out4, work, stride_items, taps,
                                 row_taps, pix, sh, sw, ph, pw, hp, wp, args.groups, kv,
                                 pixels, by_rows, nt)
        return
    # the wide block unless it computes more padding columns than the narrow one
    kb, vw = _conv.direct_block_shape(w.itemsize, False)
    wide = -(-wo // (2 * vw)) * 2 <= -(-wo // vw)
    # 6-channel blocks where they leave fewer zero channels (LeNet's conv1, 6 channels:
    # 0.62 -> 0.50 ms on (256,1,28,28), float32, 2 threads)
    kb6, _ = _conv.direct_block_shape(w.itemsize, wide, True)
    kg = k // args.groups
    six = kb6 != kb and -(-kg // kb6) * kb6 < -(-kg // kb) * kb
    kb, vw = _conv.direct_block_shape(w.itemsize, wide, six)
    hp, wp, _, image_items = _phase_split_buffer(args, -(-wo // vw) * vw)  # whole blocks
    stride_items = _workspace.round_up(image_items, w.dtype)
    work = _workspace.scratch(nt * stride_items, w.dtype)
    _conv.conv2d_direct(x4, _pack_weight(w, args.groups, kb).reshape(-1), b, out4, work,
                        stride_items, kh, kw, sh, sw, ph, pw, dh, dw, hp, wp, args.groups,
                        wide, six, nt)


def _winograd_shape(args):
    """Whether Winograd's F(2x2, 3x3) computes this convolution: a 3x3 kernel at stride 1,
    no dilation, no groups."""
    return (args.weight.shape[2:] == (3, 3) and args.stride == (1, 1)
            and args.dilation == (1, 1) and args.groups == 1)


def _winograd(args, x4, w, b, out4, nt):
    """Run conv2d_winograd (see _winograd_shape), then redo by direct convolution the
    images whose outputs are not all finite, so that inf and NaN reach the outputs they
    reach in torch."""
    k, c = w.shape[:2]
    n, _, ho, wo = args.out_shape
    lanes, most_pixels = _conv.kvec_block_limits(w.itemsize)
    kv = _kvec_vectors(k, lanes)
    pixels = most_pixels[kv]
    th, tw = -(-ho // 2), -(-wo // 2)
    tile_block = pixels * max(1, _WINOGRAD_BLOCK_BYTES // (16 * (c + k) * w.itemsize * pixels))
    tile_block = min(tile_block, -(-th * tw // pixels) * pixels)
    stride_items = _workspace.round_up(
        c * (2 * th + 2) * (2 * tw + 2) + 16 * (c + k) * tile_block, w.dtype)
    work = _workspace.scratch(nt * stride_items, w.dtype)
    bad = np.empty(n, dtype=np.uint8)
    # the transformed weight, in blocks of output channels, zero past K
    kvl = kv * lanes
    upack = (np.zeros if k % kvl else np.empty)(16 * -(-k // kvl) * c * kvl, dtype=w.dtype)
    _conv.winograd_weight(w, upack, kvl, nt)
    _conv.conv2d_winograd(x4, upack, b, out4, bad,
                          work, stride_items, np.arange(c, dtype=np.intp) * tile_block,
                          args.padding[0], args.padding[1], tile_block, kv, pixels, nt)
    bad = np.flatnonzero(bad)
    if bad.size:
        x_bad = x4[bad]  # a contiguous copy
        redo = np.empty((bad.size,) + out4.shape[1:], dtype=w.dtype)
        _direct(args._replace(x=x_bad, out_shape=redo.shape), x_bad, w, b, redo, nt)
        out4[bad] = redo


def _choose_algorithm(args):
    """'winograd' or 'direct' where it measured faster than im2col + GEMM, else 'gemm'.

    Measured (float32, 1 and 2 threads, AVX2/AVX-512 builds of the direct kernel): direct
    was 1.0-1.5x GEMM for C/groups*kH*kW <= 300 (LeNet's layers among them; GEMM's inputs
    are then too thin for BLAS to reach its peak; 2 threads: LeNet conv1 1.7x, conv2 1.3x,
    (64,1,28,28)->32 2.5x), 1.0-1.1x at 576 (the 64-channel 3x3 layers), 0.97-1.0x at 1152,
    0.5x on 1x1 layers, 2x on 5x5 depthwise and 0.5-0.9x on 3x3 depthwise (a block of
    output channels is then mostly padding). The portable SSE2 build of the direct kernel
    measured 2-3x slower than its AVX2 build: there GEMM always.
    With the channel-vector block (>= 16 float32 output channels per group, see
    _kvec_block), direct measured 1.2-1.37x GEMM on the 3x3 layers of 64 and 128 channels
    (576 and 1152 taps; 200-218 GFLOP/s on 2 threads), 1.7x on LeNet's conv2, even at
    2304 taps and 0.8x at 4608 (its weights no longer stay in L2 cache).
    Pointwise layers (1x1, stride 1, no padding), where the channel-vector block reads the
    input in place: 1.05-1.39x GEMM with input and output channels per group that fill two
    vectors (32 float32 on AVX-512; the rule scales with the lanes) and >= 196 pixels ((32,256,14,14)->64: 207 GFLOP/s, 1.29x; (16,64,56,56)->64 1.39x;
    (16,128,28,28)->256 1.08x); 0.63-0.88x with 16 channels either side, 0.67-0.78x on 7x7
    images of 512-1024 channels (a block's weights are read for only 4 blocks of pixels).
    Winograd F(2x2, 3x3) against direct (2 threads): float32 1.3-1.5x on 3x3 stride-1
    layers of 64-256 channels and 14x14 to 56x56 outputs ((16,128,28,28)->128: 9.9-10.1
    vs 17.0 ms, 365 GFLOP/s of direct-equivalent work), 1.0-1.13x at 32 channels, 0.83x at
    16; 1.06x on (64,64,14,14)->64, 0.64x on 7x7 images; 0.75x on 256->256 channels and
    0.17x on 512->512 (see _WINOGRAD_MAX_WEIGHT_BYTES). Float64 1.2-1.7x from 32 channels.
    """
    k, c_per_group, kh, kw = args.weight.shape
    kb, vw = _conv.direct_block_shape(args.x.itemsize, False)
    baseline_build = vw * args.x.itemsize < 64  # the SSE2 block: 8 registers of 16 bytes
    if baseline_build:
        return "gemm"
    lanes, _ = _conv.kvec_block_limits(args.x.itemsize)
    if (_winograd_shape(args) and min(k, c_per_group) >= 4 * lanes
            and 16 * k * c_per_group * args.x.itemsize <= _WINOGRAD_MAX_WEIGHT_BYTES
            and args.out_shape[2] * args.out_shape[3] >= _WINOGRAD_MIN_PIXELS):
        return "winograd"
    if kh * kw == 1:
        ho, wo = args.out_shape[2:]
        many_channels = min(c_per_group, k // args.groups) >= 2 * lanes
        return ("direct" if _pointwise(args) and many_channels
                and ho * wo >= _POINTWISE_DIRECT_MIN_PIXELS else "gemm")
    if k // args.groups < kb:
        return "direct" if kh * kw >= 25 else "gemm"
    if _kvec_block(args) is not None:
        return "direct" if c_per_group * kh * kw <= 2304 else "gemm"
    return "direct" if c_per_group * kh * kw <= 600 else "gemm"


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
        about as much as GEMM's does). 'auto' picks the one that measured faster for the
        shape: Winograd for 3x3 stride-1 layers of 64+ channels (float32; 32+ float64)
        up to 256x128 channels and 14x14+ outputs, direct for C/groups*kH*kW <= 600, as in
        LeNet, up to 2304 with 16+ output channels per group, 5x5 depthwise, and pointwise
        1x1 layers of 32+ channels; GEMM for other 1x1 and wider layers.
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
    args = _validation.conv2d_args(x, weight, bias, stride, padding, dilation, groups)
    if algorithm not in ("auto", "gemm", "direct", "winograd"):
        raise ValueError("algorithm must be 'auto', 'gemm', 'direct' or 'winograd', got "
                         f"{algorithm!r}")
    if algorithm == "winograd":
        if not _winograd_shape(args):
            raise ValueError(
                "algorithm='winograd' takes 3x3 kernels at stride 1 with no dilation and "
                f"groups=1, got weight {args.weight.shape}, stride {args.stride}, dilation "
                f"{args.dilation}, groups={args.groups}")
        if _conv.kvec_block_limits(args.x.itemsize)[0] == 0:
            raise ValueError("algorithm='winograd' needs the AVX2 or AVX-512 kernels; this "
                             "process runs the portable build (see fastconv.show_config())")
    dtype = args.x.dtype
    shape = args.out_shape[1:] if args.unbatched else args.out_shape
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != shape \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(
            f"out must be a writeable C-contiguous {dtype} array of shape {shape}, got "
            + (f"{out.dtype} array of shape {out.shape}" if isinstance(out, np.ndarray)
               else type(out).__name__))
    if any(np.may_share_memory(out, a) for a in (x, weight, bias) if a is not None):
        raise ValueError("out must not share memory with input, weight or bias: the kernel "
                         "would read them while it writes out")
    if args.out_shape[0] == 0:
        return out
    if algorithm == "auto":
        algorithm = _choose_algorithm(args)
    x4 = _contiguous(args.x)
    w = _contiguous(args.weight)
    b = _contiguous(args.bias) if args.bias is not None else np.empty(0, dtype=dtype)
    out4 = out.reshape(args.out_shape)
    (sh, sw), (ph, pw), (dh, dw) = args.stride, args.padding, args.dilation
    nt = get_num_threads()
    if algorithm == "direct":
        _direct(args, x4, w, b, out4, nt)
        return out
    if algorithm == "winograd":
        _winograd(args, x4, w, b, out4, nt)
        return out
    images, rows, stride_items = _tiles(args)
    work = _workspace.scratch(nt * stride_items, dtype)
    with blas_single_threaded():
        _conv.conv2d_gemm(x4, w, b, out4, work, stride_items, images, rows, sh, sw, ph, pw,
                          dh, dw, args.groups, nt)
    return out


def _input_grad_by_direct(args, grad_input, nt):
    """Write grad_input as the direct convolution of grad_output with the flipped,
    transposed weight, where that is the faster route; False (nothing written) elsewhere.

    For stride 1, grad_input[c] = sum over k of grad_output[k] correlated with
    weight[k, c] turned by 180 degrees, on grad_output zero-padded by (kh-1)*dh - pad_top
    (likewise for columns), so the forward's kernels apply: Winograd where _choose_algorithm
    picks it for that convolution, else direct where the channel-vector block serves it
    (>= 16 input channels per group, float32), measured 1.25x the GEMM + col2im route on the
    3x3 layers of 64 and 128 channels. Larger
    strides would convolve mostly zeros, and LeNet's conv2 (6 input channels) has no
    channel-vector block: GEMM + col2im there.
    """
    k, cg, kh, kw = args.weight.shape
    (dh, dw), (ph, pw) = args.dilation, args.padding
    pad = ((kh - 1) * dh - ph, (kw - 1) * dw - pw)
    lanes, _ = _conv.kvec_block_limits(args.x.itemsize)
    # the cheap refusals first: the transposed weight is a copy
    if args.stride != (1, 1) or min(pad) < 0 or lanes == 0 or cg < lanes:
        return False
    # grad_output's zero padding here is no term of torch's gradient: an inf or NaN
    # weight times it would put NaN where torch has none (GEMM + col2im has no such terms)
    if not np.isfinite(args.weight).all():
        return False
    groups, kg = args.groups, k // args.groups
    flipped = args.weight.reshape(groups, kg, cg, kh, kw)[:, :, :, ::-1, ::-1]
    weight_t = np.ascontiguousarray(flipped.transpose(0, 2, 1, 3, 4)).reshape(
        groups * cg, kg, kh, kw)
    targs = _validation.Conv2dArgs(args.grad_output, weight_t, None, (1, 1), pad,
                                   args.dilation, groups, args.x.shape, False)
    algorithm = _choose_algorithm(targs)
    if algorithm == "direct" and _kvec_block(targs) is not None:
        run = _direct
    elif algorithm == "winograd":
        run = _winograd
    else:
        return False
    run(targs, _contiguous(args.grad_output), weight_t, np.empty(0, args.x.dtype), grad_input,
        nt)
    return True


def _gemm_backward_plan(args, nt, with_sums):
    """(images, rows, stride_items, chunk, work) of _conv.conv2d_backward: its tiles
    (_tiles), images per chunk and scratch (per-thread tiles, then per-chunk sums when
    with_sums)."""
    n = args.x.shape[0]
    images, rows, stride_items = _tiles(args)
    chunk, n_slots = _grad_chunks(n, images)  # whole tiles per chunk
    n_slots = n_slots if with_sums else 0
    slot = args.weight.size + args.weight.shape[0]
    work = _workspace.scratch(nt * stride_items + n_slots * slot, args.x.dtype)
    return images, rows, stride_items, chunk, work


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    needs_input_grad=True, needs_weight_grad=True, needs_bias_grad=True):
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : ndarray, (N, K, Ho, Wo) or (K, Ho, Wo)
        Gradient of the loss with respect to conv2d's output.
    x, weight, stride, padding, dilation, groups
        The forward call's arguments (x: (N, C, H, W) or (C, H, W)).
    needs_input_grad, needs_weight_grad, needs_bias_grad : bool
        Which gradients to compute; the others come back as None and cost nothing.

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
                                            dilation, groups)
    dtype = args.x.dtype
    n, c, h, w = args.x.shape
    k = args.weight.shape[0]
    grad_input = np.empty(args.x.shape, dtype=dtype) if needs_input_grad else None
    grad_weight = np.empty(args.weight.shape, dtype=dtype) if needs_weight_grad else None
    grad_bias = np.empty(k, dtype=dtype) if needs_bias_grad else None
    if n == 0:
        # no images: the weight and bias gradients are empty sums
        for g in (grad_weight, grad_bias):
            if g is not None:
                g[...] = 0
    elif needs_input_grad or needs_weight_grad or needs_bias_grad:
        nt = get_num_threads()
        if needs_input_grad and _input_grad_by_direct(args, grad_input, nt):
            needs_input_grad = False
        if needs_input_grad:
            # reserve the GEMM route's scratch first: a column matrix too large to allocate
            # is refused (MemoryError) before a weight-gradient kernel has spent its time
            _gemm_backward_plan(args, nt, needs_weight_grad or needs_bias_grad)
        if needs_weight_grad and (_weight_grad_by_kvec(args, grad_weight, nt)
                                  or _weight_grad_by_pixvec(args, grad_weight, nt)):
            needs_weight_grad = False
    if n > 0 and (needs_input_grad or needs_weight_grad or needs_bias_grad):
        nt = get_num_threads()
        images, rows, stride_items, chunk, work = _gemm_backward_plan(
            args, nt, needs_weight_grad or needs_bias_grad)
        empty = np.empty(0, dtype=dtype)
        (sh, sw), (ph, pw), (dh, dw) = args.stride, args.padding, args.dilation
        with blas_single_threaded():
            _conv.conv2d_backward(
                _contiguous(args.grad_output), _contiguous(args.x), _contiguous(args.weight),
                grad_input if needs_input_grad else np.empty((0, 0, 0, 0), dtype=dtype),
                grad_weight.reshape(-1) if needs_weight_grad else empty,
                grad_bias if needs_bias_grad else empty,
                work[:nt * stride_items], stride_items, images, rows,
                work[nt * stride_items:], chunk, sh, sw, ph, pw, dh, dw, args.groups,
                bool(needs_input_grad), bool(needs_weight_grad), bool(needs_bias_grad), nt)
    if grad_input is not None and args.unbatched:
        grad_input = grad_input[0]
    return grad_input, grad_weight, grad_bias


def _matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) (op: transpose when asked) of 2-D float arrays of one dtype, in blocks
    of _MATMUL_BLOCK_ROWS output rows shared out over fastconv's threads, one BLAS call
    each: the fully connected layers' products, each row the same bits whatever the thread
    count and the number of rows. NumPy's matmul would run BLAS's own thread pool beside
    OpenMP's (the two fight over the cores), or one thread under blas_single_threaded
    (LeNet's (256, 400) @ (400, 120): 0.29 ms; this: 0.15 ms).
    """
    a, b = _contiguous(a), _contiguous(b)
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    out = np.empty((m, n), dtype=a.dtype)
    _check_blas_dims(*a.shape, *b.shape)
    block = _MATMUL_BLOCK_ROWS
    full = m - m % block
    with blas_single_threaded():
        _gemm.matmul(a, b, out[:full], trans_a, trans_b, True, block, get_num_threads())
        if full < m:  # the last rows through a zero-padded block: the same call shape again
            tail = np.zeros((a.shape[0], block) if trans_a else (block, a.shape[1]), a.dtype)
            if trans_a:
                tail[:, :m - full] = a[:, full:]
            else:
                tail[:m - full] = a[full:]
            tail_out = np.empty((block, n), dtype=a.dtype)
            _gemm.matmul(tail, b, tail_out, trans_a, trans_b, True, block, 1)
            out[full:] = tail_out[:m - full]
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
    return np.ascontiguousarray(a4).reshape(n * c, h, w)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling over (N, C, H, W), like ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : ndarray, float32 or float64, (N, C, H, W) or (C, H, W)
        Any strides; a non-contiguous input is copied once.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit -inf padding on both sides, at most half the kernel size.
    dilation : int or (int, int), default 1
    ceil_mode : bool, default False
        Round the output size up (the last window may overhang the padding).
    return_indices : bool, default False
        Also return where each maximum came from.

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), x's dtype
    indices : ndarray of int64, same shape as ``out``; only if ``return_indices``
        Flat index of each maximum within its H*W input plane (torch's convention): the
        first maximum in row-major window order, or the last NaN if the window has one.
    """
    a = _validation.max_pool2d_args(x, kernel_size, stride, padding, dilation, ceil_mode)
    n, c, ho, wo = a.out_shape
    out = np.empty(a.out_shape, x.dtype)
    indices = np.empty(a.out_shape, np.int64) if return_indices else None
    _pool.max_pool2d_forward(
        _planes(a.x), out.reshape(n * c, ho, wo),
        None if indices is None else indices.reshape(n * c, ho, wo),
        a.kernel_size, a.stride, a.padding, a.dilation, get_num_threads())
    if return_indices:
        return _validation.unbatch(out, a.unbatched), _validation.unbatch(indices, a.unbatched)
    return _validation.unbatch(out, a.unbatched)


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


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling over (N, C, H, W), like ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : ndarray, float32 or float64, (N, C, H, W) or (C, H, W)
        Any strides; a non-contiguous input is copied once.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit zero padding on both sides, at most half the kernel size.
    ceil_mode : bool, default False
        Round the output size up (the last window may overhang the padding).
    count_include_pad : bool, default True
        Count the padding in the divisor (never the ceil_mode overhang beyond it).
    divisor_override : int, optional
        Nonzero; divide every window sum by it instead.

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), x's dtype
    """
    a = _validation.avg_pool2d_args(x, kernel_size, stride, padding, ceil_mode,
                                    count_include_pad, divisor_override)
    n, c, ho, wo = a.out_shape
    out = np.empty(a.out_shape, x.dtype)
    _pool.avg_pool2d_forward(
        _planes(a.x), out.reshape(n * c, ho, wo), a.kernel_size, a.stride, a.padding,
        a.count_include_pad, a.divisor_override or 0, get_num_threads())
    return _validation.unbatch(out, a.unbatched)


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
    """A flat C-contiguous view of ``a`` (a copy only when ``a`` is not C-contiguous)."""
    return np.ascontiguousarray(a).reshape(-1)


def _elementwise(kernel, x, inplace, *args):
    """Run ``kernel(x_flat, out_flat, *args, num_threads)`` into a new array, or into ``x``
    when ``inplace`` (through a contiguous copy when ``x`` is not C-contiguous)."""
    if inplace and x.flags.c_contiguous:
        out = x
    else:
        out = np.empty(x.shape, x.dtype)
    kernel(_flat(x), out.reshape(-1), *args, get_num_threads())
    if inplace and out is not x:
        np.copyto(x, out)
        return x
    return out


def _elementwise_backward(kernel, grad_output, saved, saved_name, *args):
    _validation.activation_backward_args(grad_output, saved, saved_name)
    grad_input = np.empty(grad_output.shape, grad_output.dtype)
    kernel(_flat(grad_output), _flat(saved), grad_input.reshape(-1), *args, get_num_threads())
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
               momentum=0.1, eps=1e-5, *, return_stats=False):
    """Batch normalization per channel (axis 1), like ``torch.nn.functional.batch_norm``.

    ``out = (input - mean) / sqrt(var + eps) * weight + bias``, with the batch's mean and
    biased variance over every axis but 1 when ``training``, else ``running_mean`` and
    ``running_var``.

    Parameters
    ----------
    input : ndarray (N, C, ...), float32 or float64 ((N, C), (N, C, L), (N, C, H, W))
    running_mean, running_var : ndarray (C,) or None
        input's dtype. In training, when given, updated in place: ``running = (1 - momentum)
        * running + momentum * batch statistic``, the variance unbiased (torch's rule).
        Required when not training.
    weight, bias : ndarray (C,) or None
        None: 1 and 0.
    training : bool, default False
    momentum : float, default 0.1
    eps : float, default 1e-5
    return_stats : bool, keyword only, default False
        Also return the mean and 1 / sqrt(var + eps) used, for :func:`batch_norm_backward`.

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
                                    momentum, eps)
    x3 = _contiguous(a.x3)
    channels = x3.shape[1]
    out = np.empty(x3.shape, x3.dtype)
    if training:
        mean, var = np.empty(channels), np.empty(channels)
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    invstd = np.empty(channels)
    if out.size:
        _batchnorm.forward(x3, out, _channel_f64(weight, channels, 1), _channel_f64(bias, channels, 0),
                           mean, var, invstd, bool(training), float(eps), get_num_threads())
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
                        input_grad=True):
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

    Returns
    -------
    grad_input : ndarray, input's shape and dtype, or None
    grad_weight, grad_bias : ndarray (C,), input's dtype
        ``sum(grad_output * (input - mean) * invstd)`` and ``sum(grad_output)`` per channel
        (the gradients a weight and bias would get, also when ``weight`` is None).
    """
    a = _validation.batch_norm_backward_args(grad_output, input, weight, running_mean,
                                             running_var, save_mean, save_invstd, training, eps)
    x3 = _contiguous(a.x3)
    g3 = _contiguous(grad_output.reshape(x3.shape))
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
                            sum_g, sum_gx, bool(training), bool(input_grad), get_num_threads())
    if grad_input is not None:
        grad_input = grad_input.reshape(input.shape)
    return grad_input, (sum_gx * invstd).astype(input.dtype), sum_g.astype(input.dtype)


# -- adaptive pooling (torch's start/end windows; checks and window rule in _adaptive_pool) --

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
        The mean of each window of torch's start/end rule.
    """
    x4, unbatched, out_hw = _adaptive.adaptive_args(x, output_size)
    n, c, h, w = x4.shape
    if out_hw == (1, 1):
        out = x4.reshape(n, c, h * w).mean(axis=2).reshape(n, c, 1, 1)
    elif (kernel := _adaptive.uniform_kernel((h, w), out_hw)) is not None:
        out = avg_pool2d(x4, kernel)
    else:
        (rs, re), (cs, ce) = _adaptive.windows(h, out_hw[0]), _adaptive.windows(w, out_hw[1])
        cols = np.stack([x4[..., a:b].sum(axis=3) for a, b in zip(cs, ce)], axis=3)
        out = np.stack([cols[:, :, a:b].sum(axis=2) for a, b in zip(rs, re)], axis=2)
        out /= ((re - rs)[:, None] * (ce - cs)[None, :]).astype(out.dtype)
    return _validation.unbatch(out.astype(x.dtype, copy=False), unbatched)


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
    g4, (n, c, h, w), unbatched = _adaptive.adaptive_backward_args(grad_output, input_shape)
    ho, wo = g4.shape[2:]
    if (ho, wo) == (1, 1):
        scale = np.asarray(1.0 / (h * w), g4.dtype)
        grad = np.broadcast_to(g4 * scale, (n, c, h, w)).copy()
    elif (kernel := _adaptive.uniform_kernel((h, w), (ho, wo))) is not None:
        grad = avg_pool2d_backward(np.ascontiguousarray(g4), (n, c, h, w), kernel)
    else:
        (rs, re), (cs, ce) = _adaptive.windows(h, ho), _adaptive.windows(w, wo)
        g = g4 / ((re - rs)[:, None] * (ce - cs)[None, :]).astype(g4.dtype)
        rows = np.zeros((n, c, h, wo), g4.dtype)
        for i, (a, b) in enumerate(zip(rs, re)):
            rows[:, :, a:b] += g[:, :, i:i + 1]
        grad = np.zeros((n, c, h, w), g4.dtype)
        for j, (a, b) in enumerate(zip(cs, ce)):
            grad[..., a:b] += rows[..., j:j + 1]
    return _validation.unbatch(grad, unbatched)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Adaptive max pooling, like ``torch.nn.functional.adaptive_max_pool2d``.

    Parameters
    ----------
    x : ndarray, float32 or float64, (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
    return_indices : bool, default False

    Returns
    -------
    out : ndarray, (N, C, Ho, Wo) or (C, Ho, Wo), x's dtype
    indices : ndarray of int64, same shape; only if ``return_indices``
        Flat index of each maximum within its H*W input plane: the first maximum in
        row-major window order, or the last NaN if the window has one (torch's rule).
    """
    from .reference import adaptive as reference
    x4, unbatched, out_hw = _adaptive.adaptive_args(x, output_size)
    n, c, h, w = x4.shape
    kernel = _adaptive.uniform_kernel((h, w), out_hw)
    if kernel is not None:
        out, indices = max_pool2d(x4, kernel, return_indices=True)
    elif np.isnan(x4).any():
        # The separable form below cannot follow the last-NaN rule; windows one by one can.
        out, indices = reference.adaptive_max_pool2d(x4, out_hw, return_indices=True)
    else:
        (rs, re), (cs, ce) = _adaptive.windows(h, out_hw[0]), _adaptive.windows(w, out_hw[1])
        # Columns first, then rows: the first row holding the window's maximum, and in that
        # row its first column, is the first maximum in row-major order.
        col_max = np.stack([x4[..., a:b].max(axis=3) for a, b in zip(cs, ce)], axis=3)
        col_arg = np.stack([x4[..., a:b].argmax(axis=3) + a for a, b in zip(cs, ce)], axis=3)
        row_arg = np.stack([col_max[:, :, a:b].argmax(axis=2) + a for a, b in zip(rs, re)], axis=2)
        out = np.take_along_axis(col_max, row_arg, axis=2)
        indices = row_arg * w + np.take_along_axis(col_arg, row_arg, axis=2)
    out, indices = _validation.unbatch(out, unbatched), _validation.unbatch(indices.astype(np.int64, copy=False), unbatched)
    return (out, indices) if return_indices else out


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
    _adaptive.adaptive_backward_args(grad_output, input_shape)
    return max_pool2d_backward(grad_output, indices, input_shape)
