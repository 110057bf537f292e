"""Read Fashion-MNIST from local idx files, with no download.

Debian ships the data set in the package `dataset-fashion-mnist`, re-gzipped,
so `keras.datasets.fashion_mnist` (which checks the upstream checksums and
downloads) cannot use it. This module parses the idx files directly.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# The third byte of an idx file's magic number names the element type.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

Split = tuple[np.ndarray, np.ndarray]


class FashionMNISTNotFound(FileNotFoundError):
    """Raised when the Fashion-MNIST idx files are not where we look."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one idx file (plain or gzipped) into a numpy array.

    Args:
        path: the `.gz` or uncompressed idx file.

    Returns:
        An array with the file's shape, in native byte order
        (`uint8` for Fashion-MNIST images and labels).

    Example:

    >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    >>> images.shape, images.dtype
    ((10000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number {data[:4]!r}).")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header_size = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header_size != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(data) - header_size} bytes."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the directory holding the four Fashion-MNIST files.

    Args:
        data_dir: where to look; `None` looks in `$FASHION_MNIST_DIR`, then
            in Debian's `/usr/share/datasets/fashion-mnist`.

    Raises:
        FashionMNISTNotFound: with the install command and the file names.
    """
    if data_dir is not None:
        candidates = [Path(data_dir)]
    else:
        env = os.environ.get("FASHION_MNIST_DIR")
        candidates = ([Path(env)] if env else []) + [DEBIAN_DIR]
    for directory in candidates:
        if all((directory / name).is_file() for name in FILE_NAMES.values()):
            return directory
    looked = ", ".join(str(d) for d in candidates)
    raise FashionMNISTNotFound(
        f"Fashion-MNIST not found (looked in {looked}). Run `make bench-data` (installs Debian's "
        "dataset-fashion-mnist), or pass `--data DIR` "
        "(or `data_dir=`) for a directory holding "
        + ", ".join(FILE_NAMES.values())
        + "."
    )


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """Load Fashion-MNIST like `keras.datasets.fashion_mnist.load_data()`.

    Args:
        data_dir: directory with the four idx files; see `find_data_dir`.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: uint8 images of shape
        `(n, 28, 28)` and uint8 labels 0-9.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    >>> x_train.shape, x_test.shape
    ((60000, 28, 28), (10000, 28, 28))
    """
    directory = find_data_dir(data_dir)
    arrays = {key: read_idx(directory / name) for key, name in FILE_NAMES.items()}
    return (
        (arrays["train_images"], arrays["train_labels"]),
        (arrays["test_images"], arrays["test_labels"]),
    )


SANDAL, SHIRT = 5, 6


def split_sandal_shirt(x: np.ndarray, y: np.ndarray) -> tuple[Split, Split]:
    """Split into Geron's task A (8 classes) and task B (sandal vs shirt).

    Task A keeps every image that is neither a sandal nor a shirt, with labels
    above 6 shifted down by 2 (so they are 0-7). Task B keeps sandals and
    shirts, with label 1 for shirt and 0 for sandal, as float32.

    Example:

    >>> (x_a, y_a), (x_b, y_b) = split_sandal_shirt(x_train, y_train)
    >>> sorted(set(y_a)), sorted(set(y_b))
    ([0, 1, 2, 3, 4, 5, 6, 7], [0.0, 1.0])
    """
    is_b = (y == SANDAL) | (y == SHIRT)
    y_a = y[~is_b].astype(np.int64)
    y_a[y_a > SHIRT] -= 2
    y_b = (y[is_b] == SHIRT).astype(np.float32)
    return (x[~is_b], y_a), (x[is_b], y_b)
