"""`load_model` for a TinyLLaVA-Video folder written by `vidlab model convert` (or `tiny`)."""

from __future__ import annotations

from pathlib import Path

import torch


def load_tinyllava_video(folder: str | Path, *, adapters: dict, dtype: torch.dtype, device: torch.device,
                         attn_implementation: str | None = None, quantize: str | None = None):
    """(model in eval mode on `device`, its TinyLlavaVideoProcessor); adapters as `vidlab.models.load.load_model`."""
    from vidlab.models.family import load_family
    from vidlab.models.tinyllava_video.model import TinyLlavaVideoForConditionalGeneration
    from vidlab.models.tinyllava_video.processor import TinyLlavaVideoProcessor

    return load_family("TinyLLaVA-Video", TinyLlavaVideoForConditionalGeneration, TinyLlavaVideoProcessor, folder,
                       adapters=adapters, dtype=dtype, device=device, attn_implementation=attn_implementation,
                       quantize=quantize)
