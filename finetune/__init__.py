"""finetune: turn a pretrained network into a strong image classifier, on Keras 3."""

__version__ = "0.1.0"
