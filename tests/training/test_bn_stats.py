"""AdaBN (``--bn-stats adapt``): the base's BatchNormalization statistics from the training images, before caching."""

import numpy as np
import pytest


def test_adapted_statistics_are_the_population_moments_of_the_layer_inputs():
    import keras

    from finetune.training.bn_stats import adapt_batchnorm

    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, use_bias=False)
    bn = keras.layers.BatchNormalization()
    base = keras.Model(inputs, keras.layers.Dropout(0.5)(bn(conv(inputs))))
    base.trainable = False
    x = np.random.default_rng(0).normal(3.0, 2.0, (48, 6, 6, 3)).astype("float32")
    shift, ratio = adapt_batchnorm(base, [x[i:i + 16] for i in range(0, 48, 16)])
    h = conv(x).numpy().reshape(3, -1, 4)  # the 3 batches' inputs of the BatchNormalization layer
    assert np.allclose(bn.moving_mean.numpy(), h.mean((0, 1)), rtol=1e-4, atol=1e-4)
    # the mean of the batch variances (as torch's update_bn): the population's, less the spread of the batch means
    assert np.allclose(bn.moving_variance.numpy(), h.var(1).mean(0), rtol=1e-4)
    assert shift > 0.1 and ratio > 1.5 and not base.trainable and not bn.trainable and bn.momentum == 0.99
    assert base.layers[-1].rate == 0.5


def test_adapt_changes_the_features_and_their_cache_key(tmp_path):
    """Two runs on the same folder: adapted statistics give other cached features (a separate cache entry), the
    note says what moved, and ``--config`` keeps the mode; the saved model carries the new statistics."""
    from conftest import TINY_RUN, make_image_folder

    from finetune.config import TrainConfig
    from finetune.training import fine_tune
    from finetune.training.bn_stats import batchnorm_layers
    from finetune.training.features import FeatureCache

    data = make_image_folder(tmp_path / "data", classes=3, per_class=8)
    run = {**TINY_RUN, "head_epochs": 2, "tune_epochs": 0, "val_split": 0.25, "test_split": 0.0, "verbose": 0}
    plain = fine_tune(str(data), **run)
    adapted = fine_tune(str(data), **run, bn_stats="adapt")
    assert any(n.startswith("BatchNormalization statistics re-estimated on the 18 training images") for n in adapted.notes)
    before = [layer.moving_mean.numpy() for layer in batchnorm_layers(plain.parts.base)]
    after = [layer.moving_mean.numpy() for layer in batchnorm_layers(adapted.parts.base)]
    assert before and any(not np.allclose(a, b) for a, b in zip(before, after))
    keys = {FeatureCache.for_run(r.config, r.parts, r.spec).identity.get("bn_stats") for r in (plain, adapted)}
    assert None in keys and len(keys) == 2
    assert TrainConfig.from_dict(adapted.config.to_dict()).bn_stats == "adapt"
    with pytest.raises(Exception, match="bn_stats"):
        TrainConfig(bn_stats="batch").validate()
