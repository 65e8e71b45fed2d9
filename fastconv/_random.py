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


# The bit generators numpy ships; a saved state names one of these and nothing else is built.
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def get_rng_state():
    """The state of fastconv's generator, like ``torch.get_rng_state``.

    Returns
    -------
    dict
        numpy's ``bit_generator.state``: plain ints and strings (JSON-serializable), for
        :func:`set_rng_state`.
    """
    return _generator.bit_generator.state


def set_rng_state(state):
    """Make fastconv's generator continue from ``state`` (from :func:`get_rng_state`).

    Raises
    ------
    ValueError
        ``state`` is not a numpy bit-generator state; the generator is left as it was.
    """
    global _generator
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise ValueError(f"set_rng_state: not a numpy bit-generator state (bit_generator={name!r})")
    bit_generator = getattr(np.random, name)()
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"set_rng_state: invalid {name} state: {exc}") from None
    _generator = np.random.Generator(bit_generator)
