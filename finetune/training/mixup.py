"""Mixup (Zhang et al. 2018) on the inputs of the part being trained.

Each training batch is mixed with a shuffled copy of itself: ``x = lam * x_i +
(1 - lam) * x_j`` and the same for the targets (one-hot for softmax heads) and
sample weights, with ``lam ~ Beta(alpha, alpha)`` per image, folded to
``max(lam, 1 - lam)`` as fastai does so that each mixed image keeps its own
label as the larger part. The inputs are whatever the phase trains on: images
for a live phase, cached activations at the unfreeze point, or the pooled
features of phase 1 (there it is mixup in feature space, Verma et al. 2019).
The draws are stateless, seeded by the run's seed and the global step, so a
resumed run mixes exactly as an uninterrupted one. Validation batches are not
mixed.

Example:
    >>> import tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((tf.eye(4), tf.range(4))).batch(4)
    >>> x, y = next(iter(mixup_batches(ds, alpha=0.4, num_classes=4, one_hot=True, seed=0)))
    >>> bool(tf.reduce_all(tf.abs(tf.reduce_sum(y, axis=1) - 1.0) < 1e-6)), bool(tf.reduce_all(tf.reduce_max(x, axis=1) >= 0.5))
    (True, True)
"""

from __future__ import annotations


def mixup_batches(ds, *, alpha: float, num_classes: int, one_hot: bool, seed: int, first_step: int = 0):
    """``ds`` of ``(inputs, targets[, weights])`` batches, each mixed with a permutation of itself.

    Args:
        ds: Training batches; ``inputs`` may be a tensor or a tuple of tensors (several cut tensors).
        alpha: The Beta distribution's parameter (fastai: 0.4; larger mixes more).
        num_classes: Width of the one-hot targets when ``one_hot``.
        one_hot: Integer class labels (a softmax head) become one-hot rows before mixing; otherwise the
            targets (a sigmoid's 0/1, several-hot labels) are mixed as they are.
        seed: The run's seed.
        first_step: The global index of the first batch (a resumed run starts later).
    """
    import tensorflow as tf

    def mix(step, batch):
        x, y, *w = batch
        seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(seed, tf.int64), step]), 3)
        n = tf.shape(y)[0]
        g1 = tf.random.stateless_gamma([n], seeds[0], alpha=alpha)
        g2 = tf.random.stateless_gamma([n], seeds[1], alpha=alpha)
        lam = g1 / tf.maximum(g1 + g2, 1e-12)
        lam = tf.maximum(lam, 1.0 - lam)
        perm = tf.argsort(tf.random.stateless_uniform([n], seeds[2]))

        def blend(t):
            t = t if t.dtype.is_floating else tf.cast(t, tf.float32)
            weight = tf.reshape(tf.cast(lam, t.dtype), tf.concat([[n], tf.ones([tf.rank(t) - 1], tf.int32)], 0))
            return weight * t + (1 - weight) * tf.gather(t, perm)

        if one_hot:
            y = tf.one_hot(tf.reshape(tf.cast(y, tf.int32), [-1]), num_classes)
        return (tf.nest.map_structure(blend, x), blend(y), *[blend(v) for v in w])

    return ds.enumerate(start=first_step).map(mix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
