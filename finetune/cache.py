"""Where finetune keeps what it derives once per user (converted weights, features): location, checksums, checks on read."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from .errors import ConfigError


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


DEFAULT_LIMIT_BYTES = 5 * 1024**3
_UNITS = {"": 1, "B": 1, "KB": 1024, "K": 1024, "MB": 1024**2, "M": 1024**2, "GB": 1024**3, "G": 1024**3,
          "TB": 1024**4, "T": 1024**4}


def parse_size(text: str) -> int:
    """``"5GB"``, ``"500 MB"``, ``"1e9"`` -> bytes (binary units).

    Example:
        >>> parse_size("1.5 GB"), parse_size("200M"), parse_size("1000")
        (1610612736, 209715200, 1000)
    """
    raw = str(text).strip().upper().replace(" ", "")
    number = raw.rstrip("KMGTB")
    unit = raw[len(number):]
    try:
        return int(float(number) * _UNITS[unit])
    except (KeyError, ValueError):
        raise ConfigError(f"cache size {text!r}: expected a number with an optional unit (KB, MB, GB, TB), "
                         "e.g. 5GB") from None


def cache_limit() -> int:
    """Bytes the cache may hold: ``$FINETUNE_CACHE_LIMIT`` (e.g. ``10GB``) or 5 GiB."""
    env = os.environ.get("FINETUNE_CACHE_LIMIT")
    return parse_size(env) if env else DEFAULT_LIMIT_BYTES


def entries(root: Path | None = None) -> list[tuple[float, int, list[Path]]]:
    """``(last use, bytes, files)`` per cache entry: a converted weights file, or the files of one features key."""
    root = root or cache_root()
    groups: dict[str, list[Path]] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.name.startswith(".tmp-"):
            key = path.name.split(".", 1)[0] if path.parent.name == "features" else path.name
            groups.setdefault(f"{path.parent}/{key}", []).append(path)
    out = []
    for files in groups.values():
        stats = [f.stat() for f in files if f.exists()]
        out.append((max(s.st_mtime for s in stats), sum(s.st_size for s in stats), files))
    return sorted(out, key=lambda e: e[0])


def by_kind(listed: list[tuple[float, int, list[Path]]]) -> dict[str, list]:
    """Entries grouped as ``features`` (cached features and activations) and ``weights`` (converted weights)."""
    kinds: dict[str, list] = {"features": [], "weights": []}
    for entry in listed:
        kinds["features" if entry[2][0].parent.name == "features" else "weights"].append(entry)
    return kinds


def touch(*paths: Path) -> None:
    """Mark cache files as just used (least-recently-used eviction reads their modification time)."""
    for path in paths:
        try:
            os.utime(path)
        except OSError:
            pass


def evict(limit: int | None = None, root: Path | None = None, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Delete least-recently-used entries until the cache holds at most ``limit`` bytes; return what was deleted.

    Files in ``keep`` (the entry just written) are never deleted.
    """
    limit = cache_limit() if limit is None else limit
    listed = entries(root)
    total = sum(size for _, size, _ in listed)
    removed: list[Path] = []
    keep_set = {Path(k).resolve() for k in keep}
    for _, size, files in listed:
        if total <= limit:
            break
        if any(f.resolve() in keep_set for f in files):
            continue
        for f in files:
            f.unlink(missing_ok=True)
            removed.append(f)
        total -= size
    return removed


def clear(root: Path | None = None) -> int:
    """Delete every cache entry; return the bytes freed."""
    freed = 0
    for _, size, files in entries(root):
        for f in files:
            f.unlink(missing_ok=True)
        freed += size
    return freed
