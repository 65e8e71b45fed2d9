"""Parameter: an ndarray a model learns, with the gradient that backward accumulates."""
import numpy as np


class Parameter:
    """A learnable array, like ``torch.nn.Parameter``.

    Parameters
    ----------
    data : array_like
        The values; kept as given when already an ndarray (not copied).
    requires_grad : bool, default True
        When False, layers skip this parameter's gradient and optimizers leave it alone.

    Attributes
    ----------
    data : ndarray
        The values. Optimizers update it in place.
    grad : ndarray or None
        d loss / d data, summed over every ``backward`` since the last ``zero_grad``
        (None before the first one, as in torch).
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad=True):
        self.data = np.asarray(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    def numel(self):
        """Number of elements (torch's name for ``size``)."""
        return self.data.size

    def accumulate_grad(self, grad):
        """Add ``grad`` to ``.grad`` (torch's ``+=``); the first one is kept, not copied.

        ``grad`` must be a fresh array that nothing else writes to: every layer passes the
        array its backward op just returned.
        """
        if self.grad is None:
            self.grad = grad
        else:
            self.grad += grad

    def __array__(self, dtype=None, copy=None):
        if dtype is None and not copy:
            return self.data
        return np.array(self.data, dtype=dtype, copy=True if copy else None)

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"
