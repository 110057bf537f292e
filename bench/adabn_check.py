"""Does AdaBN standardise what the BatchNormalization layers see? Lite0 on 128 ELPV training cells.

For three BatchNormalization layers (early, middle, late) prints the mean |mean| and mean variance of their
inputs normalised by the layer's moving statistics: ImageNet's, then after `adapt_batchnorm` on the same
cells (1.0 and 0.0 mean the statistics fit these images). Needs the benchmark split of
`bench/elpv_accuracy.py` (seed 0) in $TMPDIR/elpv-accuracy.

    .venv/bin/python bench/adabn_check.py
"""
import sys, glob, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
import keras, tensorflow as tf
import finetune
from finetune.data import load_images
from finetune.training.bn_stats import adapt_batchnorm, batchnorm_layers
files = sorted(glob.glob(__import__("os").path.join(__import__("tempfile").gettempdir(), "elpv-accuracy/split-0/train/*/*.png")))[::14][:128]
parts = finetune.build_model("efficientnet_lite0", 4, augment="none", seed=0)
x = parts.preprocess(load_images(files, 224, "crop").astype("float32"))
norms = batchnorm_layers(parts.base)
probe_layers = [norms[i] for i in (2, len(norms)//2, len(norms)-2)]
def bn_inputs(m):
    outs = []
    sub = keras.Model(parts.base.input, [l.input for l in probe_layers])
    return [o.numpy() for o in sub(x, training=False)]
def normalized(ins):
    r = []
    for l, h in zip(probe_layers, ins):
        z = (h - l.moving_mean.numpy()) / np.sqrt(l.moving_variance.numpy() + l.epsilon)
        z = z.reshape(-1, z.shape[-1])
        r.append((round(float(np.abs(z.mean(0)).mean()), 3), round(float(z.var(0).mean()), 3)))
    return r
print("imagenet stats: |mean|, var of normalized inputs:", normalized(bn_inputs(parts.base)))
adapt_batchnorm(parts.base, [x[i:i+32] for i in range(0, len(x), 32)])
print("adapted stats:  |mean|, var of normalized inputs:", normalized(bn_inputs(parts.base)))
