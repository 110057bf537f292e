"""Geron's transfer recipe (Hands-On ML, ch. 11) with `finetune.reuse`.

Train model A on 8 Fashion-MNIST classes, then reuse its body for sandal vs
shirt with only 200 images. Unlike `Sequential(model_a.layers[:-1])`, `reuse`
copies the layers, so model A is left untouched. Needs the Debian package
`dataset-fashion-mnist` (or pass a directory to `load_fashion_mnist`).
"""

import keras
import numpy as np

from fashion_data import load_fashion_mnist, split_sandal_shirt
from finetune.models.reuse import reuse

(x, y), (x_test, y_test) = load_fashion_mnist()
x, x_test = x / 255.0, x_test / 255.0
(x_a, y_a), (x_b, y_b) = split_sandal_shirt(x[5000:], y[5000:])
_, (x_valid_b, y_valid_b) = split_sandal_shirt(x[:5000], y[:5000])
_, (x_test_b, y_test_b) = split_sandal_shirt(x_test, y_test)
x_b, y_b = x_b[:200], y_b[:200]

keras.utils.set_random_seed(42)
model_a = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten()]
                           + [keras.layers.Dense(n, activation="selu") for n in (300, 100, 50, 50, 50)]
                           + [keras.layers.Dense(8, activation="softmax")])
model_a.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(1e-3))
model_a.fit(x_a, y_a, epochs=20, verbose=0)
weights_a = model_a.get_weights()

model_b_on_a = reuse(model_a, num_outputs=1)  # sigmoid head, reused layers frozen
stop = keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)
for lr in (3e-3, 1e-4):  # 1) train the head on the frozen body, 2) fine-tune everything
    model_b_on_a.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(lr),
                         metrics=["accuracy"])
    model_b_on_a.fit(x_b, y_b, epochs=50, validation_data=(x_valid_b, y_valid_b),
                     callbacks=[stop], verbose=0)
    for layer in model_b_on_a.layers:
        layer.trainable = True

_, accuracy = model_b_on_a.evaluate(x_test_b, y_test_b, verbose=0)
print(f"B-on-A test accuracy: {accuracy:.2%}")
print("model A unchanged:", all(np.array_equal(w0, w1) for w0, w1 in zip(weights_a, model_a.get_weights())))
