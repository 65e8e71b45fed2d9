"""Bits that do not depend on the thread count: every layer, loss and convolution route,
forward and backward, and whole training runs, give bitwise the same results on 1, 2, 3
and 4 threads.

The batch sizes are those where splitting work by the thread count shows: 1 and 7 (fewer
images than some thread counts, odd splits), 64 and 100 (the fully connected products of
LeNet split unevenly), 256 (many chunks of the weight-gradient sums).
"""
import numpy as np
import pytest
import threadpoolctl

import fastconv
import fastconv.optim
from fastconv import functional as F
from fastconv import nn

BATCHES = (1, 7, 64, 100, 256)
THREADS = (1, 2, 3, 4)
DTYPES = (np.float32, np.float64)


def _assert_bitwise(got, want, what):
    assert len(got) == len(want), what
    for i, (a, b) in enumerate(zip(got, want)):
        assert (a is None) == (b is None), (what, i)
        if a is None:
            continue
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, (what, i)
        # bitwise: the raw bytes (NaNs and signed zeros included)
        if a.tobytes() != b.tobytes():
            diff = np.flatnonzero(a.reshape(-1) != b.reshape(-1))
            raise AssertionError(f"{what}: result {i} differs at {diff.size} of {a.size} "
                                 f"elements (first flat index {diff[:1]})")


def _across_threads(compute, what):
    """compute() on every thread count, each bitwise equal to the 1-thread result. NumPy's
    BLAS gets the same count, as OMP_NUM_THREADS would give it: no path may hand a sum to
    a multi-threaded BLAS either."""
    results = {}
    for n in THREADS:
        with fastconv.threads(n), threadpoolctl.threadpool_limits(n, user_api="blas"):
            results[n] = compute()
    for n in THREADS[1:]:
        _assert_bitwise(results[n], results[1], f"{what}, {n} threads vs 1")


# name -> (layer factory, input shape after the batch dimension)
LAYERS = {
    # convolution routes, as 'auto' picks them for these shapes (direct, channel-vector,
    # pixel-vector and GEMM weight gradients, direct and GEMM input gradients)
    "conv-lenet1": (lambda: nn.Conv2d(1, 6, 5, padding=2), (1, 12, 12)),
    "conv-lenet2": (lambda: nn.Conv2d(6, 16, 5), (6, 12, 12)),
    "conv-strided": (lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1), (3, 9, 10)),
    "conv-grouped-dilated": (lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2),
                             (4, 7, 8)),
    "conv-depthwise": (lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8), (8, 6, 6)),
    "conv-pointwise": (lambda: nn.Conv2d(32, 32, 1), (32, 14, 14)),
    "conv-1x1-small": (lambda: nn.Conv2d(5, 3, 1, bias=False), (5, 4, 4)),
    "conv-16ch-3x3": (lambda: nn.Conv2d(16, 16, 3, padding=1), (16, 8, 8)),
    # the channel-vector block at stride 2 (taps in threes, the input not split by phase),
    # padded and read in place
    "conv-3x3-s2-32ch": (lambda: nn.Conv2d(16, 32, 3, stride=2, padding=1), (16, 10, 12)),
    "conv-3x3-s2-in-place": (lambda: nn.Conv2d(16, 32, 3, stride=2), (16, 11, 13)),
    # more than one tile of output rows per image (GEMM strips; col2im across strips)
    "conv-large-image": (lambda: nn.Conv2d(2, 4, 3, padding=1), (2, 36, 36)),
    "conv-large-image-strided": (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1), (2, 70, 70)),
    "conv-reflect": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (3, 5, 6)),
    "conv-replicate": (lambda: nn.Conv2d(3, 4, 3, padding=2, padding_mode="replicate"),
                       (3, 40, 36)),
    "conv-circular": (lambda: nn.Conv2d(3, 4, (3, 5), padding=(1, 2), padding_mode="circular"),
                      (3, 40, 36)),
    "maxpool-2": (lambda: nn.MaxPool2d(2), (3, 8, 8)),
    "maxpool-3s2p1-ceil-dilated": (lambda: nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
                                   (2, 11, 9)),
    "maxpool-3s2-large-image": (lambda: nn.MaxPool2d(3, 2), (1, 41, 40)),
    "avgpool-2": (lambda: nn.AvgPool2d(2), (3, 8, 8)),
    "avgpool-3s2p1-large-image": (lambda: nn.AvgPool2d(3, 2, 1), (1, 41, 40)),
    "avgpool-3s2p1-ceil-nopad": (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True,
                                                      count_include_pad=False), (2, 11, 9)),
    "avgpool-divisor": (lambda: nn.AvgPool2d(2, divisor_override=3), (2, 5, 5)),
    # LeNet's three fully connected layers, a wide one and a tiny one
    "linear-400-120": (lambda: nn.Linear(400, 120), (400,)),
    "linear-120-84": (lambda: nn.Linear(120, 84), (120,)),
    "linear-84-10": (lambda: nn.Linear(84, 10), (84,)),
    "linear-10-300": (lambda: nn.Linear(10, 300), (10,)),
    "linear-3d-input": (lambda: nn.Linear(7, 5), (3, 7)),
    "flatten": (lambda: nn.Flatten(), (2, 3, 4)),
    # at batch 256, several chunks of the elementwise kernels (32768 elements, 4096 for
    # sigmoid and tanh), the last one short
    "relu": (lambda: nn.ReLU(), (3, 7, 7)),
    "leaky-relu": (lambda: nn.LeakyReLU(0.1), (3, 7, 7)),
    "sigmoid": (lambda: nn.Sigmoid(), (3, 7, 7)),
    "tanh": (lambda: nn.Tanh(), (3, 7, 7)),
    "dropout": (lambda: nn.Dropout(0.3), (3, 5, 5)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(6), (6, 3)),
    "batchnorm1d-2d-input": (lambda: nn.BatchNorm1d(20), (20,)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(4), (4, 5, 5)),
    "batchnorm2d-eval": (lambda: nn.BatchNorm2d(4).eval(), (4, 5, 5)),
    # the ResNet round's layers and containers: each forms sums of its own
    "adaptive-avgpool-global": (lambda: nn.AdaptiveAvgPool2d((1, 1)), (4, 7, 7)),
    "adaptive-avgpool-uneven": (lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 7, 5)),
    "adaptive-maxpool-uneven": (lambda: nn.AdaptiveMaxPool2d((3, 2)), (2, 7, 5)),
    "softmax": (lambda: nn.Softmax(1), (10,)),
    "log-softmax": (lambda: nn.LogSoftmax(1), (10,)),
    "dropout2d": (lambda: nn.Dropout2d(0.3), (3, 5, 5)),
    "residual-projection": (lambda: nn.Residual(
        nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(3, 8, 1, stride=2), nn.BatchNorm2d(8))), (3, 8, 8)),
    # the shortcut's gradient added inside conv1's input-gradient pass (channel-vector block)
    "basic-block-32ch": (lambda: nn.models.BasicBlock(32, 32), (32, 8, 8)),
    "concat": (lambda: nn.Concat(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 2, 1)), (3, 6, 6)),
    "sync-batchnorm-one-process": (lambda: nn.SyncBatchNorm(4), (4, 5, 5)),
}


def _layer_results(name, batch, dtype):
    """Forward output, grad_input, parameter gradients and buffers of one layer."""
    make, shape = LAYERS[name]
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch,) + shape).astype(dtype)
    fastconv.manual_seed(0)  # the same init and dropout mask on every thread count
    layer = make().to(dtype)
    out = layer(x)
    grad_input = layer.backward(rng.standard_normal(out.shape).astype(dtype))
    return ((out, grad_input) + tuple(p.grad for p in layer.parameters())
            + tuple(b for _, b in layer.named_buffers()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_layer_forward_and_backward_match_across_thread_counts(name, dtype):
    for batch in BATCHES:
        if batch == 1 and name == "batchnorm1d-2d-input":
            continue  # one value per channel: training refuses it (as torch does)
        _across_threads(lambda: _layer_results(name, batch, dtype), f"{name}, batch {batch}")


LOSSES = {
    "cross-entropy": lambda: nn.CrossEntropyLoss(),
    "cross-entropy-sum": lambda: nn.CrossEntropyLoss(reduction="sum"),
    "cross-entropy-smoothed": lambda: nn.CrossEntropyLoss(label_smoothing=0.1),
    "nll": lambda: nn.NLLLoss(),
    "mse": lambda: nn.MSELoss(),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_and_its_gradient_match_across_thread_counts(name, dtype):
    for batch in BATCHES:
        rng = np.random.default_rng(batch)
        logits = rng.standard_normal((batch, 10)).astype(dtype)
        target = (rng.integers(0, 10, batch) if name != "mse"
                  else rng.standard_normal((batch, 10)).astype(dtype))

        def compute():
            loss_fn = LOSSES[name]()
            return loss_fn(logits, target), loss_fn.backward()
        _across_threads(compute, f"{name}, batch {batch}")


# Every convolution algorithm forced, with the gradients of each: (x shape after the
# batch, weight shape, conv2d keyword arguments, algorithms).
CONV_ROUTES = {
    "3x3-pad": ((4, 7, 6), (8, 4, 3, 3), dict(padding=1), ("gemm", "direct", "winograd")),
    "5x5-lenet2": ((6, 12, 12), (16, 6, 5, 5), {}, ("gemm", "direct")),
    "stride2-grouped": ((6, 9, 8), (4, 3, 3, 3), dict(stride=2, padding=1, groups=2),
                        ("gemm", "direct")),
    "pointwise-32": ((32, 14, 14), (32, 32, 1, 1), {}, ("gemm", "direct")),
    # the channel-vector block reading its taps in threes, forward and grad_input (the
    # transposed convolution): one vector of output channels, then two
    "3x3-16-channels": ((16, 12, 12), (16, 16, 3, 3), dict(padding=1), ("gemm", "direct")),
    "3x3-32-channels": ((32, 8, 16), (32, 32, 3, 3), dict(padding=1), ("direct",)),
    # stride 2 on the channel-vector block where the column block would be narrow
    "stride2-16-to-32": ((16, 10, 26), (32, 16, 3, 3), dict(stride=2, padding=1),
                         ("gemm", "direct")),
    # grad_input's column-stride-2 col2im over rows of two register pairs (float32: 64
    # columns), in tiles of 25 and 5 output rows
    "stride2-col2im-wide": ((4, 60, 80), (8, 4, 3, 3), dict(stride=2, padding=1), ("gemm",)),
}


def _route_results(x_shape, w_shape, kwargs, algorithm, batch, dtype):
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch,) + x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    out = F.conv2d(x, w, b, algorithm=algorithm, **kwargs)
    grads = F.conv2d_backward(rng.standard_normal(out.shape).astype(dtype), x, w, **kwargs)
    return (out,) + grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("route", CONV_ROUTES)
def test_every_convolution_algorithm_matches_across_thread_counts(route, dtype):
    x_shape, w_shape, kwargs, algorithms = CONV_ROUTES[route]
    for algorithm in algorithms:
        if algorithm == "winograd" and F._conv.kvec_block_limits(np.dtype(dtype).itemsize)[0] == 0:
            continue  # the portable build has no Winograd kernel (conv2d refuses it)
        for batch in BATCHES:
            _across_threads(
                lambda: _route_results(x_shape, w_shape, kwargs, algorithm, batch, dtype),
                f"{route} {algorithm}, batch {batch}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_and_col2im_match_across_thread_counts(dtype):
    for batch in BATCHES:
        x = np.random.default_rng(batch).standard_normal((batch, 3, 7, 6)).astype(dtype)

        def compute():
            cols = F.im2col(x, 3, stride=2, padding=1)
            return cols, F.col2im(cols, (7, 6), 3, stride=2, padding=1)
        _across_threads(compute, f"im2col/col2im, batch {batch}")


def _lenet_with_dropout():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(120, 84), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(84, 10))


def _batchnorm_net():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 3 * 3, 32), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Linear(32, 10))


# network -> (factory, image side); ResNet-8's BasicBlocks run BatchNorm with the ReLU and
# the residual add fused (nn.layers.bn_relu)
NETWORKS = {"lenet-dropout": (_lenet_with_dropout, 28), "batchnorm": (_batchnorm_net, 14),
            "resnet8": (lambda: nn.models.cifar_resnet(8, in_channels=1), 12)}


def _train(network, batch, steps=30):
    """``steps`` SGD-with-momentum steps on fresh batches; every step's loss, then the state."""
    make, side = NETWORKS[network]
    fastconv.manual_seed(0)
    model = make()
    opt = fastconv.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(batch)
    losses = []
    for _ in range(steps):
        x = rng.random((batch, 1, side, side), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        losses.append(loss_fn(model(x), y))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    return tuple(losses) + tuple(model.state_dict().values())


@pytest.mark.parametrize("batch", [64, 100])
@pytest.mark.parametrize("network", NETWORKS)
def test_training_runs_match_across_thread_counts(network, batch):
    with fastconv.threads(1):
        serial = _train(network, batch)
    assert serial[29] < serial[0]  # the loss fell: it did train
    for n in (2, 3):
        with fastconv.threads(n):
            _assert_bitwise(_train(network, batch), serial, f"{network}, batch {batch}, {n} threads")


# compiled models: LeNet's and ResNet-20's convolutions on the planned direct and
# channel-vector kernels (GEMM in the portable build), the images split over threads
COMPILED = {"lenet": (lambda: nn.models.lenet("modern"), (1, 28, 28), BATCHES),
            "resnet20": (nn.models.resnet20, (3, 32, 32), (1, 7, 64))}


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_models_match_across_thread_counts(name):
    make, shape, batches = COMPILED[name]
    fastconv.manual_seed(0)
    model = make()
    model.eval()
    cm = fastconv.compile(model, (max(batches),) + shape)
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch,) + shape).astype(np.float32)
        _across_threads(lambda: (cm(x),), f"compiled {name}, batch {batch}")
