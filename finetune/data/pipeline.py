"""Checked file lists -> batched ``tf.data`` pipelines of RGB float32 images in [0, 255]."""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .native import decode_file, native_flags
from .spec import ImageSpec, as_spec

CACHE_BUDGET_BYTES = 2 * 1024**3  # cache="auto" keeps decoded images in memory only below this


def balanced_class_weights(counts: Sequence[int]) -> list[float]:
    """``n / (k * n_c)`` per class, as scikit-learn's ``class_weight="balanced"``."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return weights.tolist()


def make_dataset(
    items: Sequence[tuple[str, int]],
    image_size: "int | ImageSpec",
    *,
    batch_size: int = 32,
    binary: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    class_weights: Sequence[float] | None = None,
    cache: str | None = "auto",
    epochs: tuple[int, int] | None = None,
    cache_budget: int = CACHE_BUDGET_BYTES,
    resize: str | None = None,
):
    """A batched ``tf.data.Dataset`` of ``(images, labels[, sample_weights])``.

    Images are RGB float32 in [0, 255] as the :class:`~finetune.data.spec.ImageSpec` says
    (or at ``image_size``, fitted by the ``resize`` policy, :data:`~finetune.choices.DEFAULT_RESIZE`
    by default; see :func:`finetune.data.images.fit_to`); decoding runs in parallel. Labels are float 0/1 for ``binary``, float 0/1 rows for multi-label
    items (whose labels are tuples of flags), else integers. Class
    weights become per-sample weights, which ``model.fit`` honours with tf.data.
    PNG/JPEG/BMP/GIF files decode with TensorFlow's decoders (no GIL; see
    :mod:`finetune.data.native`), others with PIL.
    A file that fails to decode mid-run (deleted, corrupted) is dropped, never raised.

    ``cache`` keeps decoded images so later epochs skip decoding: ``"memory"``,
    a file path (a ``tf.data`` file cache), ``None`` (stream: decode every
    epoch; memory stays flat whatever the dataset size), or ``"auto"`` (the
    default): memory when the decoded set, ``len(items) * image_size**2 * 3``
    bytes, fits in ``cache_budget`` (2 GiB by default), else streaming. When
    streaming, file names are shuffled before decoding, so no buffer of decoded
    images is held; otherwise the shuffle buffer is bounded by ``cache_budget`` too.

    ``epochs=(first, last)`` yields epochs ``first .. last-1`` back to back,
    epoch ``e`` shuffled with seed ``seed + e``: the order depends only on the
    epoch number, so a resumed run sees the same batches as an uninterrupted one.
    """
    import tensorflow as tf

    spec = as_spec(image_size, resize)
    image_size, resize = spec.size, spec.resize
    paths, labels = split_items(items, binary=binary, class_weights=class_weights, kind="image")
    ds = tf.data.Dataset.from_tensor_slices((paths, labels, native_flags(paths)))

    def decode(path, label, native):
        image = decode_file(path, image_size, resize, native)
        image.set_shape((image_size, image_size, 3))
        return image, label

    def decoded_from(files):
        return files.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()

    cache = resolve_cache(cache, len(paths), image_size, cache_budget)
    streaming = cache is None
    source = ds if streaming else decoded_from(ds).cache("" if cache == "memory" else str(cache))
    buffer = max(1, min(len(paths), 10_000, cache_budget // (image_size * image_size * 3)))

    def shuffled(epoch_seed, reshuffle: bool):
        """One pass in shuffled order: file names when streaming, decoded images otherwise."""
        if streaming:
            names = source.shuffle(max(1, len(paths)), seed=epoch_seed, reshuffle_each_iteration=reshuffle)
            return decoded_from(names)
        return source.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=reshuffle)

    plain = decoded_from(source) if streaming else source
    if epochs is not None:
        # One branch per epoch with a Python-int seed (a tensor seed breaks once a global seed is set).
        ds = concat_epochs(lambda e: (shuffled(seed + e, False) if shuffle else plain).batch(batch_size), *epochs)
    else:
        ds = (shuffled(seed, True) if shuffle else plain).batch(batch_size)

    if class_weights is not None:
        table = tf.constant(np.asarray(class_weights, np.float32))

        def to_float(image, label):
            weight = tf.gather(table, tf.cast(label, tf.int32))
            return tf.cast(image, tf.float32), label, weight
    else:
        def to_float(image, label):
            return tf.cast(image, tf.float32), label

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def split_items(items, *, binary: bool, class_weights=None, kind: str = "image") -> tuple[list, np.ndarray]:
    """``(sources, labels)`` of ``[(source, label), ...]``: labels float 0/1 for ``binary``, float rows of flags for
    multi-label items, else integers.

    Raises:
        ConfigError: class weights given for a multi-label task.
    """
    sources = [source for source, _ in items]
    labels = [label for _, label in items]
    multi_label = bool(labels) and isinstance(labels[0], (tuple, list))
    if multi_label and class_weights is not None:
        raise ConfigError(f"class weights apply to one label per {kind}; a multi-label task takes none")
    return sources, np.asarray(labels, dtype=np.float32 if (binary or multi_label) else np.int32)


def resolve_cache(cache: str | None, n_images: int, image_size: int, budget: int = CACHE_BUDGET_BYTES) -> str | None:
    """What ``cache="auto"`` means for ``n_images`` at ``image_size``: ``"memory"`` if it fits ``budget``, else ``None``."""
    if cache != "auto":
        return cache
    return "memory" if n_images * image_size * image_size * 3 <= budget else None


def epoch_batches(ds, first: int, last: int, *, batch_size: int, seed: int, buffer: int = 10_000):
    """Epochs ``first .. last-1`` of ``ds`` back to back, epoch ``e`` shuffled with seed ``seed + e``.

    The order of an epoch depends only on its number, which is what makes a
    resumed run see the same batches as an uninterrupted one.
    """
    return concat_epochs(lambda e: ds.shuffle(buffer, seed=seed + e, reshuffle_each_iteration=False).batch(batch_size),
                          first, last)


def concat_epochs(one_epoch, first: int, last: int):
    """``one_epoch(e)`` for e in ``first .. last-1``, back to back.

    One branch per epoch with a Python-int seed: a tensor seed inside
    ``flat_map`` breaks once a global seed is set.
    """
    branches = [one_epoch(e) for e in range(first, max(last, first + 1))]
    return functools.reduce(lambda a, b: a.concatenate(b), branches)
