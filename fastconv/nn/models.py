"""Reference architectures, buildable from fastconv.nn or from torch.nn: LeNet-5, and the
ResNets of He et al. 2016 (CIFAR and ImageNet) with torchvision's module names."""
from collections import OrderedDict

import numpy as np

from .layers import BatchNorm2d, Conv2d, ReLU, bn_relu, bn_relu_backward
from .module import Module

__all__ = ["lenet", "BasicBlock", "cifar_resnet", "imagenet_resnet", "resnet20", "resnet32",
           "resnet44", "resnet56", "resnet110", "resnet18", "resnet34"]


def lenet(variant="modern", nn=None):
    """LeNet-5 for (N, 1, 28, 28) images and 10 classes.

    Parameters
    ----------
    variant : {"modern", "d2l"}
        "modern": ReLU activations and 2x2 max pooling. "d2l": sigmoid activations and 2x2
        average pooling, as in d2l.ai's LeNet section. Both: conv 6@5x5 (padding 2), pool,
        conv 16@5x5, pool, flatten, linear 400-120-84-10.
    nn : module, optional
        Where the layer classes come from: :mod:`fastconv.nn` (the default) or ``torch.nn``,
        which builds the same architecture in torch, with the same state_dict keys.

    Returns
    -------
    Sequential
    """
    if nn is None:
        from fastconv import nn
    if variant == "modern":
        act, pool = nn.ReLU, nn.MaxPool2d
    elif variant == "d2l":
        act, pool = nn.Sigmoid, nn.AvgPool2d
    else:
        raise ValueError(f"unknown LeNet variant {variant!r}; expected 'modern' or 'd2l'")
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), act(), pool(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), act(), pool(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, 10))


# -- ResNets (He, Zhang, Ren, Sun 2016), torchvision's module names ------------------------------


class BasicBlock(Module):
    """Two 3x3 convolutions with BatchNorm and a skip connection: torchvision's BasicBlock,
    written as a user-defined Module that composes its children by hand.

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, the shortcut being
    ``downsample`` (a 1x1 strided Conv2d and a BatchNorm2d) or the identity.

    The pattern for any such module: assign the children as attributes (that names their
    parameters: "conv1.weight", "downsample.0.weight"); in ``forward`` call them in order; in
    ``backward`` call their ``backward`` in reverse order, add the gradients where the
    forward's paths met (here the two uses of ``x``), and set each child's
    ``requires_input_grad`` to whether its input gradient is needed. A layer that caches for
    backward (ReLU, BatchNorm, Conv2d) is used once per forward, so the block has two ReLUs
    where torchvision reuses one (ReLU has no parameters: the keys stay torchvision's).
    """

    expansion = 1
    # Children whose output flows straight from one into the other in forward (nn.fuse).
    fuse_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.relu = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = downsample
        self.relu_out = ReLU()
        self.stride = stride

    def forward(self, x):
        out = bn_relu(self.bn1, self.relu, self.conv1(x))
        out = self.conv2(out)
        skip = x if self.downsample is None else self.downsample(x)
        return bn_relu(self.bn2, self.relu_out, out, add=skip)

    def backward(self, grad_output):
        needs_input_grad = self.requires_input_grad
        # d loss / d (out + skip), once for both paths: bn2's backward through the ReLU would
        # read grad_output and the output again, for no pass saved.
        grad = self.relu_out.backward(grad_output)
        grad_main = bn_relu_backward(self.bn1, self.relu, self.conv2.backward(
            self.bn2.backward(grad)))
        if self.downsample is not None:
            self.downsample.requires_input_grad = needs_input_grad
            grad_skip = self.downsample.backward(grad)
        else:
            grad_skip = grad if needs_input_grad else None
        self.conv1.requires_input_grad = needs_input_grad
        if type(self.conv1) is Conv2d:
            # the two paths' sum in conv1's input-gradient pass, image by image in cache
            return self.conv1._backward(grad_main, add=grad_skip)
        grad_x = self.conv1.backward(grad_main)
        if not needs_input_grad:
            return None
        if grad_x.flags.writeable and not np.may_share_memory(grad_x, grad_skip):
            return np.add(grad_x, grad_skip, out=grad_x)  # conv1's fresh array: no new one
        return grad_x + grad_skip


def _stage(nn, inplanes, planes, blocks, stride, block):
    """torchvision's ``_make_layer``: the first block may stride and project (option B)."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes))
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _init_resnet(model):
    """torchvision's ResNet init: He-normal (fan_out, ReLU) convolutions, BatchNorm 1 and 0,
    the Linear head at its default."""
    from fastconv.nn import init
    for m in model.modules():
        if isinstance(m, Conv2d):
            init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, BatchNorm2d):
            init.ones_(m.weight)
            init.zeros_(m.bias)
    return model


def _resnet(stem, widths, blocks, num_classes, nn, block):
    layers = list(stem)
    inplanes = widths[0]
    for i, (planes, count) in enumerate(zip(widths, blocks)):
        layers.append((f"layer{i + 1}", _stage(nn, inplanes, planes, count, 1 if i == 0 else 2, block)))
        inplanes = planes
    layers += [("avgpool", nn.AdaptiveAvgPool2d((1, 1))), ("flatten", nn.Flatten()),
               ("fc", nn.Linear(inplanes, num_classes))]
    return nn.Sequential(OrderedDict(layers))


def cifar_resnet(depth, num_classes=10, in_channels=3, nn=None, block=None):
    """The CIFAR ResNets of He et al. 2016 §4.2: depth 6n + 2.

    A 3x3 stem of 16 channels, three stages of n BasicBlocks with 16, 32 and 64 channels
    (stride 2 at the start of stages 2 and 3, where the shortcut is a 1x1 stride-2
    convolution and BatchNorm: option B), global average pooling and a linear layer.

    Parameters
    ----------
    depth : int
        20, 32, 44, 56, 110, ... (6n + 2).
    num_classes : int, default 10
    in_channels : int, default 3
        1 for MNIST-style images.
    nn : module, optional
        Where the layer classes come from: :mod:`fastconv.nn` by default; with ``torch.nn``
        (and a torch ``block``) the same architecture is built in torch, with the same keys.
    block : callable, optional
        ``block(inplanes, planes, stride, downsample)``; default :func:`BasicBlock`.

    Returns
    -------
    Sequential
        Children ``conv1``, ``bn1``, ``relu``, ``layer1`` .. ``layer3``, ``avgpool``,
        ``flatten``, ``fc``: torchvision's state_dict keys (``layer2.0.downsample.0.weight``).
        Input (N, in_channels, 32, 32) (any size of at least 8x8 works), output
        (N, num_classes) logits.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), "
                         f"got {depth!r}")
    own = nn is None
    if own:
        from fastconv import nn
    stem = [("conv1", nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)),
            ("bn1", nn.BatchNorm2d(16)), ("relu", nn.ReLU())]
    model = _resnet(stem, (16, 32, 64), [(depth - 2) // 6] * 3, num_classes, nn,
                    block or BasicBlock)
    return _init_resnet(model) if own else model


def imagenet_resnet(blocks, num_classes=1000, in_channels=3, nn=None, block=None):
    """torchvision's ImageNet ResNet with BasicBlocks: 7x7 stride-2 stem of 64 channels, 3x3
    stride-2 max pooling, four stages of 64/128/256/512 channels, global average pooling, fc.
    Same keys as ``torchvision.models.resnet18()``; ``nn``/``block`` as :func:`cifar_resnet`."""
    own = nn is None
    if own:
        from fastconv import nn
    stem = [("conv1", nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)),
            ("bn1", nn.BatchNorm2d(64)), ("relu", nn.ReLU()),
            ("maxpool", nn.MaxPool2d(3, stride=2, padding=1))]
    model = _resnet(stem, (64, 128, 256, 512), blocks, num_classes, nn, block or BasicBlock)
    return _init_resnet(model) if own else model


def resnet20(num_classes=10, in_channels=3):
    """ResNet-20 for CIFAR (0.27 M parameters); see :func:`cifar_resnet`."""
    return cifar_resnet(20, num_classes, in_channels)


def resnet32(num_classes=10, in_channels=3):
    """ResNet-32 for CIFAR; see :func:`cifar_resnet`."""
    return cifar_resnet(32, num_classes, in_channels)


def resnet44(num_classes=10, in_channels=3):
    """ResNet-44 for CIFAR; see :func:`cifar_resnet`."""
    return cifar_resnet(44, num_classes, in_channels)


def resnet56(num_classes=10, in_channels=3):
    """ResNet-56 for CIFAR; see :func:`cifar_resnet`."""
    return cifar_resnet(56, num_classes, in_channels)


def resnet110(num_classes=10, in_channels=3):
    """ResNet-110 for CIFAR; see :func:`cifar_resnet`."""
    return cifar_resnet(110, num_classes, in_channels)


def resnet18(num_classes=1000, in_channels=3):
    """ResNet-18 for ImageNet (11.7 M parameters), torchvision's layout; see
    :func:`imagenet_resnet`."""
    return imagenet_resnet([2, 2, 2, 2], num_classes, in_channels)


def resnet34(num_classes=1000, in_channels=3):
    """ResNet-34 for ImageNet (21.8 M parameters), torchvision's layout."""
    return imagenet_resnet([3, 4, 6, 3], num_classes, in_channels)
