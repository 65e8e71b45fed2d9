"""Data augmentation on whole NCHW batches: RandomCrop, RandomHorizontalFlip, Normalize,
Compose, with torchvision's names and arguments.

Each transform takes an (N, C, H, W) array (or one (C, H, W) image) and returns a new array
of its dtype; nothing loops over images in Python. Random draws come from fastconv's
generator, so ``fastconv.manual_seed(s)`` makes every crop and flip reproducible. Give one to
``fit(..., transform=...)`` to augment each training batch::

    from fastconv import transforms as T, datasets
    augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                         T.Normalize(datasets.CIFAR10_MEAN, datasets.CIFAR10_STD)])
"""
import numbers

import numpy as np

from . import _random

__all__ = ["Compose", "RandomCrop", "RandomHorizontalFlip", "Normalize"]


def _batch(x, name):
    """(x4, unbatched) for an (N, C, H, W) or (C, H, W) float or integer array."""
    x = np.asarray(x)
    if x.ndim == 4:
        return x, False
    if x.ndim == 3:
        return x[np.newaxis], True
    raise ValueError(f"{name}: expected (N, C, H, W) images or one (C, H, W) image, got shape {x.shape}")


def _size_pair(value, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    return h, w


class Compose:
    """Apply ``transforms`` in order, like ``torchvision.transforms.Compose``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose takes callables, got {type(t).__name__}")

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self):
        return "Compose(\n" + "".join(f"    {t!r}\n" for t in self.transforms) + ")"


class RandomCrop:
    """Crop each image at a random place, after zero padding, like torchvision's RandomCrop.

    Parameters
    ----------
    size : int or (int, int)
        (h, w) of the output.
    padding : int or (int, int), default 0
        Zeros (``fill``) added on each side (top/bottom, left/right) before cropping: the
        CIFAR recipe is ``RandomCrop(32, padding=4)``.
    fill : number, default 0

    Each image draws its own offsets, uniform over every position of the crop in the padded
    image; the crop is one gather over the whole batch.
    """

    def __init__(self, size, padding=0, fill=0):
        self.size = _size_pair(size, "size")
        self.padding = _size_pair(padding, "padding")
        if min(self.size) < 1 or min(self.padding) < 0:
            raise ValueError(f"RandomCrop: size must be positive and padding non-negative, got "
                             f"size={self.size}, padding={self.padding}")
        self.fill = fill

    def __call__(self, x):
        x4, unbatched = _batch(x, "RandomCrop")
        (ph, pw), (sh, sw) = self.padding, self.size
        n, c, h, w = x4.shape
        if sh > h + 2 * ph or sw > w + 2 * pw:
            raise ValueError(f"RandomCrop: crop {self.size} is larger than the padded image "
                             f"({h + 2 * ph}, {w + 2 * pw})")
        padded = x4
        if ph or pw:
            padded = np.pad(x4, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=self.fill)
        rng = _random.generator()
        top = rng.integers(0, h + 2 * ph - sh + 1, n)
        left = rng.integers(0, w + 2 * pw - sw + 1, n)
        rows = (top[:, None] + np.arange(sh))[:, None, :, None]
        cols = (left[:, None] + np.arange(sw))[:, None, None, :]
        out = padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]
        return out[0] if unbatched else out

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p`` (default 0.5), like torchvision's;
    one draw per image."""

    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x):
        x4, unbatched = _batch(x, "RandomHorizontalFlip")
        flip = _random.generator().random(len(x4)) < self.p
        out = x4.copy()
        out[flip] = x4[flip, :, :, ::-1]
        return out[0] if unbatched else out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel, like torchvision's Normalize; the result has
    x's dtype (float32 for integer input). The CIFAR-10 values are
    :data:`fastconv.datasets.CIFAR10_MEAN` and :data:`~fastconv.datasets.CIFAR10_STD`."""

    def __init__(self, mean, std):
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(f"Normalize: mean and std must be sequences of one length, got "
                             f"{self.mean.shape} and {self.std.shape}")
        if (self.std == 0).any():
            raise ValueError(f"Normalize: std must be non-zero, got {tuple(self.std)}")

    def __call__(self, x):
        x4, unbatched = _batch(x, "Normalize")
        if x4.shape[1] != len(self.mean):
            raise ValueError(f"Normalize: {len(self.mean)} channel means for images of shape "
                             f"{x4.shape[1:]} ({x4.shape[1]} channels)")
        dtype = x4.dtype if np.issubdtype(x4.dtype, np.floating) else np.dtype(np.float32)
        mean = self.mean.astype(dtype)[:, None, None]
        std = self.std.astype(dtype)[:, None, None]
        out = (x4.astype(dtype, copy=False) - mean) / std
        return out[0] if unbatched else out

    def __repr__(self):
        return f"Normalize(mean={tuple(self.mean)}, std={tuple(self.std)})"
