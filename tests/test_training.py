"""Training end to end: torch's loss curve for LeNet, compiled vs reference backend, fit,
History, seeding, and the training script."""
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import datasets, nn, optim

VARIANTS = ["modern", "d2l"]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_lenet.py"


@pytest.fixture(scope="module")
def sample():
    (x, y), _ = datasets.load_mnist_sample()
    return x[:512], y[:512]


@pytest.mark.parametrize("variant,opt_kwargs", [("modern", dict(lr=0.05, momentum=0.9)),
                                                ("d2l", dict(lr=0.01))])
def test_lenet_follows_torchs_loss_curve(variant, opt_kwargs, sample):
    torch = pytest.importorskip("torch")
    x, y = sample
    fastconv.manual_seed(0)
    ours = nn.lenet(variant)
    theirs = nn.lenet(variant, torch.nn)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    kind = "SGD" if "momentum" in opt_kwargs else "Adam"
    opt = getattr(optim, kind)(ours.parameters(), **opt_kwargs)
    opt_t = getattr(torch.optim, kind)(theirs.parameters(), **opt_kwargs)
    loss_fn, loss_fn_t = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    losses, losses_t = [], []
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both on one thread: fast on a busy machine, same results
    try:
        with fastconv.threads(1):
            for step in range(8):
                xb, yb = x[64 * step:64 * (step + 1)], y[64 * step:64 * (step + 1)]
                losses.append(float(loss_fn(ours(xb), yb)))
                opt.zero_grad()
                ours.backward(loss_fn.backward())
                opt.step()
                loss_t = loss_fn_t(theirs(torch.from_numpy(xb)), torch.from_numpy(yb))
                losses_t.append(loss_t.item())
                opt_t.zero_grad()
                loss_t.backward()
                opt_t.step()
    finally:
        torch.set_num_threads(torch_threads)
    np.testing.assert_allclose(losses, losses_t, rtol=2e-4)
    assert losses[-1] < losses[0]  # it learns, so the curves are not trivially equal
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=1e-3, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_and_reference_backends_agree(variant):
    # Random images, not MNIST: its flat regions give max-pool windows of mathematically
    # equal values, whose argmax follows the last-bit rounding of each backend's sums.
    # float64: float32 sums in different orders differ by more than the small gradients.
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 1, 28, 28)), rng.integers(0, 10, 32)
    fastconv.manual_seed(1)
    model = nn.lenet(variant).double()
    model.requires_input_grad = True
    loss_fn = nn.CrossEntropyLoss()
    results = {}
    for backend in ("compiled", "reference"):
        with fastconv.backend(backend):
            model.zero_grad()
            out = model(x)
            loss = loss_fn(out, y)
            grad_x = model.backward(loss_fn.backward())
            results[backend] = (out, loss, grad_x, [p.grad for p in model.parameters()])
    (out, loss, grad_x, grads), (out_r, loss_r, grad_x_r, grads_r) = results["compiled"], results["reference"]
    tol = dict(rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out, out_r, **tol)
    assert loss == pytest.approx(loss_r, rel=1e-12)
    np.testing.assert_allclose(grad_x, grad_x_r, **tol)
    for g, g_r in zip(grads, grads_r):
        np.testing.assert_allclose(g, g_r, **tol)


def _fit(x, y, **kwargs):
    fastconv.manual_seed(123)
    model = nn.Sequential(nn.Conv2d(1, 4, 5, stride=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Dropout(0.3), nn.Linear(4 * 6 * 6, 10))
    history = model.fit(x, y, loss=nn.CrossEntropyLoss(), optimizer=optim.Adam(model.parameters(), lr=3e-3),
                        epochs=3, batch_size=32, **kwargs)
    return model, history


def test_fit_history_and_seeded_reproducibility(sample, capsys):
    x, y = sample
    model, history = _fit(x, y, validation_data=(x[:128], y[:128]), verbose=2)
    assert isinstance(history, nn.History) and len(history) == 3
    for key in nn.History.KEYS:
        assert len(history[key]) == 3 and all(v is not None and v > 0 for v in history[key]), key
    assert history["loss"][-1] < history["loss"][0]
    assert history["accuracy"][-1] > 0.5
    assert history["val_accuracy"][-1] == pytest.approx(model.evaluate(x[:128], y[:128])["accuracy"])
    assert model.predict(x[:10]).shape == (10, 10)
    assert "epoch 3/3" in capsys.readouterr().out
    _, again = _fit(x, y, validation_data=(x[:128], y[:128]), verbose=0)
    assert again["loss"] == history["loss"] and again["val_loss"] == history["val_loss"]
    assert capsys.readouterr().out == ""


def test_fit_without_tqdm_uses_plain_progress(sample, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    x, y = sample
    _, history = _fit(x[:96], y[:96], verbose=1)
    err = capsys.readouterr().err
    assert "epoch 3/3: [" in err and "96/96" in err and "loss" in err
    assert len(history) == 3


def test_history_plot(tmp_path, sample, monkeypatch):
    _, history = _fit(*sample, verbose=0, validation_data=(sample[0][:64], sample[1][:64]))
    pytest.importorskip("matplotlib")
    path = history.plot(tmp_path / "curves.png")
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        history.plot(tmp_path / "other.png")


def test_fit_with_scheduler_and_mse(sample):
    x, y = sample[0][:64], sample[1][:64]
    targets = np.eye(10, dtype=np.float32)[y]
    fastconv.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = optim.SGD(model.parameters(), lr=0.04)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    history = model.fit(x, targets, loss=nn.MSELoss(), optimizer=opt, epochs=3, batch_size=16, verbose=0,
                        scheduler=sched)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.04 / 8)
    assert history["accuracy"] == [None] * 3 and history["loss"][-1] < history["loss"][0]
    assert model.evaluate(x, targets)["accuracy"] is None
    assert model.evaluate(x, targets)["loss"] == pytest.approx(
        model.evaluate(x, targets, loss=nn.MSELoss())["loss"])


def test_fit_keeps_no_training_state_on_the_model(sample):
    """fit's loss and optimizer stay with the caller: the model gains no attribute (its layers
    cache their last forward, as in any torch-style step) and its state_dict keys are unchanged."""
    x, y = sample[0][:64], sample[1][:64]
    fastconv.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    before = set(vars(model))
    keys = list(model.state_dict())
    model.fit(x, y, loss=nn.CrossEntropyLoss(reduction="sum"), optimizer=optim.SGD(model.parameters(), lr=0.01),
              epochs=1, batch_size=32, verbose=0)
    assert set(vars(model)) == before
    assert list(model.state_dict()) == keys
    # without a loss, evaluate picks one from the targets (integer labels: mean cross-entropy)
    assert model.evaluate(x, y)["loss"] == pytest.approx(model.evaluate(x, y, loss=nn.CrossEntropyLoss())["loss"])


def test_train_lenet_script(tmp_path, sample, capsys, monkeypatch):
    if not EXAMPLE.exists():
        pytest.skip("examples/ is not shipped next to the installed tests")
    x, y = sample
    data = tmp_path / "idx"
    data.mkdir()
    for prefix, (xs, ys) in (("train", (x[:256], y[:256])), ("t10k", (x[256:384], y[256:384]))):
        datasets.write_idx(data / f"{prefix}-images-idx3-ubyte", (xs[:, 0] * 255).round().astype(np.uint8))
        datasets.write_idx(data / f"{prefix}-labels-idx1-ubyte", ys.astype(np.uint8))
    monkeypatch.setattr(sys, "argv", [
        str(EXAMPLE), "--data", str(data), "--epochs", "3", "--batch-size", "32", "--optimizer", "adam",
        "--lr", "0.003", "--threads", "1", "--seed", "5", "--save", str(tmp_path / "lenet.npz")])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("test accuracy: ") and 0.3 < float(lines[-1].split()[-1]) <= 1
    assert sum(line.startswith("epoch") for line in lines) == 3
    model = nn.lenet("modern").load(tmp_path / "lenet.npz")
    script = runpy.run_path(str(EXAMPLE))  # its standardize(), without running main
    assert model.evaluate(script["standardize"](x[256:384], "mnist"), y[256:384])["accuracy"] == pytest.approx(float(lines[-1].split()[-1]), abs=5e-5)


@pytest.mark.parametrize("validation_data", [
    "not a pair",
    (np.zeros((4, 1, 28, 28), np.float32), np.zeros(3, np.int64)),   # lengths differ
    (np.zeros((0, 1, 28, 28), np.float32), np.zeros(0, np.int64)),   # nothing to evaluate
])
def test_fit_refuses_bad_validation_data_before_training(validation_data):
    # found wrong before the first epoch, so no training time or weights are lost
    fastconv.manual_seed(0)
    model = nn.lenet()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    y = np.arange(8) % 10
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(x, y, loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(model.parameters(), lr=0.1),
                  epochs=1, batch_size=4, validation_data=validation_data, verbose=0)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("loss", [nn.CrossEntropyLoss(), nn.MSELoss()])
def test_mean_loss_of_an_empty_batch_is_nan_like_torch(loss):
    logits = np.zeros((0, 10), np.float32)
    target = np.zeros(0, np.int64) if isinstance(loss, nn.CrossEntropyLoss) else logits
    value = loss(logits, target)
    assert np.isnan(value) and value.dtype == np.float32
    assert loss.backward().shape == (0, 10)
