"""Small helpers every layer uses: atomic file writes, "did you mean" hints, YAML text.

Example:
    >>> suggest("adma", ["adam", "sgd"])
    " Did you mean 'adam'?"
    >>> suggest("zzz", ["adam"])
    ''
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable


def suggest(name: str, known: Iterable[str], n: int = 1, cutoff: float = 0.6) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``known`` to ``name``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the result onto ``path``.

    The temporary file sits beside ``path`` and ends with ``path``'s full name
    (so ``x.weights.h5`` stays a ``.weights.h5``): a kill at any moment leaves
    either the old file or the new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f"-{path.name}")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def yaml_text(values: dict[str, Any], header: str = "") -> str:
    """``values`` as block YAML in insertion order, after an optional ``# header`` line."""
    import yaml

    return (f"# {header}\n" if header else "") + yaml.safe_dump(values, sort_keys=False)


def csv_text(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    """``rows`` as CSV text with a header (the union of their keys, in first-seen order, unless given).

    Example:
        >>> csv_text([{"a": 1, "b": 2}, {"a": 3}]).splitlines()
        ['a,b', '1,2', '3,']
    """
    import csv
    import io

    buf = io.StringIO()
    fieldnames = fieldnames or list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buf, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
