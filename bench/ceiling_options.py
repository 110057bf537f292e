"""The phase-2 ceiling from block6a under other compile options: XLA (``jit_compile``) and larger batches.

The unfrozen top of EfficientNet-Lite0 (block6a on), fit on random 14x14x112 activations already in
memory (1,771 of them, ELPV's train split size), 4 epochs; prints the epoch times and img/s of the
median of epochs 2-4. Usage (one configuration per process; XLA compiles on the first epoch)::

    .venv/bin/python bench/ceiling_options.py JIT(0|1) BATCH
    for j in 0 1; do .venv/bin/python bench/ceiling_options.py $j 32; done
"""
import sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
import keras, numpy as np, tensorflow as tf
import finetune
from finetune.models.split import split_base
jit = sys.argv[1] == "1"; bs = int(sys.argv[2])
parts = finetune.build_model("efficientnet_lite0", 4, augment="none", seed=0)
cut = "block6a_expand_conv"
finetune.UnfreezePolicy(from_layer=cut).apply(parts.base)
split = split_base(parts.base, cut)
inputs = [keras.Input(s) for s in split.shapes]
top = keras.Model(inputs, parts.classifier(parts.pool(split.top(inputs[0], training=False))))
top.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit)
n = 1771
x = tf.constant(np.random.rand(n, *split.shapes[0]).astype("float32"))
y = tf.constant(np.random.randint(0, 4, n))
data = tf.data.Dataset.range(n).batch(bs).map(lambda i: (tf.gather(x, i), tf.gather(y, i))).cache()
secs = []
class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, e, logs=None): secs.append(time.perf_counter() - self.t)
top.fit(data, epochs=4, verbose=0, callbacks=[Clock()])
print("jit", jit, "bs", bs, [round(s, 2) for s in secs], "img/s", round(n / np.median(secs[1:]), 1))
