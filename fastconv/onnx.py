"""ONNX export and import of fastconv models (the optional extra ``fastconv[onnx]``).

``export(model, path, input_shape)`` writes a model as an ONNX file (opset 17) that
onnxruntime and other runtimes read; ``load(path)`` builds a fastconv model from an ONNX file,
for instance one written by ``torch.onnx.export``. Both need the ``onnx`` package
(``pip install 'fastconv[onnx]'``); ``import fastconv`` never imports it.

ONNX graphs are DAGs; fastconv models are nestings of containers. A skip connection (an
``Add`` of two branches of one value) is ``nn.Residual(main, shortcut)``, a channel
``Concat`` of branches is ``nn.Concat(*branches)``, everything else is ``nn.Sequential``. A
graph that is not such a nesting, an op or attribute fastconv does not support, or a
malformed file raises ``ValueError`` naming the node: nothing is approximated.
"""
import numbers

import numpy as np

from . import __version__, nn

__all__ = ["export", "load", "OPSET"]

#: The opset ``export`` writes.
OPSET = 17
# The oldest opset ``load`` reads: Softmax's single-axis semantics, Dropout's ratio input
# and the Gemm/BatchNormalization forms it knows date from opset 13 or earlier.
_MIN_LOAD_OPSET = 13
_FLOAT_TYPES = {np.dtype(np.float32): 1, np.dtype(np.float64): 11}  # TensorProto.FLOAT, DOUBLE


def _require_onnx():
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401  (a submodule onnx does not import itself)
    except ImportError:
        raise ImportError("fastconv.onnx needs the onnx package: pip install 'fastconv[onnx]' "
                          "(or pip install onnx)") from None
    return onnx


def _clean_float(value):
    """A float32 attribute as the decimal it was written from (1e-5, not 9.99999974738e-06)."""
    return float(str(np.float32(value)))


# -- export ---------------------------------------------------------------------------------


def export(model, path, input_shape, *, dynamic_batch=True):
    """Write ``model`` (in eval mode) as an ONNX file.

    Parameters
    ----------
    model : fastconv.nn.Module
        A layer or a nesting of Sequential, Residual, Concat and the ResNets' BasicBlock of
        the layers ONNX can express (Conv2d with zero padding, the poolings, Linear, Flatten,
        the activations, Dropout, BatchNorm with running statistics, Softmax, Identity,
        AdaptiveAvgPool2d((1, 1))).
    path : str or os.PathLike
    input_shape : sequence of int
        The input's shape, batch included, e.g. ``(1, 1, 28, 28)``. One forward pass of zeros
        of that shape (in eval mode, the model's train/eval flags restored afterwards) gives
        the shapes of the graph.
    dynamic_batch : bool, default True
        Leave the batch dimension symbolic ("N"), so that any batch size runs.

    Returns
    -------
    onnx.ModelProto
        The model written (it passed ``onnx.checker.check_model``).
    """
    onnx = _require_onnx()
    shape = _shape_arg(input_shape)
    # A model of buffers only (BatchNorm without affine) takes its dtype from them.
    arrays = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
    dtype = next((a.dtype for a in arrays if a.dtype.kind == "f"), np.dtype(np.float32))
    if dtype not in _FLOAT_TYPES:
        raise TypeError(f"export: the model's parameters are {dtype}; ONNX export takes float32 "
                        f"or float64 models")
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    writer = _Writer(onnx, dtype)
    try:
        out_name, out = writer.module(model, "input", np.zeros(shape, dtype), "")
    finally:
        for m, training in flags:
            object.__setattr__(m, "training", training)
    if out_name == "input":  # a model that is the identity still needs a node
        out_name = writer.node("Identity", ["input"], "identity")
    h = onnx.helper
    batch = "N" if dynamic_batch else shape[0]
    elem = _FLOAT_TYPES[dtype]
    graph = h.make_graph(
        writer.nodes, "fastconv",
        [h.make_tensor_value_info("input", elem, (batch,) + shape[1:])],
        [h.make_tensor_value_info(out_name, elem, (batch,) + out.shape[1:])],
        writer.initializers)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="fastconv",
                         producer_version=__version__)
    proto.ir_version = min(proto.ir_version, 8)  # IR 8 is opset 17's; older runtimes read it
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)
    return proto


def _shape_arg(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a sequence of ints, got {input_shape!r}") from None
    if not shape or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
                            for s in shape):
        raise ValueError(f"input_shape must be positive ints (batch included), got {input_shape!r}")
    return tuple(int(s) for s in shape)


def _pair(value):
    return (value, value) if isinstance(value, numbers.Integral) else tuple(value)


class _Writer:
    """Collects the nodes and initializers of a model, module by module."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype = onnx, dtype
        self.nodes, self.initializers = [], []

    def node(self, op, inputs, name, **attrs):
        """Append one node; returns its output's name (``layer/op``: state_dict keys, the
        initializers' names, have no slash)."""
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def constant(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def module(self, module, x_name, x, path):
        """Nodes computing ``module`` from value ``x_name`` (whose sample is ``x``), under the
        state_dict prefix ``path``; returns (output name, output sample)."""
        kind = type(module).__name__
        label = path[:-1] or kind
        if isinstance(module, nn.Sequential):
            for name, child in module._modules.items():
                x_name, x = self.module(child, x_name, x, f"{path}{name}.")
            return x_name, x
        if isinstance(module, nn.models.BasicBlock):
            return self._basic_block(module, x_name, x, path, label)
        if isinstance(module, nn.Residual):
            main_name, main = self.module(module.main, x_name, x, f"{path}main.")
            if module.shortcut is None:
                short_name, short = x_name, x
            else:
                short_name, short = self.module(module.shortcut, x_name, x, f"{path}shortcut.")
            return self.node("Add", [main_name, short_name], f"{label}/add"), main + short
        if isinstance(module, nn.Concat):
            outs = [self.module(branch, x_name, x, f"{path}{name}.")
                    for name, branch in module._modules.items()]
            y = module(x)
            return self.node("Concat", [n for n, _ in outs], f"{label}/concat",
                             axis=int(module.dim)), y
        write = getattr(self, f"_{kind}", None)
        if write is None or not isinstance(module, getattr(nn, kind, ())):
            raise ValueError(f"export: layer {label!r} ({kind}) has no ONNX form in fastconv.onnx")
        y = module(x)
        return write(module, x_name, x, y, path, label), y

    def _basic_block(self, block, x_name, x, path, label):
        """ResNet's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))."""
        h_name, h = x_name, x
        for child in ("conv1", "bn1", "relu", "conv2", "bn2"):
            h_name, h = self.module(getattr(block, child), h_name, h, f"{path}{child}.")
        skip_name, skip = x_name, x
        if block.downsample is not None:
            skip_name, skip = self.module(block.downsample, x_name, x, f"{path}downsample.")
        add = self.node("Add", [h_name, skip_name], f"{label}/add")
        return self.module(block.relu_out, add, h + skip, f"{path}relu_out.")

    def _params(self, path, *names_arrays):
        return [self.constant(f"{path}{name}", array) for name, array in names_arrays]

    def _Conv2d(self, m, x_name, x, y, path, label):
        if m.padding_mode != "zeros":
            raise ValueError(f"export: layer {label!r} (Conv2d) has padding_mode={m.padding_mode!r}; "
                             f"ONNX Conv pads with zeros only")
        (top, bottom), (left, right) = m._explicit_padding()
        inputs = [x_name] + self._params(path, ("weight", m.weight.data))
        if m.bias is not None:
            inputs += self._params(path, ("bias", m.bias.data))
        return self.node("Conv", inputs, f"{label}/conv", kernel_shape=list(m.kernel_size),
                         strides=list(m.stride), pads=[top, left, bottom, right],
                         dilations=list(m.dilation), group=m.groups)

    def _pool_attrs(self, m, x, y, label, op):
        """kernel_shape, strides, pads of a pooling layer, and ceil_mode where it changes the
        output size (ONNX and torch agree on when it does not)."""
        kernel, stride, pad = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
        dilation = _pair(getattr(m, "dilation", 1))
        floor = tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                      for s, k, st, p, d in zip(x.shape[-2:], kernel, stride, pad, dilation))
        ceil = int(floor != y.shape[-2:])
        if ceil and op == "AveragePool":
            raise ValueError(f"export: layer {label!r} (AvgPool2d) has ceil_mode=True with partial "
                             f"windows at this input size, whose divisors ONNX defines differently")
        return dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
                    ceil_mode=ceil), dilation

    def _MaxPool2d(self, m, x_name, x, y, path, label):
        attrs, dilation = self._pool_attrs(m, x, y, label, "MaxPool")
        return self.node("MaxPool", [x_name], f"{label}/maxpool", dilations=list(dilation), **attrs)

    def _AvgPool2d(self, m, x_name, x, y, path, label):
        if m.divisor_override is not None:
            raise ValueError(f"export: layer {label!r} (AvgPool2d) has divisor_override; ONNX "
                             f"AveragePool has no such attribute")
        attrs, _ = self._pool_attrs(m, x, y, label, "AveragePool")
        return self.node("AveragePool", [x_name], f"{label}/avgpool",
                         count_include_pad=int(bool(m.count_include_pad)), **attrs)

    def _AdaptiveAvgPool2d(self, m, x_name, x, y, path, label):
        if y.shape[-2:] != (1, 1):
            raise ValueError(f"export: layer {label!r} (AdaptiveAvgPool2d) has output size "
                             f"{y.shape[-2:]}; only (1, 1) (GlobalAveragePool) is exported")
        return self.node("GlobalAveragePool", [x_name], f"{label}/gap")

    def _Linear(self, m, x_name, x, y, path, label):
        if x.ndim == 2:
            inputs = [x_name] + self._params(path, ("weight", m.weight.data))
            if m.bias is not None:
                inputs += self._params(path, ("bias", m.bias.data))
            return self.node("Gemm", inputs, f"{label}/gemm", transB=1)
        out = self.node("MatMul", [x_name] + self._params(path, ("weight", m.weight.data.T)),
                        f"{label}/matmul")
        if m.bias is None:
            return out
        return self.node("Add", [out] + self._params(path, ("bias", m.bias.data)), f"{label}/bias")

    def _Flatten(self, m, x_name, x, y, path, label):
        if y.shape != (x.shape[0], int(np.prod(x.shape[1:]))):
            raise ValueError(f"export: layer {label!r} (Flatten) with start_dim={m.start_dim}, "
                             f"end_dim={m.end_dim}: ONNX Flatten only flattens every dim after the first")
        return self.node("Flatten", [x_name], f"{label}/flatten", axis=1)

    def _ReLU(self, m, x_name, x, y, path, label):
        return self.node("Relu", [x_name], f"{label}/relu")

    def _LeakyReLU(self, m, x_name, x, y, path, label):
        return self.node("LeakyRelu", [x_name], f"{label}/leakyrelu", alpha=float(m.negative_slope))

    def _Sigmoid(self, m, x_name, x, y, path, label):
        return self.node("Sigmoid", [x_name], f"{label}/sigmoid")

    def _Tanh(self, m, x_name, x, y, path, label):
        return self.node("Tanh", [x_name], f"{label}/tanh")

    def _Softmax(self, m, x_name, x, y, path, label):
        return self.node("Softmax", [x_name], f"{label}/softmax", axis=int(m.dim))

    def _Identity(self, m, x_name, x, y, path, label):
        return x_name

    def _Dropout(self, m, x_name, x, y, path, label):
        ratio = self.constant(f"{path}ratio", np.asarray(m.p, self.dtype))
        return self.node("Dropout", [x_name, ratio], f"{label}/dropout")

    def _BatchNorm(self, m, x_name, label, path):
        if not m.track_running_stats:
            raise ValueError(f"export: layer {label!r} ({type(m).__name__}) has "
                             f"track_running_stats=False: it normalizes by batch statistics in eval "
                             f"mode, which ONNX BatchNormalization does not")
        c, dtype = m.num_features, m.running_mean.dtype
        weight = m.weight.data if m.affine else np.ones(c, dtype)
        bias = m.bias.data if m.affine else np.zeros(c, dtype)
        inputs = [x_name] + self._params(path, ("weight", weight), ("bias", bias),
                                         ("running_mean", m.running_mean),
                                         ("running_var", m.running_var))
        attrs = {"epsilon": float(m.eps)}
        if m.momentum is not None:
            attrs["momentum"] = 1.0 - float(m.momentum)  # ONNX weighs the running value
        return self.node("BatchNormalization", inputs, f"{label}/batchnorm", **attrs)

    def _BatchNorm1d(self, m, x_name, x, y, path, label):
        return self._BatchNorm(m, x_name, label, path)

    _BatchNorm2d = _BatchNorm1d


# -- load -----------------------------------------------------------------------------------


def load(path):
    """Build a fastconv model from an ONNX file, in eval mode.

    Parameters
    ----------
    path : str or os.PathLike
        An ONNX model (opset 13 or newer) of one float32 or float64 input and one output,
        whose nodes are Conv (2-D), MaxPool, AveragePool, GlobalAveragePool, Relu, LeakyRelu,
        Sigmoid, Tanh, Gemm, MatMul (+ Add of a bias), Flatten, Add and Concat (joining
        branches), BatchNormalization, Softmax, Dropout and Identity, with their weights as
        initializers or Constant nodes.

    Returns
    -------
    fastconv.nn.Sequential
        Skip connections become ``nn.Residual``, channel concatenations ``nn.Concat``.

    Raises
    ------
    ValueError
        For a file that is not a valid ONNX model, and for an op, attribute or graph shape
        fastconv does not support; the message names the node.
    """
    onnx = _require_onnx()
    try:
        proto = onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ValueError(f"load: {path} is not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"load: {path} is not a valid ONNX model: {exc}") from exc
    opsets = {o.domain: o.version for o in proto.opset_import}
    version = opsets.get("", opsets.get("ai.onnx"))
    if version is None or version < _MIN_LOAD_OPSET:
        raise ValueError(f"load: {path} uses opset {version}; fastconv.onnx.load reads opset "
                         f"{_MIN_LOAD_OPSET} and newer")
    graph = _Graph(onnx, proto.graph)
    model = _Builder(graph).build()
    return model.eval()


class _Node:
    """One ONNX node: its data input (value names), constant inputs and attributes."""

    def __init__(self, onnx, proto, index, constants):
        self.op, self.proto = proto.op_type, proto
        self.label = proto.name or f"#{index}"
        self.inputs = list(proto.input)
        self.data = [v for v in self.inputs if v and v not in constants]
        self.outputs = list(proto.output)
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in proto.attribute}
        self.constants = constants
        self.domain = proto.domain

    def __str__(self):
        return f"node {self.label!r} ({self.op})"

    def error(self, message):
        return ValueError(f"load: {self}: {message}")

    def const(self, position, required=True):
        """The constant at input ``position``, or None where the input is absent."""
        name = self.inputs[position] if position < len(self.inputs) else ""
        if not name:
            if required:
                raise self.error(f"input {position} is missing")
            return None
        if name not in self.constants:
            raise self.error(f"input {position} ({name!r}) must be an initializer or Constant; "
                             f"fastconv layers take their weights as constants")
        return self.constants[name]

    def attributes(self, **defaults):
        """The node's attributes, with ``defaults`` for absent ones; any other attribute is
        refused."""
        unknown = set(self.attrs) - set(defaults)
        if unknown:
            raise self.error(f"attribute {sorted(unknown)[0]!r} is not supported")
        values = dict(defaults)
        values.update(self.attrs)
        for key, value in values.items():
            if isinstance(value, bytes):
                values[key] = value.decode()
        return values


class _Graph:
    """An ONNX graph as values and nodes: who produces and who consumes each value."""

    def __init__(self, onnx, graph):
        to_array = onnx.numpy_helper.to_array
        self.constants = {t.name: to_array(t) for t in graph.initializer}
        self.nodes = []
        for index, proto in enumerate(graph.node):
            if proto.op_type == "Constant" and proto.domain in ("", "ai.onnx"):
                node = _Node(onnx, proto, index, self.constants)
                attrs = node.attributes(value=None)
                if attrs["value"] is None:
                    raise node.error("only Constant nodes with a 'value' tensor are supported")
                self.constants[proto.output[0]] = to_array(attrs["value"])
            else:
                self.nodes.append(_Node(onnx, proto, index, self.constants))
        inputs = [v for v in graph.input if v.name not in self.constants]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ValueError(f"load: the graph has {len(inputs)} inputs and {len(graph.output)} "
                             f"outputs; a fastconv model has one of each")
        self.input, self.output = inputs[0].name, graph.output[0].name
        tensor = inputs[0].type.tensor_type
        if tensor.elem_type not in _FLOAT_TYPES.values():
            raise ValueError(f"load: the graph input {self.input!r} is not float32 or float64")
        if not tensor.HasField("shape"):
            raise ValueError(f"load: the graph input {self.input!r} has no shape (its rank is needed)")
        self.input_rank = len(tensor.shape.dim)
        self.producer, self.consumers = {}, {}
        for node in self.nodes:
            for v in node.data:
                self.consumers.setdefault(v, []).append(node)
            for v in node.outputs:
                self.producer[v] = node
        if self.output not in self.producer:
            raise ValueError(f"load: the graph output {self.output!r} is not computed by any node")
        self._reach = {}

    def reaches(self, value, target):
        """Whether ``target`` is computed from ``value`` (or is it)."""
        if value == target:
            return True
        key = (value, target)
        if key not in self._reach:
            self._reach[key] = any(self.reaches(out, target)
                                   for node in self.consumers.get(value, ()) for out in node.outputs)
        return self._reach[key]

    def join(self, value, target):
        """The first node that every path from ``value`` to ``target`` passes (the
        immediate post-dominator of the fork at ``value``)."""
        on_paths = [n for n in self.nodes if any(self.reaches(value, v) for v in n.data)
                    and any(self.reaches(out, target) for out in n.outputs)]
        for candidate in on_paths:  # graph order is topological (the checker checks it)
            if not self._reaches_without(value, target, candidate):
                return candidate
        raise AssertionError("the node computing the target is on every path")

    def _reaches_without(self, value, target, removed):
        stack, seen = [value], set()
        while stack:
            v = stack.pop()
            if v == target:
                return True
            for node in self.consumers.get(v, ()):
                if node is not removed:
                    for out in node.outputs:
                        if out not in seen:
                            seen.add(out)
                            stack.append(out)
        return False


class _Builder:
    """Turns a _Graph into nested Sequential / Residual / Concat of fastconv layers."""

    def __init__(self, graph):
        self.graph = graph
        self.used = set()
        self.rank = {graph.input: graph.input_rank}
        self._fuse_bias_adds()

    def _fuse_bias_adds(self):
        """MatMul followed by the Add of a constant bias: one Linear (torch's export of a
        Linear on more than 2 dims)."""
        g = self.graph
        self.bias_of = {}
        for node in g.nodes:
            if node.op != "MatMul" or len(node.data) != 1:
                continue
            users = g.consumers.get(node.outputs[0], [])
            if len(users) != 1 or node.outputs[0] == g.output:
                continue
            add = users[0]
            if add.op == "Add" and len(add.data) == 1 and len(add.inputs) == 2:
                bias = add.constants[add.inputs[1 - add.inputs.index(node.outputs[0])]]
                if bias.ndim == 1:
                    self.bias_of[id(node)] = (add, bias)

    def build(self):
        layers = self._chain(self.graph.input, self.graph.output)
        for node in self.graph.nodes:
            if id(node) not in self.used:
                raise node.error("its output does not lead to the graph output; fastconv models "
                                 "have one output")
        return nn.Sequential(*layers)

    def _use(self, node):
        if id(node) in self.used:
            raise node.error("its output feeds more than one branch: the graph is not a nesting "
                             "of Sequential, Residual (Add) and Concat")
        self.used.add(id(node))

    def _chain(self, value, target):
        """The layers that compute ``target`` from ``value``, in order."""
        g, layers = self.graph, []
        while value != target:
            users = [n for n in g.consumers.get(value, ()) if g.reaches(n.outputs[0], target)]
            if len(users) == 1 and users[0].data == [value]:
                node = users[0]
                self._use(node)
                layer = self._layer(node, value)
                if layer is not None:
                    layers.append(layer)
                value = self._output_of(node)
                continue
            join = g.join(value, target)
            if join.op not in ("Add", "Concat") or join.domain not in ("", "ai.onnx"):
                raise join.error("it merges branches; only Add (a skip connection) and Concat "
                                 "(of channels) can")
            self._use(join)
            if len(join.data) != len(join.inputs):
                raise join.error("one of its inputs is a constant; it can only join branches")
            branches = [self._chain(value, v) for v in join.data]
            layers.append(self._container(join, value, branches))
            value = join.outputs[0]
        return layers

    def _output_of(self, node):
        """The value a layer's node hands on (past a fused bias Add)."""
        fused = self.bias_of.get(id(node))
        if fused is None:
            return node.outputs[0]
        self._use(fused[0])
        self.rank[fused[0].outputs[0]] = self.rank[node.outputs[0]]
        return fused[0].outputs[0]

    def _container(self, join, value, branches):
        ranks = {self.rank[v] for v in join.data}
        if len(ranks) != 1:
            raise join.error("its inputs have different ranks")
        rank = ranks.pop()
        self.rank[join.outputs[0]] = rank
        modules = [self._as_module(b) for b in branches]
        if join.op == "Add":
            join.attributes()
            if len(branches) != 2:
                raise join.error(f"it adds {len(branches)} inputs; a skip connection adds two")
            # The longer branch is the main path, an empty one the identity shortcut.
            main, shortcut = sorted(range(2), key=lambda i: -len(branches[i]))
            return nn.Residual(modules[main], modules[shortcut] if branches[shortcut] else None)
        axis = join.attributes(axis=None)["axis"]
        if axis is None or not -rank <= axis < rank:
            raise join.error(f"axis={axis} is out of range for rank-{rank} inputs")
        return nn.Concat(*modules, dim=axis)

    @staticmethod
    def _as_module(layers):
        if not layers:
            return nn.Identity()
        if len(layers) == 1:
            return layers[0]
        return nn.Sequential(*layers)

    def _layer(self, node, value):
        """The fastconv layer of one single-input node (None for Identity)."""
        if node.domain not in ("", "ai.onnx"):
            raise node.error(f"ops of domain {node.domain!r} are not supported")
        convert = getattr(self, f"_{node.op}", None)
        if convert is None:
            raise node.error("op not supported by fastconv.onnx.load")
        extra = [v for v in node.outputs[1:] if v]
        if extra and node.op not in ("Dropout",):
            raise node.error(f"its extra output {extra[0]!r} is not supported")
        rank = self.rank[value]
        layer, out_rank = convert(node, rank)
        self.rank[node.outputs[0]] = out_rank
        return layer

    # Each converter: (node, input rank) -> (layer or None, output rank).

    @staticmethod
    def _float_weight(node, array, what):
        if array.dtype not in _FLOAT_TYPES:
            raise node.error(f"{what} has dtype {array.dtype}; float32 or float64 expected")
        return array

    @staticmethod
    def _spatial_2d(node, rank):
        if rank != 4:
            raise node.error(f"input of rank {rank}; only 2-D (N, C, H, W) inputs are supported")

    @staticmethod
    def _symmetric_pads(node, pads):
        top, left, bottom, right = pads
        if (top, left) != (bottom, right):
            return None
        return (top, left)

    def _check_auto_pad(self, node, attrs):
        if attrs["auto_pad"] not in ("NOTSET", "VALID"):
            raise node.error(f"auto_pad={attrs['auto_pad']!r} is not supported (NOTSET or VALID)")
        if attrs["auto_pad"] == "VALID" and attrs["pads"] is not None and any(attrs["pads"]):
            raise node.error("auto_pad='VALID' with non-zero pads")

    def _Conv(self, node, rank):
        weight = self._float_weight(node, node.const(1), "the weight")
        bias = node.const(2, required=False)
        self._spatial_2d(node, rank)
        if weight.ndim != 4:
            raise node.error(f"weight of shape {weight.shape}; only 2-D convolutions are supported")
        attrs = node.attributes(kernel_shape=None, strides=[1, 1], pads=None, dilations=[1, 1],
                                group=1, auto_pad="NOTSET")
        self._check_auto_pad(node, attrs)
        kernel = tuple(weight.shape[2:])
        if attrs["kernel_shape"] is not None and tuple(attrs["kernel_shape"]) != kernel:
            raise node.error(f"kernel_shape={attrs['kernel_shape']} does not match the weight's "
                             f"{weight.shape}")
        stride, dilation = tuple(attrs["strides"]), tuple(attrs["dilations"])
        pads = attrs["pads"] or [0, 0, 0, 0]
        padding = self._symmetric_pads(node, pads)
        if padding is None:
            # torch's padding='same' at stride 1 puts the odd cell at the end
            same = [(d * (k - 1)) // 2 for d, k in zip(dilation, kernel)]
            same_end = [d * (k - 1) - s for d, k, s in zip(dilation, kernel, same)]
            if stride != (1, 1) or list(pads) != same + same_end:
                raise node.error(f"asymmetric pads {list(pads)} are not supported")
            padding = "same"
        groups = attrs["group"]
        out_channels = weight.shape[0]
        if groups < 1 or out_channels % groups:
            raise node.error(f"group={groups} does not divide the {out_channels} output channels")
        if bias is not None and bias.shape != (out_channels,):
            raise node.error(f"bias of shape {bias.shape}; expected ({out_channels},)")
        layer = nn.Conv2d(weight.shape[1] * groups, out_channels, kernel, stride=stride,
                          padding=padding, dilation=dilation, groups=groups, bias=bias is not None,
                          dtype=weight.dtype)
        layer.weight.data[...] = weight
        if bias is not None:
            layer.bias.data[...] = bias
        return layer, 4

    def _pool_args(self, node, rank, **extra):
        self._spatial_2d(node, rank)
        attrs = node.attributes(kernel_shape=None, strides=None, pads=None, ceil_mode=0,
                                auto_pad="NOTSET", dilations=None, **extra)
        self._check_auto_pad(node, attrs)
        if attrs["kernel_shape"] is None or len(attrs["kernel_shape"]) != 2:
            raise node.error(f"kernel_shape={attrs['kernel_shape']}; a 2-D kernel is required")
        kernel = tuple(attrs["kernel_shape"])
        stride = tuple(attrs["strides"] or (1, 1))  # ONNX's default; torch's is the kernel
        padding = self._symmetric_pads(node, attrs["pads"] or [0, 0, 0, 0])
        if padding is None:
            raise node.error(f"asymmetric pads {list(attrs['pads'])} are not supported")
        if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
            raise node.error(f"pads {padding} exceed half the kernel {kernel}")
        dilation = tuple(attrs["dilations"] or (1, 1))
        return attrs, kernel, stride, padding, dilation

    def _MaxPool(self, node, rank):
        attrs, kernel, stride, padding, dilation = self._pool_args(node, rank, storage_order=0)
        if attrs["storage_order"] != 0:
            raise node.error("storage_order=1 is not supported")
        return nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=bool(attrs["ceil_mode"])), 4

    def _AveragePool(self, node, rank):
        attrs, kernel, stride, padding, dilation = self._pool_args(node, rank, count_include_pad=0)
        if dilation != (1, 1):
            raise node.error(f"dilations={list(dilation)} are not supported")
        if attrs["ceil_mode"]:
            raise node.error("ceil_mode=1 is not supported (ONNX and torch differ on the divisors "
                             "of partial windows)")
        return nn.AvgPool2d(kernel, stride, padding,
                            count_include_pad=bool(attrs["count_include_pad"])), 4

    def _GlobalAveragePool(self, node, rank):
        node.attributes()
        self._spatial_2d(node, rank)
        return nn.AdaptiveAvgPool2d((1, 1)), 4

    def _Relu(self, node, rank):
        node.attributes()
        return nn.ReLU(), rank

    def _LeakyRelu(self, node, rank):
        return nn.LeakyReLU(_clean_float(node.attributes(alpha=0.01)["alpha"])), rank

    def _Sigmoid(self, node, rank):
        node.attributes()
        return nn.Sigmoid(), rank

    def _Tanh(self, node, rank):
        node.attributes()
        return nn.Tanh(), rank

    def _Identity(self, node, rank):
        node.attributes()
        return None, rank

    def _Softmax(self, node, rank):
        axis = node.attributes(axis=-1)["axis"]
        if not -rank <= axis < rank:
            raise node.error(f"axis={axis} is out of range for rank {rank}")
        return nn.Softmax(dim=axis), rank

    def _Flatten(self, node, rank):
        axis = node.attributes(axis=1)["axis"]
        if rank < 2 or axis % rank != 1:
            raise node.error(f"axis={axis} on a rank-{rank} input; only axis 1 (torch's Flatten) "
                             f"is supported")
        return nn.Flatten(), 2

    def _Dropout(self, node, rank):
        node.attributes(seed=0)
        ratio = node.const(1, required=False)
        training = node.const(2, required=False)
        if training is not None and bool(training):
            raise node.error("training_mode=True is not supported (an inference graph is expected)")
        if any(v for v in node.outputs[1:]):
            users = self.graph.consumers.get(node.outputs[1], [])
            if users or node.outputs[1] == self.graph.output:
                raise node.error("its mask output is used; fastconv's Dropout has none")
        p = 0.5 if ratio is None else _clean_float(ratio)
        return nn.Dropout(p), rank

    def _Gemm(self, node, rank):
        attrs = node.attributes(alpha=1.0, beta=1.0, transA=0, transB=0)
        if attrs["alpha"] != 1.0 or attrs["beta"] != 1.0 or attrs["transA"]:
            raise node.error(f"alpha={attrs['alpha']}, beta={attrs['beta']}, transA={attrs['transA']}: "
                             f"only alpha=1, beta=1, transA=0 (a Linear layer) are supported")
        if rank != 2:
            raise node.error(f"input of rank {rank}; Gemm takes 2-D inputs")
        weight = self._float_weight(node, node.const(1), "B")
        if weight.ndim != 2:
            raise node.error(f"B of shape {weight.shape}; a matrix expected")
        weight = weight if attrs["transB"] else weight.T
        bias = node.const(2, required=False)
        return self._linear(node, weight, bias), 2

    def _MatMul(self, node, rank):
        node.attributes()
        if rank < 2:
            raise node.error(f"input of rank {rank}; MatMul of a vector is not supported")
        if node.inputs[0] not in node.data:
            raise node.error("the constant must be the second operand")
        weight = self._float_weight(node, node.const(1), "B")
        if weight.ndim != 2:
            raise node.error(f"B of shape {weight.shape}; a matrix expected")
        fused = self.bias_of.get(id(node))
        return self._linear(node, weight.T, None if fused is None else fused[1]), rank

    @staticmethod
    def _linear(node, weight, bias):
        """Linear(in, out) with weight (out, in) and bias (out,) (or None)."""
        out_features, in_features = weight.shape
        if bias is not None:
            if bias.size != out_features or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
                raise node.error(f"bias of shape {bias.shape}; expected ({out_features},)")
            bias = bias.reshape(out_features)
        layer = nn.Linear(in_features, out_features, bias=bias is not None, dtype=weight.dtype)
        layer.weight.data[...] = weight
        if bias is not None:
            layer.bias.data[...] = bias
        return layer

    def _BatchNormalization(self, node, rank):
        attrs = node.attributes(epsilon=1e-5, momentum=0.9, training_mode=0)
        if attrs["training_mode"]:
            raise node.error("training_mode=1 is not supported (an inference graph is expected)")
        scale, bias, mean, var = (self._float_weight(node, node.const(i), name) for i, name in
                                  ((1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")))
        c = scale.shape[0] if scale.ndim == 1 else -1
        if any(a.shape != (c,) for a in (scale, bias, mean, var)):
            raise node.error("scale, B, input_mean and input_var must be vectors of one length")
        if rank == 4:
            cls = nn.BatchNorm2d
        elif rank in (2, 3):
            cls = nn.BatchNorm1d
        else:
            raise node.error(f"input of rank {rank}; BatchNorm takes rank 2, 3 or 4")
        layer = cls(c, eps=_clean_float(attrs["epsilon"]),
                    momentum=round(1.0 - _clean_float(attrs["momentum"]), 7), dtype=scale.dtype)
        layer.weight.data[...] = scale
        layer.bias.data[...] = bias
        layer.running_mean[...] = mean
        layer.running_var[...] = var
        return layer, rank
