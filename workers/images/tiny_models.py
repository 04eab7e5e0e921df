"""Small randomly initialised models of each family, saved in the exact layout its adapter loads.

For tests and benchmarks: nothing is downloaded, and the files are the same formats users bring (timm's hub
folder, open_clip's local folder, a Hugging Face ``save_pretrained`` folder, or single weights files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _save_state(state: dict[str, torch.Tensor], file: Path) -> Path:
    from safetensors.torch import save_file

    file.parent.mkdir(parents=True, exist_ok=True)
    if file.suffix == ".safetensors":
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(file))
    else:
        torch.save(state, file)
    return file


def save_tiny_timm(
    dest: Path,
    *,
    image_size: int = 32,
    arch: str = "vit_tiny_patch16_224",
    model_args: dict[str, Any] | None = None,
    as_file: bool = False,
    num_classes: int = 5,
    seed: int = 0,
) -> Path:
    """A timm model in timm's hub layout (``config.json`` + ``model.safetensors``), or with ``as_file`` a
    single ``.pth`` (load it with ``arch`` and ``model_args``). ``model_args`` default: a 2-block ViT at
    ``image_size`` for ViT architectures (pass ``{}`` for the full-size architecture)."""
    import timm

    if model_args is None:
        model_args = {"img_size": image_size, "patch_size": 8, "depth": 2} if arch.startswith("vit_") else {}
    torch.manual_seed(seed)
    net = timm.create_model(arch, pretrained=False, num_classes=num_classes, **model_args)
    dest = Path(dest)
    if as_file:
        return _save_state(net.state_dict(), dest if dest.suffix else dest.with_suffix(".pth"))
    dest.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architecture": arch,
        "num_classes": num_classes,
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [3, image_size, image_size],
            "crop_pct": 0.875,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "interpolation": "bicubic",
            "classifier": "head",
        },  # fmt: skip
    }
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    _save_state(net.state_dict(), dest / "model.safetensors")
    return dest


def tiny_clip_config(image_size: int = 32) -> dict[str, Any]:
    return {
        "embed_dim": 32,
        "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }


def save_tiny_open_clip(dest: Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """A tiny CLIP (ViT image tower, open_clip's own text tower and BPE tokenizer) in open_clip's local
    folder layout: ``open_clip_config.json`` + ``open_clip_model.safetensors``."""
    import open_clip

    torch.manual_seed(seed)
    cfg = tiny_clip_config(image_size)
    clip = open_clip.CLIP(**cfg)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    pre = {
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (dest / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": pre}, indent=2)
    )
    _save_state(clip.state_dict(), dest / "open_clip_model.safetensors")
    return dest


def save_tiny_hf(dest: Path, *, image_size: int = 32, seed: int = 0, num_labels: int = 5) -> Path:
    """A tiny ``ViTForImageClassification`` saved with ``save_pretrained``, plus its
    ``preprocessor_config.json``."""
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=num_labels)  # type: ignore[call-arg]  # fmt: skip
    net = ViTForImageClassification(config)
    dest = Path(dest)
    net.save_pretrained(str(dest))
    pre = {"do_resize": True, "size": {"height": image_size, "width": image_size}, "resample": 2,
           "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
           "image_processor_type": "ViTImageProcessor"}  # fmt: skip
    (dest / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return dest
