import gzip
import struct

import numpy as np
import pytest

import fashion_data as fashion


def write_idx(path, array, type_code=0x08, gz=True):
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(payload)


def make_dataset(directory, n_train=7, n_test=3):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, name in fashion.FILE_NAMES.items():
        write_idx(directory / name, arrays[key])
    return arrays


def test_read_idx_roundtrips_gzipped_and_plain(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", images)
    write_idx(tmp_path / "a", images, gz=False)
    for path in (tmp_path / "a.gz", tmp_path / "a"):
        out = fashion.read_idx(path)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, images)


def test_read_idx_wide_types_come_back_native_endian(tmp_path):
    values = np.array([[-1, 2], [300, -40000]], dtype=np.int32)
    write_idx(tmp_path / "i.gz", values, type_code=0x0C)
    out = fashion.read_idx(tmp_path / "i.gz")
    assert out.dtype == np.dtype("int32")
    np.testing.assert_array_equal(out, values)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="not an idx file"):
        fashion.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "t", np.zeros((2, 2), np.uint8), gz=False)
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        fashion.read_idx(tmp_path / "t")


def test_load_from_explicit_directory(tmp_path):
    arrays = make_dataset(tmp_path)
    (x_train, y_train), (x_test, y_test) = fashion.load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(x_train, arrays["train_images"])
    np.testing.assert_array_equal(y_train, arrays["train_labels"])
    np.testing.assert_array_equal(x_test, arrays["test_images"])
    np.testing.assert_array_equal(y_test, arrays["test_labels"])


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(fashion.FashionMNISTNotFound) as info:
        fashion.load_fashion_mnist(tmp_path / "nowhere")
    message = str(info.value)
    # Since 94725a2 the message names `make bench-data` (which apt-get installs dataset-fashion-mnist).
    assert "make bench-data" in message and "dataset-fashion-mnist" in message
    assert "--data DIR" in message
    for name in fashion.FILE_NAMES.values():
        assert name in message


def test_split_sandal_shirt():
    y = np.arange(10, dtype=np.uint8)
    x = np.arange(10)[:, None]
    (x_a, y_a), (x_b, y_b) = fashion.split_sandal_shirt(x, y)
    np.testing.assert_array_equal(y_a, [0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(x_a[:, 0], [0, 1, 2, 3, 4, 7, 8, 9])
    np.testing.assert_array_equal(y_b, [0.0, 1.0])
    np.testing.assert_array_equal(x_b[:, 0], [5, 6])
