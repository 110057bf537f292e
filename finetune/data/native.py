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
    >>> path = os.path.join(tempfile.mkdtemp(), "gray.png")
    >>> Image.new("L", (30, 20), 128).save(path)
    >>> is_native(path), decode_file(path, 16, "crop").shape
    (True, TensorShape([16, 16, 3]))
"""

from __future__ import annotations

from typing import Sequence

from PIL import Image

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


def decode_file(path, image_size: int, resize: str = "squash", native=True, **fit):
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

    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    if resize == "crop":
        cw, ch = tf.minimum(w, h), tf.minimum(w, h)  # a square target: the largest centred square
        left, top = (w - cw) / 2, (h - ch) / 2
        x0, y0 = tf.cast(tf.round(left), tf.int32), tf.cast(tf.round(top), tf.int32)  # round half to even, as Python
        x1, y1 = tf.cast(tf.round(left + cw), tf.int32), tf.cast(tf.round(top + ch), tf.int32)
        image = image[y0:y1, x0:x1]
    elif resize == "pad":
        side = tf.maximum(shape[0], shape[1])
        image = tf.image.pad_to_bounding_box(image, (side - shape[0]) // 2, (side - shape[1]) // 2, side, side)
    resized = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size), "bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def decoded_batches(paths: Sequence[str], image_size: int, resize: str = "squash", *, batch_size: int = 32, **fit):
    """Yield ``(paths, float32 images, [(bad path, reason)])`` batch by batch, in order.

    Files decode in ``tf.data``'s threads (natively where :func:`is_native`), while
    the caller works on the previous batch. A file that fails is named with
    :func:`~finetune.data.images.decode_checked`'s reason, in the batch where it
    would have been.
    """
    import numpy as np
    import tensorflow as tf

    from .images import decode_checked

    paths = list(paths)
    flags = [False] * len(paths) if fit else native_flags(paths)
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths or [""], flags or [False]))
    ds = ds.take(len(paths)).map(lambda i, p, n: (i, decode_file(p, image_size, resize, n, **fit)),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(batch_size).prefetch(2)

    def reasons(indices):
        return [(paths[j], decode_checked(paths[j], image_size, resize, **fit)[1] or "could not be decoded")
                for j in indices]

    done = 0
    for index, images in ds:
        index = index.numpy()
        yield [paths[j] for j in index], images.numpy().astype(np.float32), reasons(
            sorted(set(range(done, int(index[-1]) + 1)) - set(index.tolist())))
        done = int(index[-1]) + 1
    if done < len(paths):
        yield [], np.zeros((0, image_size, image_size, 3), np.float32), reasons(range(done, len(paths)))
