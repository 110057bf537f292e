"""Where images come from: scanning folders, decoding files, ``tf.data`` pipelines, augmentation.

Data code builds no networks; :mod:`finetune.models` knows nothing of files.
"""

from .images import (
    DECODERS, IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, DataError, check_image, decode_many, load_image, load_images,
    grayscale_fraction, typical_size,
)
from .pipeline import (
    CACHE_BUDGET_BYTES, balanced_class_weights, concat_epochs, epoch_batches, make_dataset, resolve_cache,
)
from .scan import SPLIT_NAMES, ImageFolder, Skipped, scan_folder
from .sources import as_image_folder, from_arrays, from_csv, from_dataset


def make_inputs(items, image_size, **kwargs):
    """Batched model inputs for ``[(source, label), ...]``, by the kind of the spec given as ``image_size``:
    :func:`make_dataset` for images (an :class:`~finetune.data.spec.ImageSpec` or a size), token batches for a
    :class:`~finetune.data.text.TextSpec` (:func:`~finetune.data.text.make_text_dataset`)."""
    if getattr(image_size, "kind", "image") == "text":
        from .text import make_text_dataset

        return make_text_dataset(items, image_size, **kwargs)
    return make_dataset(items, image_size, **kwargs)

__all__ = [
    "CACHE_BUDGET_BYTES", "as_image_folder", "from_arrays", "from_csv", "from_dataset", "DECODERS", "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "SPLIT_NAMES", "DataError",
    "ImageFolder", "Skipped", "balanced_class_weights", "check_image", "concat_epochs", "decode_many", "grayscale_fraction", "epoch_batches", "load_image",
    "load_images", "make_dataset", "make_inputs", "resolve_cache", "scan_folder", "typical_size",
]
