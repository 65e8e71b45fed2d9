"""Exact resume: fit(checkpoint=...) after every epoch, fit(resume=...) continues bitwise, even
after the process was SIGKILLed mid-epoch; save_checkpoint / load_checkpoint are atomic, refuse a
damaged file clearly and change nothing when they refuse."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastconv
from fastconv import nn, optim

from _isolated import child_env

EPOCHS = 4
SETUPS = ["sgd-nesterov-cosine", "adam-steplr"]


def data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 1, 6, 6)).astype(np.float32)
    return x, (x.sum(axis=(1, 2, 3)) > 0).astype(np.int64)


def build(setup):
    """Model, optimizer and scheduler of ``setup``, built from seed 0 (as a resumed run must be)."""
    fastconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3),
                          nn.Linear(3 * 4 * 4, 2))
    if setup == "sgd-nesterov-cosine":
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        sched = optim.CosineAnnealingLR(opt, T_max=EPOCHS)
    else:
        opt = optim.Adam(model.parameters(), lr=5e-3)
        sched = optim.StepLR(opt, step_size=1, gamma=0.7)
    return model, opt, sched


def augment(xb):
    """A batch augmentation drawing from fastconv's generator: random flips and noise."""
    rng = fastconv._random.generator()
    flip = rng.random(len(xb)) < 0.5
    out = np.where(flip[:, None, None, None], xb[..., ::-1], xb)
    return (out + 0.05 * rng.standard_normal(xb.shape, dtype=np.float32)).astype(np.float32)


def train(setup, epochs=EPOCHS, transform=augment, **kwargs):
    """``(model, optimizer, history)`` after ``fit`` of a freshly built setup."""
    x, y = data()
    model, opt, sched = build(setup)
    history = model.fit(x, y, loss=nn.CrossEntropyLoss(), optimizer=opt, epochs=epochs,
                        batch_size=16, verbose=0, scheduler=sched, transform=transform, **kwargs)
    return model, opt, history


def assert_same_run(a, b):
    (model_a, opt_a, hist_a), (model_b, opt_b, hist_b) = a, b
    for key, value in model_a.state_dict().items():
        np.testing.assert_array_equal(model_b.state_dict()[key], value, err_msg=key)
    state_a, state_b = opt_a.state_dict(), opt_b.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    for index, values in state_a["state"].items():
        for name, value in values.items():
            np.testing.assert_array_equal(state_b["state"][index][name], value, err_msg=name)
    assert hist_a["loss"] == hist_b["loss"] and len(hist_a) == len(hist_b) == EPOCHS


@pytest.fixture(scope="module")
def straight():
    """Each setup trained EPOCHS epochs in one go, and the generator state after it."""
    runs = {}
    for setup in SETUPS:
        run = train(setup)
        runs[setup] = run, fastconv.get_rng_state()
    return runs


@pytest.mark.parametrize("setup", SETUPS)
def test_resume_in_process_is_bitwise(setup, straight, tmp_path):
    path = tmp_path / "ckpt.npz"
    with_checkpoints = train(setup, checkpoint=path)  # writing checkpoints changes nothing
    assert_same_run(straight[setup][0], with_checkpoints)
    assert fastconv.get_rng_state() == straight[setup][1]

    first = train(setup, epochs=2, checkpoint=path)
    assert fastconv.load_checkpoint(path, restore_rng=False)["epoch"] == 2
    fastconv.manual_seed(123)  # the checkpoint, not the current generator, decides what follows
    resumed = train(setup, resume=path, checkpoint=path)
    assert_same_run(straight[setup][0], resumed)
    assert fastconv.get_rng_state() == straight[setup][1]
    assert resumed[2]["loss"][:2] == first[2]["loss"]
    assert fastconv.load_checkpoint(path, restore_rng=False)["epoch"] == EPOCHS


_CHILD = textwrap.dedent("""
    import os, sys, time
    import test_resume as t

    setup, path, marker = sys.argv[1:]
    batches = []

    def transform(xb):
        batches.append(1)
        if len(batches) == 7:  # the second batch of epoch 3 (3 batches an epoch)
            open(marker, "w").close()
            time.sleep(120)  # killed here
        return t.augment(xb)

    t.train(setup, transform=transform, checkpoint=path)
""")


@pytest.mark.parametrize("setup", SETUPS)
def test_sigkill_during_epoch_3_then_resume_is_bitwise(setup, straight, tmp_path):
    path, marker = tmp_path / "ckpt.npz", tmp_path / "in-epoch-3"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, setup, str(path), str(marker)],
                             env=child_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the child did not reach epoch 3: {child.communicate()[1].decode()}")
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    child.stderr.close()
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz", "in-epoch-3"]  # no temporary file left
    assert fastconv.load_checkpoint(path, restore_rng=False)["epoch"] == 2
    resumed = train(setup, resume=path)
    assert_same_run(straight[setup][0], resumed)
    assert fastconv.get_rng_state() == straight[setup][1]


# -- save_checkpoint / load_checkpoint ------------------------------------------------------------

def _saved(tmp_path):
    model, opt, _ = train("adam-steplr", epochs=1)
    path = tmp_path / "ckpt.npz"
    fastconv.save_checkpoint(path, model=model, optimizer=opt, epoch=1, data_order=np.arange(5),
                             extra={"note": "x"})
    return path, model, opt


def _snapshot(model, opt):
    state = opt.state_dict()
    return ({k: v.copy() for k, v in model.state_dict().items()},
            {i: {k: np.copy(v) for k, v in s.items()} for i, s in state["state"].items()},
            state["param_groups"])


def _assert_unchanged(model, opt, snapshot):
    weights, state, groups = snapshot
    for key, value in weights.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)
    now = opt.state_dict()
    assert now["param_groups"] == groups
    for i, values in state.items():
        for name, value in values.items():
            np.testing.assert_array_equal(now["state"][i][name], value)


def test_round_trip_returns_epoch_order_and_extra(tmp_path):
    path, model, opt = _saved(tmp_path)
    rng_state = fastconv.get_rng_state()
    fastconv.manual_seed(7)
    other, other_opt, _ = build("adam-steplr")
    info = fastconv.load_checkpoint(path, model=other, optimizer=other_opt)
    assert info["epoch"] == 1 and info["extra"] == {"note": "x"}
    np.testing.assert_array_equal(info["data_order"], np.arange(5))
    assert fastconv.get_rng_state() == rng_state
    _assert_unchanged(other, other_opt, _snapshot(model, opt))


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "not-npz"])
def test_damaged_file_is_refused_clearly_and_nothing_changes(tmp_path, damage):
    path, _, _ = _saved(tmp_path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "flip":  # one byte in the middle of the model's weights
        offset = raw.index(b"model/0.weight") + 200
        path.write_bytes(raw[:offset] + bytes([raw[offset] ^ 0xFF]) + raw[offset + 1:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        np.save(path.open("wb"), np.zeros(3))
    model, opt, _ = build("adam-steplr")
    rng_state = fastconv.get_rng_state()
    snapshot = _snapshot(model, opt)
    with pytest.raises(ValueError, match="truncated, corrupt or not a fastconv checkpoint"):
        fastconv.load_checkpoint(path, model=model, optimizer=opt)
    _assert_unchanged(model, opt, snapshot)
    assert fastconv.get_rng_state() == rng_state


def test_a_checkpoint_that_does_not_fit_changes_nothing(tmp_path):
    path, _, _ = _saved(tmp_path)
    model, _, _ = build("adam-steplr")
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.StepLR(sgd, 1)
    snapshot = _snapshot(model, sgd)
    with pytest.raises(ValueError, match="holds a Adam optimizer, not a SGD"):
        fastconv.load_checkpoint(path, model=model, optimizer=sgd)  # the model part would fit
    _assert_unchanged(model, sgd, snapshot)
    with pytest.raises(ValueError, match="holds no scheduler"):
        fastconv.load_checkpoint(path, model=model, scheduler=sched)
    _assert_unchanged(model, sgd, snapshot)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path, model, opt = _saved(tmp_path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot store a object"):
        fastconv.save_checkpoint(path, model=model, extra={"bad": object()})

    def half_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        fastconv.save_checkpoint(path, model=model, optimizer=opt)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]


def test_fit_refuses_bad_arguments_before_training(tmp_path):
    x, y = data()
    model, opt, _ = build("adam-steplr")
    weights = {k: v.copy() for k, v in model.state_dict().items()}
    fit = lambda **kw: model.fit(x, y, loss=nn.CrossEntropyLoss(), optimizer=opt, verbose=0, **kw)
    with pytest.raises(TypeError, match="transform must be callable"):
        fit(transform=3)
    with pytest.raises(FileNotFoundError, match="directory of checkpoint"):
        fit(checkpoint=tmp_path / "missing" / "ckpt.npz")
    with pytest.raises(FileNotFoundError):
        fit(resume=tmp_path / "none.npz")
    fastconv.save_checkpoint(tmp_path / "plain.npz", model=model, optimizer=opt)
    with pytest.raises(ValueError, match="not written by fit"):
        fit(resume=tmp_path / "plain.npz")
    for key, value in weights.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)



EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples"


def _example_data(example, root):
    """Small data files for ``example`` in the official formats, and the options that read them."""
    from fastconv import datasets
    if example == "train_lenet.py":
        (x, y), _ = datasets.load_mnist_sample()
        for prefix, part in (("train", slice(0, 128)), ("t10k", slice(128, 192))):
            datasets.write_idx(root / f"{prefix}-images-idx3-ubyte", (x[part, 0] * 255).round().astype(np.uint8))
            datasets.write_idx(root / f"{prefix}-labels-idx1-ubyte", y[part].astype(np.uint8))
        return ["--data", str(root), "--batch-size", "32", "--optimizer", "sgd"]
    rng = np.random.default_rng(4)
    folder = root / datasets.CIFAR10.folder
    folder.mkdir(parents=True)
    for name in datasets.CIFAR10.train + datasets.CIFAR10.test:
        datasets.write_cifar_binary(folder / name, rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8),
                                    rng.integers(0, 10, 4))
    return ["--dataset", "cifar10", "--data", str(root), "--batch-size", "8", "--quiet"]


@pytest.mark.parametrize("example", ["train_lenet.py", "train_resnet.py"])
def test_example_resumes_bitwise(example, tmp_path, capsys, monkeypatch):
    if not (EXAMPLES / example).exists():
        pytest.skip("examples/ is not shipped next to the installed tests")
    import runpy
    (tmp_path / "data").mkdir()
    main = runpy.run_path(str(EXAMPLES / example))["main"]
    common = _example_data(example, tmp_path / "data") + ["--threads", "1"]
    ckpt = str(tmp_path / "run.ckpt")
    main(common + ["--epochs", "2", "--save", str(tmp_path / "straight.npz")])
    # the same command, stopped right after its first checkpoint (schedules depend on --epochs)
    from fastconv.nn import _training
    real_save = _training.save_checkpoint

    class Stop(Exception):
        pass

    def save_then_stop(*args, epoch, **kwargs):
        real_save(*args, epoch=epoch, **kwargs)
        if epoch == 1:
            raise Stop

    monkeypatch.setattr(_training, "save_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        main(common + ["--epochs", "2", "--checkpoint", ckpt])
    monkeypatch.undo()
    main(common + ["--epochs", "2", "--checkpoint", ckpt, "--resume", ckpt,
                   "--save", str(tmp_path / "resumed.npz")])
    out = capsys.readouterr().out
    assert f"resuming from {ckpt}" in out and out.count("epoch 2/2") == 2
    with np.load(tmp_path / "straight.npz") as a, np.load(tmp_path / "resumed.npz") as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert fastconv.load_checkpoint(ckpt, restore_rng=False)["epoch"] == 2
