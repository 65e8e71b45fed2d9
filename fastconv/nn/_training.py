"""Keras-style training on a :class:`~fastconv.nn.Sequential`: fit, evaluate, predict, summary."""
import copy
import math
import os
import time

import numpy as np

from .. import _random
from .._checkpoint import load_checkpoint, save_checkpoint
from .._progress import progress_bar
from . import _fit_strategy
from .loss import CrossEntropyLoss, MSELoss

__all__ = ["History", "fit", "evaluate", "predict", "summary"]


class History:
    """What :func:`fit` returns: one entry per epoch for each metric.

    Attributes
    ----------
    history : dict of str to list of float
        "loss", "accuracy" (training, over the epoch's batches), "val_loss", "val_accuracy"
        (None per epoch without validation data), "seconds" (wall time of the epoch's
        training) and "images_per_s" (training throughput). ``history["loss"]`` or
        ``history.history["loss"]``.
    epoch : list of int
        0, 1, ...
    """

    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_s")

    def __init__(self):
        self.history = {key: [] for key in self.KEYS}
        self.epoch = []

    def _append(self, **values):
        self.epoch.append(len(self.epoch))
        for key in self.KEYS:
            self.history[key].append(values.get(key))

    def __getitem__(self, key):
        return self.history[key]

    @classmethod
    def _from_dict(cls, history):
        """A History continuing the epochs of ``history`` (a checkpoint's copy of ``.history``)."""
        self = cls()
        for key in cls.KEYS:
            self.history[key] = list(history[key])
        self.epoch = list(range(len(self.history["loss"])))
        return self

    def __len__(self):
        return len(self.epoch)

    def __repr__(self):
        last = {k: v[-1] for k, v in self.history.items() if v and v[-1] is not None}
        return f"History(epochs={len(self)}, last={last})"

    def plot(self, path):
        """Save a PNG of the loss and accuracy curves (train and validation) to ``path``.

        Needs matplotlib; without it, raises ImportError saying how to install it.
        """
        try:
            # A bare Figure, not pyplot: no GUI backend, no change to the user's pyplot state.
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib "
                              "(or pip install 'fastconv[extras]')") from None
        epochs = [e + 1 for e in self.epoch]
        fig = Figure(figsize=(10, 4))
        axes = fig.subplots(1, 2)
        for ax, metric in zip(axes, ("loss", "accuracy")):
            for key, label in ((metric, "train"), ("val_" + metric, "validation")):
                values = self.history[key]
                if any(v is not None for v in values):
                    ax.plot(epochs, [math.nan if v is None else v for v in values], marker="o", label=label)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
            ax.grid(True, alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return path


def _accuracy_count(output, y):
    """Correct predictions in a batch: argmax of (N, classes) logits against integer labels,
    None when that does not apply (regression targets)."""
    if output.ndim != 2 or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        return None
    return int(np.count_nonzero(output.argmax(axis=1) == y))


def _format(metrics):
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None)


def fit(model, x, y, *, loss, optimizer, epochs=1, batch_size=32, validation_data=None,
        shuffle=True, verbose=1, scheduler=None, transform=None, checkpoint=None, resume=None):
    """Train the model with mini-batches of ``(x, y)`` for ``epochs`` passes.

    Each batch runs the torch-style step: forward, loss, ``optimizer.zero_grad()``,
    ``model.backward(loss.backward())``, ``optimizer.step()``.

    Parameters
    ----------
    x : ndarray (N, ...)
        Inputs, e.g. float32 images (N, C, H, W) in [0, 1].
    y : ndarray (N,) or (N, ...)
        Integer class labels (accuracy is reported) or regression targets.
    loss : loss module
        E.g. ``nn.CrossEntropyLoss()``.
    optimizer : fastconv.optim.Optimizer
    epochs : int, default 1
    batch_size : int, default 32
        The last batch of an epoch may be smaller. Under MPI (:mod:`fastconv.distributed`) the
        global batch: each rank takes its shard, and the run is bitwise the same on any
        number of ranks; rank 0 alone shows progress, and the metrics are the global ones.
    validation_data : (x_val, y_val), optional
        Evaluated (eval mode) after every epoch.
    shuffle : bool, default True
        A new order each epoch, from fastconv's generator (:func:`fastconv.manual_seed`).
    verbose : {0, 1, 2}, default 1
        0 silent, 1 a progress bar per epoch (tqdm if installed), 2 one line per epoch.
    scheduler : fastconv.optim.LRScheduler, optional
        Stepped once after every epoch.
    transform : callable, optional
        Applied to each training batch of inputs before the forward (augmentation, e.g. a
        :mod:`fastconv.transforms` Compose); not to the validation data.
    checkpoint : str or PathLike, optional
        After every epoch, write model, optimizer, scheduler, epoch, RNG state, the next
        epoch's data order and the History there (:func:`fastconv.save_checkpoint`, atomic).
    resume : str or PathLike, optional
        Continue from such a checkpoint: its epochs count towards ``epochs``, and the run
        ends bitwise where one without the interruption would have ended (same data, model,
        optimizer and scheduler built the same way). The History returned holds every epoch.

    Returns
    -------
    History
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"fit: x has {len(x)} samples but y has {len(y)}")
    if batch_size < 1 or epochs < 0:
        raise ValueError(f"fit: batch_size must be >= 1 and epochs >= 0, got {batch_size} and {epochs}")
    if validation_data is not None:
        # checked before the first epoch, not found wrong after it
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("fit: validation_data must be a pair (x_val, y_val), got "
                             f"{type(validation_data).__name__}")
        x_val, y_val = (np.asarray(a) for a in validation_data)
        if x_val.ndim == 0 or y_val.ndim == 0 or len(x_val) == 0 or len(x_val) != len(y_val):
            raise ValueError("fit: validation_data must hold x_val and y_val of one non-zero "
                             f"length, got shapes {x_val.shape} and {y_val.shape}")
    if transform is not None and not callable(transform):
        raise TypeError(f"fit: transform must be callable, got {type(transform).__name__}")
    if checkpoint is not None and not os.path.isdir(os.path.dirname(os.path.abspath(checkpoint))):
        raise FileNotFoundError(f"fit: the directory of checkpoint={os.fspath(checkpoint)!r} does not exist")
    history = History()
    n = len(x)
    order = None
    if resume is not None:
        saved = load_checkpoint(resume, model=model, optimizer=optimizer, scheduler=scheduler)
        if not isinstance(saved["extra"], dict) or "history" not in saved["extra"]:
            raise ValueError(f"fit: resume={os.fspath(resume)!r} was not written by fit(checkpoint=...)")
        history = History._from_dict(saved["extra"]["history"])
        order = saved["data_order"]
        if shuffle and order is not None and len(order) != n:
            raise ValueError(f"fit: resume={os.fspath(resume)!r} was written for {len(order)} samples, "
                             f"x has {n}")
    strategy = _fit_strategy.for_fit(model, optimizer, loss)
    strategy.check(samples=n, batch_size=batch_size, epochs=epochs, shuffle=bool(shuffle))
    verbose = verbose if strategy.is_root else 0
    for epoch in range(len(history), epochs):
        model.train()
        if shuffle and order is None:
            order = strategy.order(n)
        bar = progress_bar(n, f"epoch {epoch + 1}/{epochs}") if verbose == 1 else None
        total_loss, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        for begin in range(0, n, batch_size):
            index = order[begin:begin + batch_size] if shuffle else slice(begin, begin + batch_size)
            xb, yb, out, batch_loss = strategy.step(x, y, index, transform)
            total_loss += float(batch_loss) * len(xb)
            count = _accuracy_count(out, yb)
            correct = None if count is None else correct + count
            seen += len(xb)
            if bar is not None:
                bar.update(min(batch_size, n - begin))  # the global batch, on rank 0
        total_loss, correct, seen = strategy.end_epoch(total_loss, correct, seen)
        seconds = time.perf_counter() - start
        metrics = {"loss": total_loss / max(seen, 1),
                   "accuracy": None if correct is None else correct / max(seen, 1)}
        if validation_data is not None:
            val = evaluate(model, *validation_data, loss=loss, batch_size=max(batch_size, 256))
            metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        history._append(**metrics, seconds=seconds, images_per_s=seen / seconds if seconds > 0 else None)
        line = f"{_format(metrics)}  {seconds:.1f}s  {seen / max(seconds, 1e-9):,.0f} img/s"
        if bar is not None:
            bar.set_postfix_str(line)
            bar.close()
        elif verbose == 2:
            print(f"epoch {epoch + 1}/{epochs}  {line}", flush=True)
        if scheduler is not None:
            scheduler.step()
        order = None
        if checkpoint is not None and strategy.is_root:  # rank 0 alone writes
            # The next order is drawn from a copy, and the copy's state saved: the generator
            # itself draws it again next epoch, so runs with and without checkpoints agree.
            peek = copy.deepcopy(_random.generator())
            next_order = peek.permutation(n) if shuffle else None
            save_checkpoint(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler,
                            epoch=epoch + 1, data_order=next_order, rng_state=peek.bit_generator.state,
                            extra={"history": history.history})
    model.train()
    return history


def _batched_outputs(model, x, batch_size):
    """Yield ``(slice, output)`` for ``x`` in eval mode, restoring the model's mode after."""
    if batch_size < 1:  # else range() refuses 0, and a negative size reads as an empty x
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        for begin in range(0, len(x), batch_size):
            index = slice(begin, begin + batch_size)
            yield index, model(x[index])
    finally:
        model.train(was_training)


def predict(model, x, batch_size=256):
    """The model's outputs for ``x`` (eval mode, ``batch_size`` samples at a time).

    Returns
    -------
    ndarray (N, ...)
        E.g. logits (N, classes); ``.argmax(axis=1)`` gives the predicted classes.
    """
    x = np.asarray(x)
    outputs = [out for _, out in _batched_outputs(model, x, batch_size)]
    if not outputs:
        raise ValueError("predict: x is empty")
    return np.concatenate(outputs)


def evaluate(model, x, y, *, loss=None, batch_size=256):
    """Mean loss and accuracy of the model on ``(x, y)`` in eval mode.

    Parameters
    ----------
    loss : loss module, optional
        Default: ``CrossEntropyLoss()`` for integer class labels, ``MSELoss()`` for other
        targets (the model keeps no memory of the loss it was trained with).

    Returns
    -------
    dict
        ``{"loss": float, "accuracy": float or None}`` (accuracy for integer labels only).
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"evaluate: x and y must be non-empty and of one length, got {len(x)} and {len(y)}")
    if loss is None:
        loss = CrossEntropyLoss() if np.issubdtype(y.dtype, np.integer) else MSELoss()
    total_loss, correct = 0.0, 0
    for index, out in _batched_outputs(model, x, batch_size):
        yb = y[index]
        total_loss += float(loss(out, yb)) * len(yb)
        count = _accuracy_count(out, yb)
        correct = None if count is None or correct is None else correct + count
    return {"loss": total_loss / len(x), "accuracy": None if correct is None else correct / len(x)}


def summary(model, input_shape=None):
    """The table :meth:`Sequential.summary` prints: layer (type) / output shape / param #."""
    shapes = {}
    if input_shape is not None:
        x = np.zeros((1,) + tuple(input_shape), dtype=_model_dtype(model))
        was_training = model.training
        model.eval()
        try:
            for name, layer in model._modules.items():
                x = layer(x)
                shapes[name] = x.shape
        finally:
            model.train(was_training)
    rows = [("Layer (type)", "Output Shape", "Param #")]
    total = trainable = 0
    for name, layer in model._modules.items():
        count = sum(p.size for p in layer.parameters())
        total += count
        trainable += sum(p.size for p in layer.parameters() if p.requires_grad)
        shape = shapes.get(name)
        rows.append((f"{name} ({type(layer).__name__})",
                     "?" if shape is None else str((None,) + shape[1:]), f"{count:,}"))
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
    line = "-" * sum(widths)
    fmt = lambda r: r[0].ljust(widths[0]) + r[1].ljust(widths[1]) + r[2].rjust(widths[2])
    out = [line, fmt(rows[0]), "=" * len(line)] + [fmt(r) for r in rows[1:]]
    out += ["=" * len(line), f"Total params: {total:,}", f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}", line]
    return "\n".join(out)


def _model_dtype(model):
    params = model.parameters()
    return params[0].dtype if params else np.float32

