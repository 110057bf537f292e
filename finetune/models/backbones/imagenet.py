"""ImageNet-1k class names, offline, in the order of a 1000-way classifier's outputs."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def imagenet_synsets_and_lemmas() -> list[tuple[str, str]]:
    """``(wordnet_synset, "lemma, lemma, ...")`` for each of the 1000 classes, in index order."""
    text = resources.files("finetune").joinpath("resources/imagenet_classes.txt").read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(rows) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(rows)} classes, expected 1000")
    return [(synset, lemmas) for synset, lemmas in rows]


def imagenet_class_names() -> list[str]:
    """The short (first) name of each ImageNet-1k class in index order, e.g. ``names[0] == "tench"``.

    Two names repeat ("crane": bird and machine; "maillot": two garments);
    use :func:`imagenet_synsets_and_lemmas` where that matters.
    """
    return [lemmas.split(",")[0].strip() for _, lemmas in imagenet_synsets_and_lemmas()]


def imagenet_classifier(backbone: str = "efficientnet_lite0"):
    """``(model, image_size, class_names)``: the backbone with its original ImageNet head, raw RGB in, softmax out."""
    import keras

    from .preprocessing import preprocessing_layer
    from .registry import get_backbone

    spec = get_backbone(backbone)
    classifier = spec.imagenet_top("imagenet")
    inputs = keras.Input((spec.input_size, spec.input_size, 3))
    probs = keras.layers.Softmax()(classifier(preprocessing_layer(spec.preprocessing)(inputs)))
    return keras.Model(inputs, probs), spec.input_size, imagenet_class_names()
