"""Run the frozen base once: feature extraction and the on-disk feature cache.

In phase 1 the base is frozen, so its output for an image never changes:
recomputing it every epoch (as the seed recipe does) is wasted work. The
features are computed once per image (and per augmented variant) and kept in
memory; with a real weights file they are also stored in the user's cache dir,
keyed by everything that could change them — backbone, weights checksum, the input
spec (size and resize policy), preprocessing, pooling, augmentation variant and every file's path, size
and mtime — so a later run on the same data skips extraction and a stale cache
is never used. Large arrays are memory-mapped rather than loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import keras

from ..cache import cache_root, check_npy, evict, sha256_of, touch, usable_or_removed
from ..data import make_inputs
from ..util import atomic_text, atomic_write

MMAP_BYTES = 1 << 30  # arrays above 1 GiB are memory-mapped from the cache file


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(path)  # size and mtime are part of the memo key: a changed file is hashed again


def weights_fingerprint(weights: str | None) -> str | None:
    """A checksum naming the weights, or ``None`` when they cannot be identified (random)."""
    if weights is None:
        return None
    if weights == "imagenet":
        return f"keras-imagenet-{keras.__version__}"
    stat = os.stat(weights)
    return _file_sha256(os.path.abspath(weights), stat.st_size, stat.st_mtime_ns)


def extract_features(parts, dataset, *, augmented: bool = False, verbose: int = 0, split=None,
                     dtype: str = "float32", seed: int | None = None, variant: int = 0) -> tuple[np.ndarray, ...]:
    """Run the frozen base once over ``dataset``; return ``(features..., labels[, weights])``.

    Without ``split`` the features are the pooled output of the base (one
    array); with a :class:`~finetune.models.split.Split` they are the tensors
    crossing its cut (one array each). With ``augmented=True`` the augmentation
    layers act (training mode) while the base still runs in inference mode; with
    a ``seed`` they draw from ``(seed, variant)`` alone, so a copy is the same
    whenever and in whichever process it is computed (resume stays exact).
    """
    import tensorflow as tf

    from .callbacks import seed_generators

    aug, prep, base, pool = parts.augment, parts.preprocess, parts.base, parts.pool
    if augmented and aug is not None and seed is not None:
        for i, generator in enumerate(seed_generators(aug)):
            value = np.asarray([seed * 1_000_003 + variant * 7919 + 104_729 + i, 0])
            generator.state.assign(value.astype(keras.ops.convert_to_numpy(generator.state.value).dtype))

    @tf.function(reduce_retracing=True)
    def features(images):
        if parts.features is not None:  # text: the frozen encoder, pooled over the padding mask
            return [parts.features(images)]
        x = aug(images, training=True) if (augmented and aug is not None) else images
        x = prep(x) if prep is not None else x
        if split is not None:
            return [tf.cast(t, dtype) for t in split.activations(x)]
        return [pool(base(x, training=False))]

    chunks: list[list[np.ndarray]] = []
    tty = sys.stdout.isatty()
    progbar = keras.utils.Progbar(None, unit_name="batch") if verbose and tty else None
    start = time.perf_counter()
    for i, batch in enumerate(dataset):
        chunks.append([t.numpy() for t in features(batch[0])] + [np.asarray(t) for t in batch[1:]])
        if progbar:
            progbar.update(i + 1)
    if progbar:
        progbar.update(len(chunks), finalize=True)
    elif verbose:  # a log: one plain line, no redraws
        what = f"activations at {split.layer}" if split is not None else "features"
        print(f"{what}{' (augmented copy)' if augmented else ''}: {sum(len(c[-1]) for c in chunks)} images in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    return tuple(np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0])))


class FeatureCache:
    """Features of the frozen base, in memory and (when the weights are identifiable) on disk."""

    def __init__(self, directory: Path | None, identity: dict[str, Any]):
        self.directory, self.identity = directory, identity
        self.hits = 0

    @classmethod
    def for_run(cls, config, parts, spec) -> "FeatureCache":
        """The cache of a run: keyed by the weights, the input ``spec`` (every pixel decision), the backbone's
        preprocessing, pooling, taps, BatchNormalization statistics, augmentation and seed."""
        weights = parts.backbone.resolve_weights(config.weights)
        fingerprint = weights_fingerprint(weights)
        identity = {
            "backbone": parts.backbone.name, "weights": fingerprint, "input": spec.identity(),
            "preprocessing": parts.backbone.preprocessing, "pooling": config.pooling,
            "augment": config.augment, "seed": config.seed, "format": 2,
        }
        if getattr(config, "bn_stats", "imagenet") != "imagenet":  # absent for imagenet: old keys stay valid
            from .bn_stats import batchnorm_fingerprint

            identity["bn_stats"] = batchnorm_fingerprint(parts.base)
        if getattr(config, "feature_taps", 0):
            identity["feature_taps"] = config.feature_taps
        directory = cache_root() / "features" if fingerprint else None
        return cls(directory, identity)

    def key(self, items: Sequence[tuple[str, int]], split: str, variant: int, weighted: bool, *,
            cut: str | None = None, dtype: str = "float32") -> str:
        files = []
        texts = self.identity["input"].get("kind") == "text"
        for source, label in items:
            if texts:  # the source is the text itself
                files.append((hashlib.sha256(source.encode("utf-8")).hexdigest(), label))
                continue
            stat = os.stat(source)
            files.append((os.path.abspath(source), stat.st_size, stat.st_mtime_ns, label))
        payload = {**self.identity, "split": split, "variant": variant, "weighted": weighted, "files": files}
        if cut is not None:  # activations at an unfreeze point (pooling plays no part); absent: old keys stay valid
            payload.update({"cut": cut, "dtype": dtype})
            payload.pop("pooling")
        if variant == 0:
            payload.pop("augment"), payload.pop("seed")
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def get_or_compute(self, items, loader: dict, parts, *, variant: int = 0, split: str = "train",
                       verbose: int = 0, cut=None, dtype: str = "float32") -> tuple[np.ndarray, ...]:
        """Features for ``items`` (variant 0 = un-augmented), from the cache or computed now.

        ``cut``: a :class:`~finetune.models.split.Split`: cache the activations
        crossing it (stored as ``dtype``) instead of the pooled output of the base.
        """
        weighted = loader.get("class_weights") is not None
        key = self.key(items, split, variant, weighted, cut=cut.layer if cut is not None else None, dtype=dtype)
        cached = self._load(key)
        if cached is not None:
            self.hits += 1
            return cached
        dataset = make_inputs(items, cache=None, **loader)
        arrays = extract_features(parts, dataset, augmented=variant > 0, verbose=verbose, split=cut, dtype=dtype,
                                  seed=self.identity["seed"], variant=variant)
        self._store(key, arrays)
        return arrays

    def _paths(self, key: str, count: int) -> list[Path]:
        return [self.directory / f"{key}.{i}.npy" for i in range(count)]

    def _load(self, key: str) -> tuple[np.ndarray, ...] | None:
        if self.directory is None:
            return None
        meta = self.directory / f"{key}.json"
        if not usable_or_removed(meta, lambda p: int(json.loads(p.read_text())["arrays"])):
            return None
        paths = self._paths(key, int(json.loads(meta.read_text())["arrays"]))
        if not all([usable_or_removed(p, check_npy) for p in paths]):  # a list: check (and heal) every file
            return None
        touch(meta, *paths)
        return tuple(np.load(p, mmap_mode="r" if p.stat().st_size > MMAP_BYTES else None) for p in paths)

    def _store(self, key: str, arrays: tuple[np.ndarray, ...]) -> None:
        if self.directory is None:
            return
        for path, array in zip(self._paths(key, len(arrays)), arrays):
            atomic_write(path, lambda tmp, array=array: _save_npy(tmp, array))
        atomic_text(self.directory / f"{key}.json", json.dumps({"arrays": len(arrays), "identity": self.identity}))
        evict(keep=(self.directory / f"{key}.json", *self._paths(key, len(arrays))))


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as file:  # a file object: np.save would append .npy to a bare name
        np.save(file, array)
