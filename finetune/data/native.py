"""Decoding inside ``tf.data`` with TensorFlow's own decoders, so images decode in parallel without the GIL.

PNG, JPEG, BMP and GIF files that need nothing PIL alone does are decoded by
``tf.io`` and fitted by the same resize policy as :func:`~finetune.data.images.fit_to`
(the same crop box, the same padding, antialiased bilinear resizing): pixels
within 1 gray level of PIL's (JPEG with the accurate integer DCT, as PIL).
Everything else goes through PIL (:func:`~finetune.data.images.load_image`):
EXIF-rotated JPEGs, CMYK, 16-bit, alpha or palette transparency (composited on
white), WEBP and TIFF.

Example:
    >>> from PIL import Image
    >>> import tempfile, os
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "gray.png")
    >>> Image.new("L", (30, 20), 128).save(path)
    >>> is_native(path), decode_file(path, 16, "crop").shape
    (True, TensorShape([16, 16, 3]))
    >>> folder.cleanup()
"""

from __future__ import annotations

import os
from typing import Sequence

from PIL import Image

from ..choices import DEFAULT_RESIZE
from .images import MAX_IMAGE_PIXELS, load_image

NATIVE_MODES = {"JPEG": ("RGB", "L"), "PNG": ("RGB", "L", "P"), "BMP": ("RGB", "L"), "GIF": ("P", "L")}
EXIF_ORIENTATION = 0x0112


def is_native(path: str) -> bool:
    """Whether TensorFlow's decoders give this file the same pixels as PIL (read from the header only)."""
    try:
        with Image.open(path) as img:
            if img.mode not in NATIVE_MODES.get(img.format or "", ()) or "transparency" in img.info:
                return False
            if img.width * img.height > MAX_IMAGE_PIXELS:  # PIL refuses it before decoding
                return False
            if img.format == "JPEG" and img.getexif().get(EXIF_ORIENTATION, 1) != 1:
                return False
            if img.format == "BMP" and img.info.get("compression", 0) != 0:
                return False
            return True
    except Exception:  # noqa: BLE001 - unreadable here: PIL's path gives the reason
        return False


def native_flags(paths: Sequence[str], workers: int = 4) -> list[bool]:
    """:func:`is_native` for each path (headers read in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(is_native, paths, chunksize=64))


def decode_file(path, image_size: int, resize: str = DEFAULT_RESIZE, native=True, **fit):
    """``uint8`` (size, size, 3) pixels of the file at ``path`` (a string tensor), in graph mode.

    ``native`` (a bool tensor or Python bool): decode with ``tf.io``; else with PIL
    through ``tf.numpy_function`` (``fit``: ``crop_fraction``, ``bicubic``, as
    :func:`~finetune.data.images.load_image`; PIL only).
    """
    import tensorflow as tf

    def with_pil():
        image = tf.numpy_function(lambda p: load_image(p.decode("utf-8"), image_size, resize, **fit), [path],
                                  tf.uint8, stateful=False)
        return tf.reshape(image, (image_size, image_size, 3))

    def with_tf():
        data = tf.io.read_file(path)
        is_jpeg = tf.strings.substr(data, 0, 2) == b"\xff\xd8"
        image = tf.cond(is_jpeg,  # the file's own channels: a grayscale image is resized once, not three times
                        lambda: tf.io.decode_jpeg(data, channels=0, dct_method="INTEGER_ACCURATE"),
                        lambda: tf.io.decode_image(data, channels=0, expand_animations=False))
        gray = tf.shape(image)[-1] < 3
        image = tf.cond(gray, lambda: image[..., :1], lambda: image[..., :3])
        fitted = fit_tensor(image, image_size, resize)
        return tf.reshape(tf.cond(gray, lambda: tf.tile(fitted, [1, 1, 3]), lambda: fitted), (image_size, image_size, 3))

    if isinstance(native, bool):
        return with_tf() if native else with_pil()
    return tf.cond(native, with_tf, with_pil)


def fit_tensor(image, image_size: int, resize: str):
    """:func:`~finetune.data.images.fit_to` on a ``uint8`` (h, w, channels) tensor: the same crop box and padding."""
    import tensorflow as tf

    from .spec import check_resize, crop_box, pad_box

    check_resize(resize)
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    if resize == "crop":
        box = crop_box(w, h, minimum=tf.minimum)  # round half to even, as Python's round in fit_to
        x0, y0, x1, y1 = (tf.cast(tf.round(v), tf.int32) for v in box)
        image = image[y0:y1, x0:x1]
    elif resize == "pad":
        pw, ph, left, top = (tf.cast(v, tf.int32) for v in pad_box(w, h, maximum=tf.maximum, rounding=tf.round))
        image = tf.image.pad_to_bounding_box(image, top, left, ph, pw)
    resized = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size), "bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def decoded_batches(paths: Sequence[str], image_size: int, resize: str = DEFAULT_RESIZE, *, batch_size: int = 256,
                    workers: int | None = None, **fit):
    """Yield ``(paths, float32 images, [(bad path, reason)])`` chunk by chunk, in order.

    Each file is decoded once, in a thread pool: natively (a compiled ``tf.io``
    decode, which releases the GIL) where :func:`is_native`, else with PIL. A file
    that fails is named with :func:`~finetune.data.images.decode_checked`'s reason.
    The next chunk decodes while the caller works on the current one.
    """
    from concurrent.futures import ThreadPoolExecutor

    import tensorflow as tf

    from .images import as_batch, decode_checked

    paths = list(paths)
    flags = [False] * len(paths) if fit else native_flags(paths)
    native = tf.function(lambda p: decode_file(p, image_size, resize, True),
                         input_signature=[tf.TensorSpec((), tf.string)])

    def decode(job):
        path, is_native = job
        if is_native:
            try:
                return native(tf.constant(path)).numpy(), None
            except Exception:  # noqa: BLE001 - TensorFlow refused it: PIL's checks give the reason
                pass
        return decode_checked(path, image_size, resize, **fit)

    starts = list(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        def submit(start):
            return [pool.submit(decode, job) for job in zip(paths[start:start + batch_size],
                                                             flags[start:start + batch_size])]

        pending = submit(starts[0]) if starts else []
        for i, start in enumerate(starts):
            decoded = [future.result() for future in pending]
            pending = submit(starts[i + 1]) if i + 1 < len(starts) else []  # decoded while the caller predicts
            yield as_batch(paths[start:start + batch_size], decoded, image_size)
