"""Where a phase's inputs come from: cached features, cached activations at the unfreeze point, or live images.

:class:`PhaseInputs` is the part of a run (:class:`~finetune.training.recipe.RecipeRun`)
that prepares data; it reads the run's ``config``, ``spec``, ``parts``, ``folder``,
``loader``, ``class_weights``, ``val_ds``, ``policy``, ``context``,
``completed``, ``timings`` and ``notes``.
"""

from __future__ import annotations

import math
import time
import warnings

import keras
import numpy as np

from ..data import concat_epochs, make_inputs
from ..data.text import batch_order
from .features import FeatureCache
from .phase import Phase, PhaseData


class PhaseInputs:
    """Builds each phase's training and validation batches, caching what a frozen layer computes."""

    def _data_for(self, phase: Phase, first_epoch: int) -> tuple[PhaseData, keras.Model]:
        data, target = self._unmixed_data_for(phase, first_epoch)
        if self.config.mixup:
            from .mixup import mixup_batches

            data.train = mixup_batches(data.train, alpha=self.config.mixup, num_classes=self.folder.num_classes,
                                       one_hot=not self.folder.binary and not self.folder.multi_label,
                                       seed=self.config.seed + (7919 if phase.name == "tune" else 0),
                                       first_step=len(self.rows) * data.steps)
        return data, target

    def _unmixed_data_for(self, phase: Phase, first_epoch: int) -> tuple[PhaseData, keras.Model]:
        last = first_epoch + phase.epochs
        if phase.inputs == "features":
            return self._feature_data(len(self.rows), last), self.parts.classifier
        if phase.inputs == "activations":
            cut = self._cut()
            if cut is not None and self.spec.kind == "text":
                return self._state_data(cut, len(self.rows), last), cut.top_model(self.parts)
            if cut is not None:
                return self._activation_data(cut, len(self.rows), last), self._top_model(cut)
        return self._image_data(len(self.rows), last), self.parts.model

    def _cut(self):
        """Where the unfrozen top starts, or ``None`` (with a warning) when phase 2 must run on live images."""
        from ..models.split import CannotSplit, split_base

        if hasattr(self, "_cut_found"):
            return self._cut_found
        self._cut_found = None

        start = self.policy.start_index(self.parts.base)
        if self.spec.kind == "text":
            return self._text_cut(start)
        if start == 0:  # the whole network trains: nothing frozen to cache
            self.notes.append("phase 2 trained on live images: the whole network is unfrozen")
            return None
        layer = self.parts.base.layers[start].name
        try:
            cut = split_base(self.parts.base, layer)
        except CannotSplit as err:
            warnings.warn(f"phase 2 runs on live images: {err}", RuntimeWarning, stacklevel=3)
            return None
        self.notes.append(f"phase 2 trained on cached activations at {layer} ({' + '.join('x'.join(map(str, s)) for s in cut.shapes)} "
                          f"per image, {1 + self.config.cache_variants} cop{'y' if not self.config.cache_variants else 'ies'})")
        self._cut_found = cut
        return cut

    def _text_cut(self, start: int):
        from .text_cache import text_cut

        cut = text_cut(self.parts.base, start)
        if isinstance(cut, str):
            self.notes.append(f"phase 2 trained live on token batches: {cut}")
            return None
        self._cut_found = cut
        train = self._activations(cut, "train", 0)
        self.notes.append(cut.describe(len(train.lengths), int(train.lengths.sum())))
        return cut

    def _activations(self, cut, split: str, variant: int) -> tuple:
        """The cached activations of one split and copy (computed once per run, shared by both phases)."""
        key = (split, variant)
        if key not in self._activation_arrays and self.spec.kind == "text":
            from ..data.pipeline import split_items

            weighted = self.class_weights if split == "train" else None
            texts, labels = split_items(self.folder.splits[split], binary=self.folder.binary, kind="text",
                                        class_weights=weighted)
            weights = None if weighted is None else np.asarray(weighted, np.float32)[labels.astype(np.int32)]
            self._activation_arrays[key] = cut.compute(self.spec, texts, labels, weights,
                                                       batch_size=self.config.batch_size, verbose=self.context.verbose)
        if key not in self._activation_arrays:
            loader = dict(self.loader, class_weights=self.class_weights) if split == "train" else self.loader
            cache = FeatureCache.for_run(self.config, self.parts, self.spec)
            self._activation_arrays[key] = cache.get_or_compute(
                self.folder.splits[split], loader, self.parts, variant=variant, split=split, cut=cut,
                dtype=self.config.cache_dtype, verbose=self.context.verbose)
        return self._activation_arrays[key]

    def _activation_tensors(self, cut, variant: int) -> tuple:
        """A train copy's cached activations as tensors, which replace its arrays: phase 2 gathers its batches from
        them, and the arrays and the tensors are never held side by side (0.55 GB each for ELPV's 3 copies)."""
        import tensorflow as tf

        arrays = self._activations(cut, "train", variant)
        if not all(isinstance(a, tf.Tensor) for a in arrays):  # one copy at a time: at most one array is doubled
            arrays = self._activation_arrays[("train", variant)] = tuple(_host_tensor(a) for a in arrays)
        return arrays

    def _features_from_activations(self, cut, arrays: tuple) -> tuple:
        """Phase 1's pooled features computed from cached activations: only the top runs, in inference mode."""
        import tensorflow as tf

        if self.spec.kind == "text":
            weights = () if arrays.weights is None else (arrays.weights,)
            return (cut.pooled(self.parts, arrays), arrays.labels, *weights)

        n_inputs = len(cut.shapes)
        top = tf.function(lambda *a: self.parts.pool(cut.top(a[0] if n_inputs == 1 else list(a), training=False)))
        out = [top(*[tf.constant(np.asarray(a[i:i + 128], np.float32)) for a in arrays[:n_inputs]]).numpy()
               for i in range(0, len(arrays[0]), 128)]
        return (np.concatenate(out), *arrays[n_inputs:])

    def _top_model(self, cut) -> keras.Model:
        """The cut's inputs -> the unfrozen top (inference mode, like the base) -> pooling -> the head."""
        inputs = [keras.Input(shape, name=f"cut_{i}") for i, shape in enumerate(cut.shapes)]
        top = cut.top(inputs if len(inputs) > 1 else inputs[0], training=False)
        return keras.Model(inputs, self.parts.classifier(self.parts.pool(top)), name="finetune_top")

    def _activation_data(self, cut, first: int, last: int) -> PhaseData:
        """Cached activations; epoch ``e`` trains on copy ``e mod (1 + cache_variants)`` of every image."""
        import tensorflow as tf

        config = self.config
        start = time.perf_counter()
        copies = [self._activation_tensors(cut, v) for v in range(1 + config.cache_variants)]
        val = None
        if self.val_ds is not None:
            val = _as_batches(self._activations(cut, "val", 0), len(cut.shapes)).batch(config.batch_size)
        self.timings["activations"] = self.timings.get("activations", 0.0) + time.perf_counter() - start
        n = len(copies[0][0])
        n_inputs = len(cut.shapes)

        def form(taken):
            inputs = taken[0] if n_inputs == 1 else tuple(taken[:n_inputs])
            return (inputs, *taken[n_inputs:])

        if self.context.loop == "trainer":
            tensors = [_host_tensor(a) for a in copies[0]]
            train = tf.data.Dataset.range(n).shuffle(n, seed=config.seed).batch(config.batch_size).map(
                lambda indices: form([tf.gather(t, indices) for t in tensors]))
        else:
            train = _gathered_epochs(copies, first, last, batch_size=config.batch_size, seed=config.seed, form=form)
        return PhaseData(train.prefetch(tf.data.AUTOTUNE), val, math.ceil(n / config.batch_size))

    def _state_data(self, cut, first: int, last: int) -> PhaseData:
        """A text run's phase 2 on the cached states at the cut, batched as live token batches are."""
        from .text_cache import state_batches

        size, seed = self.config.batch_size, self.config.seed
        train_states = self._activations(cut, "train", 0)
        val = None
        if self.val_ds is not None:
            val = state_batches(self._activations(cut, "val", 0), batch_size=size, seed=None)
        train = state_batches(train_states, batch_size=size, seed=seed, epochs=(first, last))
        return PhaseData(train, val, len(batch_order(train_states.lengths, size, None)))

    def _image_data(self, first: int, last: int) -> PhaseData:
        items, config = self.folder.splits["train"], self.config
        epochs = None if self.context.loop == "trainer" else (first, last)  # the Trainer runs a dataset per epoch
        train = make_inputs(items, shuffle=True, seed=config.seed, class_weights=self.class_weights,
                             epochs=epochs, **self.loader)
        return PhaseData(train, self.val_ds, math.ceil(len(items) / config.batch_size))

    def _feature_data(self, first: int, last: int) -> PhaseData:
        import tensorflow as tf

        config, parts = self.config, self.parts
        start = time.perf_counter()
        cache = FeatureCache.for_run(config, parts, self.spec)
        loader = dict(self.loader, class_weights=self.class_weights)
        cut = self._cut() if self._phase2_on_activations() else None
        if cut is not None:  # the bottom runs once for both phases; phase 1's features come from the top
            arrays = [self._features_from_activations(cut, self._activations(cut, "train", v))
                      for v in range(1 + config.cache_variants)]
        else:
            arrays = [cache.get_or_compute(self.folder.splits["train"], loader, parts, variant=v,
                                           verbose=self.context.verbose) for v in range(1 + config.cache_variants)]
        x = np.concatenate([a[0] for a in arrays])
        y = np.concatenate([a[1] for a in arrays])
        w = np.concatenate([a[2] for a in arrays]) if self.class_weights is not None else None
        val = None
        if self.val_ds is not None:
            val_arrays = (self._features_from_activations(cut, self._activations(cut, "val", 0)) if cut is not None
                          else cache.get_or_compute(self.folder.splits["val"], self.loader, parts, variant=0,
                                                    split="val", verbose=self.context.verbose))
            val = tf.data.Dataset.from_tensor_slices(tuple(val_arrays)).batch(config.batch_size)
        self.timings["features"] = time.perf_counter() - start
        if self.context.loop == "trainer":
            base = tf.data.Dataset.from_tensor_slices((x, y) if w is None else (x, y, w))
            train = base.shuffle(len(x), seed=config.seed).batch(config.batch_size)
        else:
            train = _gathered_epochs([(x, y) if w is None else (x, y, w)], first, last, batch_size=config.batch_size,
                                     seed=config.seed)
        return PhaseData(train.prefetch(tf.data.AUTOTUNE), val, math.ceil(len(x) / config.batch_size))

    def _phase2_on_activations(self) -> bool:
        config = self.config
        return bool(config.tune_epochs) and config.resolved_tune_inputs == "activations" and \
            self.context.loop == "fit" and "tune" not in self.completed


def _gathered_epochs(copies: list[tuple], first: int, last: int, *, batch_size: int, seed: int, form=tuple):
    """Epochs ``first .. last-1`` of batches gathered from in-memory arrays, epoch ``e`` from ``copies[e % len(copies)]``
    (a tuple of equally long arrays) in the order of a shuffle seeded ``seed + e``: the order of
    :func:`~finetune.data.epoch_batches` on the same rows. ``form`` arranges a batch's gathered tensors.

    Only the index stream has a branch per epoch; the arrays become tensors once, captured by the one gather after
    the epochs are concatenated. A ``tf.data`` graph rewrite serialises a dataset with a copy of every tensor it
    captures, once per reference: with the data inside each epoch's branch, 100 head epochs held 100 copies of the
    features (3.2 GB on ELPV) and 10 tune epochs 10 of the activations (1.8 GB). The rewrites (static
    optimizations, which a gather over prefetched batches gains nothing from) are off as well, so the arrays are
    not copied even once.
    """
    import tensorflow as tf

    n = len(copies[0][0])
    tensors = [tuple(_host_tensor(a) for a in copy) for copy in copies]

    def epoch(e: int):
        copy = e % len(tensors)
        order = tf.data.Dataset.range(n).shuffle(n, seed=seed + e, reshuffle_each_iteration=False).batch(batch_size)
        return order.map(lambda indices: (tf.constant(copy, tf.int32), indices))

    def gather(copy, indices):
        if len(tensors) == 1:
            return form([tf.gather(t, indices) for t in tensors[0]])
        branches = [lambda arrays=arrays: [tf.gather(t, indices) for t in arrays] for arrays in tensors]
        return form(tf.switch_case(copy, branches))

    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return concat_epochs(epoch, first, last).map(gather).with_options(options)


def _host_tensor(array):
    """``array`` as a tensor in host memory holding one copy of it (a tensor is returned as it is).

    ``tf.constant`` / ``tf.convert_to_tensor`` of a NumPy array hold two copies for as long as the tensor lives
    (measured: +0.37 GB per 0.18 GB copy of ELPV's activations); the output of ``tf.identity`` holds one.
    """
    import tensorflow as tf

    if isinstance(array, tf.Tensor):
        return array
    with tf.device("/CPU:0"):  # tf.data gathers from it on the host
        return tf.identity(array)


def _as_batches(arrays: tuple, n_inputs: int):
    """A dataset of ``(inputs, labels[, weights])`` from cached arrays whose first ``n_inputs`` are model inputs."""
    import tensorflow as tf

    inputs = arrays[0] if n_inputs == 1 else tuple(arrays[:n_inputs])
    return tf.data.Dataset.from_tensor_slices((inputs, *arrays[n_inputs:]))
