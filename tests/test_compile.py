"""fastconv.compile against the eager model it was planned from."""
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _compile, nn
from fastconv.nn import models


def _randomize_batchnorm(model, rng):
    """Running statistics and affine parameters away from their identity defaults."""
    for m in _modules(model):
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean[...] = rng.standard_normal(m.num_features)
            m.running_var[...] = rng.uniform(0.5, 2.0, m.num_features)
            if m.affine:
                m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
                m.bias.data[...] = rng.standard_normal(m.num_features)


def _modules(m):
    yield m
    for child in m._modules.values():
        if child is not None:
            yield from _modules(child)


def _check(model, shape, batches=(1, 3), threads=(1, 2), rtol=1e-4, atol=1e-5):
    model.eval()
    cm = fastconv.compile(model, (max(batches),) + shape)
    rng = np.random.default_rng(1)
    for n in batches:
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        expected = model(x)
        results = []
        for t in threads:
            with fastconv.threads(t):
                results.append(cm(x))
        np.testing.assert_allclose(results[0], expected, rtol=rtol, atol=atol)
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])  # bits do not depend on threads
    return cm


@pytest.mark.parametrize("variant", ["modern", "d2l"])
def test_lenet_matches_eager(variant):
    fastconv.manual_seed(0)
    _check(models.lenet(variant), (1, 28, 28), batches=(1, 2, 5, 19))  # 19: several groups


@pytest.mark.parametrize("build, shape", [
    (models.resnet20, (3, 32, 32)),
    (lambda: models.resnet18(num_classes=5), (3, 64, 64)),  # 7x7 stem, padded max pool
])
def test_resnets_match_eager(build, shape):
    fastconv.manual_seed(0)
    model = build()
    _randomize_batchnorm(model, np.random.default_rng(0))
    # batch 1 on 2 threads splits the wide layers by channel blocks, on 3 (more threads than
    # blocks) by rows: the same bits as 1 thread
    _check(model, shape, batches=(1, 3), threads=(1, 2, 3), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_random_sequential_stacks(seed):
    rng = np.random.default_rng(seed)
    fastconv.manual_seed(seed)
    c, h = int(rng.integers(1, 4)), int(rng.integers(8, 14))
    layers, size, last_c = [], h, c
    for _ in range(int(rng.integers(1, 4))):
        k, s, p = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(0, 2))
        out = int(rng.integers(2, 7))
        layers.append(nn.Conv2d(last_c, out, k, stride=s, padding=p, bias=bool(rng.integers(2))))
        last_c = out
        size = (size + 2 * p - k) // s + 1
        choice = int(rng.integers(3))
        if choice == 0:
            layers.append(nn.BatchNorm2d(out))  # folded into the conv
        layers.append([nn.ReLU(), nn.LeakyReLU(0.1), nn.Tanh(), nn.Sigmoid(), nn.Identity(),
                       nn.Dropout(0.3)][int(rng.integers(6))])
        if choice == 1:
            layers.append(nn.BatchNorm2d(out))  # standalone: a scale and shift
        if size >= 4 and rng.integers(2):
            if rng.integers(2):
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                layers.append(nn.AvgPool2d(3, stride=2, padding=1,
                                           count_include_pad=bool(rng.integers(2))))
                size = (size + 2 - 3) // 2 + 1
    layers += [nn.Flatten(), nn.Linear(last_c * size * size, 7), nn.ReLU(), nn.Linear(7, 3)]
    model = nn.Sequential(*layers)
    _randomize_batchnorm(model, rng)
    _check(model, (c, h, h), batches=(1, 4, 11))


def test_residual_and_concat():
    fastconv.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))),
        nn.ReLU(),
        nn.Concat(nn.Identity(), nn.Conv2d(4, 3, 1), nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, 1, 1))),
        nn.Residual(nn.Conv2d(11, 5, 1), shortcut=nn.Conv2d(11, 5, 1, bias=False)),
        nn.Flatten(), nn.Linear(5 * 6 * 6, 4))
    _randomize_batchnorm(model, np.random.default_rng(0))
    _check(model, (2, 6, 6), batches=(1, 3, 10))


def test_bitwise_where_no_fusion_changes_arithmetic():
    # conv + bias + ReLU and pooling: the compiled one-image GEMM is eager's at batch 1
    fastconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
    model.eval()
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    cm = fastconv.compile(model, x.shape)
    np.testing.assert_array_equal(cm(x), model(x))


def test_out_argument_and_model_left_alone():
    fastconv.manual_seed(0)
    model = models.lenet("modern")
    model.train()
    cm = fastconv.compile(model, (4, 1, 28, 28))
    assert model.training  # compile works on a copy
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    out = np.full((2, 10), np.nan, np.float32)
    assert cm(x, out=out) is out
    np.testing.assert_allclose(out, model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="out must be"):
        cm(x, out=np.empty((3, 10), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        cm(x, out=np.empty((2, 10), np.float64))


def test_bad_calls_are_refused():
    model = models.lenet("modern")
    cm = fastconv.compile(model, (4, 1, 28, 28))
    with pytest.raises(ValueError, match="max_batch=4"):
        cm(np.zeros((5, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="expected x of shape"):
        cm(np.zeros((2, 1, 27, 28), np.float32))
    with pytest.raises(TypeError, match="float32"):
        cm(np.zeros((2, 1, 28, 28), np.float64))
    with pytest.raises(TypeError, match="dtype must be float32"):
        fastconv.compile(model, (4, 1, 28, 28), dtype=np.float64)
    with pytest.raises(ValueError, match="max_batch"):
        fastconv.compile(model, (4, 1, 28, 28), max_batch=0)


@pytest.mark.parametrize("layer, match", [
    (nn.Conv2d(3, 3, 3, groups=3), r"0 \(Conv2d\).*groups=3"),
    (nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"), "padding_mode"),
    (nn.Softmax(dim=1), r"0 \(Softmax\) is not supported"),
    (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode"),
])
def test_unsupported_layers_are_refused_by_name(layer, match):
    with pytest.raises(TypeError, match=match):
        fastconv.compile(nn.Sequential(layer, nn.Flatten()), (2, 3, 8, 8))


def test_calls_from_several_python_threads():
    fastconv.manual_seed(0)
    model = models.lenet("modern")
    model.eval()
    cm = fastconv.compile(model, (20, 1, 28, 28))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((int(n), 1, 28, 28)).astype(np.float32)
              for n in rng.integers(1, 21, 8)]
    _assert_the_same_from_python_threads(cm, inputs, calls=20)


def _assert_the_same_from_python_threads(cm, inputs, calls):
    """cm on inputs[i] from Python thread i, all at once, ``calls`` times each: every
    result is the one a lone call gives."""
    expected = [cm(x) for x in inputs]
    results = [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def work(i):
        barrier.wait()
        for _ in range(calls):
            results[i] = cm(inputs[i])
            if not np.array_equal(results[i], expected[i]):
                return

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for r, e in zip(results, expected):
        np.testing.assert_array_equal(r, e)


def test_refusal_names_the_nested_layer():
    model = nn.Sequential(nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1),
                                                    nn.Softmax(dim=1))))
    with pytest.raises(TypeError, match=r"layer 0\.main\.1 \(Softmax\)"):
        fastconv.compile(model, (1, 2, 5, 5))


def _planned_routes_model(gemm=True):
    """Convolutions on every planned kernel of the vector builds (routes for one image:
    direct, channel-vector where eager takes direct, Winograd, channel-vector in rows,
    pointwise in raster blocks, strided, and with ``gemm`` one on GEMM and a Linear head)."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(),                 # direct (less than a vector)
        nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(),                # direct_kvec (eager: direct)
        nn.Conv2d(16, 64, 3, padding=1), nn.LeakyReLU(0.1),       # direct_kvec (eager: direct)
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),               # winograd
        nn.Conv2d(64, 32, 1, bias=False),                         # direct_kvec, pointwise
        nn.Residual(nn.Conv2d(32, 32, 3, stride=1, padding=1)),   # direct_kvec, + its input
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),               # direct_kvec, 7x7
        nn.Conv2d(32, 32, 1) if gemm else nn.Identity(),          # gemm (7x7 pointwise)
        nn.Conv2d(32, 16, 3, stride=2, padding=1), nn.ReLU(),     # direct_kvec, strided
        *((nn.Flatten(), nn.Linear(16 * 4 * 4, 5)) if gemm else ()))


def test_planned_kernels_cover_the_routes():
    fastconv.manual_seed(0)
    cm = _check(_planned_routes_model(), (3, 14, 14), batches=(1, 6))
    if fastconv._conv_plan.build_support(4).vector_kernels:
        assert set(cm.routes) == {"direct", "direct_kvec", "winograd", "gemm"}
    else:
        assert set(cm.routes) == {"gemm"}  # the portable build plans GEMM everywhere


def test_planned_kernels_are_eagers_bitwise():
    # no BatchNorm to fold, no GEMM: the compiled convolutions are eager conv2d's own
    # kernels, each image on its own, so the bits are eager's on any thread count and split
    fastconv.manual_seed(0)
    model = _planned_routes_model(gemm=False)
    model.eval()
    cm = fastconv.compile(model, (7, 3, 14, 14))
    x = np.random.default_rng(2).standard_normal((7, 3, 14, 14)).astype(np.float32)
    results = []
    for t in (1, 2):
        with fastconv.threads(t):
            results.append(cm(x))
    np.testing.assert_array_equal(results[1], results[0])
    if "gemm" in cm.routes:  # the portable build: the grouped GEMM rounds as its tiles do
        np.testing.assert_allclose(results[0], model(x), rtol=1e-4, atol=1e-5)
        return
    np.testing.assert_array_equal(results[0], model(x))
    for lo, hi in ((0, 1), (3, 4), (1, 4), (2, 7)):
        for t in (1, 2, 3):  # fewer image groups than threads: each image split over them
            with fastconv.threads(t):
                np.testing.assert_array_equal(cm(x[lo:hi]), results[0][lo:hi])  # batch split


def _unpadded(monkeypatch, model, input_shape):
    """model compiled with every activation dense between layers (each convolution pads its
    own input), as compile planned it before pad_between_layers."""
    with monkeypatch.context() as m:
        m.setattr(_compile._Planner, "pad_between_layers", lambda self: None)
        return fastconv.compile(model, input_shape)


def _reads_in_place(model, image_shape):
    """The compile-planned convolutions of model, each as ((C, K, kh, sh, sw), whether it
    reads its input where its producer left it, padded)."""
    planner, _ = _compile._plan(model, image_shape)
    return [((op["C"], op["K"], op["kh"], op["sh"], op["sw"]), op.get("src_padded", False))
            for op in planner.ops if op["kind"] == _compile.CONV]


def _assert_same_bits(cm, reference, shape, batches, threads=(1, 2, 3)):
    rng = np.random.default_rng(4)
    for n in batches:
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        with fastconv.threads(1):
            expected = reference(x)
        for t in threads:
            with fastconv.threads(t):
                np.testing.assert_array_equal(cm(x), expected)


def test_activations_stay_padded_between_channel_vector_layers(monkeypatch):
    if not fastconv._conv_plan.build_support(4).vector_kernels:
        pytest.skip("the portable build has no channel-vector kernel")
    fastconv.manual_seed(0)
    model = models.resnet20()
    _randomize_batchnorm(model, np.random.default_rng(0))
    model.eval()
    convs = _reads_in_place(model, (3, 32, 32))
    cm = fastconv.compile(model, (5, 3, 32, 32))
    # every 3x3 stride-1 layer but the stem reads in place where it and its producer (the
    # layer before it) are channel-vector row blocks (all of them on AVX-512; AVX2 takes
    # Winograd for the 32-channel stage); their other readers are residuals. The stride-2
    # layers and the 1x1 downsamples read the phase-split or dense input.
    routes = cm.routes
    for i, ((c, k, kh, sh, sw), in_place) in enumerate(convs):
        assert in_place == (i > 0 and kh == 3 and sh == 1
                            and routes[i] == routes[i - 1] == "direct_kvec"), (i, convs[i])
    assert sum(in_place for _, in_place in convs) >= 10
    # batches 1 and 2 split each image over the threads, 5 runs groups of images; calls of
    # different sizes share the arena, whose padding nothing writes
    _assert_same_bits(cm, _unpadded(monkeypatch, model, (5, 3, 32, 32)), (3, 32, 32),
                      batches=(1, 5, 2, 1))


def test_strided_pointwise_layers_take_the_channel_vector_block():
    # a ResNet's 1x1 stride-2 shortcuts: eager plans GEMM (an im2col gather first), compile
    # the channel-vector block, which reads the input where it lies (and splits at batch 1)
    fastconv.manual_seed(0)
    model = models.resnet20()
    model.eval()
    planner, _ = _compile._plan(model, (3, 32, 32))
    pointwise = [op for op in planner.ops if op["kind"] == _compile.CONV and op["kh"] == 1]
    assert [(op["sh"], op["sw"]) for op in pointwise] == [(2, 2)] * 2
    kvec = fastconv._conv_plan.build_support(4).vector_kernels
    expected = _compile._ROUTES[_compile.Route.DIRECT_KVEC if kvec else _compile.Route.GEMM]
    assert [op.get("route", 0) for op in pointwise] == [expected] * 2
    # the same layer alone, against eager (GEMM) within float32 rounding, on 1 and 2 threads
    layer = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False))
    layer.eval()
    _check(layer, (16, 32, 32), batches=(1, 3))


def test_a_strided_reader_reads_in_place_too(monkeypatch):
    # the channel-vector block's padded input is not split by column phase at any stride
    if not fastconv._conv_plan.build_support(4).vector_kernels:
        pytest.skip("the portable build has no channel-vector kernel")
    fastconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, stride=(2, 1), padding=1), nn.Flatten(),
                          nn.Linear(32 * 4 * 7, 3))
    model.eval()
    assert [in_place for _, in_place in _reads_in_place(model, (3, 13, 14))] == [
        False, True, True]
    cm = fastconv.compile(model, (4, 3, 13, 14))
    _check(model, (3, 13, 14), batches=(1, 4))
    _assert_same_bits(cm, _unpadded(monkeypatch, model, (4, 3, 13, 14)), (3, 13, 14),
                      batches=(1, 4))


def test_activations_stay_dense_where_a_reader_needs_them_so(monkeypatch):
    if not fastconv._conv_plan.build_support(4).vector_kernels:
        pytest.skip("the portable build has no channel-vector kernel")
    fastconv.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        # two readers that pad differently (3x3 and 5x5): dense
        nn.Concat(nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 5, padding=2)),
        nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(),
        # read by a convolution and a standalone ReLU: dense
        nn.Residual(nn.Conv2d(16, 16, 3, padding=1), shortcut=nn.ReLU()), nn.ReLU(),
        # the residual's convolution (ReLU after the sum) its only reader: padded
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        # a 2x2 stride-(2, 1) reader leaves the last of 15 rows unread: its buffer would not
        # hold the producer's rows, so dense
        nn.Conv2d(16, 16, (2, 3), stride=(2, 1), padding=(0, 1)), nn.LeakyReLU(0.1),
        # a LeakyReLU producer (applied over the dense output): dense
        nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(),
        nn.Flatten(), nn.Linear(16 * 7 * 15, 3))
    model.eval()
    convs = _reads_in_place(model, (3, 15, 15))
    assert [in_place for _, in_place in convs] == [False] * 5 + [True, False, False], convs
    cm = fastconv.compile(model, (4, 3, 15, 15))
    assert cm.routes[6] == "direct_kvec"  # the 2x3 reader
    _check(model, (3, 15, 15), batches=(1, 4))
    _assert_same_bits(cm, _unpadded(monkeypatch, model, (4, 3, 15, 15)), (3, 15, 15),
                      batches=(1, 4))


def test_padded_activations_with_calls_from_several_python_threads():
    # each calling thread has its own arena, zeroed once: the padding stays zero
    fastconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Residual(nn.Conv2d(16, 16, 3, padding=1)), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.Flatten(),
                          nn.Linear(16 * 12 * 12, 4))
    model.eval()
    cm = fastconv.compile(model, (6, 3, 12, 12))
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((int(n), 3, 12, 12)).astype(np.float32)
              for n in rng.integers(1, 7, 6)]
    for x in inputs:
        np.testing.assert_allclose(cm(x), model(x), rtol=1e-4, atol=1e-5)
    _assert_the_same_from_python_threads(cm, inputs, calls=30)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.AvgPool2d(2),
                                  nn.AvgPool2d(2, divisor_override=3)])
@pytest.mark.parametrize("shape", [(6, 28, 28), (2, 11, 9), (3, 6, 70)])  # odd, 35-wide rows
def test_2x2_pooling_gives_eagers_bits(pool, shape):
    # the vector rows of src/pool2x2.h against eager's kernels, with the values where the
    # order of the taps shows: NaNs of different payloads (the last wins), -0 against +0
    # (ties keep the first), infinities
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3,) + shape).astype(np.float32)
    x.reshape(-1)[rng.choice(x.size, x.size // 10, replace=False)] = 0.0
    x.reshape(-1)[rng.choice(x.size, x.size // 10, replace=False)] = -0.0
    x.reshape(-1)[rng.choice(x.size, x.size // 50, replace=False)] = np.inf
    bits = x.reshape(-1).view(np.uint32)
    nans = rng.choice(x.size, x.size // 20, replace=False)
    bits[nans] = 0x7FC00000 + rng.integers(1, 1 << 20, nans.size).astype(np.uint32)
    model = nn.Sequential(pool)
    model.eval()
    cm = fastconv.compile(model, x.shape)
    expected = model(x)
    for n in (1, 3):
        np.testing.assert_array_equal(cm(x[:n]).view(np.uint32), expected[:n].view(np.uint32))


def test_winograd_images_not_all_finite_are_redone_as_eager():
    # an inf or NaN mixes into a Winograd tile's other outputs; eager and compile redo such
    # an image by direct convolution, the others keep Winograd's bits
    if not fastconv._conv_plan.build_support(4).vector_kernels:
        pytest.skip("the portable build has no Winograd kernel")
    fastconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
    model.eval()
    cm = fastconv.compile(model, (4, 64, 14, 14))
    assert cm.routes == ("winograd",)
    x = np.random.default_rng(3).standard_normal((4, 64, 14, 14)).astype(np.float32)
    x[1, 5, 3, 4] = np.inf
    x[2, 0, 13, 13] = np.nan
    got = cm(x)
    np.testing.assert_array_equal(got, model(x))
    assert np.isnan(got[2]).any() and np.isfinite(got[0]).all()
    with fastconv.threads(1):
        np.testing.assert_array_equal(cm(x), got)
