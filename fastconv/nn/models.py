"""Reference architectures, buildable from fastconv.nn or from torch.nn."""

__all__ = ["lenet"]


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
