"""Write the Amazon Fine Foods reviews as ``data/finefoods/{train,test}.csv`` (``text,label``), without R.

The data: Debian's ``r-cran-modeldata`` (MIT) ships ``small_fine_foods``, Amazon fine-food reviews in two
data frames: ``training_data`` (4,000 rows: ``great`` 2,600 / ``other`` 1,400) and ``testing_data`` (the
official 1,000-review test set: 658 / 342), columns ``product``, ``review``, ``score``.

How, with no R installed:

1. ``apt-get download r-cran-modeldata`` in a temporary folder (no root needed), ``dpkg -x`` the ``.deb``.
2. The package's data is an R lazy-load database: ``data/Rdata.rdx`` (a gzip-compressed serialized R list)
   gives each variable's ``(offset, length)`` in ``data/Rdata.rdb``. Each blob there is a 4-byte big-endian
   uncompressed length, then a type byte: ``Z`` = a raw LZMA2 stream, ``2`` = bzip2, ``0`` = stored; or
   (older databases, ``compressed`` = 1) no type byte and zlib from byte 4.
3. PyPI ``rdata`` parses the serialized R object and converts it to a pandas data frame. R marks each string
   as ASCII, UTF-8, latin1 or native; ``rdata`` decodes each by its own flag (the file's native encoding for
   unmarked ones), and this script prints the flags it saw. In this release 3,989 + 999 reviews are ASCII and
   11 + 1 are flagged UTF-8; those 12 already hold U+FFFD where the original had a character such as ``½``,
   ``°`` or ``ê`` (the bytes ``EF BF BD`` are in the package itself, so no decoding can bring them back).
   The HTML ``<br />`` tags stay in the CSV: real-world input, which the library normalises.

The CSVs are written once (atomically) and reused: a second run only checks their row counts. ``--force``
rewrites them; ``--deb FILE`` uses a ``.deb`` downloaded elsewhere.

Needs PyPI ``rdata`` (``pip install rdata``; ``make bench-data`` installs it with the ``bench`` extra).

    .venv/bin/python bench/text_data.py          # prints the two paths and the class counts
"""

from __future__ import annotations

import argparse
import bz2
import collections
import csv
import gzip
import lzma
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "data" / "finefoods"  # git-ignored (/data/)
PACKAGE = "r-cran-modeldata"
DATA_DIR = Path("usr/lib/R/site-library/modeldata/data")
#: (data frame in the package, CSV written, expected rows per class)
SPLITS = {
    "train": ("training_data", {"great": 2600, "other": 1400}),
    "test": ("testing_data", {"great": 658, "other": 342}),
}
MAKE_HINT = "make bench-data  (or: .venv/bin/python bench/text_data.py)"


class TextDataError(SystemExit):
    """A one-line reason why the CSVs cannot be written (exits with status 1)."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


# ---------------------------------------------------------------------------- the R lazy-load database


def _rdata():
    try:
        import rdata
    except ImportError as err:
        raise TextDataError(f"reading R data needs PyPI rdata ({err}): pip install rdata  "
                            f"(or: pip install -e '.[bench]')") from err
    return rdata


def _parse(serialized: bytes) -> Any:
    """A serialized R object (XDR, with its ``X\\n`` header) -> rdata's parsed form."""
    import warnings

    rdata = _rdata()
    with warnings.catch_warnings():  # "Unknown file type: assumed RDS": a bare serialization, which it is
        warnings.simplefilter("ignore", UserWarning)
        return rdata.parser.parse_data(serialized)


def read_index(data_dir: Path) -> dict[str, tuple[int, int]]:
    """``Rdata.rdx`` -> ``{variable: (offset, length)}`` in ``Rdata.rdb`` (and checks the compression kind)."""
    raw = (data_dir / "Rdata.rdx").read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    else:  # an index saved as a lazy-load blob itself: length, then zlib
        raw = zlib.decompress(raw[4:])
    index = _rdata().conversion.convert(_parse(raw))
    variables = index["variables"]
    return {str(name): (int(where[0]), int(where[1])) for name, where in variables.items()}


def decompress_blob(blob: bytes) -> bytes:
    """One lazy-load blob -> the serialized R object (see the module docstring for the layout)."""
    size = int.from_bytes(blob[:4], "big")
    kind = blob[4:5]
    if kind == b"Z":
        out = lzma.decompress(blob[5:], format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    elif kind == b"2":
        out = bz2.decompress(blob[5:])
    elif kind == b"0":
        out = blob[5:]
    else:
        out = zlib.decompress(blob[4:])
    if len(out) != size:
        raise TextDataError(f"a blob of Rdata.rdb decompressed to {len(out):,} bytes, its header says {size:,}")
    return out


def read_variable(data_dir: Path, name: str, index: dict[str, tuple[int, int]] | None = None):
    """One variable of the package's data, as rdata converts it (a pandas DataFrame for a data frame),
    and as rdata parsed it (for :func:`encoding_flags`)."""
    rdata = _rdata()
    index = read_index(data_dir) if index is None else index
    if name not in index:
        raise TextDataError(f"{name!r} is not in {data_dir / 'Rdata.rdx'} (it has {', '.join(sorted(index))})")
    offset, length = index[name]
    with open(data_dir / "Rdata.rdb", "rb") as f:
        f.seek(offset)
        blob = f.read(length)
    parsed = _parse(decompress_blob(blob))
    import warnings

    with warnings.catch_warnings():  # tibbles: "Missing constructor for R class tbl_df" (a data.frame is right)
        warnings.simplefilter("ignore", UserWarning)
        return rdata.conversion.convert(parsed), parsed.object


def encoding_flags(obj) -> collections.Counter:
    """Counts the encoding marks (``ascii``, ``utf-8``, ``latin1``, ``bytes``, ``native``: R's CHARSXP ``gp``
    bits) of every string in a parsed R object."""
    from rdata.parser import CharFlags, RObjectType

    counts: collections.Counter = collections.Counter()
    stack = [obj]
    while stack:
        node = stack.pop()
        if node is None or not hasattr(node, "info"):
            continue
        if node.info.type == RObjectType.CHAR:
            gp = node.info.gp
            counts["utf-8" if gp & CharFlags.UTF8 else "latin1" if gp & CharFlags.LATIN1
                   else "bytes" if gp & CharFlags.BYTES else "ascii" if gp & CharFlags.ASCII else "native"] += 1
            continue
        if isinstance(node.value, list):
            stack.extend(node.value)
        if node.info.type == RObjectType.STR:
            continue
        stack.extend([node.attributes, node.tag])
    return counts


# ---------------------------------------------------------------------------- the package


def download_deb(workdir: Path) -> Path:
    """``apt-get download r-cran-modeldata`` into ``workdir``; the ``.deb`` (a clear error if it fails)."""
    try:
        done = subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir, capture_output=True, text=True)
    except FileNotFoundError:
        raise TextDataError(f"apt-get not found: this needs Debian's {PACKAGE} (a Debian or Ubuntu machine), "
                            f"or a .deb fetched elsewhere: bench/text_data.py --deb FILE") from None
    debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"))
    if done.returncode != 0 or not debs:
        detail = " ".join((done.stderr or done.stdout).split())[-400:]
        raise TextDataError(f"`apt-get download {PACKAGE}` failed (exit {done.returncode}): {detail or 'no .deb'}. "
                            f"Run `apt-get update` first if the package is unknown, or pass a .deb with --deb FILE")
    return debs[-1]


def unpack_deb(deb: Path, workdir: Path) -> Path:
    """``dpkg -x`` the package; the folder holding ``Rdata.rdb`` and ``Rdata.rdx``."""
    target = workdir / "pkg"
    try:
        done = subprocess.run(["dpkg", "-x", str(deb), str(target)], capture_output=True, text=True)
    except FileNotFoundError:
        raise TextDataError("dpkg not found: unpacking the .deb needs dpkg (Debian or Ubuntu)") from None
    if done.returncode != 0:
        raise TextDataError(f"`dpkg -x {deb.name}` failed (exit {done.returncode}): {' '.join(done.stderr.split())}")
    data_dir = target / DATA_DIR
    if not (data_dir / "Rdata.rdb").is_file():
        raise TextDataError(f"{deb.name} has no {DATA_DIR / 'Rdata.rdb'}: not the expected {PACKAGE} layout")
    return data_dir


# ---------------------------------------------------------------------------- the CSVs


def _write_csv(path: Path, texts: list[str], labels: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    os.replace(tmp, path)


def read_split(split: str, dest: str | Path = DEST) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` of ``train`` or ``test``, from the CSV (a one-line error naming make bench-data)."""
    path = Path(dest) / f"{split}.csv"
    if not path.is_file():
        raise TextDataError(f"{path} is missing: {MAKE_HINT}")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _complete(dest: Path) -> bool:
    for split, (_, expected) in SPLITS.items():
        path = dest / f"{split}.csv"
        if not path.is_file():
            return False
        try:
            _, labels = read_split(split, dest)
        except (csv.Error, KeyError, UnicodeDecodeError):
            return False
        if dict(collections.Counter(labels)) != expected:
            return False
    return True


def finefoods_csvs(dest: str | Path = DEST, *, force: bool = False, deb: str | Path | None = None,
                   verbose: bool = True) -> dict[str, Path]:
    """Write (once) ``dest/train.csv`` and ``dest/test.csv``; ``{"train": path, "test": path}``."""
    dest = Path(dest)
    paths = {split: dest / f"{split}.csv" for split in SPLITS}
    if not force and _complete(dest):
        return paths
    _rdata()  # fail before downloading anything
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="finefoods-") as tmp:
        workdir = Path(tmp)
        deb_path = Path(deb) if deb else download_deb(workdir)
        data_dir = unpack_deb(deb_path, workdir)
        index = read_index(data_dir)
        for split, (variable, expected) in SPLITS.items():
            frame, parsed = read_variable(data_dir, variable, index)
            flags = encoding_flags(parsed.value[list(frame.columns).index("review")])
            if frame["review"].isna().any() or frame["score"].isna().any():
                raise TextDataError(f"{variable}: missing reviews or scores (another {PACKAGE} release?)")
            texts = [str(t) for t in frame["review"]]
            labels = [str(s) for s in frame["score"]]
            counts = dict(collections.Counter(labels))
            if counts != expected:
                raise TextDataError(f"{variable}: classes {counts}, expected {expected} (another {PACKAGE} release?)")
            if verbose:
                replaced = sum("\ufffd" in t for t in texts)
                print(f"{variable}: {len(texts):,} reviews {counts}; string encodings {dict(flags)}; "
                      f"reviews holding U+FFFD in the package itself: {replaced}; "
                      f"holding <br /> tags (kept): {sum('<br />' in t for t in texts):,}")
            _write_csv(paths[split], texts, labels)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dest", type=Path, default=DEST, help="folder of the CSVs (data/finefoods)")
    parser.add_argument("--force", action="store_true", help="rewrite the CSVs even if they are complete")
    parser.add_argument("--deb", type=Path, help=f"a downloaded {PACKAGE}_*.deb instead of apt-get download")
    args = parser.parse_args(argv)
    paths = finefoods_csvs(args.dest, force=args.force, deb=args.deb)
    for split, path in paths.items():
        _, labels = read_split(split, args.dest)
        counts = dict(sorted(collections.Counter(labels).items()))
        print(f"Fine Foods {split}: {path} ({len(labels):,} reviews, {counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
