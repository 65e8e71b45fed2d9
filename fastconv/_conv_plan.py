"""The convolution planner: which kernel computes a conv2d or its gradients, with what blocks.

Like PyTorch's ``select_conv_backend`` (aten/src/ATen/native/ConvUtils.h): an enum of routes
(:class:`Route`), one predicate per route, and selectors (:func:`plan_conv2d`,
:func:`plan_conv2d_backward`) that tests call directly. A plan depends only on the
problem's shapes, its dtype and what the loaded kernel build offers (:func:`build_support`):
never on the thread count and never on the data, except that the caller says whether the
weight is finite where a route depends on it. :mod:`fastconv.functional` validates, plans,
then runs what the plan says; nothing here touches an array's contents or allocates scratch.

The thresholds below each carry the reason they exist; the measurements behind their values
are in docs/tuning.md.
"""
import enum
import functools
from typing import NamedTuple, Optional

from . import _workspace
from ._cache import BoundedCache
from ._kernels import _conv

# -- thresholds -----------------------------------------------------------------------------

# BLAS takes C ints: every GEMM dimension must fit one.
INT_MAX = 2**31 - 1
# Weight-gradient sums run over at most this many chunks of images (ceil(N / GRAD_CHUNKS)
# images each, a function of N only), so the sum's order, and its bits, never depend on the
# thread count.
GRAD_CHUNKS = 32
# Output positions (GEMM columns) per tile of the GEMM routes: wide enough for BLAS to reach
# its speed, small enough that the tile's column matrix stays in cache.
TILE_COLUMNS = 1024
# Cap on the column matrix of a tile that batches several small images, so that batching
# never makes the scratch grow much past one image's.
BATCH_TILE_BYTES = 256 * 1024
# Output pixels per strip of the channel-vector weight gradient: a strip's transposed
# grad_output stays in L1 cache while every tap block reads it.
KVEC_STRIP_PIXELS = 512
# Fewest pixels per image for pointwise layers on the channel-vector kernels: on fewer,
# a block's weights are read for too few pixels to pay for loading them.
POINTWISE_DIRECT_MIN_PIXELS = 196
# Fewest vectors of channels (input and output, per group) for pointwise layers on the
# channel-vector kernels: with fewer, GEMM's packed panels are faster.
POINTWISE_MIN_CHANNEL_VECTORS = 2
# Most output channels for the pixel-vector weight gradient: it serves the thin layers that
# the channel-vector kernel leaves to GEMM, and GEMM is as fast past them.
PIXVEC_MOST_CHANNELS = 16
# Bytes of Winograd's transformed inputs and products per tile block: with the padded image
# they stay in L2 cache.
WINOGRAD_BLOCK_BYTES = 256 * 1024
# Largest transformed weight (16 * K * C items) for Winograd: every tile block reads all of
# it, and once it no longer fits in L2 cache the reads stall the products.
WINOGRAD_MAX_WEIGHT_BYTES = 2 * 1024 * 1024
# Fewest output pixels per image for Winograd: on smaller images the transforms of the tile
# edges cost more than the products save.
WINOGRAD_MIN_PIXELS = 196
# Fewest vectors of channels (both sides) for Winograd: with fewer, its transforms outweigh
# the products it saves.
WINOGRAD_MIN_CHANNEL_VECTORS = 4
# Most taps (C/groups * kH * kW) for the register-blocked direct kernel: past it, GEMM's
# blocking for cache wins.
DIRECT_MAX_TAPS = 600
# Most taps for the channel-vector direct kernel: past it, a block's weights no longer stay
# in L2 cache.
KVEC_DIRECT_MAX_TAPS = 2304
# Fewest taps for the direct kernel on layers with fewer output channels than its block (as
# depthwise ones): with fewer, a block that is mostly padding channels is slower than GEMM.
FEW_CHANNELS_DIRECT_MIN_TAPS = 25
# Below this many taps, the column-vector direct block is as fast as the channel-vector one
# where at most a quarter of its columns are padding (COLUMN_BLOCK_MIN_FILL), unless it is
# narrow where the build has a wide block and the channel-vector block holds two vectors of
# channels: then it has half the accumulator chains (ResNet-20's 16->32 stride-2 layer); or
# the channel-vector block reads the taps in threes (3x3 at stride 1): then it is 1.25-1.5x
# faster (ResNet-20's 16-channel layers and stem, 1 and 2 threads).
COLUMN_BLOCK_MAX_TAPS = 288
COLUMN_BLOCK_MIN_FILL = 0.75
# Independent accumulator chains a channel-vector block of one output row needs to hide the
# FMA latency; rows that give fewer take blocks in raster order across rows.
ROW_BLOCK_MIN_CHAINS = 8
# Fewest taps, in vectors of a block's output channels, for the channel-vector weight
# gradient: it first transposes each image's grad_output, which few taps do not pay for.
KVEC_WEIGHT_GRAD_MIN_TAP_VECTORS = 4


# -- what the loaded build offers -----------------------------------------------------------

class BuildSupport(NamedTuple):
    """What the loaded kernel build offers for one dtype (from :func:`build_support`).

    kvec_lanes : int
        Lanes of the channel-vector and Winograd kernels; 0 in the portable build, which
        has neither. The portable build's direct kernel runs on SSE2 registers, too narrow
        to beat GEMM, so there every ``'auto'`` convolution takes GEMM.
    kvec_most_pixels : dict of int to int
        ``{vectors of output channels per block: most pixels per block}``.
    kvec_threes_most_pixels : dict of int to int
        The same where a block reads its taps in threes (:func:`kvec_reads_threes`).
    direct_block : (int, int)
        Output channels and columns of the register-blocked direct kernel's narrow block.
    direct_wide_columns : int
        Columns of its wide block.
    direct_six_channels : int
        Output channels of its 6-channel block (direct_block[0] where the build has none).
    pixvec_lanes : int
        Columns per vector of the pixel-vector weight gradient; 0 where the build has none.
    """
    kvec_lanes: int
    kvec_most_pixels: dict
    kvec_threes_most_pixels: dict
    direct_block: tuple
    direct_wide_columns: int
    direct_six_channels: int
    pixvec_lanes: int

    @property
    def vector_kernels(self):
        """Whether this build has the AVX2/AVX-512 kernels (channel-vector, Winograd)."""
        return self.kvec_lanes > 0


@functools.lru_cache(maxsize=None)
def build_support(itemsize):
    """:class:`BuildSupport` of the loaded ``_conv`` for float32 (itemsize 4) or float64 (8).

    The CPU level is chosen once, when the kernels are imported (``FASTCONV_CPU``), so the
    answer is asked of the module once per dtype.
    """
    lanes, most_pixels = _conv.kvec_block_limits(itemsize)
    return BuildSupport(
        kvec_lanes=lanes, kvec_most_pixels=dict(most_pixels),
        kvec_threes_most_pixels=_conv.kvec_threes_limits(),
        direct_block=tuple(_conv.direct_block_shape(itemsize, False)),
        direct_wide_columns=_conv.direct_block_shape(itemsize, True)[1],
        direct_six_channels=_conv.direct_block_shape(itemsize, False, True)[0],
        pixvec_lanes=_conv.pixvec_lanes(itemsize))


# -- the problem and the routes -------------------------------------------------------------

class Problem(NamedTuple):
    """The shapes of one convolution: x (N, C, H, W), weight (K, C/groups, kH, kW), output
    (N, K, Ho, Wo), the (rows, columns) pairs stride, padding (top, left) and dilation,
    groups, and the bytes per item."""
    x_shape: tuple
    weight_shape: tuple
    out_shape: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    itemsize: int

    @classmethod
    def of(cls, args):
        """The problem of a :class:`fastconv._validation.Conv2dArgs` (or backward args)."""
        return cls(tuple(args.x.shape), tuple(args.weight.shape), tuple(args.out_shape),
                   args.stride, args.padding, args.dilation, args.groups, args.x.itemsize)

    @property
    def taps(self):
        """Products per output: C/groups * kH * kW."""
        _, cg, kh, kw = self.weight_shape
        return cg * kh * kw

    @property
    def pointwise(self):
        """A 1x1 kernel at stride 1 with no padding: every output pixel is one input pixel."""
        return (self.weight_shape[2:] == (1, 1) and self.stride == (1, 1)
                and self.padding == (0, 0))


class Route(enum.Enum):
    """The kernels that compute a convolution or one of its gradients."""
    GEMM = "gemm"                  # im2col of a tile, one GEMM per group (col2im for grad_input)
    DIRECT = "direct"              # register-blocked direct convolution over a padded image
    DIRECT_KVEC = "direct_kvec"    # channel-vector direct: vectors of output channels
    WINOGRAD = "winograd"          # Winograd F(2x2, 3x3)
    WEIGHT_GRAD_KVEC = "weight_grad_kvec"      # channel-vector weight gradient
    WEIGHT_GRAD_PIXVEC = "weight_grad_pixvec"  # pixel-vector weight gradient (thin layers)


class GemmTiles(NamedTuple):
    """Tiles of the GEMM routes: ``images`` per tile, or ``rows`` of output per tile of one
    image; ``stride_items``: one thread's scratch (column matrix, and a batched tile's
    products) in items."""
    images: int
    rows: int
    stride_items: int


class DirectBlock(NamedTuple):
    """The register-blocked direct kernel's block: ``wide`` columns, ``six`` channels, and
    the output channels and columns it computes per block (the weight is packed in blocks
    of ``channels``, the padded image sized for whole blocks of ``columns``)."""
    wide: bool
    six: bool
    channels: int
    columns: int


class KvecBlock(NamedTuple):
    """The channel-vector direct block: ``kv`` vectors of output channels by ``pixels``
    output pixels, within one output row (``by_rows``) or in raster order across rows."""
    kv: int
    pixels: int
    by_rows: bool


class WinogradBlock(NamedTuple):
    """Winograd's blocks: ``kv`` vectors of output channels by ``pixels`` tiles per product
    block, ``tile_block`` tiles transformed at a time; ``redo``: the direct plan that redoes
    images whose outputs are not all finite."""
    kv: int
    pixels: int
    tile_block: int
    redo: "ConvPlan"


class ConvPlan(NamedTuple):
    """A forward convolution's route and its blocks (a GemmTiles, DirectBlock, KvecBlock or
    WinogradBlock, by route)."""
    route: Route
    block: object


class KvecWeightGrad(NamedTuple):
    """The channel-vector weight gradient: ``problem`` as the kernel sees it (a pointwise
    layer's images as single rows, ``as_rows``), kv vectors of output channels,
    ``taps_per_block``, output rows per strip, and images per chunk of the sums."""
    problem: Problem
    as_rows: bool
    kv: int
    taps_per_block: int
    strip_rows: int
    chunk: int
    n_chunks: int


class PixvecWeightGrad(NamedTuple):
    """The pixel-vector weight gradient: images per chunk of the sums, and chunks."""
    chunk: int
    n_chunks: int


class BackwardPlan(NamedTuple):
    """Which kernel computes each gradient of conv2d_backward.

    input_route : Route or None
        None when grad_input is not asked for; GEMM (col2im); or the route of ``input_plan``.
    input_plan : ConvPlan or None
        For a route other than GEMM: the forward plan of the convolution of grad_output with
        the flipped, transposed weight (:func:`transposed_problem`).
    weight_route : Route or None
        None when grad_weight is not asked for; GEMM, WEIGHT_GRAD_KVEC or WEIGHT_GRAD_PIXVEC.
    weight_plan : KvecWeightGrad, PixvecWeightGrad or None
    gemm : GemmTiles or None
        The tiles of the GEMM backward kernel, when it computes anything: grad_input by
        col2im, grad_weight or grad_bias (always its job).
    gemm_chunk, gemm_n_chunks : int
        Images per chunk of the GEMM kernel's sums (whole tiles), and the chunks whose sums
        its scratch holds (0 when it computes only grad_input, or does not run).
    gemm_input, gemm_weight, gemm_bias : bool
        What the GEMM kernel computes.
    """
    input_route: Optional[Route]
    input_plan: Optional[ConvPlan]
    weight_route: Optional[Route]
    weight_plan: object
    gemm: Optional[GemmTiles]
    gemm_chunk: int
    gemm_n_chunks: int
    gemm_input: bool
    gemm_weight: bool
    gemm_bias: bool


# -- block sizes ----------------------------------------------------------------------------

def check_blas_dims(*dims):
    """Refuse a GEMM dimension that BLAS's C ints cannot address."""
    if max(dims) > INT_MAX:
        raise ValueError(f"conv2d: a matrix dimension of {max(dims)} exceeds what BLAS "
                         f"addresses ({INT_MAX})")


def grad_chunks(n, images=1):
    """(images per chunk, chunks) of the weight-gradient sums over n images: about
    n / GRAD_CHUNKS, in whole tiles of ``images``, never a function of the threads."""
    chunk = -(-(-(-n // GRAD_CHUNKS)) // images) * images
    return chunk, -(-n // chunk)


def gemm_tiles(p):
    """:class:`GemmTiles` for conv2d_gemm and conv2d_backward.

    A tile is about TILE_COLUMNS output positions (GEMM columns): large images are cut into
    strips of output rows, small ones batched several to a tile (whose column matrix stays
    within BATCH_TILE_BYTES), so every GEMM is about as wide.
    """
    n, k, ho, wo = p.out_shape
    ckk = p.taps
    pointwise = p.pointwise and p.x_shape[2:] == (ho, wo)
    images, rows = 1, ho
    if ho * wo > TILE_COLUMNS:
        rows = max(1, TILE_COLUMNS // wo)
    elif not pointwise:
        image_bytes = ckk * ho * wo * p.itemsize
        images = max(1, min(n, TILE_COLUMNS // (ho * wo), BATCH_TILE_BYTES // image_bytes))
    width = images * rows * wo
    # ho * wo: the output's row length is the GEMM's leading dimension
    check_blas_dims(ckk, width, k, ho * wo)
    items = ckk * width + (k // p.groups * width if images > 1 else 0)
    return GemmTiles(images, rows, _workspace.round_up(items, _dtype(p)))


def kvec_vectors(channels, lanes):
    """Vectors of output channels per channel-vector block: 2 where the group fills them
    (more accumulators in flight), else 1."""
    return 2 if channels >= 2 * lanes else 1


def kvec_reads_threes(p):
    """Whether the channel-vector block reads ``p``'s taps in threes of consecutive offsets
    (each input broadcast once for every tap of the row that reads it: three FMAs at stride
    1, three for two loads at stride 2), in row blocks: a kernel 3 wide at stride 1 or 2 and
    dilation 1 across."""
    return p.weight_shape[3] == 3 and p.stride[1] in (1, 2) and p.dilation[1] == 1


def kvec_block(p, support):
    """The channel-vector direct block for problem ``p``, or None where the build has none,
    the group's output channels fill less than one vector, or the column-vector block serves
    as well (few taps, columns that fill its vectors, not a narrow block against two vectors
    of channels, taps not read in threes; never for pointwise layers).
    """
    block = kvec_covering_block(p, support)
    if block is None:
        return None
    ho, wo = p.out_shape[2:]
    vw = support.direct_block[1]
    threes = block.by_rows and kvec_reads_threes(p)
    if (p.taps < COLUMN_BLOCK_MAX_TAPS and not threes
            and wo / (-(-wo // vw) * vw) >= COLUMN_BLOCK_MIN_FILL and not p.pointwise
            and (block.kv == 1 or direct_block(p, support).columns == support.direct_wide_columns)):
        return None
    return block


def kvec_covering_block(p, support):
    """The channel-vector direct block for problem ``p`` wherever the build has one and the
    group's output channels fill a vector, else None: kvec_block without its preference for
    the column-vector block.

    Pixels per block: the fewest blocks the registers allow, spread evenly, so the last is
    about as full as the others.
    """
    lanes = support.kvec_lanes
    k = p.weight_shape[0]
    kg = k // p.groups
    if lanes == 0 or kg < lanes:
        return None
    ho, wo = p.out_shape[2:]
    kv = kvec_vectors(kg, lanes)
    # a pointwise layer reads its input in place only in raster blocks: row blocks read whole
    # blocks of columns, past the end of a row; the kernel steps through a row 1 or 2 apart
    by_rows = wo * kv >= ROW_BLOCK_MIN_CHAINS and not p.pointwise and p.stride[1] <= 2
    n_pixels = wo if by_rows else ho * wo
    most = support.kvec_most_pixels[kv]
    if by_rows and kvec_reads_threes(p):
        most = support.kvec_threes_most_pixels[kv]
    blocks = -(-n_pixels // most)
    return KvecBlock(kv, -(-n_pixels // blocks), by_rows)


def direct_block(p, support):
    """The register-blocked direct kernel's block: wide unless it computes more padding
    columns than the narrow one; 6 channels where that leaves fewer zero channels."""
    kb, vw = support.direct_block
    wide = -(-p.out_shape[3] // (2 * vw)) * 2 <= -(-p.out_shape[3] // vw)
    kb6 = support.direct_six_channels
    kg = p.weight_shape[0] // p.groups
    six = kb6 != kb and -(-kg // kb6) * kb6 < -(-kg // kb) * kb
    return DirectBlock(wide, six, kb6 if six else kb, support.direct_wide_columns if wide else vw)


def direct_plan(p, support):
    """The 'direct' route: the channel-vector block where it serves, else the register-blocked
    one."""
    block = kvec_block(p, support)
    if block is not None:
        return ConvPlan(Route.DIRECT_KVEC, block)
    return ConvPlan(Route.DIRECT, direct_block(p, support))


def winograd_plan(p, support):
    """The 'winograd' route's blocks: a tile block of whole product blocks within
    WINOGRAD_BLOCK_BYTES, no more than the image has."""
    k, c = p.weight_shape[:2]
    ho, wo = p.out_shape[2:]
    kv = kvec_vectors(k, support.kvec_lanes)
    pixels = support.kvec_most_pixels[kv]
    th, tw = -(-ho // 2), -(-wo // 2)
    tile_block = pixels * max(1, WINOGRAD_BLOCK_BYTES // (16 * (c + k) * p.itemsize * pixels))
    tile_block = min(tile_block, -(-th * tw // pixels) * pixels)
    return ConvPlan(Route.WINOGRAD, WinogradBlock(kv, pixels, tile_block, direct_plan(p, support)))


# -- one predicate per route ----------------------------------------------------------------

def winograd_computes(p):
    """Whether Winograd's F(2x2, 3x3) computes ``p`` at all: a 3x3 kernel at stride 1, no
    dilation, no groups."""
    return (p.weight_shape[2:] == (3, 3) and p.stride == (1, 1) and p.dilation == (1, 1)
            and p.groups == 1)


def use_winograd(p, support):
    """Winograd for wide 3x3 stride-1 layers whose transformed weight stays in L2 cache, on
    images large enough for the tile edges not to dominate."""
    k, cg = p.weight_shape[:2]
    lanes = support.kvec_lanes
    return (support.vector_kernels and winograd_computes(p)
            and min(k, cg) >= WINOGRAD_MIN_CHANNEL_VECTORS * lanes
            and 16 * k * cg * p.itemsize <= WINOGRAD_MAX_WEIGHT_BYTES
            and p.out_shape[2] * p.out_shape[3] >= WINOGRAD_MIN_PIXELS)


def use_direct(p, support):
    """The direct kernels where their blocks beat GEMM's thin products: pointwise layers of
    enough channels and pixels (channel-vector, input read in place); layers with fewer output
    channels than a block and a large kernel (5x5 depthwise); up to KVEC_DIRECT_MAX_TAPS taps
    with the channel-vector block, DIRECT_MAX_TAPS without. Never in the portable build."""
    if not support.vector_kernels:
        return False
    k, cg, kh, kw = p.weight_shape
    lanes = support.kvec_lanes
    if kh * kw == 1:
        ho, wo = p.out_shape[2:]
        many_channels = min(cg, k // p.groups) >= POINTWISE_MIN_CHANNEL_VECTORS * lanes
        return p.pointwise and many_channels and ho * wo >= POINTWISE_DIRECT_MIN_PIXELS
    if k // p.groups < support.direct_block[0]:
        return kh * kw >= FEW_CHANNELS_DIRECT_MIN_TAPS
    if kvec_block(p, support) is not None:
        return p.taps <= KVEC_DIRECT_MAX_TAPS
    return p.taps <= DIRECT_MAX_TAPS


def transposed_problem(p):
    """grad_input as a forward convolution: for stride 1, grad_input[c] is the sum over k of
    grad_output[k] correlated with weight[k, c] turned by 180 degrees, on grad_output padded
    by (kH - 1) * dH - pad_top (likewise for columns). None where that padding would be
    negative (a cropping, which the forward kernels do not do) or the stride is not 1 (it
    would convolve mostly zeros)."""
    k, cg, kh, kw = p.weight_shape
    (dh, dw), (ph, pw) = p.dilation, p.padding
    pad = ((kh - 1) * dh - ph, (kw - 1) * dw - pw)
    if p.stride != (1, 1) or min(pad) < 0:
        return None
    groups = p.groups
    return Problem(p.out_shape, (groups * cg, k // groups, kh, kw), p.x_shape, (1, 1), pad,
                   p.dilation, groups, p.itemsize)


def use_transposed_input_grad(p, support, weight_is_finite):
    """The forward plan of grad_input as the transposed convolution where that is Winograd or
    the direct kernel (channel- or column-vector block; both beat GEMM + col2im once the
    input has a vector of channels), else None.

    ``weight_is_finite``: a callable, asked only once the shapes qualify (it reads the
    weight): grad_output's zero padding here is no term of torch's gradient, so an inf or NaN
    weight times it would put NaN where torch has none."""
    if not support.vector_kernels or p.weight_shape[1] < support.kvec_lanes:
        return None
    tp = transposed_problem(p)
    if tp is None or not weight_is_finite():
        return None
    if use_winograd(tp, support):
        return winograd_plan(tp, support)
    if use_direct(tp, support):
        return direct_plan(tp, support)
    return None


def use_kvec_weight_grad(p, support):
    """:class:`KvecWeightGrad` where the channel-vector weight gradient serves ``p``: output
    channels that fill a vector, a kernel larger than 1x1 or a pointwise layer of enough
    pixels (each image then one row), and enough taps per block; else None."""
    lanes = support.kvec_lanes
    k, cg, kh, kw = p.weight_shape
    kg = k // p.groups
    if lanes == 0 or kg < lanes:
        return None
    as_rows = p.pointwise
    if as_rows:
        n, c, h, w = p.x_shape
        if h * w < POINTWISE_DIRECT_MIN_PIXELS:
            return None
        # every output pixel is one input pixel: each image as one row, which the kernel sums
        # over in one pass (not Ho short rows)
        p = p._replace(x_shape=(n, c, 1, h * w), out_shape=(n, k, 1, h * w))
    elif kh * kw == 1:
        return None
    kv = kvec_vectors(kg, lanes)
    if p.taps < KVEC_WEIGHT_GRAD_MIN_TAP_VECTORS * kv * lanes:
        return None
    most_taps = support.kvec_most_pixels[kv]
    taps_per_block = -(-p.taps // -(-p.taps // most_taps))
    strip_rows = max(1, KVEC_STRIP_PIXELS // p.out_shape[3])
    return KvecWeightGrad(p, as_rows, kv, taps_per_block, strip_rows, *grad_chunks(p.x_shape[0]))


def use_pixvec_weight_grad(p, support):
    """:class:`PixvecWeightGrad` where the build has the pixel-vector weight gradient and
    ``p`` is a thin layer it serves (stride 1, no groups, a kernel larger than 1x1, at most
    PIXVEC_MOST_CHANNELS output channels); else None."""
    k, _, kh, kw = p.weight_shape
    if (support.pixvec_lanes == 0 or p.stride != (1, 1) or p.groups != 1 or kh * kw == 1
            or k > PIXVEC_MOST_CHANNELS):
        return None
    return PixvecWeightGrad(*grad_chunks(p.x_shape[0]))


# -- the selectors --------------------------------------------------------------------------

ALGORITHMS = ("auto", "gemm", "direct", "winograd")


def plan_conv2d(p, algorithm="auto", support=None):
    """The :class:`ConvPlan` of a forward convolution.

    ``algorithm``: 'auto' picks Winograd, then direct, where their predicates hold, else
    GEMM; 'gemm', 'direct' and 'winograd' force one (ValueError where Winograd cannot
    compute ``p`` or the build has no Winograd kernel). ``support``: the build's
    (:func:`build_support` of ``p``'s dtype by default).
    """
    support = build_support(p.itemsize) if support is None else support
    if algorithm not in ALGORITHMS:
        raise ValueError("algorithm must be 'auto', 'gemm', 'direct' or 'winograd', got "
                         f"{algorithm!r}")
    if algorithm == "winograd":
        if not winograd_computes(p):
            raise ValueError(
                "algorithm='winograd' takes 3x3 kernels at stride 1 with no dilation and "
                f"groups=1, got weight {p.weight_shape}, stride {p.stride}, dilation "
                f"{p.dilation}, groups={p.groups}")
        if not support.vector_kernels:
            raise ValueError("algorithm='winograd' needs the AVX2 or AVX-512 kernels; this "
                             "process runs the portable build (see fastconv.show_config())")
    if algorithm == "auto":
        algorithm = ("winograd" if use_winograd(p, support)
                     else "direct" if use_direct(p, support) else "gemm")
    if algorithm == "winograd":
        return winograd_plan(p, support)
    if algorithm == "direct":
        return direct_plan(p, support)
    return ConvPlan(Route.GEMM, gemm_tiles(p))


_plans = BoundedCache(512)


def cached_plan_conv2d(p, algorithm="auto"):
    """:func:`plan_conv2d` with the loaded build's support, by problem: a function of the
    problem alone (the build is fixed at import, the plan never reads the threads or the
    data), and a layer asks the same every call. Plans are immutable NamedTuples."""
    key = (p, algorithm)
    plan = _plans.get(key)
    return _plans.put(key, plan_conv2d(p, algorithm)) if plan is None else plan


def plan_conv2d_backward(p, needs_input_grad=True, needs_weight_grad=True,
                         needs_bias_grad=True, support=None, weight_is_finite=lambda: True):
    """The :class:`BackwardPlan` of conv2d_backward: grad_input by the transposed convolution
    (use_transposed_input_grad) or col2im; grad_weight by the channel-vector kernel, the
    pixel-vector kernel or GEMM, in that order of preference; grad_bias by the GEMM kernel.

    ``weight_is_finite``: see :func:`use_transposed_input_grad`.
    """
    support = build_support(p.itemsize) if support is None else support
    n = p.x_shape[0]
    input_route = input_plan = weight_route = weight_plan = None
    if n > 0 and needs_input_grad:
        input_plan = use_transposed_input_grad(p, support, weight_is_finite)
        input_route = Route.GEMM if input_plan is None else input_plan.route
    if n > 0 and needs_weight_grad:
        weight_plan = use_kvec_weight_grad(p, support)
        weight_route = Route.WEIGHT_GRAD_KVEC
        if weight_plan is None:
            weight_plan = use_pixvec_weight_grad(p, support)
            weight_route = Route.WEIGHT_GRAD_PIXVEC
        if weight_plan is None:
            weight_route = Route.GEMM
    gemm_input = input_route is Route.GEMM
    gemm_weight = weight_route is Route.GEMM
    gemm_bias = n > 0 and needs_bias_grad
    gemm, chunk, n_chunks = None, 0, 0
    if gemm_input or gemm_weight or gemm_bias:
        gemm = gemm_tiles(p)
        chunk, n_chunks = grad_chunks(n, gemm.images)  # whole tiles per chunk
        n_chunks = n_chunks if gemm_weight or gemm_bias else 0
    return BackwardPlan(input_route, input_plan, weight_route, weight_plan, gemm, chunk,
                        n_chunks, gemm_input, gemm_weight, gemm_bias)


def _dtype(p):
    return "float32" if p.itemsize == 4 else "float64"
