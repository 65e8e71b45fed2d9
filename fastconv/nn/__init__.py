"""Layers, losses and the Sequential model API, with torch's names and semantics.

``model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), ...)``;
then either a torch-style loop (``out = model(x)``, ``loss = loss_fn(out, y)``,
``opt.zero_grad()``, ``model.backward(loss_fn.backward())``, ``opt.step()``) or
``model.fit(x, y, loss=..., optimizer=..., epochs=..., batch_size=...)``.
"""
from . import init
from ._training import History
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, LeakyReLU, Linear,
                     MaxPool2d, ReLU, Sigmoid, Tanh)
from .activation import LogSoftmax, Softmax
from .containers import Concat, Identity, Residual
from .fuse import fuse
from .layers import Dropout2d
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d
from .models import lenet
from .module import Module
from .parameter import Parameter
from .sequential import Sequential
from .sync_batchnorm import SyncBatchNorm

__all__ = [
    "Module", "Parameter", "Sequential", "History", "init",
    "Conv2d", "MaxPool2d", "AvgPool2d", "Linear", "Flatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
    "Dropout", "BatchNorm1d", "BatchNorm2d", "CrossEntropyLoss", "MSELoss", "lenet",
    "Identity", "Residual", "Concat", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Softmax",
    "LogSoftmax", "NLLLoss", "Dropout2d", "models", "fuse", "SyncBatchNorm",
]
