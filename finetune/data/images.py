"""Decoding one image file to RGB pixels, and checking that a file is usable.

What happens to unusual input:

* used (converted to RGB): grayscale, palette (transparency on white), RGBA,
  CMYK, 16-bit, animated GIF (first frame), EXIF-rotated JPEG (rotated
  upright), tiny images, symlinks to images;
* refused with a reason (:func:`check_image`): empty, truncated or corrupt
  files (including a PNG chunk with a bad CRC), text named ``.jpg``, images
  over :data:`MAX_IMAGE_PIXELS` (decompression bombs, refused before decoding).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from ..choices import DEFAULT_RESIZE
from ..errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
DECODERS = ("JPEG", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF")  # formats PIL may open; others are refused
MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused as likely decompression bombs


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None, resize: str = DEFAULT_RESIZE, *,
               crop_fraction: float = 1.0, bicubic: bool = False) -> np.ndarray:
    """Decode one image to RGB ``uint8`` (H, W, 3), honouring EXIF rotation.

    Grayscale, palette, CMYK, 16-bit and RGBA images are converted to RGB
    (transparency is composited on white); animated GIFs give their first frame.
    ``size`` resizes (bilinear) to a square or ``(height, width)``, by the
    ``resize`` policy (:func:`fit_to`): ``squash``, ``crop`` or ``pad``.
    Images over :data:`MAX_IMAGE_PIXELS` raise :class:`DataError` before any
    pixel is decoded. Corrupt files raise whatever PIL raises (see :func:`check_image`).
    """
    try:
        opened = Image.open(path, formats=DECODERS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{_bomb_message()} ({err})") from None
    with opened as img:
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise DataError(f"{img.width}x{img.height} pixels: {_bomb_message()}")
        img.seek(0)
        img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
        if size is not None:
            img = fit_to(img, (size, size) if isinstance(size, int) else size, resize, crop_fraction=crop_fraction,
                         resample=Image.BICUBIC if bicubic else Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def fit_to(img: Image.Image, size: tuple[int, int], resize: str = DEFAULT_RESIZE, *, crop_fraction: float = 1.0,
           resample: int = Image.BILINEAR) -> Image.Image:
    """``img`` resized to ``(height, width)`` by a resize policy (Keras's meanings).

    ``squash`` stretches the whole image to the size; ``crop`` cuts the largest
    centred region of the target's aspect ratio (``crop_to_aspect_ratio``:
    nothing is cut from an image that already has it) and resizes it; ``pad``
    adds black borders up to the target's aspect ratio (``pad_to_aspect_ratio``)
    and resizes. ``crop_fraction`` < 1 also cuts a centred margin (the
    ``resize shorter side to size/0.875, centre crop`` of timm's evaluation).

    Example:
        >>> wide = Image.new("RGB", (200, 100))
        >>> [fit_to(wide, (50, 50), r).size for r in ("squash", "crop", "pad")]
        [(50, 50), (50, 50), (50, 50)]
    """
    from .spec import check_resize, crop_box, pad_box

    h, w = size
    check_resize(resize)
    if resize == "crop" or crop_fraction < 1:
        left, top, right, bottom = crop_box(img.width, img.height, w / h, crop_fraction)
        img = img.crop((round(left), round(top), round(right), round(bottom)))
    elif resize == "pad":
        pw, ph, left, top = pad_box(img.width, img.height, w / h)
        if (pw, ph) != img.size:
            canvas = Image.new("RGB", (pw, ph))
            canvas.paste(img, (left, top))
            img = canvas
    return img if img.size == (w, h) else img.resize((w, h), resample)


def _bomb_message() -> str:
    return f"over the {MAX_IMAGE_PIXELS:,}-pixel limit (possible decompression bomb); downscale the file"


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        scaled = np.clip(arr / top * 255, 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def check_image(path: str) -> str | None:
    """Decode ``path`` fully; return ``None`` if usable, else the reason it is not.

    Never raises: every failure, whatever PIL raises, becomes a one-line reason.
    PNG chunk checksums are verified too, which decoding alone does not do.
    """
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        _verify_checksums(path)
        load_image(path)
        return None
    except DataError as err:
        return str(err)
    except Exception as err:  # PIL raises many types for corrupt data
        return _reason(err)


def _verify_checksums(path: str) -> None:
    """Raise if a PNG chunk's CRC is wrong (PIL does not check image data CRCs when decoding)."""
    with Image.open(path, formats=DECODERS) as img:
        if img.format == "PNG":
            img.verify()


def _reason(err: Exception) -> str:
    """A one-line reason for a decoding failure."""
    if isinstance(err, Image.UnidentifiedImageError):
        return f"cannot decode: not a readable {'/'.join(DECODERS)} image (wrong content or a corrupt header)"
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"{_bomb_message()} ({err})"
    if isinstance(err, FileNotFoundError):
        return "file disappeared during the scan"
    detail = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, SyntaxError) and "checksum" in detail:
        return f"cannot decode: corrupt file, bad CRC checksum ({detail})"
    return f"cannot decode: {type(err).__name__}: {detail}".rstrip(": ")


def load_images(paths: Sequence[str], image_size, resize: str | None = None, **fit) -> np.ndarray:
    """Decode a list of files to a float32 batch (for ``predict``), as training decoded them.

    ``image_size``: a run's :class:`~finetune.data.spec.ImageSpec` (``run.spec``), or a size whose
    images are fitted by ``resize`` (:data:`~finetune.choices.DEFAULT_RESIZE`, as ``TrainConfig``).
    ``fit``: ``crop_fraction`` and ``bicubic``, as :func:`load_image` takes them.
    """
    from .spec import as_spec

    spec = as_spec(image_size, resize)
    return np.stack([load_image(p, spec.size, **{**spec.fit_options, **fit}) for p in paths]).astype(np.float32)


def _spread(paths: Sequence[str], sample: int) -> list[str]:
    """Up to ``sample`` of ``paths``, evenly spread (a class-sorted list gives every class its share)."""
    return list(paths)[:: max(1, len(paths) // sample)][:sample]


def typical_size(paths: Sequence[str], sample: int = 64) -> int | None:
    """Median shorter side, in pixels, of up to ``sample`` images (headers only, nothing decoded).

    Example:
        >>> typical_size([])  is None
        True
    """
    sides = []
    for path in _spread(paths, sample):
        try:
            with Image.open(path, formats=DECODERS) as img:
                sides.append(min(img.size))
        except Exception:  # noqa: BLE001 - a file that vanished since the scan does not decide the size
            continue
    return int(np.median(sides)) if sides else None


def decode_checked(path: str, image_size: int, resize: str = DEFAULT_RESIZE, **fit) -> tuple[np.ndarray | None, str | None]:
    """``(pixels, None)`` for a usable file, ``(None, reason)`` otherwise: one decode, :func:`check_image`'s rules."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file (0 bytes)"
        _verify_checksums(path)
        return load_image(path, image_size, resize, **fit), None
    except DataError as err:
        return None, str(err)
    except Exception as err:  # PIL raises many types for corrupt data
        return None, _reason(err)


def decode_many(paths: Sequence[str], image_size: int, resize: str = DEFAULT_RESIZE, *, workers: int = 4,
                **fit) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Decode ``paths`` once each, in parallel: ``(good paths, float32 batch, [(bad path, reason)])``."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(lambda p: decode_checked(p, image_size, resize, **fit), paths))
    return as_batch(paths, decoded, image_size)


def as_batch(paths: Sequence[str], decoded: Sequence[tuple[np.ndarray | None, str | None]],
             image_size: int) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """``(good paths, float32 batch, [(bad path, reason)])`` from :func:`decode_checked`-style results."""
    good = [p for p, (pixels, _) in zip(paths, decoded) if pixels is not None]
    batch = np.stack([pixels for pixels, _ in decoded if pixels is not None]).astype(np.float32) if good else \
        np.zeros((0, image_size, image_size, 3), np.float32)
    return good, batch, [(p, reason) for p, (_, reason) in zip(paths, decoded) if reason is not None]


def grayscale_fraction(paths: Sequence[str], sample: int = 64) -> float:
    """The share of up to ``sample`` images that are grayscale (one channel, or three equal ones).

    Example:
        >>> grayscale_fraction([])
        0.0
    """
    picked = _spread(paths, sample)
    gray = 0
    for path in picked:
        try:
            with Image.open(path, formats=DECODERS) as img:
                img.draft("RGB", (64, 64))  # JPEGs decode at a reduced size: only the colour matters
                if img.mode in ("L", "LA", "I", "I;16", "1") or _equal_channels(img):
                    gray += 1
        except Exception:  # noqa: BLE001 - an unreadable file was reported by the scan; it decides nothing here
            continue
    return gray / len(picked) if picked else 0.0


def _equal_channels(img: Image.Image) -> bool:
    if img.mode not in ("RGB", "RGBA", "P", "CMYK"):
        return False
    rgb = np.asarray(img.convert("RGB").resize((32, 32)), dtype=np.int16)
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 2 and np.abs(rgb[..., 1] - rgb[..., 2]).max() <= 2)


def resize_plain(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (H, W, 3) squashed to ``size`` x ``size`` by plain bilinear interpolation without antialiasing and
    rounded to whole levels, as Darknet's and OpenCV's detectors resize (``cv2.resize``, ``INTER_LINEAR``): float32
    in [0, 255]."""
    import tensorflow as tf

    resized = tf.image.resize(np.asarray(image, np.float32), (size, size), method="bilinear", antialias=False)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.float32)
