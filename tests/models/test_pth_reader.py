"""The torch-free .pth reader: both torch formats round-trip, and no pickled code ever runs.

Torch files are written here by hand (no torch): stand-in objects are pickled
under torch's global names (``torch._utils._rebuild_tensor_v2``,
``torch.FloatStorage``) with storages as persistent ids, as torch does.
"""

from __future__ import annotations

import builtins
import os
import pickle
import struct
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from finetune.models.backbones.pth import LEGACY_MAGIC_NUMBER, UnsafePickleError, load_state_dict

STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
                 np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage"}


class _Storage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, np.ascontiguousarray(data).ravel()


class _Tensor:
    """A view (offset, shape, stride in elements) into a storage, pickled like a torch tensor."""

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self):
        return _rebuild_tensor_v2, (self.storage, self.offset, self.shape, self.stride, False, OrderedDict())


def _rebuild_tensor_v2(*args):  # pragma: no cover - only its pickled name matters
    raise AssertionError


def _storage_type(dtype: np.dtype) -> types.SimpleNamespace:
    return types.SimpleNamespace(torch_name=("torch", STORAGE_NAMES[dtype]))


class _TorchNamesPickler(pickle._Pickler):
    """Protocol-2 pickler writing our stand-ins under torch's names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages: dict[str, _Storage] = {}

    def save_torch_global(self, obj) -> None:
        module, name = ("torch._utils", "_rebuild_tensor_v2") if obj is _rebuild_tensor_v2 else obj.torch_name
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)

    dispatch[types.FunctionType] = lambda self, obj: (
        self.save_torch_global(obj) if obj is _rebuild_tensor_v2 else pickle._Pickler.save_global(self, obj))
    dispatch[types.SimpleNamespace] = save_torch_global

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        self.storages[obj.key] = obj
        pid = ("storage", _storage_type(obj.data.dtype), obj.key, "cpu", obj.data.size)
        return pid + (None,) if self.legacy else pid


def write_legacy(path: Path, state: dict) -> None:
    with open(path, "wb") as file:
        for header in (LEGACY_MAGIC_NUMBER, 1001, {"protocol_version": 1001, "little_endian": True,
                                                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, file, protocol=2)
        pickler = _TorchNamesPickler(file, legacy=True)
        pickler.dump(state)
        pickle.dump(list(pickler.storages), file, protocol=2)
        for storage in pickler.storages.values():
            file.write(struct.pack("<q", storage.data.size) + storage.data.tobytes())


def write_zip(path: Path, state: dict) -> None:
    import io

    buffer = io.BytesIO()
    pickler = _TorchNamesPickler(buffer, legacy=False)
    pickler.dump(state)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/data.pkl", buffer.getvalue())
        archive.writestr("weights/byteorder", "little")
        archive.writestr("weights/version", "3\n")
        for key, storage in pickler.storages.items():
            archive.writestr(f"weights/data/{key}", storage.data.tobytes())


def _example_state() -> tuple[OrderedDict, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    shared = _Storage("0", rng.standard_normal(2 * 3 * 4 + 5).astype(np.float32))
    conv = _Storage("1", rng.standard_normal((4, 1, 3, 3)).astype(np.float64))
    half = _Storage("2", rng.standard_normal(6).astype(np.float16))
    count = _Storage("3", np.array([7], np.int64))
    state = OrderedDict([
        ("a.weight", _Tensor(shared, 5, (2, 3, 4), (12, 4, 1))),
        ("a.weight_t", _Tensor(shared, 5, (4, 3, 2), (1, 4, 12))),  # a transposed view of the same storage
        ("b.weight", _Tensor(conv, 0, (4, 1, 3, 3), (9, 9, 3, 1))),
        ("c.bias", _Tensor(half, 2, (4,), (1,))),
        ("bn.num_batches_tracked", _Tensor(count, 0, (), ())),
    ])
    a = shared.data[5:].reshape(2, 3, 4)
    expected = {"a.weight": a, "a.weight_t": a.transpose(2, 1, 0), "b.weight": conv.data.reshape(4, 1, 3, 3),
                "c.bias": half.data[2:].astype(np.float32), "bn.num_batches_tracked": np.array(7, np.int64)}
    return state, expected


@pytest.mark.parametrize("writer", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_round_trip(tmp_path: Path, writer) -> None:
    state, expected = _example_state()
    path = tmp_path / "weights.pth"
    writer(path, state)
    loaded = load_state_dict(path)
    assert list(loaded) == list(expected)
    for key, want in expected.items():
        got = loaded[key]
        assert got.shape == want.shape, key
        assert got.dtype == (np.float32 if want.dtype.kind == "f" else want.dtype), key
        np.testing.assert_allclose(got, want.astype(got.dtype), rtol=0, atol=0, err_msg=key)


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _OpensFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


@pytest.mark.parametrize("payload", [_RunsShell, _OpensFile])
@pytest.mark.parametrize("writer", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_malicious_state_dict_is_refused_without_running(tmp_path: Path, payload, writer) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    writer(path, OrderedDict([("x", payload(marker))]))
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        load_state_dict(path)
    assert not marker.exists()


def test_payload_is_live_so_the_refusal_means_something(tmp_path: Path) -> None:
    marker = tmp_path / "opened"
    pickle.loads(pickle.dumps(_OpensFile(marker), protocol=2)).close()
    assert marker.exists()


def test_malicious_header_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_RunsShell(marker), protocol=2))
    with pytest.raises(UnsafePickleError):
        load_state_dict(path)
    assert not marker.exists()


def test_torch_load_from_bytes_is_not_allowed(tmp_path: Path) -> None:
    path = tmp_path / "bytes.pth"
    path.write_bytes(pickle.PROTO + b"\x02" + pickle.GLOBAL + b"torch.storage\n_load_from_bytes\n" + pickle.STOP)
    with pytest.raises(UnsafePickleError, match="torch.storage._load_from_bytes"):
        load_state_dict(path)


def test_truncated_legacy_file_is_an_error(tmp_path: Path) -> None:
    state, _ = _example_state()
    path = tmp_path / "weights.pth"
    write_legacy(path, state)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        load_state_dict(path)
