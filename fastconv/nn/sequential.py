"""Sequential: layers applied in order, with the Keras-style fit, evaluate, predict and summary."""
import os
from collections import OrderedDict

import numpy as np

from .._io import atomic_file
from .._threads import blas_single_threaded
from . import _training
from .layers import BatchNorm2d, ReLU, bn_relu, bn_relu_backward
from .module import Module

__all__ = ["Sequential"]


class Sequential(Module):
    """Layers applied in order, with Keras-style ``fit``, ``evaluate``, ``predict`` and ``summary``.

    Parameters
    ----------
    *layers : Module
        Registered as children "0", "1", ..., so parameter names are torch's ("0.weight").

    Notes
    -----
    ``requires_input_grad`` is False by default: ``backward`` returns None and the first
    layer does not compute the gradient of the input images (for a first convolution that
    is a whole extra backward pass). Set it True to get d loss / d input. ``backward`` sets
    each layer's flag from it (the first layer's to it, the others' to True).
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            layers = list(layers[0].items())
        else:
            layers = [(str(i), layer) for i, layer in enumerate(layers)]
        for name, layer in layers:
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes Modules, got {type(layer).__name__} as layer {name}")
            self._modules[name] = layer
        self.requires_input_grad = False

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __getitem__(self, index):
        layers = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*layers[index])
        return layers[index]

    def append(self, layer):
        """Add ``layer`` at the end (named by its position)."""
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential takes Modules, got {type(layer).__name__}")
        self._modules[str(len(self))] = layer
        return self

    def forward(self, x):
        # a BatchNorm2d followed by a ReLU (a ResNet's stem) runs as one pass (bn_relu); BLAS
        # kept at one thread once for all the layers, not per layer (blas_single_threaded)
        bn = None
        with blas_single_threaded():
            for layer in self._modules.values():
                if bn is not None:
                    bn, x = None, (bn_relu(bn, layer, x) if type(layer) is ReLU
                                   else layer(bn(x)))
                elif type(layer) is BatchNorm2d:
                    bn = layer
                else:
                    x = layer(x)
            return x if bn is None else bn(x)

    def backward(self, grad_output):
        layers = list(self._modules.values())
        # Set here, not once: a layer may also sit in another Sequential (a slice of this one).
        for i, layer in enumerate(layers):
            layer.requires_input_grad = self.requires_input_grad if i == 0 else True
        i = len(layers) - 1
        with blas_single_threaded():
            while i >= 0:
                layer = layers[i]
                if type(layer) is ReLU and i > 0 and type(layers[i - 1]) is BatchNorm2d:
                    grad_output = bn_relu_backward(layers[i - 1], layer, grad_output)
                    i -= 2
                else:
                    grad_output = layer.backward(grad_output)
                    i -= 1
        return grad_output

    # -- Keras-style API (fastconv.nn._training) ------------------------------------------------

    def fit(self, x, y, *, loss, optimizer, epochs=1, batch_size=32, validation_data=None,
            shuffle=True, verbose=1, scheduler=None, transform=None, checkpoint=None, resume=None):
        return _training.fit(self, x, y, loss=loss, optimizer=optimizer, epochs=epochs,
                             batch_size=batch_size, validation_data=validation_data, shuffle=shuffle,
                             verbose=verbose, scheduler=scheduler, transform=transform,
                             checkpoint=checkpoint, resume=resume)

    def evaluate(self, x, y, *, loss=None, batch_size=256):
        return _training.evaluate(self, x, y, loss=loss, batch_size=batch_size)

    def predict(self, x, batch_size=256):
        return _training.predict(self, x, batch_size=batch_size)

    fit.__doc__, evaluate.__doc__, predict.__doc__ = (
        _training.fit.__doc__, _training.evaluate.__doc__, _training.predict.__doc__)

    def summary(self, input_shape=None, print_fn=print):
        """Print (and return) a table: layer (type) / output shape / param #.

        Parameters
        ----------
        input_shape : tuple of int, optional
            The shape of one sample, e.g. ``(1, 28, 28)``. Output shapes are found by running
            one zero sample through the model in eval mode; without it they show as "?".
        print_fn : callable or None
            Where the table goes; None to only return it.
        """
        table = _training.summary(self, input_shape)
        if print_fn is not None:
            print_fn(table)
        return table

    def save(self, path):
        """Write the state_dict to ``path`` as .npz, atomically.

        The file is written beside ``path`` under a temporary name, flushed to disk, then
        renamed over ``path``: a crash leaves the old file or the new one, never a broken one.
        """
        with atomic_file(path) as f:
            np.savez(f, **self.state_dict())

    def load(self, path, strict=True):
        """Load weights written by :meth:`save` (or any .npz of torch-named arrays) into this
        model; returns ``self``. Errors as :meth:`load_state_dict`."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            self.load_state_dict({key: data[key] for key in data.files}, strict=strict)
        return self
