"""The one random number generator behind weight init, dropout and shuffling.

``fastconv.manual_seed(seed)`` replaces it with a freshly seeded one, so that everything
drawn afterwards (init, dropout masks, ``fit``'s batch order) is reproducible.
"""
import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed fastconv's random number generator, like ``torch.manual_seed``.

    Parameters
    ----------
    seed : int
        Any non-negative integer numpy's ``default_rng`` accepts.

    Returns
    -------
    numpy.random.Generator
        The new generator (also what :func:`generator` returns from now on).
    """
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def generator():
    """The current :class:`numpy.random.Generator` (init, dropout and shuffling draw from it)."""
    return _generator
