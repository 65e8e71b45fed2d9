"""fastconv.onnx: export and load round trips, onnxruntime and torch agreement, clear errors.

Needs the onnx package (skipped without it, apart from the tests of what happens then);
onnxruntime and torch only turn on their cross-checks.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastconv
from fastconv import nn
from _isolated import child_env

def test_import_fastconv_does_not_import_onnx():
    code = "import sys, fastconv, fastconv.onnx; print('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_without_onnx_export_and_load_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'fastconv\[onnx\]'"):
        fastconv.onnx.export(nn.ReLU(), tmp_path / "m.onnx", (1, 2))
    with pytest.raises(ImportError, match="onnx package"):
        fastconv.onnx.load(tmp_path / "m.onnx")


@pytest.fixture(scope="module")
def onnx():
    return pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def ort():
    return pytest.importorskip("onnxruntime")


def _ort_run(ort, path, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    return out


def _random_batchnorm_stats(model, seed=1):
    """Non-trivial running statistics and affine parameters, so BatchNorm is tested."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            if m.affine:
                m.weight.data[...] = rng.uniform(0.5, 1.5, c)
                m.bias.data[...] = rng.normal(0, 0.1, c)
            m.running_mean[...] = rng.normal(0, 0.2, c)
            m.running_var[...] = rng.uniform(0.5, 2.0, c)
    return model


def _layer_cases():
    cases = {
        "conv": (lambda: nn.Conv2d(3, 4, 3, padding=1), (1, 3, 9, 9)),
        "conv_strided_dilated_grouped": (
            lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=2, groups=2),
            (1, 4, 11, 10)),
        "conv_same_even_kernel": (lambda: nn.Conv2d(2, 3, 4, padding="same", bias=False), (1, 2, 7, 7)),
        "conv_valid": (lambda: nn.Conv2d(2, 3, 3, padding="valid"), (1, 2, 6, 6)),
        "maxpool": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (1, 3, 9, 9)),
        "maxpool_ceil": (lambda: nn.MaxPool2d(2, stride=2, ceil_mode=True), (1, 2, 7, 7)),
        "maxpool_dilated": (lambda: nn.MaxPool2d(2, stride=1, dilation=2), (1, 2, 6, 6)),
        "avgpool": (lambda: nn.AvgPool2d(2), (1, 3, 8, 8)),
        "avgpool_padded": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                           (1, 2, 9, 9)),
        "linear": (lambda: nn.Linear(7, 5), (1, 7)),
        "linear_no_bias": (lambda: nn.Linear(7, 5, bias=False), (1, 7)),
        "linear_3d": (lambda: nn.Linear(6, 4), (1, 3, 6)),
        "flatten": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4)), (1, 2, 3, 3)),
        "relu": (lambda: nn.ReLU(), (1, 3, 4, 4)),
        "leaky_relu": (lambda: nn.LeakyReLU(0.2), (1, 3, 4, 4)),
        "sigmoid": (lambda: nn.Sigmoid(), (1, 5)),
        "tanh": (lambda: nn.Tanh(), (1, 3, 4, 4)),
        "dropout": (lambda: nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.3)), (1, 4)),
        "batchnorm2d": (lambda: _random_batchnorm_stats(nn.BatchNorm2d(3)), (1, 3, 5, 5)),
        "batchnorm2d_no_affine": (lambda: _random_batchnorm_stats(nn.BatchNorm2d(3, affine=False)),
                                  (1, 3, 5, 5)),
        "batchnorm1d": (lambda: _random_batchnorm_stats(nn.BatchNorm1d(6, momentum=0.2)), (1, 6)),
        "softmax": (lambda: nn.Sequential(nn.Linear(5, 6), nn.Softmax(dim=1)), (1, 5)),
        "global_avg_pool": (lambda: nn.AdaptiveAvgPool2d((1, 1)), (1, 3, 5, 6)),
        "identity": (lambda: nn.Sequential(nn.Identity(), nn.ReLU(), nn.Identity()), (1, 4)),
        "residual_identity_shortcut": (
            lambda: nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU())), (1, 2, 5, 5)),
        "concat_last_dim": (lambda: nn.Concat(nn.Linear(4, 3), nn.Identity(), dim=-1), (1, 4)),
    }
    return cases


LAYER_CASES = _layer_cases()


def _sample(shape, batch, dtype, seed=0):
    return np.random.default_rng(seed).normal(size=(batch,) + tuple(shape[1:])).astype(dtype)


def _ops(proto):
    return [n.op_type for n in proto.graph.node]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_round_trip(onnx, case, dtype, tmp_path):
    make, shape = LAYER_CASES[case]
    fastconv.manual_seed(0)
    model = make().to(dtype).eval()
    path = tmp_path / f"{case}.onnx"
    proto = fastconv.onnx.export(model, path, shape)
    written = onnx.load(path)
    onnx.checker.check_model(written, full_check=True)
    assert written.opset_import[0].version >= 17
    x = _sample(shape, 3, dtype)  # the batch dimension is symbolic: 3 runs though 1 was given
    loaded = fastconv.onnx.load(path)
    assert not loaded.training
    np.testing.assert_array_equal(loaded(x), model(x))  # same layers, same weights: same bits
    again = fastconv.onnx.export(loaded, tmp_path / "again.onnx", shape)
    assert _ops(again) == _ops(proto)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_matches_onnxruntime(onnx, ort, case, tmp_path):
    make, shape = LAYER_CASES[case]
    fastconv.manual_seed(0)
    model = make().eval()
    path = tmp_path / f"{case}.onnx"
    fastconv.onnx.export(model, path, shape)
    x = _sample(shape, 2, np.float32)
    np.testing.assert_allclose(_ort_run(ort, path, x), model(x), rtol=1e-5, atol=1e-5)


def test_export_leaves_train_mode_as_it_was(onnx, tmp_path):
    model = nn.lenet()
    model[1].eval()
    fastconv.onnx.export(model, tmp_path / "m.onnx", (1, 1, 28, 28))
    assert model.training and not model[1].training and model[2].training


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variant", ["modern", "d2l"])
def test_lenet_round_trip(onnx, ort, variant, threads, tmp_path):
    fastconv.manual_seed(0)
    model = nn.lenet(variant).eval()
    path = tmp_path / "lenet.onnx"
    proto = fastconv.onnx.export(model, path, (1, 1, 28, 28))
    assert _ops(proto) == (["Conv", "Relu", "MaxPool"] * 2 if variant == "modern"
                           else ["Conv", "Sigmoid", "AveragePool"] * 2) + \
        ["Flatten"] + ["Gemm", _ops(proto)[1]] * 2 + ["Gemm"]
    x = _sample((1, 1, 28, 28), 4, np.float32)
    with fastconv.threads(threads):
        expected = model(x)
        loaded = fastconv.onnx.load(path)
        np.testing.assert_array_equal(loaded(x), expected)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    np.testing.assert_allclose(_ort_run(ort, path, x), expected, rtol=1e-5, atol=1e-6)


# -- graphs with branches ----------------------------------------------------------------------


def _small_residual_net():
    """Conv stem, an identity skip, a projection skip, a channel concat, pooled head."""
    def block(c_in, c_out, stride):
        main = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU(),
                             nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        shortcut = None if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        return nn.Residual(main, shortcut)
    return _random_batchnorm_stats(nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        block(4, 4, 1), nn.ReLU(),
        block(4, 8, 2), nn.ReLU(),
        nn.Concat(nn.Conv2d(8, 4, 1), nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 2, 1))),
        nn.AvgPool2d(4), nn.Flatten(), nn.Linear(6, 5)))


def _branching_graph(onnx, join="Add"):
    """x -> Relu -> {Conv 1x1, identity} -> Add (or Concat); a skip connection by hand."""
    h = onnx.helper
    w = onnx.numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    attrs = {"axis": 1} if join == "Concat" else {}
    nodes = [h.make_node("Relu", ["x"], ["r"], name="stem"),
             h.make_node("Conv", ["r", "w"], ["c"], name="branch"),
             h.make_node(join, ["c", "r"], ["y"], name="merge", **attrs)]
    return _model(onnx, nodes, [w], (1, 2, 3, 3))


def _model(onnx, nodes, initializers, shape, opset=17, outputs=("y",), out_rank=None):
    h = onnx.helper
    out_shape = [f"d{i}" for i in range(len(shape) if out_rank is None else out_rank)]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", 1, shape)],
                         [h.make_tensor_value_info(o, 1, out_shape) for o in outputs], initializers)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])


@pytest.mark.parametrize("join", ["Add", "Concat"])
def test_branches_load_as_residual_and_concat(onnx, join, tmp_path):
    path = tmp_path / "branch.onnx"
    onnx.save(_branching_graph(onnx, join), path)
    model = fastconv.onnx.load(path)
    container = model[1]
    assert isinstance(container, nn.Residual if join == "Add" else nn.Concat)
    x = _sample((1, 2, 3, 3), 2, np.float32)
    r = np.maximum(x, 0)
    c = np.repeat(r.sum(axis=1, keepdims=True), 2, axis=1)
    expected = c + r if join == "Add" else np.concatenate([c, r], axis=1)
    np.testing.assert_allclose(model(x), expected, rtol=1e-6)


def test_small_residual_net_round_trip(onnx, ort, tmp_path):
    fastconv.manual_seed(0)
    model = _small_residual_net().eval()
    path = tmp_path / "res.onnx"
    proto = fastconv.onnx.export(model, path, (1, 3, 8, 8))
    assert _ops(proto).count("Add") == 2 and _ops(proto).count("Concat") == 1
    x = _sample((1, 3, 8, 8), 3, np.float32)
    loaded = fastconv.onnx.load(path)
    assert [type(m).__name__ for m in loaded.modules()] == [type(m).__name__ for m in model.modules()]
    assert loaded.state_dict().keys() == model.state_dict().keys()
    np.testing.assert_array_equal(loaded(x), model(x))
    np.testing.assert_allclose(_ort_run(ort, path, x), model(x), rtol=1e-4, atol=1e-5)


# -- files written by torch.onnx.export ----------------------------------------------------------


def _torch_export(torch, model, shape, path):
    """torch's TorchScript-based exporter: the torch.export-based default needs onnxscript."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(shape),), str(path), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "N"}})


@pytest.mark.parametrize("variant", ["modern", "d2l"])
def test_torch_exported_lenet(onnx, ort, variant, tmp_path):
    torch = pytest.importorskip("torch")
    fastconv.manual_seed(0)
    state = {k: torch.from_numpy(v.copy()) for k, v in nn.lenet(variant).state_dict().items()}
    twin = nn.lenet(variant, torch.nn)
    twin.load_state_dict(state)
    path = tmp_path / "torch_lenet.onnx"
    _torch_export(torch, twin, (1, 1, 28, 28), path)
    model = fastconv.onnx.load(path)
    x = _sample((1, 1, 28, 28), 5, np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_ort_run(ort, path, x), model(x), rtol=1e-5, atol=1e-6)


def _torch_resnet(torch):
    """A CIFAR-style ResNet (one basic block per stage, widths 8-16-32), built by hand:
    torchvision does not load here."""
    tnn = torch.nn

    class BasicBlock(tnn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(c_out)
            self.conv2 = tnn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(c_out)
            self.shortcut = tnn.Sequential()
            if stride != 1 or c_in != c_out:
                self.shortcut = tnn.Sequential(tnn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                               tnn.BatchNorm2d(c_out))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    net = tnn.Sequential(tnn.Conv2d(3, 8, 3, 1, 1, bias=False), tnn.BatchNorm2d(8), tnn.ReLU(),
                         BasicBlock(8, 8, 1), BasicBlock(8, 16, 2), BasicBlock(16, 32, 2),
                         tnn.AdaptiveAvgPool2d((1, 1)), tnn.Flatten(), tnn.Linear(32, 10))
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, tnn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


def test_torch_exported_resnet(onnx, ort, tmp_path):
    torch = pytest.importorskip("torch")
    twin = _torch_resnet(torch)
    path = tmp_path / "torch_resnet.onnx"
    _torch_export(torch, twin, (1, 3, 16, 16), path)
    model = fastconv.onnx.load(path)
    assert sum(isinstance(m, nn.Residual) for m in model.modules()) == 3
    x = _sample((1, 3, 16, 16), 4, np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_ort_run(ort, path, x), model(x), rtol=1e-4, atol=1e-5)


# -- errors --------------------------------------------------------------------------------------


def _conv_graph(onnx, name="conv", **attrs):
    w = onnx.numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    return _model(onnx, [onnx.helper.make_node("Conv", ["x", "w"], ["y"], name=name, **attrs)],
                  [w], (1, 2, 6, 6))


def _bad_models(onnx):
    h = onnx.helper
    gemm_w = onnx.numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    bias = onnx.numpy_helper.from_array(np.ones(4, np.float32), "b")
    return {
        "unsupported op": (_model(onnx, [h.make_node("Erf", ["x"], ["y"], name="bad_erf")], [],
                                  (1, 4)), r"node 'bad_erf' \(Erf\): op not supported"),
        "auto_pad": (_conv_graph(onnx, auto_pad="SAME_UPPER"), r"node 'conv' \(Conv\): auto_pad"),
        "asymmetric pads": (_conv_graph(onnx, pads=[0, 0, 1, 1], strides=[2, 2]),
                            r"node 'conv' \(Conv\): asymmetric pads"),
        "kernel shape": (_conv_graph(onnx, kernel_shape=[2, 2]), r"node 'conv' \(Conv\): kernel_shape"),
        "group": (_conv_graph(onnx, group=4), r"node 'conv' \(Conv\): group=4"),
        "maxpool indices": (
            _model(onnx, [h.make_node("MaxPool", ["x"], ["y", "i"], name="pool", kernel_shape=[2, 2])],
                   [], (1, 2, 4, 4)), r"node 'pool' \(MaxPool\): its extra output 'i'"),
        "avgpool ceil": (
            _model(onnx, [h.make_node("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[2, 2],
                                      ceil_mode=1)], [], (1, 2, 5, 5)),
            r"node 'avg' \(AveragePool\): ceil_mode=1"),
        "gemm alpha": (_model(onnx, [h.make_node("Gemm", ["x", "w"], ["y"], name="fc", alpha=2.0)],
                              [gemm_w], (1, 3)), r"node 'fc' \(Gemm\): alpha=2.0"),
        "flatten axis": (
            _model(onnx, [h.make_node("Flatten", ["x"], ["y"], name="flat", axis=2)], [], (1, 2, 3, 3),
                   out_rank=2),
            r"node 'flat' \(Flatten\): axis=2"),
        "add of a constant": (
            _model(onnx, [h.make_node("Relu", ["x"], ["r"], name="act"),
                          h.make_node("Add", ["r", "b"], ["y"], name="shift")], [bias], (1, 4)),
            r"node 'shift' \(Add\)"),
        "dead node": (
            _model(onnx, [h.make_node("Relu", ["x"], ["y"], name="act"),
                          h.make_node("Sigmoid", ["x"], ["unused"], name="dangling")], [], (1, 4)),
            r"node 'dangling' \(Sigmoid\): its output does not lead to the graph output"),
        "batchnorm training": (
            _model(onnx, [h.make_node("BatchNormalization", ["x", "b", "b", "b", "b"], ["y"],
                                      name="bn", training_mode=1)], [bias], (1, 4)),
            r"node 'bn' \(BatchNormalization\): training_mode=1"),
        "old opset": (
            _model(onnx, [h.make_node("Relu", ["x"], ["y"], name="act")], [], (1, 4), opset=11),
            r"opset 11"),
        "two outputs": (
            _model(onnx, [h.make_node("Relu", ["x"], ["y"], name="act"),
                          h.make_node("Sigmoid", ["x"], ["z"], name="act2")], [], (1, 4),
                   outputs=("y", "z")), r"1 inputs and 2 outputs"),
    }


BAD_MODELS = ["unsupported op", "auto_pad", "asymmetric pads", "kernel shape", "group",
              "maxpool indices", "avgpool ceil", "gemm alpha", "flatten axis", "add of a constant",
              "dead node", "batchnorm training", "old opset", "two outputs"]


@pytest.mark.parametrize("case", BAD_MODELS)
def test_bad_model_gets_an_error_naming_the_node(onnx, case, tmp_path):
    models = _bad_models(onnx)
    assert sorted(models) == sorted(BAD_MODELS)
    proto, message = models[case]
    path = tmp_path / "bad.onnx"
    onnx.save(proto, path)
    with pytest.raises(ValueError, match=message):
        fastconv.onnx.load(path)


def test_shared_branch_node_is_refused(onnx, tmp_path):
    """x -> a, b; Add(a, b) -> s; Add(s, a): node a feeds two joins, no nesting expresses it."""
    h = onnx.helper
    nodes = [h.make_node("Relu", ["x"], ["a"], name="a"), h.make_node("Sigmoid", ["x"], ["b"], name="b"),
             h.make_node("Add", ["a", "b"], ["s"], name="inner"),
             h.make_node("Add", ["s", "a"], ["y"], name="outer")]
    path = tmp_path / "shared.onnx"
    onnx.save(_model(onnx, nodes, [], (1, 4)), path)
    with pytest.raises(ValueError, match=r"node 'a' \(Relu\): its output feeds more than one branch"):
        fastconv.onnx.load(path)


def test_malformed_files(onnx, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 this is not protobuf \xff\xff\xff")
    with pytest.raises(ValueError, match="not a readable ONNX file|not a valid ONNX model"):
        fastconv.onnx.load(garbage)
    fastconv.manual_seed(0)
    good = tmp_path / "good.onnx"
    fastconv.onnx.export(nn.lenet(), good, (1, 1, 28, 28))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(ValueError, match="not a readable ONNX file|not a valid ONNX model"):
        fastconv.onnx.load(truncated)
    h = onnx.helper  # a node reading a value nothing defines
    undefined = _model(onnx, [h.make_node("Relu", ["nowhere"], ["y"], name="act")], [], (1, 4))
    onnx.save(undefined, tmp_path / "undefined.onnx")
    with pytest.raises(ValueError, match="not a valid ONNX model.*nowhere"):
        fastconv.onnx.load(tmp_path / "undefined.onnx")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        fastconv.onnx.load(tmp_path / "missing.onnx")


class _Custom(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("layer, message", [
    (nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), r"layer '0' \(Conv2d\).*padding_mode"),
    (nn.BatchNorm2d(2, track_running_stats=False), r"layer '0' \(BatchNorm2d\).*track_running_stats"),
    (nn.AvgPool2d(2, divisor_override=3), r"layer '0' \(AvgPool2d\).*divisor_override"),
    (nn.AvgPool2d(2, ceil_mode=True), r"layer '0' \(AvgPool2d\).*ceil_mode"),
    (nn.Flatten(start_dim=2), r"layer '0' \(Flatten\).*start_dim=2"),
    (_Custom(), r"layer '0' \(_Custom\) has no ONNX form"),
])
def test_export_refuses_what_onnx_cannot_express(onnx, layer, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        fastconv.onnx.export(nn.Sequential(layer), tmp_path / "m.onnx", (1, 2, 5, 5))
    assert not (tmp_path / "m.onnx").exists()


def test_export_argument_errors(onnx, tmp_path):
    with pytest.raises(ValueError, match="input_shape"):
        fastconv.onnx.export(nn.ReLU(), tmp_path / "m.onnx", (0, 3))
    with pytest.raises(TypeError, match="input_shape"):
        fastconv.onnx.export(nn.ReLU(), tmp_path / "m.onnx", 3)


def test_resnet20_round_trip(onnx, ort, tmp_path):
    """nn.models.resnet20 (BasicBlocks written by hand) exports; the file loads as
    Residual blocks with the same outputs."""
    fastconv.manual_seed(0)
    model = _random_batchnorm_stats(nn.models.resnet20()).eval()
    path = tmp_path / "resnet20.onnx"
    proto = fastconv.onnx.export(model, path, (1, 3, 32, 32))
    assert _ops(proto).count("Add") == 9 and _ops(proto).count("BatchNormalization") == 21
    x = _sample((1, 3, 32, 32), 2, np.float32)
    expected = model(x)
    loaded = fastconv.onnx.load(path)
    assert sum(isinstance(m, nn.Residual) for m in loaded.modules()) == 9
    np.testing.assert_array_equal(loaded(x), expected)
    np.testing.assert_allclose(_ort_run(ort, path, x), expected, rtol=1e-4, atol=1e-4)
