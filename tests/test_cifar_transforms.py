"""CIFAR-10/100 loading (small files in the official binary format; no network) and the
batch transforms."""
import dataclasses
import hashlib
import io
import tarfile

import numpy as np
import pytest

import fastconv
from fastconv import datasets, nn, optim
from fastconv import transforms as T



class OFFICIAL:  # the constants as imported, before any fixture replaces them
    CIFAR10, CIFAR100 = datasets.CIFAR10, datasets.CIFAR100


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "cache"))
    for name in ("CIFAR10", "CIFAR100"):  # never the real network
        info = getattr(datasets, name)
        monkeypatch.setattr(datasets, name, dataclasses.replace(
            info, url=f"http://127.0.0.1:9/{info.archive}"))


def _records(info, per_file, seed=0):
    """{file name: (images uint8, labels...)} for every file of ``info``."""
    rng = np.random.default_rng(seed)
    files = {}
    for name in info.train + info.test:
        images = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
        labels = [rng.integers(0, classes, per_file) for classes in info.classes]
        files[name] = (images, *labels)
    return files


def _write_folder(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, (images, *labels) in files.items():
        datasets.write_cifar_binary(directory / name, images, *labels)


def _archive_bytes(info, files):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, (images, *labels) in files.items():
            buf = io.BytesIO()
            rows = np.concatenate([np.asarray(lab, np.uint8)[:, None] for lab in labels]
                                  + [images.reshape(len(images), -1)], axis=1)
            buf.write(rows.tobytes())
            member = tarfile.TarInfo(f"{info.folder}/{name}")
            member.size = buf.tell()
            buf.seek(0)
            tar.addfile(member, buf)
    return out.getvalue()


def _expected(info, files, split, label=0):
    names = info.train if split == "train" else info.test
    x = np.concatenate([files[n][0] for n in names]).astype(np.float32) / np.float32(255)
    y = np.concatenate([files[n][1 + label] for n in names]).astype(np.int64)
    return x, y


def _check(result, info, files, label=0):
    (x_train, y_train), (x_test, y_test) = result
    for (x, y), split in (((x_train, y_train), "train"), ((x_test, y_test), "test")):
        ex, ey = _expected(info, files, split, label)
        assert x.dtype == np.float32 and x.shape[1:] == (3, 32, 32) and y.dtype == np.int64
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)


@pytest.mark.parametrize("nested", [True, False])
def test_cifar10_from_extracted_folder(tmp_path, nested):
    info = datasets.CIFAR10
    files = _records(info, 3)
    _write_folder(tmp_path / "root" / (info.folder if nested else ""), files)
    _check(datasets.load_cifar10(tmp_path / "root", download=False), info, files)


def test_cifar10_red_green_blue_planes(tmp_path):
    info = datasets.CIFAR10
    files = _records(info, 1)
    images = np.zeros((1, 3, 32, 32), np.uint8)
    images[0, 0, 0, 1], images[0, 1, 2, 3], images[0, 2, 31, 31] = 255, 51, 102
    files["data_batch_1.bin"] = (images, np.array([7]))
    _write_folder(tmp_path, files)
    (x, y), _ = datasets.load_cifar10(tmp_path, download=False)
    assert y[0] == 7 and x[0, 0, 0, 1] == 1.0 and x[0, 1, 2, 3] == np.float32(0.2)
    assert x[0, 2, 31, 31] == np.float32(0.4) and np.count_nonzero(x[0]) == 3
    raw = (tmp_path / "data_batch_1.bin").read_bytes()  # the official layout, byte by byte
    assert raw[0] == 7 and raw[1 + 1] == 255 and raw[1 + 1024 + 2 * 32 + 3] == 51


@pytest.mark.parametrize("mode,label", [("fine", 1), ("coarse", 0)])
def test_cifar100_from_archive(tmp_path, mode, label):
    info = datasets.CIFAR100
    files = _records(info, 4)
    (tmp_path / info.archive).write_bytes(_archive_bytes(info, files))
    result = datasets.load_cifar100(tmp_path, download=False, label_mode=mode)
    _check(result, info, files, label)
    with pytest.raises(ValueError, match="label_mode"):
        datasets.load_cifar100(tmp_path, label_mode="medium")


def test_download_verifies_md5_and_caches(tmp_path, monkeypatch):
    info = datasets.CIFAR10
    files = _records(info, 2)
    archive = tmp_path / "served" / info.archive
    archive.parent.mkdir()
    archive.write_bytes(_archive_bytes(info, files))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    served = dataclasses.replace(info, url=archive.as_uri(), md5="0" * 32)
    monkeypatch.setattr(datasets, "CIFAR10", served)
    with pytest.raises(datasets.ChecksumError, match="md5"):
        datasets.load_cifar10()
    cache = tmp_path / "cache" / "cifar10"
    assert not (cache / info.archive).exists()
    monkeypatch.setattr(datasets, "CIFAR10", dataclasses.replace(served, md5=md5))
    _check(datasets.load_cifar10(), info, files)
    assert (cache / info.archive).read_bytes() == archive.read_bytes()
    archive.unlink()  # now from the cache, offline
    _check(datasets.load_cifar10(download=False), info, files)


def test_offline_with_nothing_cached_says_where_to_put_the_files(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load_cifar10(download=False)
    message = str(info.value)
    assert str(tmp_path / "cache" / "cifar10") in message
    assert "cifar-10-binary.tar.gz" in message and "cifar-10-batches-bin" in message
    assert "c32a1d4ab5d03f1284b67883e8d87530" in message and datasets.CIFAR10.url in message
    with pytest.raises(datasets.DatasetNotFoundError, match="download failed"):
        datasets.load_cifar100()  # the dead URL of the fixture
    assert not (tmp_path / "cache" / "cifar100" / "cifar-100-binary.tar.gz").exists()


def test_official_urls_and_md5s():
    fresh = OFFICIAL  # the module's own constants, not the fixture's
    assert fresh.CIFAR10.url == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert fresh.CIFAR100.url == "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
    assert fresh.CIFAR10.md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert fresh.CIFAR100.md5 == "03b5dce01913d631647c71ecec9e9cb8"


def test_malformed_files_refused(tmp_path):
    info = datasets.CIFAR10
    files = _records(info, 2)
    _write_folder(tmp_path, files)
    path = tmp_path / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="test_batch.bin.*whole number"):
        datasets.load_cifar10(tmp_path, download=False)
    images, labels = files["test_batch.bin"]
    datasets.write_cifar_binary(path, images, np.array([3, 12]))
    with pytest.raises(ValueError, match="label 12 of record 1"):
        datasets.load_cifar10(tmp_path, download=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / info.archive).write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="tar.gz"):
        datasets.load_cifar10(tmp_path / "other", download=False)


# -- transforms -----------------------------------------------------------------------------

def _images(n=6, c=3, h=8, w=8, dtype=np.float32):
    return np.random.default_rng(0).random((n, c, h, w)).astype(dtype)


@pytest.mark.parametrize("padding", [0, 2, (1, 3)])
def test_random_crop_takes_a_crop_of_the_padded_image(padding):
    x = _images()
    fastconv.manual_seed(3)
    out = T.RandomCrop(8, padding=padding)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    offsets = set()
    for i in range(len(x)):
        found = [(a, b) for a in range(2 * ph + 1) for b in range(2 * pw + 1)
                 if np.array_equal(padded[i, :, a:a + 8, b:b + 8], out[i])]
        assert found, i
        offsets.add(found[0])
    assert len(offsets) > 1 or (ph, pw) == (0, 0)  # images draw their own offsets
    fastconv.manual_seed(3)
    np.testing.assert_array_equal(T.RandomCrop(8, padding=padding)(x), out)


def test_random_crop_smaller_output_and_single_image():
    x = _images(n=1)
    out = T.RandomCrop((5, 6))(x[0])
    assert out.shape == (3, 5, 6)
    with pytest.raises(ValueError, match="larger"):
        T.RandomCrop(12, padding=1)(x)


def test_random_horizontal_flip():
    x = _images(n=64)
    fastconv.manual_seed(4)
    out = T.RandomHorizontalFlip()(x)
    flipped = np.array([np.array_equal(o, i[:, :, ::-1]) for o, i in zip(out, x)])
    kept = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
    assert (flipped | kept).all() and 10 < flipped.sum() < 54
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=0)(x), x)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1)(x), x[..., ::-1])
    fastconv.manual_seed(4)
    np.testing.assert_array_equal(T.RandomHorizontalFlip()(x), out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize(dtype):
    x = _images(dtype=dtype)
    norm = T.Normalize(datasets.CIFAR10_MEAN, datasets.CIFAR10_STD)
    out = norm(x)
    assert out.dtype == dtype
    for c in range(3):
        expected = (x[:, c] - dtype(datasets.CIFAR10_MEAN[c])) / dtype(datasets.CIFAR10_STD[c])
        np.testing.assert_array_equal(out[:, c], expected)
    with pytest.raises(ValueError, match="3 channel means"):
        norm(x[:, :1])
    with pytest.raises(ValueError, match="non-zero"):
        T.Normalize([0.5], [0.0])


def test_normalize_against_torchvision_formula_in_torch():
    torch = pytest.importorskip("torch")
    x = _images()
    mean = torch.tensor(datasets.CIFAR10_MEAN)[:, None, None]
    std = torch.tensor(datasets.CIFAR10_STD)[:, None, None]
    expected = ((torch.from_numpy(x) - mean) / std).numpy()
    np.testing.assert_array_equal(T.Normalize(datasets.CIFAR10_MEAN, datasets.CIFAR10_STD)(x), expected)


def test_compose_and_fit_transform():
    x = _images(n=16, c=1)
    y = np.arange(16) % 2
    seen = []

    def record(batch):
        seen.append(batch.shape)
        return batch

    augment = T.Compose([T.RandomCrop(8, padding=1), T.RandomHorizontalFlip(), record])
    fastconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    model.fit(x, y, loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(model.parameters(), lr=0.1),
              epochs=2, batch_size=8, verbose=0, transform=augment,
              validation_data=(x, y))
    assert seen == [(8, 1, 8, 8)] * 4  # each training batch, not the validation data
    assert "RandomCrop" in repr(augment)
    with pytest.raises(TypeError, match="callables"):
        T.Compose([3])
