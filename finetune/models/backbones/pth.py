"""Read a PyTorch ``state_dict`` file (``.pth``) into NumPy, without torch.

Both of torch's on-disk formats are understood:

* legacy (torch < 1.6): pickles back to back -- magic number, protocol
  version, system info, the state_dict (tensors refer to storages by
  persistent id), the list of storage keys -- then each storage's raw bytes,
  preceded by its element count as a little-endian int64;
* zip (torch >= 1.6): ``<archive>/data.pkl`` plus one ``<archive>/data/<key>``
  entry of raw bytes per storage.

Unpickling is restricted: :class:`_StateDictUnpickler` resolves only the few
globals a state_dict needs to harmless stand-ins defined here, and raises
:class:`UnsafePickleError` for anything else, so loading weights never runs
code that the file names.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C

#: torch storage class name -> NumPy dtype of its elements.
STORAGE_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype)
    for name, dtype in {
        "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
        "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
        "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    }.items()
}
_BFLOAT16 = "BFloat16Storage"  # no NumPy dtype: read as uint16, widened to float32


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks the unpickler for a global that a state_dict never needs."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.<Name>Storage`` class."""

    name: str


@dataclass
class _StorageRef:
    """A storage named by persistent id; ``data`` is filled in once read."""

    key: str
    storage_type: _StorageType
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    """A tensor view into a storage, resolved to an array after the storages are read."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise UnsafePickleError("tensor rebuilt from something that is not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: Any, *_ignored: Any) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise UnsafePickleError("parameter rebuilt from something that is not a tensor")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in [*STORAGE_DTYPES, _BFLOAT16]},
}


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that knows only the globals of a tensor state_dict."""

    def __init__(self, file: BinaryIO, storages: dict[str, _StorageRef]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: a weights file should hold only tensors"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        # legacy: ('storage', type, key, location, numel, view_metadata); zip: the first five
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unexpected storage type {storage_type!r}")
        if len(pid) == 6 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (legacy view_metadata) are not supported")
        if key not in self._storages:
            self._storages[key] = _StorageRef(key, storage_type, numel)
        return self._storages[key]


def _safe_load(file: BinaryIO, storages: dict[str, _StorageRef] | None = None) -> Any:
    return _StateDictUnpickler(file, {} if storages is None else storages).load()


def _decode(raw: bytes, storage_type: _StorageType) -> np.ndarray:
    if storage_type.name == _BFLOAT16:
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, STORAGE_DTYPES[storage_type.name])


def _remaining_bytes(file: BinaryIO) -> int:
    """Bytes left after the current position (so a forged size cannot make us allocate more)."""
    return os.fstat(file.fileno()).st_size - file.tell()


def _read_legacy(file: BinaryIO) -> tuple[Any, dict[str, _StorageRef]]:
    if _safe_load(file) != LEGACY_MAGIC_NUMBER:
        raise ValueError("not a torch file: bad magic number")
    protocol_version = _safe_load(file)
    if protocol_version != 1001:
        raise ValueError(f"unsupported torch legacy protocol version {protocol_version!r}")
    sys_info = _safe_load(file)
    if not sys_info.get("little_endian", True):
        raise ValueError("big-endian torch files are not supported")
    storages: dict[str, _StorageRef] = {}
    state = _safe_load(file, storages)
    for key in _safe_load(file):
        storage = storages[str(key)]
        numel = int.from_bytes(file.read(8), "little")
        itemsize = 2 if storage.storage_type.name == _BFLOAT16 else STORAGE_DTYPES[storage.storage_type.name].itemsize
        if numel * itemsize > _remaining_bytes(file):
            raise ValueError(f"truncated torch file: storage {key} is short")
        raw = file.read(numel * itemsize)
        storage.data = _decode(raw, storage.storage_type)
    return state, storages


def _read_zip(path: str | os.PathLike) -> tuple[Any, dict[str, _StorageRef]]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one <archive>/data.pkl, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise ValueError("big-endian torch files are not supported")
        storages: dict[str, _StorageRef] = {}
        state = _safe_load(io.BytesIO(archive.read(pickles[0])), storages)
        for key, storage in storages.items():
            storage.data = _decode(archive.read(f"{prefix}data/{key}"), storage.storage_type)
    return state, storages


def _to_array(tensor: _TensorRef) -> np.ndarray:
    data = tensor.storage.data
    if data is None:
        raise ValueError(f"storage {tensor.storage.key} was never written in the file")
    needed = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride)) + 1
    if any(n == 0 for n in tensor.shape):
        return np.zeros(tensor.shape, data.dtype)
    if tensor.offset < 0 or needed > data.size or any(s < 0 for s in tensor.stride):
        raise ValueError(f"tensor view out of bounds of storage {tensor.storage.key}")
    view = np.lib.stride_tricks.as_strided(
        data[tensor.offset:], shape=tensor.shape, strides=[s * data.itemsize for s in tensor.stride], writeable=False
    )
    return np.array(view, dtype=np.float32 if data.dtype.kind == "f" else data.dtype)


def _flatten(state: Any) -> dict[str, np.ndarray]:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint wrapping the weights
    if not isinstance(state, dict):
        raise ValueError(f"expected a state_dict (a mapping of names to tensors), got {type(state).__name__}")
    return {str(k): _to_array(v) for k, v in state.items() if isinstance(v, _TensorRef)}


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the tensors of a torch ``state_dict`` file, in torch layout.

    Floating-point tensors come back as contiguous float32 arrays; integer
    tensors (e.g. BatchNorm's ``num_batches_tracked``) keep their integer
    dtype. Non-tensor entries are dropped.

    Raises:
        UnsafePickleError: the file names any global besides OrderedDict,
            torch's tensor-rebuild helpers and torch storage types.
        ValueError: the file is neither torch format or is truncated.
    """
    if zipfile.is_zipfile(path):
        state, _ = _read_zip(path)
    else:
        with open(path, "rb") as file:
            state, _ = _read_legacy(file)
    return _flatten(state)
