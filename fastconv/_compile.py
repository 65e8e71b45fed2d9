"""fastconv.compile: a model planned once and run as one nogil call per batch.

The planner walks the eval-mode model (BatchNorm2d folded into the convolution before it by
:func:`fastconv.nn.fuse`) and emits a flat list of ops for fastconv._kernels._compiled: each
reads one or two per-image buffers and writes one, activations fused into the op that feeds
them. Layers that only reshape or pass through (Flatten, Identity, Dropout in eval mode)
emit nothing: their output is their input's buffer.

Each convolution takes the kernel eager conv2d's planner (fastconv._conv_plan) picks for one
image (the channel-vector block in place of the register-blocked direct one, and of GEMM for
strided 1x1 layers, wherever it covers the layer), its weight packed here once: the direct,
channel-vector and Winograd kernels then run image by image inside the executor's threads,
on the same per-image code as eager's (_kernels/_conv_image.pxd), so their bits are eager's
(but for those strided 1x1 layers); the GEMM route is the executor's im2col + GEMM over a
group of images.

An activation that only channel-vector convolutions read (as their input, or as the residual
they add) is written by its producer straight into the zero-padded layout those readers'
kernel reads, and they read it in place (_Planner.pad_between_layers): the padding pass, a
copy of each layer's input, is gone where that holds (16 of ResNet-20's 21 convolutions).
The arena is zeroed once; only pixels are ever written into it.
"""
import copy
import math
import threading

import numpy as np

from . import _conv_plan, functional, nn
from ._conv_plan import Problem, Route
from ._kernels import _compiled
from ._threads import blas_single_threaded, get_num_threads
from .nn import containers, layers, models, pooling

__all__ = ["compile", "CompiledModel"]

# Op kinds and activations: the enums of _compiled.pyx
CONV, LINEAR, MAXPOOL, AVGPOOL, ACT, AFFINE, ADD, CONCAT, COPY = range(9)
NO_ACT, RELU, LEAKY, SIGMOID, TANH = range(5)
# Convolution kernels: the Route enum of _compiled.pyx
_ROUTES = {Route.GEMM: 0, Route.DIRECT: 1, Route.DIRECT_KVEC: 2, Route.WINOGRAD: 3}
_FUSABLE = (CONV, LINEAR, MAXPOOL, AVGPOOL, ACT, AFFINE, ADD)
_ALIASES = (containers.Identity, layers.Dropout)


class _Value:
    """A per-image activation: its buffer id and shape; ``fresh`` when the op that wrote it
    was the last one emitted and nothing else reads it yet (an activation may fuse into it)."""

    def __init__(self, buf, shape, fresh=False):
        self.buf, self.shape, self.fresh = buf, tuple(shape), fresh


class _Planner:
    def __init__(self):
        self.ops = []
        self.sizes = [0, 0]  # ids 0 and 1: the caller's input and output
        self.items = {}      # items per image of each buffer id
        self.col_items = 0   # per image: the GEMM route's im2col matrix and product
        self.work_items = 0  # per thread: the planned kernels' scratch
        self.routes = []     # each convolution's kernel, in order

    def buffer(self, shape):
        self.sizes.append(math.prod(shape))
        self.items[len(self.sizes) - 1] = self.sizes[-1]
        return len(self.sizes) - 1

    def emit(self, op, shape):
        op["dst"] = self.buffer(shape)
        self.ops.append(op)
        return _Value(op["dst"], shape, fresh=True)

    # -- the walk -------------------------------------------------------------------------

    def module(self, m, v, name):
        label = f"{name} ({type(m).__name__})" if name else type(m).__name__
        if isinstance(m, nn.Sequential):
            for child_name, child in m._modules.items():
                v = self.module(child, v, _join(name, child_name))
            return v
        if isinstance(m, _ALIASES):
            return v
        if isinstance(m, containers.Residual):
            # the shortcut first: the main path's last convolution may then add it
            shared = _Value(v.buf, v.shape)
            skip = shared if m.shortcut is None else self.module(
                m.shortcut, shared, _join(name, "shortcut"))
            main = self.module(m.main, shared, _join(name, "main"))
            return self.add(main, skip, label)
        if isinstance(m, containers.Concat):
            return self.concat(m, v, name, label)
        if isinstance(m, models.BasicBlock):
            shared = _Value(v.buf, v.shape)
            skip = shared if m.downsample is None else self.module(
                m.downsample, shared, _join(name, "downsample"))
            out = shared
            for child in ("conv1", "bn1", "relu", "conv2", "bn2"):
                out = self.module(getattr(m, child), out, _join(name, child))
            return self.module(m.relu_out, self.add(out, skip, label), _join(name, "relu_out"))
        for cls, method in _LEAVES:
            if type(m) is cls:
                return method(self, m, v, label)
        raise TypeError(f"compile: layer {label} is not supported by fastconv.compile")

    def out_shape(self, m, v):
        """The leaf's per-image output shape, from its own eager forward on zeros."""
        return m(np.zeros((1,) + v.shape, np.float32)).shape[1:]

    def conv(self, m, v, label):
        if m.groups != 1 or m.padding_mode != "zeros":
            raise TypeError(f"compile: layer {label} has groups={m.groups}, padding_mode="
                            f"{m.padding_mode!r}; compile supports groups=1 with zero padding")
        (ph, _), (pw, _) = m._explicit_padding()
        c, h, w = v.shape
        k, _, kh, kw = m.weight.data.shape
        _, ho, wo = self.out_shape(m, v)
        weight = np.ascontiguousarray(m.weight.data, dtype=np.float32)
        geometry = dict(C=c, H=h, W=w, K=k, kh=kh, kw=kw, sh=m.stride[0], sw=m.stride[1],
                        ph=ph, pw=pw, dh=m.dilation[0], dw=m.dilation[1], Ho=ho, Wo=wo,
                        bias=None if m.bias is None else _f32(m.bias.data))
        # the eager planner's kernel for one image (its routes but GEMM do not depend on
        # the batch), but for the register-blocked direct one (_executor_plan); the GEMM
        # route runs as the executor's im2col + GEMM of image groups
        problem = Problem((1, c, h, w), weight.shape, (1, k, ho, wo), tuple(m.stride),
                          (ph, pw), tuple(m.dilation), 1, 4)
        support = _support()
        plan = _executor_plan(_conv_plan.plan_conv2d(problem, support=support), problem,
                              support)
        planned = _planned_kernel(plan, problem, weight, geometry)
        self.routes.append(Route.GEMM.value if planned is None else plan.route.value)
        if planned is None:
            self.col_items = max(self.col_items, (c * kh * kw + k) * ho * wo)
            planned = dict(weight=_f32(weight.reshape(k, -1)))
        else:
            self.work_items = max(self.work_items, planned.pop("work_items"))
            planned["split"] = k * c * kh * kw * ho * wo >= _SPLIT_MIN_MACS
            # weights that outweigh the input: each thread a share of the channels (and so
            # of the weights to read) rather than of the rows
            planned["by_channels"] = k * c * kh * kw >= c * h * w
        return self.emit(dict(kind=CONV, src=v.buf, **geometry, **planned), (k, ho, wo))

    def linear(self, m, v, label):
        if len(v.shape) != 1:
            raise ValueError(f"compile: layer {label} gets per-image shape {v.shape}; compile "
                             f"supports Linear on flat features (put a Flatten before it)")
        return self.emit(dict(kind=LINEAR, src=v.buf, C=m.in_features, K=m.out_features,
                              weight=_f32(m.weight.data),
                              bias=None if m.bias is None else _f32(m.bias.data)),
                         (m.out_features,))

    def pool(self, m, v, label, kind, kernel, stride, padding, dilation=(1, 1), **extra):
        c, h, w = v.shape
        _, ho, wo = self.out_shape(m, v)
        return self.emit(dict(kind=kind, src=v.buf, C=c, H=h, W=w, kh=kernel[0], kw=kernel[1],
                              sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[1],
                              dh=dilation[0], dw=dilation[1], Ho=ho, Wo=wo, **extra), (c, ho, wo))

    def max_pool(self, m, v, label):
        return self.pool(m, v, label, MAXPOOL, _pair(m.kernel_size), _pair(m.stride),
                         _pair(m.padding), _pair(m.dilation))

    def avg_pool(self, m, v, label):
        if m.ceil_mode:
            raise TypeError(f"compile: layer {label} has ceil_mode=True, which compile does "
                            f"not support for average pooling")
        return self.pool(m, v, label, AVGPOOL, _pair(m.kernel_size), _pair(m.stride),
                         _pair(m.padding), count_include_pad=bool(m.count_include_pad),
                         divisor=float(m.divisor_override or 0))

    def adaptive_pool(self, m, v, label):
        _, h, w = v.shape
        _, ho, wo = self.out_shape(m, v)
        if h % ho or w % wo:
            raise TypeError(f"compile: layer {label} pools {h}x{w} to {ho}x{wo}; compile "
                            f"supports adaptive pooling to sizes that divide the input")
        kind = AVGPOOL if isinstance(m, pooling.AdaptiveAvgPool2d) else MAXPOOL
        window = (h // ho, w // wo)
        return self.pool(m, v, label, kind, window, window, (0, 0))

    def activation(self, m, v, label):
        act, slope = _ACTIVATIONS[type(m)](m)
        last = self.ops[-1] if self.ops else None
        if v.fresh and last is not None and last["dst"] == v.buf and last["kind"] in _FUSABLE \
                and last.get("act", NO_ACT) == NO_ACT:
            last["act"], last["slope"] = act, slope
            return v
        return self.emit(dict(kind=ACT, src=v.buf, size=math.prod(v.shape), act=act,
                              slope=slope), v.shape)

    def batch_norm(self, m, v, label):
        if not m.track_running_stats or len(v.shape) != 3:
            raise TypeError(f"compile: layer {label} normalizes by the batch's statistics "
                            f"(track_running_stats=False); compile needs running statistics")
        scale = 1 / np.sqrt(m.running_var.astype(np.float64) + m.eps)
        shift = -m.running_mean.astype(np.float64) * scale
        if m.affine:
            gamma = m.weight.data.astype(np.float64)
            scale, shift = scale * gamma, shift * gamma + m.bias.data.astype(np.float64)
        c, h, w = v.shape
        return self.emit(dict(kind=AFFINE, src=v.buf, C=c, H=h, W=w, size=c * h * w,
                              weight=_f32(scale), bias=_f32(shift)), v.shape)

    def flatten(self, m, v, label):
        ndim = len(v.shape) + 1
        start, end = m.start_dim % ndim, m.end_dim % ndim
        if start != 1 or end != ndim - 1:
            raise TypeError(f"compile: layer {label} has start_dim={m.start_dim}, end_dim="
                            f"{m.end_dim}; compile supports flattening all but the batch axis")
        return _Value(v.buf, (math.prod(v.shape),))

    def add(self, a, b, label):
        if a.shape != b.shape:
            raise ValueError(f"compile: {label} adds shapes {a.shape} and {b.shape}")
        last = self.ops[-1] if self.ops else None
        for fresh, other in ((a, b), (b, a)):
            # a channel-vector convolution adds the other term in its blocks (and then
            # takes the ReLU after the addition): the same sum, one pass fewer
            if (fresh.fresh and last["dst"] == fresh.buf and other.buf != fresh.buf
                    and last["kind"] == CONV and last.get("route") == _ROUTES[Route.DIRECT_KVEC]
                    and last.get("act", NO_ACT) == NO_ACT and not last.get("residual")):
                last["src2"], last["residual"] = other.buf, True
                return _Value(fresh.buf, fresh.shape, fresh=True)
        c, h, w = a.shape if len(a.shape) == 3 else (1, 1, math.prod(a.shape))
        return self.emit(dict(kind=ADD, src=a.buf, src2=b.buf, size=c * h * w, C=c, H=h, W=w,
                              split=len(a.shape) == 3 and c * h * w >= _SPLIT_MIN_ITEMS),
                         a.shape)

    def concat(self, m, v, name, label):
        if m.dim not in (1, -3) or len(v.shape) != 3:
            raise TypeError(f"compile: layer {label} concatenates along dim={m.dim}; compile "
                            f"supports the channel axis of (N, C, H, W)")
        shared = _Value(v.buf, v.shape)
        outs = [self.module(branch, shared, _join(name, i))
                for i, branch in m._modules.items()]
        out = outs[0]
        for nxt in outs[1:]:
            if out.shape[1:] != nxt.shape[1:]:
                raise ValueError(f"compile: {label} concatenates shapes {out.shape} and "
                                 f"{nxt.shape}")
            shape = (out.shape[0] + nxt.shape[0],) + out.shape[1:]
            out = self.emit(dict(kind=CONCAT, src=out.buf, src2=nxt.buf,
                                 size=math.prod(out.shape), size2=math.prod(nxt.shape)), shape)
        if len(outs) == 1 and out.buf == v.buf:
            return _Value(v.buf, v.shape)
        out.fresh = len(outs) > 1
        return out

    def finish(self, v):
        """Route the final value into buffer 1, the caller's output, and keep padded the
        activations that only channel-vector convolutions read (pad_between_layers)."""
        if v.buf == 0:
            size = math.prod(v.shape)
            self.ops.append(dict(kind=COPY, src=0, dst=1, size=size))
            self.items[1] = size
        else:
            for op in self.ops:
                for key in ("src", "src2", "dst"):
                    if op.get(key) == v.buf:
                        op[key] = 1
            self.sizes[v.buf] = 0
            self.items[1] = self.items.pop(v.buf)
        self.pad_between_layers()
        for op in self.ops:
            for key, items in (("src", "in_items"), ("src2", "in2_items"), ("dst", "out_items")):
                if key in op:
                    op[items] = self.items[op[key]]

    def pad_between_layers(self):
        """Write an activation straight into the padded layout its readers' kernel reads,
        where every reader is a channel-vector convolution that reads it as its input (all
        with the same layout: not split by column phase, at any stride) or adds it as its
        residual, and its producer is one in row blocks: the readers then skip their padding
        pass (a copy of the input per layer). The arena starts zeroed and only pixels are ever written, so
        the borders stay the padding's zeros; the values are those the padding pass would
        have copied, so the bits do not change. The network's input and output (buffers 0
        and 1) stay dense."""
        readers = {}
        for op in self.ops:
            for role in ("src", "src2"):
                if role in op:
                    readers.setdefault(op[role], []).append((op, role))
        kvec = _ROUTES[Route.DIRECT_KVEC]

        def in_row_blocks(op):
            return (op["kind"] == CONV and op.get("route") == kvec and op["by_rows"]
                    and op.get("act", NO_ACT) in (NO_ACT, RELU))

        for producer in self.ops:
            buf = producer["dst"]
            if buf < 2 or not in_row_blocks(producer):
                continue
            layouts = set()
            for op, role in readers.get(buf, ()):
                if role == "src2" and in_row_blocks(op):
                    continue
                if (role != "src" or op["kind"] != CONV or op.get("route") != kvec
                        or op["Hp"] < op["ph"] + op["H"] or op["Wp"] < op["pw"] + op["W"]):
                    break
                layouts.add((op["Hp"], op["Wp"], op["ph"], op["pw"]))
            else:
                if len(layouts) != 1:
                    continue
                (hp, wp, ph, pw), = layouts
                at = (hp * wp, ph * wp + pw, wp)
                producer["out_at"] = at
                for op, role in readers[buf]:
                    if role == "src":
                        op["src_padded"] = True
                    else:
                        op["res_at"] = at
                self.sizes[buf] = self.items[buf] = producer["K"] * hp * wp


def _join(prefix, child):
    """The dotted module path of ``child`` under ``prefix`` (state_dict style)."""
    return f"{prefix}.{child}" if prefix else str(child)


def _support():
    """The planner's BuildSupport for float32, checked against the kernels _compiled was
    built with: both modules are loaded for the same CPU level, unless the build is stale."""
    support = _conv_plan.build_support(4)
    kb, kb6, vw, wide, lanes, most_pixels = _compiled.kernel_shapes()
    if (support.direct_block, support.direct_six_channels, support.direct_wide_columns,
            support.kvec_lanes, support.kvec_most_pixels) != ((kb, vw), kb6, vw * wide, lanes,
                                                              most_pixels):
        raise RuntimeError("compile: fastconv._kernels._compiled and _conv were built for "
                           "different CPU levels (see fastconv.show_config()); rebuild "
                           "fastconv")
    return support


def _executor_plan(plan, problem, support):
    """``plan``, eager's for one image, with the channel-vector block in place of the
    register-blocked direct one wherever it covers the layer: with each thread convolving
    its own images one at a time it is the faster of the two (eager's threads share one
    batch's blocks), and it sums each output's terms in the same order, so the bits stay
    eager's. A strided 1x1 layer (a ResNet's downsampling shortcut) takes it in place of
    GEMM too: it reads the input where it lies, where GEMM gathers it first, and at batch 1
    ResNet-20 ran 1-3% faster so (6 of 6 alternating rounds); its bits are then not
    eager's GEMM's, only as close."""
    strided_pointwise = (plan.route is Route.GEMM and problem.weight_shape[2:] == (1, 1)
                         and problem.stride != (1, 1))
    if plan.route is Route.DIRECT or strided_pointwise:
        block = _conv_plan.kvec_covering_block(problem, support)
        if block is not None:
            return _conv_plan.ConvPlan(Route.DIRECT_KVEC, block)
    return plan


def _planned_kernel(plan, problem, weight, geometry):
    """The Op fields of a convolution on a planned kernel (direct, channel-vector or
    Winograd), its weight packed once as fastconv.functional packs it per call, with
    "work_items", its scratch; None for the GEMM route (and for the channel-vector one
    where every window lies in the padding, which GEMM computes as well)."""
    route = plan.route
    if route is Route.DIRECT:
        wpack, hp, wp, items = functional._direct_operands(plan.block, problem, weight)
        return dict(route=_ROUTES[route], weight=wpack, Hp=hp, Wp=wp, wide=plan.block.wide,
                    six=plan.block.six, work_items=items)
    if route is Route.DIRECT_KVEC:
        ops = functional._kvec_operands(plan.block, problem, weight)
        if ops is None:
            return None
        return dict(route=_ROUTES[route], weight=ops.wpack, tap_off=ops.taps,
                    row_taps=ops.row_taps.reshape(-1), pix_off=ops.pix, run=ops.run,
                    Hp=ops.hp, Wp=ops.wp,
                    kv=plan.block.kv, pixels=plan.block.pixels, by_rows=plan.block.by_rows,
                    work_items=ops.stride_items)
    if route is Route.WINOGRAD:
        redo = _planned_kernel(plan.block.redo, problem, weight, geometry)
        if redo is None:
            return None
        upack, tap_off, items = functional._winograd_operands(plan.block, problem, weight, 1)
        return dict(route=_ROUTES[route], weight=upack, tap_off=tap_off, kv=plan.block.kv,
                    pixels=plan.block.pixels, tile_block=plan.block.tile_block,
                    work_items=max(items, redo["work_items"]),
                    redo=dict(kind=CONV, **geometry, **redo))
    return None


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32).ravel()


def _pair(value):
    return layers._pair(value, "size")


_ACTIVATIONS = {
    layers.ReLU: lambda m: (RELU, 0.0),
    layers.LeakyReLU: lambda m: (LEAKY, float(m.negative_slope)),
    layers.Sigmoid: lambda m: (SIGMOID, 0.0),
    layers.Tanh: lambda m: (TANH, 0.0),
}
_LEAVES = [(layers.Conv2d, _Planner.conv), (layers.Linear, _Planner.linear),
           (layers.MaxPool2d, _Planner.max_pool), (layers.AvgPool2d, _Planner.avg_pool),
           (pooling.AdaptiveAvgPool2d, _Planner.adaptive_pool),
           (pooling.AdaptiveMaxPool2d, _Planner.adaptive_pool),
           (layers.BatchNorm2d, _Planner.batch_norm), (layers.Flatten, _Planner.flatten)]
_LEAVES += [(cls, _Planner.activation) for cls in _ACTIVATIONS]


# Fewest multiply-adds (K * C*kH*kW * Ho*Wo) for a convolution to split one image's blocks
# over the threads when there are fewer image groups than threads (batch 1): below it the
# split saved less than the fork and join of a region per op cost (LeNet's layers, 0.1-0.2 M,
# stay whole; ResNet-20's 3x3 layers, 2.4 M, split). With one region and a barrier per op,
# splitting ResNet-20's stem (0.44 M) too saved ~2 of 470 us: not worth a lower bound.
_SPLIT_MIN_MACS = 1 << 20
# Fewest items of a residual addition to split by rows with the convolutions around it, so
# that each thread adds the rows it computed and keeps them in its cache for the next layer.
_SPLIT_MIN_ITEMS = 4096

# Images per group: wider GEMMs for small layers, columns that stay in cache (LeNet conv1:
# 4 images of 25 x 784 im2col columns, 314 KB)
_GROUP = 4


class CompiledModel:
    """An eval-mode model planned for inputs (N, *input_shape[1:]) with N <= max_batch.

    Call it as ``cm(x)`` or ``cm(x, out=buffer)``. Each call runs every layer in one nogil
    call with no allocation but the output (none with ``out=``); each calling thread gets
    its own activation arena, so several Python threads may call it at once.

    ``routes``: the kernel of each convolution, in order ('gemm', 'direct', 'direct_kvec',
    'winograd'; see fastconv._conv_plan): as eager ``conv2d`` plans it for one image, but
    'direct_kvec' wherever that block covers an eager 'direct' layer or a strided 1x1
    'gemm' one.
    """

    def __init__(self, program, input_shape, output_shape, max_batch, dtype, routes):
        self._program = program
        self.routes = tuple(routes)
        self.input_shape, self.output_shape = tuple(input_shape), tuple(output_shape)
        self.max_batch, self.dtype = max_batch, np.dtype(dtype)
        self._local = threading.local()

    def _arena(self, n_threads):
        items = n_threads * self._program.thread_items
        arena = getattr(self._local, "arena", None)
        if arena is None or arena.size < items:
            # zeros: the padding of the buffers kept padded (_Planner.pad_between_layers)
            arena = self._local.arena = np.zeros(max(items, 1), np.float32)
        return arena

    def __call__(self, x, out=None):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"CompiledModel: x must be a numpy array, got {type(x).__name__}")
        if x.dtype != self.dtype:
            raise TypeError(f"CompiledModel: compiled for {self.dtype}, got x of dtype {x.dtype}")
        if x.ndim != len(self.input_shape) + 1 or x.shape[1:] != self.input_shape:
            raise ValueError(f"CompiledModel: expected x of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {list(x.shape)}")
        n = x.shape[0]
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"CompiledModel: batch of {n} images; compiled for 1 to "
                             f"max_batch={self.max_batch}")
        shape = (n,) + self.output_shape
        if out is None:
            out = np.empty(shape, self.dtype)
        elif not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != self.dtype \
                or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"CompiledModel: out must be a writeable C-contiguous {self.dtype} "
                             f"array of shape {list(shape)}, got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        x = np.ascontiguousarray(x)
        threads = get_num_threads()
        # an arena per thread: each runs groups of images, or (fewer groups than threads)
        # its part of each image's large layers
        arena = self._arena(max(1, threads))
        if n == 1:
            # one image: GEMMs too small for BLAS to thread (and none inside the OpenMP
            # regions of split layers), so the ~4 µs of switching BLAS to one thread and
            # back is saved
            self._program.run(x.reshape(-1), out.reshape(-1), arena, n, threads)
        else:
            with blas_single_threaded():
                self._program.run(x.reshape(-1), out.reshape(-1), arena, n, threads)
        return out

    def __repr__(self):
        return (f"CompiledModel(input_shape={(self.max_batch,) + self.input_shape}, "
                f"output_shape={self.output_shape}, ops={self._program.n_ops})")


def compile(model, input_shape, dtype=np.float32, max_batch=None):
    """Plan ``model`` for eval-mode inference on inputs of ``input_shape`` (N, C, H, W).

    The plan copies the model's weights (BatchNorm2d folded into the convolution before it,
    as :func:`fastconv.nn.fuse` does), so later changes to ``model`` do not reach it, and
    ``model`` itself is left as it was. Dropout is the identity, BatchNorm uses its running
    statistics.

    Parameters
    ----------
    model : Module
        Built from Sequential, Residual, Concat, BasicBlock, Conv2d (groups=1, zero
        padding), Linear, MaxPool2d, AvgPool2d, adaptive pooling to sizes that divide the
        input, BatchNorm2d, ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Dropout and Identity.
    input_shape : tuple of int
        (N, C, H, W) or (N, features); N is the largest batch unless max_batch is given.
    dtype : numpy dtype, default float32
        Only float32 is compiled.
    max_batch : int, optional
        The largest batch a call may pass (default input_shape[0]).

    Returns
    -------
    CompiledModel
        ``cm(x, out=None)`` -> (N, *output_shape), N from 1 to max_batch.

    Raises
    ------
    TypeError
        A layer compile does not support (the error names it), or a dtype other than float32.
    ValueError
        A malformed input_shape or max_batch, or shapes that do not fit the model.
    """
    if np.dtype(dtype) != np.float32:
        raise TypeError(f"compile: dtype must be float32, got {np.dtype(dtype)}")
    input_shape = tuple(input_shape)
    if len(input_shape) < 2 or not all(isinstance(s, (int, np.integer)) and s >= 1
                                       for s in input_shape):
        raise ValueError(f"compile: input_shape must be (N, C, H, W) or (N, features) of "
                         f"positive ints, got {input_shape}")
    max_batch = input_shape[0] if max_batch is None else max_batch
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) \
            or max_batch < 1:
        raise ValueError(f"compile: max_batch must be a positive int, got {max_batch!r}")
    image_shape = tuple(int(s) for s in input_shape[1:])
    planner, out_shape = _plan(model, image_shape)
    program = _compiled.Program(planner.ops, planner.sizes, planner.col_items,
                                planner.work_items, math.prod(image_shape),
                                math.prod(out_shape), _GROUP)
    return CompiledModel(program, image_shape, out_shape, int(max_batch), dtype, planner.routes)


def _plan(model, image_shape):
    """(the finished _Planner, the per-image output shape) of an eval-mode, fused copy of
    ``model`` on per-image inputs of image_shape."""
    planned = copy.deepcopy(model)
    planned.eval()
    nn.fuse(planned, inplace=True)
    planner = _Planner()
    planner.items[0] = math.prod(image_shape)
    out = planner.module(planned, _Value(0, image_shape), "")
    planner.finish(out)
    return planner, out.shape
