"""fastconv: fast, exact CPU kernels for convolutional networks.

Cython + OpenMP im2col/col2im, convolution and pooling with their gradients, behind a
torch-compatible functional API (:mod:`fastconv.functional`), a pure-NumPy reference
(:mod:`fastconv.reference`) and a Sequential model API (:mod:`fastconv.nn`, :mod:`fastconv.optim`).
"""
__version__ = "0.1.0"

from ._threads import get_num_threads, set_num_threads, threads
from . import datasets, functional, reference
from . import nn, optim
from . import transforms
from . import onnx  # needs the onnx package only when called
from .nn import init
from ._backend import backend
from ._random import manual_seed, get_rng_state, set_rng_state
from ._checkpoint import save_checkpoint, load_checkpoint
from ._config import show_config

__all__ = [
    "__version__", "functional", "reference", "nn", "optim", "onnx", "init", "datasets",
    "get_num_threads", "set_num_threads", "threads", "backend", "manual_seed", "show_config",
    "get_rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint",
]
