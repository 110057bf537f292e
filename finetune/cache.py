"""Where finetune keeps what it derives once per user (converted weights, features): location, checksums, checks on read."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path


def cache_root() -> Path:
    """``$FINETUNE_CACHE_DIR`` or the platform user cache dir of finetune."""
    env = os.environ.get("FINETUNE_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("finetune"))


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def usable_or_removed(path: str | os.PathLike, check) -> bool:
    """``True`` if ``path`` exists and ``check(path)`` passes.

    A file that fails the check (truncated by a full disk or a crash elsewhere)
    is deleted with a one-line warning naming it, so the caller recomputes it
    instead of failing for good.
    """
    path = Path(path)
    if not path.exists():
        return False
    try:
        check(path)
        return True
    except Exception as err:  # noqa: BLE001 - any failure to read means the file is unusable
        warnings.warn(f"damaged cache file {path} ({type(err).__name__}: {str(err)[:120]}); deleted, recomputing it",
                      RuntimeWarning, stacklevel=3)
        path.unlink(missing_ok=True)
        return False


def check_h5(path: Path) -> None:
    """Raise unless ``path`` is a complete HDF5 file (every object's header readable)."""
    import h5py

    with h5py.File(path, "r") as file:
        file.visit(lambda name: file[name].attrs.keys())


def check_npy(path: Path) -> None:
    """Raise unless ``path`` is a ``.npy`` file holding all the bytes its header promises."""
    import numpy as np

    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(file)
        expected = file.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise ValueError(f"{os.path.getsize(path)} bytes, header promises {expected}")
