"""Training checkpoints: model, optimizer, scheduler, epoch, RNG state and data order in one file.

The file is an .npz (a zip of .npy arrays, read with ``allow_pickle=False``): the arrays under
"model/<key>", "optimizer/<index>/<name>" and "data_order", and everything else (hyperparameters,
the scheduler, the RNG state, the epoch, ``extra``) as UTF-8 JSON in "checkpoint.json". Nothing
in it is unpickled, so loading a file from elsewhere runs no code.
"""
import copy
import json
import os
import zipfile
import zlib

import numpy as np

from . import _random
from ._io import atomic_file

__all__ = ["save_checkpoint", "load_checkpoint"]

FORMAT = "fastconv.checkpoint"
VERSION = 1
_META = "checkpoint.json"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"save_checkpoint: cannot store a {type(value).__name__} ({value!r}); "
                    "hyperparameters and extra must be numbers, strings, lists or dicts")


def save_checkpoint(path, *, model=None, optimizer=None, scheduler=None, epoch=None,
                    data_order=None, rng_state=None, extra=None):
    """Write a training checkpoint to ``path`` atomically.

    The file is written beside ``path`` under a temporary name, fsynced and renamed over it:
    a crash at any moment leaves the previous checkpoint or the new one, never a broken one.

    Parameters
    ----------
    path : str or PathLike
    model : Module, optional
        Its ``state_dict()`` (parameters and buffers).
    optimizer : fastconv.optim.Optimizer, optional
        Its ``state_dict()``: hyperparameters and per-parameter state.
    scheduler : fastconv.optim.LRScheduler, optional
    epoch : int, optional
        Epochs completed.
    data_order : ndarray of int, optional
        The sample order of the next epoch.
    rng_state : dict, optional
        Default: the state of fastconv's generator now (:func:`fastconv.get_rng_state`).
    extra : dict, optional
        Anything JSON can hold (``fit`` keeps its History here).
    """
    arrays = {}
    meta = {"format": FORMAT, "version": VERSION, "epoch": None if epoch is None else int(epoch),
            "rng_state": _random.get_rng_state() if rng_state is None else rng_state,
            "extra": extra, "model": model is not None, "optimizer": None, "scheduler": None}
    if model is not None:
        arrays.update((f"model/{key}", value) for key, value in model.state_dict().items())
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars = {}
        for index, values in state["state"].items():
            for name, value in values.items():
                if isinstance(value, np.ndarray):
                    arrays[f"optimizer/{index}/{name}"] = value
                else:
                    scalars.setdefault(str(index), {})[name] = value
        meta["optimizer"] = {"type": type(optimizer).__name__, "param_groups": state["param_groups"],
                             "scalars": scalars, "indices": sorted(state["state"])}
    if scheduler is not None:
        meta["scheduler"] = {"type": type(scheduler).__name__, "state": scheduler.state_dict()}
    if data_order is not None:
        arrays["data_order"] = np.asarray(data_order)
    # Serialized before the file is opened: a value JSON cannot hold fails with nothing written.
    arrays[_META] = np.frombuffer(json.dumps(meta, default=_json_default).encode(), dtype=np.uint8)
    with atomic_file(path) as f:
        np.savez(f, **arrays)
    return path


def _read(path):
    """``(meta, arrays)`` from a checkpoint file, or ValueError for anything but a whole one."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz file")
        with data:
            if _META not in data.files:
                raise ValueError(f"no {_META} in it")
            # Every array is read here, so a damaged one is found before anything is loaded.
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(arrays.pop(_META).tobytes().decode())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("not a fastconv checkpoint")
        if meta.get("version") != VERSION:
            raise ValueError(f"format version {meta.get('version')}, this fastconv reads {VERSION}")
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error,
            UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read checkpoint {os.fspath(path)}: it is truncated, corrupt or "
                         f"not a fastconv checkpoint ({type(exc).__name__}: {exc})") from None
    return meta, arrays


def _check_type(what, saved, obj, path):
    if saved is None:
        raise ValueError(f"checkpoint {os.fspath(path)} holds no {what}")
    if saved["type"] != type(obj).__name__:
        raise ValueError(f"checkpoint {os.fspath(path)} holds a {saved['type']} {what}, "
                         f"not a {type(obj).__name__}")


def load_checkpoint(path, *, model=None, optimizer=None, scheduler=None, restore_rng=True):
    """Load a checkpoint written by :func:`save_checkpoint` into the objects given.

    All or nothing: the file is read and checked whole first, and if loading any part fails
    (wrong keys or shapes, another optimizer type) the model, optimizer and scheduler are put
    back as they were before the error is raised.

    Parameters
    ----------
    path : str or PathLike
    model, optimizer, scheduler : optional
        Built as when the checkpoint was written; each one given must be in the file.
    restore_rng : bool, default True
        Continue fastconv's generator from the saved state.

    Returns
    -------
    dict
        ``{"epoch": int or None, "data_order": ndarray or None, "extra": ...}``.

    Raises
    ------
    FileNotFoundError
    ValueError
        A truncated, corrupt or foreign file, or one that does not fit the objects given.
    """
    meta, arrays = _read(path)
    undo = []
    try:
        if model is not None:
            if not meta["model"]:
                raise ValueError(f"checkpoint {os.fspath(path)} holds no model")
            backup = {key: np.array(value) for key, value in model.state_dict().items()}
            prefix = "model/"
            model.load_state_dict({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
            undo.append(lambda: model.load_state_dict(backup))
        if optimizer is not None:
            saved = meta["optimizer"]
            _check_type("optimizer", saved, optimizer, path)
            state = {index: {**saved["scalars"].get(str(index), {}),
                             **{k.rsplit("/", 1)[1]: v for k, v in arrays.items()
                                if k.startswith(f"optimizer/{index}/")}}
                     for index in saved["indices"]}
            backup_opt = copy.deepcopy(optimizer.state_dict())
            optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
            undo.append(lambda: optimizer.load_state_dict(backup_opt))
        if scheduler is not None:
            _check_type("scheduler", meta["scheduler"], scheduler, path)
            scheduler.load_state_dict(meta["scheduler"]["state"])
        if restore_rng:
            _random.set_rng_state(meta["rng_state"])
    except BaseException:
        for restore in reversed(undo):
            restore()
        raise
    return {"epoch": meta["epoch"], "data_order": arrays.get("data_order"), "extra": meta["extra"]}
