"""Grad-CAM of many images runs a few at a time: the same heatmaps as one image at a time."""

import keras
import numpy as np

from finetune.evaluation import explain


def _model():
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, padding="same", activation="relu")])
    return keras.Sequential([keras.Input((16, 16, 3)), base, keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(3, activation="softmax")])


def test_more_images_than_a_batch_give_each_image_its_own_heatmap():
    model = _model()
    images = np.random.default_rng(0).random((explain.CAM_BATCH * 2 + 1, 16, 16, 3)) * 255
    together = explain.grad_cam(model, images)
    alone = [explain.grad_cam(model, image[None])[0] for image in images]
    assert len(together) == len(images)
    for a, b in zip(together, alone):
        assert a.class_index == b.class_index
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)


def test_a_class_per_image_follows_its_image_across_batches():
    model = _model()
    images = np.random.default_rng(1).random((explain.CAM_BATCH + 2, 16, 16, 3)) * 255
    classes = [i % 3 for i in range(len(images))]
    assert [e.class_index for e in explain.grad_cam(model, images, classes)] == classes
    assert {e.class_index for e in explain.grad_cam(model, images, 2)} == {2}
